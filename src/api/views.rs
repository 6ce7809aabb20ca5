//! What the API sends: JSON shapes shared with the CLI client, which reads them back.

use serde::{Deserialize, Serialize};

use crate::core::job::RawJob;
use crate::history::RunEntry;

/// A member (`GET /v1/members`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Its node id.
    pub id: String,
    /// The address it gossips on.
    pub address: String,
    /// `alive`, `leaving`, `clock` (its clock is unverified or off the cluster's by more
    /// than `max_clock_offset`: it owns nothing) or `dead`.
    pub state: String,
    /// Its generation (its start time in Unix ms; grows with every restart).
    pub generation: u64,
    /// Jobs it owns in the answering node's view.
    pub jobs_owned: usize,
    /// Its API address, if it has an API.
    pub api: Option<String>,
    /// True for the node that answered.
    pub is_self: bool,
}

/// The answer of `GET /v1/members`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersPage {
    /// The node that answered.
    pub node: String,
    /// Every node it knows of, in id order.
    pub members: Vec<MemberView>,
}

/// A job (`GET /v1/jobs`, `GET /v1/jobs/{name}`, and the answer of writes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// Its name.
    pub name: String,
    /// Its definition, as the jobs file's keys (keys at their default left out).
    pub definition: RawJob,
    /// Where the definition comes from.
    pub source: SourceView,
    /// Its version (`millis.counter@node`); absent for in-process handler jobs.
    pub version: Option<String>,
    /// The member that runs it in the answering node's view.
    pub owner: Option<String>,
    /// No live member has the tags its constraints require: it runs nowhere, and each of
    /// its slots is reported (issue 18).
    #[serde(default)]
    pub unplaceable: bool,
    /// Paused: it fires nothing until resumed.
    pub paused: bool,
    /// Its next slots (RFC 3339 UTC): one in a list, five for one job; none while paused.
    pub next: Vec<String>,
    /// Its latest runs from the whole cluster, newest first (one job only; absent in the
    /// list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_runs: Option<Vec<RunEntry>>,
    /// Disagreements about it (normally none).
    pub conflicts: Vec<serde_json::Value>,
}

/// Where a job's definition comes from: `"api"`, `{"file": {"nodes": [...]}}` (the nodes
/// whose jobs files hold the definition that runs), or `"local"` (an in-process handler
/// job of the answering node).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceView {
    /// The API.
    Api,
    /// Jobs files.
    File {
        /// Their nodes.
        nodes: Vec<String>,
    },
    /// An in-process handler job.
    Local,
}

impl std::fmt::Display for SourceView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceView::Api => f.write_str("api"),
            SourceView::File { nodes } => write!(f, "file:{}", nodes.join(",")),
            SourceView::Local => f.write_str("local"),
        }
    }
}

/// The answer of `GET /v1/jobs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobsPage {
    /// Every job, in name order.
    pub jobs: Vec<JobView>,
    /// Every conflict in the catalog.
    pub conflicts: Vec<serde_json::Value>,
}

/// The answer of `POST /v1/jobs/{name}/run`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequested {
    /// The job.
    pub job: String,
    /// The run's fire id (`STARLING_FIRE_ID`), to follow it in `GET /v1/runs` or cancel it.
    pub fire_id: String,
}
