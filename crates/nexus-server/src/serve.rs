//! The accept loop of `nexus serve`: each connection goes to the
//! [`ProxyLane`], which serves `/v1/proxy/*` on the relay's HTTP/1.1 and
//! hands the connection to hyper's HTTP/1.1 server under the router at its
//! first other request (every connection goes straight to hyper when CORS
//! is configured); with the limits a public listener needs and a graceful
//! stop.
//!
//! It replaces `axum::serve`, which sets no timer: a client that sent half a
//! request head kept its connection (and a task) for as long as it liked.
//! Here a head must arrive whole within `HEAD_TIMEOUT` (30 s by default; an
//! idle keep-alive connection is closed after the same time), and it may be at
//! most [`nexus_bridge::h1::MAX_HEAD`] bytes of at most
//! [`nexus_bridge::h1::MAX_HEADERS`] fields, the limits the lane and `nexus
//! proxy` apply too (`431` beyond them), so every way in refuses the same
//! heads.

use crate::proxy_lane::ProxyLane;
use axum::extract::ConnectInfo;
use axum::Router;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
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
    let (stop, stopping) = watch::channel(false);
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let hyper = Hyper { http: http.clone(), app: app.clone(), peer, stop: stopping.clone() };
        match lane.clone() {
            Some(lane) => {
                let stop = stopping.clone();
                connections.spawn(async move { lane.serve(stream, peer, stop, |io| hyper.serve(io)).await });
            }
            None => {
                connections.spawn(hyper.serve(stream));
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait()).await.is_err() {
        tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
}

/// A connection's requests served by hyper's server and the router.
struct Hyper {
    http: hyper::server::conn::http1::Builder,
    app: Router,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
}

impl Hyper {
    /// Serves `io` until it closes; when the server stops, the request in
    /// flight is finished and the connection closed.
    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Hyper { http, app, peer, stop } = self;
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            // What `into_make_service_with_connect_info` would add: the
            // peer, which `middleware::caller` reads.
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req)
        });
        let connection = http.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        // A client that goes away mid-request is no error of ours.
        tokio::select! {
            // The connection first: a head the lane handed over is read
            // (and answered) before a stop can close the connection.
            biased;
            _ = connection.as_mut() => return,
            () = nexus_bridge::relay::stop_requested(stop) => {}
        }
        connection.as_mut().graceful_shutdown();
        let _ = connection.await;
    }
}
