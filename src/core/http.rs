//! HTTP jobs (`kind = "http"`): the request a slot sends, checked when the job is parsed.
//!
//! Pure data and validation; `exec::http` sends the request. Each request also carries
//! `Idempotency-Key: <fire id>` and `X-Starling-Epoch: <epoch>` (issue 18), so the
//! endpoint can drop a retried or duplicated slot and fence a stale owner.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted `url`, in bytes.
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// Longest accepted `body`, in bytes: it travels in the catalog's gossip values too.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// Most `headers` a job may set.
pub const MAX_HEADERS: usize = 32;

/// Headers Starling sets itself on every request; a job may not set them.
pub const RESERVED_HEADERS: [&str; 2] = ["idempotency-key", "x-starling-epoch"];

/// The request method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Method {
    /// `GET` (default).
    #[default]
    Get,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
    /// `HEAD`.
    Head,
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "GET" => Ok(Method::Get),
            "POST" => Ok(Method::Post),
            "PUT" => Ok(Method::Put),
            "PATCH" => Ok(Method::Patch),
            "DELETE" => Ok(Method::Delete),
            "HEAD" => Ok(Method::Head),
            _ => Err(format!(
                "`{}` is not a method: use GET, POST, PUT, PATCH, DELETE or HEAD",
                crate::logs::escape(s)
            )),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
        })
    }
}

/// Which response statuses count as success.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectStatus {
    /// Any 2xx (default).
    #[default]
    Success,
    /// One of these.
    Codes(Vec<u16>),
}

impl ExpectStatus {
    /// True when `status` counts as success.
    pub fn accepts(&self, status: u16) -> bool {
        match self {
            ExpectStatus::Success => (200..300).contains(&status),
            ExpectStatus::Codes(c) => c.contains(&status),
        }
    }
}

impl fmt::Display for ExpectStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectStatus::Success => f.write_str("2xx"),
            ExpectStatus::Codes(c) => {
                let list: Vec<String> = c.iter().map(u16::to_string).collect();
                f.write_str(&list.join(" or "))
            }
        }
    }
}

/// What an HTTP job sends each slot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HttpSpec {
    /// An absolute `http` or `https` URL.
    pub url: String,
    /// The method (default GET).
    pub method: Method,
    /// Extra request headers, by name (lower case).
    pub headers: BTreeMap<String, String>,
    /// The request body, if any.
    pub body: Option<String>,
    /// Which statuses are success (default 2xx).
    pub expect_status: ExpectStatus,
}

/// The keys of an HTTP job as written, before checking.
#[derive(Clone, Debug, Default)]
pub struct RawHttp {
    /// `url`.
    pub url: Option<String>,
    /// `method`.
    pub method: Option<String>,
    /// `headers`.
    pub headers: Option<BTreeMap<String, String>>,
    /// `body`.
    pub body: Option<String>,
    /// `expect_status`.
    pub expect_status: Option<Vec<u16>>,
}

impl RawHttp {
    /// True when none of the HTTP keys is set.
    pub fn is_empty(&self) -> bool {
        self.url.is_none()
            && self.method.is_none()
            && self.headers.is_none()
            && self.body.is_none()
            && self.expect_status.is_none()
    }

    /// The first HTTP key that is set, for an error on a job of another kind.
    pub fn first_key(&self) -> Option<&'static str> {
        [
            ("url", self.url.is_some()),
            ("method", self.method.is_some()),
            ("headers", self.headers.is_some()),
            ("body", self.body.is_some()),
            ("expect_status", self.expect_status.is_some()),
        ]
        .into_iter()
        .find_map(|(k, set)| set.then_some(k))
    }

    /// Checks the keys; the error names the key at fault.
    pub fn check(self) -> Result<HttpSpec, (&'static str, String)> {
        let url = self
            .url
            .ok_or(("url", "missing (an HTTP job needs one)".into()))?;
        check_url(&url).map_err(|e| ("url", e))?;
        let method = match &self.method {
            Some(m) => m.parse().map_err(|e| ("method", e))?,
            None => Method::default(),
        };
        let mut headers = BTreeMap::new();
        let raw_headers = self.headers.unwrap_or_default();
        if raw_headers.len() > MAX_HEADERS {
            return Err((
                "headers",
                format!("{} headers; at most {MAX_HEADERS}", raw_headers.len()),
            ));
        }
        for (name, value) in raw_headers {
            let lower = name.to_ascii_lowercase();
            check_header(&lower, &value).map_err(|e| ("headers", e))?;
            headers.insert(lower, value);
        }
        if let Some(b) = &self.body
            && b.len() > MAX_BODY_BYTES
        {
            return Err((
                "body",
                format!(
                    "is {} bytes long, over the limit of {MAX_BODY_BYTES}",
                    b.len()
                ),
            ));
        }
        let expect_status = match self.expect_status {
            None => ExpectStatus::Success,
            Some(c) if c.is_empty() => return Err(("expect_status", "is empty".into())),
            Some(c) => {
                if let Some(bad) = c.iter().find(|s| !(100..=599).contains(*s)) {
                    return Err((
                        "expect_status",
                        format!("{bad} is not an HTTP status (100-599)"),
                    ));
                }
                ExpectStatus::Codes(c)
            }
        };
        Ok(HttpSpec {
            url,
            method,
            headers,
            body: self.body,
            expect_status,
        })
    }
}

impl HttpSpec {
    /// The keys as written, for the jobs file and the API.
    pub fn to_raw(&self) -> RawHttp {
        RawHttp {
            url: Some(self.url.clone()),
            method: (self.method != Method::default()).then(|| self.method.to_string()),
            headers: (!self.headers.is_empty()).then(|| self.headers.clone()),
            body: self.body.clone(),
            expect_status: match &self.expect_status {
                ExpectStatus::Success => None,
                ExpectStatus::Codes(c) => Some(c.clone()),
            },
        }
    }

    /// Checks a spec again (one from gossip or disk is input like any other).
    pub fn recheck(&self) -> Result<HttpSpec, (&'static str, String)> {
        self.to_raw().check()
    }
}

/// An absolute `http://` or `https://` URL with a host, and no credentials in it (they
/// would show in logs and the API; put them in a header).
pub fn check_url(text: &str) -> Result<(), String> {
    if text.len() > MAX_URL_BYTES {
        return Err(format!("is longer than {MAX_URL_BYTES} bytes"));
    }
    let shown = crate::logs::escape(text);
    let url = url::Url::parse(text).map_err(|e| format!("`{shown}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`{shown}`: the scheme `{}` is not supported; use http or https",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{shown}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("holds credentials; send them in `headers` instead".into());
    }
    Ok(())
}

/// A header name (a token) and a value of visible ASCII, spaces and tabs.
fn check_header(name: &str, value: &str) -> Result<(), String> {
    let shown = crate::logs::escape(name);
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Err(format!("`{shown}` is not a header name"));
    }
    if RESERVED_HEADERS.contains(&name) {
        return Err(format!("`{shown}` is set by Starling on every request"));
    }
    if !value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Err(format!(
            "the value of `{shown}` holds characters other than visible ASCII and spaces"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: &str) -> RawHttp {
        RawHttp {
            url: Some(url.into()),
            ..RawHttp::default()
        }
    }

    #[test]
    fn a_good_request_parses_with_its_defaults() {
        let h = raw("https://example.com/hook?x=1").check().unwrap();
        assert_eq!(h.method, Method::Get);
        assert!(h.expect_status.accepts(204) && !h.expect_status.accepts(301));
        let h = RawHttp {
            method: Some("post".into()),
            headers: Some([("Content-Type".into(), "application/json".into())].into()),
            body: Some("{}".into()),
            expect_status: Some(vec![202, 409]),
            ..raw("http://127.0.0.1:8080/")
        }
        .check()
        .unwrap();
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.headers["content-type"], "application/json");
        assert!(h.expect_status.accepts(409) && !h.expect_status.accepts(200));
        assert_eq!(h.recheck(), Ok(h.clone()));
    }

    #[test]
    fn bad_requests_name_the_key() {
        let key = |r: RawHttp| r.check().unwrap_err().0;
        for bad in [
            "not a url",
            "ftp://example.com/",
            "file:///etc/passwd",
            "http://user:secret@example.com/",
            "/relative",
        ] {
            assert_eq!(key(raw(bad)), "url", "{bad}");
        }
        assert_eq!(key(RawHttp::default()), "url");
        let e = raw("ftp://x/").check().unwrap_err().1;
        assert!(e.contains("ftp"), "{e}");
        let with = |f: fn(&mut RawHttp)| {
            let mut r = raw("http://x/");
            f(&mut r);
            key(r)
        };
        assert_eq!(with(|r| r.method = Some("FETCH".into())), "method");
        assert_eq!(
            with(|r| r.headers = Some([("bad name".into(), "v".into())].into())),
            "headers"
        );
        assert_eq!(
            with(|r| r.headers = Some([("Idempotency-Key".into(), "v".into())].into())),
            "headers"
        );
        assert_eq!(
            with(|r| r.headers = Some([("x".into(), "a\nb".into())].into())),
            "headers"
        );
        assert_eq!(with(|r| r.expect_status = Some(vec![42])), "expect_status");
        assert_eq!(with(|r| r.expect_status = Some(vec![])), "expect_status");
        assert_eq!(
            with(|r| r.body = Some("x".repeat(MAX_BODY_BYTES + 1))),
            "body"
        );
    }
}
