//! The control plane's own thread: a single-threaded tokio runtime beside
//! the traffic workers, for everything that is not a client's request.
//!
//! The admin listener (and with it `/metrics` rendering and `POST /reload`
//! compiles), the config watcher, the rollout tick, the fleet's sync loop,
//! the upstream pool's sweeper and the cache's upkeep all run here, so a
//! traffic worker only ever polls connections and requests: a scrape, a
//! reload of a large config or a slow Redis round never takes a turn on a
//! worker, nor adds to a request's latency there.
//!
//! The thread lives as long as its [`ControlPlane`]: dropping it (a server
//! task aborted in a test) or [`ControlPlane::shutdown`] stops the runtime,
//! which drops every task still on it.

use std::future::Future;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct ControlPlane {
    handle: Handle,
    /// Dropped or sent: the thread's `block_on` returns and the runtime
    /// with its tasks is dropped.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlPlane {
    /// Start the thread and its runtime.
    pub fn start() -> std::io::Result<ControlPlane> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("cutover-control".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                // Tasks still running (an admin connection, a sleeping
                // tick) are dropped without waiting on them.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(ControlPlane {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where to spawn control-plane tasks (or enter, for code that calls
    /// `tokio::spawn` itself).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(task)
    }

    /// Stop the runtime and wait for its thread to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Joined off the caller's runtime: its worker keeps serving.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Never blocks: the thread ends on its own once told to.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_the_control_thread_and_stop_with_it() {
        let control = ControlPlane::start().expect("start");
        let name = control
            .spawn(async { std::thread::current().name().map(str::to_string) })
            .await
            .expect("task");
        assert_eq!(name.as_deref(), Some("cutover-control"));

        let forever = control.spawn(std::future::pending::<()>());
        control.shutdown().await;
        let ended = forever.await;
        assert!(matches!(&ended, Err(e) if e.is_cancelled()), "{ended:?}");
    }

    #[tokio::test]
    async fn dropping_it_ends_the_thread() {
        let control = ControlPlane::start().expect("start");
        let forever = control.spawn(std::future::pending::<()>());
        drop(control);
        let ended = tokio::time::timeout(Duration::from_secs(5), forever).await;
        assert!(matches!(ended, Ok(Err(e)) if e.is_cancelled()));
    }
}
