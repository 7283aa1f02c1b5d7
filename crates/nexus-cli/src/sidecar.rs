//! `nexus proxy`: a local signing proxy for agents in any language. An agent
//! calls `http://127.0.0.1:PORT/{connection_id}/{path}`; the sidecar fetches
//! the connection's strategy and credentials from the Gateway (cached in its
//! memory only, through `nexus-bridge`), signs the request and forwards it to
//! the provider's `api_base_url` — never to another host.
//!
//! It is a plain hyper HTTP/1.1 server with no router or middleware in the
//! way: a hop that every request of the agent pays for should cost as little
//! as nginx's `proxy_pass` (see `bench/proxy.sh`).

use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use nexus_bridge::{Bridge, Forward, GatewayError, Link, SendError};
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Request bodies are read whole (signing strategies hash them), up to this size.
const BODY_LIMIT: usize = 10 * 1024 * 1024;
/// How long an agent may take to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the sidecar answers: the provider's body as it streams, or its own JSON.
type Body = Either<Incoming, Full<Bytes>>;

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Body> {
    let body = json!({ "code": code, "message": message.into() }).to_string();
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn gateway_error(e: &GatewayError) -> Response<Body> {
    match e {
        GatewayError::AttentionRequired(_) => error(StatusCode::CONFLICT, "attention_required", e.to_string()),
        GatewayError::NotFound(m) => error(StatusCode::NOT_FOUND, "not_found", m.clone()),
        GatewayError::Conflict { code, message } => error(StatusCode::CONFLICT, code, message.clone()),
        GatewayError::Gone(m) => error(StatusCode::GONE, "provider_deleted", m.clone()),
        GatewayError::Unauthorized => error(StatusCode::BAD_GATEWAY, "gateway_refused_api_key", e.to_string()),
        GatewayError::Invalid(m) => error(StatusCode::BAD_REQUEST, "invalid_input", m.clone()),
        GatewayError::Unavailable(m) => error(StatusCode::BAD_GATEWAY, "gateway_unavailable", m.clone()),
    }
}

/// The whole request body, or the answer that refuses it.
async fn read_body(body: Incoming) -> Result<Bytes, Response<Body>> {
    use hyper::body::Body as _;
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {BODY_LIMIT} bytes"),
        )),
        Err(_) => Err(error(StatusCode::BAD_REQUEST, "invalid_input", "the request body could not be read")),
    }
}

/// The provider connection of one agent connection. HTTP/1.1 serves a
/// connection's requests one after another, so each request takes the link
/// and puts it back; dropping the last holder hands it to the idle list.
type SharedLink = Arc<Mutex<Option<Link>>>;

async fn handle(bridge: Arc<Bridge>, link: SharedLink, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let mut own = link.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_else(|| bridge.link());
    let resp = forward(&bridge, &mut own, req).await;
    *link.lock().unwrap_or_else(|p| p.into_inner()) = Some(own);
    Ok(resp)
}

async fn forward(bridge: &Bridge, link: &mut Link, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let (id, path) = nexus_bridge::split_connection_path(parts.uri.path().trim_start_matches('/'));
    if id.is_empty() {
        return error(StatusCode::NOT_FOUND, "not_found", "call /{connection_id}/{path} on this proxy");
    }
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let answer = match bridge.credentials(id).await {
        Ok(a) => a,
        Err(e) => return gateway_error(&e),
    };
    let base = match answer.base() {
        Some(Ok(base)) => base,
        Some(Err(m)) => return error(StatusCode::CONFLICT, "provider_misconfigured", format!("api_base_url: {m}")),
        None => {
            return error(StatusCode::CONFLICT, "no_api_base_url", "the provider has no api_base_url to proxy to");
        }
    };
    let fwd = match Forward::to(base, path, parts.uri.query(), parts.method, parts.headers, body) {
        Ok(f) => f,
        Err(m) => return error(StatusCode::BAD_REQUEST, "invalid_input", format!("path: {m}")),
    };
    match bridge.forward_on(link, id, &fwd, answer).await {
        Ok(resp) => nexus_bridge::forward::relay(resp).map(Either::Left),
        Err(SendError::Gateway(e)) => gateway_error(&e),
        Err(SendError::Sign(e)) => error(StatusCode::CONFLICT, "cannot_sign", e.to_string()),
        Err(SendError::Provider(m)) => error(StatusCode::BAD_GATEWAY, "provider_unreachable", m),
        Err(e @ SendError::ProviderTimeout) => error(StatusCode::GATEWAY_TIMEOUT, "provider_timeout", e.to_string()),
        Err(SendError::StreamingBody) => {
            error(StatusCode::BAD_REQUEST, "invalid_input", "streaming bodies are not supported")
        }
    }
}

/// Keeps the runtime's next timer wake-up less than a second away.
///
/// Each request starts timers (the agent's next request head, the provider's
/// answer), each due later than anything already set. Tokio interrupts its
/// event loop (a write to an eventfd: one more system call per request)
/// whenever a timer is set earlier than the loop's next planned wake-up; with
/// a timer always due within a second, the per-request timers never do. The
/// price is one idle wake-up a second. `SYSCALLS=1 bench/proxy.sh` counts
/// the calls per request. (The Gateway's multi-threaded runtime wakes its
/// threads for other reasons; there this changes nothing measurable.)
async fn keep_timers_near() {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// Serves until SIGINT/SIGTERM, then lets requests in flight finish (for up to 10 s).
pub async fn serve(listen: SocketAddr, gateway: String, api_key: String) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("--listen {listen} could not be bound: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, gateway = %gateway, "nexus proxy is serving");
    println!("nexus proxy listening on http://{addr} (gateway {gateway})");
    // One `Arc` to clone per request rather than the bridge's several.
    let bridge = Arc::new(Bridge::new(gateway, api_key));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEAD_TIMEOUT);
    let ticker = tokio::spawn(keep_timers_near());
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    let shutdown = nexus_server::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, for instance: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let bridge = bridge.clone();
        let link: SharedLink = Arc::new(Mutex::new(None));
        let service = hyper::service::service_fn(move |req| handle(bridge.clone(), link.clone(), req));
        let conn = connections.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "agent connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
    ticker.abort();
    Ok(())
}
