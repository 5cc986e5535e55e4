//! The report as JUnit XML, which CI systems render natively.

use std::fmt::Write as _;
use std::path::Path;

use super::model::Report;

/// JUnit XML: one `<testcase>` per golden case on the target. A case with
/// no complete response is an `<error>`, any other failed case a
/// `<failure>`; the attributes are those of the common Ant/Jenkins schema.
pub fn render(report: &Report) -> String {
    let side = &report.target;
    let s = &side.summary;
    let errors = s.errors;
    let failures = s.failed - errors.min(s.failed);
    let total_secs: f64 = report.duration_ms / 1000.0;
    let classname = Path::new(&report.golden)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "golden".into());
    let suite = format!("cutover eval: {}", side.url.as_deref().unwrap_or("target"));
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"cutover eval\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{total_secs:.3}\">",
        s.cases
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\" time=\"{total_secs:.3}\" timestamp=\"{}\">",
        attr(&suite),
        s.cases,
        attr(report.started_at.trim_end_matches('Z'))
    );
    x.push_str("    <properties>\n");
    let mut props = vec![
        ("golden".to_owned(), report.golden.clone()),
        ("pass_rate".to_owned(), format!("{}", s.pass_rate)),
        ("passed".to_owned(), report.passed.to_string()),
    ];
    for th in &report.thresholds {
        props.push((
            format!("threshold.{}", th.name),
            format!("{}: {}", if th.ok { "ok" } else { "BROKEN" }, th.detail),
        ));
    }
    for (name, value) in props {
        let _ = writeln!(
            x,
            "      <property name=\"{}\" value=\"{}\"/>",
            attr(&name),
            attr(&value)
        );
    }
    x.push_str("    </properties>\n");
    for c in &side.cases {
        let time = c.latency_ms.unwrap_or(0.0) / 1000.0;
        let open = format!(
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{time:.3}\"",
            attr(&c.id),
            attr(&classname)
        );
        if c.passed {
            let _ = writeln!(x, "{open}/>");
            continue;
        }
        let tag = if c.is_error() { "error" } else { "failure" };
        let first = c.failures.first();
        let message = first
            .map(|f| format!("{}: {}", f.expectation, f.reason))
            .unwrap_or_default();
        let kind = first.map(|f| f.expectation.as_str()).unwrap_or("failure");
        let mut body = format!("line {} of {}\n", c.line, report.golden);
        for f in &c.failures {
            let _ = writeln!(
                body,
                "{}: expected {}; got {}; why: {}",
                f.expectation, f.expected, f.got, f.reason
            );
        }
        if !c.excerpt.is_empty() {
            let _ = writeln!(body, "response: {}", c.excerpt);
        }
        let _ = writeln!(
            x,
            "{open}>\n      <{tag} message=\"{}\" type=\"{}\">{}</{tag}>\n    </testcase>",
            attr(&message),
            attr(kind),
            text(&body)
        );
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// Characters XML 1.0 cannot hold at all (most C0 controls, U+FFFE/F).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Element content: markup characters escaped, forbidden ones replaced.
fn text(s: &str) -> String {
    escape(s, false)
}

/// An attribute value: also quotes and the white space an attribute would
/// otherwise normalise away.
fn attr(s: &str) -> String {
    escape(s, true)
}

fn escape(s: &str, in_attr: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if in_attr => out.push_str("&quot;"),
            '\'' if in_attr => out.push_str("&apos;"),
            '\n' if in_attr => out.push_str("&#10;"),
            '\r' if in_attr => out.push_str("&#13;"),
            '\t' if in_attr => out.push_str("&#9;"),
            c if xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes_markup_and_drops_forbidden_characters() {
        assert_eq!(attr("a<b>&\"c'\n"), "a&lt;b&gt;&amp;&quot;c&apos;&#10;");
        assert_eq!(text("x\u{1}y]]>"), "x\u{FFFD}y]]&gt;");
        assert_eq!(text("é\t"), "é\t");
    }
}
