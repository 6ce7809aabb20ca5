//! The CLI client (`starling jobs|members|runs`): calls a node's HTTP API and prints
//! tables or JSON. The token comes from `STARLING_API_TOKEN`.

mod table;

use std::path::Path;

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

pub use table::{print_job, print_jobs, print_members, print_runs};

use crate::api::{ErrorBody, JobView, JobsPage, MembersPage, RunRequested, RunsPage, Token};

/// Why a CLI command failed. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made.
    #[error(
        "cannot reach the Starling API at {addr}: {reason}; is a node running with `--api {addr}`? (`--api ADDR` points the CLI elsewhere)"
    )]
    Unreachable {
        /// The address tried.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The node wants a token, or another one.
    #[error(
        "the API at {addr} refused the request: {message}; set STARLING_API_TOKEN to the node's API token"
    )]
    Unauthorized {
        /// The address.
        addr: String,
        /// The node's message.
        message: String,
    },
    /// The node answered with an error.
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The stable error code.
        code: String,
        /// The node's message.
        message: String,
    },
    /// The answer was not what the API sends.
    #[error("the API at {addr} answered something unexpected: {reason}")]
    Protocol {
        /// The address.
        addr: String,
        /// What was wrong.
        reason: String,
    },
    /// Bad input on this side (an address, a token, a jobs file).
    #[error("{0}")]
    Input(String),
}

/// A client of one node's API.
pub struct Client {
    addr: String,
    base: Url,
    token: Option<Token>,
    http: reqwest::Client,
}

impl Client {
    /// A client of the API at `addr` (`IP:port`, `host:port` or an `http://` URL), sending
    /// `token` if there is one.
    pub fn new(addr: &str, token: Option<Token>) -> Result<Client, ClientError> {
        let url = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let base = Url::parse(&url)
            .ok()
            .filter(|u| !u.cannot_be_a_base() && u.host().is_some())
            .ok_or_else(|| {
                ClientError::Input(format!(
                    "--api: `{addr}` is not an address (e.g. 127.0.0.1:7947)"
                ))
            })?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Input(format!("cannot set up HTTP: {e}")))?;
        Ok(Client {
            addr: addr.to_string(),
            base,
            token,
            http,
        })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let mut request = self.http.request(method, url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.secret());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            addr: self.addr.clone(),
            reason: reason(&e),
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| ClientError::Protocol {
            addr: self.addr.clone(),
            reason: reason(&e),
        })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
                addr: self.addr.clone(),
                reason: e.to_string(),
            });
        }
        let error: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
            code: "unknown".into(),
            message: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
        });
        if status == StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized {
                addr: self.addr.clone(),
                message: if self.token.is_some() {
                    "the token is wrong".into()
                } else {
                    "it needs a token and none is set".into()
                },
            });
        }
        Err(ClientError::Api {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
        })
    }

    /// `GET /v1/members`.
    pub async fn members(&self) -> Result<MembersPage, ClientError> {
        self.call(Method::GET, self.url(&["v1", "members"]), None)
            .await
    }

    /// `GET /v1/jobs`.
    pub async fn jobs(&self) -> Result<JobsPage, ClientError> {
        self.call(Method::GET, self.url(&["v1", "jobs"]), None)
            .await
    }

    /// `GET /v1/jobs/{name}`.
    pub async fn job(&self, name: &str) -> Result<JobView, ClientError> {
        self.call(Method::GET, self.url(&["v1", "jobs", name]), None)
            .await
    }

    /// `PUT /v1/jobs/{name}` with `definition` (the jobs file's keys).
    pub async fn put_job(&self, name: &str, definition: &Value) -> Result<JobView, ClientError> {
        self.call(
            Method::PUT,
            self.url(&["v1", "jobs", name]),
            Some(definition),
        )
        .await
    }

    /// `DELETE /v1/jobs/{name}`.
    pub async fn delete_job(&self, name: &str) -> Result<(), ClientError> {
        self.call::<Value>(Method::DELETE, self.url(&["v1", "jobs", name]), None)
            .await
            .map(drop)
    }

    /// `POST /v1/jobs/{name}/pause` or `/resume`.
    pub async fn pause(&self, name: &str, pause: bool) -> Result<JobView, ClientError> {
        let verb = if pause { "pause" } else { "resume" };
        self.call(Method::POST, self.url(&["v1", "jobs", name, verb]), None)
            .await
    }

    /// `POST /v1/jobs/{name}/run`.
    pub async fn run(&self, name: &str) -> Result<RunRequested, ClientError> {
        self.call(Method::POST, self.url(&["v1", "jobs", name, "run"]), None)
            .await
    }

    /// `POST /v1/runs/{fire_id}/cancel`.
    pub async fn cancel(&self, fire_id: &str) -> Result<(), ClientError> {
        self.call::<Value>(
            Method::POST,
            self.url(&["v1", "runs", fire_id, "cancel"]),
            None,
        )
        .await
        .map(drop)
    }

    /// `GET /v1/runs?job=&limit=`.
    pub async fn runs(&self, job: Option<&str>, limit: usize) -> Result<RunsPage, ClientError> {
        let mut url = self.url(&["v1", "runs"]);
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string());
        if let Some(job) = job {
            url.query_pairs_mut().append_pair("job", job);
        }
        self.call(Method::GET, url, None).await
    }
}

fn reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer in time".into();
    }
    cause(e)
}

/// What a failed request says: its innermost cause ("Connection refused (os error 111)").
pub(crate) fn cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Job definitions to add, as JSON objects of the jobs file's keys, from `path`: a JSON
/// object or array of objects (`.json`, or any other name whose text is JSON), or TOML
/// (`.toml` or anything else: a jobs file with `[[jobs]]` entries, or one job's keys at the
/// top level).
pub fn definitions_from_file(path: &Path) -> Result<Vec<Map<String, Value>>, ClientError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Input(format!("cannot read {}: {e}", path.display())))?;
    let bad = |what: String| ClientError::Input(format!("{}: {what}", path.display()));
    let ext = path.extension().and_then(|e| e.to_str());
    let json = match ext {
        Some("json") => Some(serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?),
        Some("toml") => None,
        _ => serde_json::from_str(&text).ok(),
    };
    let value: Value = if let Some(json) = json {
        json
    } else {
        let table: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let value = serde_json::to_value(table).map_err(|e| bad(e.to_string()))?;
        match value {
            Value::Object(mut top) if top.len() == 1 && top.contains_key("jobs") => {
                top.remove("jobs").unwrap_or(Value::Null)
            }
            other => other,
        }
    };
    let entries = match value {
        Value::Array(items) => items,
        one @ Value::Object(_) => vec![one],
        _ => {
            return Err(bad(
                "expected a job (an object of its keys) or a list of jobs".into(),
            ));
        }
    };
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| match e {
            Value::Object(m) => Ok(m),
            _ => Err(bad(format!("entry {} is not an object of job keys", i + 1))),
        })
        .collect()
}

/// The name of a definition, required to address it.
pub fn name_of(definition: &Map<String, Value>) -> Result<String, ClientError> {
    match definition.get("name") {
        Some(Value::String(n)) if !n.is_empty() => Ok(n.clone()),
        _ => Err(ClientError::Input(
            "a job to add needs a `name` (in the file, or --name)".into(),
        )),
    }
}

#[cfg(test)]
mod tests;
