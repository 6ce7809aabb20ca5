//! The publisher task: sets fire records and running states in gossip, in order,
//! writes the data dir, and opens each batch's gates once its records went out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, watch};
use tracing::debug;

use super::store::Store;
use crate::cluster::{Publish, Publisher};
use crate::core::types::{FireRecord, JobId, UnixMillis};

/// One publication for the publisher task.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) publish: Publish,
    /// Gates to open once the batch's records are out.
    pub(super) gates: Vec<(GateTarget, watch::Sender<GateState>)>,
    /// The last batch: the task ends once it (and every batch sent before it) went out.
    pub(super) last: bool,
}

impl Batch {
    /// Running states only (`running:<job>`: a slot, or `None` once it ended).
    pub(super) fn running(running: Vec<(JobId, Option<UnixMillis>)>) -> Batch {
        Batch {
            publish: Publish {
                running,
                ..Publish::default()
            },
            gates: Vec::new(),
            last: false,
        }
    }

    /// The digest of the member set the planner now uses (`members`).
    pub(super) fn members(members: String) -> Batch {
        Batch {
            publish: Publish {
                members: Some(members),
                ..Publish::default()
            },
            gates: Vec::new(),
            last: false,
        }
    }

    /// Asks the task to end once every batch sent before it went out (a graceful leave).
    pub(super) fn last() -> Batch {
        Batch {
            last: true,
            ..Batch::default()
        }
    }
}

/// What a gate waits for, besides the data dir (always written first when there is one).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum GateTarget {
    /// Nothing else: no peer to tell.
    Store,
    /// The record was sent to a peer (a round with the job's runner-up, the node that takes
    /// over on a crash, is asked for at once).
    Peer(SocketAddr),
    /// Quorum mode: `need` of `peers` hold the record (their digests show it), so together
    /// with this node a quorum has it, and any majority side has a node that knows.
    Quorum { need: usize, peers: Vec<SocketAddr> },
}

/// A gate's state: the publication its records went out in, and whether runs may start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct GateState {
    pub(super) seq: Option<u64>,
    /// Runs may start: the records went where the target says, or the wait timed out.
    pub(super) open: bool,
    /// The records went where the target says (not a time-out).
    pub(super) confirmed: bool,
}

/// Publishes batches in order: sets the keys in chitchat, writes the data dir (if any), then
/// opens each batch's gates once its records reached the runner-up (or after `timeout`).
/// Ends after a [`Batch::last`] (everything sent before it is published and saved first),
/// or when every sender is gone.
pub(super) async fn publisher_task(
    publisher: Publisher,
    mut rx: mpsc::UnboundedReceiver<Batch>,
    store: Option<Arc<Store>>,
    mut saved: BTreeMap<JobId, FireRecord>,
    timeout: Duration,
) {
    while let Some(mut batch) = rx.recv().await {
        while !batch.last
            && let Ok(more) = rx.try_recv()
        {
            batch.publish.records.extend(more.publish.records);
            batch.publish.running.extend(more.publish.running);
            if more.publish.members.is_some() {
                batch.publish.members = more.publish.members;
            }
            if more.publish.clock.is_some() {
                batch.publish.clock = more.publish.clock;
            }
            batch.gates.extend(more.gates);
            batch.last = more.last;
        }
        let last = batch.last;
        let seq = publisher.publish(&batch.publish).await;
        for (_, gate) in &batch.gates {
            let _ = gate.send(GateState {
                seq: Some(seq),
                open: false,
                confirmed: false,
            });
        }
        let open = GateState {
            seq: Some(seq),
            open: true,
            confirmed: true,
        };
        if let Some(store) = &store
            && !batch.publish.records.is_empty()
        {
            for r in &batch.publish.records {
                saved.insert(r.job.clone(), r.record);
            }
            let store = store.clone();
            let snapshot = saved.clone();
            match tokio::task::spawn_blocking(move || store.save(&snapshot)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, rate_limited = true, "could not write the fire records; a restart may rerun the latest slots")
                }
                Err(e) => tracing::error!(error = %e, "writing the fire records failed"),
            }
        }
        for (target, gate) in batch.gates {
            let confirmed = match target {
                GateTarget::Store => {
                    let _ = gate.send(open);
                    continue;
                }
                GateTarget::Peer(addr) => publisher.confirm(addr, seq, timeout).boxed(),
                GateTarget::Quorum { need, peers } => {
                    publisher.confirm_many(peers, need, seq, timeout).boxed()
                }
            };
            tokio::spawn(async move {
                let confirmed = confirmed.await;
                if !confirmed {
                    debug!("the fire record did not reach its peers in time; running anyway");
                }
                let _ = gate.send(GateState { confirmed, ..open });
            });
        }
        if last {
            return;
        }
    }
}
