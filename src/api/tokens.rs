//! The token counts one response reports, and the parse helpers every
//! API's module shares to read them. A leaf: the per-API modules
//! (`api::chat`, `api::responses`, `api::messages`) and the scanner that
//! dispatches to them (`api::usage`) all import it; it imports none of them.

use serde::Deserialize;

use super::Skip;

/// Input and output tokens; `None` where the response did not say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: Option<u64>,
    pub output: Option<u64>,
}

impl Usage {
    pub fn is_empty(&self) -> bool {
        self.input.is_none() && self.output.is_none()
    }

    /// Take the fields `other` has: the last value seen wins.
    pub(super) fn merge(&mut self, other: Usage) {
        if other.input.is_some() {
            self.input = other.input;
        }
        if other.output.is_some() {
            self.output = other.output;
        }
    }
}

/// The `usage` object of Responses and Anthropic Messages.
#[derive(Deserialize)]
pub(super) struct InputOutput {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

impl From<InputOutput> for Usage {
    fn from(u: InputOutput) -> Usage {
        Usage {
            input: u.input_tokens,
            output: u.output_tokens,
        }
    }
}

/// A parse error as a skip reason: broken JSON, or JSON of another shape.
pub(super) fn classify(e: &serde_json::Error) -> Skip {
    match e.classify() {
        serde_json::error::Category::Data => Skip::WrongShape,
        _ => Skip::Malformed,
    }
}
