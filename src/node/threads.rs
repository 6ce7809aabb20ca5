//! The node's own threads: a single-threaded runtime each, for the scheduler and for
//! gossip, so neither waits behind a burst of runs on the runtime's workers (issue 14).

use tokio::sync::oneshot;

use super::NodeError;

/// Starts a thread named `name` with a single-threaded runtime of its own, which runs
/// until the returned sender is dropped: the scheduler's (see
/// [`NodeBuilder::scheduler_thread`]) and gossip's.
pub(super) fn start_runtime_thread(
    name: &str,
) -> Result<(tokio::runtime::Handle, oneshot::Sender<()>), NodeError> {
    /// Shuts a runtime down without blocking, should the thread not start: a runtime
    /// dropped normally inside an async context panics.
    struct Unstarted(Option<tokio::runtime::Runtime>);
    impl Drop for Unstarted {
        fn drop(&mut self) {
            if let Some(rt) = self.0.take() {
                rt.shutdown_background();
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(NodeError::Scheduler)?;
    let handle = rt.handle().clone();
    let (done, until) = oneshot::channel::<()>();
    let mut rt = Unstarted(Some(rt));
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Some(rt) = rt.0.take() {
                rt.block_on(async {
                    let _ = until.await;
                });
                // Outside any async context: waits for a data-dir write in progress.
                drop(rt);
            }
        })
        .map_err(NodeError::Scheduler)?;
    Ok((handle, done))
}
