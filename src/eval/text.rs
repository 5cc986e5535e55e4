//! The report as a table for people: each side's numbers, the deltas,
//! the failed cases and every threshold's verdict, for a terminal or a CI
//! log.

use std::fmt::Write as _;

use super::model::{CaseReport, Report, Side, Summary};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_are_signed() {
        assert_eq!(points(-0.0833), "-8.3 pts");
        assert_eq!(points(0.0), "+0.0 pts");
        assert_eq!(signed_ms(-1500.0), "-1500ms");
        assert_eq!(signed_int(0), "+0");
    }
}
