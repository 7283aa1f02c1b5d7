//! HTML pages for people (the Connect pages, the capture form, the
//! callback's refusal): one place for the headers every one of them carries.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// A page of plain text, no images and no form.
pub const PLAIN: &str = "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'";
/// A Connect page: Nexus's own stylesheet and logos.
pub const CONNECT: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'";
/// A page with a form that posts back to Nexus.
pub const FORM: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `body` as an HTML page under `csp`: not cached, not sniffed, sent with
/// no referrer, and never rewritten as a JSON error.
pub fn page(status: StatusCode, body: String, csp: &'static str) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp.extensions_mut().insert(crate::middleware::error_json::KeepBody);
    resp
}
