//! The API's errors: JSON `{"code": ..., "message": ...}` with a stable code per kind.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// An error as the API sends it. `code` is stable (scripts match on it); `message` is for
/// people and may change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code: `bad_request`, `bad_json`, `invalid_job`, `unauthorized`,
    /// `writes_disabled`, `not_found`, `method_not_allowed`, `conflict`, `too_large`,
    /// `timeout`, `unavailable`, `internal`.
    pub code: String,
    /// What went wrong, naming the field when a field is wrong.
    pub message: String,
}

/// An error response: a status and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                code: code.to_string(),
                message: message.into(),
            },
        }
    }

    /// 400 `bad_request`: a bad query parameter, path or header.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 400 `invalid_job`: a job definition with a bad field (the message names it).
    pub fn invalid_job(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_job", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409 `conflict`: the write clashes with what the cluster holds.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 401 `unauthorized`: no token, or the wrong one.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API token: send `Authorization: Bearer <token>` (the CLI reads it from STARLING_API_TOKEN)",
        )
    }

    /// 403 `writes_disabled`: the node has no token and was not told to accept writes
    /// without one.
    pub fn writes_disabled() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "writes_disabled",
            "this node's API has no token, so it serves reads only: start the node with STARLING_API_TOKEN or --api-token-file to accept writes from token holders (--api-insecure-writes accepts them from anyone who can reach the port: a shell job is code run on every node)",
        )
    }

    /// 408 `timeout`: the request took longer than the node allows.
    pub fn timeout() -> ApiError {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request took too long (a slow body or a slow answer); try again",
        )
    }

    /// 413 `too_large`: the body is over the limit.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is over the limit of {limit} bytes"),
        )
    }

    /// 503 `unavailable`: the node is shutting down or cannot answer now.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status, self.body.code, self.body.message
        )
    }
}

impl std::error::Error for ApiError {}
