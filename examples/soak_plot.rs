//! `bench/soak.sh`'s plot and memory checks: reads the samples CSV
//! (`t_s,rss_kib,fds,buffered_bytes,...`, one row every 10 s), draws RSS,
//! open descriptors and buffered request bytes over time into a PNG, and
//! checks two soak targets:
//!
//! * mean RSS over the last window is within 5 % of the window right after
//!   warm-up (windows of 10 minutes after 5 minutes of warm-up on a 30
//!   minute run; a shorter run warms up for half its length and compares
//!   two windows of a quarter each);
//! * no descriptor growth: the last window's mean count within 5 % of the
//!   first window's (the pools follow the load, so single samples move by
//!   a few either way; a leak moves the mean).
//!
//!     cargo run --example soak_plot -- samples.csv soak.png [LOAD_END_S]
//!
//! Samples after `LOAD_END_S` (seconds, when the load stopped) are drawn
//! but not judged.
//!
//! Exits 1 when a target does not hold. Text needs a TrueType font:
//! `SOAK_PLOT_FONT`, else DejaVu Sans from the usual system path.

use plotters::prelude::*;

/// One panel: title, unit, colour, and the value it plots.
type Panel = (&'static str, &'static str, RGBColor, fn(&Sample) -> f64);

struct Sample {
    t: f64,
    rss_mib: f64,
    fds: f64,
    buffered_kib: f64,
}

fn read(path: &str) -> Result<Vec<Sample>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let cols: Vec<f64> = line
            .split(',')
            .map(|c| c.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{path}:{}: {e}", i + 1))?;
        if cols.len() < 4 || cols[1] == 0.0 {
            continue; // the process was gone
        }
        out.push(Sample {
            t: cols[0],
            rss_mib: cols[1] / 1024.0,
            fds: cols[2],
            buffered_kib: cols[3] / 1024.0,
        });
    }
    Ok(out)
}

/// (warm-up end, window length) in seconds for a run of `total` seconds:
/// 5 and 10 minutes on a 30 minute run; on a short one, half the run to
/// warm up (allocator arenas, the cache, pools) and a quarter per window.
fn windows(total: f64) -> (f64, f64) {
    let warmup = (total / 2.0).min(300.0);
    let window = ((total - warmup) / 2.0).min(600.0);
    (warmup, window)
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

fn max(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::MIN, f64::max)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (csv, png, load_end) = match args.as_slice() {
        [csv, png] => (csv, png, None),
        [csv, png, end] => (csv, png, Some(end.parse::<f64>()?)),
        _ => return Err("usage: soak_plot SAMPLES.csv OUT.png [LOAD_END_S]".into()),
    };
    let samples = read(csv)?;
    let judged: Vec<&Sample> = samples
        .iter()
        .filter(|s| load_end.is_none_or(|end| s.t <= end))
        .collect();
    if judged.len() < 4 {
        return Err(format!("{csv}: {} samples, too few to judge", judged.len()).into());
    }
    let total = judged.last().map_or(0.0, |s| s.t);
    let (warmup, window) = windows(total);
    let first: Vec<&Sample> = judged
        .iter()
        .copied()
        .filter(|s| s.t >= warmup && s.t < warmup + window)
        .collect();
    let last: Vec<&Sample> = judged
        .iter()
        .copied()
        .filter(|s| s.t > total - window)
        .collect();
    let rss = |w: &[&Sample]| mean(&w.iter().map(|s| s.rss_mib).collect::<Vec<_>>());
    // Descriptors by the window's mean, as RSS: the upstream pools follow
    // the load (a burst's connections age out), so the count moves by a few
    // either way from one sample to the next, and comparing two maxima
    // judged that noise. A leak is a trend, which moves the mean.
    let fds = |w: &[&Sample]| mean(&w.iter().map(|s| s.fds).collect::<Vec<_>>());
    let fds_max = |w: &[&Sample]| max(&w.iter().map(|s| s.fds).collect::<Vec<_>>());
    let (rss_first, rss_last) = (rss(&first), rss(&last));
    let drift = (rss_last - rss_first) / rss_first;
    let (fds_first, fds_last) = (fds(&first), fds(&last));
    let fds_growth = (fds_last - fds_first) / fds_first.max(1.0);
    let rss_ok = drift.abs() <= 0.05;
    let fds_ok = fds_growth <= 0.05;
    println!(
        "{} RSS: mean {rss_first:.1} MiB over {:.0}-{:.0} s after warm-up, {rss_last:.1} MiB over the last {:.0} s ({:+.1} %, target within 5 %)",
        if rss_ok { "PASS" } else { "FAIL" },
        warmup,
        warmup + window,
        window,
        drift * 100.0
    );
    println!(
        "{} descriptors: mean {fds_first:.1} (at most {:.0}) after warm-up, {fds_last:.1} (at most {:.0}) over the last {:.0} s ({:+.1} %, target: no growth past 5 %)",
        if fds_ok { "PASS" } else { "FAIL" },
        fds_max(&first),
        fds_max(&last),
        window,
        fds_growth * 100.0
    );
    draw(&samples, png, warmup, window, total)?;
    println!("wrote {png}");
    if rss_ok && fds_ok {
        Ok(())
    } else {
        std::process::exit(1)
    }
}

fn draw(
    samples: &[Sample],
    png: &str,
    warmup: f64,
    window: f64,
    total: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let font_path = std::env::var("SOAK_PLOT_FONT")
        .unwrap_or_else(|_| "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".to_string());
    let font: &'static [u8] = Box::leak(std::fs::read(&font_path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| format!("{font_path}: not a usable font"))?;

    let root = BitMapBackend::new(png, (1000, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((3, 1));
    let minutes = |t: f64| t / 60.0;
    let x_max = minutes(total).max(0.5);
    let series: [Panel; 3] = [
        ("RSS", "MiB", BLUE, |s| s.rss_mib),
        ("open file descriptors", "count", RED, |s| s.fds),
        ("cutover_buffered_bytes", "KiB", GREEN, |s| s.buffered_kib),
    ];
    for (panel, (title, unit, colour, value)) in panels.iter().zip(series) {
        let top = samples.iter().map(value).fold(1.0f64, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{title} over the soak"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_max, 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("minutes")
            .y_desc(unit)
            .label_style(("sans-serif", 13))
            .draw()?;
        // The two windows the RSS target compares.
        for (from, to) in [(warmup, warmup + window), (total - window, total)] {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(minutes(from), 0.0), (minutes(to), top)],
                BLACK.mix(0.06).filled(),
            )))?;
        }
        chart.draw_series(LineSeries::new(
            samples.iter().map(|s| (minutes(s.t), value(s))),
            colour.stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(())
}
