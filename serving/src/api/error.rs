//! Errors as the REST API reports them: an HTTP status and a JSON body
//! `{"error": {"code", "message"}}` whose `code` is stable.

use std::convert::Infallible;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

/// An error a handler answers with.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `unknown_view`.
    pub code: &'static str,
    /// Human-readable detail.
    pub message: String,
    /// Seconds for a `Retry-After` header (503s of a server that is busy).
    pub retry_after_secs: Option<u32>,
}

impl ApiError {
    /// An error with the given status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// The same error with a `Retry-After` header.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// 404 `unknown_view`.
    pub fn unknown_view(view: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_view",
            format!("no view named `{view}`"),
        )
    }

    /// 400 `bad_parameter`.
    pub fn bad_parameter(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_parameter", message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), self.status).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(warp::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// Turns warp's rejections (no route, wrong method, body too large, bad
/// query) into the same JSON errors as the handlers'.
pub async fn recover(rejection: warp::Rejection) -> Result<Response, Infallible> {
    let err = if rejection.is_not_found() {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    } else if let Some(e) = rejection.find::<warp::reject::PayloadTooLarge>() {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            e.to_string(),
        )
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::bad_parameter(e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::LengthRequired>() {
        ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            e.to_string(),
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this endpoint",
        )
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        // The routes read their headers raw and judge them in the handlers;
        // this is the net under any header filter added later: a header
        // the server cannot read is the client's error, never a 500.
        ApiError::bad_parameter(format!("header `{}` is malformed", e.name()))
    } else {
        ApiError::internal(format!("unhandled rejection: {rejection:?}"))
    };
    Ok(err.into_response())
}
