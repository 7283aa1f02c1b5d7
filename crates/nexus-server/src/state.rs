//! The shared state every handler receives: configuration, store and the one
//! outbound HTTP client.

use crate::config::Config;
use nexus_store::Store;
use std::sync::Arc;
use std::time::Duration;

/// Cheap to clone (`Arc` inside).
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub config: Config,
    pub store: Store,
    /// For calls to providers (discovery now; token endpoints later). Redirects
    /// are not followed so an https endpoint cannot bounce us to a plain-http one.
    pub http: reqwest::Client,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(config: Config, store: Store) -> AppState {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("nexus/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client configuration is static and valid");
        AppState(Arc::new(Inner { config, store, http }))
    }
}
