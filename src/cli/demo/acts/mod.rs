//! The acts of the demo, in the order of the release flow. Each is a short
//! name, a title, the one line that says what to notice, and a function
//! that plays it on the shared [`Show`]. Every act also checks what it
//! shows: a broken promise ends the demo with exit 1 and says what broke.

mod breaker;
mod cache;
mod rollout;
mod shadow;
mod split;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::driver::Driver;
use super::screen::Screen;
use super::stage::Stage;

/// What every act plays on.
pub struct Show {
    pub screen: Screen,
    pub stage: Stage,
    pub driver: Driver,
    /// Requests sent so far, over all acts.
    pub requests: u64,
    /// On a terminal, how long each phase's result stays up before the
    /// show moves on; nothing in a transcript.
    pub hold: Duration,
    /// Route `chat`'s client p50 before the shadow was switched on (act 1),
    /// to show in act 2 that the shadow does not slow anyone down.
    pub p50_before_shadow: Option<Duration>,
}

impl Show {
    /// Let a viewer read the dashboard, keeping its clock running.
    pub async fn hold(&self) {
        let step = Duration::from_millis(250);
        let mut left = self.hold;
        while !left.is_zero() {
            let nap = left.min(step);
            tokio::time::sleep(nap).await;
            left -= nap;
            self.screen.refresh();
        }
    }
}

pub type ActFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + 'a>>;

pub struct Act {
    /// For the dashboard's progress line.
    pub short: &'static str,
    pub title: &'static str,
    /// One line: what to notice.
    pub caption: &'static str,
    pub play: for<'a> fn(&'a mut Show) -> ActFuture<'a>,
}

/// The show, in order.
pub const ACTS: &[Act] = &[
    Act {
        short: "split",
        title: "Act 1: the sticky split",
        caption: "about 90% of requests go to v1 and 10% to v2, every user keeps one version, and raising v2 to 25% only moves users into v2.",
        play: |show| Box::pin(split::play(show)),
    },
    Act {
        short: "shadow",
        title: "Act 2: a shadow being compared",
        caption: "every request is mirrored to v3, a slow backend with a new tool schema; users never wait for it or see it, and its answers are compared with theirs.",
        play: |show| Box::pin(shadow::play(show)),
    },
    Act {
        short: "breaker",
        title: "Act 3: a backend fails",
        caption: "agent-main starts failing: its breaker opens and the backup answers; when every backend is down users get a polite refusal; on recovery the breaker closes.",
        play: |show| Box::pin(breaker::play(show)),
    },
    Act {
        short: "cache",
        title: "Act 4: the version-aware cache",
        caption: "repeated questions are answered from the cache; bumping the prompt version misses every old entry, with no flush and no stale answer.",
        play: |show| Box::pin(cache::play(show)),
    },
    Act {
        short: "rollout",
        title: "Act 5: a progressive rollout",
        caption: "cutover moves v2 through 10% -> 25% -> 50% -> 100% on its own, advancing only when the judge shows v2 is not worse than v1.",
        play: |show| Box::pin(rollout::play_promotion(show)),
    },
    Act {
        short: "rollback",
        title: "Act 6: a bad canary rolled back",
        caption: "v3 goes live as the next canary; it is slower than v2 and fails a third of its requests: cutover rolls it back by itself, and users never see its errors.",
        play: |show| Box::pin(rollout::play_rollback(show)),
    },
];

/// "v1 90% / v2 10%"
pub fn describe_weights(weights: &[(String, f64)]) -> String {
    weights
        .iter()
        .map(|(v, w)| format!("{v} {w}%"))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// `n` of `total` as a percentage with one decimal.
pub fn pct(n: u64, total: u64) -> String {
    if total == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}%", n as f64 * 100.0 / total as f64)
    }
}

/// The request body of a chat completion asking `question`.
pub fn chat_body(question: &str, temperature: f64, tools: &[&str]) -> String {
    let mut body = serde_json::json!({
        "model": "support-agent",
        "temperature": temperature,
        "messages": [{"role": "user", "content": question}],
    });
    if !tools.is_empty() {
        body["tools"] = tools
            .iter()
            .map(|name| serde_json::json!({"type": "function", "function": {"name": name}}))
            .collect();
    }
    body.to_string()
}
