//! OIDC discovery at registration, on `openidconnect`: fetch
//! `{issuer}/.well-known/openid-configuration` and the JWKS it names
//! through [`ProviderHttp`] (so both requests keep the outbound URL
//! policy, the reply limit and no redirects), require the issuer it names
//! to be the one configured (OpenID Connect Discovery 1.0 §4.3), and keep
//! the endpoints Nexus needs, each checked against the same policy. Every
//! failure says what failed, for a `400` the operator can act on.

use crate::http::{HttpError, ProviderHttp};
use nexus_core::provider::Discovery;
use nexus_core::url_policy::parse_outbound_url;
use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGrantType, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreResponseMode, CoreResponseType,
    CoreSubjectIdentifierType,
};
use openidconnect::{AdditionalProviderMetadata, DiscoveryError, IssuerUrl, ProviderMetadata};
use serde::{Deserialize, Serialize};

/// What the document says beyond OpenID Connect Discovery: the RFC 7009
/// revocation endpoint (RFC 8414 metadata).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Revocation {
    revocation_endpoint: Option<String>,
}

impl AdditionalProviderMetadata for Revocation {}

type Metadata = ProviderMetadata<
    Revocation,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// Fetches and checks the discovery document of `issuer`; `now` (unix
/// seconds) stamps it.
pub async fn discover(http: &ProviderHttp, issuer: &str, now: i64) -> Result<Discovery, String> {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    parse_outbound_url(&url).map_err(|e| format!("discovery URL {url} is not allowed: {e}"))?;
    let issuer_url = IssuerUrl::new(issuer.to_owned()).map_err(|e| format!("issuer '{issuer}' is not a URL: {e}"))?;
    let doc = Metadata::discover_async(issuer_url, http).await.map_err(|e| bounded(explain(&url, e)))?;
    let endpoint = |name: &str, value: Option<&str>| -> Result<Option<String>, String> {
        match value {
            None => Ok(None),
            Some(v) => parse_outbound_url(v)
                .map(|_| Some(v.to_owned()))
                .map_err(|e| bounded(format!("the document's {name} '{v}' is not allowed: {e}"))),
        }
    };
    let authorization_endpoint = endpoint("authorization_endpoint", Some(doc.authorization_endpoint().as_str()))?
        .ok_or_else(|| format!("the document at {url} has no authorization_endpoint"))?;
    let token_endpoint = endpoint("token_endpoint", doc.token_endpoint().map(|u| u.as_str()))?
        .ok_or_else(|| format!("the document at {url} has no token_endpoint"))?;
    Ok(Discovery {
        authorization_endpoint,
        token_endpoint,
        jwks_uri: endpoint("jwks_uri", Some(doc.jwks_uri().as_str()))?,
        revocation_endpoint: endpoint("revocation_endpoint", doc.additional_metadata().revocation_endpoint.as_deref())?,
        userinfo_endpoint: endpoint("userinfo_endpoint", doc.userinfo_endpoint().map(|u| u.as_str()))?,
        fetched_at: now,
    })
}

/// The longest error message: a hostile document's values are quoted in
/// some, and must not make an answer or a log line of a megabyte.
const MAX_MESSAGE: usize = 400;

fn bounded(message: String) -> String {
    if message.chars().count() <= MAX_MESSAGE {
        return message;
    }
    let mut short: String = message.chars().take(MAX_MESSAGE).collect();
    short.push('…');
    short
}

/// What went wrong. A value of the document is quoted only where it is
/// the point (the issuer it names); serde's messages lose theirs.
fn explain(url: &str, e: DiscoveryError<HttpError>) -> String {
    match e {
        DiscoveryError::Request(e) => format!("could not fetch {url} or its JWKS: {e}"),
        DiscoveryError::Response(status, _, _) if status.as_u16() != 200 => {
            format!("{url} (or its JWKS) answered HTTP {}", status.as_u16())
        }
        DiscoveryError::Response(_, _, message) => format!("{url} (or its JWKS): {message}"),
        DiscoveryError::Parse(e) => format!(
            "{url} did not return a discovery document (or its jwks_uri a key set): at {}: {}",
            e.path(),
            nexus_core::redact::serde_message(e.inner())
        ),
        DiscoveryError::Validation(message) => format!("the document at {url}: {message}"),
        DiscoveryError::UrlParse(e) => format!("{url}: {e}"),
        other => format!("{url}: {other}"),
    }
}
