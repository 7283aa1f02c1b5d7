//! A provider's OAuth client configuration: its endpoints (discovered or
//! configured) and its client registration.

use crate::flow::{ClientAuth, ClientConfig};
use nexus_core::provider::{Discovery, ProviderConfig};
use nexus_core::SecretString;

/// The endpoints of an oauth2 provider, discovered or configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub auth_url: String,
    pub token_url: String,
    pub jwks_uri: Option<String>,
    pub revocation: Option<String>,
}

impl Endpoints {
    /// Discovered endpoints when there are some, else the configured ones;
    /// `Err` when the authorization or token endpoint is missing.
    pub fn of(config: &ProviderConfig, discovery: Option<&Discovery>) -> Result<Endpoints, &'static str> {
        let (auth_url, token_url) = match discovery {
            Some(d) => (d.authorization_endpoint.clone(), d.token_endpoint.clone()),
            None => (config.auth_url.clone().unwrap_or_default(), config.token_url.clone().unwrap_or_default()),
        };
        if auth_url.is_empty() || token_url.is_empty() {
            return Err("the provider has no authorization or token endpoint");
        }
        Ok(Endpoints {
            auth_url,
            token_url,
            jwks_uri: discovery.and_then(|d| d.jwks_uri.clone()),
            revocation: discovery.and_then(|d| d.revocation_endpoint.clone()),
        })
    }
}

impl ClientConfig {
    /// The client registration of `config` at `endpoints`, with its
    /// (opened) secret and the redirect URI Nexus registered.
    pub fn of(
        config: &ProviderConfig,
        endpoints: Endpoints,
        client_secret: SecretString,
        redirect_uri: String,
    ) -> ClientConfig {
        ClientConfig {
            client_id: config.client_id.clone().unwrap_or_default(),
            client_secret,
            auth: ClientAuth::from_auth_header(config.auth_header.as_deref()),
            auth_url: endpoints.auth_url,
            token_url: endpoints.token_url,
            redirect_uri,
        }
    }
}
