//! Node configuration: the struct, its defaults, validation, and the TOML config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::core::placement::{Placement, Tags, WeightSetting, check_weight};
use crate::core::planner::PlannerConfig;
use crate::core::schedule::parse_duration;
use crate::core::types::NodeId;
use crate::history::HistoryLimits;
use crate::security::Keyring;

/// Default gossip interval. With the default phi threshold (16) crash detection takes
/// about 6-8 intervals (docs/tuning.md).
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_millis(200);
/// Default phi-accrual suspicion threshold, chosen with the simulator (docs/tuning.md).
pub const DEFAULT_PHI_THRESHOLD: f64 = 16.0;
/// Default UDP gossip address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7946";
/// Default cluster id.
pub const DEFAULT_CLUSTER_ID: &str = "starling";
/// Default `max_clock_offset`.
pub const DEFAULT_MAX_CLOCK_OFFSET: Duration = Duration::from_secs(2);

pub use crate::core::limits::{MAX_HISTORY_BYTES, MAX_HISTORY_RUNS};

/// A node started with seeds fires nothing until it has heard from another node, for up
/// to this many gossip intervals (5 s at the default 200 ms); then it fires alone.
pub const PEER_WAIT_INTERVALS: u32 = 25;

/// Everything a node needs to run. Build with [`NodeConfig::new`], adjust the public
/// fields, and [`NodeConfig::validate`] (the builder validates too).
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Unique, stable id of this node (1-128 bytes, no whitespace). Restarting with the
    /// same id resumes its identity; its jobs' fire records are honoured.
    pub node_id: NodeId,
    /// UDP address gossip binds to. Default `127.0.0.1:7946`.
    pub listen_addr: SocketAddr,
    /// UDP address peers use to reach this node. Default: `listen_addr` (which must then
    /// not be a wildcard address like `0.0.0.0`).
    pub advertise_addr: Option<SocketAddr>,
    /// Peers to contact at start (IP:port). Unreachable seeds are retried every gossip round.
    pub seeds: Vec<SocketAddr>,
    /// Nodes only talk to nodes with the same cluster id. Default `starling`.
    pub cluster_id: String,
    /// Time between gossip rounds. Default 200 ms; 10 ms to 60 s.
    pub gossip_interval: Duration,
    /// Phi-accrual threshold above which a silent peer is suspected dead. Default 16: a
    /// node survives a stall of about 1 s, and a crash is detected in about 1.5 s at the
    /// default gossip interval (the trade-off table is in docs/tuning.md).
    pub phi_threshold: f64,
    /// How long a dead peer's state (and its fire records) is kept. Default 10 minutes.
    pub dead_node_grace_period: Duration,
    /// Delay before ownership won from a live peer takes effect. Default: 4 gossip intervals.
    pub handoff_delay: Option<Duration>,
    /// Nothing fires until this long after start, so a joining node learns the cluster
    /// first. Default: 5 gossip intervals.
    pub startup_delay: Option<Duration>,
    /// On graceful leave, how long to announce `leaving` before stopping gossip.
    /// Default: 4 gossip intervals.
    pub leave_delay: Option<Duration>,
    /// A slot found later than this is a misfire, handled per the job's policy. Default 5 s.
    pub misfire_threshold: Duration,
    /// On shutdown, how long running jobs get to finish before they are killed. Default 30 s.
    pub drain_timeout: Duration,
    /// Wait before the first retry of a failed run; doubles per retry. Default 1 s.
    pub retry_backoff: Duration,
    /// Cap on the retry wait. Default 60 s.
    pub retry_backoff_max: Duration,
    /// Directory where this node keeps the last slot it started per job, so a restart with
    /// the same node id never reruns one, even when no peer remembers it. Default: none
    /// (records survive restarts through peers' gossip state only).
    pub data_dir: Option<PathBuf>,
    /// Quorum mode, by cluster size: a node that sees fewer than a majority of this many
    /// members (alive, not leaving) fires nothing. Default: none (availability first).
    pub expected_size: Option<usize>,
    /// Quorum mode, by count: a node that sees fewer members than this fires nothing.
    /// Default: none. Set this or `expected_size`, not both.
    pub min_members: Option<usize>,
    /// In quorum mode, how long after a member vanished its jobs move, so that a member
    /// that is only cut off has seen it lost the quorum and stopped first. Default: 5
    /// gossip intervals. Outside quorum mode a vanished member's jobs move at once.
    pub quorum_takeover_delay: Option<Duration>,
    /// How far this node's clock may be from the median of the cluster's clocks (estimated
    /// from gossip round trips, see `node::skew`) before it stops owning jobs, and how far
    /// ahead a fire record may be before it is held until its slot is near. Default 2 s;
    /// at least two gossip intervals (an estimate's error is about one).
    pub max_clock_offset: Duration,
    /// The address this node's HTTP API is reached at, published in gossip (key `api`) so
    /// that any node's API can gather the cluster's run history. Default: none (no API).
    pub api_addr: Option<SocketAddr>,
    /// How much run history this node keeps (count and bytes; the oldest go first), and
    /// saves in `data_dir` when there is one. Default 10,000 runs and 4 MiB.
    pub history: HistoryLimits,
    /// Put each shell run in a cgroup v2 of its own when cgroups are usable here, so that
    /// everything it starts (`setsid` children included) is killed with it. Default true;
    /// false: process groups only (what can escape then is in the README).
    pub job_cgroups: bool,
    /// The cluster keys: the first seals every gossip packet, every one opens them, and
    /// only nodes holding a key of the ring can join or read anything. Default: none (open
    /// gossip: any host that reaches the gossip port can join; a warning says so at start).
    /// Read with [`Keyring::load`] from `--cluster-key-file` or `STARLING_CLUSTER_KEY`.
    pub cluster_keys: Option<Keyring>,
    /// How long the catalog keeps a tombstone (a deleted job, a resume) before forgetting
    /// it everywhere. A node that comes back after longer than this, with an older copy of
    /// a deleted job in its data dir, brings that job back. Default 24 h; at least 10
    /// gossip intervals.
    pub catalog_tombstone_ttl: Duration,
    /// This node's weight (its share of the jobs relative to the other nodes' weights, 1 to
    /// 10,000; default 1) and tags (which jobs' constraints select; default none). Both
    /// travel in gossip; a change moves jobs like a join or a leave.
    pub placement: Placement,
    /// Test-only: see `PlannerConfig::broken_ownership_for_tests`. Never set in production.
    #[doc(hidden)]
    pub broken_ownership_for_tests: bool,
}

/// The number of CPUs this process may use (its affinity mask and cgroup CPU quota), the
/// weight `--weight auto` gives; 1 if it cannot be read.
pub fn available_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// A configuration value that is out of range. Names the key as written in the config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config `{key}`: {message}")]
pub struct ConfigError {
    /// The key, as in the config file (`node_id`, `gossip_interval`, ...).
    pub key: &'static str,
    /// What is wrong with its value.
    pub message: String,
}

fn config_err(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        message: message.into(),
    }
}

impl NodeConfig {
    /// A config with every default, for node `node_id` gossiping on `listen_addr`.
    pub fn new(node_id: impl AsRef<str>, listen_addr: SocketAddr) -> NodeConfig {
        NodeConfig {
            node_id: NodeId::new(node_id),
            listen_addr,
            advertise_addr: None,
            seeds: Vec::new(),
            cluster_id: DEFAULT_CLUSTER_ID.to_string(),
            gossip_interval: DEFAULT_GOSSIP_INTERVAL,
            phi_threshold: DEFAULT_PHI_THRESHOLD,
            dead_node_grace_period: Duration::from_secs(600),
            handoff_delay: None,
            startup_delay: None,
            leave_delay: None,
            misfire_threshold: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(60),
            data_dir: None,
            expected_size: None,
            min_members: None,
            quorum_takeover_delay: None,
            max_clock_offset: DEFAULT_MAX_CLOCK_OFFSET,
            history: HistoryLimits::default(),
            job_cgroups: true,
            api_addr: None,
            cluster_keys: None,
            catalog_tombstone_ttl: crate::catalog::DEFAULT_TOMBSTONE_TTL,
            placement: Placement::default(),
            broken_ownership_for_tests: false,
        }
    }

    /// Keys a running node takes from a new config ([`crate::NodeHandle::reconfigure`],
    /// SIGHUP): they are read afresh for each run or at leave. Every other key needs a
    /// restart.
    pub const LIVE_KEYS: [&'static str; 5] = [
        "drain_timeout",
        "retry_backoff",
        "retry_backoff_max",
        "weight",
        "tags",
    ];

    /// The keys (as in the config file) whose values differ between `self` and `other`.
    pub fn changed_keys(&self, other: &NodeConfig) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut diff = |key: &'static str, differs: bool| {
            if differs {
                keys.push(key);
            }
        };
        diff("node_id", self.node_id != other.node_id);
        diff("listen", self.listen_addr != other.listen_addr);
        diff("advertise", self.advertise_addr != other.advertise_addr);
        diff("seeds", self.seeds != other.seeds);
        diff("cluster_id", self.cluster_id != other.cluster_id);
        diff(
            "gossip_interval",
            self.gossip_interval != other.gossip_interval,
        );
        diff(
            "phi_threshold",
            self.phi_threshold.to_bits() != other.phi_threshold.to_bits(),
        );
        diff(
            "dead_node_grace_period",
            self.dead_node_grace_period != other.dead_node_grace_period,
        );
        diff("handoff_delay", self.handoff_delay != other.handoff_delay);
        diff("startup_delay", self.startup_delay != other.startup_delay);
        diff("leave_delay", self.leave_delay != other.leave_delay);
        diff(
            "misfire_threshold",
            self.misfire_threshold != other.misfire_threshold,
        );
        diff("drain_timeout", self.drain_timeout != other.drain_timeout);
        diff("retry_backoff", self.retry_backoff != other.retry_backoff);
        diff(
            "retry_backoff_max",
            self.retry_backoff_max != other.retry_backoff_max,
        );
        diff("data_dir", self.data_dir != other.data_dir);
        diff("expected_size", self.expected_size != other.expected_size);
        diff("min_members", self.min_members != other.min_members);
        diff(
            "max_clock_offset",
            self.max_clock_offset != other.max_clock_offset,
        );
        diff(
            "quorum_takeover_delay",
            self.quorum_takeover_delay != other.quorum_takeover_delay,
        );
        diff("job_cgroups", self.job_cgroups != other.job_cgroups);
        diff(
            "catalog_tombstone_ttl",
            self.catalog_tombstone_ttl != other.catalog_tombstone_ttl,
        );
        diff("weight", self.placement.weight != other.placement.weight);
        diff("tags", self.placement.tags != other.placement.tags);
        keys
    }

    /// Takes the [`NodeConfig::LIVE_KEYS`] of `new`; returns the other keys whose values
    /// differ, which keep their current values until a restart.
    pub fn apply_live(&mut self, new: &NodeConfig) -> Vec<&'static str> {
        self.drain_timeout = new.drain_timeout;
        self.retry_backoff = new.retry_backoff;
        self.retry_backoff_max = new.retry_backoff_max;
        self.placement = new.placement.clone();
        self.changed_keys(new)
            .into_iter()
            .filter(|k| !Self::LIVE_KEYS.contains(k))
            .collect()
    }

    /// The catalog settings these values imply.
    pub fn catalog(&self) -> crate::catalog::CatalogConfig {
        crate::catalog::CatalogConfig {
            tombstone_ttl: self.catalog_tombstone_ttl,
            ..crate::catalog::CatalogConfig::default()
        }
    }

    /// The smallest view in which this node fires, in quorum mode; `None` outside it.
    pub fn quorum(&self) -> Option<usize> {
        match (self.min_members, self.expected_size) {
            (Some(m), _) => Some(m),
            (None, Some(n)) => Some(n / 2 + 1),
            (None, None) => None,
        }
    }

    /// The address peers reach this node at.
    pub fn advertise(&self) -> SocketAddr {
        self.advertise_addr.unwrap_or(self.listen_addr)
    }

    /// The planner settings these values imply.
    pub fn planner(&self) -> PlannerConfig {
        PlannerConfig {
            handoff_delay: self.handoff_delay.unwrap_or(self.gossip_interval * 4),
            misfire_threshold: self.misfire_threshold,
            startup_delay: self.startup_delay.unwrap_or(self.gossip_interval * 5),
            min_members: self.quorum().unwrap_or(0),
            // Peers started together should hear each other within a round or two; one
            // that hears nobody for this long is alone (the others are down) and fires.
            peer_wait: if self.seeds.is_empty() {
                Duration::ZERO
            } else {
                self.gossip_interval * PEER_WAIT_INTERVALS
            },
            dead_takeover_delay: if self.quorum().is_some() {
                self.quorum_takeover_delay
                    .unwrap_or(self.gossip_interval * 5)
            } else {
                Duration::ZERO
            },
            max_record_ahead: self.max_clock_offset,
            broken_ownership_for_tests: self.broken_ownership_for_tests,
        }
    }

    /// The graceful-leave announcement time.
    pub fn leave_delay(&self) -> Duration {
        self.leave_delay.unwrap_or(self.gossip_interval * 4)
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Every gossip message carries every node id (core::limits::MAX_MEMBERS). Node ids
        // are not in URL paths, so they keep any character but whitespace and controls.
        let id = self.node_id.as_str();
        let max_id = crate::core::limits::MAX_NODE_ID_BYTES;
        if id.is_empty() {
            return Err(config_err("node_id", "is empty"));
        }
        if id.len() > max_id {
            return Err(config_err(
                "node_id",
                format!("is longer than {max_id} bytes"),
            ));
        }
        if let Some(c) = id.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(config_err(
                "node_id",
                format!("contains {c:?}; no whitespace or control characters"),
            ));
        }
        if self.advertise().ip().is_unspecified() {
            return Err(config_err(
                if self.advertise_addr.is_some() {
                    "advertise"
                } else {
                    "listen"
                },
                format!(
                    "`{}` is a wildcard address peers cannot reach; set `advertise` to this node's reachable IP:port",
                    self.advertise()
                ),
            ));
        }
        if self.advertise().port() == 0 {
            return Err(config_err("listen", "port 0 cannot be advertised to peers"));
        }
        if let Some(seed) = self.seeds.iter().find(|s| s.port() == 0) {
            return Err(config_err(
                "seeds",
                format!("`{seed}`: port 0 cannot be reached; give the seed's gossip port"),
            ));
        }
        if self.cluster_id.trim().is_empty() {
            return Err(config_err("cluster_id", "is empty"));
        }
        if self.gossip_interval < Duration::from_millis(10)
            || self.gossip_interval > Duration::from_secs(60)
        {
            return Err(config_err(
                "gossip_interval",
                format!("{:?} is outside 10ms..=60s", self.gossip_interval),
            ));
        }
        if !(self.phi_threshold.is_finite() && self.phi_threshold > 0.0) {
            return Err(config_err("phi_threshold", "must be a positive number"));
        }
        if self.dead_node_grace_period < self.gossip_interval * 10 {
            return Err(config_err(
                "dead_node_grace_period",
                "must be at least 10 gossip intervals (fire records of dead peers are needed for takeover)",
            ));
        }
        if self.min_members.is_some() && self.expected_size.is_some() {
            return Err(config_err(
                "min_members",
                "set `min_members` or `expected_size`, not both",
            ));
        }
        if self.min_members == Some(0) {
            return Err(config_err("min_members", "must be at least 1"));
        }
        if self.expected_size == Some(0) {
            return Err(config_err("expected_size", "must be at least 1"));
        }
        if self.quorum_takeover_delay.is_some() && self.quorum().is_none() {
            return Err(config_err(
                "quorum_takeover_delay",
                "only applies in quorum mode: set `expected_size` or `min_members` too",
            ));
        }
        if let Some(d) = &self.data_dir
            && d.as_os_str().is_empty()
        {
            return Err(config_err("data_dir", "is empty"));
        }
        if self.history.max_runs > MAX_HISTORY_RUNS {
            return Err(config_err(
                "history_max_runs",
                format!("{} is more than {MAX_HISTORY_RUNS}", self.history.max_runs),
            ));
        }
        if self.history.max_bytes > MAX_HISTORY_BYTES {
            return Err(config_err(
                "history_max_bytes",
                format!(
                    "{} is more than {MAX_HISTORY_BYTES} (1 GiB)",
                    self.history.max_bytes
                ),
            ));
        }
        if self.catalog_tombstone_ttl < self.gossip_interval * 10 {
            return Err(config_err(
                "catalog_tombstone_ttl",
                "must be at least 10 gossip intervals, so a deletion reaches every node before it is forgotten",
            ));
        }
        check_weight(self.placement.weight).map_err(|e| config_err("weight", e))?;
        Tags::new(self.placement.tags.pairs().clone()).map_err(|e| config_err("tags", e))?;
        if self.max_clock_offset < self.gossip_interval * 2 {
            return Err(config_err(
                "max_clock_offset",
                format!(
                    "{:?} is under two gossip intervals ({:?}): clock offsets are estimated within about one",
                    self.max_clock_offset,
                    self.gossip_interval * 2
                ),
            ));
        }
        if self.retry_backoff.is_zero() || self.retry_backoff > self.retry_backoff_max {
            return Err(config_err(
                "retry_backoff",
                "must be positive and at most `retry_backoff_max`",
            ));
        }
        Ok(())
    }
}

/// The `starling run` config file (TOML). Every key is optional; command-line flags override
/// the file. Durations are written like `500ms`, `30s`, `10m`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `node_id = "node-1"`.
    pub node_id: Option<String>,
    /// `listen = "127.0.0.1:7946"`.
    pub listen: Option<String>,
    /// `advertise = "10.0.0.5:7946"`.
    pub advertise: Option<String>,
    /// `seeds = ["127.0.0.1:7946"]`.
    pub seeds: Option<Vec<String>>,
    /// `jobs = "jobs.toml"` (relative to the config file's directory).
    pub jobs: Option<PathBuf>,
    /// `cluster_id = "prod"`.
    pub cluster_id: Option<String>,
    /// `gossip_interval = "200ms"`.
    pub gossip_interval: Option<String>,
    /// `phi_threshold = 16.0`.
    pub phi_threshold: Option<f64>,
    /// `dead_node_grace_period = "10m"`.
    pub dead_node_grace_period: Option<String>,
    /// `handoff_delay = "800ms"`.
    pub handoff_delay: Option<String>,
    /// `startup_delay = "1s"`.
    pub startup_delay: Option<String>,
    /// `leave_delay = "800ms"`.
    pub leave_delay: Option<String>,
    /// `misfire_threshold = "5s"`.
    pub misfire_threshold: Option<String>,
    /// `drain_timeout = "30s"`.
    pub drain_timeout: Option<String>,
    /// `retry_backoff = "1s"`.
    pub retry_backoff: Option<String>,
    /// `retry_backoff_max = "60s"`.
    pub retry_backoff_max: Option<String>,
    /// `data_dir = "/var/lib/starling"` (relative to the config file's directory).
    pub data_dir: Option<PathBuf>,
    /// `expected_size = 5` (quorum mode).
    pub expected_size: Option<usize>,
    /// `min_members = 3` (quorum mode).
    pub min_members: Option<usize>,
    /// `quorum_takeover_delay = "1s"`.
    pub quorum_takeover_delay: Option<String>,
    /// `max_clock_offset = "2s"`.
    pub max_clock_offset: Option<String>,
    /// `history_max_runs = 10000` (0: keep no history).
    pub history_max_runs: Option<usize>,
    /// `history_max_bytes = 4194304` (0: keep no history).
    pub history_max_bytes: Option<usize>,
    /// `job_cgroups = false`.
    pub job_cgroups: Option<bool>,
    /// `api = "127.0.0.1:7947"`: serve the HTTP API there (read by `starling run`).
    pub api: Option<String>,
    /// `api_token_file = "token"` (relative to the config file's directory).
    pub api_token_file: Option<PathBuf>,
    /// `api_insecure_writes = true`: accept writes without a token.
    pub api_insecure_writes: Option<bool>,
    /// `cluster_key_file = "cluster.key"` (relative to the config file's directory): the
    /// keyring, one key per line. The key itself never goes in the config file.
    pub cluster_key_file: Option<PathBuf>,
    /// `catalog_tombstone_ttl = "24h"`.
    pub catalog_tombstone_ttl: Option<String>,
    /// `weight = 4`, or `weight = "auto"` for the CPUs this process may use.
    pub weight: Option<WeightValue>,
    /// `[tags]` with `region = "eu"` lines (booleans and integers are taken as their text).
    #[serde(default, deserialize_with = "crate::core::job::text_map")]
    pub tags: Option<std::collections::BTreeMap<String, String>>,
}

/// `weight` as written in the config file: a number or `"auto"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum WeightValue {
    /// `weight = 4`.
    Number(i64),
    /// `weight = "auto"` (or a number in quotes).
    Text(String),
}

impl WeightValue {
    /// The setting it stands for; the error says what is wrong.
    pub fn setting(&self) -> Result<WeightSetting, ConfigError> {
        match self {
            WeightValue::Number(n) => u32::try_from(*n)
                .map_err(|_| format!("{n} is outside 1..=10000"))
                .and_then(check_weight)
                .map(WeightSetting::Fixed),
            WeightValue::Text(t) => t.parse(),
        }
        .map_err(|e| config_err("weight", e))
    }
}

/// Parses `IP:port`, naming `key` in the error, and saying what is wrong: no port, a port
/// that is not a number or out of range, or a host name instead of an IP address.
pub fn parse_addr(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    let v = value.trim();
    if let Ok(addr) = v.parse() {
        return Ok(addr);
    }
    let err = |why: String| config_err(key, format!("`{value}`: {why}"));
    // `[v6]:port` or `v4:port`; a bare IPv6 address has colons but no port.
    let split = match v.strip_prefix('[') {
        Some(rest) => rest.split_once("]:").map(|(ip, port)| (ip, Some(port))),
        None if v.parse::<std::net::IpAddr>().is_ok() => Some((v, None)),
        None => v.rsplit_once(':').map(|(ip, port)| (ip, Some(port))),
    };
    let Some((ip, Some(port))) = split else {
        return Err(err("has no port; write IP:port, e.g. 127.0.0.1:7946".into()));
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(format!("the port `{port}` is not a number")));
    }
    if port.parse::<u16>().is_err() {
        return Err(err(format!(
            "the port {port} is out of range (ports are 1 to 65535)"
        )));
    }
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(err(format!(
            "`{ip}` is not an IP address; host names are not accepted (e.g. 127.0.0.1:7946)"
        )));
    }
    Err(err("is not an IP:port address (e.g. 127.0.0.1:7946)".into()))
}

fn duration_key(
    key: &'static str,
    value: &Option<String>,
) -> Result<Option<Duration>, ConfigError> {
    value
        .as_deref()
        .map(|v| parse_duration(v).map_err(|e| config_err(key, e)))
        .transpose()
}

impl ConfigFile {
    /// Parses the file's text; unknown keys are errors that name the key.
    pub fn parse(text: &str) -> Result<ConfigFile, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Applies the file's values on top of `config`.
    pub fn apply(&self, config: &mut NodeConfig) -> Result<(), ConfigError> {
        if let Some(v) = &self.node_id {
            config.node_id = NodeId::new(v);
        }
        if let Some(v) = &self.listen {
            config.listen_addr = parse_addr("listen", v)?;
        }
        if let Some(v) = &self.advertise {
            config.advertise_addr = Some(parse_addr("advertise", v)?);
        }
        if let Some(v) = &self.seeds {
            config.seeds = v
                .iter()
                .map(|s| parse_addr("seeds", s))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = &self.cluster_id {
            config.cluster_id = v.clone();
        }
        if let Some(v) = self.phi_threshold {
            config.phi_threshold = v;
        }
        if let Some(d) = duration_key("gossip_interval", &self.gossip_interval)? {
            config.gossip_interval = d;
        }
        if let Some(d) = duration_key("dead_node_grace_period", &self.dead_node_grace_period)? {
            config.dead_node_grace_period = d;
        }
        if let Some(d) = duration_key("handoff_delay", &self.handoff_delay)? {
            config.handoff_delay = Some(d);
        }
        if let Some(d) = duration_key("startup_delay", &self.startup_delay)? {
            config.startup_delay = Some(d);
        }
        if let Some(d) = duration_key("leave_delay", &self.leave_delay)? {
            config.leave_delay = Some(d);
        }
        if let Some(d) = duration_key("misfire_threshold", &self.misfire_threshold)? {
            config.misfire_threshold = d;
        }
        if let Some(d) = duration_key("drain_timeout", &self.drain_timeout)? {
            config.drain_timeout = d;
        }
        if let Some(d) = duration_key("retry_backoff", &self.retry_backoff)? {
            config.retry_backoff = d;
        }
        if let Some(d) = duration_key("retry_backoff_max", &self.retry_backoff_max)? {
            config.retry_backoff_max = d;
        }
        if let Some(d) = duration_key("max_clock_offset", &self.max_clock_offset)? {
            config.max_clock_offset = d;
        }
        if let Some(d) = duration_key("quorum_takeover_delay", &self.quorum_takeover_delay)? {
            config.quorum_takeover_delay = Some(d);
        }
        if let Some(d) = duration_key("catalog_tombstone_ttl", &self.catalog_tombstone_ttl)? {
            config.catalog_tombstone_ttl = d;
        }
        if let Some(v) = &self.data_dir {
            config.data_dir = Some(v.clone());
        }
        if let Some(v) = self.expected_size {
            config.expected_size = Some(v);
        }
        if let Some(v) = self.min_members {
            config.min_members = Some(v);
        }
        if let Some(v) = self.history_max_runs {
            config.history.max_runs = v;
        }
        if let Some(v) = self.history_max_bytes {
            config.history.max_bytes = v;
        }
        if let Some(v) = self.job_cgroups {
            config.job_cgroups = v;
        }
        if let Some(v) = &self.weight {
            config.placement.weight = v.setting()?.resolve(available_cpus);
        }
        if let Some(v) = &self.tags {
            let tags = Tags::new(v.clone()).map_err(|e| config_err("tags", e))?;
            config.placement.tags = std::sync::Arc::new(tags);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> NodeConfig {
        NodeConfig::new("n1", DEFAULT_LISTEN.parse().unwrap())
    }

    #[test]
    fn defaults_are_valid_and_derive_from_the_gossip_interval() {
        let c = base();
        c.validate().unwrap();
        let p = c.planner();
        assert_eq!(p.handoff_delay, Duration::from_millis(800));
        assert_eq!(p.startup_delay, Duration::from_millis(1000));
    }

    #[test]
    fn a_file_overrides_defaults_and_bad_values_name_the_key() {
        let f = ConfigFile::parse(
            "node_id = \"x\"\nlisten = \"127.0.0.2:9000\"\nseeds = [\"127.0.0.3:9000\"]\ngossip_interval = \"100ms\"\n",
        )
        .unwrap();
        let mut c = base();
        f.apply(&mut c).unwrap();
        assert_eq!(c.node_id.as_str(), "x");
        assert_eq!(c.seeds, vec!["127.0.0.3:9000".parse().unwrap()]);
        assert_eq!(c.gossip_interval, Duration::from_millis(100));

        let e = ConfigFile::parse("gossip_intervall = \"1s\"\n").unwrap_err();
        assert!(e.contains("gossip_intervall"), "{e}");
        let f = ConfigFile::parse("seeds = [\"db.local:7946\"]\n").unwrap();
        let e = f.apply(&mut base()).unwrap_err();
        assert_eq!(e.key, "seeds");
        let f = ConfigFile::parse("gossip_interval = \"fast\"\n").unwrap();
        assert_eq!(f.apply(&mut base()).unwrap_err().key, "gossip_interval");
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = base();
        c.gossip_interval = Duration::from_millis(1);
        assert_eq!(c.validate().unwrap_err().key, "gossip_interval");
        let mut c = base();
        c.listen_addr = "0.0.0.0:7946".parse().unwrap();
        assert_eq!(c.validate().unwrap_err().key, "listen");
        c.advertise_addr = Some("10.1.2.3:7946".parse().unwrap());
        c.validate().unwrap();
        let mut c = base();
        c.node_id = NodeId::new("has space");
        assert_eq!(c.validate().unwrap_err().key, "node_id");
        let mut c = base();
        c.phi_threshold = f64::NAN;
        assert_eq!(c.validate().unwrap_err().key, "phi_threshold");
        let mut c = base();
        c.min_members = Some(2);
        c.expected_size = Some(3);
        assert_eq!(c.validate().unwrap_err().key, "min_members");
        let mut c = base();
        c.quorum_takeover_delay = Some(Duration::from_secs(1));
        assert_eq!(c.validate().unwrap_err().key, "quorum_takeover_delay");
        let mut c = base();
        c.history.max_runs = MAX_HISTORY_RUNS + 1;
        assert_eq!(c.validate().unwrap_err().key, "history_max_runs");
        let mut c = base();
        c.history.max_bytes = MAX_HISTORY_BYTES + 1;
        assert_eq!(c.validate().unwrap_err().key, "history_max_bytes");
        let f = ConfigFile::parse("history_max_runs = 5\nhistory_max_bytes = 0\n").unwrap();
        let mut c = base();
        f.apply(&mut c).unwrap();
        assert_eq!((c.history.max_runs, c.history.max_bytes), (5, 0));
        let mut c = base();
        c.catalog_tombstone_ttl = Duration::from_secs(1);
        assert_eq!(c.validate().unwrap_err().key, "catalog_tombstone_ttl");
        let f = ConfigFile::parse("catalog_tombstone_ttl = \"2h\"\n").unwrap();
        let mut c = base();
        f.apply(&mut c).unwrap();
        assert_eq!(c.catalog().tombstone_ttl, Duration::from_secs(7200));
    }

    #[test]
    fn a_bad_address_says_what_is_wrong_with_it() {
        let e = |v: &str| parse_addr("seeds", v).unwrap_err().to_string();
        assert!(
            e("127.0.0.1:99999").contains("port 99999 is out of range"),
            "{}",
            e("127.0.0.1:99999")
        );
        assert!(e("127.0.0.1:70000").contains("out of range"));
        assert!(e("127.0.0.1").contains("has no port"));
        assert!(e("::1").contains("has no port"));
        assert!(e("127.0.0.1:").contains("is not a number"));
        assert!(e("127.0.0.1:ab").contains("`ab` is not a number"));
        assert!(e("db.local:7946").contains("`db.local` is not an IP address"));
        assert!(e("127.0.0.1:99999").starts_with("config `seeds`"));
        assert_eq!(parse_addr("seeds", "[::1]:7946").unwrap().port(), 7946);
        assert!(e("[::1]:123456").contains("out of range"));
        let mut c = base();
        c.seeds = vec!["127.0.0.1:0".parse().unwrap()];
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "seeds");
        assert!(e.message.contains("port 0"), "{e}");
    }

    #[test]
    fn a_new_config_applies_its_live_keys_and_names_the_others() {
        let mut running = base();
        let mut new = base();
        assert!(running.apply_live(&new).is_empty());
        new.drain_timeout = Duration::from_secs(5);
        new.retry_backoff_max = Duration::from_secs(10);
        new.gossip_interval = Duration::from_millis(100);
        new.seeds = vec!["127.0.0.1:9000".parse().unwrap()];
        new.job_cgroups = false;
        let restart = running.apply_live(&new);
        assert_eq!(restart, vec!["seeds", "gossip_interval", "job_cgroups"]);
        assert_eq!(running.drain_timeout, Duration::from_secs(5));
        assert_eq!(running.retry_backoff_max, Duration::from_secs(10));
        assert_eq!(running.gossip_interval, DEFAULT_GOSSIP_INTERVAL);
        assert!(running.seeds.is_empty() && running.job_cgroups);
        for key in NodeConfig::LIVE_KEYS {
            assert!(!restart.contains(&key));
        }
    }

    #[test]
    fn weight_and_tags_come_from_the_file_and_bad_ones_name_the_key() {
        let f = ConfigFile::parse("weight = 4\n[tags]\nregion = \"eu\"\ngpu = true\n").unwrap();
        let mut c = base();
        f.apply(&mut c).unwrap();
        assert_eq!(c.placement.weight, 4);
        assert_eq!(c.placement.tags.encode(), "gpu=true,region=eu");
        let f = ConfigFile::parse("weight = \"auto\"\n").unwrap();
        let mut c = base();
        f.apply(&mut c).unwrap();
        assert_eq!(c.placement.weight, available_cpus());
        for bad in ["weight = 0\n", "weight = \"heavy\"\n", "weight = -3\n"] {
            let f = ConfigFile::parse(bad).unwrap();
            assert_eq!(f.apply(&mut base()).unwrap_err().key, "weight", "{bad}");
        }
        let f = ConfigFile::parse("[tags]\n\"a b\" = \"c\"\n").unwrap();
        assert_eq!(f.apply(&mut base()).unwrap_err().key, "tags");
    }

    #[test]
    fn quorum_mode_is_a_majority_of_the_expected_size_and_delays_takeover() {
        let mut c = base();
        assert_eq!(c.quorum(), None);
        assert_eq!(c.planner().min_members, 0);
        assert_eq!(c.planner().dead_takeover_delay, Duration::ZERO);
        for (n, q) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)] {
            c.expected_size = Some(n);
            assert_eq!(c.quorum(), Some(q), "expected size {n}");
        }
        assert_eq!(c.planner().dead_takeover_delay, Duration::from_secs(1));
        c.expected_size = None;
        c.min_members = Some(4);
        assert_eq!(c.planner().min_members, 4);
    }
}
