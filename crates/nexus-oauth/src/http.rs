//! The HTTP client the OAuth crates call, over `reqwest`, with reply
//! normalisation for providers that bend the token-endpoint rules.

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
}

impl ProviderHttp {
    pub fn new(client: reqwest::Client) -> ProviderHttp {
        ProviderHttp { client }
    }

    async fn execute(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let url = parts.uri.to_string();
        nexus_core::url_policy::parse_outbound_url(&url).map_err(|e| HttpError(format!("{url}: {e}")))?;
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
        let (status, json) = normalise(status.as_u16(), content_type, &bytes);
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
    }
    (status, value)
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
}
