//! The glue between providers and the Bridge's strategy interpreters.

use crate::state::AppState;
use nexus_core::strategy::{self, Strategy};
use nexus_store::ProviderRow;
use serde_json::{Map, Value};

pub fn for_provider(provider: &ProviderRow) -> Strategy {
    strategy::strategy_for(&provider.config)
}

/// Captured credentials must carry what the strategy reads.
pub fn check_credentials(provider: &ProviderRow, credentials: &Map<String, Value>) -> Result<(), String> {
    strategy::check_credentials(&for_provider(provider), credentials)
}

/// A request to `url`, signed exactly as an agent's Bridge would sign it.
pub fn sign_request(
    state: &AppState,
    provider: &ProviderRow,
    credentials: &Map<String, Value>,
    method: reqwest::Method,
    url: &str,
    body: &[u8],
) -> Result<reqwest::Request, String> {
    let mut req = http::Request::builder()
        .method(method.as_str())
        .uri(url)
        .header("accept", "application/json")
        .body(body.to_vec())
        .map_err(|e| e.to_string())?;
    nexus_bridge::apply(&mut req, &for_provider(provider), credentials).map_err(|e| e.to_string())?;
    let (parts, body) = req.into_parts();
    let mut out = state.http.request(parts.method, parts.uri.to_string()).body(body);
    for (k, v) in parts.headers.iter() {
        out = out.header(k, v);
    }
    out.build().map_err(|e| e.to_string())
}
