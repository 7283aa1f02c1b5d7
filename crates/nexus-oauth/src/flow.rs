//! The authorization-code flow with PKCE and the refresh grant, on the
//! `oauth2` crate, with the provider quirks of the seeds: a custom scope
//! separator, `skip_scope_on_auth`, `skip_scope_on_exchange`, extra
//! authorization and token parameters, and `client_secret_basic`.

use crate::http::ProviderHttp;
use nexus_core::SecretString;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, ExtraTokenFields, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, StandardRevocableToken,
    StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Every field of a token response the standard does not name (`id_token`,
/// Salesforce `instance_url`, Slack `team`, …), kept as they came.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Extras(pub Map<String, Value>);

impl ExtraTokenFields for Extras {}

type Response = StandardTokenResponse<Extras, BasicTokenType>;
type Client = oauth2::Client<
    BasicErrorResponse,
    Response,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
>;

/// Token-endpoint client authentication (`auth_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_id`/`client_secret` in the form body (the default).
    Post,
    /// HTTP Basic with the client credentials.
    Basic,
    /// A client assertion signed with the client's private key (RFC 7523
    /// §2.2); the client secret holds the PEM key.
    PrivateKeyJwt,
}

impl ClientAuth {
    pub fn from_auth_header(h: Option<&str>) -> ClientAuth {
        match h {
            Some("client_secret_basic") => ClientAuth::Basic,
            Some("private_key_jwt") => ClientAuth::PrivateKeyJwt,
            _ => ClientAuth::Post,
        }
    }
}

/// The grant type of RFC 7523 §2.1.
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The client assertion type of RFC 7523 §2.2.
const JWT_BEARER_CLIENT: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The client registration at one provider.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub client_id: String,
    pub client_secret: SecretString,
    pub auth: ClientAuth,
    pub auth_url: String,
    /// `None` until the connection has every value the template needs.
    pub token_url: Option<String>,
    /// Where refreshes go: `refresh_url`, or the token endpoint.
    pub refresh_url: Option<String>,
    pub redirect_uri: String,
    /// How the token endpoint bends RFC 6749.
    pub quirks: crate::http::TokenQuirks,
    /// `params.client_assertion_kid`: the key id a `private_key_jwt`
    /// assertion names.
    pub assertion_kid: Option<String>,
}

/// What goes into one authorization URL.
#[derive(Debug, Clone)]
pub struct AuthorizationParams<'a> {
    pub scopes: &'a [String],
    pub scope_separator: &'a str,
    pub send_scope: bool,
    pub extra: &'a Map<String, Value>,
    pub state: &'a str,
    pub pkce_verifier: &'a SecretString,
    pub nonce: Option<&'a str>,
}

/// Tokens from a code exchange or refresh.
#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: SecretString,
    pub token_type: String,
    pub expires_in: Option<u64>,
    pub refresh_token: Option<SecretString>,
    pub scope: Option<String>,
    pub id_token: Option<String>,
    /// Provider-specific fields, without `id_token`.
    pub extras: Map<String, Value>,
}

/// Why an exchange or refresh failed. `Provider` carries the OAuth error code
/// (`invalid_grant`, …) and the HTTP status when the provider refused.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("the provider refused: {code}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Provider { code: String, description: Option<String> },
    #[error("the provider could not be reached: {0}")]
    Transport(String),
    #[error("the provider's reply could not be understood: {0}")]
    InvalidReply(String),
    #[error("configuration: {0}")]
    Config(String),
}

impl OAuthError {
    /// A short snake_case code for redirects and audit rows.
    pub fn code(&self) -> String {
        match self {
            OAuthError::Provider { code, .. } => code.clone(),
            OAuthError::Transport(_) => "provider_unreachable".into(),
            OAuthError::InvalidReply(_) => "invalid_provider_reply".into(),
            OAuthError::Config(_) => "provider_misconfigured".into(),
        }
    }
}

/// A fresh PKCE verifier (43+ characters of unreserved URL-safe text).
pub fn new_pkce_verifier() -> SecretString {
    SecretString::new(PkceCodeChallenge::new_random_sha256().1.secret().clone())
}

/// A client with the authorization endpoint set, and the token endpoint
/// when `TOKEN` is `EndpointSet`.
type ConfiguredClient<Token> = oauth2::Client<
    BasicErrorResponse,
    Response,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    oauth2::EndpointSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    oauth2::EndpointNotSet,
    Token,
>;

/// The client for the authorization URL (no token endpoint needed yet).
fn authorize_client(cfg: &ClientConfig) -> Result<ConfiguredClient<oauth2::EndpointNotSet>, OAuthError> {
    let auth_url = AuthUrl::new(cfg.auth_url.clone()).map_err(|e| OAuthError::Config(format!("auth_url: {e}")))?;
    let redirect =
        RedirectUrl::new(cfg.redirect_uri.clone()).map_err(|e| OAuthError::Config(format!("redirect_uri: {e}")))?;
    let client = Client::new(ClientId::new(cfg.client_id.clone()))
        .set_auth_uri(auth_url)
        .set_redirect_uri(redirect)
        .set_auth_type(match cfg.auth {
            ClientAuth::Basic => AuthType::BasicAuth,
            ClientAuth::Post | ClientAuth::PrivateKeyJwt => AuthType::RequestBody,
        });
    // A `private_key_jwt` client's secret is its private key: never sent.
    Ok(match cfg.auth {
        ClientAuth::PrivateKeyJwt => client,
        _ => client.set_client_secret(ClientSecret::new(cfg.client_secret.expose().to_owned())),
    })
}

/// The client for a token request to `endpoint` (`field` names it in errors).
fn client(
    cfg: &ClientConfig,
    field: &str,
    endpoint: Option<&String>,
) -> Result<ConfiguredClient<oauth2::EndpointSet>, OAuthError> {
    let endpoint =
        endpoint.ok_or_else(|| OAuthError::Config(format!("{field}: the connection lacks a value it needs")))?;
    let token_url = TokenUrl::new(endpoint.clone()).map_err(|e| OAuthError::Config(format!("{field}: {e}")))?;
    Ok(authorize_client(cfg)?.set_token_uri(token_url))
}

/// The URL to send the user to: `response_type=code`, `client_id`,
/// `redirect_uri`, `state`, the S256 PKCE challenge, scopes (joined by the
/// provider's separator unless `send_scope` is false), `nonce` and the
/// provider's `authorization_params`.
pub fn authorization_url(cfg: &ClientConfig, p: &AuthorizationParams<'_>) -> Result<url::Url, OAuthError> {
    let client = authorize_client(cfg)?;
    let verifier = PkceCodeVerifier::new(p.pkce_verifier.expose().to_owned());
    let challenge = PkceCodeChallenge::from_code_verifier_sha256(&verifier);
    let state = p.state.to_owned();
    let mut req = client.authorize_url(move || CsrfToken::new(state)).set_pkce_challenge(challenge);
    if p.send_scope && !p.scopes.is_empty() {
        if p.scope_separator == " " {
            req = req.add_scopes(p.scopes.iter().cloned().map(Scope::new));
        } else {
            req = req.add_extra_param("scope", p.scopes.join(p.scope_separator));
        }
    }
    if let Some(nonce) = p.nonce {
        req = req.add_extra_param("nonce", nonce.to_owned());
    }
    for (k, v) in p.extra {
        if matches!(
            k.as_str(),
            "state" | "code_challenge" | "code_challenge_method" | "redirect_uri" | "client_id" | "response_type"
        ) {
            continue;
        }
        req = req.add_extra_param(k.clone(), param_string(v));
    }
    Ok(req.url().0)
}

fn param_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn into_token_set(resp: Response) -> TokenSet {
    let mut extras = resp.extra_fields().0.clone();
    let id_token = extras.remove("id_token").and_then(|v| v.as_str().map(str::to_owned));
    TokenSet {
        access_token: SecretString::new(resp.access_token().secret().clone()),
        token_type: match resp.token_type() {
            BasicTokenType::Bearer => "Bearer".into(),
            BasicTokenType::Mac => "MAC".into(),
            BasicTokenType::Extension(s) => s.clone(),
        },
        expires_in: resp.expires_in().map(|d| d.as_secs()),
        refresh_token: resp.refresh_token().map(|r| SecretString::new(r.secret().clone())),
        scope: resp.scopes().map(|s| s.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(" ")),
        id_token,
        extras,
    }
}

fn map_error(e: RequestTokenError<crate::http::HttpError, BasicErrorResponse>) -> OAuthError {
    match e {
        RequestTokenError::ServerResponse(r) => OAuthError::Provider {
            code: r.error().as_ref().to_owned(),
            description: r.error_description().map(|d| d.chars().take(200).collect()),
        },
        RequestTokenError::Request(e) => OAuthError::Transport(e.0),
        // serde's message would quote the value it could not read (a token).
        RequestTokenError::Parse(e, _) => {
            OAuthError::InvalidReply(format!("at {}: {}", e.path(), nexus_core::redact::serde_message(e.inner())))
        }
        RequestTokenError::Other(m) => OAuthError::InvalidReply(m),
    }
}

/// Exchanges an authorization code (with the PKCE verifier), sending `scope`
/// when `scopes` is given and the provider's `token_params`.
pub async fn exchange_code(
    http: &ProviderHttp,
    cfg: &ClientConfig,
    code: &str,
    pkce_verifier: &SecretString,
    scopes: Option<(&[String], &str)>,
    token_params: &Map<String, Value>,
) -> Result<TokenSet, OAuthError> {
    let client = client(cfg, "token_url", cfg.token_url.as_ref())?;
    let mut req = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.expose().to_owned()));
    if let Some((scopes, sep)) = scopes.filter(|(s, _)| !s.is_empty()) {
        req = req.add_extra_param("scope", scopes.join(sep));
    }
    for (k, v) in token_params {
        req = req.add_extra_param(k.clone(), param_string(v));
    }
    req.request_async(&http.with_quirks(&cfg.quirks)).await.map(into_token_set).map_err(map_error)
}

/// The client credentials grant (RFC 6749 §4.4) at the token endpoint,
/// with `scopes` (joined by `separator`) and the provider's `token_params`.
/// The same request issues the first token and renews it.
pub async fn client_credentials(
    http: &ProviderHttp,
    cfg: &ClientConfig,
    scopes: Option<(&[String], &str)>,
    token_params: &Map<String, Value>,
) -> Result<TokenSet, OAuthError> {
    let endpoint = cfg
        .token_url
        .as_ref()
        .ok_or_else(|| OAuthError::Config("token_url: the connection lacks a value it needs".into()))?;
    let token_url = TokenUrl::new(endpoint.clone()).map_err(|e| OAuthError::Config(format!("token_url: {e}")))?;
    let mut client =
        Client::new(ClientId::new(cfg.client_id.clone())).set_token_uri(token_url).set_auth_type(match cfg.auth {
            ClientAuth::Basic => AuthType::BasicAuth,
            ClientAuth::Post | ClientAuth::PrivateKeyJwt => AuthType::RequestBody,
        });
    let mut assertion = None;
    if cfg.auth == ClientAuth::PrivateKeyJwt {
        let signed = crate::assertion::client_assertion_for(cfg, endpoint)
            .map_err(|e| OAuthError::Config(format!("client_secret {e}")))?;
        assertion = Some(signed);
    } else {
        client = client.set_client_secret(ClientSecret::new(cfg.client_secret.expose().to_owned()));
    }
    let mut req = client.exchange_client_credentials();
    if let Some(assertion) = assertion {
        req = req
            .add_extra_param("client_assertion_type", JWT_BEARER_CLIENT)
            .add_extra_param("client_assertion", assertion);
    }
    if let Some((scopes, sep)) = scopes.filter(|(s, _)| !s.is_empty()) {
        req = req.add_extra_param("scope", scopes.join(sep));
    }
    for (k, v) in token_params {
        req = req.add_extra_param(k.clone(), param_string(v));
    }
    req.request_async(&http.with_quirks(&cfg.quirks)).await.map(into_token_set).map_err(map_error)
}

/// The JWT bearer grant (RFC 7523 §2.1): `assertion`, signed by the
/// caller, exchanged at `token_url` for an access token.
pub async fn jwt_bearer(
    http: &ProviderHttp,
    token_url: &str,
    assertion: &str,
    quirks: &crate::http::TokenQuirks,
) -> Result<TokenSet, OAuthError> {
    use oauth2::AsyncHttpClient;
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", JWT_BEARER_GRANT)
        .append_pair("assertion", assertion)
        .finish();
    let request = http::Request::post(token_url)
        .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(http::header::ACCEPT, "application/json")
        .body(body.into_bytes())
        .map_err(|e| OAuthError::Config(format!("token_url: {e}")))?;
    let reply = http.with_quirks(quirks).call(request).await.map_err(|e| OAuthError::Transport(e.0))?;
    if reply.status().is_success() {
        return serde_json::from_slice::<Response>(reply.body())
            .map(into_token_set)
            .map_err(|e| OAuthError::InvalidReply(nexus_core::redact::serde_message(&e)));
    }
    match serde_json::from_slice::<BasicErrorResponse>(reply.body()) {
        Ok(error) => Err(map_error(RequestTokenError::ServerResponse(error))),
        Err(_) => {
            Err(OAuthError::InvalidReply(format!("the token endpoint answered HTTP {}", reply.status().as_u16())))
        }
    }
}

/// Uses a refresh token (the refresh grant) at `refresh_url`, with the
/// provider's `refresh_params` (its `token_params` are for the code
/// exchange only).
pub async fn refresh(
    http: &ProviderHttp,
    cfg: &ClientConfig,
    refresh_token: &SecretString,
    refresh_params: &Map<String, Value>,
) -> Result<TokenSet, OAuthError> {
    let client = client(cfg, "refresh_url", cfg.refresh_url.as_ref())?;
    let token = RefreshToken::new(refresh_token.expose().to_owned());
    let mut req = client.exchange_refresh_token(&token);
    for (k, v) in refresh_params {
        req = req.add_extra_param(k.clone(), param_string(v));
    }
    req.request_async(&http.with_quirks(&cfg.quirks)).await.map(into_token_set).map_err(map_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> ClientConfig {
        ClientConfig {
            client_id: "cid".into(),
            client_secret: SecretString::new("sec"),
            auth: ClientAuth::Post,
            auth_url: "https://idp.example/authorize".into(),
            token_url: Some("https://idp.example/token".into()),
            refresh_url: Some("https://idp.example/token".into()),
            redirect_uri: "https://nexus.example/auth/callback".into(),
            quirks: Default::default(),
            assertion_kid: None,
        }
    }

    fn query(url: &url::Url) -> std::collections::HashMap<String, String> {
        url.query_pairs().into_owned().collect()
    }

    #[test]
    fn authorization_url_has_pkce_state_scopes_and_extras() {
        let verifier = new_pkce_verifier();
        let scopes = vec!["openid".to_owned(), "email".to_owned()];
        let extra = json!({"access_type": "offline", "prompt": "consent", "state": "ignored"});
        let url = authorization_url(
            &cfg(),
            &AuthorizationParams {
                scopes: &scopes,
                scope_separator: " ",
                send_scope: true,
                extra: extra.as_object().unwrap(),
                state: "st",
                pkce_verifier: &verifier,
                nonce: Some("n1"),
            },
        )
        .unwrap();
        let q = query(&url);
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "cid");
        assert_eq!(q["redirect_uri"], "https://nexus.example/auth/callback");
        assert_eq!(q["state"], "st");
        assert_eq!(q["code_challenge_method"], "S256");
        let expected =
            PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(verifier.expose().to_owned()));
        assert_eq!(&q["code_challenge"], expected.as_str());
        assert_eq!(q["scope"], "openid email");
        assert_eq!(q["nonce"], "n1");
        assert_eq!(q["access_type"], "offline");
        assert_eq!(q["prompt"], "consent");
    }

    #[test]
    fn scope_separator_and_skip_scope() {
        let verifier = new_pkce_verifier();
        let scopes = vec!["a".to_owned(), "b".to_owned()];
        let none = Map::new();
        let mut p = AuthorizationParams {
            scopes: &scopes,
            scope_separator: ",",
            send_scope: true,
            extra: &none,
            state: "s",
            pkce_verifier: &verifier,
            nonce: None,
        };
        assert_eq!(query(&authorization_url(&cfg(), &p).unwrap())["scope"], "a,b");
        p.send_scope = false;
        assert!(!query(&authorization_url(&cfg(), &p).unwrap()).contains_key("scope"));
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let shown = format!("{:?}", cfg());
        assert!(!shown.contains("sec\""));
    }
}
