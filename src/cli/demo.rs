//! `cutover demo`: mock backends and the proxy on loopback, driven live.
//!
//! The demo embeds `config/demo.toml`, starts one mock backend per version
//! and the proxy in-process on free ports ([`stage`]), then plays a list of
//! acts ([`acts`]), each driving simulated users through the proxy
//! ([`driver`]) and printing what happened ([`out`]). Every act also
//! checks what it shows, so the demo doubles as a self-check: any broken
//! invariant exits 1 with a message saying what went wrong.

mod acts;
mod driver;
mod out;
mod stage;

use std::time::{Duration, Instant};

use acts::{ACTS, Show};
use driver::Driver;
use out::Out;
use stage::Stage;

/// Simulated users in every round of traffic.
const USERS: usize = 300;
/// Requests each user sends per round.
const REQUESTS_PER_USER: usize = 4;
/// Requests in flight at once.
const CONCURRENCY: usize = 16;
/// The whole show must end by then, or the demo fails.
const DEADLINE: Duration = Duration::from_secs(45);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a plain transcript instead of redrawing the terminal.
    #[arg(long)]
    pub no_tty: bool,
}

pub fn run(args: Args) -> u8 {
    let out = Out::new(args.no_tty);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cutover demo: cannot start the async runtime: {e}");
            return super::EXIT_USER;
        }
    };
    let verdict = runtime.block_on(async {
        match tokio::time::timeout(DEADLINE, play(out)).await {
            Ok(result) => result,
            Err(_) => Err(format!("the demo did not finish within {DEADLINE:?}")),
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

async fn play(out: Out) -> Result<(), String> {
    let started = Instant::now();
    out.title("cutover demo: shipping a new agent version to a sticky slice of users");
    let stage = Stage::start().await?;
    intro(&out, &stage)?;

    let mut show = Show {
        out,
        driver: Driver::new(stage.traffic, CONCURRENCY),
        stage,
        users: (1..=USERS).map(|n| format!("user-{n}")).collect(),
        requests_per_user: REQUESTS_PER_USER,
        previous: None,
        total_requests: 0,
    };
    let played = async {
        for act in ACTS {
            show.out.heading(act.title);
            show.out.caption(act.caption);
            (act.play)(&mut show).await?;
        }
        Ok::<(), String>(())
    }
    .await;
    let Show {
        stage,
        driver,
        total_requests,
        ..
    } = show;
    // Idle keep-alive connections go first, so the drain has nothing to wait for.
    drop(driver);
    let stopped = stage.stop().await;
    played?;
    stopped?;

    out.blank();
    out.title(&format!(
        "The end: {} acts, {total_requests} requests, proxy and mocks shut down cleanly, {:.1}s in all.",
        ACTS.len(),
        started.elapsed().as_secs_f64()
    ));
    out.line("Try it yourself: cutover check --config config/demo.toml");
    Ok(())
}

fn intro(out: &Out, stage: &Stage) -> Result<(), String> {
    let (low, high) = stage::MOCK_LATENCY;
    for (version, mock) in &stage.mocks {
        out.info(&format!(
            "mock backend {version}: {} ({}-{} ms latency)",
            mock.url(),
            low.as_millis(),
            high.as_millis()
        ));
    }
    out.info(&format!(
        "proxy: traffic http://{}, admin http://{}",
        stage.traffic, stage.admin
    ));
    let weights = acts::describe_weights(&stage.weights()?);
    out.info(&format!(
        "route {}: POST /v1/..., sticky on the x-user-id header, {weights}",
        stage::ROUTE
    ));
    Ok(())
}
