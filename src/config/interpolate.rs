//! `${NAME}` substitution on parsed string values.
//!
//! Runs on the `toml::Value` tree after parsing and before deserializing, and
//! only on string *values*: keys are never touched, so an environment
//! variable can change what a setting says but never which settings exist.
//!
//! Syntax:
//! * `${NAME}` is replaced by the variable's value; `NAME` is
//!   `[A-Za-z_][A-Za-z0-9_]*`. A missing variable is an error (an empty one
//!   is substituted as empty).
//! * `$${` is an escape for a literal `${` (so `$${HOME}` stays `${HOME}`).
//! * A `$` not followed by `{` is kept as it is.
//! * An unterminated `${` or an invalid name is an error.

use super::spans::KeyPath;

/// One substitution problem, at the string value's key path.
#[derive(Debug, PartialEq, Eq)]
pub struct InterpolationError {
    pub path: KeyPath,
    pub message: String,
}

/// Substitute in every string value of `value`, collecting every error.
pub fn interpolate_tree(
    value: &mut toml::Value,
    path: &KeyPath,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<InterpolationError>,
) {
    match value {
        toml::Value::String(s) if s.contains('$') => match interpolate_str(s, env) {
            Ok(new) => *s = new,
            Err(messages) => {
                errors.extend(messages.into_iter().map(|message| InterpolationError {
                    path: path.clone(),
                    message,
                }))
            }
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, &path.index(i), env, errors);
            }
        }
        toml::Value::Table(table) => {
            for (k, item) in table.iter_mut() {
                interpolate_tree(item, &path.key(k), env, errors);
            }
        }
        _ => {}
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Substitute `${NAME}` in one string; every problem in it is reported.
pub fn interpolate_str(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            match tail.find('}') {
                Some(end) => {
                    let name = &tail[..end];
                    if !valid_name(name) {
                        errors.push(format!(
                            "invalid variable name `${{{name}}}`; valid: `${{NAME}}` with NAME made of letters, digits and `_`, not starting with a digit (write `$${{` for a literal `${{`)"
                        ));
                    } else {
                        match env(name) {
                            Some(v) => out.push_str(&v),
                            None => errors.push(format!(
                                "environment variable `{name}` is not set; set it, or write `$${{` for a literal `${{`"
                            )),
                        }
                    }
                    rest = &tail[end + 1..];
                }
                None => {
                    errors.push(
                        "unterminated `${`; valid: `${NAME}`, or `$${` for a literal `${`"
                            .to_string(),
                    );
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-1".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_and_escapes() {
        assert_eq!(
            interpolate_str("Bearer ${KEY}", &env),
            Ok("Bearer sk-1".into())
        );
        assert_eq!(interpolate_str("${KEY}${KEY}", &env), Ok("sk-1sk-1".into()));
        assert_eq!(interpolate_str("a${EMPTY}b", &env), Ok("ab".into()));
        assert_eq!(interpolate_str("$${KEY}", &env), Ok("${KEY}".into()));
        assert_eq!(interpolate_str("cost $5 $", &env), Ok("cost $5 $".into()));
        assert_eq!(interpolate_str("é${KEY}é", &env), Ok("ésk-1é".into()));
    }

    #[test]
    fn reports_every_problem() {
        let e = interpolate_str("${NOPE} ${ALSO_NOPE}", &env)
            .err()
            .unwrap_or_default();
        assert_eq!(e.len(), 2);
        assert!(e[0].contains("`NOPE`"));
        assert!(e[1].contains("`ALSO_NOPE`"));
        assert!(interpolate_str("${1X}", &env).is_err());
        assert!(interpolate_str("${}", &env).is_err());
        assert!(interpolate_str("${KEY", &env).is_err());
    }

    #[test]
    fn keys_are_never_interpolated() {
        let mut v: toml::Value = match toml::from_str("\"${KEY}\" = \"${KEY}\"\n") {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        let mut errors = Vec::new();
        interpolate_tree(&mut v, &KeyPath::root(), &env, &mut errors);
        assert!(errors.is_empty());
        assert_eq!(v.get("${KEY}").and_then(|v| v.as_str()), Some("sk-1"));
    }
}
