//! `cutover demo`: mock backends and the proxy on loopback, driven live.
//!
//! The demo embeds `config/demo.toml`, starts one mock backend per upstream
//! and the proxy in-process on free ports ([`stage`]), then plays the acts
//! of a release ([`acts`]): the sticky split, a shadow being compared, a
//! failing backend with breakers, fallbacks and the refusal, the
//! version-aware cache, a rollout to promotion and a bad canary rolled
//! back. Simulated users drive each act through the proxy ([`driver`]);
//! the terminal shows a redrawn dashboard, or a plain transcript with
//! `--no-tty` ([`screen`]). Every act also checks what it shows, so the
//! demo doubles as a self-check: any broken promise exits 1 and says what
//! went wrong.
//!
//! `--fleet` plays another story ([`fleet`]): three replicas of the binary
//! on a local Redis, one rollout, the leader killed halfway.

mod acts;
mod driver;
mod fleet;
mod screen;
mod stage;

use std::time::{Duration, Instant};

use acts::{ACTS, Show};
use driver::Driver;
use screen::Screen;
use stage::{Stage, named_mut, route_mut};

/// The whole show must end by then, or the demo fails.
const DEADLINE: Duration = Duration::from_secs(150);
/// On a terminal, how long each phase's numbers stay up.
const HOLD: Duration = Duration::from_millis(2500);
const TITLE: &str = "cutover demo: shipping a new agent version safely";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a plain transcript instead of redrawing the terminal.
    #[arg(long)]
    pub no_tty: bool,
    /// Three replicas and a local redis-server: one rollout for the fleet,
    /// the leader killed halfway, the rollout finished by the survivors
    /// (needs redis-server on PATH).
    #[arg(long)]
    pub fleet: bool,
}

pub fn run(args: Args) -> u8 {
    if args.fleet {
        return fleet::run(args.no_tty);
    }
    let runtime = match super::runtime(super::Threads::Workers(2), "cutover demo") {
        Ok(r) => r,
        Err(code) => return code,
    };
    let names: Vec<(&'static str, &'static str)> =
        ACTS.iter().map(|a| (a.short, a.title)).collect();
    let screen = Screen::new(args.no_tty, TITLE, &names);
    let verdict = runtime.block_on(async {
        tokio::select! {
            played = tokio::time::timeout(DEADLINE, play(screen)) => match played {
                Ok(result) => result,
                Err(_) => Err(format!("the demo did not finish within {DEADLINE:?}")),
            },
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    match verdict {
        Ok(()) => super::EXIT_OK,
        Err(e) => {
            eprintln!("cutover demo failed: {e}");
            super::EXIT_USER
        }
    }
}

async fn play(screen: Screen) -> Result<(), String> {
    let started = Instant::now();
    // The shadow starts switched off; act 2 switches it on with a config
    // edit, as an operator would.
    let stage = Stage::start(|doc| {
        named_mut(route_mut(doc, "chat")?, "shadows", "v3")?["percent"] = toml_edit::value(0.0);
        Ok(())
    })
    .await?;
    screen.intro(&format!(
        "proxy: traffic http://{}, admin http://{} (try GET /status or /metrics while it runs)",
        stage.traffic, stage.admin
    ));
    screen.intro(&format!(
        "{} mock backends on loopback: {}",
        stage.mocks.len(),
        stage
            .mocks
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let hold = if screen.is_tty() {
        HOLD
    } else {
        Duration::ZERO
    };
    let mut show = Show {
        driver: Driver::new(stage.traffic),
        screen,
        stage,
        requests: 0,
        hold,
        p50_before_shadow: None,
    };
    let played = async {
        for (index, act) in ACTS.iter().enumerate() {
            show.screen.begin(index, act.caption);
            (act.play)(&mut show).await?;
            show.screen.end();
        }
        Ok::<(), String>(())
    }
    .await;
    let Show {
        stage,
        driver,
        screen,
        requests,
        ..
    } = show;
    // Idle keep-alive connections go first, so the drain has nothing to wait for.
    drop(driver);
    let stopped = stage.stop().await;
    if let Err(e) = played.and(stopped) {
        screen.restore();
        return Err(e);
    }
    screen.finish(&[
        format!(
            "The end: {} acts, {requests} requests, proxy and mocks shut down cleanly, {:.1}s in all.",
            ACTS.len(),
            started.elapsed().as_secs_f64()
        ),
        "Next: cutover check --config config/demo.toml, then read docs/concepts.md".to_owned(),
    ]);
    Ok(())
}
