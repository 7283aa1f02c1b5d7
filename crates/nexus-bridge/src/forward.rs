//! The forwarding core of both proxies (the Gateway's `/v1/proxy/…` and
//! `nexus proxy`): the target under the provider's `api_base_url`, the
//! headers passed on in each direction, and signing. Sending is the
//! relay's provider side (`crate::relay::Sender`).

use crate::client::TokenAnswer;
use crate::strategies::{apply, BridgeError};
use crate::target::{forwardable_header, Base};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method};

/// Why a request did not reach the provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("the provider did not answer in time")]
    Timeout,
    #[error("the provider could not be reached")]
    Unreachable,
}

/// An agent's request on its way to the provider, before signing.
#[derive(Debug)]
pub struct Forward {
    method: Method,
    uri: http::Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Forward {
    /// The request for `raw_path` (as the agent sent it, still
    /// percent-encoded) and `query` under `base`, with the agent's headers
    /// minus hop-by-hop ones and its own credentials, and `Host` set to the
    /// provider's. Refuses, with a message for the agent, a path that would
    /// leave `base`.
    pub fn new(
        base: &str,
        raw_path: &str,
        query: Option<&str>,
        method: Method,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Forward, String> {
        Forward::to(&Base::parse(base)?, raw_path, query, method, headers, body)
    }

    /// [`Forward::new`] under a base already parsed (see [`TokenAnswer::base`]).
    pub fn to(
        base: &Base,
        raw_path: &str,
        query: Option<&str>,
        method: Method,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Forward, String> {
        if crate::target::refused_method(method.as_str()) {
            return Err(format!("{method} requests are not forwarded"));
        }
        let uri = base.join(raw_path, query).map_err(|m| format!("path: {m}"))?;
        match base.host_header() {
            Some(host) => headers.insert(http::header::HOST, host.clone()),
            None => headers.remove(http::header::HOST),
        };
        strip(&mut headers, |name| *name == http::header::HOST || forwardable_header(name.as_str()));
        Ok(Forward { method, uri, headers, body })
    }

    /// Where the request goes.
    pub fn uri(&self) -> &http::Uri {
        &self.uri
    }

    /// Its method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request signed with `answer`'s strategy and credentials.
    pub fn signed(&self, answer: &TokenAnswer) -> Result<http::Request<Bytes>, BridgeError> {
        let mut req = http::Request::new(self.body.clone());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        match answer.static_headers() {
            Ok(Some(headers)) => {
                for (name, value) in headers {
                    req.headers_mut().insert(name.clone(), value.clone());
                }
            }
            Ok(None) => apply(&mut req, answer.strategy(), answer.credentials())?,
            Err(e) => return Err(e.clone()),
        }
        Ok(req)
    }
}

/// A provider's answer as a proxy relays it: its status and headers minus
/// hop-by-hop ones (`Content-Length` is kept) and `Set-Cookie` (cookies of the provider must not reach
/// agents through a shared origin), and its body as it streams.
pub fn relay<B>(resp: http::Response<B>) -> http::Response<B> {
    let (mut parts, body) = resp.into_parts();
    // `Content-Length` stays: the body keeps its length, and the answer to a
    // `HEAD` has no body to measure.
    strip(&mut parts.headers, relayed_header);
    http::Response::from_parts(parts, body)
}

/// Whether a proxy passes this header of a provider's answer on to the agent.
fn relayed_header(name: &HeaderName) -> bool {
    crate::h1::relayed_header(name.as_str())
}

/// Removes, in place, the headers `keep` refuses and those that the
/// `Connection` header names (they describe the hop, RFC 9110 §7.6.1).
/// Allocates nothing in the usual case (`Connection: keep-alive` or `close`
/// naming no header that is present).
fn strip(headers: &mut HeaderMap, keep: impl Fn(&HeaderName) -> bool) {
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(http::header::CONNECTION) {
        for token in value.to_str().unwrap_or_default().split(',').map(str::trim) {
            // Looked up by `&str` first: no `HeaderName` is made for a
            // name that is not there. The message's framing and `Host` are
            // the proxy's to set, whatever `Connection` names.
            let framing = ["host", "content-length", "transfer-encoding"].iter().any(|f| token.eq_ignore_ascii_case(f));
            if framing || !headers.contains_key(token) {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    for name in named {
        headers.remove(name);
    }
    while let Some(name) = headers.keys().find(|n| !keep(n)).cloned() {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_core::strategy::{Strategy, StrategyType};
    use serde_json::json;

    fn answer(kind: StrategyType, config: serde_json::Value, credentials: serde_json::Value) -> TokenAnswer {
        serde_json::from_value(json!({
            "connection_id": "c", "provider": "p", "auth_type": "api_key",
            "strategy": Strategy::from_parts(kind, config.as_object().unwrap().clone()).unwrap(),
            "credentials": credentials, "expires_at": null
        }))
        .unwrap()
    }

    fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        headers
    }

    fn names(headers: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn headers_of_the_hop_and_the_callers_credentials_stay_behind() {
        let headers = header_map(&[
            ("x-api-key", "gw"),
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("cookie", "a=1"),
            ("x-trace", "t"),
            ("accept", "*/*"),
            ("host", "127.0.0.1:9"),
        ]);
        let fwd =
            Forward::new("https://api.x.com/v2", "me", Some("a=1"), Method::POST, headers, Bytes::from_static(b"hi"))
                .unwrap();
        let req = fwd.signed(&answer(StrategyType::Oauth2, json!({}), json!({"access_token": "at"}))).unwrap();
        assert_eq!(req.uri(), "https://api.x.com/v2/me?a=1");
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.body().as_ref(), b"hi");
        assert_eq!(
            names(req.headers()),
            ["accept", "authorization", "host", "x-trace"],
            "x-hop was named by Connection"
        );
        assert_eq!(req.headers()["host"], "api.x.com");
        assert_eq!(req.headers()["authorization"], "Bearer at");
    }

    #[test]
    fn strip_drops_what_connection_names_and_what_keep_refuses() {
        let mut headers = header_map(&[
            ("connection", "Keep-Alive, X-Hop"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("content-length", "2"),
            ("set-cookie", "a=1"),
            ("etag", "\"e\""),
        ]);
        strip(&mut headers, relayed_header);
        assert_eq!(names(&headers), ["content-length", "etag"]);
    }

    #[test]
    fn a_static_signature_and_the_base_are_worked_out_once_per_answer() {
        let fwd = Forward::new("https://api.x.com", "w", None, Method::GET, HeaderMap::new(), Bytes::new()).unwrap();
        let keyed = answer(StrategyType::Header, json!({"header_name": "X-Key"}), json!({"api_key": "k1"}))
            .with_api_base_url(Some("https://api.x.com/v1/".into()));
        assert_eq!(fwd.signed(&keyed).unwrap().headers()["x-key"], "k1");
        let (name, value) = &keyed.static_headers().unwrap().unwrap()[0];
        assert!(std::ptr::eq(name, &keyed.static_headers().unwrap().unwrap()[0].0), "the same one each time");
        assert!(value.is_sensitive());
        assert_eq!(fwd.signed(&keyed).unwrap().headers()["x-key"], "k1");
        let base = keyed.base().unwrap().unwrap();
        assert!(std::ptr::eq(base, keyed.base().unwrap().unwrap()));
        assert_eq!(base.join("me", None).unwrap(), "https://api.x.com/v1/me");

        let broken = answer(StrategyType::Oauth2, json!({}), json!({}));
        assert!(matches!(fwd.signed(&broken), Err(BridgeError::MissingCredential(_))));
        assert!(broken.base().is_none(), "no api_base_url");
        let moved = broken.clone().with_api_base_url(Some("ftp://x.com/".into()));
        assert!(moved.base().unwrap().is_err(), "worked out again for the new base, not copied");
        assert!(broken.base().is_none());
    }

    #[test]
    fn a_query_param_strategy_changes_the_url_that_is_sent() {
        let fwd = Forward::new("https://api.x.com", "w", None, Method::GET, HeaderMap::new(), Bytes::new()).unwrap();
        let strategy = answer(StrategyType::QueryParam, json!({"param_name": "k"}), json!({"api_key": "v"}));
        assert_eq!(fwd.signed(&strategy).unwrap().uri(), "https://api.x.com/w?k=v");
    }

    #[test]
    fn paths_that_leave_the_base_are_refused() {
        let err = Forward::new("https://api.x.com/v2", "../admin", None, Method::GET, HeaderMap::new(), Bytes::new());
        assert!(err.is_err());
    }
}
