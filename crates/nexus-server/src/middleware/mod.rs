//! Cross-cutting request handling, applied in this order (outermost first):
//! request id + access log, JSON-ification of framework errors, caller
//! identification, then (on `/v1/*`) network allowlist, CORS and API key.

pub mod api_key;
pub mod body_limit;
pub mod caller;
pub mod error_json;
pub mod request_log;

pub use caller::Caller;
