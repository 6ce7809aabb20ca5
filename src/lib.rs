//! Starling: a leaderless cron cluster.
//!
//! N identical peers gossip membership and heartbeats (chitchat). Each job's owner is chosen
//! by rendezvous hashing over the live members, so every job runs on exactly one node with
//! no coordinator, and ownership fails over when a peer is suspected dead.
//!
//! # Layout
//!
//! - `core`: pure scheduling logic: schedules, ownership (weighted rendezvous hashing over
//!   the members whose tags satisfy a job's constraints), the planner state machine, the
//!   jobs no member may own, dependencies (`after`: parents, cycles, child fire ids), and
//!   every bound on input (`core::limits`). No tokio, no
//!   chitchat, no clock reads, no I/O.
//! - `catalog`: the cluster-wide job catalog: definitions from jobs files and the API,
//!   versions (a hybrid logical clock), merge and conflict rules, tombstones, the gossip
//!   key layout. Pure, like `core`.
//! - `api`: the HTTP API (axum): any node answers for the cluster; token, limits.
//! - `console`: the web console at `GET /` on the API port: one page, its files embedded
//!   in the binary, schedules in words, and the gossip keys of its members table.
//! - `client`: the CLI client of the API (`starling jobs|members|runs`).
//! - `cluster`: the chitchat adapter: key layout, the live view, publishing fire records,
//!   the catalog's keys (`cluster::catalog`), the gossip transport that seals every packet
//!   and bounds the members a node learns of, and clock offsets from gossip round trips.
//! - `node`: the runtime that owns the planner: clock, config, builder, handle, the loop
//!   and its firing (planner actions to runs and records), the catalog task that keeps
//!   this node's copy of the catalog and serves the handle's catalog operations, the
//!   requests a parent's success makes for its children, its own health, its clock
//!   against its peers' (`max_clock_offset`), and the packing of the maps it keeps per
//!   job once its catalog settles.
//! - `exec`: executors: shell commands and in-process async handlers.
//! - `encoding`: the one module that knows the binary format (bincode) of files on disk.
//! - `logs`: log hygiene: escaping job output, rate limiting repeated lines.
//! - `history`: each node's run history: bounded, saved in the data dir, merged by the API.
//! - `metrics`: Prometheus metrics: run outcomes by job, lateness and duration histograms,
//!   the node's counters, members, gossip bytes.
//! - `security`: the cluster keyring and the seal on every gossip packet (the transport
//!   that applies it is `cluster::transport`).
//!
//! # Embedding
//!
//! ```no_run
//! use starling::{Node, NodeConfig, JobSpec, RunContext};
//!
//! # async fn example() -> anyhow::Result<()> {
//! let config = NodeConfig::new("node-1", "127.0.0.1:7946".parse()?);
//! let node = Node::builder(config)
//!     .handler_job(
//!         JobSpec::parse("cache-warm", "@every 30s")?,
//!         |ctx: RunContext| async move {
//!             println!("warming cache for slot {}", ctx.scheduled_at);
//!             Ok(())
//!         },
//!     )?
//!     .start()
//!     .await?;
//! // ... later
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod api;
pub mod catalog;
pub mod client;
pub mod cluster;
pub mod console;
pub mod core;
pub mod encoding;
pub mod exec;
pub mod history;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod security;

pub use crate::core::job::{
    ExecSpec, JobError, JobSpec, Misfire, Overlap, RawJob, parse_jobs_toml,
};
pub use crate::core::owner::owner;
pub use crate::core::planner::View;
pub use crate::core::schedule::{Schedule, ScheduleError};
pub use crate::core::types::{FireId, FireRecord, JobId, NodeId, UnixMillis};
pub use crate::exec::{Executor, HandlerError, JobHandler, Outcome, Report, RunContext};
pub use crate::history::{History, HistoryLimits, RunEntry, RunOutcome, RunRecord};
pub use crate::node::{
    CatalogClient, CatalogStats, Clock, ConfigError, ConfigFile, JobInfo, JobListing, JobsChange,
    JobsError, MemberInfo, MemberState, Node, NodeBuilder, NodeConfig, NodeError, NodeHandle,
    PausePoint, Stats, SystemClock,
};
