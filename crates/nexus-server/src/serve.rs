//! The accept loop of `nexus serve`: hyper's HTTP/1.1 server under the
//! router (and, for `/v1/proxy/*`, the [`ProxyLane`] beside it), with the
//! limits a public listener needs and a graceful stop.
//!
//! It replaces `axum::serve`, which sets no timer: a client that sent half a
//! request head kept its connection (and a task) for as long as it liked.
//! Here a head must arrive whole within `HEAD_TIMEOUT` (30 s by default; an
//! idle keep-alive connection is closed after the same time), and it may be at
//! most [`nexus_bridge::h1::MAX_HEAD`] bytes of at most
//! [`nexus_bridge::h1::MAX_HEADERS`] fields, the limits `nexus proxy`
//! applies too (`431` beyond them), so both proxies refuse the same heads.

use crate::proxy_lane::ProxyLane;
use axum::extract::ConnectInfo;
use axum::Router;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How long a stop waits for requests in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The next connection on `listener` (with `TCP_NODELAY`). A failed accept
/// (out of file descriptors, say) is logged and tried again after 50 ms,
/// not spun on. `nexus proxy` accepts the same way.
pub async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and waits (up to [`DRAIN_TIMEOUT`]) for connections to finish
/// the requests they are serving. Requests `lane` serves (the Gateway
/// proxy's) go to it instead of `app`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    lane: Option<ProxyLane>,
    head_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_header_size(nexus_bridge::h1::MAX_HEAD)
        .max_headers(nexus_bridge::h1::MAX_HEADERS);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let (app, lane) = (app.clone(), lane.clone());
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let (app, lane) = (app.clone(), lane.clone());
            async move {
                if let Some((lane, route)) = lane.and_then(|lane| lane.route(&req).map(|route| (lane, route))) {
                    return Ok::<_, Infallible>(lane.serve(route, peer.ip(), req).await);
                }
                // What `into_make_service_with_connect_info` would add: the
                // peer, which `middleware::caller` reads.
                req.extensions_mut().insert(ConnectInfo(peer));
                app.oneshot(req).await
            }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that goes away mid-request is no error of ours.
            let _ = connection.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
}
