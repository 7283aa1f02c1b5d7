//! Answers and request bodies of the API.

use crate::provider::{Discovery, ProviderConfig};
use crate::strategy::Strategy;
use crate::{AuthType, ConnectionStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// The answer of `GET /v1/token/{connection_id}` and `POST /v1/refresh/{id}`:
/// how to sign and with what. `Debug` names the credential fields, never
/// their values.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenAnswer {
    pub connection_id: String,
    /// The provider's name.
    pub provider: String,
    pub auth_type: AuthType,
    pub strategy: Strategy,
    /// oauth2: access_token, token_type, expires_at, scope, id_token? and the
    /// provider's extras; static types: the captured fields.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub credentials: Map<String, Value>,
    /// Unix seconds, or null when the credentials do not expire.
    pub expires_at: Option<i64>,
    /// The provider's API root for this connection (templates already
    /// expanded), where proxies send signed requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
    /// The connection's non-secret configuration (SPEC 10): a tenant's
    /// subdomain, region, or values learned while connecting.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub connection_config: Map<String, Value>,
    /// Seconds a proxy or the Bridge may reuse this answer (`TOKEN_MAX_AGE`,
    /// never beyond `expires_at`); changes arrive sooner through
    /// `GET /v1/invalidations`. A Gateway that does not say means 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
}

impl fmt::Debug for TokenAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenAnswer")
            .field("connection_id", &self.connection_id)
            .field("provider", &self.provider)
            .field("auth_type", &self.auth_type)
            .field("strategy", &self.strategy)
            .field("credentials", &self.credentials.keys().map(|k| (k, "[redacted]")).collect::<Vec<_>>())
            .field("expires_at", &self.expires_at)
            .field("api_base_url", &self.api_base_url)
            .field("connection_config", &self.connection_config)
            .field("max_age", &self.max_age)
            .finish()
    }
}

/// A provider as the API shows it: its configuration, the discovered
/// endpoints, and whether a client secret is stored — never the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderView {
    pub id: String,
    #[serde(flatten)]
    pub config: ProviderConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Discovery>,
    #[serde(default)]
    pub client_secret_set: bool,
    /// `sha256:` + 16 hex digits; changes whenever the secret changes.
    #[serde(default)]
    pub client_secret_fingerprint: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub created_at: String,
    /// RFC 3339.
    #[serde(default)]
    pub updated_at: String,
}

/// The answer of `DELETE /v1/providers/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeletedProvider {
    pub id: String,
    pub name: String,
    pub deleted: bool,
    /// Connections of this provider that were not revoked; their token
    /// retrieval now fails with `410 provider_deleted`.
    #[serde(default)]
    pub orphaned_connections: i64,
}

/// One entry of `GET /v1/providers/metadata`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetadataEntry {
    pub id: String,
    pub name: String,
    /// What a person sees; the name when the operator gave none.
    pub display_name: String,
    pub api_base_url: Option<String>,
    pub user_info_endpoint: Option<String>,
    pub scopes: Vec<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    /// The catalog template's logo, for a provider made from one (absent:
    /// show the display name's initials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
}

/// The body of `POST /v1/request-connection`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RequestConnection {
    /// Whose connection this is (`user_id` is accepted as an alias).
    #[serde(alias = "user_id")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256, pattern = "^[^\\u0000]*$"))]
    pub workspace_id: String,
    /// The provider's id (or name); give this or `provider_name`.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256, pattern = "^[^\\u0000]*$"))]
    pub provider_id: Option<String>,
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256, pattern = "^[^\\u0000]*$"))]
    pub provider_name: Option<String>,
    /// A subset of the provider's scopes; default: all of them.
    pub scopes: Option<Vec<String>>,
    /// Where the user lands afterwards (`?connection_id=…&status=success|error`):
    /// an absolute http(s) URL allowed by `ALLOWED_RETURN_DOMAINS`. Not
    /// needed when nobody is sent anywhere (`oauth2_client_credentials`).
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^https?://[a-z][a-z0-9]{0,20}(\\.[a-z][a-z0-9]{0,20}){0,3}(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]{0,20}){0,4}$",
            max_length = 2048
        )
    )]
    pub return_url: String,
    /// Kept with the connection and shown on it.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Value>,
    /// Re-authorize this existing connection in place, keeping its id.
    pub connection_id: Option<String>,
    /// Values the provider's `connection_config_schema` asks for (a tenant's
    /// subdomain, a region); checked against it, its defaults filled in.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub connection_config: Option<Value>,
}

/// The answer of `POST /v1/request-connection`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectionRequested {
    pub connection_id: String,
    pub auth_url: String,
    /// The same URL under the reference gateway's name.
    #[serde(rename = "authUrl")]
    pub auth_url_alias: String,
    pub state: String,
    pub provider_id: String,
    pub scopes: Vec<String>,
    /// Unix seconds after which the pending connection expires.
    pub expires_at: i64,
}

/// The answer of `POST /v1/request-connection` (`201`) when no person needs
/// to act: the grant ran and the connection is active (SPEC 11).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectionActivated {
    pub connection_id: String,
    pub status: ConnectionStatus,
}

/// The answer of `GET /v1/check-connection/{id}` and the items of
/// `GET /v1/connections`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectionView {
    pub connection_id: String,
    pub status: ConnectionStatus,
    /// The provider's name.
    pub provider: String,
    pub provider_id: String,
    pub auth_type: AuthType,
    pub workspace_id: String,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Value>,
    /// The connection's non-secret configuration (SPEC 10).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub connection_config: Map<String, Value>,
    /// Why the connection failed or needs attention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix seconds when the access token expires (oauth2), if known.
    pub expires_at: Option<i64>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// The body of `POST /v1/capture-credential`. `Debug` names the credential
/// fields, never their values.
#[derive(Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// The `state` returned by `POST /v1/request-connection`.
    pub state: String,
    /// The fields the provider's `credential_schema` asks for.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub credentials: Map<String, Value>,
}

impl fmt::Debug for CaptureRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureRequest")
            .field("state", &"[redacted]")
            .field("credentials", &CaptureRequestCredentials(&self.credentials))
            .finish()
    }
}

impl fmt::Debug for CaptureRequestCredentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

struct CaptureRequestCredentials<'a>(&'a Map<String, Value>);

/// The data of an `invalidate` event of `GET /v1/invalidations`: one of
/// `{"connection_id"}`, `{"provider_id"}` or `{"all": true}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvalidationData {
    /// Answers for this connection changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    /// Answers for every connection of this provider changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// Anything may have changed (the stream lagged): drop every answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
}
