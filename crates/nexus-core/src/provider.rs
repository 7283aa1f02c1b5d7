//! Providers: how to authenticate against one third-party API.
//!
//! Input arrives as [`ProviderInput`] (the seeds' flat JSON shape) and becomes a
//! [`ProviderConfig`] only through [`ProviderInput::validate`], which applies every
//! rule of SPEC section 3. Services and storage handle the validated type only.

use crate::error::ValidationErrors;
use crate::secret::SecretString;
use crate::template::{is_template, ExpandError, UrlTemplate};
use crate::url_policy::parse_outbound_url;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// The six authentication families (`header` is accepted as an alias of `api_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    Oauth2,
    /// The client credentials grant (RFC 6749 §4.4): no person consents.
    Oauth2ClientCredentials,
    /// The JWT bearer grant (RFC 7523 §2.1) with a service-account key
    /// captured per connection.
    JwtBearer,
    #[serde(alias = "header")]
    ApiKey,
    BasicAuth,
    AwsSigv4,
    QueryParam,
    HmacPayload,
}

impl AuthType {
    pub const ALL: [AuthType; 8] = [
        AuthType::Oauth2,
        AuthType::Oauth2ClientCredentials,
        AuthType::JwtBearer,
        AuthType::ApiKey,
        AuthType::BasicAuth,
        AuthType::AwsSigv4,
        AuthType::QueryParam,
        AuthType::HmacPayload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Oauth2 => "oauth2",
            AuthType::Oauth2ClientCredentials => "oauth2_client_credentials",
            AuthType::JwtBearer => "jwt_bearer",
            AuthType::ApiKey => "api_key",
            AuthType::BasicAuth => "basic_auth",
            AuthType::AwsSigv4 => "aws_sigv4",
            AuthType::QueryParam => "query_param",
            AuthType::HmacPayload => "hmac_payload",
        }
    }

    /// Parses a wire name, accepting the `header` alias.
    pub fn parse(raw: &str) -> Option<AuthType> {
        match raw {
            "header" => Some(AuthType::ApiKey),
            _ => AuthType::ALL.into_iter().find(|t| t.as_str() == raw),
        }
    }

    /// The types whose connections are made by capturing what a person
    /// types (Nexus's capture form) rather than by an OAuth redirect or a
    /// grant Nexus runs alone.
    pub fn is_static(self) -> bool {
        !matches!(self, AuthType::Oauth2 | AuthType::Oauth2ClientCredentials)
    }

    /// The types whose tokens come from an OAuth token endpoint: signed
    /// with the `oauth2` strategy, renewed by Nexus.
    pub fn uses_token_endpoint(self) -> bool {
        matches!(self, AuthType::Oauth2 | AuthType::Oauth2ClientCredentials | AuthType::JwtBearer)
    }
}

impl fmt::Display for AuthType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider name: `^[a-z0-9][a-z0-9._-]{0,62}$`, not a reserved path word and
/// not shaped like a UUID (so `{id}` path segments stay unambiguous).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$"))]
#[serde(try_from = "String", into = "String")]
pub struct ProviderName(String);

const RESERVED_NAMES: [&str; 2] = ["metadata", "by-name"];

impl ProviderName {
    pub fn parse(raw: &str) -> Result<ProviderName, String> {
        let bytes = raw.as_bytes();
        let valid_first = bytes.first().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let valid_rest =
            bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
        if raw.is_empty() || raw.len() > 63 || !valid_first || !valid_rest {
            return Err("must match ^[a-z0-9][a-z0-9._-]{0,62}$ (lowercase letters, digits, '.', '_', '-'; at most 63 characters)".into());
        }
        if RESERVED_NAMES.contains(&raw) {
            return Err(format!("'{raw}' is reserved"));
        }
        if looks_like_uuid(raw) {
            return Err("must not look like a UUID (ids and names share the {id} path segment)".into());
        }
        Ok(ProviderName(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn looks_like_uuid(raw: &str) -> bool {
    raw.len() == 36
        && raw.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl TryFrom<String> for ProviderName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ProviderName::parse(&value)
    }
}

impl From<ProviderName> for String {
    fn from(value: ProviderName) -> String {
        value.0
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The body of `POST /v1/providers` (and, after merging, of `PATCH`/`PUT`).
/// Unknown top-level fields are refused so a typo never silently drops a setting.
#[derive(Debug, Clone, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProviderInput {
    /// Unique among live providers; also accepted wherever an `{id}` is.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$", max_length = 63))]
    pub name: String,
    /// `oauth2`, `api_key` (alias `header`), `basic_auth`, `aws_sigv4`, `query_param` or `hmac_payload`.
    #[cfg_attr(feature = "openapi", schema(value_type = AuthType))]
    pub auth_type: String,
    /// What a person sees; defaults to `name`.
    #[cfg_attr(feature = "openapi", schema(max_length = 200))]
    pub display_name: Option<String>,
    pub client_id: Option<String>,
    /// Write-only: stored encrypted, never returned.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, write_only))]
    pub client_secret: Option<SecretString>,
    /// https anywhere; plain http only on loopback hosts.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^(https://[a-z][a-z0-9]{0,20}(\\.[a-z][a-z0-9]{0,20}){0,3}|http://(localhost|127\\.0\\.0\\.1))(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]{0,20}){0,4}$"
        )
    )]
    pub issuer: Option<String>,
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^(https://[a-z][a-z0-9]{0,20}(\\.[a-z][a-z0-9]{0,20}){0,3}|http://(localhost|127\\.0\\.0\\.1))(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]{0,20}){0,4}$"
        )
    )]
    pub auth_url: Option<String>,
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^(https://[a-z][a-z0-9]{0,20}(\\.[a-z][a-z0-9]{0,20}){0,3}|http://(localhost|127\\.0\\.0\\.1))(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]{0,20}){0,4}$"
        )
    )]
    pub token_url: Option<String>,
    /// Where refreshes go; default: `token_url` (or the discovered token endpoint).
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^(https://[a-z][a-z0-9]{0,20}(\\.[a-z][a-z0-9]{0,20}){0,3}|http://(localhost|127\\.0\\.0\\.1))(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]{0,20}){0,4}$"
        )
    )]
    pub refresh_url: Option<String>,
    /// RFC 7009 revocation endpoint; default: discovery's `revocation_endpoint`.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^(https://[a-z][a-z0-9]{0,20}(\\.[a-z][a-z0-9]{0,20}){0,3}|http://(localhost|127\\.0\\.0\\.1))(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]{0,20}){0,4}$"
        )
    )]
    pub revocation_url: Option<String>,
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^(https://[a-z][a-z0-9]{0,20}(\\.[a-z][a-z0-9]{0,20}){0,3}|http://(localhost|127\\.0\\.0\\.1))(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]{0,20}){0,4}$"
        )
    )]
    pub api_base_url: Option<String>,
    /// The OpenID provider's key set, for verifying `id_token`s without
    /// discovery (with `issuer`); default: discovery's `jwks_uri`.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^(https://[a-z][a-z0-9]{0,20}(\\.[a-z][a-z0-9]{0,20}){0,3}|http://(localhost|127\\.0\\.0\\.1))(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]{0,20}){0,4}$"
        )
    )]
    pub jwks_uri: Option<String>,
    /// A path under `api_base_url` or an https URL.
    pub user_info_endpoint: Option<String>,
    pub enable_discovery: Option<bool>,
    pub scopes: Option<Vec<String>>,
    /// oauth2: `client_secret_post` or `client_secret_basic`; api_key: the header name.
    pub auth_header: Option<String>,
    /// Per type: `credential_schema` (a JSON Schema, required for static
    /// types), strategy settings and OAuth quirks (SPEC section 3). Unknown
    /// keys are kept.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub params: Option<Map<String, Value>>,
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub description: Option<String>,
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub category: Option<String>,
    /// The catalog template to copy (SPEC 12): its fields, with the body's
    /// overriding them (`params` merged as JSON Merge Patch). Only on
    /// `POST` and `PUT`; the provider keeps the name as provenance.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$", max_length = 63))]
    pub template: Option<String>,
    /// The catalog version the provider follows: set from the catalog when a
    /// template is copied; a whole provider (a `GET` answer sent back, what
    /// `nexus providers apply` sends) carries it, at most the catalog's.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 4294967295_u64))]
    pub template_version: Option<u32>,
}

/// The validated, non-secret configuration of a provider, as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderConfig {
    pub name: ProviderName,
    pub auth_type: AuthType,
    /// What a person sees; absent: the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_info_endpoint: Option<String>,
    pub enable_discovery: bool,
    pub scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_header: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub params: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The catalog template this provider was copied from, and its version then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version: Option<u32>,
}

/// Endpoints learned from `{issuer}/.well-known/openid-configuration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Discovery {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userinfo_endpoint: Option<String>,
    /// Unix seconds of the fetch, for the cache TTL.
    pub fetched_at: i64,
}

/// What an input says about the client secret.
#[derive(Debug, Clone)]
pub enum SecretChange {
    /// The input carries a new secret.
    Set(SecretString),
    /// The input does not mention the secret: keep what is stored (if anything).
    Keep,
}

/// A validated provider: its configuration and what to do with its secret.
#[derive(Debug, Clone)]
pub struct ValidatedProvider {
    pub config: ProviderConfig,
    pub secret: SecretChange,
}

const MAX_URL_LEN: usize = 2048;
const MAX_TEXT_LEN: usize = 1024;
const MAX_DISPLAY_NAME: usize = 200;

impl ProviderInput {
    /// Reads a JSON body, accepting the flat shape or `{"profile": {...}}`.
    /// Errors name the field (`params.algo: invalid type: …`).
    pub fn from_json(mut body: Value) -> Result<ProviderInput, ValidationErrors> {
        if let Value::Object(map) = &mut body {
            if map.len() == 1 && map.contains_key("profile") {
                body = map.remove("profile").unwrap_or(Value::Null);
            }
        }
        crate::wire::from_body(body)
    }

    /// Applies every registration rule. `has_stored_secret` says whether a secret
    /// is already stored (an update that omits `client_secret` keeps it).
    pub fn validate(self, has_stored_secret: bool) -> Result<ValidatedProvider, ValidationErrors> {
        let mut errs = ValidationErrors::default();

        let name = ProviderName::parse(self.name.trim()).map_err(|m| errs.push("name", m)).ok();
        let auth_type = AuthType::parse(&self.auth_type);
        if auth_type.is_none() {
            errs.push(
                "auth_type",
                format!(
                    "'{}' is not one of oauth2, api_key (alias header), basic_auth, aws_sigv4, query_param, hmac_payload",
                    truncate(&self.auth_type)
                ),
            );
        }

        let client_id = non_empty(self.client_id);
        let issuer = check_url(&mut errs, "issuer", self.issuer);
        let auth_url = check_url(&mut errs, "auth_url", self.auth_url);
        let token_url = check_url(&mut errs, "token_url", self.token_url);
        let refresh_url = check_url(&mut errs, "refresh_url", self.refresh_url);
        let revocation_url = check_url(&mut errs, "revocation_url", self.revocation_url);
        let api_base_url = check_url(&mut errs, "api_base_url", self.api_base_url);
        let jwks_uri = check_url(&mut errs, "jwks_uri", self.jwks_uri);
        let user_info_endpoint = non_empty(self.user_info_endpoint);
        if let Some(u) = &user_info_endpoint {
            if u.len() > MAX_URL_LEN {
                errs.push("user_info_endpoint", format!("must be at most {MAX_URL_LEN} bytes"));
            } else if is_template(u) {
                if let Err(m) = check_template(u, u.starts_with('/')) {
                    errs.push("user_info_endpoint", m);
                }
            } else if !(u.starts_with('/') || parse_outbound_url(u).is_ok()) {
                errs.push("user_info_endpoint", "must be a path starting with '/' or an https URL");
            }
        }
        let enable_discovery = self.enable_discovery.unwrap_or(false);
        let scopes = self.scopes.unwrap_or_default();
        for (i, s) in scopes.iter().enumerate() {
            if s.is_empty() || s.len() > 256 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                errs.push(format!("scopes[{i}]"), "must be a non-empty scope token without spaces");
            }
        }
        let params = self.params.unwrap_or_default();
        check_known_params(&mut errs, &params);
        let description = non_empty(self.description);
        let category = non_empty(self.category);
        let display_name = non_empty(self.display_name);
        if jwks_uri.is_some() && issuer.is_none() {
            errs.push("jwks_uri", "applies only with issuer (the id_token's iss it verifies)");
        }
        let template = non_empty(self.template);
        if let Some(t) = &template {
            if let Err(m) = ProviderName::parse(t) {
                errs.push("template", m);
            }
        }
        let template_version = self.template_version;
        match (template.is_some(), template_version) {
            (_, Some(0)) => errs.push("template_version", "must be at least 1"),
            (false, Some(_)) => errs.push("template_version", "applies only with template"),
            _ => {}
        }
        if let Some(d) = &display_name {
            if d.chars().count() > MAX_DISPLAY_NAME || d.chars().any(char::is_control) {
                errs.push(
                    "display_name",
                    format!("must be at most {MAX_DISPLAY_NAME} characters without control characters"),
                );
            }
        }
        for (field, value) in [("description", &description), ("category", &category)] {
            if value.as_ref().is_some_and(|v| v.len() > MAX_TEXT_LEN) {
                errs.push(field, format!("must be at most {MAX_TEXT_LEN} bytes"));
            }
        }
        let secret = match self.client_secret {
            Some(s) if s.expose().is_empty() => {
                errs.push("client_secret", "must not be empty");
                SecretChange::Keep
            }
            Some(s) => SecretChange::Set(s),
            None => SecretChange::Keep,
        };
        let has_secret = matches!(secret, SecretChange::Set(_)) || has_stored_secret;
        let auth_header = non_empty(self.auth_header);

        match auth_type {
            Some(AuthType::Oauth2) => {
                if client_id.is_none() {
                    errs.push("client_id", "is required for oauth2");
                }
                if !has_secret {
                    errs.push("client_secret", "is required for oauth2");
                }
                if enable_discovery {
                    if issuer.is_none() {
                        errs.push_once("issuer", "is required when enable_discovery is true");
                    }
                } else {
                    if auth_url.is_none() {
                        errs.push_once(
                            "auth_url",
                            "is required for oauth2 unless enable_discovery is true with an issuer",
                        );
                    }
                    if token_url.is_none() {
                        errs.push_once(
                            "token_url",
                            "is required for oauth2 unless enable_discovery is true with an issuer",
                        );
                    }
                }
                if let Some(h) = &auth_header {
                    if h != "client_secret_post" && h != "client_secret_basic" {
                        errs.push("auth_header", "must be client_secret_post or client_secret_basic for oauth2");
                    }
                }
            }
            Some(AuthType::Oauth2ClientCredentials) => {
                let kind = "oauth2_client_credentials";
                match params.get("credential_schema") {
                    // The client's credentials are captured per connection.
                    Some(schema) => {
                        let required = schema.get("required").and_then(Value::as_array);
                        let asks = |f: &str| required.is_some_and(|r| r.iter().any(|v| v == f));
                        if !(asks("client_id") && asks("client_secret")) {
                            errs.push(
                                "params.credential_schema",
                                format!("must require client_id and client_secret for {kind} (or leave it out and register them on the provider)"),
                            );
                        }
                    }
                    None => {
                        if client_id.is_none() {
                            errs.push("client_id", format!("is required for {kind}"));
                        }
                        if !has_secret {
                            errs.push("client_secret", format!("is required for {kind}"));
                        }
                    }
                }
                if enable_discovery {
                    if issuer.is_none() {
                        errs.push_once("issuer", "is required when enable_discovery is true");
                    }
                } else if token_url.is_none() {
                    errs.push_once(
                        "token_url",
                        format!("is required for {kind} unless enable_discovery is true with an issuer"),
                    );
                }
                match auth_header.as_deref() {
                    None | Some("client_secret_post" | "client_secret_basic") => {}
                    Some("private_key_jwt") => {
                        // The secret is the client's PEM private key.
                        if let SecretChange::Set(pem) = &secret {
                            if !looks_like_private_key(pem.expose()) {
                                errs.push(
                                    "client_secret",
                                    "must be a PEM private key (-----BEGIN PRIVATE KEY-----) with private_key_jwt",
                                );
                            }
                        }
                    }
                    Some(_) => errs.push(
                        "auth_header",
                        format!("must be client_secret_post, client_secret_basic or private_key_jwt for {kind}"),
                    ),
                }
            }
            Some(AuthType::JwtBearer) => {
                if enable_discovery {
                    errs.push("enable_discovery", "applies to oauth2 only, not jwt_bearer");
                }
                if token_url.is_none() {
                    errs.push_once("token_url", "is required for jwt_bearer (the assertion's audience)");
                }
            }
            Some(static_type) => {
                if enable_discovery {
                    errs.push("enable_discovery", format!("applies to oauth2 only, not {static_type}"));
                }
                if !params.contains_key("credential_schema") {
                    errs.push("params.credential_schema", format!("is required for {static_type}"));
                }
                if static_type == AuthType::AwsSigv4 {
                    for key in ["service", "region"] {
                        if params.get(key).and_then(Value::as_str).is_none_or(str::is_empty) {
                            errs.push(format!("params.{key}"), "is required for aws_sigv4");
                        }
                    }
                }
                if let Some(h) = &auth_header {
                    if !is_header_name(h) {
                        errs.push("auth_header", "must be a valid HTTP header name");
                    }
                }
            }
            None => {}
        }

        let (Some(name), Some(auth_type)) = (name, auth_type) else {
            return Err(errs);
        };
        let config = ProviderConfig {
            name,
            auth_type,
            display_name,
            client_id,
            issuer,
            auth_url,
            token_url,
            refresh_url,
            revocation_url,
            api_base_url,
            jwks_uri,
            user_info_endpoint,
            enable_discovery,
            scopes,
            auth_header,
            params,
            description,
            category,
            template,
            template_version,
        };
        check_template_names(&mut errs, &config);
        check_jwks_names(&mut errs, &config);
        errs.into_result(ValidatedProvider { config, secret })
    }
}

impl ProviderConfig {
    /// The fields that may hold URL templates, with their values, for those
    /// that hold one.
    pub fn templated_fields(&self) -> Vec<(&'static str, &str)> {
        let fields = [
            ("issuer", self.issuer.as_deref()),
            ("auth_url", self.auth_url.as_deref()),
            ("token_url", self.token_url.as_deref()),
            ("refresh_url", self.refresh_url.as_deref()),
            ("revocation_url", self.revocation_url.as_deref()),
            ("jwks_uri", self.jwks_uri.as_deref()),
            ("api_base_url", self.api_base_url.as_deref()),
            ("user_info_endpoint", self.user_info_endpoint.as_deref()),
            ("params.region", self.params.get("region").and_then(Value::as_str)),
        ];
        fields.into_iter().filter_map(|(f, v)| v.filter(|v| is_template(v)).map(|v| (f, v))).collect()
    }

    /// `params.allowed_hosts`: the host globs expanded URLs must match.
    pub fn allowed_hosts(&self) -> Vec<String> {
        self.params
            .get("allowed_hosts")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// `raw` (one of this provider's URL fields) for one connection: a
    /// template is expanded over `connection` and checked (outbound URL
    /// policy, `allowed_hosts` when a variable is in the host); a plain URL
    /// is returned as it is.
    pub fn expand(&self, raw: &str, connection: &Map<String, Value>) -> Result<String, ExpandError> {
        if !is_template(raw) {
            return Ok(raw.to_owned());
        }
        UrlTemplate::parse(raw).map_err(ExpandError::Refused)?.expand(connection, &self.allowed_hosts())
    }

    /// Whether every name `raw` uses has a value in `connection`.
    pub fn is_ready(&self, raw: &str, connection: &Map<String, Value>) -> bool {
        !is_template(raw) || UrlTemplate::parse(raw).is_ok_and(|t| t.is_ready(connection))
    }

    /// Whether a person types this provider's credentials into Nexus's
    /// capture form for each connection: the static types, and the client
    /// credentials grant when its `credential_schema` asks for the client.
    pub fn captures_credentials(&self) -> bool {
        self.auth_type.is_static()
            || self.auth_type == AuthType::Oauth2ClientCredentials && self.params.contains_key("credential_schema")
    }

    /// What the capture form asks for: `params.credential_schema`, or for
    /// `jwt_bearer` without one, a service-account key.
    pub fn credential_schema(&self) -> Value {
        match self.params.get("credential_schema") {
            Some(schema) => schema.clone(),
            None if self.auth_type == AuthType::JwtBearer => service_account_schema(),
            None => serde_json::json!({}),
        }
    }

    /// `params.connection_config_schema`, when the provider has one.
    pub fn connection_config_schema(&self) -> Option<&Value> {
        self.params.get("connection_config_schema")
    }

    /// What a person sees: `display_name`, or the name.
    pub fn display_name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(self.name.as_str())
    }

    /// The configuration in input shape (without any secret), the base onto which
    /// `PATCH` merges its body before validating the result again.
    pub fn to_input_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The names of top-level fields whose values differ between two configs.
    pub fn changed_fields(&self, other: &ProviderConfig) -> Vec<String> {
        let (Value::Object(a), Value::Object(b)) = (self.to_input_json(), other.to_input_json()) else {
            return Vec::new();
        };
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn check_url(errs: &mut ValidationErrors, field: &str, raw: Option<String>) -> Option<String> {
    let raw = non_empty(raw)?;
    if raw.len() > MAX_URL_LEN {
        errs.push(field, format!("must be at most {MAX_URL_LEN} bytes"));
        return None;
    }
    let checked = if is_template(&raw) { check_template(&raw, false) } else { parse_outbound_url(&raw).map(drop) };
    match checked {
        Ok(()) => Some(raw),
        Err(m) => {
            errs.push(field, m);
            None
        }
    }
}

/// A URL template's syntax, and, when its host is fixed, that the URL it
/// expands to passes the outbound URL policy (each variable stands in as
/// `x`). A path template (`relative`) only needs the syntax.
fn check_template(raw: &str, relative: bool) -> Result<(), String> {
    let template = UrlTemplate::parse(raw)?;
    if relative || template.host_is_variable() {
        return Ok(());
    }
    let sample: Map<String, Value> = template.names().iter().map(|n| (n.clone(), Value::from("x"))).collect();
    template.expand(&sample, &[]).map(drop).map_err(|e| match e {
        ExpandError::Refused(why) => why,
        other => other.to_string(),
    })
}

/// The names a connection's configuration can hold: declared by
/// `connection_config_schema` or learned from the token answer, the callback
/// or the user-info endpoint.
pub fn config_names(params: &Map<String, Value>) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    if let Some(props) =
        params.get("connection_config_schema").and_then(|s| s.get("properties")).and_then(Value::as_object)
    {
        names.extend(props.keys().cloned());
    }
    for key in ["connection_config_from_token", "connection_config_from_userinfo"] {
        if let Some(map) = params.get(key).and_then(Value::as_object) {
            names.extend(map.keys().cloned());
        }
    }
    if let Some(list) = params.get("connection_config_from_callback").and_then(Value::as_array) {
        names.extend(list.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    names
}

/// `jwks_uri` names only what `issuer` names: the keys that verify an
/// id_token are the issuer's own, known before the token arrives (never a
/// value learned from the token answer).
fn check_jwks_names(errs: &mut ValidationErrors, config: &ProviderConfig) {
    let (Some(jwks), Some(issuer)) = (config.jwks_uri.as_deref(), config.issuer.as_deref()) else { return };
    let names = |raw: &str| UrlTemplate::parse(raw).map(|t| t.names().clone()).unwrap_or_default();
    let issuer_names = names(issuer);
    for name in names(jwks) {
        if !issuer_names.contains(&name) {
            errs.push("jwks_uri", format!("uses {{{name}}}, which issuer does not: the keys must be the issuer's own"));
        }
    }
}

/// Every template name is declared, and a template whose host is variable
/// has `allowed_hosts` to be checked against.
fn check_template_names(errs: &mut ValidationErrors, config: &ProviderConfig) {
    let declared = config_names(&config.params);
    let has_allowed_hosts = !config.allowed_hosts().is_empty();
    for (field, raw) in config.templated_fields() {
        let Ok(template) = UrlTemplate::parse(raw) else {
            if field == "params.region" {
                errs.push(field, "is not a {name} template");
            }
            continue;
        };
        for name in template.names() {
            if !declared.contains(name) {
                errs.push(
                    field,
                    format!(
                        "uses {{{name}}}, which params.connection_config_schema does not declare and no connection_config_from_* produces"
                    ),
                );
            }
        }
        let path_only = field == "params.region"
            || field == "user_info_endpoint" && config.user_info_endpoint.as_deref().is_some_and(is_relative_endpoint);
        if template.host_is_variable() && !path_only && !has_allowed_hosts {
            errs.push("params.allowed_hosts", format!("is required: {field} has a variable in its scheme or host"));
        }
    }
    let headers = config.params.get("extra_headers").and_then(Value::as_object);
    for (name, value) in headers.into_iter().flatten() {
        let Some(value) = value.as_str().filter(|v| is_template(v)) else { continue };
        let field = format!("params.extra_headers.{name}");
        match UrlTemplate::parse(value) {
            Err(e) => errs.push(field, e),
            Ok(template) => {
                for n in template.names().iter().filter(|n| !declared.contains(*n)) {
                    errs.push(
                        field.clone(),
                        format!("uses {{{n}}}, which params.connection_config_schema does not declare and no connection_config_from_* produces"),
                    );
                }
            }
        }
    }
}

/// Whether a `user_info_endpoint` is a path under `api_base_url` rather
/// than a URL (or a `{+url}` template) of its own.
pub fn is_relative_endpoint(endpoint: &str) -> bool {
    !(endpoint.starts_with("http://") || endpoint.starts_with("https://") || endpoint.starts_with('{'))
}

/// Whether `pem` is a PEM private key (RSA or PKCS #8); the key itself is
/// read when an assertion is signed.
pub fn looks_like_private_key(pem: &str) -> bool {
    let pem = pem.trim();
    (pem.starts_with("-----BEGIN PRIVATE KEY-----") || pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"))
        && pem.ends_with("PRIVATE KEY-----")
}

/// The `credential_schema` of `jwt_bearer` when the operator gives none: a
/// service-account key as Google issues it.
pub fn service_account_schema() -> Value {
    serde_json::json!({
        "type": "object",
        "required": ["client_email", "private_key", "token_uri"],
        "properties": {
            "client_email": {"type": "string", "title": "Service account e-mail", "minLength": 3},
            "private_key": {"type": "string", "title": "Private key (PEM)", "minLength": 64},
            "token_uri": {"type": "string", "title": "Token URI", "minLength": 8},
            "subject": {"type": "string", "title": "User to act as (optional)"}
        }
    })
}

/// RFC 9110 token characters.
pub fn is_header_name(h: &str) -> bool {
    !h.is_empty() && h.len() <= 256 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The type each known `params` key must have. Unknown keys are kept as they are.
fn check_known_params(errs: &mut ValidationErrors, params: &Map<String, Value>) {
    for (key, value) in params {
        let field = format!("params.{key}");
        match key.as_str() {
            "credential_schema" => check_credential_schema(errs, &field, value),
            "auth_strategy" => check_enum(errs, &field, value, &["header", "query_param"]),
            "algo" => check_enum(errs, &field, value, &["sha256", "sha1", "sha512"]),
            "encoding" => check_enum(errs, &field, value, &["hex", "base64"]),
            "header_name" => match value.as_str() {
                Some(h) if is_header_name(h) => {}
                _ => errs.push(field, "must be a valid HTTP header name"),
            },
            "value_prefix" | "credential_field" | "param_name" | "service" | "region" | "secret_field"
            | "scope_separator" => {
                if !value.is_string() {
                    errs.push(field, "must be a string");
                } else if key == "param_name" && value.as_str().is_some_and(str::is_empty) {
                    errs.push(field, "must not be empty");
                }
            }
            "skip_scope_on_auth" | "skip_scope_on_exchange" if !value.is_boolean() => {
                errs.push(field, "must be a boolean");
            }
            "connection_config_schema" => check_config_schema(errs, &field, value),
            "allowed_hosts" => match value.as_array() {
                Some(globs) if !globs.is_empty() && globs.len() <= 64 => {
                    for (i, g) in globs.iter().enumerate() {
                        match g.as_str().map(crate::template::check_host_glob) {
                            Some(Ok(())) => {}
                            Some(Err(m)) => errs.push(format!("{field}[{i}]"), m),
                            None => errs.push(format!("{field}[{i}]"), "must be a string"),
                        }
                    }
                }
                _ => errs.push(field, "must be a list of 1 to 64 host globs such as *.zendesk.com"),
            },
            "connection_config_from_token" | "connection_config_from_userinfo" => match value.as_object() {
                Some(map) => {
                    for (k, v) in map {
                        if !is_config_name(k) {
                            errs.push(format!("{field}.{k}"), "must be a name of letters, digits and '_'");
                        } else if !v.as_str().is_some_and(is_dotted_path) {
                            errs.push(format!("{field}.{k}"), "must be a dotted path such as team.id");
                        } else if v.as_str().and_then(|p| p.rsplit('.').next()).is_some_and(is_secret_field) {
                            errs.push(
                                format!("{field}.{k}"),
                                "points at a secret: a connection's configuration is not secret and is shown to callers",
                            );
                        }
                    }
                }
                None => errs.push(field, "must be an object of config name to dotted path"),
            },
            "connection_config_from_callback" => match value.as_array() {
                Some(list) => {
                    for (i, v) in list.iter().enumerate() {
                        match v.as_str() {
                            Some(n) if RESERVED_CALLBACK_PARAMS.contains(&n) => {
                                errs.push(format!("{field}[{i}]"), format!("'{n}' is part of the OAuth response"))
                            }
                            Some(n) if is_config_name(n) => {}
                            _ => errs.push(format!("{field}[{i}]"), "must be a name of letters, digits and '_'"),
                        }
                    }
                }
                None => errs.push(field, "must be a list of callback query parameter names"),
            },
            "token_request_format" => check_enum(errs, &field, value, &["form", "json"]),
            "token_response" => match value.as_object() {
                Some(map) => {
                    for (k, v) in map {
                        if !TOKEN_RESPONSE_FIELDS.contains(&k.as_str()) {
                            errs.push(
                                format!("{field}.{k}"),
                                format!("must be one of {}", TOKEN_RESPONSE_FIELDS.join(", ")),
                            );
                        } else if !v.as_str().is_some_and(is_dotted_path) {
                            errs.push(format!("{field}.{k}"), "must be a dotted path such as authed_user.access_token");
                        }
                    }
                }
                None => errs.push(field, "must be an object of token field to dotted path"),
            },
            "extra_headers" | "credential_headers" => match value.as_object() {
                Some(map) if map.len() <= 32 => {
                    for (name, v) in map {
                        if let Err(m) = check_added_header(name) {
                            errs.push(format!("{field}.{name}"), m);
                        } else if !v.as_str().is_some_and(|v| is_header_text(v) && !v.is_empty()) {
                            let what = if key == "extra_headers" { "header value" } else { "captured field name" };
                            errs.push(
                                format!("{field}.{name}"),
                                format!("must be a {what}: 1 to 4096 characters, no control characters"),
                            );
                        }
                    }
                }
                _ => errs.push(field, "must be an object of at most 32 header names to strings"),
            },
            "credential_query_params" => match value.as_object() {
                Some(map) if !map.is_empty() && map.len() <= 32 => {
                    for (name, v) in map {
                        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
                            errs.push(format!("{field}.{name}"), "must be a query parameter name");
                        } else if !v.as_str().is_some_and(|v| !v.is_empty() && v.len() <= 256) {
                            errs.push(format!("{field}.{name}"), "must name a captured field");
                        }
                    }
                }
                _ => errs.push(field, "must be an object of 1 to 32 query parameter names to captured fields"),
            },
            "authorization_params" | "token_params" | "refresh_params" => match value.as_object() {
                Some(map) => {
                    for (k, v) in map {
                        if !(v.is_string() || v.is_number() || v.is_boolean()) {
                            errs.push(format!("{field}.{k}"), "must be a string, number or boolean");
                        }
                    }
                }
                None => errs.push(field, "must be an object of string values"),
            },
            _ => {}
        }
    }
}

/// Token-answer fields that hold secrets: never copied into a connection's
/// configuration, which is shown to callers.
fn is_secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["access_token", "refresh_token", "id_token", "client_secret", "password", "secret", "api_key", "private_key"]
        .iter()
        .any(|s| name == *s || name.ends_with(&format!("_{s}")))
        || name.contains("token") && !name.ends_with("_type") && !name.ends_with("_url")
}

/// What `params.token_response` may point at.
const TOKEN_RESPONSE_FIELDS: [&str; 6] =
    ["access_token", "refresh_token", "expires_in", "scope", "token_type", "id_token"];

/// Headers that describe one hop or the framing of a request, not the
/// request itself: hop-by-hop headers (RFC 9110 §7.6.1), `Host`,
/// `Content-Length` and `Expect`. A provider may not add them to every
/// request, and a proxy does not pass them on.
pub const HOP_HEADERS: [&str; 12] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
];

/// A header name `extra_headers` or `credential_headers` may set.
fn check_added_header(name: &str) -> Result<(), String> {
    if !is_header_name(name) {
        return Err("must be a valid HTTP header name".into());
    }
    if HOP_HEADERS.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(format!("'{name}' is a hop-by-hop or framing header, which a provider cannot set"));
    }
    Ok(())
}

/// Text a header value can hold: no control characters (so no CR or LF),
/// at most 4096 bytes.
fn is_header_text(v: &str) -> bool {
    v.len() <= 4096 && !v.chars().any(|c| c.is_control() && c != '\t')
}

/// Query parameters of the callback that are the OAuth response itself.
const RESERVED_CALLBACK_PARAMS: [&str; 6] = ["code", "state", "error", "error_description", "error_uri", "iss"];

/// A connection configuration name: what `{name}` templates can use.
fn is_config_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `a.b.c`: non-empty segments without spaces.
fn is_dotted_path(p: &str) -> bool {
    !p.is_empty() && p.len() <= 256 && p.split('.').all(|s| !s.is_empty() && !s.chars().any(char::is_whitespace))
}

/// `connection_config_schema`: a JSON Schema whose property names can be
/// used in templates.
fn check_config_schema(errs: &mut ValidationErrors, field: &str, schema: &Value) {
    check_credential_schema(errs, field, schema);
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for name in props.keys() {
            if !is_config_name(name) {
                errs.push(format!("{field}.properties.{name}"), "must be a name of letters, digits and '_'");
            }
        }
    }
}

fn check_enum(errs: &mut ValidationErrors, field: &str, value: &Value, allowed: &[&str]) {
    if !value.as_str().is_some_and(|v| allowed.contains(&v)) {
        errs.push(field, format!("must be one of {}", allowed.join(", ")));
    }
}

/// `credential_schema` must be an object schema that is itself valid JSON Schema.
fn check_credential_schema(errs: &mut ValidationErrors, field: &str, schema: &Value) {
    if !schema.is_object() {
        errs.push(field, "must be a JSON Schema object");
        return;
    }
    if let Err(e) = jsonschema::meta::validate(schema) {
        errs.push(field, format!("is not a valid JSON Schema: {e}"));
        return;
    }
    if let Err(e) = jsonschema::validator_for(schema) {
        errs.push(field, format!("is not a usable JSON Schema: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validate(v: Value) -> Result<ValidatedProvider, ValidationErrors> {
        ProviderInput::from_json(v)?.validate(false)
    }

    fn fields(e: ValidationErrors) -> Vec<String> {
        e.0.into_iter().map(|f| f.field).collect()
    }

    #[test]
    fn names_follow_the_pattern_and_reserved_words_are_refused() {
        for ok in ["github", "google-workspace", "a", "bedrock-us-east", "x.y_z", "0abc"] {
            assert!(ProviderName::parse(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in ["", "GitHub", "-x", ".x", "a b", "metadata", "by-name", long.as_str(), "é"] {
            assert!(ProviderName::parse(bad).is_err(), "{bad}");
        }
        assert!(ProviderName::parse("123e4567-e89b-12d3-a456-426614174000").is_err());
    }

    #[test]
    fn auth_type_accepts_header_alias() {
        assert_eq!(AuthType::parse("header"), Some(AuthType::ApiKey));
        assert_eq!(AuthType::parse("hmac_payload"), Some(AuthType::HmacPayload));
        assert_eq!(AuthType::parse("saml"), None);
        let v = validate(json!({"name":"k","auth_type":"header","params":{"credential_schema":{"type":"object"}}}))
            .unwrap();
        assert_eq!(v.config.auth_type, AuthType::ApiKey);
    }

    #[test]
    fn oauth2_needs_client_and_endpoints_or_discovery() {
        let e = validate(json!({"name":"g","auth_type":"oauth2"})).unwrap_err();
        assert_eq!(fields(e), ["client_id", "client_secret", "auth_url", "token_url"]);
        let e = validate(
            json!({"name":"g","auth_type":"oauth2","client_id":"c","client_secret":"s","enable_discovery":true}),
        )
        .unwrap_err();
        assert_eq!(fields(e), ["issuer"]);
        let ok = validate(json!({"name":"g","auth_type":"oauth2","client_id":"c","client_secret":"s",
            "auth_url":"https://x.example/a","token_url":"https://x.example/t","auth_header":"client_secret_basic"}));
        assert!(ok.is_ok());
        // An update that omits the secret keeps the stored one.
        let keep = ProviderInput::from_json(json!({"name":"g","auth_type":"oauth2","client_id":"c",
            "auth_url":"https://x.example/a","token_url":"https://x.example/t"}))
        .unwrap()
        .validate(true);
        assert!(matches!(keep.unwrap().secret, SecretChange::Keep));
    }

    #[test]
    fn outbound_urls_must_be_https_or_loopback() {
        let e = validate(json!({"name":"g","auth_type":"oauth2","client_id":"c","client_secret":"s",
            "auth_url":"http://evil.example/a","token_url":"http://127.0.0.1:9/t"}))
        .unwrap_err();
        assert_eq!(fields(e), ["auth_url"]);
    }

    #[test]
    fn static_types_need_a_valid_credential_schema() {
        let e = validate(json!({"name":"k","auth_type":"api_key"})).unwrap_err();
        assert_eq!(fields(e), ["params.credential_schema"]);
        let e = validate(json!({"name":"k","auth_type":"api_key","params":{"credential_schema":{"type":"nonsense"}}}))
            .unwrap_err();
        assert_eq!(fields(e), ["params.credential_schema"]);
        let e = validate(json!({"name":"k","auth_type":"api_key","params":{"credential_schema":"x"}})).unwrap_err();
        assert_eq!(fields(e), ["params.credential_schema"]);
    }

    #[test]
    fn sigv4_needs_service_and_region() {
        let e = validate(json!({"name":"b","auth_type":"aws_sigv4","params":{"credential_schema":{"type":"object"},"region":"us-east-1"}})).unwrap_err();
        assert_eq!(fields(e), ["params.service"]);
    }

    #[test]
    fn known_params_have_types_and_unknown_params_are_kept() {
        let e = validate(json!({"name":"h","auth_type":"hmac_payload","params":{
            "credential_schema":{"type":"object"},"algo":"md5","encoding":1,"skip_scope_on_auth":"yes",
            "authorization_params":{"prompt":{"x":1}},"header_name":"Bad Header"}}))
        .unwrap_err();
        let mut f = fields(e);
        f.sort();
        assert_eq!(
            f,
            [
                "params.algo",
                "params.authorization_params.prompt",
                "params.encoding",
                "params.header_name",
                "params.skip_scope_on_auth"
            ]
        );
        let ok = validate(json!({"name":"h","auth_type":"hmac_payload","params":{"credential_schema":{"type":"object"},"custom":{"a":1}}})).unwrap();
        assert_eq!(ok.config.params["custom"], json!({"a":1}));
    }

    #[test]
    fn unknown_fields_and_wrong_types_name_the_field() {
        let e = ProviderInput::from_json(json!({"name":"x","auth_type":"oauth2","client_secrt":"s"})).unwrap_err();
        assert!(e.0[0].message.contains("client_secrt"), "{e}");
        let e = ProviderInput::from_json(json!({"name":"x","auth_type":"oauth2","scopes":"openid"})).unwrap_err();
        assert_eq!(e.0[0].field, "scopes");
        let e = ProviderInput::from_json(json!([1])).unwrap_err();
        assert_eq!(e.0[0].field, "body");
    }

    #[test]
    fn profile_wrapper_is_accepted() {
        let v = ProviderInput::from_json(json!({"profile":{"name":"x","auth_type":"basic_auth"}})).unwrap();
        assert_eq!(v.name, "x");
    }

    #[test]
    fn a_key_set_belongs_to_its_issuer() {
        let base = |jwks: &str| {
            json!({"name": "t", "auth_type": "oauth2", "client_id": "c", "client_secret": "s",
                   "auth_url": "https://{domain}/authorize", "token_url": "https://{domain}/token",
                   "issuer": "https://{domain}", "jwks_uri": jwks,
                   "params": {"allowed_hosts": ["*.okta.com"], "connection_config_from_token": {"kid_host": "k"},
                              "connection_config_schema": {"type": "object", "properties": {"domain": {"type": "string"}}}}})
        };
        assert!(ProviderInput::from_json(base("https://{domain}/keys")).unwrap().validate(false).is_ok());
        let err = ProviderInput::from_json(base("https://{kid_host}/keys")).unwrap().validate(false).unwrap_err();
        assert!(err.0.iter().any(|e| e.field == "jwks_uri"), "{err:?}");
        let mut no_issuer = base("https://x.okta.com/keys");
        no_issuer.as_object_mut().unwrap().remove("issuer");
        let err = ProviderInput::from_json(no_issuer).unwrap().validate(false).unwrap_err();
        assert!(err.0.iter().any(|e| e.field == "jwks_uri"), "{err:?}");
    }

    #[test]
    fn changed_fields_lists_differences() {
        let a = validate(
            json!({"name":"k","auth_type":"api_key","scopes":["a"],"params":{"credential_schema":{"type":"object"}}}),
        )
        .unwrap()
        .config;
        let b = validate(json!({"name":"k","auth_type":"api_key","scopes":["b"],"category":"x","params":{"credential_schema":{"type":"object"}}})).unwrap().config;
        assert_eq!(a.changed_fields(&b), ["category", "scopes"]);
    }

    #[test]
    fn debug_of_input_hides_the_secret() {
        let i = ProviderInput::from_json(json!({"name":"x","auth_type":"oauth2","client_secret":"topsecret"})).unwrap();
        assert!(!format!("{i:?}").contains("topsecret"));
    }
}
