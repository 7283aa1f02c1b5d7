//! Building and running the server: the router with its layers, the OpenAPI
//! document collected from the handlers, and graceful shutdown.

use crate::config::Config;
use crate::error::{ApiError, ErrorBody};
use crate::middleware::{api_key, body_limit, caller, error_json, request_log};
use crate::routes::{
    api_keys, audit, capture, catalog, connect, connections, health, invalidations, providers, proxy, tokens, webhooks,
};
use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::IntoResponse;
use axum::{middleware as mw, Json, Router};
use nexus_store::Store;
use std::future::Future;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "Nexus", description = "Credential broker for software agents."),
    modifiers(&ApiKeyScheme),
    components(schemas(
        ErrorBody,
        nexus_core::ProviderInput,
        nexus_core::wire::CaptureRequest,
        nexus_core::AuditEvent,
        nexus_core::ConnectionStatus,
        nexus_core::AuthType
    ))
)]
struct ApiDoc;

struct ApiKeyScheme;

impl Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
    }
}

/// The `/v1/*` routes (behind the API key) and the public ones, with the
/// OpenAPI document describing both.
fn routers(state: &AppState) -> (Router<AppState>, Router<AppState>, serde_json::Value) {
    let (v1, v1_doc) = v1_routes().split_for_parts();
    let (public, public_doc) = public_routes().split_for_parts();

    let mut doc = ApiDoc::openapi();
    doc.merge(v1_doc);
    doc.merge(public_doc);
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut doc = serde_json::to_value(&doc).unwrap_or_default();
    crate::openapi::complete(&mut doc);

    let api_key = mw::from_fn_with_state(state.clone(), api_key::require_api_key);
    // The proxy routes' two layers in one `layer` call (see `router`).
    let proxy_routes = Router::new()
        .route(proxy::ROUTES[0], axum::routing::any(proxy::proxy))
        .route(proxy::ROUTES[1], axum::routing::any(proxy::proxy))
        .route(proxy::ROUTES[2], axum::routing::any(proxy::proxy))
        .layer(
            tower::ServiceBuilder::new().layer(api_key.clone()).layer(DefaultBodyLimit::max(proxy::PROXY_BODY_LIMIT)),
        );
    let mut v1 = v1.layer(api_key).merge(proxy_routes);
    if let Some(cors) = cors_layer(&state.config) {
        v1 = v1.layer(cors);
    }
    (v1, public, doc)
}

fn cors_layer(config: &Config) -> Option<CorsLayer> {
    if config.cors_allowed_origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> =
        config.cors_allowed_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
            // `Authorization` carries a Connect session's token (SPEC 13).
            .allow_headers([
                axum::http::header::CONTENT_TYPE,
                HeaderName::from_static("x-api-key"),
                axum::http::header::AUTHORIZATION,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// The whole application router for `state`.
pub fn router(state: AppState) -> Router {
    let (v1, public, doc) = routers(&state);
    let doc = std::sync::Arc::new(doc);
    let body_limit = state.config.body_limit;
    Router::new()
        .merge(v1)
        .merge(public)
        .route("/openapi.json", axum::routing::get(move || async move { Json(doc.as_ref().clone()) }))
        .route(&state.config.redirect_path, axum::routing::get(connections::oauth_callback))
        .merge(
            // The Connect UI's pages (their CSP names the origins that may embed them).
            Router::new()
                .route("/auth/capture", axum::routing::get(capture::capture_page).post(capture::capture_form))
                .route("/connect", axum::routing::get(connect::connect_page))
                .route("/connect/start", axum::routing::post(connect::start))
                .route("/connect/assets/connect.css", axum::routing::get(connect::stylesheet))
                .layer(mw::from_fn_with_state(state.clone(), connect::frame_ancestors)),
        )
        .fallback(|| async { ApiError::not_found("no such endpoint").into_response() })
        // One `layer` call for the whole stack (outermost first): each call
        // boxes every route once more, and a request clones the boxes
        // beneath each one it passes, so seven calls cost a third of the
        // Gateway proxy's instructions (`INSTRUCTIONS=1 bench/proxy.sh`).
        .layer(
            tower::ServiceBuilder::new()
                .layer(mw::from_fn_with_state(state.clone(), request_log::log_request))
                .layer(mw::from_fn_with_state(state.clone(), caller::identify))
                .layer(mw::map_response(error_json::json_errors))
                .layer(mw::from_fn_with_state(state.clone(), body_limit::refuse_declared_excess))
                // A request that has no answer head after REQUEST_DEADLINE
                // (the body sent byte by byte, say), and a body that pauses
                // longer than HEAD_TIMEOUT, are cut off instead of holding a
                // connection and a task (a refresh it started still
                // finishes: it runs on its own).
                .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    REQUEST_DEADLINE,
                ))
                .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(state.config.head_timeout))
                .layer(DefaultBodyLimit::max(body_limit)),
        )
        .with_state(state)
}

/// Every `/v1/*` route, documented by its handler's `#[utoipa::path]`.
fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(providers::create_provider, providers::list_providers))
        .routes(routes!(providers::providers_metadata))
        .routes(routes!(
            providers::get_provider,
            providers::patch_provider,
            providers::put_provider,
            providers::delete_provider
        ))
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::audit_head))
        .routes(routes!(connections::request_connection))
        .routes(routes!(connections::check_connection))
        .routes(routes!(connections::list_connections))
        .routes(routes!(connections::revoke_connection))
        .routes(routes!(capture::capture_schema))
        .routes(routes!(capture::capture_credential))
        .routes(routes!(tokens::get_token))
        .routes(routes!(tokens::refresh_token))
        .routes(routes!(invalidations::invalidations))
        .routes(routes!(catalog::list_catalog))
        .routes(routes!(catalog::get_catalog_entry))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(webhooks::get_webhook, webhooks::delete_webhook))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::get_delivery))
        .routes(routes!(webhooks::redeliver))
        .routes(routes!(api_keys::create_api_key, api_keys::list_api_keys))
        .routes(routes!(api_keys::revoke_api_key))
        .routes(routes!(connect::create_session))
}

/// Routes without an API key.
fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health::health)).routes(routes!(health::ready)).routes(routes!(catalog::logo))
}

/// Logs the audit chain's head every minute (SPEC 6b), until stopped.
async fn log_audit_head(state: AppState) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        crate::services::audit::log_head(&state).await;
    }
}

/// How long a request may take to its answer's head: reading its body,
/// a provider's 60 s, a refresh.
pub const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// How long a stop waits for refreshes in flight (longer than a provider
/// call may take: the outbound client gives up after 15 s).
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("DATABASE_URL could not be opened: {0}")]
    Database(#[from] nexus_store::StoreError),
    #[error("{0}")]
    KeysMissing(String),
    #[error("BIND {addr} could not be bound: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A built, bound, not yet serving instance.
pub struct Application {
    listener: TcpListener,
    /// `GET /metrics`, when `METRICS_BIND` is set.
    metrics: Option<TcpListener>,
    state: AppState,
}

impl Application {
    /// Opens the store (applying migrations) and binds the listener.
    pub async fn build(mut config: Config) -> Result<Application, StartError> {
        // Each background refresh in flight holds its row lock, so a pooled
        // connection, while the provider answers: the pool keeps 8 more
        // than REFRESH_CONCURRENCY for the API. Replicas share PostgreSQL's
        // max_connections (100 by default).
        let pool = config.refresh_concurrency as u32 + 8;
        let store =
            Store::connect_with_pool(&config.database_url, pool).await?.with_audit_keys(config.audit_keys.clone());
        // Every secret must open: a key dropped from ENCRYPTION_KEYS too
        // early is named here, not found at a user's next token request.
        let missing = crate::vault::status(&store).await?.missing(&config.keyring);
        if !missing.is_empty() {
            let keys: Vec<String> = missing.iter().map(|(k, n)| format!("{n} under key {k}")).collect();
            return Err(StartError::KeysMissing(format!(
                "ENCRYPTION_KEYS cannot open every stored secret ({}; it holds {}): put the key back (first the new key, then the old) and run `nexus vault rewrap` before removing it",
                keys.join(", "),
                config.keyring.key_ids().join(", ")
            )));
        }
        // After an upgrade the chain ends in unkeyed rows: sign after them.
        let signed = store
            .sign_unkeyed_tail(nexus_store::NewAudit {
                data: serde_json::json!({ "key_id": config.audit_keys.signing_key_id() }),
                ..nexus_store::NewAudit::new(nexus_core::AuditEvent::AuditSigningStarted)
            })
            .await?;
        if signed {
            tracing::info!(key_id = config.audit_keys.signing_key_id(), "audit rows are signed from now on");
        }
        let listener =
            TcpListener::bind(config.bind).await.map_err(|source| StartError::Bind { addr: config.bind, source })?;
        // `BIND=…:0` picks a free port; a BASE_URL derived from it names the real one.
        if config.base_url.port() == Some(0) {
            if let Ok(addr) = listener.local_addr() {
                let _ = config.base_url.set_port(Some(addr.port()));
            }
        }
        if config.allowed_return_domains.is_none() {
            tracing::warn!("ALLOWED_RETURN_DOMAINS is not set: return_url may point at any host");
        }
        let metrics = match config.metrics_bind {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?),
            None => None,
        };
        Ok(Application { listener, metrics, state: AppState::new(config, store) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.state.config.bind)
    }

    /// Where `GET /metrics` is served, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets
    /// in-flight requests finish before returning.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let state = self.state.clone();
        let refresher = tokio::spawn(crate::services::refresher::run(state.clone()));
        let webhook_sender = tokio::spawn(crate::services::webhook_sender::run(state.clone()));
        let housekeeping = tokio::spawn(crate::services::housekeeping::run(state.clone()));
        let head_log = tokio::spawn(log_audit_head(state.clone()));
        let metrics = self.metrics.map(|listener| tokio::spawn(serve_metrics(listener, state.clone())));
        let head_timeout = state.config.head_timeout;
        let lane = crate::proxy_lane::ProxyLane::new(self.state.clone());
        let app = router(self.state);
        let stopping = state.clone();
        let shutdown = async move {
            shutdown.await;
            stopping.begin_stopping();
        };
        crate::serve::serve(self.listener, app, lane, head_timeout, shutdown).await;
        // The refresher starts nothing new now; what it (and any request)
        // began with a provider finishes, within the grace period.
        state.tasks.close();
        let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
            let _ = refresher.await;
            let _ = webhook_sender.await;
            let _ = housekeeping.await;
            state.tasks.wait().await;
        })
        .await;
        if finished.is_err() {
            tracing::error!(
                grace_secs = SHUTDOWN_GRACE.as_secs(),
                "refreshes still in flight at the end of the grace period; stopping without them"
            );
        }
        state.close_audit().await;
        head_log.abort();
        if let Some(m) = metrics {
            m.abort();
        }
        crate::services::audit::log_head(&state).await;
        state.store.close().await;
        Ok(())
    }
}

/// `GET /metrics` on its own listener, so it is never reachable where the
/// API is; anything else there is a 404.
async fn serve_metrics(listener: TcpListener, state: AppState) {
    let stopping = state.stopping();
    let render = move || {
        let state = state.clone();
        Box::pin(async move { state.render_metrics().await })
            as std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>
    };
    crate::metrics::serve(listener, render, stopping).await;
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: a SIGTERM that arrives
/// while the first requests are served (a supervisor stopping a server that
/// just became ready) must start a graceful stop, not kill the process.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (mut interrupt, mut terminate) = {
        use tokio::signal::unix::{signal, SignalKind};
        (signal(SignalKind::interrupt()).ok(), signal(SignalKind::terminate()).ok())
    };
    async move {
        #[cfg(unix)]
        {
            let interrupt = async {
                match interrupt.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let terminate = async {
                match terminate.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = interrupt => {},
                _ = terminate => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down: finishing in-flight requests");
    }
}
