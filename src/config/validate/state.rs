//! `[state]`: where rollout state persists.

use crate::config::model::*;
use crate::config::raw::*;
use crate::config::spans::KeyPath;

use super::Validator;

impl Validator<'_> {
    pub(super) fn state(&mut self, v: Option<Value>) -> StateConfig {
        let p = KeyPath::root().key("state");
        let raw: RawState = match v {
            Some(v) => de_unit(v, &p, &mut self.issues).unwrap_or_default(),
            None => RawState::default(),
        };
        let dir = raw.dir.unwrap_or_else(|| ".cutover".to_string());
        if dir.is_empty() {
            self.err(p.key("dir"), "empty state directory; valid: a directory path (relative paths start at the config file's directory)");
        }
        StateConfig {
            dir: self.file_path(&dir),
        }
    }
}
