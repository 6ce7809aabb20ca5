//! Saving a node's run history in its data dir: one file, `history.bin`, encoded through
//! [`crate::encoding`] and replaced atomically (see [`crate::node::store::write_atomic`]).
//!
//! It is written at most every few seconds while the history changes, and once more at a
//! graceful shutdown, so a crash loses the last seconds of history, never the file. A
//! damaged file (truncated, foreign, another node's) is reported and moved aside to
//! `history.bin.damaged[.N]`, never overwritten: the node starts with an empty history.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{error, warn};

use super::{History, HistoryLimits, RunOutcome, RunRecord};
use crate::core::types::{FireId, JobId, NodeId, UnixMillis};
use crate::encoding::{decode, encode};
use crate::node::store::{StoreError, move_aside, write_atomic};

/// The history file inside the data dir.
pub const HISTORY_FILE: &str = "history.bin";
const VERSION: u16 = 1;

#[derive(Serialize, Deserialize)]
struct OnDisk {
    node_id: String,
    /// Oldest first.
    runs: Vec<Stored>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    job: String,
    slot: i64,
    fire_id: u64,
    epoch: u64,
    attempts: u32,
    started_at: Option<i64>,
    duration_ms: Option<u64>,
    outcome: RunOutcome,
    exit_code: Option<i32>,
    message: Option<String>,
    stdout: String,
    stderr: String,
    slots: u64,
    last_slot: i64,
}

impl Stored {
    fn of(r: &RunRecord) -> Stored {
        Stored {
            job: r.job.to_string(),
            slot: r.slot.0,
            fire_id: r.fire_id.0,
            epoch: r.epoch,
            attempts: r.attempts,
            started_at: r.started_at.map(|t| t.0),
            duration_ms: r.duration_ms,
            outcome: r.outcome,
            exit_code: r.exit_code,
            message: r.message.clone(),
            stdout: r.stdout_tail.clone(),
            stderr: r.stderr_tail.clone(),
            slots: r.slots,
            last_slot: r.last_slot.0,
        }
    }

    fn record(self, node: &NodeId) -> RunRecord {
        RunRecord {
            node: node.clone(),
            job: JobId::new(self.job),
            slot: UnixMillis(self.slot),
            fire_id: FireId(self.fire_id),
            epoch: self.epoch,
            attempts: self.attempts,
            started_at: self.started_at.map(UnixMillis),
            duration_ms: self.duration_ms,
            outcome: self.outcome,
            exit_code: self.exit_code,
            message: self.message,
            stdout_tail: self.stdout,
            stderr_tail: self.stderr,
            slots: self.slots,
            last_slot: UnixMillis(self.last_slot),
        }
    }
}

/// Where a history is saved, and what was last saved.
#[derive(Debug)]
pub(super) struct HistoryFile {
    dir: PathBuf,
    /// The history's change count at the last save; held while saving, so two saves never
    /// interleave.
    saved: Mutex<u64>,
}

impl History {
    /// A history saved in `dir` (the node's data dir, already locked by the node), with the
    /// records saved there before. A damaged file is moved aside and reported (see the
    /// module docs).
    pub fn open(dir: &Path, node: NodeId, limits: HistoryLimits) -> History {
        let path = dir.join(HISTORY_FILE);
        let mut history = History::new(node, limits);
        let loaded = match std::fs::read(&path) {
            Ok(bytes) => Some(
                decode::<OnDisk>(&bytes, VERSION)
                    .map_err(|e| e.to_string())
                    .and_then(|disk| {
                        if disk.node_id == history.node.as_str() {
                            Ok(disk.runs)
                        } else {
                            Err(format!("it holds the history of node `{}`", disk.node_id))
                        }
                    }),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(Err(format!("cannot read it: {e}"))),
        };
        match loaded {
            None => {}
            Some(Ok(runs)) => {
                let node = history.node.clone();
                history.restore(runs.into_iter().map(|s| s.record(&node)).collect());
            }
            Some(Err(why)) => match move_aside(&path) {
                Some(to) => {
                    error!(file = %path.display(), moved_to = %to.display(), problem = %why, "run history file is damaged: moved aside; starting with an empty history");
                }
                None => {
                    error!(file = %path.display(), problem = %why, "run history file is damaged and could not be moved aside: keeping history in memory only, so it is not overwritten");
                    return history;
                }
            },
        }
        history.file = Some(HistoryFile {
            dir: dir.to_path_buf(),
            saved: Mutex::new(0),
        });
        history
    }

    /// Writes the history to its file if it changed since the last save; returns whether it
    /// wrote. Blocks on disk I/O: call it off the async workers.
    pub fn save(&self) -> Result<bool, StoreError> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        let mut saved = file.saved.lock().unwrap_or_else(|e| e.into_inner());
        if self.changes() == *saved {
            return Ok(false);
        }
        let (changes, runs) = self.snapshot();
        let disk = OnDisk {
            node_id: self.node.to_string(),
            runs: runs.iter().map(Stored::of).collect(),
        };
        write_atomic(&file.dir, HISTORY_FILE, &encode(&disk, VERSION))?;
        *saved = changes;
        Ok(true)
    }
}

/// Saves `history` every `every` while it changes (a task for the node's runtime; the
/// node aborts it at shutdown and saves once more). A failed save is logged and tried
/// again next time.
pub async fn flush_every(history: Arc<History>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let h = history.clone();
        match tokio::task::spawn_blocking(move || h.save()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, rate_limited = true, "could not save the run history"),
            Err(e) => warn!(error = %e, "saving the run history failed"),
        }
    }
}
