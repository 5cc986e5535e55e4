//! What a run produces: the JSON report (a stable, versioned schema, see
//! `docs/eval.md`), the table printed for people, and the JUnit XML that CI
//! systems render natively.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::check::{Kind, Verdict};
use super::golden::Case;
use super::run::{Response, Transport};
use super::score::{Comparison, Price, Summary, ThresholdResult};

/// Bumped on any change that could break a reader of the JSON report.
pub const SCHEMA_VERSION: u32 = 1;

/// The whole run. Field order is the JSON order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    /// `cutover X.Y.Z`.
    pub tool: String,
    /// The golden file as given on the command line.
    pub golden: String,
    /// RFC 3339, UTC, seconds.
    pub started_at: String,
    pub duration_ms: f64,
    pub settings: Settings,
    pub target: Side,
    /// `None` without `--baseline` or `--baseline-report`.
    pub baseline: Option<Side>,
    /// Present with a baseline.
    pub comparison: Option<Comparison>,
    pub thresholds: Vec<ThresholdResult>,
    /// Every threshold holds: the exit code is 0.
    pub passed: bool,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub concurrency: usize,
    pub timeout_ms: f64,
    pub max_body_bytes: usize,
    pub cost: Option<Price>,
    pub baseline_cost: Option<Price>,
    /// Names only: values may be credentials.
    pub header_names: Vec<String>,
    pub baseline_header_names: Vec<String>,
}

/// One side: a live URL, or a saved report read with `--baseline-report`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Side {
    pub url: Option<String>,
    /// The `--baseline-report` file this side was read from.
    pub report_file: Option<String>,
    pub summary: Summary,
    pub cases: Vec<CaseReport>,
}

/// One golden case on one side.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CaseReport {
    pub id: String,
    pub line: usize,
    pub passed: bool,
    pub status: Option<u16>,
    /// To the last body byte; the limit when the case timed out; `null`
    /// when there was no response to time.
    pub latency_ms: Option<f64>,
    pub timed_out: bool,
    /// The response was an event stream (reassembled before the checks).
    pub streamed: bool,
    pub body_bytes: u64,
    /// Over `--max-body`: only the first `max_body_bytes` were checked.
    pub body_truncated: bool,
    pub usage: Option<UsageReport>,
    pub cost_usd: Option<f64>,
    /// `null` when the case has no `json_schema` expectation.
    pub schema_valid: Option<bool>,
    pub failures: Vec<FailureReport>,
    /// The start of what the checks saw.
    pub excerpt: String,
}

impl CaseReport {
    pub fn new(case: &Case, response: &Response, verdict: &Verdict, price: Option<Price>) -> Self {
        let usage = (!response.usage.is_empty()).then_some(UsageReport {
            input: response.usage.input,
            output: response.usage.output,
        });
        CaseReport {
            id: case.id.clone(),
            line: case.line,
            passed: verdict.passed(),
            status: response.status.map(|s| s.as_u16()),
            latency_ms: response
                .latency
                .map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
            timed_out: matches!(response.transport, Transport::TimedOut { .. }),
            streamed: response.is_event_stream(),
            body_bytes: response.body_len,
            body_truncated: response.truncated,
            usage,
            cost_usd: price
                .zip(usage)
                .map(|(p, u)| (p.cost(u.input, u.output) * 1e9).round() / 1e9),
            schema_valid: verdict.schema_valid,
            failures: verdict
                .failures
                .iter()
                .map(|f| FailureReport {
                    expectation: f.kind.as_str().to_owned(),
                    expected: f.expected.clone(),
                    got: f.got.clone(),
                    reason: f.reason.clone(),
                })
                .collect(),
            excerpt: verdict.excerpt.clone(),
        }
    }

    /// No complete response (JUnit `<error>` rather than `<failure>`).
    pub fn is_error(&self) -> bool {
        self.failures
            .iter()
            .any(|f| f.expectation == Kind::Response.as_str())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    pub input: Option<u64>,
    pub output: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FailureReport {
    /// `response`, `status`, `contains`, `json`, `json_schema`, `max_latency`.
    pub expectation: String,
    pub expected: String,
    pub got: String,
    pub reason: String,
}

/// The part of an earlier report that `--baseline-report` needs: its
/// target's cases (the summary is recomputed with this run's prices).
#[derive(Deserialize)]
struct SavedReport {
    schema_version: u32,
    target: SavedSide,
}

#[derive(Deserialize)]
struct SavedSide {
    url: Option<String>,
    cases: Vec<CaseReport>,
}

/// Read the target side of an earlier `--report-json` file.
pub fn load_saved(path: &Path) -> Result<(Option<String>, Vec<CaseReport>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read it ({e}); pass a file written by --report-json"))?;
    let saved: SavedReport = serde_json::from_str(&text).map_err(|e| {
        format!("not a cutover eval report ({e}); pass a file written by --report-json")
    })?;
    if saved.schema_version != SCHEMA_VERSION {
        return Err(format!(
            "schema_version {} is not supported (this cutover reads {SCHEMA_VERSION}); rerun the baseline with this version",
            saved.schema_version
        ));
    }
    if saved.target.cases.is_empty() {
        return Err("it holds no cases".into());
    }
    Ok((saved.target.url, saved.target.cases))
}

/// Failed cases printed per side, at most (all are in the JSON report).
const MAX_FAILED_SHOWN: usize = 100;

/// The table and the failed cases, for a terminal or a CI log.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let t = &report.target;
    let _ = writeln!(
        out,
        "cutover eval: {} cases from {}",
        t.summary.cases, report.golden
    );
    let _ = writeln!(out, "  target    {}", side_name(t));
    if let Some(b) = &report.baseline {
        let _ = writeln!(out, "  baseline  {}", side_name(b));
    }
    out.push('\n');

    let b = report.baseline.as_ref().map(|b| &b.summary);
    let d = report.comparison.as_ref().map(|c| &c.deltas);
    let mut rows: Vec<[String; 4]> = vec![[
        String::new(),
        "target".into(),
        if b.is_some() {
            "baseline".into()
        } else {
            String::new()
        },
        if b.is_some() {
            "delta".into()
        } else {
            String::new()
        },
    ]];
    let s = &t.summary;
    let row = |name: &str, f: &dyn Fn(&Summary) -> String, delta: String| {
        [name.to_owned(), f(s), b.map(f).unwrap_or_default(), delta]
    };
    rows.push(row("cases", &|s| s.cases.to_string(), String::new()));
    rows.push(row(
        "passed",
        &|s| s.passed.to_string(),
        b.map(|b| signed_int(s.passed as i64 - b.passed as i64))
            .unwrap_or_default(),
    ));
    rows.push(row(
        "pass rate",
        &|s| percent(s.pass_rate),
        d.map(|d| points(d.pass_rate)).unwrap_or_default(),
    ));
    rows.push(row(
        "schema compliance",
        &|s| match s.schema_compliance {
            Some(r) => format!("{} ({}/{})", percent(r), s.schema_valid, s.schema_cases),
            None => "n/a".into(),
        },
        d.and_then(|d| d.schema_compliance.map(points))
            .unwrap_or_default(),
    ));
    rows.push(row(
        "p50 latency",
        &|s| opt_ms(s.p50_latency_ms),
        d.and_then(|d| d.p50_latency_ms.map(signed_ms))
            .unwrap_or_default(),
    ));
    rows.push(row(
        "p95 latency",
        &|s| opt_ms(s.p95_latency_ms),
        d.and_then(|d| d.p95_latency_ms.map(signed_ms))
            .unwrap_or_default(),
    ));
    // Means over the responses that carried usage: say so when that is
    // not every case (a timed-out case has none).
    let tokens = |x: Option<f64>, s: &Summary| match x {
        Some(_) if s.usage_cases < s.cases => {
            format!("{} ({}/{})", opt_num(x), s.usage_cases, s.cases)
        }
        _ => opt_num(x),
    };
    rows.push(row(
        "input tokens/request",
        &|s| tokens(s.input_tokens_per_request, s),
        d.and_then(|d| d.input_tokens_per_request.map(signed_num))
            .unwrap_or_default(),
    ));
    rows.push(row(
        "output tokens/request",
        &|s| tokens(s.output_tokens_per_request, s),
        d.and_then(|d| d.output_tokens_per_request.map(signed_num))
            .unwrap_or_default(),
    ));
    rows.push(row(
        "cost/request",
        &|s| match s.cost_per_request_usd {
            Some(c) => format!("${c:.6}"),
            None if s.usage_cases == 0 => "n/a (no usage)".into(),
            None => "n/a (no --cost)".into(),
        },
        d.and_then(|d| {
            d.cost_per_request_usd
                .map(|c| format!("{}${:.6}", sign(c), c.abs()))
        })
        .unwrap_or_default(),
    ));
    rows.push(row("no response", &|s| s.errors.to_string(), String::new()));
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let mut line = String::from("  ");
        for (i, cell) in r.iter().enumerate() {
            let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }

    let truncated = t.cases.iter().filter(|c| c.body_truncated).count();
    if truncated > 0 {
        let _ = writeln!(
            out,
            "\n{truncated} target response(s) exceeded the --max-body cap of {} bytes: only that much was checked",
            report.settings.max_body_bytes
        );
    }
    if let Some(c) = &report.comparison {
        if !c.regressions.is_empty() {
            let _ = writeln!(
                out,
                "\nregressions (pass on the baseline, fail on the target): {}",
                c.regressions.join(", ")
            );
        }
        if !c.fixed.is_empty() {
            let _ = writeln!(
                out,
                "fixed (fail on the baseline, pass on the target): {}",
                c.fixed.join(", ")
            );
        }
    }
    for w in &report.warnings {
        let _ = writeln!(out, "\nwarning: {w}");
    }

    failed_cases(&mut out, "target", t);
    if let Some(b) = &report.baseline {
        failed_cases(&mut out, "baseline", b);
    }

    out.push_str("\nthresholds:\n");
    for th in &report.thresholds {
        let _ = writeln!(
            out,
            "  {:<6}  {:<22} {}",
            if th.ok { "ok" } else { "BROKEN" },
            th.name,
            th.detail
        );
    }
    let broken: Vec<&str> = report
        .thresholds
        .iter()
        .filter(|t| !t.ok)
        .map(|t| t.name.as_str())
        .collect();
    if broken.is_empty() {
        out.push_str("\nresult: PASS (every threshold holds)\n");
    } else {
        let _ = writeln!(
            out,
            "\nresult: FAIL ({} broken: {})",
            if broken.len() == 1 {
                "1 threshold".to_owned()
            } else {
                format!("{} thresholds", broken.len())
            },
            broken.join(", ")
        );
    }
    out
}

fn failed_cases(out: &mut String, label: &str, side: &Side) {
    let failed: Vec<&CaseReport> = side.cases.iter().filter(|c| !c.passed).collect();
    if failed.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nfailed cases on the {label} ({}):", failed.len());
    for c in failed.iter().take(MAX_FAILED_SHOWN) {
        let what = match (c.status, c.latency_ms) {
            (_, Some(l)) if c.timed_out => format!("no complete response within {}", fmt_ms(l)),
            (Some(s), Some(l)) => format!("status {s} in {}", fmt_ms(l)),
            (Some(s), None) => format!("status {s}, body incomplete"),
            (None, _) => "no response".to_owned(),
        };
        let _ = writeln!(out, "  FAIL {} (line {}): {what}", c.id, c.line);
        for f in &c.failures {
            let _ = writeln!(
                out,
                "    {}: expected {}; got {}\n      why: {}",
                f.expectation,
                one_line(&f.expected),
                one_line(&f.got),
                one_line(&f.reason)
            );
        }
        if !c.excerpt.is_empty() {
            let _ = writeln!(
                out,
                "    response: {}",
                one_line(&super::check::excerpt(&c.excerpt, 300))
            );
        }
    }
    if failed.len() > MAX_FAILED_SHOWN {
        let _ = writeln!(
            out,
            "  … {} more (every case is in --report-json)",
            failed.len() - MAX_FAILED_SHOWN
        );
    }
}

fn side_name(side: &Side) -> String {
    match (&side.url, &side.report_file) {
        (_, Some(file)) => match &side.url {
            Some(url) => format!("saved report {file} (from {url})"),
            None => format!("saved report {file}"),
        },
        (Some(url), None) => url.clone(),
        (None, None) => "?".into(),
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn percent(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
}

fn sign(x: f64) -> &'static str {
    if x < 0.0 { "-" } else { "+" }
}

fn points(d: f64) -> String {
    format!("{}{:.1} pts", sign(d), (d * 100.0).abs())
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{ms:.1}ms")
    }
}

fn opt_ms(ms: Option<f64>) -> String {
    ms.map_or_else(|| "n/a".into(), fmt_ms)
}

fn signed_ms(ms: f64) -> String {
    format!("{}{}", sign(ms), fmt_ms(ms.abs()))
}

fn opt_num(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".into(), |x| format!("{x:.1}"))
}

fn signed_num(x: f64) -> String {
    format!("{}{:.1}", sign(x), x.abs())
}

fn signed_int(x: i64) -> String {
    if x < 0 {
        x.to_string()
    } else {
        format!("+{x}")
    }
}

/// JUnit XML: one `<testcase>` per golden case on the target. A case with
/// no complete response is an `<error>`, any other failed case a
/// `<failure>`; the attributes are those of the common Ant/Jenkins schema.
pub fn junit(report: &Report) -> String {
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

fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if xml_char(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}

fn attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
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

    #[test]
    fn deltas_are_signed() {
        assert_eq!(points(-0.0833), "-8.3 pts");
        assert_eq!(points(0.0), "+0.0 pts");
        assert_eq!(signed_ms(-1500.0), "-1500ms");
        assert_eq!(signed_int(0), "+0");
    }
}
