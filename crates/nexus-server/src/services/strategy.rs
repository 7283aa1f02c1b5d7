//! The glue between providers and the Bridge's strategy interpreters.

use crate::state::AppState;
use nexus_core::strategy::{self, Strategy};
use nexus_store::ProviderRow;
use serde_json::{Map, Value};

/// The strategy of `provider` for a connection with configuration
/// `connection`: a templated SigV4 `region` and templated `extra_headers`
/// values are expanded (`Err` names why not). A value is percent-encoded
/// as `{name}` expands it, so a connection's value cannot add a line to a
/// header.
pub fn for_connection(provider: &ProviderRow, connection: &Map<String, Value>) -> Result<Strategy, String> {
    let mut strategy = strategy::strategy_for(&provider.config);
    for (name, value) in strategy.extra_headers_mut().iter_mut() {
        if nexus_core::template::is_template(value) {
            *value = nexus_core::template::UrlTemplate::parse(value)
                .and_then(|t| t.expand_text(connection).map_err(|e| e.to_string()))
                .map_err(|e| format!("params.extra_headers.{name} {e}"))?;
        }
    }
    if let Strategy::AwsSigv4(c) = &mut strategy {
        if nexus_core::template::is_template(&c.region) {
            c.region = crate::services::connection_config::expand_field(
                &provider.config,
                "params.region",
                &c.region,
                connection,
            )?;
        }
    }
    Ok(strategy)
}

/// Captured credentials must carry what the strategy reads.
pub fn check_credentials(
    provider: &ProviderRow,
    connection: &Map<String, Value>,
    credentials: &Map<String, Value>,
) -> Result<(), String> {
    strategy::check_credentials(&for_connection(provider, connection)?, credentials)
}

/// A request to `url`, signed exactly as an agent's Bridge would sign it.
pub fn sign_request(
    state: &AppState,
    provider: &ProviderRow,
    connection: &Map<String, Value>,
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
    nexus_bridge::apply(&mut req, &for_connection(provider, connection)?, credentials).map_err(|e| e.to_string())?;
    let (parts, body) = req.into_parts();
    let mut out = state.http.request(parts.method, parts.uri.to_string()).body(body);
    for (k, v) in parts.headers.iter() {
        out = out.header(k, v);
    }
    out.build().map_err(|e| e.to_string())
}
