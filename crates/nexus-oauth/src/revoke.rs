//! Token revocation (RFC 7009) at a provider's `revocation_endpoint`, with
//! the client authentication of its token endpoint.
//!
//! Not `oauth2`'s `revoke_token`: it refuses every URL that is not HTTPS,
//! while Nexus's outbound URL policy (`nexus_core::url_policy`) also
//! allows plain HTTP on loopback (development, and the tests' real OpenID
//! provider). The request goes through [`ProviderHttp`], so it keeps that
//! policy, the reply limit, and the masking of what the provider says.

use crate::flow::{ClientAuth, ClientConfig};
use crate::http::ProviderHttp;
use nexus_core::SecretString;
use oauth2::AsyncHttpClient;

/// The token a revocation names, with its `token_type_hint`.
#[derive(Debug)]
pub enum RevocableToken {
    Refresh(SecretString),
    Access(SecretString),
}

/// Asks `revocation_url` to revoke `token`; `Err` says why it did not
/// happen, in words that carry no secret.
pub async fn revoke(
    http: &ProviderHttp,
    cfg: &ClientConfig,
    revocation_url: &str,
    token: &RevocableToken,
) -> Result<(), String> {
    let (token, hint) = match token {
        RevocableToken::Refresh(t) => (t, "refresh_token"),
        RevocableToken::Access(t) => (t, "access_token"),
    };
    let mut form = vec![("token", token.expose().to_owned()), ("token_type_hint", hint.to_owned())];
    let mut request = http::Request::post(revocation_url)
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    match cfg.auth {
        ClientAuth::Basic => {
            use base64::Engine as _;
            // RFC 6749 §2.3.1: each part form-encoded before joining.
            let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", enc(&cfg.client_id), enc(cfg.client_secret.expose()));
            let basic = base64::engine::general_purpose::STANDARD.encode(pair);
            request = request.header(http::header::AUTHORIZATION, format!("Basic {basic}"));
        }
        ClientAuth::Post => {
            form.push(("client_id", cfg.client_id.clone()));
            form.push(("client_secret", cfg.client_secret.expose().to_owned()));
        }
        ClientAuth::PrivateKeyJwt => {
            // The key never leaves: a client assertion for this endpoint.
            let assertion = crate::assertion::client_assertion_for(cfg, revocation_url)?;
            form.push(("client_id", cfg.client_id.clone()));
            form.push(("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned()));
            form.push(("client_assertion", assertion));
        }
    }
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
    let request =
        request.body(body.into_bytes()).map_err(|_| "the revocation endpoint is not a valid URL".to_owned())?;
    let response =
        http.call(request).await.map_err(|e| format!("the revocation endpoint could not be reached: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the revocation endpoint answered {}", response.status().as_u16()))
    }
}
