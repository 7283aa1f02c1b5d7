//! An oauth2 provider's endpoints and client registration (secret opened),
//! and the redirect URI Nexus registers.

use crate::error::ApiError;
use crate::state::AppState;
use nexus_core::wire::ErrorCode;
use nexus_core::SecretString;
use nexus_oauth::{ClientAuth, ClientConfig};
use nexus_store::ProviderRow;
use serde_json::{Map, Value};

/// The redirect URI registered at providers.
pub fn redirect_uri(state: &AppState) -> String {
    format!("{}{}", state.config.base_url.as_str().trim_end_matches('/'), state.config.redirect_path)
}

/// The authorization and token endpoints of an oauth2 provider (discovered or manual).
pub(crate) struct Endpoints {
    pub auth_url: String,
    pub token_url: String,
    pub jwks_uri: Option<String>,
    pub revocation: Option<String>,
}

pub(crate) fn endpoints(provider: &ProviderRow) -> Result<Endpoints, ApiError> {
    let cfg = &provider.config;
    let (auth_url, token_url) = match &provider.discovery {
        Some(d) => (d.authorization_endpoint.clone(), d.token_endpoint.clone()),
        None => (cfg.auth_url.clone().unwrap_or_default(), cfg.token_url.clone().unwrap_or_default()),
    };
    if auth_url.is_empty() || token_url.is_empty() {
        return Err(ApiError::new(
            ErrorCode::ProviderMisconfigured,
            "the provider has no authorization or token endpoint",
        ));
    }
    Ok(Endpoints {
        auth_url,
        token_url,
        jwks_uri: provider.discovery.as_ref().and_then(|d| d.jwks_uri.clone()),
        revocation: provider.discovery.as_ref().and_then(|d| d.revocation_endpoint.clone()),
    })
}

/// The client registration of an oauth2 provider, with its secret opened.
pub(crate) fn client_config(state: &AppState, provider: &ProviderRow) -> Result<ClientConfig, ApiError> {
    let ep = endpoints(provider)?;
    let secret = match &provider.client_secret_enc {
        Some(enc) => {
            state.config.keyring.open_string(&format!("provider:{}:client_secret", provider.id), enc).map_err(|e| {
                tracing::error!(provider = %provider.id, error = %e, "client secret does not open");
                ApiError::internal()
            })?
        }
        None => return Err(ApiError::new(ErrorCode::ProviderMisconfigured, "the provider has no client secret")),
    };
    Ok(ClientConfig {
        client_id: provider.config.client_id.clone().unwrap_or_default(),
        client_secret: SecretString::new(secret.as_str()),
        auth: ClientAuth::from_auth_header(provider.config.auth_header.as_deref()),
        auth_url: ep.auth_url,
        token_url: ep.token_url,
        redirect_uri: redirect_uri(state),
    })
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
