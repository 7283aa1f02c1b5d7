//! The forwarding core of both proxies (the Gateway's `/v1/proxy/…` and
//! `nexus proxy`): the target under the provider's `api_base_url`, the
//! headers passed on in each direction, signing and sending.

use crate::client::TokenAnswer;
use crate::strategies::{apply, BridgeError};
use crate::target::{forwardable_header, target_url};
use http::{HeaderMap, Method};

/// An agent's request on its way to the provider, before signing.
#[derive(Debug)]
pub struct Forward {
    method: Method,
    url: url::Url,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Forward {
    /// The request for `path` (and `query`) under `base`, with the agent's
    /// headers minus hop-by-hop ones and its own credentials. Refuses, with a
    /// message for the agent, a path that would leave `base`.
    pub fn new(
        base: &str,
        path: &str,
        query: Option<&str>,
        method: Method,
        headers: &HeaderMap,
        body: Vec<u8>,
    ) -> Result<Forward, String> {
        let url = target_url(base, path, query)?;
        let mut passed = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers.iter().filter(|(name, _)| forwardable_header(name.as_str())) {
            passed.append(name.clone(), value.clone());
        }
        Ok(Forward { method, url, headers: passed, body })
    }

    /// Where the request goes.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// The request signed with `answer`'s strategy and credentials.
    pub fn signed(&self, answer: &TokenAnswer) -> Result<http::Request<Vec<u8>>, BridgeError> {
        let mut req = http::Request::new(self.body.clone());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() =
            self.url.as_str().parse().map_err(|_| BridgeError::Request("the target is not a valid URI".into()))?;
        *req.headers_mut() = self.headers.clone();
        apply(&mut req, &answer.strategy, &answer.credentials)?;
        Ok(req)
    }

    /// Sends a request made by [`Forward::signed`] with `client`.
    pub async fn send(
        &self,
        client: &reqwest::Client,
        req: http::Request<Vec<u8>>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let (parts, body) = req.into_parts();
        // Most strategies leave the URL alone: reuse the parsed one.
        let builder = if parts.uri == *self.url.as_str() {
            client.request(parts.method, self.url.clone())
        } else {
            client.request(parts.method, parts.uri.to_string())
        };
        builder.headers(parts.headers).body(body).send().await
    }
}

/// The parts of a provider's answer a proxy relays: its status and headers
/// minus hop-by-hop ones and `Set-Cookie` (cookies of the provider must not
/// reach agents through a shared origin). The body is streamed by the caller.
pub fn relay_head(resp: &reqwest::Response) -> http::response::Builder {
    let mut out = http::Response::builder().status(resp.status().as_u16());
    if let Some(headers) = out.headers_mut() {
        headers.reserve(resp.headers().len());
        for (name, value) in resp.headers() {
            if forwardable_header(name.as_str()) && name != http::header::SET_COOKIE {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_core::strategy::{Strategy, StrategyType};
    use serde_json::json;

    fn answer(kind: StrategyType, config: serde_json::Value, credentials: serde_json::Value) -> TokenAnswer {
        serde_json::from_value(json!({
            "connection_id": "c", "provider": "p", "auth_type": "x",
            "strategy": Strategy { kind, config: config.as_object().unwrap().clone() },
            "credentials": credentials, "expires_at": null
        }))
        .unwrap()
    }

    #[test]
    fn headers_of_the_hop_and_the_callers_credentials_stay_behind() {
        let mut headers = HeaderMap::new();
        for (k, v) in
            [("x-api-key", "gw"), ("connection", "close"), ("cookie", "a=1"), ("x-trace", "t"), ("accept", "*/*")]
        {
            headers.append(k, v.parse().unwrap());
        }
        let fwd =
            Forward::new("https://api.x.com/v2", "me", Some("a=1"), Method::POST, &headers, b"hi".to_vec()).unwrap();
        let req = fwd.signed(&answer(StrategyType::Oauth2, json!({}), json!({"access_token": "at"}))).unwrap();
        assert_eq!(req.uri(), "https://api.x.com/v2/me?a=1");
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.body(), b"hi");
        let names: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-trace", "accept", "authorization"]);
        assert_eq!(req.headers()["authorization"], "Bearer at");
    }

    #[test]
    fn a_query_param_strategy_changes_the_url_that_is_sent() {
        let fwd = Forward::new("https://api.x.com", "w", None, Method::GET, &HeaderMap::new(), Vec::new()).unwrap();
        let strategy = answer(StrategyType::QueryParam, json!({"param_name": "k"}), json!({"api_key": "v"}));
        assert_eq!(fwd.signed(&strategy).unwrap().uri(), "https://api.x.com/w?k=v");
    }

    #[test]
    fn paths_that_leave_the_base_are_refused() {
        let err = Forward::new("https://api.x.com/v2", "../admin", None, Method::GET, &HeaderMap::new(), Vec::new());
        assert!(err.is_err());
    }
}
