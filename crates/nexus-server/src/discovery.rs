//! OIDC discovery at registration: fetch `{issuer}/.well-known/openid-configuration`,
//! check that it names the same issuer, and keep the endpoints Nexus needs.
//! Every failure says what failed, for a `400` the operator can act on.

use nexus_core::provider::Discovery;
use nexus_core::url_policy::parse_outbound_url;
use serde::Deserialize;

#[derive(Deserialize)]
struct Document {
    issuer: Option<String>,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    jwks_uri: Option<String>,
    revocation_endpoint: Option<String>,
    userinfo_endpoint: Option<String>,
}

/// The largest discovery document read (they are a few kilobytes in practice).
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// Fetches and checks the discovery document of `issuer`.
pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Discovery, String> {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    parse_outbound_url(&url).map_err(|e| format!("discovery URL {url} is not allowed: {e}"))?;
    let mut response = http
        .get(&url)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| format!("could not fetch {url}: {}", describe(&e)))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered HTTP {}", response.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("could not read {url}: {}", describe(&e)))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("{url} returned more than {MAX_DOCUMENT_BYTES} bytes"));
        }
    }
    let doc: Document = serde_json::from_slice(&body)
        .map_err(|e| format!("{url} did not return a discovery document: {}", nexus_core::redact::serde_message(&e)))?;
    let found = doc.issuer.ok_or_else(|| format!("the document at {url} has no issuer"))?;
    if found.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(format!("the document at {url} names issuer '{found}', expected '{issuer}'"));
    }
    let endpoint = |name: &str, value: Option<String>| -> Result<Option<String>, String> {
        match value {
            None => Ok(None),
            Some(v) => parse_outbound_url(&v)
                .map(|_| Some(v.clone()))
                .map_err(|e| format!("the document's {name} '{v}' is not allowed: {e}")),
        }
    };
    let authorization_endpoint = endpoint("authorization_endpoint", doc.authorization_endpoint)?
        .ok_or_else(|| format!("the document at {url} has no authorization_endpoint"))?;
    let token_endpoint = endpoint("token_endpoint", doc.token_endpoint)?
        .ok_or_else(|| format!("the document at {url} has no token_endpoint"))?;
    Ok(Discovery {
        authorization_endpoint,
        token_endpoint,
        jwks_uri: endpoint("jwks_uri", doc.jwks_uri)?,
        revocation_endpoint: endpoint("revocation_endpoint", doc.revocation_endpoint)?,
        userinfo_endpoint: endpoint("userinfo_endpoint", doc.userinfo_endpoint)?,
        fetched_at: chrono::Utc::now().timestamp(),
    })
}

fn describe(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_redirect() {
        "redirects are not followed"
    } else if e.is_body() || e.is_decode() {
        "the response body could not be read"
    } else {
        "request failed"
    }
}
