//! HTTP routes. Each handler extracts, calls one service function and maps the
//! result; the `#[utoipa::path]` on it is both its route and its documentation,
//! so `/openapi.json` cannot drift from what is served.

pub mod api_keys;
pub mod audit;
pub mod capture;
pub mod catalog;
pub mod connect;
pub mod connections;
pub mod health;
pub mod html;
pub mod invalidations;
pub mod providers;
pub mod proxy;
pub mod tokens;
pub mod webhooks;
