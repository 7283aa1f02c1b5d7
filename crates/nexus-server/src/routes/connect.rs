//! Connect sessions (SPEC 13): `POST /v1/connect/sessions` and the
//! `connect_url` page, which trades the token in its address for a cookie.

use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::middleware::Caller;
use crate::services::api_keys::{digest, Knocker};
use crate::services::connect_sessions::{self, ConnectSessionCreated, ConnectSessionInput, COOKIE};
use crate::state::AppState;
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

/// The strict headers of every Connect page.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head><body><main><h1>{title}</h1>{body}</main></body></html>"
    );
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.extensions_mut().insert(crate::middleware::error_json::KeepBody);
    resp
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
            let providers = match &session.providers {
                Some(p) => p.iter().map(|n| format!("<li>{}</li>", escape(n))).collect::<String>(),
                None => "<li>any provider</li>".into(),
            };
            page(
                StatusCode::OK,
                "Connect an account",
                &format!("<p>Connections made here are for this application only.</p><ul>{providers}</ul>"),
            )
        }
        Ok(Err(_)) => page(StatusCode::BAD_REQUEST, "This link cannot be used", EXPIRED),
        Err(e) => page(e.status(), "Connect", &escape(&e.message)),
    }
}
