//! Connect sessions (SPEC 13): `POST /v1/connect/sessions` and the
//! `connect_url` page, which trades the token in its address for a cookie.

use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::middleware::Caller;
use crate::services::api_keys::{digest, Knocker};
use crate::services::connect_sessions::{self, ConnectSessionCreated, ConnectSessionInput, COOKIE};
use crate::services::connect_ui::{self, MessagePage};
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use std::collections::BTreeMap;

/// Starts a Connect session: a 30-minute token for one workspace.
#[utoipa::path(post, path = "/v1/connect/sessions", tag = "connect",
    request_body = ConnectSessionInput,
    security(("api_key" = [])),
    responses(
        (status = 201, body = ConnectSessionCreated),
        (status = 400, body = ErrorBody),
        (status = 403, description = "not an admin or connect key, or a workspace the key may not use", body = ErrorBody)
    ))]
pub async fn create_session(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<ConnectSessionCreated>), ApiError> {
    connect_sessions::create(&state, &caller, body).await.map(|v| (StatusCode::CREATED, Json(v)))
}

/// A plain Connect page (`body` is HTML the caller escaped).
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/connect/assets/connect.css\"></head>\
         <body><main class=\"card\"><h1>{title}</h1>{body}</main></body></html>"
    );
    super::html::page(status, html, super::html::CONNECT)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

const EXPIRED: &str = "<p>This link has expired or is not valid. Nothing was started.</p>\
    <p>Go back to the application you came from and connect again.</p>";

/// `GET /connect?session=…`: trades the token for an HttpOnly, SameSite=Strict
/// cookie scoped to `/connect` and takes it out of the address bar; `GET
/// /connect` with that cookie shows what the session may connect.
pub async fn connect_page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>,
) -> Response {
    let who = Knocker::of(caller.ip);
    if let Some(token) = q.get("session") {
        // Like a key: a guess costs no database work once its address is limited.
        if state.keys.may_look_up(who, &digest(token.as_bytes())).is_err() {
            return page(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                "<p>Wait a moment, then open the link again.</p>",
            );
        }
        let session = match connect_sessions::find(&state, token.as_bytes()).await {
            Ok(Ok(session)) => session,
            Ok(Err(_)) => {
                let _ = state.keys.count_failure(who);
                return page(StatusCode::BAD_REQUEST, "This link cannot be used", EXPIRED);
            }
            Err(e) => return page(e.status(), "Connect", &escape(&e.message)),
        };
        let remaining = (session.expires_at - state.clock.now_micros()).max(0) / 1_000_000;
        let secure = if state.config.base_url.scheme() == "https" { "; Secure" } else { "" };
        let cookie = format!("{COOKIE}={token}; Path=/connect; HttpOnly; SameSite=Strict; Max-Age={remaining}{secure}");
        // A page of our own, not a redirect: the user arrives from the
        // application's site, and a browser sends a SameSite=Strict cookie on
        // a navigation that starts here, not on a redirect of the cross-site
        // one. It moves on at once, leaving the token out of the address bar
        // (and, with no-referrer, out of any Referer).
        let mut resp = page(
            StatusCode::OK,
            "Connect",
            "<meta http-equiv=\"refresh\" content=\"0;url=/connect\"><p><a href=\"/connect\">Continue</a></p>",
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        resp.headers_mut().insert("refresh", HeaderValue::from_static("0; url=/connect"));
        return resp;
    }
    let Some(token) = cookie_token(&headers) else {
        return page(StatusCode::BAD_REQUEST, "This link cannot be used", EXPIRED);
    };
    if state.keys.may_look_up(who, &digest(token.as_bytes())).is_err() {
        return page(StatusCode::TOO_MANY_REQUESTS, "Too many attempts", "<p>Wait a moment, then try again.</p>");
    }
    match connect_sessions::find(&state, token.as_bytes()).await {
        Ok(Ok(session)) => {
            let query = q.get("q").map(String::as_str).unwrap_or_default();
            match connect_ui::picker(&state, &session, query).await {
                Ok(picker) => render(StatusCode::OK, &picker),
                Err(e) => failure(&e),
            }
        }
        Ok(Err(_)) => page(StatusCode::BAD_REQUEST, "This link cannot be used", EXPIRED),
        Err(e) => page(e.status(), "Connect", &escape(&e.message)),
    }
}

/// A rendered template with the Connect pages' headers.
fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => super::html::page(status, html, super::html::CONNECT),
        Err(e) => {
            tracing::error!(error = %e, "a Connect page could not be rendered");
            page(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "<p>Try again in a moment.</p>")
        }
    }
}

/// An error page that offers to try again (back to the picker).
fn failure(e: &ApiError) -> Response {
    let status = if e.status().is_server_error() { e.status() } else { StatusCode::BAD_REQUEST };
    let message = MessagePage {
        title: "That did not work".into(),
        message: e.message.clone(),
        error: true,
        retry: Some("/connect".into()),
    };
    render(status, &message)
}

/// `POST /connect/start`: starts a connection to the chosen provider and
/// sends the user on (the provider's consent page or the credential form).
pub async fn start(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    form: Result<axum::extract::Form<BTreeMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(axum::extract::Form(form)) = form else {
        return page(
            StatusCode::BAD_REQUEST,
            "Choose a service",
            "<p><a href=\"/connect\">Choose a service from the list.</a></p>",
        );
    };
    // The cookie is SameSite=Strict; a foreign page's form is refused all the same.
    let base = state.config.base_url.origin().ascii_serialization();
    let foreign = |name: header::HeaderName| {
        headers.get(name).and_then(|v| v.to_str().ok()).is_some_and(|o| o != base && o != "null")
    };
    // Only a page of Nexus's own may post here: a browser says so in
    // Sec-Fetch-Site (a sibling subdomain is "same-site", and refused too).
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let not_ours = fetch_site.is_some_and(|s| s != "same-origin" && s != "none");
    let null_origin = headers.get(header::ORIGIN).is_some_and(|o| o == "null");
    if foreign(header::ORIGIN) || not_ours || (null_origin && fetch_site != Some("same-origin")) {
        return page(StatusCode::FORBIDDEN, "This request was refused", "<p>Start again from the application.</p>");
    }
    let Some(token) = cookie_token(&headers) else {
        return page(StatusCode::BAD_REQUEST, "This link cannot be used", EXPIRED);
    };
    let who = Knocker::of(caller.ip);
    if state.keys.may_look_up(who, &digest(token.as_bytes())).is_err() {
        return page(StatusCode::TOO_MANY_REQUESTS, "Too many attempts", "<p>Wait a moment, then try again.</p>");
    }
    let session = match connect_sessions::find(&state, token.as_bytes()).await {
        Ok(Ok(session)) => session,
        Ok(Err(_)) => return page(StatusCode::BAD_REQUEST, "This link cannot be used", EXPIRED),
        Err(e) => return failure(&e),
    };
    match connect_ui::start(&state, &caller, session, &form).await {
        Ok(connect_ui::Next::Config(config)) => render(StatusCode::OK, &config),
        Ok(connect_ui::Next::Redirect(next)) => {
            let mut resp = StatusCode::SEE_OTHER.into_response();
            if let Ok(v) = HeaderValue::from_str(&next) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => failure(&e),
    }
}

/// `frame-ancestors 'none'` on every Connect page, unless
/// `CONNECT_FRAME_ANCESTORS` names the origins that may embed them.
pub async fn frame_ancestors(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut resp = next.run(req).await;
    let allowed = &state.config.connect_frame_ancestors;
    if allowed.is_empty() {
        return resp;
    }
    let csp = resp.headers().get(header::CONTENT_SECURITY_POLICY).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(csp) = csp {
        let replaced = csp.replace("frame-ancestors 'none'", &format!("frame-ancestors {}", allowed.join(" ")));
        if let Ok(v) = HeaderValue::from_str(&replaced) {
            resp.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
        }
    }
    resp
}

/// The Connect UI's stylesheet (served by Nexus: no third-party asset).
pub async fn stylesheet() -> Response {
    let mut resp = include_str!("../../assets/connect.css").into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}
