//! The API token: read from `STARLING_API_TOKEN` or a file, never from a flag value (`ps`
//! would show it), compared in constant time, and never printed.

use std::net::SocketAddr;
use std::path::Path;

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

/// The environment variable the node and the CLI read the token from.
pub const TOKEN_ENV: &str = "STARLING_API_TOKEN";

/// Shortest token accepted, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;
/// Longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// A bearer token. Its `Debug` shows no part of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why a token was refused. Messages never include the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read the API token file {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The token is too short, too long, or has characters a header cannot carry.
    #[error("the API token from {source_name} is unusable: {reason}")]
    Invalid {
        /// `STARLING_API_TOKEN` or the file's path.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// The API would listen on a non-loopback address with no token: anyone who reaches
    /// the port could read the cluster (and, with insecure writes, run commands on it).
    #[error(
        "--api {listen}: an address other than loopback needs an API token: set {TOKEN_ENV} or \
         --api-token-file (config key `api_token_file`), or listen on 127.0.0.1"
    )]
    OpenBeyondLoopback {
        /// The address `--api` asked for.
        listen: SocketAddr,
    },
}

/// Refuses to serve the API on `listen` without a token unless `listen` is a loopback
/// address (issue 16): a token-less API reads out every member, job and run, and the
/// unspecified address (`0.0.0.0`) reaches every interface.
pub fn check_exposure(listen: SocketAddr, token: Option<&Token>) -> Result<(), TokenError> {
    if token.is_none() && !listen.ip().is_loopback() {
        return Err(TokenError::OpenBeyondLoopback { listen });
    }
    Ok(())
}

impl Token {
    /// A token from its text (surrounding whitespace, such as a file's final newline, is
    /// dropped). `source_name` names where it came from in errors.
    pub fn new(text: &str, source_name: &str) -> Result<Token, TokenError> {
        let t = text.trim();
        let invalid = |reason: String| TokenError::Invalid {
            source_name: source_name.to_string(),
            reason,
        };
        if t.len() < MIN_TOKEN_BYTES {
            return Err(invalid(format!(
                "it has {} bytes; use at least {MIN_TOKEN_BYTES} (e.g. `openssl rand -hex 32`)",
                t.len()
            )));
        }
        if t.len() > MAX_TOKEN_BYTES {
            return Err(invalid(format!(
                "it is longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "it may hold only visible ASCII characters (no spaces or control characters)"
                    .into(),
            ));
        }
        Ok(Token(t.to_string()))
    }

    /// Reads a token from `path`.
    pub fn from_file(path: &Path) -> Result<Token, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|e| TokenError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Token::new(&text, &path.display().to_string())
    }

    /// The token from `STARLING_API_TOKEN`, if it is set and not empty.
    pub fn from_env() -> Result<Option<Token>, TokenError> {
        match std::env::var(TOKEN_ENV) {
            Ok(v) if !v.trim().is_empty() => Token::new(&v, TOKEN_ENV).map(Some),
            _ => Ok(None),
        }
    }

    /// The token's text, to send in a request.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// The `Authorization` header value for this token.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether `headers` carry `Authorization: Bearer <this token>`. The comparison takes
    /// the same time wherever the first difference is.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let value = value.as_bytes();
        let Some(given) = value
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
            .map(|_| value[7..].trim_ascii())
        else {
            return false;
        };
        bool::from(given.ct_eq(self.0.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let t = Token::new("0123456789abcdef-secret\n", "test").unwrap();
        assert!(t.admits(&headers("Bearer 0123456789abcdef-secret")));
        assert!(t.admits(&headers("bearer 0123456789abcdef-secret")));
        assert!(!t.admits(&headers("Bearer 0123456789abcdef-secreT")));
        assert!(!t.admits(&headers("Bearer 0123456789abcdef-secret-and-more")));
        assert!(!t.admits(&headers("Bearer 0123456789abcdef")));
        assert!(!t.admits(&headers("Basic 0123456789abcdef-secret")));
        assert!(!t.admits(&headers("Bearer")));
        assert!(!t.admits(&HeaderMap::new()));
    }

    #[test]
    fn only_loopback_addresses_serve_without_a_token() {
        let t = Token::new("0123456789abcdef-secret", "f").unwrap();
        for ok in ["127.0.0.1:7947", "127.3.2.1:0", "[::1]:7947"] {
            let a: SocketAddr = ok.parse().unwrap();
            assert_eq!(check_exposure(a, None), Ok(()), "{ok}");
            assert_eq!(check_exposure(a, Some(&t)), Ok(()), "{ok}");
        }
        for open in [
            "0.0.0.0:7947",
            "10.0.0.5:7947",
            "[::]:7947",
            "[2001:db8::1]:1",
        ] {
            let a: SocketAddr = open.parse().unwrap();
            let e = check_exposure(a, None).unwrap_err().to_string();
            assert!(
                e.contains("--api") && e.contains(TOKEN_ENV) && e.contains("api_token_file"),
                "{e}"
            );
            assert_eq!(check_exposure(a, Some(&t)), Ok(()), "{open}");
        }
    }

    #[test]
    fn bad_tokens_are_refused_without_showing_them() {
        let e = Token::new("short", "STARLING_API_TOKEN")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("STARLING_API_TOKEN") && e.contains("at least 16"),
            "{e}"
        );
        assert!(!e.contains("short"), "{e}");
        let e = Token::new("has a space in the middle", "f")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("middle"), "{e}");
        let t = Token::new("0123456789abcdef-secret", "f").unwrap();
        assert!(!format!("{t:?}").contains("secret"));
        let e = Token::from_file(Path::new("/nonexistent/token")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/token"));
    }
}
