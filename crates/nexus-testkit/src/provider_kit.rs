//! A test-kit provider: one process that stands in for the providers of
//! SPEC 10's table as their public documentation describes them, the
//! behaviour chosen by the host and path of each request. Tenant hosts are
//! names under `.localhost` (RFC 6761), which Nexus's outbound clients
//! resolve to loopback, so `acme.zendesk.localhost:{port}` reaches this
//! process without DNS.
//!
//! | stands in for | hosts (`.localhost`) | what it checks and answers |
//! |---|---|---|
//! | Zendesk | `{subdomain}.zendesk` | authorization, token and API on the tenant's own host; a token works only there |
//! | Okta | `{domain}.okta` | OIDC discovery per tenant (`/.well-known/openid-configuration`), `/oauth2/v1/*` with HTTP Basic client authentication |
//! | Salesforce | `login.salesforce`, `{org}.my.salesforce` | the token answer names the org's `instance_url`; the API is only there |
//! | Pipedrive | `oauth.pipedrive`, `{company}.pipedrive` | HTTP Basic client authentication; the token answer names `api_domain` |
//! | Mailchimp | `login.mailchimp`, `{dc}.api.mailchimp` | the data centre is only in `/oauth2/metadata`, asked with the new token |
//! | QuickBooks | `appcenter.intuit`, `oauth.platform.intuit`, `quickbooks.api.intuit` | the callback carries `realmId`; the API path must name it |
//! | Zoho | `accounts.zoho.{dc}`, `www.zohoapis.{dc}` | a data centre per region; the token answer names `api_domain` |
//! | Notion | `api.notion` | the token request must be JSON (HTTP Basic client authentication); the API wants `Notion-Version` |
//! | Figma | `www.figma`, `api.figma` | refreshes at `/v1/oauth/refresh`, not the token URL; the client by HTTP Basic or in the body; replies without `token_type` |
//! | Slack | `slack` | the user token is nested (`authed_user.access_token`) beside a bot token; the client by HTTP Basic or in the body |
//! | Shopify | `{shop}.myshopify` | the API wants `X-Shopify-Access-Token` with no prefix |
//! | Datadog | `api.datadoghq` | two secret headers, `DD-API-KEY` and `DD-APPLICATION-KEY` |
//! | Trello | `api.trello` | two secret query parameters, `key` and `token` |
//! | Greenhouse | `harvest.greenhouse` | HTTP Basic with the API key as user name and an empty password |
//! | Google (service accounts) | `oauth2.googleapis`, `www.googleapis` | the JWT bearer grant: the assertion verified by PyJWT against the account's public key (`iss`, `sub`, `aud`, `scope`, `exp` − `iat` ≤ 3600) |
//!
//! Every authorization code is PKCE-bound (S256), single-use and tied to the
//! redirect URI; every request is recorded so a test can prove that nothing
//! was sent.

use base64::Engine;
use serde_json::{json, Value};
use sha2::Digest;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub const CLIENT_ID: &str = "kit-client";
pub const CLIENT_SECRET: &str = "kit-client-secret-5e1f0c";
/// The Salesforce org, Pipedrive company and Mailchimp data centre the kit's
/// single user belongs to.
pub const ORG: &str = "acme";
pub const MAILCHIMP_DC: &str = "us19";
pub const REALM_ID: &str = "9130350000000000";
/// The static credentials the kit's static APIs accept.
pub const DD_API_KEY: &str = "dd-api-key-7f3e";
pub const DD_APP_KEY: &str = "dd-app-key-91ab";
pub const TRELLO_KEY: &str = "trello-key-5c2d";
pub const TRELLO_TOKEN: &str = "trello-token-8e4f";
pub const GREENHOUSE_KEY: &str = "greenhouse-key-3a9b";
pub const NOTION_VERSION: &str = "2022-06-28";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Zendesk,
    Okta,
    Salesforce,
    Pipedrive,
    Mailchimp,
    QuickBooks,
    Zoho,
    Notion,
    Figma,
    Slack,
    Shopify,
    Datadog,
    Trello,
    Greenhouse,
    Google,
}

impl Flavor {
    /// The provider a host belongs to (port already removed).
    fn of(host: &str) -> Option<Flavor> {
        let h = host.strip_suffix(".localhost")?;
        Some(if h.ends_with(".zendesk") {
            Flavor::Zendesk
        } else if h.ends_with(".okta") {
            Flavor::Okta
        } else if h == "login.salesforce" || h.ends_with(".my.salesforce") {
            Flavor::Salesforce
        } else if h.ends_with(".pipedrive") {
            Flavor::Pipedrive
        } else if h == "login.mailchimp" || h.ends_with(".api.mailchimp") {
            Flavor::Mailchimp
        } else if h.ends_with(".intuit") {
            Flavor::QuickBooks
        } else if h.starts_with("accounts.zoho.") || h.starts_with("www.zohoapis.") {
            Flavor::Zoho
        } else if h == "api.notion" {
            Flavor::Notion
        } else if h == "www.figma" || h == "api.figma" {
            Flavor::Figma
        } else if h == "slack" {
            Flavor::Slack
        } else if h.ends_with(".myshopify") {
            Flavor::Shopify
        } else if h == "api.datadoghq" {
            Flavor::Datadog
        } else if h == "api.trello" {
            Flavor::Trello
        } else if h == "harvest.greenhouse" {
            Flavor::Greenhouse
        } else if h == "oauth2.googleapis" || h == "www.googleapis" {
            Flavor::Google
        } else {
            return None;
        })
    }

    /// Client authentication at the token endpoint, as documented: HTTP
    /// Basic, or `client_id` and `client_secret` in the body.
    fn wants_basic(self) -> bool {
        matches!(self, Flavor::Okta | Flavor::Pipedrive | Flavor::QuickBooks | Flavor::Notion)
    }
}

/// What the kit saw of one request.
#[derive(Debug, Clone)]
pub struct KitSeen {
    pub host: String,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

#[derive(Debug, Clone)]
struct Grant {
    flavor: Flavor,
    /// The host the user consented at (the tenant).
    host: String,
    redirect_uri: String,
    challenge: String,
}

/// What a token may be used for.
#[derive(Debug, Clone)]
struct Issued {
    /// The host whose API the token opens (a token for one tenant is
    /// refused by every other).
    api_host: String,
    /// QuickBooks: the company the token is for.
    realm: Option<String>,
    /// Slack: `user` or `bot`.
    kind: &'static str,
}

#[derive(Debug, Default)]
struct KitState {
    codes: HashMap<String, Grant>,
    access: HashMap<String, Issued>,
    refresh: HashMap<String, Issued>,
    seen: Vec<KitSeen>,
    issued: u64,
    /// Salesforce: the `instance_url` the next token answers name instead
    /// of the org's (a provider that points somewhere it should not).
    instance_url: Option<String>,
    /// Google: service accounts by e-mail: the public key (PEM), and the
    /// `sub` and `scope` an assertion must carry.
    accounts: HashMap<String, (String, String, String)>,
    /// Google: the claims of the assertions PyJWT accepted.
    verified: Vec<Value>,
}

/// The running kit.
#[derive(Clone)]
pub struct ProviderKit {
    pub addr: SocketAddr,
    state: Arc<Mutex<KitState>>,
}

type Answer = (axum::http::StatusCode, Vec<(String, String)>, String);

impl ProviderKit {
    pub async fn start() -> ProviderKit {
        let state: Arc<Mutex<KitState>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the kit");
        let addr = listener.local_addr().unwrap();
        let kit = ProviderKit { addr, state };
        let serving = kit.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let kit = serving.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
                let seen = KitSeen {
                    host: parts
                        .headers
                        .get("host")
                        .and_then(|h| h.to_str().ok())
                        .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name).to_ascii_lowercase())
                        .unwrap_or_default(),
                    method: parts.method.to_string(),
                    target: parts.uri.to_string(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                        .collect(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                kit.state.lock().unwrap().seen.push(seen.clone());
                let google_token = seen.host == "oauth2.googleapis.localhost" && seen.target == "/token";
                let (status, headers, body) = if google_token {
                    // PyJWT runs as a process: off the async workers.
                    let verifier = kit.clone();
                    tokio::task::spawn_blocking(move || verifier.google_token(&seen)).await.unwrap()
                } else {
                    kit.answer(&seen)
                };
                let mut resp = axum::response::Response::new(axum::body::Body::from(body));
                *resp.status_mut() = status;
                for (k, v) in headers {
                    resp.headers_mut().insert(
                        axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                        axum::http::HeaderValue::from_str(&v).unwrap(),
                    );
                }
                resp
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        kit
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://{host}.localhost:{port}{path}`.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}.localhost:{}{path}", self.port())
    }

    /// Every request the kit has received.
    pub fn seen(&self) -> Vec<KitSeen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn seen_count(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }

    /// Salesforce: later token answers name `url` as the `instance_url`.
    pub fn answer_instance_url(&self, url: Option<String>) {
        self.state.lock().unwrap().instance_url = url;
    }

    /// Google: trusts the service account `email` whose public key is
    /// `public_pem`; its assertions must carry `sub` and `scope`.
    pub fn trust_service_account(&self, email: &str, public_pem: &str, sub: &str, scope: &str) {
        let entry = (public_pem.to_owned(), sub.to_owned(), scope.to_owned());
        self.state.lock().unwrap().accounts.insert(email.to_owned(), entry);
    }

    /// Google: the claims of every assertion PyJWT accepted.
    pub fn verified_assertions(&self) -> Vec<Value> {
        self.state.lock().unwrap().verified.clone()
    }

    /// Google's token endpoint for the JWT bearer grant: the assertion is
    /// verified by PyJWT (an implementation independent of Nexus's).
    fn google_token(&self, req: &KitSeen) -> Answer {
        let form: HashMap<String, String> = url::form_urlencoded::parse(req.body.as_bytes()).into_owned().collect();
        if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
            return error(400, "unsupported_grant_type");
        }
        let assertion = form.get("assertion").cloned().unwrap_or_default();
        // Which account: the unverified `iss`, looked up, then verified.
        let iss = assertion
            .split('.')
            .nth(1)
            .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|c| c["iss"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let Some((public_pem, sub, scope)) = self.state.lock().unwrap().accounts.get(&iss).cloned() else {
            return error(400, "invalid_grant");
        };
        let input = json!({"assertion": assertion, "public_pem": public_pem, "iss": iss, "sub": sub, "scope": scope,
                           "aud": format!("http://oauth2.googleapis.localhost:{}/token", self.port())});
        let out = crate::python::run_script(VERIFY_ASSERTION, input.to_string().as_bytes()).expect("PyJWT runs");
        let verdict: Value = serde_json::from_str(out.trim()).expect("PyJWT answers JSON");
        if verdict["ok"] != true {
            return error(400, "invalid_grant");
        }
        let mut st = self.state.lock().unwrap();
        st.verified.push(verdict["claims"].clone());
        st.issued += 1;
        let access = format!("kit-at-{}-google", st.issued);
        st.access
            .insert(access.clone(), Issued { api_host: "www.googleapis.localhost".into(), realm: None, kind: "user" });
        ok(json!({"access_token": access, "expires_in": 3599, "token_type": "Bearer"}))
    }

    /// The user consents at `auth_url` (as a browser would follow it);
    /// returns the callback URL the kit redirects to.
    pub async fn consent(&self, auth_url: &str) -> url::Url {
        let url = url::Url::parse(auth_url).expect("an authorization URL");
        let host = url.host_str().expect("a host").to_owned();
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .resolve(&host, self.addr)
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap();
        let resp = client.get(url.clone()).send().await.expect("the kit answers");
        assert_eq!(resp.status().as_u16(), 302, "{auth_url}: {}", resp.text().await.unwrap_or_default());
        let location = resp.headers()["location"].to_str().unwrap();
        url::Url::parse(location).unwrap()
    }

    fn answer(&self, req: &KitSeen) -> Answer {
        let Some(flavor) = Flavor::of(&req.host) else { return error(404, "no such host") };
        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        let query: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        match (req.method.as_str(), flavor, path) {
            ("GET", Flavor::Okta, "/.well-known/openid-configuration") => self.discovery(&req.host),
            ("GET", Flavor::Okta, "/oauth2/v1/keys") => ok(json!({"keys": []})),
            ("GET", Flavor::Zendesk, "/oauth/authorizations/new")
            | ("GET", Flavor::Okta, "/oauth2/v1/authorize")
            | ("GET", Flavor::Salesforce, "/services/oauth2/authorize")
            | ("GET", Flavor::Pipedrive, "/oauth/authorize")
            | ("GET", Flavor::Mailchimp, "/oauth2/authorize")
            | ("GET", Flavor::QuickBooks, "/connect/oauth2")
            | ("GET", Flavor::Zoho, "/oauth/v2/auth")
            | ("GET", Flavor::Notion, "/v1/oauth/authorize")
            | ("GET", Flavor::Figma, "/oauth")
            | ("GET", Flavor::Slack, "/oauth/v2/authorize")
            | ("GET", Flavor::Shopify, "/admin/oauth/authorize") => self.authorize(flavor, &req.host, &query),
            ("POST", Flavor::Zendesk, "/oauth/tokens")
            | ("POST", Flavor::Okta, "/oauth2/v1/token")
            | ("POST", Flavor::Salesforce, "/services/oauth2/token")
            | ("POST", Flavor::Pipedrive, "/oauth/token")
            | ("POST", Flavor::Mailchimp, "/oauth2/token")
            | ("POST", Flavor::QuickBooks, "/oauth2/v1/tokens/bearer")
            | ("POST", Flavor::Zoho, "/oauth/v2/token")
            | ("POST", Flavor::Notion, "/v1/oauth/token")
            | ("POST", Flavor::Figma, "/v1/oauth/token")
            | ("POST", Flavor::Slack, "/api/oauth.v2.access")
            | ("POST", Flavor::Shopify, "/admin/oauth/access_token") => self.token(flavor, req),
            ("POST", Flavor::Figma, "/v1/oauth/refresh") => self.token(flavor, req),
            ("POST", Flavor::Pipedrive, "/oauth/revoke") | ("POST", Flavor::Okta, "/oauth2/v1/revoke") => {
                self.revoke(req)
            }
            (_, Flavor::Datadog | Flavor::Trello | Flavor::Greenhouse, _) => static_api(flavor, req, path, &query),
            ("GET", Flavor::Mailchimp, "/oauth2/metadata") => self.mailchimp_metadata(req),
            _ => self.api(req, path),
        }
    }

    fn discovery(&self, host: &str) -> Answer {
        let issuer = format!("http://{host}:{}", self.port());
        if host.starts_with("rogue.") {
            // A tenant whose document sends Nexus elsewhere.
            let evil = format!("http://evil.localhost:{}", self.port());
            return ok(json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/oauth2/v1/authorize"),
                "token_endpoint": format!("{evil}/token"),
                "jwks_uri": format!("{evil}/keys"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }));
        }
        ok(json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/oauth2/v1/authorize"),
            "token_endpoint": format!("{issuer}/oauth2/v1/token"),
            "userinfo_endpoint": format!("{issuer}/oauth2/v1/userinfo"),
            "revocation_endpoint": format!("{issuer}/oauth2/v1/revoke"),
            "jwks_uri": format!("{issuer}/oauth2/v1/keys"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        }))
    }

    fn authorize(&self, flavor: Flavor, host: &str, q: &HashMap<String, String>) -> Answer {
        let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
        if get("response_type") != "code" || get("client_id") != CLIENT_ID {
            return error(400, "unsupported_response_type or unknown client_id");
        }
        if get("state").is_empty() || get("redirect_uri").is_empty() {
            return error(400, "state and redirect_uri are required");
        }
        if get("code_challenge_method") != "S256" || get("code_challenge").len() != 43 {
            return error(400, "PKCE (S256) is required");
        }
        let mut st = self.state.lock().unwrap();
        st.issued += 1;
        let code = format!("code-{}-{}", st.issued, host.replace('.', "-"));
        let grant = Grant {
            flavor,
            host: host.to_owned(),
            redirect_uri: get("redirect_uri").to_owned(),
            challenge: get("code_challenge").to_owned(),
        };
        st.codes.insert(code.clone(), grant);
        let mut back = url::Url::parse(get("redirect_uri")).expect("a redirect URI");
        back.query_pairs_mut().append_pair("code", &code).append_pair("state", get("state"));
        match flavor {
            Flavor::QuickBooks => {
                back.query_pairs_mut().append_pair("realmId", REALM_ID);
            }
            Flavor::Zoho => {
                let dc = host.trim_start_matches("accounts.zoho.").trim_end_matches(".localhost");
                back.query_pairs_mut()
                    .append_pair("location", dc)
                    .append_pair("accounts-server", &format!("http://{host}:{}", self.port()));
            }
            _ => {}
        }
        (axum::http::StatusCode::FOUND, vec![("location".into(), back.to_string())], String::new())
    }

    fn token(&self, flavor: Flavor, req: &KitSeen) -> Answer {
        let content_type = req.headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.as_str()).unwrap_or("");
        // Notion's token endpoint reads JSON only; the others a form.
        let form: HashMap<String, String> = if flavor == Flavor::Notion {
            if !content_type.starts_with("application/json") {
                return error(400, "invalid_request: the body must be JSON");
            }
            match serde_json::from_str::<serde_json::Map<String, Value>>(&req.body) {
                Ok(map) => map.into_iter().filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned()))).collect(),
                Err(_) => return error(400, "invalid_request: the body is not a JSON object"),
            }
        } else {
            url::form_urlencoded::parse(req.body.as_bytes()).into_owned().collect()
        };
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        let basic = req.headers.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.as_str());
        let expected = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
        let by_basic = basic == Some(format!("Basic {expected}").as_str()) && get("client_secret").is_empty();
        let in_body = get("client_id") == CLIENT_ID && get("client_secret") == CLIENT_SECRET && basic.is_none();
        let authenticated = match flavor {
            f if f.wants_basic() => by_basic,
            // Figma's and Slack's token endpoints take the client either way.
            Flavor::Figma | Flavor::Slack => by_basic || in_body,
            _ => in_body,
        };
        if !authenticated {
            return error(401, "invalid_client");
        }
        let mut st = self.state.lock().unwrap();
        let issued = match get("grant_type") {
            "authorization_code" => {
                let Some(grant) = st.codes.remove(get("code")) else { return error(400, "invalid_grant") };
                let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(sha2::Sha256::digest(get("code_verifier").as_bytes()));
                if grant.flavor != flavor || grant.redirect_uri != get("redirect_uri") || verifier != grant.challenge {
                    return error(400, "invalid_grant");
                }
                // Tenant-bound providers answer on the tenant's own host only.
                let same_host = matches!(flavor, Flavor::Zendesk | Flavor::Okta);
                if same_host && grant.host != req.host {
                    return error(400, "invalid_grant");
                }
                if flavor == Flavor::Zoho && grant.host != req.host {
                    return error(400, "invalid_grant");
                }
                self.issued_for(flavor, &grant.host)
            }
            // Figma refreshes at its own URL only.
            "refresh_token" if flavor == Flavor::Figma && !req.target.starts_with("/v1/oauth/refresh") => {
                return error(400, "unsupported_grant_type: refresh at /v1/oauth/refresh")
            }
            "refresh_token" => match st.refresh.get(get("refresh_token")) {
                Some(issued) => issued.clone(),
                None => return error(400, "invalid_grant"),
            },
            _ => return error(400, "unsupported_grant_type"),
        };
        st.issued += 1;
        let n = st.issued;
        let access = format!("kit-at-{n}-{}", issued.api_host.replace('.', "-"));
        let refresh = format!("kit-rt-{n}-{}", issued.api_host.replace('.', "-"));
        st.access.insert(access.clone(), issued.clone());
        st.refresh.insert(refresh.clone(), issued.clone());
        let bot = format!("kit-bot-{n}");
        if flavor == Flavor::Slack {
            st.access.insert(bot.clone(), Issued { kind: "bot", ..issued.clone() });
        }
        let refreshing = get("grant_type") == "refresh_token";
        let port = self.port();
        let body = match flavor {
            Flavor::Salesforce => {
                let instance = st.instance_url.clone().unwrap_or_else(|| format!("http://{}:{port}", issued.api_host));
                json!({"access_token": access, "refresh_token": refresh, "instance_url": instance,
                       "id": format!("http://login.salesforce.localhost:{port}/id/00D/005"), "token_type": "Bearer",
                       "issued_at": "1700000000000", "signature": "c2lnbmF0dXJl"})
            }
            Flavor::Pipedrive => json!({"access_token": access, "token_type": "bearer", "refresh_token": refresh,
                "scope": "base", "expires_in": 3599, "api_domain": format!("http://{}:{port}", issued.api_host)}),
            // As documented: no token_type, and `expires_in: 0` for a token that never expires.
            Flavor::Mailchimp => json!({"access_token": access, "expires_in": 0, "scope": null}),
            Flavor::QuickBooks => json!({"access_token": access, "token_type": "bearer", "refresh_token": refresh,
                "expires_in": 3600, "x_refresh_token_expires_in": 8726400}),
            Flavor::Zoho => json!({"access_token": access, "refresh_token": refresh, "token_type": "Bearer",
                "expires_in": 3600, "api_domain": format!("http://{}:{port}", issued.api_host)}),
            Flavor::Zendesk | Flavor::Okta => json!({"access_token": access, "refresh_token": refresh,
                "token_type": "bearer", "expires_in": 3600, "scope": "read"}),
            Flavor::Notion => json!({"access_token": access, "token_type": "bearer", "refresh_token": refresh,
                "bot_id": "b-1", "workspace_id": "w-1", "workspace_name": "Acme", "owner": {"type": "user"}}),
            // A refresh answers a new access token only.
            Flavor::Figma if refreshing => json!({"access_token": access, "expires_in": 7776000}),
            Flavor::Figma => {
                json!({"user_id": "42", "access_token": access, "refresh_token": refresh, "expires_in": 7776000})
            }
            Flavor::Slack => json!({"ok": true, "app_id": "A0KRD7HC3", "access_token": bot, "token_type": "bot",
                "scope": "commands", "bot_user_id": "U0KRQLJ9H", "team": {"id": "T9TK3CUKW", "name": "Acme"},
                "authed_user": {"id": "U1234", "scope": "chat:write", "access_token": access, "token_type": "user"}}),
            Flavor::Shopify => json!({"access_token": access, "scope": "read_products"}),
            Flavor::Datadog | Flavor::Trello | Flavor::Greenhouse | Flavor::Google => {
                return error(404, "no OAuth here")
            }
        };
        ok(body)
    }

    /// The host (and company) a token issued after consent at `host` opens.
    fn issued_for(&self, flavor: Flavor, host: &str) -> Issued {
        let api_host = match flavor {
            Flavor::Zendesk | Flavor::Okta => host.to_owned(),
            Flavor::Salesforce => format!("{ORG}.my.salesforce.localhost"),
            Flavor::Pipedrive => format!("{ORG}.pipedrive.localhost"),
            Flavor::Mailchimp => format!("{MAILCHIMP_DC}.api.mailchimp.localhost"),
            Flavor::QuickBooks => "quickbooks.api.intuit.localhost".into(),
            Flavor::Zoho => host.replacen("accounts.zoho.", "www.zohoapis.", 1),
            Flavor::Notion | Flavor::Slack | Flavor::Shopify => host.to_owned(),
            Flavor::Figma => "api.figma.localhost".into(),
            Flavor::Datadog | Flavor::Trello | Flavor::Greenhouse | Flavor::Google => String::new(),
        };
        Issued { api_host, realm: (flavor == Flavor::QuickBooks).then(|| REALM_ID.to_owned()), kind: "user" }
    }

    fn bearer(&self, req: &KitSeen, schemes: &[&str]) -> Option<Issued> {
        let value = req.headers.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.as_str())?;
        let (scheme, token) = value.split_once(' ')?;
        if !schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
            return None;
        }
        self.state.lock().unwrap().access.get(token).cloned()
    }

    /// Mailchimp's metadata endpoint: documented with `Authorization: OAuth
    /// {token}`; Bearer is accepted as well.
    fn mailchimp_metadata(&self, req: &KitSeen) -> Answer {
        if self.bearer(req, &["OAuth", "Bearer"]).is_none() {
            return error(401, "invalid_token");
        }
        let port = self.port();
        ok(json!({"dc": MAILCHIMP_DC, "role": "owner", "accountname": "Acme", "user_id": 42, "login": {"login_id": 42},
                  "login_url": "https://login.mailchimp.com",
                  "api_endpoint": format!("http://{MAILCHIMP_DC}.api.mailchimp.localhost:{port}")}))
    }

    /// Pipedrive's RFC 7009 revocation: HTTP Basic client authentication,
    /// the token in the form; the token stops working.
    fn revoke(&self, req: &KitSeen) -> Answer {
        let expected = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
        if header(req, "authorization") != Some(format!("Basic {expected}").as_str()) {
            return error(401, "invalid_client");
        }
        let form: HashMap<String, String> = url::form_urlencoded::parse(req.body.as_bytes()).into_owned().collect();
        let token = form.get("token").cloned().unwrap_or_default();
        let mut st = self.state.lock().unwrap();
        st.refresh.remove(&token);
        st.access.remove(&token);
        ok(json!({}))
    }

    /// Any other path: the provider's API, open to a token issued for this host.
    fn api(&self, req: &KitSeen, path: &str) -> Answer {
        let flavor = Flavor::of(&req.host);
        let issued = if flavor == Some(Flavor::Shopify) {
            // Shopify reads its own header, the token with no scheme.
            let token = header(req, "x-shopify-access-token").unwrap_or_default();
            self.state.lock().unwrap().access.get(token).cloned()
        } else {
            self.bearer(req, &["Bearer"])
        };
        let Some(issued) = issued else { return error(401, "invalid_token") };
        if flavor == Some(Flavor::Notion) && header(req, "notion-version") != Some(NOTION_VERSION) {
            return error(400, "missing_version: Notion-Version is required");
        }
        if issued.api_host != req.host {
            return error(401, "invalid_token: issued for another host");
        }
        if let Some(realm) = &issued.realm {
            if !path.starts_with(&format!("/v3/company/{realm}/")) {
                return error(403, "the path does not name the company the token is for");
            }
        }
        ok(json!({"ok": true, "host": req.host, "path": path, "kind": issued.kind}))
    }
}

/// PyJWT's verdict on an assertion: signature (RS256, the account's key),
/// `iss`, `sub`, `aud`, `scope`, required `iat`/`exp`, at most an hour.
const VERIFY_ASSERTION: &str = r#"
import json, sys
import jwt
a = json.load(sys.stdin)
try:
    claims = jwt.decode(a["assertion"], a["public_pem"], algorithms=["RS256"], audience=a["aud"],
                        issuer=a["iss"], options={"require": ["iss", "sub", "aud", "iat", "exp"]})
    ok = claims["sub"] == a["sub"] and claims.get("scope") == a["scope"] and 0 < claims["exp"] - claims["iat"] <= 3600
    print(json.dumps({"ok": ok, "claims": claims}))
except jwt.PyJWTError as e:
    print(json.dumps({"ok": False, "error": type(e).__name__}))
"#;

fn header<'a>(req: &'a KitSeen, name: &str) -> Option<&'a str> {
    req.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The static-credential APIs: Datadog's two headers, Trello's two query
/// parameters, Greenhouse's Basic with an empty password.
fn static_api(flavor: Flavor, req: &KitSeen, path: &str, query: &HashMap<String, String>) -> Answer {
    let allowed = match flavor {
        Flavor::Datadog => {
            header(req, "dd-api-key") == Some(DD_API_KEY) && header(req, "dd-application-key") == Some(DD_APP_KEY)
        }
        Flavor::Trello => {
            query.get("key").map(String::as_str) == Some(TRELLO_KEY)
                && query.get("token").map(String::as_str) == Some(TRELLO_TOKEN)
        }
        _ => {
            let expected = base64::engine::general_purpose::STANDARD.encode(format!("{GREENHOUSE_KEY}:"));
            header(req, "authorization") == Some(format!("Basic {expected}").as_str())
        }
    };
    if !allowed {
        return error(if flavor == Flavor::Datadog { 403 } else { 401 }, "invalid credentials");
    }
    let extra: serde_json::Map<String, Value> =
        req.headers.iter().filter(|(k, _)| k.starts_with("x-kit-")).map(|(k, v)| (k.clone(), json!(v))).collect();
    ok(json!({"ok": true, "host": req.host, "path": path, "echo": extra}))
}

fn ok(body: Value) -> Answer {
    (axum::http::StatusCode::OK, vec![("content-type".into(), "application/json".into())], body.to_string())
}

fn error(status: u16, error: &str) -> Answer {
    let status = axum::http::StatusCode::from_u16(status).unwrap();
    (status, vec![("content-type".into(), "application/json".into())], json!({ "error": error }).to_string())
}
