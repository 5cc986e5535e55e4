//! Draws `docs/judge_time_to_decision.png`: how many canary requests the
//! judge needs to decide, against the true difference in failure rate.
//!
//!     cargo run --release --example judge_plot
//!
//! Each point is the median (bars: quartiles) over seeded simulated
//! rollouts of the first decision on step 0 (1 % canary): a rollback for a
//! canary worse than the margin, an advance for one that is not. The
//! interval is 0 and the window triggers are off, so the plot shows the
//! judge alone. Text needs a TrueType font: `JUDGE_PLOT_FONT`, else
//! DejaVu Sans from the usual system path.

use std::time::Duration;

use cutover::config::{GatesConfig, RolloutConfig, WeightBps};
use cutover::rollout::State;
// The tests share this harness; the plot uses only part of it.
#[allow(dead_code)]
#[path = "../tests/support/sim.rs"]
mod sim;

use plotters::prelude::*;
use sim::{Arm, Scenario};

const RUNS: u64 = 51;
const BASELINE_FAILURES: f64 = 0.02;
const MARGIN: f64 = 0.01;

struct Point {
    effect_points: f64,
    q1: f64,
    median: f64,
    q3: f64,
    rolled_back: usize,
    advanced: usize,
    undecided: usize,
}

fn rollout() -> RolloutConfig {
    RolloutConfig {
        baseline: "v1".into(),
        canary: "v2".into(),
        shadow_first: None,
        steps: [100u16, 500, 1_000, 2_500, 5_000, 10_000]
            .iter()
            .filter_map(|b| WeightBps::new(*b))
            .collect(),
        interval: Duration::ZERO,
        min_requests: 200,
        gates: GatesConfig {
            error_rate_margin: Some(MARGIN),
            max_error_rate: Some(0.05),
            latency_p95_ratio: Some(1.25),
            max_latency_p95: Some(Duration::from_secs(20)),
            max_cost_per_request: Some(0.05),
            outcome_margin: Some(0.05),
            confidence: 0.95,
        },
        rollback: None,
    }
}

fn measure(effect: f64) -> Point {
    let scenario = Scenario {
        rollout: rollout(),
        baseline: Arm {
            failure_rate: BASELINE_FAILURES,
            ..Arm::typical()
        },
        canary: Arm {
            failure_rate: BASELINE_FAILURES + effect,
            ..Arm::typical()
        },
        requests_per_tick: 1_000,
        max_ticks: 30_000,
        breaker_opens_at: None,
    };
    let mut requests = Vec::new();
    let (mut rolled_back, mut advanced, mut undecided) = (0, 0, 0);
    for seed in 0..RUNS {
        let r = sim::run(&scenario, 10_000 + seed);
        match r.first_decision {
            Some((n, State::RolledBack { .. })) => {
                rolled_back += 1;
                requests.push(n as f64);
            }
            Some((n, _)) => {
                advanced += 1;
                requests.push(n as f64);
            }
            None => {
                undecided += 1;
                requests.push(r.canary_requests as f64);
            }
        }
    }
    requests.sort_by(f64::total_cmp);
    let at = |q: f64| requests[((requests.len() - 1) as f64 * q).round() as usize];
    Point {
        effect_points: effect * 100.0,
        q1: at(0.25),
        median: at(0.5),
        q3: at(0.75),
        rolled_back,
        advanced,
        undecided,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let font_path = std::env::var("JUDGE_PLOT_FONT")
        .unwrap_or_else(|_| "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".to_string());
    let font: &'static [u8] = Box::leak(std::fs::read(&font_path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| format!("{font_path}: not a usable font"))?;

    let effects = [
        -0.015, -0.01, -0.005, 0.0, 0.025, 0.03, 0.04, 0.05, 0.06, 0.08, 0.10, 0.15, 0.20,
    ];
    println!("| canary − baseline (points) | decision | median canary requests (quartiles) |");
    println!("|---|---|---|");
    let points: Vec<Point> = effects
        .iter()
        .map(|&e| {
            let p = measure(e);
            println!(
                "| {:+.1} | {} rolled back, {} advanced, {} undecided of {RUNS} | {:.0} ({:.0}–{:.0}) |",
                p.effect_points, p.rolled_back, p.advanced, p.undecided, p.median, p.q1, p.q3
            );
            p
        })
        .collect();

    let out = "docs/judge_time_to_decision.png";
    let root = BitMapBackend::new(out, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Canary requests to the judge's first decision (step 0, 1 % canary)",
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(-2.0f64..21.0f64, (20.0f64..200_000.0f64).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("true canary − baseline failure rate (percentage points; baseline 2 %, margin 1)")
        .y_desc("canary requests (median, quartiles)")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 14))
        .draw()?;
    let pass: Vec<&Point> = points.iter().filter(|p| p.effect_points <= 0.0).collect();
    let fail: Vec<&Point> = points.iter().filter(|p| p.effect_points > 0.0).collect();
    for (series, colour, label) in [
        (&pass, BLUE, "advances (not inferior)"),
        (&fail, RED, "rolls back (inferior)"),
    ] {
        chart
            .draw_series(LineSeries::new(
                series.iter().map(|p| (p.effect_points, p.median)),
                colour.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart.draw_series(
            series
                .iter()
                .map(|p| Circle::new((p.effect_points, p.median), 4, colour.filled())),
        )?;
        for p in series {
            chart.draw_series(LineSeries::new(
                vec![(p.effect_points, p.q1), (p.effect_points, p.q3)],
                colour.stroke_width(1),
            ))?;
        }
    }
    let margin = MARGIN * 100.0;
    chart
        .draw_series(LineSeries::new(
            vec![(margin, 20.0), (margin, 200_000.0)],
            BLACK.mix(0.5).stroke_width(1),
        ))?
        .label("margin (no decision is guaranteed near it)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    println!("wrote {out}");
    Ok(())
}
