//! The `starling` command: a thin shell over the library.

mod ctl;
mod demo;
mod signals;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono_tz::Tz;
use clap::{Parser, Subcommand};
use starling::core::schedule::{Dst, parse_duration, parse_timezone};
use starling::logs::{OneLine, RateLimit};
use starling::node::parse_addr;
use starling::security::{CLUSTER_KEY_ENV, ClusterKey, Entropy, KEY_LEN, Keyring, OsEntropy};
use starling::{
    Clock, ConfigFile, JobSpec, Node, NodeConfig, NodeId, Schedule, SystemClock, UnixMillis,
    parse_jobs_toml,
};

/// The jobs `starling run` uses when no jobs file is given.
pub const DEFAULT_JOBS: &str = include_str!("../examples/jobs.toml");

#[derive(Parser)]
#[command(name = "starling", version, about = "A leaderless cron cluster")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a peer. With no arguments: a single-node cluster on 127.0.0.1:7946 running the
    /// built-in example jobs.
    Run(Box<RunArgs>),
    /// Validate a jobs file and print each job's next fire times.
    Check {
        /// The jobs file (TOML).
        #[arg(required_unless_present = "jobs", conflicts_with = "jobs")]
        file: Option<PathBuf>,
        /// The jobs file (TOML), as `starling run --jobs` takes it.
        #[arg(long)]
        jobs: Option<PathBuf>,
        /// How many upcoming fire times to print per job.
        #[arg(long, default_value_t = 3)]
        count: usize,
    },
    /// Print a schedule's next fire times, one per line, in RFC 3339 with the timezone's
    /// offset. Exit status 2 for a bad schedule, timezone or time.
    Next {
        /// A cron expression (5, 6 or 7 fields; quote it), a shorthand such as `@daily`,
        /// `@every <duration>` or `@at <RFC 3339>`. Several words are joined with spaces.
        #[arg(required = true, num_args = 1..)]
        schedule: Vec<String>,
        /// The IANA timezone the schedule is read in.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Start after this time (RFC 3339). Default: now.
        #[arg(long)]
        after: Option<String>,
        /// How many fire times to print.
        #[arg(long, default_value_t = 5)]
        count: usize,
        /// What the schedule does with times a DST change skips or repeats: `debian`
        /// (default) or `strict`, as a job's `dst` key.
        #[arg(long, default_value = "debian")]
        dst: String,
    },
    /// Print which member owns each job, computed offline with the function nodes use.
    Owners {
        /// The jobs file (TOML).
        #[arg(long)]
        jobs: PathBuf,
        /// Comma-separated node ids, e.g. `a,b,c`.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
    },
    /// Manage the cluster's jobs through a node's API (`--api`, token from
    /// STARLING_API_TOKEN).
    Jobs {
        #[command(subcommand)]
        cmd: ctl::JobsCmd,
        #[command(flatten)]
        api: ctl::ApiArgs,
    },
    /// The cluster's members, as a node's API sees them.
    Members {
        #[command(flatten)]
        api: ctl::ApiArgs,
    },
    /// Run history gathered from the whole cluster, newest first.
    Runs {
        /// Only this job's runs.
        #[arg(long)]
        job: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        api: ctl::ApiArgs,
    },
    /// Print a new random cluster key (base64) for a key file; its id goes to stderr.
    Keygen,
    /// Start 3 local peers as child processes, kill one midway, and show who ran what.
    Demo {
        /// How long the demo runs.
        #[arg(long, default_value = "24s", value_parser = parse_duration)]
        duration: Duration,
        /// Keep the demo's directory (logs, jobs file) instead of deleting it.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(clap::Args, Default)]
struct RunArgs {
    /// Config file (TOML); flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Unique, stable node id. Default: `node-<listen address>`.
    #[arg(long)]
    node_id: Option<String>,
    /// UDP gossip address to bind. Default 127.0.0.1:7946.
    #[arg(long)]
    listen: Option<String>,
    /// UDP address peers reach this node at. Default: the listen address.
    #[arg(long)]
    advertise: Option<String>,
    /// A peer to join through (IP:port); repeat for several.
    #[arg(long = "seed")]
    seeds: Vec<String>,
    /// Jobs file (TOML). Default: the built-in example jobs.
    #[arg(long)]
    jobs: Option<PathBuf>,
    /// Cluster id; peers with another id are ignored. Default `starling`.
    #[arg(long)]
    cluster_id: Option<String>,
    /// Time between gossip rounds, e.g. `200ms`.
    #[arg(long)]
    gossip_interval: Option<String>,
    /// Directory where the node keeps its fire records, so a restart never reruns a slot.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Quorum mode: the expected cluster size; a node that sees fewer than a majority of it
    /// fires nothing.
    #[arg(long)]
    expected_size: Option<usize>,
    /// Quorum mode: the fewest members (this node included) a node must see to fire.
    #[arg(long)]
    min_members: Option<usize>,
    /// How far this node's clock may be from the median of its peers' before it stops
    /// owning jobs, e.g. `2s` (the default).
    #[arg(long)]
    max_clock_offset: Option<String>,
    /// Most runs kept in this node's run history (0: none). Default 10000.
    #[arg(long)]
    history_max_runs: Option<usize>,
    /// Most bytes of run history kept (0: none). Default 4194304 (4 MiB).
    #[arg(long)]
    history_max_bytes: Option<usize>,
    /// Serve the HTTP API on this address (IP:port), e.g. 127.0.0.1:7947. Default: no API.
    #[arg(long)]
    api: Option<String>,
    /// File holding the API token (the token itself never goes in a flag). Default: the
    /// STARLING_API_TOKEN variable; with neither, the API serves reads only.
    #[arg(long)]
    api_token_file: Option<PathBuf>,
    /// Without a token, accept API writes from anyone who can reach the port.
    #[arg(long)]
    api_insecure_writes: bool,
    /// The cluster keyring: a file with one key per line (the first seals gossip, every
    /// one opens it). SIGHUP re-reads it. Default: `STARLING_CLUSTER_KEY`, else open
    /// gossip.
    #[arg(long)]
    cluster_key_file: Option<PathBuf>,
    /// This node's share of the jobs relative to the others' weights (1-10000), or `auto`
    /// for the CPUs this process may use. Default 1.
    #[arg(long)]
    weight: Option<String>,
    /// A tag jobs' `constraints` select, `KEY=VALUE`; repeat for several. Replaces the
    /// config file's `[tags]`.
    #[arg(long = "tag")]
    tags: Vec<String>,
}

/// The API settings of `starling run`, from flags and the config file.
#[derive(Default)]
struct ApiSettings {
    listen: Option<SocketAddr>,
    token_file: Option<PathBuf>,
    insecure_writes: bool,
}

impl ApiSettings {
    /// The config keys whose values differ in `other` (all need a restart).
    fn changed_keys(&self, other: &ApiSettings) -> Vec<&'static str> {
        [
            ("api", self.listen != other.listen),
            ("api_token_file", self.token_file != other.token_file),
            (
                "api_insecure_writes",
                self.insecure_writes != other.insecure_writes,
            ),
        ]
        .into_iter()
        .filter_map(|(key, differs)| differs.then_some(key))
        .collect()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = init_logs();
    let result = match cli.command {
        Cmd::Run(args) => run(*args, &logs),
        Cmd::Check { file, jobs, count } => match file.or(jobs) {
            Some(path) => check(&path, count),
            None => Err(anyhow::anyhow!("give a jobs file: `starling check FILE`")),
        },
        Cmd::Next {
            schedule,
            timezone,
            after,
            count,
            dst,
        } => {
            // Exit status 2 for bad input, so scripts can tell it from other failures.
            return match next(
                &schedule.join(" "),
                &timezone,
                after.as_deref(),
                count,
                &dst,
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Cmd::Owners { jobs, members } => owners(&jobs, &members),
        Cmd::Keygen => keygen(),
        Cmd::Demo { duration, keep } => demo::run(duration, keep),
        Cmd::Jobs { cmd, api } => ctl::jobs(cmd, api),
        Cmd::Members { api } => ctl::members(api),
        Cmd::Runs { job, limit, api } => ctl::runs(job, limit, api),
    };
    logs.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (`info` by default). chitchat's repeated
/// lines (one per bad datagram) are limited to one per call site per 10 s, counted; the
/// returned limiter reports what it held back when flushed.
fn init_logs() -> RateLimit {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let limit = RateLimit::new(starling::logs::DEFAULT_WINDOW);
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .event_format(OneLine(tracing_subscriber::fmt::format().with_ansi(ansi)))
        .with_filter(limit.clone());
    tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .init();
    limit
}

fn read_jobs(path: &Path) -> anyhow::Result<Vec<JobSpec>> {
    use std::io::Read;
    let max = starling::core::limits::MAX_JOBS_FILE_BYTES;
    let mut text = String::new();
    // Reads one byte past the limit at most, so the parser refuses an oversize file
    // without this reading all of it.
    std::fs::File::open(path)
        .and_then(|f| f.take(max as u64 + 1).read_to_string(&mut text))
        .with_context(|| format!("cannot read jobs file {}", path.display()))?;
    let jobs = parse_jobs_toml(&text).with_context(|| format!("jobs file {}", path.display()))?;
    // A cron job whose years are all past can never fire (issue 13); only here is there a
    // clock to tell.
    starling::core::job::check_fires_after(&jobs, SystemClock.now())
        .with_context(|| format!("jobs file {}", path.display()))?;
    Ok(jobs)
}

/// Builds the node config from defaults, then the file, then flags. Returns the jobs path
/// and the API settings.
fn build_config(args: &RunArgs) -> anyhow::Result<(NodeConfig, Option<PathBuf>, ApiSettings)> {
    let mut config = NodeConfig::new("unset", starling::node::DEFAULT_LISTEN.parse()?);
    let mut jobs = None;
    let mut key_file = None;
    let mut api = ApiSettings::default();
    let mut node_id_set = false;
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let file = ConfigFile::parse(&text)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("config file {}", path.display()))?;
        file.apply(&mut config)
            .with_context(|| format!("config file {}", path.display()))?;
        node_id_set = file.node_id.is_some();
        let base = path.parent().unwrap_or(Path::new("."));
        jobs = file.jobs.map(|j| base.join(j));
        config.data_dir = file.data_dir.map(|d| base.join(d));
        if let Some(a) = &file.api {
            api.listen = Some(parse_addr("api", a).context("config file")?);
        }
        api.token_file = file.api_token_file.map(|f| base.join(f));
        api.insecure_writes = file.api_insecure_writes.unwrap_or(false);
        key_file = file.cluster_key_file.map(|k| base.join(k));
    }
    if let Some(v) = &args.node_id {
        config.node_id = NodeId::new(v);
        node_id_set = true;
    }
    if let Some(v) = &args.listen {
        config.listen_addr = parse_addr("listen", v).context("--listen")?;
    }
    if let Some(v) = &args.advertise {
        config.advertise_addr = Some(parse_addr("advertise", v).context("--advertise")?);
    }
    if !args.seeds.is_empty() {
        config.seeds = args
            .seeds
            .iter()
            .map(|s| parse_addr("seeds", s).context("--seed"))
            .collect::<anyhow::Result<_>>()?;
    }
    if let Some(v) = &args.cluster_id {
        config.cluster_id = v.clone();
    }
    if let Some(v) = &args.gossip_interval {
        config.gossip_interval = parse_duration(v)
            .map_err(anyhow::Error::msg)
            .context("--gossip-interval")?;
    }
    if let Some(j) = &args.jobs {
        jobs = Some(j.clone());
    }
    if let Some(d) = &args.data_dir {
        config.data_dir = Some(d.clone());
    }
    if let Some(n) = args.expected_size {
        config.expected_size = Some(n);
    }
    if let Some(n) = args.min_members {
        config.min_members = Some(n);
    }
    if let Some(v) = &args.max_clock_offset {
        config.max_clock_offset = parse_duration(v)
            .map_err(anyhow::Error::msg)
            .context("--max-clock-offset")?;
    }
    if let Some(n) = args.history_max_runs {
        config.history.max_runs = n;
    }
    if let Some(n) = args.history_max_bytes {
        config.history.max_bytes = n;
    }
    if let Some(a) = &args.api {
        api.listen = Some(parse_addr("api", a).context("--api")?);
    }
    if let Some(f) = &args.api_token_file {
        api.token_file = Some(f.clone());
    }
    api.insecure_writes |= args.api_insecure_writes;
    if !node_id_set {
        let a: SocketAddr = config.advertise();
        config.node_id = NodeId::new(format!("node-{}-{}", a.ip(), a.port()));
    }
    if let Some(k) = &args.cluster_key_file {
        key_file = Some(k.clone());
    }
    if let Some(w) = &args.weight {
        let setting: starling::core::placement::WeightSetting =
            w.parse().map_err(anyhow::Error::msg).context("--weight")?;
        config.placement.weight = setting.resolve(starling::node::available_cpus);
    }
    if !args.tags.is_empty() {
        let mut pairs = std::collections::BTreeMap::new();
        for t in &args.tags {
            let (k, v) = starling::core::placement::parse_tag(t)
                .map_err(anyhow::Error::msg)
                .context("--tag")?;
            pairs.insert(k, v);
        }
        let tags = starling::core::placement::Tags::new(pairs)
            .map_err(anyhow::Error::msg)
            .context("--tag")?;
        config.placement.tags = std::sync::Arc::new(tags);
    }
    // Read once: it is removed at start, so a reload (SIGHUP) reads the key file only.
    let env = match std::env::var(CLUSTER_KEY_ENV) {
        Ok(v) => Some(zeroize::Zeroizing::new(v)),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => bail!("{CLUSTER_KEY_ENV} is not valid UTF-8"),
    };
    if env.is_some() {
        // SAFETY: called before the runtime starts, while this is the only thread; the key
        // must not reach the jobs' environment.
        unsafe { std::env::remove_var(CLUSTER_KEY_ENV) };
    }
    config.cluster_keys = Keyring::load(key_file.as_deref(), env.as_deref().map(|s| s.as_str()))?;
    config.validate()?;
    Ok((config, jobs, api))
}

/// Binds the API's listener and reads its token, if the API is on; sets the address the
/// node publishes for it.
fn start_api(
    settings: &ApiSettings,
    config: &mut NodeConfig,
) -> anyhow::Result<Option<(std::net::TcpListener, starling::api::ApiConfig)>> {
    let Some(listen) = settings.listen else {
        return Ok(None);
    };
    let token = match &settings.token_file {
        Some(file) => Some(starling::api::Token::from_file(file)?),
        None => starling::api::Token::from_env()?,
    };
    starling::api::check_exposure(listen, token.as_ref())?;
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("--api: cannot listen on {listen}"))?;
    listener.set_nonblocking(true)?;
    let mut advertised = listener.local_addr()?;
    if advertised.ip().is_unspecified() {
        advertised.set_ip(config.advertise().ip());
    }
    config.api_addr = Some(advertised);
    let access = match (&token, settings.insecure_writes) {
        (Some(_), _) => "token required",
        (None, false) => "no token: reads only",
        (None, true) => "no token, writes open to anyone who reaches the port",
    };
    tracing::info!(listen = %listener.local_addr()?, %advertised, access, "HTTP API on");
    let api = starling::api::ApiConfig {
        token,
        insecure_writes: settings.insecure_writes,
        ..Default::default()
    };
    Ok(Some((listener, api)))
}

/// The jobs of `path`, or the built-in example jobs when there is none.
fn load_jobs(path: Option<&Path>) -> anyhow::Result<Vec<JobSpec>> {
    match path {
        Some(p) => read_jobs(p),
        None => parse_jobs_toml(DEFAULT_JOBS).context("built-in example jobs"),
    }
}

fn run(args: RunArgs, logs: &RateLimit) -> anyhow::Result<()> {
    let (mut config, jobs_path, api_settings) = build_config(&args)?;
    let api = start_api(&api_settings, &mut config)?;
    // Read once, above: a reload never reads it again, and no job may see it (issue 16).
    // SAFETY: called before the runtime starts, while this is the only thread.
    unsafe { std::env::remove_var(starling::api::TOKEN_ENV) };
    if jobs_path.is_none() {
        tracing::info!("no jobs file given: running the built-in example jobs");
    }
    let jobs = load_jobs(jobs_path.as_deref())?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        // Before the node starts: until then a SIGHUP would kill the process.
        let mut signals = signals::Signals::new()?;
        let node = std::sync::Arc::new(Node::builder(config).jobs(jobs)?.start().await?);
        let server = match api {
            Some((listener, api)) => Some(starling::api::ApiServer::start(
                tokio::net::TcpListener::from_std(listener)?,
                node.clone(),
                api,
            )),
            None => None,
        };
        // A reload reads the files the way a start does: flags still win over the file.
        let load = || {
            let (config, jobs_path, api) = build_config(&args)?;
            let restart = api_settings.changed_keys(&api);
            Ok((config, load_jobs(jobs_path.as_deref())?, restart))
        };
        let signal = signals.until_leave(&node, load).await;
        if let Some(server) = server {
            server.stop().await;
        }
        match std::sync::Arc::try_unwrap(node) {
            Ok(node) => signals.leave(node, signal, logs).await,
            Err(_) => {
                tracing::warn!("the API still holds the node: stopping without a graceful leave")
            }
        }
        Ok(())
    })
}

fn keygen() -> anyhow::Result<()> {
    let mut bytes = [0u8; KEY_LEN];
    OsEntropy.fill(&mut bytes);
    let key = ClusterKey::from_bytes(bytes);
    println!("{}", key.to_base64().as_str());
    eprintln!("key id {}", key.id());
    Ok(())
}

fn check(path: &Path, count: usize) -> anyhow::Result<()> {
    let jobs = read_jobs(path)?;
    let now = SystemClock.now();
    println!("{} job(s) in {} are valid.", jobs.len(), path.display());
    for j in &jobs {
        let parents = starling::core::after::parents(j);
        if !parents.is_empty() {
            // No slots of its own: it runs once per success of each parent.
            println!(
                "\n{}  {}  (once per success of each)",
                j.name,
                starling::core::after::describe(parents)
            );
            continue;
        }
        println!(
            "\n{}  schedule `{}`  timezone {}  dst {}  misfire {:?}  catch-up window {:?}  overlap {}",
            j.name, j.schedule_text, j.timezone, j.dst, j.misfire, j.catch_up_window, j.overlap
        );
        let slots = upcoming(&j.schedule, j.timezone, now, count);
        if slots.is_empty() {
            println!("  no upcoming fire time");
        }
        for slot in slots {
            println!("  {slot}");
        }
    }
    Ok(())
}

/// The next `count` slots after `after`, in RFC 3339 with `tz`'s offset (whole seconds
/// unless the slot has a fraction).
fn upcoming(schedule: &Schedule, tz: Tz, after: UnixMillis, count: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut t = after;
    while out.len() < count {
        let Some(next) = schedule.next_after(t) else {
            break;
        };
        let Some(utc) = chrono::DateTime::from_timestamp_millis(next.0) else {
            break;
        };
        out.push(
            utc.with_timezone(&tz)
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false),
        );
        t = next;
    }
    out
}

fn next(
    schedule: &str,
    timezone: &str,
    after: Option<&str>,
    count: usize,
    dst: &str,
) -> anyhow::Result<()> {
    let tz = parse_timezone(timezone).context("--timezone")?;
    let dst: Dst = dst.parse().map_err(anyhow::Error::msg).context("--dst")?;
    let after = match after {
        Some(a) => chrono::DateTime::parse_from_rfc3339(a)
            .map(|t| UnixMillis(t.timestamp_millis()))
            .map_err(|e| anyhow::anyhow!("`{a}` is not an RFC 3339 time: {e}"))
            .context("--after")?,
        None => SystemClock.now(),
    };
    let parsed =
        Schedule::parse_with(schedule, tz, dst).with_context(|| format!("`{schedule}`"))?;
    if let Schedule::After(parents) = &parsed {
        bail!(
            "`{schedule}` has no fire times: a job with `after` runs {} (once per success of each)",
            starling::core::after::describe(parents)
        );
    }
    let slots = upcoming(&parsed, tz, after, count);
    if slots.is_empty() && count > 0 {
        let when = chrono::DateTime::from_timestamp_millis(after.0)
            .map(|d| d.to_rfc3339())
            .unwrap_or_default();
        bail!("`{schedule}` never fires after {when}");
    }
    let mut out = std::io::stdout().lock();
    for slot in slots {
        // A closed pipe (`| head -1`) ends the listing quietly.
        if writeln!(out, "{slot}").is_err() {
            break;
        }
    }
    Ok(())
}

fn owners(jobs_path: &Path, members: &[String]) -> anyhow::Result<()> {
    let jobs = read_jobs(jobs_path)?;
    let members: Vec<NodeId> = members
        .iter()
        .map(|m| m.trim())
        .filter(|m| !m.is_empty())
        .map(NodeId::new)
        .collect();
    if members.is_empty() {
        bail!("--members: give at least one node id");
    }
    let width = jobs
        .iter()
        .map(|j| j.name.as_str().len())
        .max()
        .unwrap_or(3)
        .max(3);
    println!("{:width$}  owner", "job");
    let mut per_node = std::collections::BTreeMap::<&NodeId, usize>::new();
    for j in &jobs {
        let o = starling::owner(&j.name, &members).expect("members is not empty");
        *per_node.entry(o).or_default() += 1;
        println!("{:width$}  {o}", j.name.as_str());
    }
    println!();
    for m in &members {
        println!("{m}: {} job(s)", per_node.get(m).copied().unwrap_or(0));
    }
    Ok(())
}
