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

/// The endpoints of an oauth2 provider (discovered, per tenant when its
/// issuer is a template, or configured) for a connection with
/// configuration `connection`.
pub(crate) async fn endpoints(
    state: &AppState,
    provider: &ProviderRow,
    connection: &Map<String, Value>,
) -> Result<Endpoints, ApiError> {
    let discovery = crate::services::tenant_discovery::for_connection(state, provider, connection).await?;
    endpoints_with(provider, discovery.as_ref(), connection)
}

/// [`endpoints`] with the discovery document at hand (or none).
pub(crate) fn endpoints_with(
    provider: &ProviderRow,
    discovery: Option<&nexus_core::provider::Discovery>,
    connection: &Map<String, Value>,
) -> Result<Endpoints, ApiError> {
    Endpoints::of(&provider.config, discovery, connection)
        .map_err(|message| ApiError::new(ErrorCode::ProviderMisconfigured, message))
}

/// The client registration of an oauth2 provider for a connection with
/// configuration `connection`, with its secret opened.
pub(crate) async fn client_config(
    state: &AppState,
    provider: &ProviderRow,
    connection: &Map<String, Value>,
) -> Result<ClientConfig, ApiError> {
    client_config_at(state, provider, endpoints(state, provider, connection).await?)
}

/// [`client_config`] at endpoints already found.
pub(crate) fn client_config_at(
    state: &AppState,
    provider: &ProviderRow,
    endpoints: Endpoints,
) -> Result<ClientConfig, ApiError> {
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
