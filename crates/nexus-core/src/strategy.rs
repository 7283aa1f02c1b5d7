//! Strategies: how an agent applies a connection's credentials to a request
//! (SPEC section 5). Nexus derives the strategy from the provider's
//! configuration; the Bridge interprets it. The defaults follow the seeds and
//! the reference Bridge: `header` → `Authorization: Bearer <api_key>`,
//! `query_param` → `?api_key=`, `hmac_payload` → hex HMAC-SHA256 of the body
//! in `X-Signature`, `aws_sigv4` region `us-east-1`.

use crate::provider::{AuthType, ProviderConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Header name → value: `params.extra_headers` (static headers every signed
/// request carries, expanded for the connection by the Gateway), or
/// `params.credential_headers` (header → captured field).
pub type HeaderMap = BTreeMap<String, String>;

/// The strategy names of the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StrategyType {
    Oauth2,
    Header,
    QueryParam,
    BasicAuth,
    AwsSigv4,
    HmacPayload,
}

impl StrategyType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyType::Oauth2 => "oauth2",
            StrategyType::Header => "header",
            StrategyType::QueryParam => "query_param",
            StrategyType::BasicAuth => "basic_auth",
            StrategyType::AwsSigv4 => "aws_sigv4",
            StrategyType::HmacPayload => "hmac_payload",
        }
    }
}

// Every default of every strategy is here, once: `strategy_for` starts from
// these (and picks the prefix by header name, `value_prefix` below). A
// strategy read from the wire without a field gets its struct's default
// here; the Gateway always sends every field.

/// `oauth2`: the access token as a bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct BearerConfig {
    pub header_name: String,
    pub value_prefix: String,
    pub credential_field: String,
    /// Static headers every signed request carries (`params.extra_headers`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = HashMap<String, String>))]
    pub extra_headers: HeaderMap,
}

impl Default for BearerConfig {
    fn default() -> Self {
        BearerConfig {
            header_name: "Authorization".into(),
            value_prefix: "Bearer ".into(),
            credential_field: "access_token".into(),
            extra_headers: HeaderMap::new(),
        }
    }
}

/// `header`: a captured key in a header (api_key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct HeaderConfig {
    pub header_name: String,
    /// Defaults to `Bearer ` when the header is `Authorization`, else empty.
    pub value_prefix: String,
    pub credential_field: String,
    /// Header → captured field, for APIs that want several secrets
    /// (`params.credential_headers`); when given, they replace the one header.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = HashMap<String, String>))]
    pub credential_headers: HeaderMap,
    /// Static headers every signed request carries (`params.extra_headers`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = HashMap<String, String>))]
    pub extra_headers: HeaderMap,
}

impl Default for HeaderConfig {
    fn default() -> Self {
        HeaderConfig {
            header_name: "Authorization".into(),
            value_prefix: String::new(),
            credential_field: "api_key".into(),
            credential_headers: HeaderMap::new(),
            extra_headers: HeaderMap::new(),
        }
    }
}

/// `query_param`: a captured key appended to the query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct QueryParamConfig {
    pub param_name: String,
    pub credential_field: String,
    /// Query parameter → captured field (`params.credential_query_params`);
    /// when given, they replace the one parameter.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = HashMap<String, String>))]
    pub credential_query_params: HeaderMap,
    /// Static headers every signed request carries (`params.extra_headers`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = HashMap<String, String>))]
    pub extra_headers: HeaderMap,
}

impl Default for QueryParamConfig {
    fn default() -> Self {
        QueryParamConfig {
            param_name: "api_key".into(),
            credential_field: "api_key".into(),
            credential_query_params: HeaderMap::new(),
            extra_headers: HeaderMap::new(),
        }
    }
}

/// `basic_auth`: two captured fields as `Authorization: Basic`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct BasicAuthConfig {
    pub username_field: String,
    pub password_field: String,
    /// Static headers every signed request carries (`params.extra_headers`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = HashMap<String, String>))]
    pub extra_headers: HeaderMap,
}

impl Default for BasicAuthConfig {
    fn default() -> Self {
        BasicAuthConfig {
            username_field: "username".into(),
            password_field: "password".into(),
            extra_headers: HeaderMap::new(),
        }
    }
}

/// `aws_sigv4`: AWS Signature Version 4 with `access_key`, `secret_key` and
/// an optional `session_token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct AwsSigv4Config {
    /// Required: an empty service cannot sign.
    pub service: String,
    pub region: String,
    /// Static headers every signed request carries (`params.extra_headers`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = HashMap<String, String>))]
    pub extra_headers: HeaderMap,
}

impl Default for AwsSigv4Config {
    fn default() -> Self {
        AwsSigv4Config { service: String::new(), region: "us-east-1".into(), extra_headers: HeaderMap::new() }
    }
}

/// The HMAC of `hmac_payload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgo {
    #[default]
    Sha256,
    Sha1,
    Sha512,
}

/// How `hmac_payload` writes the MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Hex,
    Base64,
}

/// `hmac_payload`: an HMAC of the body in a header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct HmacConfig {
    pub header_name: String,
    pub algo: HmacAlgo,
    pub encoding: Encoding,
    pub secret_field: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_prefix: Option<String>,
    /// Static headers every signed request carries (`params.extra_headers`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = HashMap<String, String>))]
    pub extra_headers: HeaderMap,
}

impl Default for HmacConfig {
    fn default() -> Self {
        HmacConfig {
            header_name: "X-Signature".into(),
            algo: HmacAlgo::Sha256,
            encoding: Encoding::Hex,
            secret_field: "api_secret".into(),
            value_prefix: None,
            extra_headers: HeaderMap::new(),
        }
    }
}

/// `{"type": …, "config": {…}}`: how to apply credentials, with every
/// setting typed. A missing `config`, or a missing setting in it, takes the
/// defaults above.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", content = "config", rename_all = "snake_case", try_from = "RawStrategy")]
pub enum Strategy {
    Oauth2(BearerConfig),
    Header(HeaderConfig),
    QueryParam(QueryParamConfig),
    BasicAuth(BasicAuthConfig),
    AwsSigv4(AwsSigv4Config),
    HmacPayload(HmacConfig),
}

/// The wire form before its config is typed (`config` may be absent).
#[derive(Deserialize)]
struct RawStrategy {
    #[serde(rename = "type")]
    kind: StrategyType,
    #[serde(default)]
    config: Map<String, Value>,
}

impl TryFrom<RawStrategy> for Strategy {
    type Error = String;
    fn try_from(raw: RawStrategy) -> Result<Strategy, String> {
        Strategy::from_parts(raw.kind, raw.config)
    }
}

impl Strategy {
    /// A strategy of `kind` read from its wire `config`.
    pub fn from_parts(kind: StrategyType, config: Map<String, Value>) -> Result<Strategy, String> {
        fn read<T: serde::de::DeserializeOwned>(config: Map<String, Value>) -> Result<T, String> {
            serde_json::from_value(Value::Object(config))
                .map_err(|e| format!("strategy config: {}", crate::redact::serde_message(&e)))
        }
        Ok(match kind {
            StrategyType::Oauth2 => Strategy::Oauth2(read(config)?),
            StrategyType::Header => Strategy::Header(read(config)?),
            StrategyType::QueryParam => Strategy::QueryParam(read(config)?),
            StrategyType::BasicAuth => Strategy::BasicAuth(read(config)?),
            StrategyType::AwsSigv4 => Strategy::AwsSigv4(read(config)?),
            StrategyType::HmacPayload => Strategy::HmacPayload(read(config)?),
        })
    }

    pub fn kind(&self) -> StrategyType {
        match self {
            Strategy::Oauth2(_) => StrategyType::Oauth2,
            Strategy::Header(_) => StrategyType::Header,
            Strategy::QueryParam(_) => StrategyType::QueryParam,
            Strategy::BasicAuth(_) => StrategyType::BasicAuth,
            Strategy::AwsSigv4(_) => StrategyType::AwsSigv4,
            Strategy::HmacPayload(_) => StrategyType::HmacPayload,
        }
    }

    /// The static headers every request carries (`params.extra_headers`).
    pub fn extra_headers(&self) -> &HeaderMap {
        match self {
            Strategy::Oauth2(c) => &c.extra_headers,
            Strategy::Header(c) => &c.extra_headers,
            Strategy::QueryParam(c) => &c.extra_headers,
            Strategy::BasicAuth(c) => &c.extra_headers,
            Strategy::AwsSigv4(c) => &c.extra_headers,
            Strategy::HmacPayload(c) => &c.extra_headers,
        }
    }

    /// [`Strategy::extra_headers`], to expand them for a connection.
    pub fn extra_headers_mut(&mut self) -> &mut HeaderMap {
        match self {
            Strategy::Oauth2(c) => &mut c.extra_headers,
            Strategy::Header(c) => &mut c.extra_headers,
            Strategy::QueryParam(c) => &mut c.extra_headers,
            Strategy::BasicAuth(c) => &mut c.extra_headers,
            Strategy::AwsSigv4(c) => &mut c.extra_headers,
            Strategy::HmacPayload(c) => &mut c.extra_headers,
        }
    }

    /// The credential fields this strategy reads (to check a capture up front).
    pub fn required_fields(&self) -> Vec<String> {
        match self {
            Strategy::Oauth2(c) => vec![c.credential_field.clone()],
            Strategy::Header(c) if !c.credential_headers.is_empty() => c.credential_headers.values().cloned().collect(),
            Strategy::Header(c) => vec![c.credential_field.clone()],
            Strategy::QueryParam(c) if !c.credential_query_params.is_empty() => {
                c.credential_query_params.values().cloned().collect()
            }
            Strategy::QueryParam(c) => vec![c.credential_field.clone()],
            // The password may be empty when the credential schema allows it
            // (Greenhouse: the API key is the user name).
            Strategy::BasicAuth(c) => vec![c.username_field.clone()],
            Strategy::AwsSigv4(_) => vec!["access_key".into(), "secret_key".into()],
            Strategy::HmacPayload(c) => vec![c.secret_field.clone()],
        }
    }
}

fn param<'a>(p: &'a ProviderConfig, key: &str) -> Option<&'a str> {
    p.params.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn set(slot: &mut String, value: Option<&str>) {
    if let Some(v) = value {
        *slot = v.to_owned();
    }
}

/// A `params` object of string values (`extra_headers`, `credential_headers`,
/// `credential_query_params`); validation admits nothing else.
fn string_map(p: &ProviderConfig, key: &str) -> HeaderMap {
    let map = p.params.get(key).and_then(Value::as_object);
    map.into_iter().flatten().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned()))).collect()
}

/// `params.value_prefix`, or by default `Bearer ` for an `Authorization`
/// header and nothing for a custom one (Shopify's `X-Shopify-Access-Token`).
fn value_prefix(p: &ProviderConfig, header_name: &str) -> String {
    match p.params.get("value_prefix").and_then(Value::as_str) {
        Some(prefix) => prefix.to_owned(),
        None if header_name.eq_ignore_ascii_case("authorization") => "Bearer ".into(),
        None => String::new(),
    }
}

/// The strategy of a provider: the defaults, overridden by its `params`.
/// `extra_headers` are as registered (templates unexpanded): the Gateway
/// expands them for each connection.
pub fn strategy_for(p: &ProviderConfig) -> Strategy {
    let mut strategy = strategy_without_extras(p);
    *strategy.extra_headers_mut() = string_map(p, "extra_headers");
    strategy
}

fn strategy_without_extras(p: &ProviderConfig) -> Strategy {
    let query_param = || {
        let mut c = QueryParamConfig::default();
        set(&mut c.param_name, param(p, "param_name"));
        set(&mut c.credential_field, param(p, "credential_field"));
        c.credential_query_params = string_map(p, "credential_query_params");
        Strategy::QueryParam(c)
    };
    match p.auth_type {
        AuthType::Oauth2 | AuthType::Oauth2ClientCredentials | AuthType::JwtBearer => {
            let mut c = BearerConfig::default();
            set(&mut c.header_name, param(p, "header_name"));
            c.value_prefix = value_prefix(p, &c.header_name);
            Strategy::Oauth2(c)
        }
        AuthType::ApiKey if param(p, "auth_strategy") == Some("query_param") => query_param(),
        AuthType::QueryParam => query_param(),
        AuthType::ApiKey => {
            let mut c = HeaderConfig::default();
            set(&mut c.header_name, param(p, "header_name").or(p.auth_header.as_deref()));
            set(&mut c.credential_field, param(p, "credential_field"));
            // An `Authorization` header carries a scheme; a custom header the bare key.
            c.value_prefix = value_prefix(p, &c.header_name);
            c.credential_headers = string_map(p, "credential_headers");
            Strategy::Header(c)
        }
        AuthType::BasicAuth => {
            let mut c = BasicAuthConfig::default();
            set(&mut c.username_field, param(p, "username_field"));
            set(&mut c.password_field, param(p, "password_field"));
            Strategy::BasicAuth(c)
        }
        AuthType::AwsSigv4 => {
            let mut c = AwsSigv4Config::default();
            set(&mut c.service, param(p, "service"));
            set(&mut c.region, param(p, "region"));
            Strategy::AwsSigv4(c)
        }
        AuthType::HmacPayload => {
            let mut c = HmacConfig::default();
            set(&mut c.header_name, param(p, "header_name").or(p.auth_header.as_deref()));
            set(&mut c.secret_field, param(p, "secret_field"));
            // Validation admits only the known names.
            c.algo =
                param(p, "algo").and_then(|a| serde_json::from_value(Value::String(a.into())).ok()).unwrap_or_default();
            c.encoding = param(p, "encoding")
                .and_then(|e| serde_json::from_value(Value::String(e.into())).ok())
                .unwrap_or_default();
            c.value_prefix = param(p, "value_prefix").map(str::to_owned);
            Strategy::HmacPayload(c)
        }
    }
}

/// Checks that captured credentials carry every field the strategy reads.
pub fn check_credentials(strategy: &Strategy, credentials: &Map<String, Value>) -> Result<(), String> {
    let missing: Vec<String> = strategy
        .required_fields()
        .into_iter()
        .filter(|f| credentials.get(f).and_then(Value::as_str).is_none_or(str::is_empty))
        .map(|f| format!("credentials.{f}"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: required by the provider's {} strategy", missing.join(", "), strategy.kind().as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ProviderInput;
    use serde_json::json;

    fn provider(v: Value) -> ProviderConfig {
        ProviderInput::from_json(v).unwrap().validate(false).unwrap().config
    }

    fn schema() -> Value {
        json!({"type": "object"})
    }

    fn wire(s: &Strategy) -> Value {
        serde_json::to_value(s).unwrap()
    }

    #[test]
    fn api_key_defaults_to_bearer_authorization() {
        let s = strategy_for(&provider(
            json!({"name": "a", "auth_type": "api_key", "params": {"credential_schema": schema()}}),
        ));
        assert_eq!(
            wire(&s),
            json!({"type": "header", "config": {"header_name": "Authorization", "value_prefix": "Bearer ", "credential_field": "api_key"}})
        );
    }

    #[test]
    fn api_key_custom_header_has_no_prefix_and_query_strategy_is_honoured() {
        let s = strategy_for(&provider(
            json!({"name": "a", "auth_type": "header", "auth_header": "X-Api-Key", "params": {"credential_schema": schema()}}),
        ));
        assert_eq!(
            (wire(&s)["config"]["header_name"].clone(), wire(&s)["config"]["value_prefix"].clone()),
            (json!("X-Api-Key"), json!(""))
        );
        let q = strategy_for(&provider(
            json!({"name": "a", "auth_type": "api_key", "params": {"credential_schema": schema(), "auth_strategy": "query_param", "param_name": "key"}}),
        ));
        assert_eq!(q.kind(), StrategyType::QueryParam);
        assert_eq!(wire(&q)["config"]["param_name"], "key");
    }

    #[test]
    fn signing_types_take_params_with_defaults() {
        let h = strategy_for(&provider(
            json!({"name": "h", "auth_type": "hmac_payload", "params": {"credential_schema": schema(), "header_name": "X-Sig"}}),
        ));
        assert_eq!(
            wire(&h)["config"],
            json!({"header_name": "X-Sig", "algo": "sha256", "encoding": "hex", "secret_field": "api_secret"})
        );
        let a = strategy_for(&provider(
            json!({"name": "s", "auth_type": "aws_sigv4", "params": {"credential_schema": schema(), "service": "bedrock", "region": "eu-west-1"}}),
        ));
        assert_eq!(wire(&a)["config"], json!({"service": "bedrock", "region": "eu-west-1"}));
        let w = strategy_for(&provider(
            json!({"name": "w", "auth_type": "query_param", "params": {"credential_schema": schema(), "param_name": "api_token"}}),
        ));
        assert_eq!(wire(&w)["config"]["param_name"], "api_token");
    }

    #[test]
    fn the_wire_form_round_trips_and_missing_settings_take_the_same_defaults() {
        for auth_type in AuthType::ALL {
            let mut body = json!({"name": "p", "auth_type": auth_type.as_str(), "params": {"credential_schema": schema(), "service": "s3", "region": "eu-west-1"}});
            if auth_type.uses_token_endpoint() {
                body = json!({"name": "p", "auth_type": auth_type.as_str(), "client_id": "c", "client_secret": "s", "auth_url": "https://a.example/auth", "token_url": "https://a.example/token"});
            }
            let s = strategy_for(&provider(body));
            let back: Strategy = serde_json::from_value(wire(&s)).unwrap();
            assert_eq!(back, s);
        }
        let bare: Strategy = serde_json::from_value(json!({"type": "hmac_payload"})).unwrap();
        assert_eq!(bare, Strategy::HmacPayload(HmacConfig::default()));
        let partial: Strategy =
            serde_json::from_value(json!({"type": "query_param", "config": {"param_name": "k"}})).unwrap();
        assert_eq!(partial, Strategy::QueryParam(QueryParamConfig { param_name: "k".into(), ..Default::default() }));
        for bad in [
            json!({"type": "hmac_payload", "config": {"algo": "md5"}}),
            json!({"type": "header", "config": {"header_name": 7}}),
            json!({"type": "carrier_pigeon"}),
        ] {
            assert!(serde_json::from_value::<Strategy>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn captured_credentials_must_feed_the_strategy() {
        let s = strategy_for(&provider(
            json!({"name": "b", "auth_type": "basic_auth", "params": {"credential_schema": schema()}}),
        ));
        let ok: Map<String, Value> = serde_json::from_value(json!({"username": "u", "password": "p"})).unwrap();
        assert!(check_credentials(&s, &ok).is_ok());
        // The password may be empty (the credential schema decides); the user name may not.
        assert!(
            check_credentials(&s, &serde_json::from_value(json!({"username": "u", "password": ""})).unwrap()).is_ok()
        );
        let err = check_credentials(&s, &serde_json::from_value(json!({"password": "p"})).unwrap()).unwrap_err();
        assert!(err.contains("credentials.username") && err.contains("basic_auth strategy"), "{err}");
    }
}
