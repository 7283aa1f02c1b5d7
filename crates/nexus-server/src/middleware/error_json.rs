//! Turns any error response that is not already JSON (axum's own 404/405/413/415
//! rejections, tower-http's limits) into our `{code, message}` shape, so no
//! client ever has to parse text/plain. Responses marked [`KeepBody`] (an
//! HTML page for a browser, an upstream's answer relayed by the proxy) pass
//! through untouched.

use crate::error::{ErrorBody, ErrorCode};
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Marks a response whose non-JSON error body is intentional.
#[derive(Debug, Clone, Copy)]
pub struct KeepBody;

pub async fn json_errors(response: Response) -> Response {
    as_json(response)
}

/// `response`, with a `{code, message}` body if it is an error that is not
/// JSON already and not marked [`KeepBody`].
pub fn as_json(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    if response.extensions().get::<KeepBody>().is_some() {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (code, message) = ErrorCode::for_status(status.as_u16());
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = ErrorBody { code, message: message.to_owned(), details: None };
    let mut fresh = (status, axum::Json(body)).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fresh
}
