//! Strategy interpreters: `oauth2`, `header`, `query_param`, `basic_auth`,
//! `hmac_payload` (HMAC of the body) and `aws_sigv4` (with the `aws-sigv4`
//! crate, the AWS SDK's own signer).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::header::{HeaderName, HeaderValue};
use nexus_core::strategy::{Strategy, StrategyType};
use serde_json::{Map, Value};
use std::time::SystemTime;

/// Why a strategy could not be applied. Messages name fields, never values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BridgeError {
    #[error("credential field '{0}' is missing or empty")]
    MissingCredential(String),
    #[error("strategy config: {0}")]
    Config(String),
    #[error("request: {0}")]
    Request(String),
}

fn credential<'a>(creds: &'a Map<String, Value>, field: &str) -> Result<&'a str, BridgeError> {
    creds
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| BridgeError::MissingCredential(field.to_owned()))
}

fn set_header(req: &mut http::Request<Vec<u8>>, name: &str, value: &str) -> Result<(), BridgeError> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| BridgeError::Config(format!("'{name}' is not a header name")))?;
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| BridgeError::Request("credential is not a valid header value".into()))?;
    value.set_sensitive(true);
    req.headers_mut().insert(name, value);
    Ok(())
}

/// Signs `req` (whose body is already final) according to `strategy`.
pub fn apply(
    req: &mut http::Request<Vec<u8>>,
    strategy: &Strategy,
    creds: &Map<String, Value>,
) -> Result<(), BridgeError> {
    apply_at(req, strategy, creds, SystemTime::now())
}

/// [`apply`] at a given time (for SigV4 test vectors).
pub fn apply_at(
    req: &mut http::Request<Vec<u8>>,
    strategy: &Strategy,
    creds: &Map<String, Value>,
    now: SystemTime,
) -> Result<(), BridgeError> {
    match strategy.kind {
        StrategyType::Oauth2 => {
            let token = credential(creds, "access_token")?;
            set_header(req, "authorization", &format!("Bearer {token}"))
        }
        StrategyType::Header => {
            let value = credential(creds, strategy.get("credential_field").unwrap_or("api_key"))?;
            let prefix = strategy.config.get("value_prefix").and_then(Value::as_str).unwrap_or("");
            set_header(req, strategy.get("header_name").unwrap_or("Authorization"), &format!("{prefix}{value}"))
        }
        StrategyType::QueryParam => {
            let value = credential(creds, strategy.get("credential_field").unwrap_or("api_key"))?;
            let name =
                strategy.get("param_name").ok_or_else(|| BridgeError::Config("param_name is required".into()))?;
            let mut url = url::Url::parse(&req.uri().to_string()).map_err(|e| BridgeError::Request(e.to_string()))?;
            url.query_pairs_mut().append_pair(name, value);
            *req.uri_mut() =
                url.as_str().parse().map_err(|_| BridgeError::Request("could not rebuild the URL".into()))?;
            Ok(())
        }
        StrategyType::BasicAuth => {
            let user = credential(creds, strategy.get("username_field").unwrap_or("username"))?;
            let pass = credential(creds, strategy.get("password_field").unwrap_or("password"))?;
            set_header(req, "authorization", &format!("Basic {}", STANDARD.encode(format!("{user}:{pass}"))))
        }
        StrategyType::HmacPayload => {
            let secret = credential(creds, strategy.get("secret_field").unwrap_or("api_secret"))?;
            let mac = hmac_bytes(strategy.get("algo").unwrap_or("sha256"), secret.as_bytes(), req.body())?;
            let encoded = match strategy.get("encoding").unwrap_or("hex") {
                "hex" => hex::encode(mac),
                "base64" => STANDARD.encode(mac),
                other => return Err(BridgeError::Config(format!("unsupported encoding '{other}'"))),
            };
            let prefix = strategy.get("value_prefix").unwrap_or("");
            let header =
                strategy.get("header_name").ok_or_else(|| BridgeError::Config("header_name is required".into()))?;
            set_header(req, header, &format!("{prefix}{encoded}"))
        }
        StrategyType::AwsSigv4 => sigv4(req, strategy, creds, now),
    }
}

fn hmac_bytes(algo: &str, key: &[u8], body: &[u8]) -> Result<Vec<u8>, BridgeError> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], body: &[u8]) -> Vec<u8> {
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }
    match algo {
        "sha256" => Ok(run::<Hmac<sha2::Sha256>>(key, body)),
        "sha1" => Ok(run::<Hmac<sha1::Sha1>>(key, body)),
        "sha512" => Ok(run::<Hmac<sha2::Sha512>>(key, body)),
        other => Err(BridgeError::Config(format!("unsupported algo '{other}'"))),
    }
}

fn sigv4(
    req: &mut http::Request<Vec<u8>>,
    strategy: &Strategy,
    creds: &Map<String, Value>,
    now: SystemTime,
) -> Result<(), BridgeError> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;
    let access_key = credential(creds, "access_key")?;
    let secret_key = credential(creds, "secret_key")?;
    let session_token = creds.get("session_token").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    let service = strategy.get("service").ok_or_else(|| BridgeError::Config("service is required".into()))?;
    let region = strategy.get("region").unwrap_or("us-east-1");
    let identity = aws_credential_types::Credentials::new(access_key, secret_key, session_token, None, "nexus").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| BridgeError::Config(e.to_string()))?
        .into();
    let uri = req.uri().to_string();
    let headers: Vec<(&str, &str)> =
        req.headers().iter().filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v))).collect();
    let signable =
        SignableRequest::new(req.method().as_str(), &uri, headers.into_iter(), SignableBody::Bytes(req.body()))
            .map_err(|e| BridgeError::Request(e.to_string()))?;
    let (instructions, _signature) =
        sign(signable, &params).map_err(|e| BridgeError::Request(e.to_string()))?.into_parts();
    instructions.apply_to_request_http1x(req);
    Ok(())
}
