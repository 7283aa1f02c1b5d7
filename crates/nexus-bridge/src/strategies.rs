//! Strategy interpreters: `oauth2`, `header`, `query_param`, `basic_auth`,
//! `hmac_payload` (HMAC of the body) and `aws_sigv4` (with the `aws-sigv4`
//! crate, the AWS SDK's own signer).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::header::{HeaderName, HeaderValue};
use nexus_core::strategy::{Encoding, HmacAlgo, Strategy};
use serde_json::{Map, Value};
use std::time::SystemTime;

/// Why a strategy could not be applied. Messages name fields, never values.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
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

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), BridgeError> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| BridgeError::Config(format!("'{name}' is not a header name")))?;
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| BridgeError::Request("credential is not a valid header value".into()))?;
    value.set_sensitive(true);
    Ok((name, value))
}

fn set_header<B>(req: &mut http::Request<B>, name: &str, value: &str) -> Result<(), BridgeError> {
    let (name, value) = header(name, value)?;
    req.headers_mut().insert(name, value);
    Ok(())
}

/// The headers that sign every request alike, for the strategies whose
/// signature does not depend on the request (`oauth2`, `header`,
/// `basic_auth`), with the strategy's `extra_headers`; `None` for the
/// others. A proxy computes them once per set of credentials rather than
/// once per request.
pub fn static_headers(strategy: &Strategy, creds: &Map<String, Value>) -> Result<Option<Vec<Header>>, BridgeError> {
    let signing: Vec<Header> = match strategy {
        Strategy::Oauth2(c) => {
            vec![header(&c.header_name, &format!("{}{}", c.value_prefix, credential(creds, &c.credential_field)?))?]
        }
        Strategy::Header(c) if !c.credential_headers.is_empty() => c
            .credential_headers
            .iter()
            .map(|(name, field)| header(name, credential(creds, field)?))
            .collect::<Result<_, _>>()?,
        Strategy::Header(c) => {
            vec![header(&c.header_name, &format!("{}{}", c.value_prefix, credential(creds, &c.credential_field)?))?]
        }
        Strategy::BasicAuth(c) => {
            let user = credential(creds, &c.username_field)?;
            // An empty or absent password is allowed (Greenhouse): the
            // capture's schema decides whether one is required.
            let pass = creds.get(&c.password_field).and_then(Value::as_str).unwrap_or("");
            vec![header("authorization", &format!("Basic {}", STANDARD.encode(format!("{user}:{pass}"))))?]
        }
        Strategy::QueryParam(_) | Strategy::HmacPayload(_) | Strategy::AwsSigv4(_) => return Ok(None),
    };
    // The extra headers first: a provider's own header never gives way to one.
    let mut headers = extra_headers(strategy)?;
    headers.extend(signing);
    Ok(Some(headers))
}

/// A header a strategy sets.
pub type Header = (HeaderName, HeaderValue);

/// The strategy's `extra_headers` (`Notion-Version`, `anthropic-version`):
/// not secret, set on every request.
fn extra_headers(strategy: &Strategy) -> Result<Vec<Header>, BridgeError> {
    strategy
        .extra_headers()
        .iter()
        .map(|(name, value)| {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| BridgeError::Config(format!("'{name}' is not a header name")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| BridgeError::Config(format!("the value of extra header '{name}' is not header text")))?;
            Ok((name, value))
        })
        .collect()
}

/// Signs `req` (whose body is already final) according to `strategy`.
pub fn apply<B: AsRef<[u8]>>(
    req: &mut http::Request<B>,
    strategy: &Strategy,
    creds: &Map<String, Value>,
) -> Result<(), BridgeError> {
    apply_at(req, strategy, creds, SystemTime::now())
}

/// [`apply`] at a given time (for SigV4 test vectors).
pub fn apply_at<B: AsRef<[u8]>>(
    req: &mut http::Request<B>,
    strategy: &Strategy,
    creds: &Map<String, Value>,
    now: SystemTime,
) -> Result<(), BridgeError> {
    if let Some(headers) = static_headers(strategy, creds)? {
        for (name, value) in headers {
            req.headers_mut().insert(name, value);
        }
        return Ok(());
    }
    // Set before signing: SigV4 signs them too.
    for (name, value) in extra_headers(strategy)? {
        req.headers_mut().insert(name, value);
    }
    match strategy {
        Strategy::QueryParam(c) => {
            let pairs: Vec<(&str, &str)> = if c.credential_query_params.is_empty() {
                if c.param_name.is_empty() {
                    return Err(BridgeError::Config("param_name is required".into()));
                }
                vec![(c.param_name.as_str(), credential(creds, &c.credential_field)?)]
            } else {
                c.credential_query_params
                    .iter()
                    .map(|(param, field)| Ok((param.as_str(), credential(creds, field)?)))
                    .collect::<Result<_, BridgeError>>()?
            };
            // Appended to the query as sent, form-encoded, the rest of the URL untouched.
            let mut parts = req.uri().clone().into_parts();
            let (path, query) =
                parts.path_and_query.as_ref().map_or(("/", ""), |pq| (pq.path(), pq.query().unwrap_or("")));
            let mut query = url::form_urlencoded::Serializer::for_suffix(query.to_owned(), 0);
            query.extend_pairs(pairs);
            let path_and_query = format!("{path}?{}", query.finish());
            parts.path_and_query =
                Some(path_and_query.parse().map_err(|_| BridgeError::Request("could not rebuild the URL".into()))?);
            *req.uri_mut() =
                http::Uri::from_parts(parts).map_err(|_| BridgeError::Request("could not rebuild the URL".into()))?;
            Ok(())
        }
        Strategy::HmacPayload(c) => {
            let secret = credential(creds, &c.secret_field)?;
            let mac = hmac_bytes(c.algo, secret.as_bytes(), req.body().as_ref());
            let encoded = match c.encoding {
                Encoding::Hex => hex::encode(mac),
                Encoding::Base64 => STANDARD.encode(mac),
            };
            let prefix = c.value_prefix.as_deref().unwrap_or("");
            set_header(req, &c.header_name, &format!("{prefix}{encoded}"))
        }
        Strategy::AwsSigv4(c) => sigv4(req, &c.service, &c.region, creds, now),
        Strategy::Oauth2(_) | Strategy::Header(_) | Strategy::BasicAuth(_) => Ok(()), // signed above
    }
}

fn hmac_bytes(algo: HmacAlgo, key: &[u8], body: &[u8]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], body: &[u8]) -> Vec<u8> {
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }
    match algo {
        HmacAlgo::Sha256 => run::<Hmac<sha2::Sha256>>(key, body),
        HmacAlgo::Sha1 => run::<Hmac<sha1::Sha1>>(key, body),
        HmacAlgo::Sha512 => run::<Hmac<sha2::Sha512>>(key, body),
    }
}

/// The AWS SDKs' settings for `service`. S3 differs from every other service:
/// it signs the path exactly as sent (no second percent-encoding, no
/// dot-segment normalisation, since object keys may contain both) and requires
/// the payload hash in an `x-amz-content-sha256` header; without that header
/// S3 refuses the request.
fn signing_settings(service: &str) -> aws_sigv4::http_request::SigningSettings {
    use aws_sigv4::http_request::{
        PayloadChecksumKind, PercentEncodingMode, SigningSettings, UriPathNormalizationMode,
    };
    let mut settings = SigningSettings::default();
    if service == "s3" {
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    settings
}

fn sigv4<B: AsRef<[u8]>>(
    req: &mut http::Request<B>,
    service: &str,
    region: &str,
    creds: &Map<String, Value>,
    now: SystemTime,
) -> Result<(), BridgeError> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest};
    use aws_sigv4::sign::v4;
    let access_key = credential(creds, "access_key")?;
    let secret_key = credential(creds, "secret_key")?;
    let session_token = creds.get("session_token").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    if service.is_empty() {
        return Err(BridgeError::Config("service is required".into()));
    }
    let identity = aws_credential_types::Credentials::new(access_key, secret_key, session_token, None, "nexus").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(now)
        .settings(signing_settings(service))
        .build()
        .map_err(|e| BridgeError::Config(e.to_string()))?
        .into();
    let uri = req.uri().to_string();
    let headers: Vec<(&str, &str)> =
        req.headers().iter().filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v))).collect();
    let signable = SignableRequest::new(
        req.method().as_str(),
        &uri,
        headers.into_iter(),
        SignableBody::Bytes(req.body().as_ref()),
    )
    .map_err(|e| BridgeError::Request(e.to_string()))?;
    let (instructions, _signature) =
        sign(signable, &params).map_err(|e| BridgeError::Request(e.to_string()))?.into_parts();
    instructions.apply_to_request_http1x(req);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_core::strategy::StrategyType;
    use serde_json::json;
    use std::time::{Duration, UNIX_EPOCH};

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("a JSON object literal"),
        }
    }

    fn strategy(kind: StrategyType, config: Value) -> Strategy {
        Strategy::from_parts(kind, obj(config)).unwrap()
    }

    fn get(url: &str) -> http::Request<Vec<u8>> {
        http::Request::get(url).body(Vec::new()).unwrap()
    }

    fn header(req: &http::Request<Vec<u8>>, name: &str) -> String {
        req.headers()[name].to_str().unwrap().to_owned()
    }

    #[test]
    fn static_headers_are_what_apply_sets_and_only_for_request_independent_strategies() {
        let cases = [
            (StrategyType::Oauth2, json!({}), json!({"access_token": "at"}), Some(("authorization", "Bearer at"))),
            (
                StrategyType::Header,
                json!({"header_name": "X-Key", "value_prefix": "Key "}),
                json!({"api_key": "k"}),
                Some(("x-key", "Key k")),
            ),
            (
                StrategyType::BasicAuth,
                json!({}),
                json!({"username": "u", "password": "p"}),
                Some(("authorization", "Basic dTpw")),
            ),
            (StrategyType::QueryParam, json!({"param_name": "k"}), json!({"api_key": "k"}), None),
            (StrategyType::HmacPayload, json!({"header_name": "X-Sig"}), json!({"api_secret": "s"}), None),
        ];
        for (kind, config, creds, want) in cases {
            let (strategy, creds) = (strategy(kind, config), obj(creds));
            let got = static_headers(&strategy, &creds).unwrap();
            let got = got.map(|h| h.into_iter().next().unwrap());
            assert_eq!(got.as_ref().map(|(n, v)| (n.as_str(), v.to_str().unwrap())), want, "{kind:?}");
            if let Some((name, value)) = got {
                assert!(value.is_sensitive(), "{kind:?}: kept out of logs");
                let mut req = get("https://api.example.com/");
                apply(&mut req, &strategy, &creds).unwrap();
                assert_eq!(req.headers()[&name], value, "{kind:?}: apply sets the same header");
            }
        }
        let missing = static_headers(&strategy(StrategyType::Oauth2, json!({})), &obj(json!({})));
        assert_eq!(missing, Err(BridgeError::MissingCredential("access_token".into())));
    }

    #[test]
    fn header_strategy_puts_prefix_and_credential_in_the_named_header() {
        let mut req = get("https://api.example.com/v1");
        let s = strategy(
            StrategyType::Header,
            json!({"header_name": "X-Api-Key", "value_prefix": "Token ", "credential_field": "key"}),
        );
        apply(&mut req, &s, &obj(json!({"key": "k-123"}))).unwrap();
        assert_eq!(header(&req, "x-api-key"), "Token k-123");
        assert!(req.headers()["x-api-key"].is_sensitive());
    }

    #[test]
    fn header_strategy_defaults_to_authorization_with_api_key_and_no_prefix() {
        let mut req = get("https://api.example.com/v1");
        apply(&mut req, &strategy(StrategyType::Header, json!({})), &obj(json!({"api_key": "raw"}))).unwrap();
        assert_eq!(header(&req, "authorization"), "raw");
    }

    #[test]
    fn header_strategy_replaces_a_header_the_caller_already_set() {
        let mut req =
            http::Request::get("https://api.example.com/").header("authorization", "old").body(vec![]).unwrap();
        let s = strategy(StrategyType::Header, json!({"value_prefix": "Bearer "}));
        apply(&mut req, &s, &obj(json!({"api_key": "new"}))).unwrap();
        assert_eq!(req.headers().get_all("authorization").iter().collect::<Vec<_>>(), ["Bearer new"]);
    }

    #[test]
    fn oauth2_sends_the_access_token_as_bearer() {
        let mut req = get("https://api.example.com/me");
        apply(&mut req, &strategy(StrategyType::Oauth2, json!({})), &obj(json!({"access_token": "at"}))).unwrap();
        assert_eq!(header(&req, "authorization"), "Bearer at");
    }

    #[test]
    fn query_param_is_appended_to_an_existing_query_and_encoded() {
        let mut req = get("https://api.example.com/search?q=rust&page=2");
        let s = strategy(StrategyType::QueryParam, json!({"param_name": "api_token", "credential_field": "token"}));
        apply(&mut req, &s, &obj(json!({"token": "a b&c=d/é"}))).unwrap();
        assert_eq!(req.uri().path(), "/search");
        assert_eq!(req.uri().query(), Some("q=rust&page=2&api_token=a+b%26c%3Dd%2F%C3%A9"));
    }

    #[test]
    fn query_param_starts_a_query_when_there_is_none() {
        let mut req = get("https://api.example.com/v1/weather");
        let s = strategy(StrategyType::QueryParam, json!({"param_name": "key"}));
        apply(&mut req, &s, &obj(json!({"api_key": "k1"}))).unwrap();
        assert_eq!(req.uri().to_string(), "https://api.example.com/v1/weather?key=k1");
        let mut relative = http::Request::get("/no/host?").body(Vec::new()).unwrap();
        apply(&mut relative, &s, &obj(json!({"api_key": "k 2"}))).unwrap();
        assert_eq!(relative.uri(), "/no/host?key=k+2", "only the query changes, whatever the URI's form");
    }

    #[test]
    fn query_param_requires_a_param_name() {
        let mut req = get("https://api.example.com/");
        let s = strategy(StrategyType::QueryParam, json!({"param_name": ""}));
        let err = apply(&mut req, &s, &obj(json!({"api_key": "k"})));
        assert!(matches!(err, Err(BridgeError::Config(m)) if m.contains("param_name")));
    }

    #[test]
    fn basic_auth_is_base64_of_user_colon_password() {
        let mut req = get("https://api.example.com/");
        let creds = obj(json!({"username": "Aladdin", "password": "open sesame"}));
        apply(&mut req, &strategy(StrategyType::BasicAuth, json!({})), &creds).unwrap();
        // RFC 7617's example.
        assert_eq!(header(&req, "authorization"), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    }

    #[test]
    fn basic_auth_reads_the_configured_fields() {
        let mut req = get("https://api.example.com/");
        let s = strategy(StrategyType::BasicAuth, json!({"username_field": "client_id", "password_field": "secret"}));
        apply(&mut req, &s, &obj(json!({"client_id": "u", "secret": "p:w"}))).unwrap();
        assert_eq!(header(&req, "authorization"), format!("Basic {}", STANDARD.encode("u:p:w")));
    }

    #[test]
    fn hmac_payload_matches_rfc_4231_with_prefix_and_encodings() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sign = |config: Value| {
            let mut req = http::Request::post("https://api.example.com/hook")
                .body(b"what do ya want for nothing?".to_vec())
                .unwrap();
            apply(&mut req, &strategy(StrategyType::HmacPayload, config), &obj(json!({"api_secret": "Jefe"}))).unwrap();
            header(&req, "x-signature")
        };
        let sha256 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(sign(json!({"header_name": "X-Signature"})), sha256);
        assert_eq!(sign(json!({"header_name": "X-Signature", "value_prefix": "sha256="})), format!("sha256={sha256}"));
        assert_eq!(
            sign(json!({"header_name": "X-Signature", "encoding": "base64"})),
            STANDARD.encode(hex::decode(sha256).unwrap())
        );
        assert_eq!(
            sign(json!({"header_name": "X-Signature", "algo": "sha512"})),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
    }

    #[test]
    fn unknown_hmac_algo_or_encoding_is_refused_when_read() {
        for config in [
            json!({"header_name": "X-Sig", "algo": "md5"}),
            json!({"header_name": "X-Sig", "encoding": "base32"}),
            json!({"header_name": 7}),
        ] {
            let err = Strategy::from_parts(StrategyType::HmacPayload, obj(config.clone())).unwrap_err();
            assert!(err.starts_with("strategy config:"), "{config}: {err}");
        }
        // A strategy without a header takes the one default (X-Signature).
        let mut req = get("https://api.example.com/");
        let s = strategy(StrategyType::HmacPayload, json!({"algo": "sha256"}));
        apply(&mut req, &s, &obj(json!({"api_secret": "s"}))).unwrap();
        assert!(req.headers().contains_key("x-signature"));
    }

    #[test]
    fn a_missing_or_empty_credential_field_is_a_typed_error_for_every_strategy() {
        let cases = [
            (strategy(StrategyType::Oauth2, json!({})), "access_token"),
            (strategy(StrategyType::Header, json!({"credential_field": "token"})), "token"),
            (strategy(StrategyType::QueryParam, json!({"param_name": "k"})), "api_key"),
            (strategy(StrategyType::BasicAuth, json!({})), "username"),
            (strategy(StrategyType::HmacPayload, json!({"header_name": "X-Sig"})), "api_secret"),
            (strategy(StrategyType::AwsSigv4, json!({"service": "s3"})), "access_key"),
        ];
        for (s, field) in cases {
            for creds in [json!({}), json!({field: ""}), json!({field: 42}), json!({field: null})] {
                let mut req = get("https://api.example.com/");
                let err = apply(&mut req, &s, &obj(creds.clone())).unwrap_err();
                assert_eq!(err, BridgeError::MissingCredential(field.to_owned()), "{:?} with {creds}", s.kind());
                assert!(!err.to_string().contains("42"), "errors name fields, never values");
            }
        }
        // An empty or absent password is a password (Greenhouse: the key is the user name).
        for creds in [json!({"username": "u"}), json!({"username": "u", "password": ""})] {
            let mut req = get("https://api.example.com/");
            apply(&mut req, &strategy(StrategyType::BasicAuth, json!({})), &obj(creds)).unwrap();
            assert_eq!(header(&req, "authorization"), "Basic dTo=");
        }
    }

    #[test]
    fn unusable_values_are_errors_not_panics() {
        let mut req = get("https://api.example.com/");
        let err =
            apply(&mut req, &strategy(StrategyType::Header, json!({})), &obj(json!({"api_key": "a\r\nX-Evil: 1"})));
        assert!(matches!(err, Err(BridgeError::Request(_))), "{err:?}");
        assert!(!format!("{err:?}").contains("Evil"), "the credential is not echoed");

        let err = apply(
            &mut get("https://api.example.com/"),
            &strategy(StrategyType::Header, json!({"header_name": "bad header"})),
            &obj(json!({"api_key": "k"})),
        );
        assert!(matches!(err, Err(BridgeError::Config(_))), "{err:?}");

        let sigv4 = obj(json!({"access_key": "AKID", "secret_key": "s"}));
        let err = apply(&mut get("https://api.example.com/"), &strategy(StrategyType::AwsSigv4, json!({})), &sigv4);
        assert!(matches!(err, Err(BridgeError::Config(m)) if m.contains("service")));
    }

    /// Cases of the AWS SigV4 test suite (the `aws-sig-v4-test-suite`, as
    /// shipped in the `aws-sigv4` crate's repository), signed in headers.
    #[test]
    fn sigv4_matches_the_published_aws_test_suite() {
        const SUITE_TIME: u64 = 1_440_938_160; // 20150830T123600Z
        let scope = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";
        let cases = [
            (
                "get-vanilla",
                "GET",
                "https://example.amazonaws.com/",
                None,
                "host;x-amz-date",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "get-vanilla-query-order-key-case",
                "GET",
                "https://example.amazonaws.com/?Param2=value2&Param1=value1",
                None,
                "host;x-amz-date",
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
            (
                "get-vanilla-query-unreserved",
                "GET",
                "https://example.amazonaws.com/?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                None,
                "host;x-amz-date",
                "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
            ),
            (
                "get-vanilla-with-session-token",
                "GET",
                "https://example.amazonaws.com/",
                Some("6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"),
                "host;x-amz-date;x-amz-security-token",
                "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
            ),
            (
                "post-vanilla",
                "POST",
                "https://example.amazonaws.com/",
                None,
                "host;x-amz-date",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
        ];
        let s = strategy(StrategyType::AwsSigv4, json!({"service": "service", "region": "us-east-1"}));
        for (name, method, url, token, signed_headers, signature) in cases {
            let mut creds =
                obj(json!({"access_key": "AKIDEXAMPLE", "secret_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}));
            if let Some(token) = token {
                creds.insert("session_token".into(), token.into());
            }
            let mut req = http::Request::builder().method(method).uri(url).body(Vec::new()).unwrap();
            apply_at(&mut req, &s, &creds, UNIX_EPOCH + Duration::from_secs(SUITE_TIME)).unwrap();
            assert_eq!(
                header(&req, "authorization"),
                format!("{scope}, SignedHeaders={signed_headers}, Signature={signature}"),
                "{name}"
            );
            assert_eq!(header(&req, "x-amz-date"), "20150830T123600Z", "{name}");
            assert_eq!(req.headers().get("x-amz-security-token").map(|v| v.to_str().unwrap()), token, "{name}");
            assert!(req.headers().get("x-amz-content-sha256").is_none(), "{name}");
        }
    }

    #[test]
    fn sigv4_for_s3_sends_the_payload_hash_and_signs_the_path_as_sent() {
        let s = strategy(StrategyType::AwsSigv4, json!({"service": "s3"}));
        let creds = obj(json!({"access_key": "AKID", "secret_key": "secret"}));
        let mut req = http::Request::put("https://b.s3.amazonaws.com/a/../my%20key").body(b"data".to_vec()).unwrap();
        apply_at(&mut req, &s, &creds, UNIX_EPOCH + Duration::from_secs(1_700_000_000)).unwrap();
        assert_eq!(header(&req, "x-amz-content-sha256"), hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"data")));
        assert!(header(&req, "authorization").contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date"));
        assert_eq!(req.uri().path(), "/a/../my%20key", "the URL itself is never rewritten");
    }
}
