//! Lint warnings: valid but risky settings (SPEC §2). `cutover check`
//! prints them; they never stop a load.

use super::Lint;
use super::model::{Config, FallbackConfig, TargetConfig};
use super::spans::KeyPath;

/// Whether a model id looks like a floating alias that the provider can
/// repoint (`gpt-4o`, `claude-sonnet-4`, `claude-3-5-sonnet`, `*-latest`).
///
/// Heuristic: a model is *pinned* when it carries a snapshot marker, that is
/// an `@` (`model@2024-05-13`, Vertex's `claude-opus-4-1@20250805`) or a
/// segment of three or more digits when the id is split on `-`, `_`, `.`,
/// `:` and `/` (`gpt-4o-2024-08-06`, `claude-sonnet-4-20250514`,
/// `anthropic.claude-3-5-sonnet-20241022-v2:0`, `gpt-4-0613`,
/// `gemini-1.5-pro-002`). Anything else is treated as floating: OpenAI
/// families (`gpt-4`, `gpt-3.5-turbo`, `gpt-4o-mini`, `o1`) and Anthropic
/// family names without their date (`claude-sonnet-4`, `claude-opus-4-1`,
/// `claude-3-5-haiku`), which Anthropic moves to each new snapshot; and so
/// is anything ending in `-latest` (`claude-3-7-sonnet-latest`) whatever it
/// carries. A few pinned ids without a number (rare) will be flagged; a
/// lint may err on that side.
pub fn is_floating_model(model: &str) -> bool {
    let m = model.trim().to_ascii_lowercase();
    if m.ends_with("-latest") || m.ends_with(":latest") {
        return true;
    }
    if m.contains('@') {
        return false;
    }
    !m.split(['-', '_', '.', ':', '/'])
        .any(|seg| seg.len() >= 3 && seg.bytes().all(|b| b.is_ascii_digit()))
}

/// A dated snapshot of the same provider, for the lint's advice.
fn pinned_example(model: &str) -> &'static str {
    if model.to_ascii_lowercase().contains("claude") {
        "claude-sonnet-4-20250514"
    } else {
        "gpt-4o-2024-08-06"
    }
}

fn lint_model(target: &TargetConfig, path: KeyPath, out: &mut Vec<Lint>) {
    if let Some(model) = target.deps.get("model").and_then(|m| m.as_str())
        && is_floating_model(model)
    {
        out.push(Lint {
            path: path.key("deps").key("model").to_string(),
            message: format!(
                "`{model}` looks like a floating model alias: the provider can change the model behind it, which breaks reproducibility and cache keys; pin a dated snapshot (like `{}`)",
                pinned_example(model)
            ),
        });
    }
}

pub fn lints(config: &Config) -> Vec<Lint> {
    let mut out = Vec::new();
    for (i, route) in config.routes.iter().enumerate() {
        let rp = KeyPath::root().key("routes").index(i);
        for (j, v) in route.versions.iter().enumerate() {
            lint_model(&v.target, rp.key("versions").index(j), &mut out);
        }
        for (j, s) in route.shadows.iter().enumerate() {
            let sp = rp.key("shadows").index(j);
            lint_model(&s.target, sp.clone(), &mut out);
            if s.max_in_flight.is_none() {
                out.push(Lint {
                    path: sp.to_string(),
                    message: "shadow has no `max_in_flight`: the runtime caps mirrors at 64; set it to what the shadow backend can take".into(),
                });
            }
        }
        for (k, f) in route.fallbacks.iter().enumerate() {
            if let FallbackConfig::Target(t) = f {
                lint_model(t, rp.key("fallbacks").index(k), &mut out);
            }
        }
        if let Some(r) = &route.rollout
            && r.rollback.is_none()
        {
            out.push(Lint {
                path: rp.key("rollout").to_string(),
                message: "rollout has no [routes.rollout.rollback] section: a failing canary is only caught when its step is judged, not at once; add one".into(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{is_floating_model, pinned_example};

    #[test]
    fn the_advice_names_a_snapshot_of_the_same_provider() {
        assert_eq!(
            pinned_example("claude-sonnet-4"),
            "claude-sonnet-4-20250514"
        );
        assert_eq!(pinned_example("gpt-4o"), "gpt-4o-2024-08-06");
    }

    #[test]
    fn floating_aliases() {
        for m in [
            "gpt-4",
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-3.5-turbo",
            "claude-3-5-sonnet",
            "claude-3-5-sonnet-latest",
            "o1",
            "gpt-4o-2024-08-06-latest",
        ] {
            assert!(is_floating_model(m), "{m}");
        }
        // Anthropic: `-latest`, and family names without their date.
        for m in [
            "claude-3-7-sonnet-latest",
            "claude-3-5-haiku-latest",
            "claude-sonnet-4",
            "claude-sonnet-4-0",
            "claude-sonnet-4-5",
            "claude-opus-4-1",
            "claude-haiku-4-5",
            "claude-3-5-haiku",
            "claude-3-opus",
        ] {
            assert!(is_floating_model(m), "{m}");
        }
        for m in [
            "claude-sonnet-4-20250514",
            "claude-sonnet-4-5-20250929",
            "claude-opus-4-1-20250805",
            "claude-3-5-haiku-20241022",
            "claude-3-haiku-20240307",
            "anthropic.claude-3-5-sonnet-20241022-v2:0",
            "claude-opus-4-1@20250805",
        ] {
            assert!(!is_floating_model(m), "{m}");
        }
        for m in [
            "gpt-4-0125-preview",
            "gpt-4o-2024-08-06",
            "gpt-4o-mini-2024-07-18",
            "claude-3-5-sonnet-20241022",
            "gemini-1.5-pro-002",
            "mistral-large-2407",
            "my-model@3",
        ] {
            assert!(!is_floating_model(m), "{m}");
        }
    }
}
