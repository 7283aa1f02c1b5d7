//! An oauth2 provider's endpoints and client registration (secret opened:
//! the rest is `nexus_oauth::client`), and the redirect URI Nexus registers.

use crate::error::ApiError;
use crate::state::AppState;
use nexus_core::wire::ErrorCode;
use nexus_core::SecretString;
use nexus_oauth::{ClientConfig, Endpoints};
use nexus_store::ProviderRow;
use serde_json::{Map, Value};

/// The redirect URI registered at providers.
pub fn redirect_uri(state: &AppState) -> String {
    format!("{}{}", state.config.base_url.as_str().trim_end_matches('/'), state.config.redirect_path)
}

/// The endpoints of an oauth2 provider (discovered or configured) for a
/// connection with configuration `connection`.
pub(crate) fn endpoints(provider: &ProviderRow, connection: &Map<String, Value>) -> Result<Endpoints, ApiError> {
    Endpoints::of(&provider.config, provider.discovery.as_ref(), connection)
        .map_err(|message| ApiError::new(ErrorCode::ProviderMisconfigured, message))
}

/// The client registration of an oauth2 provider for a connection with
/// configuration `connection`, with its secret opened.
pub(crate) fn client_config(
    state: &AppState,
    provider: &ProviderRow,
    connection: &Map<String, Value>,
) -> Result<ClientConfig, ApiError> {
    let endpoints = endpoints(provider, connection)?;
    let Some(enc) = &provider.client_secret_enc else {
        return Err(ApiError::new(ErrorCode::ProviderMisconfigured, "the provider has no client secret"));
    };
    let secret =
        state.config.keyring.open_string(&format!("provider:{}:client_secret", provider.id), enc).map_err(|e| {
            tracing::error!(provider = %provider.id, error = %e, "client secret does not open");
            ApiError::internal()
        })?;
    Ok(ClientConfig::of(&provider.config, endpoints, SecretString::new(secret.as_str()), redirect_uri(state)))
}

pub(super) fn param_str<'a>(provider: &'a ProviderRow, key: &str) -> Option<&'a str> {
    provider.config.params.get(key).and_then(Value::as_str)
}

pub(super) fn param_bool(provider: &ProviderRow, key: &str) -> bool {
    provider.config.params.get(key).and_then(Value::as_bool).unwrap_or(false)
}

pub(super) fn param_map(provider: &ProviderRow, key: &str) -> Map<String, Value> {
    provider.config.params.get(key).and_then(Value::as_object).cloned().unwrap_or_default()
}
