//! Test support for Nexus: a real server on a random loopback port with a fresh
//! SQLite or PostgreSQL database ([`app`], [`db`]) and a real OpenID provider
//! ([`oidc`]). Nothing here mocks Nexus's own parts.

pub mod app;
pub mod db;
pub mod flows;
pub mod forwarder;
pub mod logs;
pub mod moto;
pub mod oidc;
pub mod process;
pub mod promtool;
pub mod provider_kit;
pub mod python;
pub mod upstream;
pub mod webhook_receiver;

pub use app::{TestApp, TestResponse, TEST_API_KEY};
pub use db::{Backend, TestDb};

/// The most any single test may take before it fails (nothing waits forever).
pub const TEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs a test body with [`TEST_DEADLINE`].
pub async fn run_bounded<F: std::future::Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_DEADLINE, body).await.expect("test exceeded its deadline");
}

/// The map of a JSON object literal (credentials, strategy configs).
pub fn json_object(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        other => panic!("expected a JSON object, got {other}"),
    }
}
