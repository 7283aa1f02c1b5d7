//! Strategies: how an agent applies a connection's credentials to a request
//! (SPEC section 5). Nexus derives the strategy from the provider's
//! configuration; the Bridge interprets it. The defaults follow the seeds and
//! the reference Bridge: `header` → `Authorization: Bearer <api_key>`,
//! `query_param` → `?api_key=`, `hmac_payload` → hex HMAC-SHA256 of the body
//! in `X-Signature`, `aws_sigv4` region `us-east-1`.

use crate::provider::{AuthType, ProviderConfig};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The strategy names of the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyType {
    Oauth2,
    Header,
    QueryParam,
    BasicAuth,
    AwsSigv4,
    HmacPayload,
}

/// `{"type": …, "config": {…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Strategy {
    #[serde(rename = "type")]
    pub kind: StrategyType,
    #[serde(default)]
    pub config: Map<String, Value>,
}

impl Strategy {
    /// A string setting of the config, if present and non-empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.config.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
    }

    /// The credential fields this strategy reads (to check a capture up front).
    pub fn required_fields(&self) -> Vec<String> {
        let field = |k: &str, d: &str| self.get(k).unwrap_or(d).to_owned();
        match self.kind {
            StrategyType::Oauth2 => vec!["access_token".into()],
            StrategyType::Header | StrategyType::QueryParam => vec![field("credential_field", "api_key")],
            StrategyType::BasicAuth => vec![field("username_field", "username"), field("password_field", "password")],
            StrategyType::AwsSigv4 => vec!["access_key".into(), "secret_key".into()],
            StrategyType::HmacPayload => vec![field("secret_field", "api_secret")],
        }
    }
}

fn param<'a>(p: &'a ProviderConfig, key: &str) -> Option<&'a str> {
    p.params.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The strategy of a provider, with every default filled in.
pub fn strategy_for(p: &ProviderConfig) -> Strategy {
    let credential_field = param(p, "credential_field").unwrap_or("api_key");
    match p.auth_type {
        AuthType::Oauth2 => Strategy {
            kind: StrategyType::Oauth2,
            config: obj(
                json!({"header_name": "Authorization", "value_prefix": "Bearer ", "credential_field": "access_token"}),
            ),
        },
        AuthType::ApiKey if param(p, "auth_strategy") == Some("query_param") => Strategy {
            kind: StrategyType::QueryParam,
            config: obj(
                json!({"param_name": param(p, "param_name").unwrap_or("api_key"), "credential_field": credential_field}),
            ),
        },
        AuthType::ApiKey => {
            let header = param(p, "header_name").or(p.auth_header.as_deref()).unwrap_or("Authorization");
            let default_prefix = if header.eq_ignore_ascii_case("authorization") { "Bearer " } else { "" };
            let prefix = p.params.get("value_prefix").and_then(Value::as_str).unwrap_or(default_prefix);
            Strategy {
                kind: StrategyType::Header,
                config: obj(
                    json!({"header_name": header, "value_prefix": prefix, "credential_field": credential_field}),
                ),
            }
        }
        AuthType::QueryParam => Strategy {
            kind: StrategyType::QueryParam,
            config: obj(
                json!({"param_name": param(p, "param_name").unwrap_or("api_key"), "credential_field": credential_field}),
            ),
        },
        AuthType::BasicAuth => Strategy {
            kind: StrategyType::BasicAuth,
            config: obj(json!({
                "username_field": param(p, "username_field").unwrap_or("username"),
                "password_field": param(p, "password_field").unwrap_or("password"),
            })),
        },
        AuthType::AwsSigv4 => Strategy {
            kind: StrategyType::AwsSigv4,
            config: obj(
                json!({"service": param(p, "service").unwrap_or_default(), "region": param(p, "region").unwrap_or("us-east-1")}),
            ),
        },
        AuthType::HmacPayload => {
            let mut config = obj(json!({
                "header_name": param(p, "header_name").or(p.auth_header.as_deref()).unwrap_or("X-Signature"),
                "algo": param(p, "algo").unwrap_or("sha256"),
                "encoding": param(p, "encoding").unwrap_or("hex"),
                "secret_field": param(p, "secret_field").unwrap_or("api_secret"),
            }));
            if let Some(prefix) = param(p, "value_prefix") {
                config.insert("value_prefix".into(), Value::String(prefix.to_owned()));
            }
            Strategy { kind: StrategyType::HmacPayload, config }
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
        Err(format!("{}: required by the provider's {:?} strategy", missing.join(", "), strategy.kind)
            .replace("Header", "header"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ProviderInput;

    fn provider(v: Value) -> ProviderConfig {
        ProviderInput::from_json(v).unwrap().validate(false).unwrap().config
    }

    fn schema() -> Value {
        json!({"type": "object"})
    }

    #[test]
    fn api_key_defaults_to_bearer_authorization() {
        let s = strategy_for(&provider(
            json!({"name": "a", "auth_type": "api_key", "params": {"credential_schema": schema()}}),
        ));
        assert_eq!(s.kind, StrategyType::Header);
        assert_eq!(s.config["header_name"], "Authorization");
        assert_eq!(s.config["value_prefix"], "Bearer ");
        assert_eq!(s.config["credential_field"], "api_key");
    }

    #[test]
    fn api_key_custom_header_has_no_prefix_and_query_strategy_is_honoured() {
        let s = strategy_for(&provider(
            json!({"name": "a", "auth_type": "header", "auth_header": "X-Api-Key", "params": {"credential_schema": schema()}}),
        ));
        assert_eq!(
            (s.config["header_name"].as_str(), s.config["value_prefix"].as_str()),
            (Some("X-Api-Key"), Some(""))
        );
        let q = strategy_for(&provider(
            json!({"name": "a", "auth_type": "api_key", "params": {"credential_schema": schema(), "auth_strategy": "query_param", "param_name": "key"}}),
        ));
        assert_eq!(q.kind, StrategyType::QueryParam);
        assert_eq!(q.config["param_name"], "key");
    }

    #[test]
    fn signing_types_take_params_with_defaults() {
        let h = strategy_for(&provider(
            json!({"name": "h", "auth_type": "hmac_payload", "params": {"credential_schema": schema(), "header_name": "X-Sig"}}),
        ));
        assert_eq!(
            h.config,
            obj(json!({"header_name": "X-Sig", "algo": "sha256", "encoding": "hex", "secret_field": "api_secret"}))
        );
        let a = strategy_for(&provider(
            json!({"name": "s", "auth_type": "aws_sigv4", "params": {"credential_schema": schema(), "service": "bedrock", "region": "eu-west-1"}}),
        ));
        assert_eq!(a.config, obj(json!({"service": "bedrock", "region": "eu-west-1"})));
        let w = strategy_for(&provider(
            json!({"name": "w", "auth_type": "query_param", "params": {"credential_schema": schema(), "param_name": "api_token"}}),
        ));
        assert_eq!(w.config["param_name"], "api_token");
    }

    #[test]
    fn captured_credentials_must_feed_the_strategy() {
        let s = strategy_for(&provider(
            json!({"name": "b", "auth_type": "basic_auth", "params": {"credential_schema": schema()}}),
        ));
        let ok = obj(json!({"username": "u", "password": "p"}));
        assert!(check_credentials(&s, &ok).is_ok());
        let err = check_credentials(&s, &obj(json!({"username": "u"}))).unwrap_err();
        assert!(err.contains("credentials.password"), "{err}");
    }
}
