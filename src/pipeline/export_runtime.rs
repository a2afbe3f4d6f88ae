//! The export runtime: delivery (every sink's batching, encoding,
//! compression, HTTP calls and retries) and the spools' flusher run on a
//! thread of their own ("llmtap-export"), never on the runtime that serves
//! the agent's calls. Encoding and gzipping a batch of spans takes
//! milliseconds of CPU; on the serving runtime, calls queued on that worker
//! would wait for it, where on a thread of its own the kernel preempts it
//! for them.

use std::future::Future;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A single-threaded runtime on its own thread; dropping this stops it
/// (tasks still running on it are cancelled).
pub struct ExportRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
}

impl ExportRuntime {
    pub fn start() -> std::io::Result<Self> {
        let rt = Builder::new_current_thread().enable_all().build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("llmtap-export".into())
            .spawn(move || {
                // Drives the spawned tasks until told to stop (or until the
                // pipeline is dropped), then drops the runtime here, off any
                // async context.
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(ExportRuntime {
            handle,
            stop: Some(stop),
        })
    }

    /// Runs `task` on the export thread; the handle can be awaited (or
    /// aborted) from any runtime.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(task)
    }
}

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_the_export_thread_and_stop_with_it() {
        let rt = ExportRuntime::start().unwrap();
        let name = rt.spawn(async { std::thread::current().name().map(str::to_string) });
        assert_eq!(name.await.unwrap().as_deref(), Some("llmtap-export"));
        let (_tx, rx) = oneshot::channel::<()>();
        let forever = rt.spawn(async move {
            let _ = rx.await;
        });
        drop(rt);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), forever).await;
        let err = ended
            .expect("stopping the runtime ended its tasks")
            .unwrap_err();
        assert!(err.is_cancelled());
    }
}
