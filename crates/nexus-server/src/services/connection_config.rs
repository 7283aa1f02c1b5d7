//! A connection's configuration (SPEC 10): the values a caller gives at
//! `POST /v1/request-connection`, checked against the provider's
//! `connection_config_schema` with its defaults filled in; the values learned
//! from the callback query and the token answer; and the provider's URL
//! templates expanded over them, every host checked before anything is sent.

use crate::error::ApiError;
use crate::services::capture::check_schema;
use nexus_core::provider::{config_names, ProviderConfig};
use nexus_core::template::UrlTemplate;
use nexus_core::wire::ErrorCode;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Largest `connection_config` accepted, serialized.
const MAX_CONFIG_BYTES: usize = 16 * 1024;
/// Longest value learned from the provider (callback query, token answer).
const MAX_LEARNED_LEN: usize = 2048;

/// The configuration a request gives, checked and with the schema's defaults
/// filled in; then every URL template that can be expanded with it is, so
/// that a hostile value is a `400` before anything is sent anywhere.
pub fn for_request(provider: &ProviderConfig, given: Option<Value>) -> Result<Map<String, Value>, ApiError> {
    let mut config = match given {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ApiError::bad_request("connection_config: must be a JSON object")),
    };
    if Value::Object(config.clone()).to_string().len() > MAX_CONFIG_BYTES {
        return Err(ApiError::bad_request("connection_config: must be at most 16 KiB"));
    }
    match provider.connection_config_schema() {
        None if !config.is_empty() => {
            return Err(ApiError::bad_request(format!(
                "connection_config: provider '{}' takes no connection configuration (it has no params.connection_config_schema)",
                provider.name
            )))
        }
        None => {}
        Some(schema) => {
            fill_defaults(schema, &mut config);
            let value = Value::Object(config.clone());
            check_schema(schema, &value, "connection_config", "the provider's connection_config_schema")?;
        }
    }
    let learnable = learned_names(provider);
    for (field, raw) in provider.templated_fields() {
        let Ok(template) = UrlTemplate::parse(raw) else { continue };
        if template.is_ready(&config) {
            expand_field(provider, field, raw, &config)
                .map_err(|m| ApiError::bad_request(format!("connection_config: {m}")))?;
        } else if let Some(name) = template.names().iter().find(|n| !config.contains_key(*n) && !learnable.contains(*n))
        {
            return Err(ApiError::bad_request(format!("connection_config.{name}: is required ({field} uses it)")));
        }
    }
    Ok(config)
}

/// Names whose values come from the provider during the connection.
fn learned_names(provider: &ProviderConfig) -> std::collections::BTreeSet<String> {
    let mut only_learned = provider.params.clone();
    only_learned.remove("connection_config_schema");
    config_names(&only_learned)
}

/// Top-level `default`s of the schema's properties, for names not given.
fn fill_defaults(schema: &Value, config: &mut Map<String, Value>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            if let Some(default) = prop.get("default") {
                config.entry(name.clone()).or_insert_with(|| default.clone());
            }
        }
    }
}

/// One URL field expanded for this connection; the error names the field.
pub fn expand_field(
    provider: &ProviderConfig,
    field: &str,
    raw: &str,
    config: &Map<String, Value>,
) -> Result<String, String> {
    if field == "user_info_endpoint" {
        // A path is under `api_base_url`: expanded (and checked) joined to it,
        // once every value the two need is known.
        let Some(joined) = user_info_template(provider) else { return Ok(String::new()) };
        if !provider.is_ready(&joined, config) {
            return Ok(String::new());
        }
        return provider.expand(&joined, config).map_err(|e| format!("{field} {e}"));
    }
    if field == "params.region" {
        return UrlTemplate::parse(raw)
            .map_err(|e| format!("{field} {e}"))?
            .expand_text(config)
            .map_err(|e| format!("{field} {e}"));
    }
    provider.expand(raw, config).map_err(|e| format!("{field} {e}"))
}

/// Every templated field that can be expanded now, checked: after the
/// provider taught the connection its values, one that points elsewhere
/// fails the connection (`provider_misconfigured`).
pub fn check_all(provider: &ProviderConfig, config: &Map<String, Value>) -> Result<(), String> {
    for (field, raw) in provider.templated_fields() {
        if provider.is_ready(raw, config) {
            expand_field(provider, field, raw, config)?;
        } else if field != "refresh_url" && field != "revocation_url" && field != "issuer" {
            return Err(format!("{field} needs a value the provider did not give"));
        }
    }
    Ok(())
}

/// Adds the callback query parameters `connection_config_from_callback`
/// names (QuickBooks' `realmId`).
pub fn learn_from_callback(
    provider: &ProviderConfig,
    query: &HashMap<String, String>,
    config: &mut Map<String, Value>,
) {
    let names = provider.params.get("connection_config_from_callback").and_then(Value::as_array);
    for name in names.into_iter().flatten().filter_map(Value::as_str) {
        if let Some(v) = query.get(name).filter(|v| v.len() <= MAX_LEARNED_LEN && !v.chars().any(char::is_control)) {
            config.insert(name.to_owned(), Value::String(v.clone()));
        }
    }
}

/// Adds the values `params.<key>` (config name → dotted path) picks out of
/// `answer` (the token answer, or the user-info answer).
pub fn learn_from(provider: &ProviderConfig, key: &str, answer: &Map<String, Value>, config: &mut Map<String, Value>) {
    let Some(paths) = provider.params.get(key).and_then(Value::as_object) else { return };
    for (name, path) in paths {
        let Some(path) = path.as_str() else { continue };
        let mut at = path.split('.');
        let first = at.next().and_then(|k| answer.get(k));
        let found = at.try_fold(first, |v, k| Some(v.and_then(|v| v.get(k)))).flatten();
        match found {
            Some(Value::String(s)) if s.len() <= MAX_LEARNED_LEN && !s.chars().any(char::is_control) => {
                config.insert(name.clone(), Value::String(s.clone()));
            }
            Some(v @ (Value::Number(_) | Value::Bool(_))) => {
                config.insert(name.clone(), v.clone());
            }
            _ => {}
        }
    }
}

/// `user_info_endpoint` for this connection: an absolute URL (template) as
/// it is, a path under `api_base_url`; both expanded and checked. `None`
/// without both.
pub fn user_info_url(provider: &ProviderConfig, config: &Map<String, Value>) -> Result<Option<String>, String> {
    let Some(raw) = user_info_template(provider) else { return Ok(None) };
    let url = provider.expand(&raw, config).map_err(|e| format!("user_info_endpoint {e}"))?;
    nexus_core::url_policy::parse_outbound_url(&url).map_err(|e| format!("user_info_endpoint: {e}"))?;
    Ok(Some(url))
}

/// `user_info_endpoint` as an absolute URL (template): as it is, or a path
/// joined to `api_base_url`. `None` without both.
fn user_info_template(provider: &ProviderConfig) -> Option<String> {
    let endpoint = provider.user_info_endpoint.as_deref()?;
    if !nexus_core::provider::is_relative_endpoint(endpoint) {
        return Some(endpoint.to_owned());
    }
    let base = provider.api_base_url.as_deref()?;
    Some(format!("{}/{}", base.trim_end_matches('/'), endpoint.trim_start_matches('/')))
}

/// The API root of this connection (`api_base_url` expanded).
pub fn api_base_url(provider: &ProviderConfig, config: &Map<String, Value>) -> Result<Option<String>, String> {
    provider
        .api_base_url
        .as_deref()
        .map(|raw| provider.expand(raw, config).map_err(|e| format!("api_base_url {e}")))
        .transpose()
}

/// A stored configuration that no longer expands (the provider changed):
/// `409 provider_misconfigured`, naming the field.
pub fn misconfigured(message: String) -> ApiError {
    ApiError::new(ErrorCode::ProviderMisconfigured, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_core::ProviderInput;
    use serde_json::json;

    fn zendesk() -> ProviderConfig {
        ProviderInput::from_json(json!({
            "name": "zendesk", "auth_type": "oauth2", "client_id": "c", "client_secret": "s",
            "auth_url": "https://{subdomain}.zendesk.com/oauth/authorizations/new",
            "token_url": "https://{subdomain}.zendesk.com/oauth/tokens",
            "api_base_url": "https://{subdomain}.zendesk.com/api/v2",
            "params": {
                "allowed_hosts": ["*.zendesk.com"],
                "connection_config_schema": {"type": "object", "required": ["subdomain"],
                    "properties": {"subdomain": {"type": "string"}, "locale": {"type": "string", "default": "en"}}}
            }
        }))
        .unwrap()
        .validate(false)
        .unwrap()
        .config
    }

    #[test]
    fn defaults_are_filled_and_the_schema_is_enforced() {
        let c = for_request(&zendesk(), Some(json!({"subdomain": "acme"}))).unwrap();
        assert_eq!(Value::Object(c), json!({"subdomain": "acme", "locale": "en"}));
        let e = for_request(&zendesk(), Some(json!({}))).unwrap_err();
        assert!(e.message.contains("connection_config.subdomain"), "{}", e.message);
        let e = for_request(&zendesk(), Some(json!({"subdomain": 3}))).unwrap_err();
        assert!(e.message.contains("connection_config.subdomain"), "{}", e.message);
        let e = for_request(&zendesk(), Some(json!([1]))).unwrap_err();
        assert!(e.message.starts_with("connection_config:"), "{}", e.message);
    }

    #[test]
    fn learned_values_are_picked_by_dotted_paths() {
        let p = ProviderInput::from_json(json!({"name": "s", "auth_type": "oauth2", "client_id": "c",
            "client_secret": "s", "auth_url": "https://a.example/a", "token_url": "https://a.example/t",
            "params": {"connection_config_from_token": {"instance_url": "instance_url", "team_id": "team.id", "x": "no.such"}}}))
        .unwrap()
        .validate(false)
        .unwrap()
        .config;
        let answer = json!({"instance_url": "https://acme.my.salesforce.com", "team": {"id": "T1"}, "no": 1});
        let mut config = Map::new();
        learn_from(&p, "connection_config_from_token", answer.as_object().unwrap(), &mut config);
        assert_eq!(Value::Object(config), json!({"instance_url": "https://acme.my.salesforce.com", "team_id": "T1"}));
    }
}
