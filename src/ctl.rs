//! `starling jobs|members|runs`: the CLI client's commands, over a node's HTTP API.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Map, Value};
use starling::api::{DEFAULT_API_ADDR, Token};
use starling::client::{
    Client, definitions_from_file, name_of, print_job, print_jobs, print_members, print_runs,
};

/// Where the API is, and how to print.
#[derive(Args, Clone)]
pub struct ApiArgs {
    /// The node API to talk to (IP:port or URL); any node answers for the cluster. The
    /// token comes from STARLING_API_TOKEN.
    #[arg(long, default_value = DEFAULT_API_ADDR, global = true)]
    api: String,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// `starling jobs ...`.
#[derive(Subcommand)]
pub enum JobsCmd {
    /// List every job in the cluster.
    Ls,
    /// One job: definition, source, version, owner, next slots, last runs, conflicts.
    Show {
        /// The job.
        name: String,
    },
    /// Create or update jobs from a TOML or JSON file, or from flags.
    Add(Box<AddArgs>),
    /// Delete a job (API jobs only; a jobs file's job is changed in its file).
    Rm {
        /// The job.
        name: String,
    },
    /// Pause a job: it fires nothing until resumed.
    Pause {
        /// The job.
        name: String,
    },
    /// Resume a paused job.
    Resume {
        /// The job.
        name: String,
    },
    /// Run a job once, now, on its owner; prints the run's fire id.
    Run {
        /// The job.
        name: String,
    },
}

/// `starling jobs add`: a file, or the jobs file's keys as flags (flags override the file's
/// values when the file has one job).
#[derive(Args)]
pub struct AddArgs {
    /// A jobs file (`[[jobs]]` entries), one job's TOML keys, or JSON (an object or a list).
    file: Option<PathBuf>,
    /// The job's name.
    #[arg(long)]
    name: Option<String>,
    /// Cron (5 or 6 fields), `@every 30s` or `@at <RFC 3339>`.
    #[arg(long)]
    schedule: Option<String>,
    /// Instead of `--schedule`: run once per success of each of these jobs (comma-separated
    /// or repeated).
    #[arg(long, value_delimiter = ',')]
    after: Vec<String>,
    /// Shell command (run with `sh -c`).
    #[arg(long)]
    command: Option<String>,
    /// IANA timezone for cron schedules.
    #[arg(long)]
    timezone: Option<String>,
    /// Kill the run after this long, e.g. `10m`.
    #[arg(long)]
    timeout: Option<String>,
    /// Extra attempts after a failure.
    #[arg(long)]
    retries: Option<u32>,
    /// `all`, `once` or `skip`.
    #[arg(long)]
    misfire: Option<String>,
    /// e.g. `5m`.
    #[arg(long)]
    catch_up_window: Option<String>,
    /// `forbid`, `allow` or `replace`.
    #[arg(long)]
    overlap: Option<String>,
}

impl AddArgs {
    fn flags(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let strings = [
            ("name", &self.name),
            ("schedule", &self.schedule),
            ("command", &self.command),
            ("timezone", &self.timezone),
            ("timeout", &self.timeout),
            ("misfire", &self.misfire),
            ("catch_up_window", &self.catch_up_window),
            ("overlap", &self.overlap),
        ];
        for (k, v) in strings {
            if let Some(v) = v {
                m.insert(k.into(), Value::String(v.clone()));
            }
        }
        if let Some(r) = self.retries {
            m.insert("retries".into(), Value::from(r));
        }
        if !self.after.is_empty() {
            m.insert("after".into(), Value::from(self.after.clone()));
        }
        m
    }

    fn definitions(&self) -> anyhow::Result<Vec<Map<String, Value>>> {
        let flags = self.flags();
        let mut defs = match &self.file {
            Some(path) => definitions_from_file(path)?,
            None if flags.is_empty() => {
                anyhow::bail!(
                    "give a jobs file, or the job's keys as flags (--name, --schedule, --command, ...)"
                )
            }
            None => vec![Map::new()],
        };
        if !flags.is_empty() {
            if defs.len() != 1 {
                anyhow::bail!(
                    "flags apply to a file with one job; this one has {}",
                    defs.len()
                );
            }
            defs[0].extend(flags);
        }
        Ok(defs)
    }
}

fn client(api: &ApiArgs) -> anyhow::Result<Client> {
    let token = Token::from_env()?;
    Ok(Client::new(&api.api, token)?)
}

fn output<T: serde::Serialize>(api: &ApiArgs, value: &T, table: impl FnOnce(&T) -> String) {
    if api.json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        print!("{}", table(value));
    }
}

fn block_on<T>(f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

/// `starling jobs ...`.
pub fn jobs(cmd: JobsCmd, api: ApiArgs) -> anyhow::Result<()> {
    let c = client(&api)?;
    block_on(async move {
        match cmd {
            JobsCmd::Ls => output(&api, &c.jobs().await?, print_jobs),
            JobsCmd::Show { name } => output(&api, &c.job(&name).await?, print_job),
            JobsCmd::Add(add) => {
                for def in add.definitions()? {
                    let name = name_of(&def)?;
                    let job = c.put_job(&name, &Value::Object(def)).await?;
                    output(&api, &job, |j| {
                        format!(
                            "job `{}` saved (version {}, owner {})\n",
                            j.name,
                            j.version.as_deref().unwrap_or("-"),
                            j.owner.as_deref().unwrap_or("-")
                        )
                    });
                }
            }
            JobsCmd::Rm { name } => {
                c.delete_job(&name).await?;
                output(&api, &serde_json::json!({"deleted": name}), |_| {
                    format!("job `{name}` deleted\n")
                });
            }
            JobsCmd::Pause { name } => output(&api, &c.pause(&name, true).await?, |j| {
                format!("job `{}` paused\n", j.name)
            }),
            JobsCmd::Resume { name } => output(&api, &c.pause(&name, false).await?, |j| {
                format!("job `{}` resumed\n", j.name)
            }),
            JobsCmd::Run { name } => output(&api, &c.run(&name).await?, |r| {
                format!(
                    "job `{}` asked to run now: fire id {} (`starling runs --job {}` shows it)\n",
                    r.job, r.fire_id, r.job
                )
            }),
        }
        Ok(())
    })
}

/// `starling members`.
pub fn members(api: ApiArgs) -> anyhow::Result<()> {
    let c = client(&api)?;
    block_on(async move {
        output(&api, &c.members().await?, print_members);
        Ok(())
    })
}

/// `starling runs`.
pub fn runs(job: Option<String>, limit: usize, api: ApiArgs) -> anyhow::Result<()> {
    let c = client(&api)?;
    block_on(async move {
        output(&api, &c.runs(job.as_deref(), limit).await?, print_runs);
        Ok(())
    })
}
