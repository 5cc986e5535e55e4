//! Configuration: TOML file → raw serde structs → validated [`Config`].
//!
//! `load` reads a file, substitutes `${ENV}` in parsed string values (so a
//! variable can never inject keys), rejects unknown keys, validates every
//! rule of SPEC §2 and collects *all* errors, each with file, line:col, the
//! key path and what would be valid. Lint warnings are a separate list.

mod interpolate;
mod lint;
pub mod model;
mod raw;
mod spans;
mod units;
mod validate;

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod reference_doc;
#[cfg(test)]
mod tests;

pub use lint::is_floating_model;
pub use validate::parse_url;

pub use model::*;

use std::fmt;
use std::path::{Path, PathBuf};

use spans::{KeyPath, SpanIndex};

/// A successfully loaded config and its lint warnings.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Lint>,
}

/// A valid-but-risky setting (`cutover check` prints these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lint {
    /// Key path, e.g. `routes[0].versions[1].deps.model`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "warning: {}: {}", self.path, self.message)
    }
}

/// One validation error, located in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error has no place in the file (e.g. unreadable).
    pub line: usize,
    /// 1-based, in characters.
    pub col: usize,
    /// Key path, e.g. `routes[0].versions[1].weight`; empty for the file.
    pub path: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.col)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every error found in one file, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Load and validate a config file, with `${NAME}` read from the process
/// environment.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&text, path, &|name| std::env::var(name).ok()),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            col: 0,
            path: String::new(),
            message: format!("cannot read the config file: {e}; valid: a readable UTF-8 TOML file"),
        }])),
    }
}

/// Load from text. `path` is used for messages and to resolve relative file
/// paths (TLS files, `state.dir`) against its directory; `env` looks up
/// `${NAME}` substitutions (and `admin.token_env`).
pub fn load_str(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigErrors> {
    // Spans come from toml_edit; values from toml. Both parse the same text,
    // so a syntax error is reported once, from the span-keeping parser.
    let doc = match toml_edit::Document::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let index = SpanIndex::empty(text);
            let (line, col) = e.span().map(|s| index.line_col(s.start)).unwrap_or((0, 0));
            let message = e.message().trim().to_string();
            return Err(ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line,
                col,
                path: String::new(),
                message: format!("TOML syntax error: {message}"),
            }]));
        }
    };
    let index = SpanIndex::build(text, &doc);
    let mut root: toml::Value = match toml::from_str::<toml::Table>(text) {
        Ok(t) => toml::Value::Table(t),
        Err(e) => {
            let (line, col) = e.span().map(|s| index.line_col(s.start)).unwrap_or((0, 0));
            return Err(ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line,
                col,
                path: String::new(),
                message: format!("TOML syntax error: {}", e.message().trim()),
            }]));
        }
    };

    let mut issues = Vec::new();
    let mut interp = Vec::new();
    interpolate::interpolate_tree(&mut root, &KeyPath::root(), env, &mut interp);
    issues.extend(
        interp
            .into_iter()
            .map(|e| raw::Issue::at(e.path, e.message)),
    );

    let table = match root {
        toml::Value::Table(t) => t,
        _ => toml::Table::new(),
    };
    let mut validator = validate::Validator::new(path, env);
    let config = validator.config(table, path);
    issues.extend(validator.issues);

    match config {
        Some(config) if issues.is_empty() => {
            let warnings = lint::lints(&config);
            Ok(Loaded { config, warnings })
        }
        _ => {
            let mut errors: Vec<ConfigError> = issues
                .into_iter()
                .map(|i| {
                    let (line, col) = index.locate(&i.path, i.anchor);
                    ConfigError {
                        file: path.to_path_buf(),
                        line,
                        col,
                        path: i.path.to_string(),
                        message: i.message,
                    }
                })
                .collect();
            errors.sort_by_key(|e| (e.line, e.col));
            errors.dedup();
            if errors.is_empty() {
                // Unreachable in practice: a missing piece always says why.
                errors.push(ConfigError {
                    file: path.to_path_buf(),
                    line: 0,
                    col: 0,
                    path: String::new(),
                    message: "invalid config".into(),
                });
            }
            Err(ConfigErrors(errors))
        }
    }
}
