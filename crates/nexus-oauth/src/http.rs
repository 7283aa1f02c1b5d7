//! The HTTP client the OAuth crates call, over `reqwest`, with reply
//! normalisation for providers that bend the token-endpoint rules, and
//! masking of what a provider says: its `error`, `error_description` and
//! `error_uri` are read only after every secret of the exchange (what was
//! sent: client secret, code, PKCE verifier, refresh token, assertion; and
//! what came back: tokens) is masked in them, so a provider that echoes the
//! request cannot put a secret into a log line, an audit row or a redirect.

use nexus_core::redact::Masker;
use oauth2::{AsyncHttpClient, HttpRequest, HttpResponse};
use serde_json::{Map, Value};
use std::future::Future;
use std::pin::Pin;

/// Largest provider reply read, in bytes.
const MAX_REPLY: usize = 1024 * 1024;

/// A transport failure. Its message never contains request bodies (which hold
/// client secrets and codes).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(pub String);

/// An `AsyncHttpClient` for `oauth2`/`openidconnect` that sends through our
/// `reqwest` client (timeouts, no redirects) and normalises replies.
#[derive(Debug, Clone)]
pub struct ProviderHttp {
    client: reqwest::Client,
    quirks: TokenQuirks,
    /// When set, the only hosts (globs) requests may go to.
    hosts: Option<std::sync::Arc<[String]>>,
}

/// How one provider's token endpoint bends RFC 6749 (SPEC 10): requests
/// are rewritten and replies normalised here, before the `oauth2` crate
/// builds or parses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenQuirks {
    /// `params.token_request_format: json`: the form the crate builds is
    /// sent as a JSON object instead (Notion, Figma).
    pub json_body: bool,
    /// `params.token_response`: token field → dotted path in the reply,
    /// for providers that nest them (Slack's `authed_user.access_token`).
    pub response_paths: Vec<(String, String)>,
}

impl TokenQuirks {
    /// The quirks `params` declares.
    pub fn of(params: &Map<String, Value>) -> TokenQuirks {
        TokenQuirks {
            json_body: params.get("token_request_format").and_then(Value::as_str) == Some("json"),
            response_paths: params
                .get("token_response")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect(),
        }
    }
}

impl ProviderHttp {
    pub fn new(client: reqwest::Client) -> ProviderHttp {
        ProviderHttp { client, quirks: TokenQuirks::default(), hosts: None }
    }

    /// This client for a token endpoint with `quirks`.
    pub fn with_quirks(&self, quirks: &TokenQuirks) -> ProviderHttp {
        ProviderHttp { quirks: quirks.clone(), ..self.clone() }
    }

    /// This client, refusing every request whose host matches none of
    /// `globs` before it is sent (a tenant's discovery document and the
    /// keys it names).
    pub fn only_to(&self, globs: Vec<String>) -> ProviderHttp {
        ProviderHttp { hosts: Some(globs.into()), ..self.clone() }
    }

    /// GETs `url` with `Authorization: Bearer {access_token}` and answers
    /// its JSON object (the user-info answer a provider gives right after
    /// the exchange), under the same limits as every reply.
    pub async fn get_json(&self, url: &str, access_token: &str) -> Result<Map<String, Value>, String> {
        let request = http::Request::get(url)
            .header(http::header::AUTHORIZATION, format!("Bearer {access_token}"))
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|e| format!("{url}: {e}"))?;
        let response = self.execute(request).await.map_err(|e| e.0)?;
        if !response.status().is_success() {
            return Err(format!("{} answered HTTP {}", host_of(url), response.status().as_u16()));
        }
        match serde_json::from_slice(response.body()) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(format!("{} did not answer a JSON object", host_of(url))),
        }
    }

    async fn execute(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (mut parts, mut body) = request.into_parts();
        let mut masker = sent_secrets(&parts.headers, &body);
        if self.quirks.json_body {
            if let Some(json) = form_body_as_json(&parts.headers, &body) {
                body = json;
                parts.headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            }
        }
        let url = parts.uri.to_string();
        let parsed = nexus_core::url_policy::parse_outbound_url(&url).map_err(|e| HttpError(format!("{url}: {e}")))?;
        if let Some(globs) = &self.hosts {
            let host = parsed.host_str().unwrap_or_default();
            if !globs.iter().any(|g| nexus_core::template::host_matches(g, host)) {
                return Err(HttpError(format!("{} is not an allowed host of this provider", host_of(&url))));
            }
        }
        let mut builder = self.client.request(parts.method, &url).body(body);
        for (name, value) in parts.headers.iter() {
            builder = builder.header(name, value);
        }
        let mut response = builder.send().await.map_err(|e| HttpError(describe(&url, &e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| HttpError(describe(&url, &e)))? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_REPLY {
                return Err(HttpError(format!("{url} replied with more than {MAX_REPLY} bytes")));
            }
        }
        // A provider that is down or overloaded has not refused anything: report
        // it as a transport failure so callers retry instead of giving up.
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(HttpError(format!("{} answered HTTP {}", host_of(&url), status.as_u16())));
        }
        let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let (status, mut json) = normalise(status.as_u16(), content_type, &bytes);
        if let Some(Value::Object(reply)) = &mut json {
            lift_nested(reply, &self.quirks.response_paths);
            if status == 200 {
                // Lifted values may be the first `access_token` the reply has.
                fill_token_defaults(reply);
            }
            mask_provider_text(reply, &mut masker);
        }
        let mut out = http::Response::builder().status(status);
        match json {
            Some(v) => {
                out = out.header(http::header::CONTENT_TYPE, "application/json");
                out.body(v.to_string().into_bytes()).map_err(|e| HttpError(e.to_string()))
            }
            None => {
                if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
                    out = out.header(http::header::CONTENT_TYPE, ct);
                }
                out.body(bytes).map_err(|e| HttpError(e.to_string()))
            }
        }
    }
}

impl<'c> AsyncHttpClient<'c> for ProviderHttp {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.execute(request))
    }
}

/// Fields of a request or a reply whose values are secret.
const SECRET_FIELDS: [&str; 11] = [
    "client_secret",
    "code",
    "code_verifier",
    "refresh_token",
    "access_token",
    "id_token",
    "assertion",
    "client_assertion",
    "password",
    "token",
    "private_key",
];

/// The secrets a token-endpoint request carries: secret fields of its form
/// or JSON body, and its `Authorization` credentials.
fn sent_secrets(headers: &http::HeaderMap, body: &[u8]) -> Masker {
    let mut masker = Masker::new();
    if let Ok(Value::Object(json)) = serde_json::from_slice::<Value>(body) {
        for (k, v) in &json {
            if let (true, Some(v)) = (SECRET_FIELDS.contains(&k.as_str()), v.as_str()) {
                masker.add(v);
            }
        }
    } else {
        for (k, v) in url::form_urlencoded::parse(body) {
            if SECRET_FIELDS.contains(&k.as_ref()) {
                masker.add(&v);
            }
        }
    }
    if let Some(auth) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        use base64::Engine as _;
        if let Some(basic) = auth.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD.decode(basic.trim()).unwrap_or_default();
            let decoded = String::from_utf8_lossy(&decoded);
            masker.add(basic.trim());
            // `client_id:client_secret`, each form-encoded (RFC 6749 §2.3.1).
            if let Some((_, secret)) = decoded.split_once(':') {
                masker.add(secret);
                let plain: String = url::form_urlencoded::parse(format!("s={secret}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                masker.add(&plain);
            }
        } else if let Some(token) = auth.strip_prefix("Bearer ") {
            masker.add(token.trim());
        }
    }
    masker
}

/// Masks, in a reply's own words, the secrets of the exchange (those sent,
/// and any the reply itself carries), and bounds their length.
fn mask_provider_text(reply: &mut Map<String, Value>, masker: &mut Masker) {
    for field in SECRET_FIELDS {
        match reply.get(field) {
            Some(Value::String(v)) => masker.add(&v.clone()),
            // A secret of the wrong type is a secret still.
            Some(Value::Number(n)) => masker.add(&n.to_string()),
            _ => {}
        }
    }
    for field in ["error", "error_description", "error_uri"] {
        if let Some(Value::String(text)) = reply.get_mut(field) {
            *text = masker.mask(text);
        }
    }
}

fn describe(url: &str, e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    format!("{}: {what}", host_of(url))
}

fn host_of(url: &str) -> String {
    url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default()
}

/// Rewrites a token-endpoint reply into what RFC 6749 says it should be:
/// form-encoded bodies become JSON, numeric strings in `expires_in` become
/// numbers, and a `200` carrying `error` becomes a `400`. Returns the status
/// and, when the body was rewritten or is JSON, the JSON to send on.
pub fn normalise(status: u16, content_type: &str, body: &[u8]) -> (u16, Option<Value>) {
    let ct = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let mut value: Option<Value> = if ct == "application/json" || ct.ends_with("+json") {
        serde_json::from_slice(body).ok()
    } else if ct == "application/x-www-form-urlencoded" || ct == "text/plain" || ct.is_empty() {
        serde_json::from_slice::<Value>(body).ok().filter(Value::is_object).or_else(|| form_to_json(body))
    } else {
        None
    };
    let mut status = status;
    if let Some(Value::Object(map)) = &mut value {
        if let Some(Value::String(s)) = map.get("expires_in") {
            if let Ok(n) = s.trim().parse::<u64>() {
                map.insert("expires_in".into(), Value::from(n));
            }
        }
        if status == 200 && map.get("error").is_some_and(|e| e.is_string()) {
            status = 400;
        }
        fill_token_defaults(map);
    }
    (status, value)
}

/// What a token reply leaves out: a missing `token_type` means Bearer (SPEC
/// 10; Mailchimp sends none), and `expires_in: 0` (how Mailchimp says a
/// token never expires) means no expiry, not expired on arrival.
fn fill_token_defaults(map: &mut Map<String, Value>) {
    if !map.contains_key("access_token") {
        return;
    }
    if map.get("token_type").is_none_or(Value::is_null) {
        map.insert("token_type".into(), Value::from("bearer"));
    }
    if map.get("expires_in").and_then(Value::as_u64) == Some(0) {
        map.remove("expires_in");
    }
    // A granted scope as a list of strings (Twitch) is the space-separated
    // string RFC 6749 §5.1 says; any other shape is dropped rather than
    // failing a token the provider did issue.
    if let Some(Value::Array(items)) = map.get("scope") {
        let joined = items.iter().map(Value::as_str).collect::<Option<Vec<&str>>>().map(|s| s.join(" "));
        match joined {
            Some(scope) => map.insert("scope".into(), Value::from(scope)),
            None => map.remove("scope"),
        };
    } else if map.get("scope").is_some_and(|s| !s.is_string() && !s.is_null()) {
        map.remove("scope");
    }
}

/// A form-encoded request body as a JSON object of strings.
fn form_body_as_json(headers: &http::HeaderMap, body: &[u8]) -> Option<Vec<u8>> {
    let ct = headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return None;
    }
    let map: Map<String, Value> =
        url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), Value::String(v.into_owned()))).collect();
    Some(Value::Object(map).to_string().into_bytes())
}

/// `params.token_response`: each named field takes the value at its dotted
/// path, when there is one there.
fn lift_nested(reply: &mut Map<String, Value>, paths: &[(String, String)]) {
    for (field, path) in paths {
        let mut at = path.split('.');
        let first = at.next().and_then(|k| reply.get(k));
        let found = at.try_fold(first, |v, k| Some(v.and_then(|v| v.get(k)))).flatten().cloned();
        if let Some(value) = found.filter(|v| !v.is_null()) {
            reply.insert(field.clone(), value);
        }
    }
    if let Some(Value::String(s)) = reply.get("expires_in") {
        if let Ok(n) = s.trim().parse::<u64>() {
            reply.insert("expires_in".into(), Value::from(n));
        }
    }
}

fn form_to_json(body: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(body).ok()?;
    if !text.contains('=') {
        return None;
    }
    let map: Map<String, Value> = url::form_urlencoded::parse(text.trim().as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    (map.contains_key("access_token") || map.contains_key("error")).then_some(Value::Object(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_provider_cannot_echo_the_exchange_into_its_error_text() {
        let body = b"grant_type=authorization_code&code=the-code-123&code_verifier=verif-456789&client_id=cid&client_secret=s%2Bcret%26x";
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, "Basic Y2lkOmJhc2ljLXNlY3JldA==".parse().unwrap());
        let mut masker = sent_secrets(&headers, body);
        let echo = String::from_utf8_lossy(body).into_owned();
        let mut reply = json!({
            "error": "invalid_grant the-code-123",
            "error_description": format!("you sent {echo} with basic-secret and s+cret&x, token tok-abcdef"),
            "error_uri": "https://idp/err?code=the-code-123",
            "access_token": "tok-abcdef"
        });
        mask_provider_text(reply.as_object_mut().unwrap(), &mut masker);
        let shown: String =
            ["error", "error_description", "error_uri"].iter().map(|f| reply[f].as_str().unwrap()).collect();
        for secret in ["the-code-123", "verif-456789", "s%2Bcret%26x", "s+cret&x", "basic-secret", "tok-abcdef"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("[redacted]"), "{shown}");
        assert!(
            reply["error_description"].as_str().unwrap().chars().count() <= nexus_core::redact::MAX_PROVIDER_TEXT + 1
        );
        let json_body = br#"{"grant_type":"refresh_token","refresh_token":"rt-7777777"}"#;
        let masker = sent_secrets(&http::HeaderMap::new(), json_body);
        assert_eq!(masker.mask("bad rt-7777777"), "bad [redacted]");
    }

    #[test]
    fn form_encoded_replies_become_json() {
        let (status, v) = normalise(
            200,
            "application/x-www-form-urlencoded; charset=utf-8",
            b"access_token=abc&token_type=bearer&expires_in=3600&scope=repo%2Cuser",
        );
        assert_eq!(status, 200);
        assert_eq!(
            v.unwrap(),
            json!({"access_token": "abc", "token_type": "bearer", "expires_in": 3600, "scope": "repo,user"})
        );
    }

    #[test]
    fn error_in_a_200_is_an_error() {
        let (status, v) =
            normalise(200, "application/json", br#"{"error":"bad_verification_code","error_description":"expired"}"#);
        assert_eq!(status, 400);
        assert_eq!(v.unwrap()["error"], "bad_verification_code");
        let (status, _) = normalise(200, "text/plain", b"error=access_denied");
        assert_eq!(status, 400);
    }

    #[test]
    fn json_is_left_alone_except_string_expiry() {
        let (status, v) =
            normalise(200, "application/json", br#"{"access_token":"a","token_type":"Bearer","expires_in":"60"}"#);
        assert_eq!(status, 200);
        assert_eq!(v.unwrap()["expires_in"], 60);
        let (_, v) = normalise(500, "text/html", b"<html>");
        assert!(v.is_none());
    }

    #[test]
    fn a_scope_list_is_joined_and_a_hostile_scope_dropped() {
        let (_, v) =
            normalise(200, "application/json", br#"{"access_token":"a","scope":["chat:read","user:read:email"]}"#);
        assert_eq!(v.unwrap()["scope"], "chat:read user:read:email");
        for hostile in [r#"[1,2]"#, r#"{"a":1}"#, "42", "true"] {
            let body = format!(r#"{{"access_token":"a","scope":{hostile}}}"#);
            let (status, v) = normalise(200, "application/json", body.as_bytes());
            assert_eq!(status, 200);
            assert!(v.unwrap().get("scope").is_none(), "{hostile}");
        }
    }

    #[test]
    fn a_missing_token_type_is_bearer_and_a_zero_lifetime_is_none() {
        // Mailchimp's documented answer.
        let (status, v) = normalise(200, "application/json", br#"{"access_token":"a","expires_in":0,"scope":null}"#);
        assert_eq!((status, v.unwrap()), (200, json!({"access_token": "a", "token_type": "bearer", "scope": null})));
        let (_, v) = normalise(200, "application/json", br#"{"access_token":"a","token_type":null,"expires_in":"0"}"#);
        assert_eq!(v.unwrap(), json!({"access_token": "a", "token_type": "bearer"}));
        // An error answer is not given a token type.
        let (_, v) = normalise(400, "application/json", br#"{"error":"invalid_grant"}"#);
        assert_eq!(v.unwrap(), json!({"error": "invalid_grant"}));
    }
}
