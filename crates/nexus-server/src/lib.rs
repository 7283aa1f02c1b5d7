//! The Nexus HTTP server: the Gateway API (`/v1/*`), probes and the OpenAPI
//! document, with the middleware that identifies and authenticates callers.
//!
//! Handlers stay thin (`routes/`), business operations live in `services/`,
//! and every failure becomes JSON in one place (`error.rs`).

pub mod app;
pub mod config;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod proxy_lane;
pub mod routes;
pub mod serve;
pub mod services;
pub mod state;
pub mod vault;

pub use app::{router, shutdown_signal, Application, StartError};
pub use config::{Config, ConfigError, RawConfig};
pub use state::AppState;
