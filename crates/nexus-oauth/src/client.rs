//! A provider's OAuth client configuration for one connection: its endpoints
//! (discovered or configured, templates expanded over the connection's
//! configuration) and its client registration.

use crate::flow::{ClientAuth, ClientConfig};
use nexus_core::provider::{Discovery, ProviderConfig};
use nexus_core::SecretString;
use serde_json::{Map, Value};

/// The endpoints of an oauth2 provider for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub auth_url: String,
    /// `None` while the connection lacks a value the template needs (one
    /// learned from the callback, say): only the authorization URL can be
    /// made until then.
    pub token_url: Option<String>,
    /// `refresh_url`, or the token endpoint.
    pub refresh_url: Option<String>,
    pub jwks_uri: Option<String>,
    pub revocation: Option<String>,
}

impl Endpoints {
    /// Discovered endpoints when there are some, else the configured ones,
    /// expanded over `connection`. `Err` names the field: an endpoint is
    /// missing, or its template expands to a URL Nexus may not call.
    pub fn of(
        config: &ProviderConfig,
        discovery: Option<&Discovery>,
        connection: &Map<String, Value>,
    ) -> Result<Endpoints, String> {
        let expand = |field: &str, raw: &str| config.expand(raw, connection).map_err(|e| format!("{field} {e}"));
        let (auth_url, token_url) = match discovery {
            Some(d) => (d.authorization_endpoint.clone(), Some(d.token_endpoint.clone())),
            None => {
                // The client credentials grant has no authorization endpoint.
                let auth = match config.auth_url.as_deref() {
                    Some(auth) => auth,
                    None if config.auth_type != nexus_core::AuthType::Oauth2 => "",
                    None => return Err("the provider has no authorization endpoint".into()),
                };
                let token = config.token_url.as_deref().ok_or("the provider has no token endpoint")?;
                let token = config.is_ready(token, connection).then(|| expand("token_url", token)).transpose()?;
                let auth = if auth.is_empty() { String::new() } else { expand("auth_url", auth)? };
                (auth, token)
            }
        };
        let refresh_url = match config.refresh_url.as_deref() {
            Some(raw) => config.is_ready(raw, connection).then(|| expand("refresh_url", raw)).transpose()?,
            None => token_url.clone(),
        };
        let revocation = match config.revocation_url.as_deref() {
            Some(raw) => config.is_ready(raw, connection).then(|| expand("revocation_url", raw)).transpose()?,
            None => discovery.and_then(|d| d.revocation_endpoint.clone()),
        };
        Ok(Endpoints {
            auth_url,
            token_url,
            refresh_url,
            // A configured key set wins over a discovered one.
            jwks_uri: match config.jwks_uri.as_deref() {
                Some(raw) if config.is_ready(raw, connection) => Some(expand("jwks_uri", raw)?),
                Some(_) => None,
                None => discovery.and_then(|d| d.jwks_uri.clone()),
            },
            revocation,
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
            refresh_url: endpoints.refresh_url,
            redirect_uri,
            quirks: crate::http::TokenQuirks::of(&config.params),
            assertion_kid: config.params.get("client_assertion_kid").and_then(Value::as_str).map(str::to_owned),
        }
    }
}
