//! `/v1/proxy/*` served beside the router, on `nexus proxy`'s HTTP/1.1
//! relay rather than on hyper: the Gateway proxy's hot path.
//!
//! The lane reads each request head of an agent's connection itself
//! ([`nexus_bridge::relay::read_head`]). A request for the proxy route is
//! served here, with the router's rules in the router's order, as plain
//! calls to the functions its layers call:
//!
//! 1. the request id and, when the answer is ready, the access log line
//!    ([`request_log`]);
//! 2. a declared `Content-Length` above [`PROXY_BODY_LIMIT`] refused at once
//!    ([`body_limit`]);
//! 3. the caller ([`caller`]), then the network allowlist and the API key,
//!    refusals audited ([`api_key`]);
//! 4. the body read whole, at most [`PROXY_BODY_LIMIT`] bytes, each part
//!    within `HEAD_TIMEOUT` of the last, the whole request to its answer's
//!    head within [`REQUEST_DEADLINE`];
//! 5. the token answer and target ([`proxy::prepare`]), then the relay's
//!    provider side ([`Sender`]: signing, the provider connection paired
//!    with the agent's, the 401 rule), the answer streamed back as the
//!    relay frames it; errors as JSON.
//!
//! At the first request of another route (or any request the relay's parser
//! would refuse that is not for the proxy), the connection, with what was
//! read of it, goes to hyper and the router for good. A path with no
//! connection id is the router's (`404`), and so is everything when
//! `CORS_ALLOWED_ORIGINS` is set (CORS headers and preflights are the
//! router's).
//!
//! hyper's server and client cost the proxied request about three times
//! the instructions of nginx's `proxy_pass` (`INSTRUCTIONS=1
//! bench/proxy.sh`); the relay's HTTP/1.1 costs about what nginx's does,
//! and its framing rules are stricter (a request with both
//! `Content-Length` and `Transfer-Encoding` is refused).

use crate::app::REQUEST_DEADLINE;
use crate::error::ApiError;
use crate::middleware::{api_key, body_limit, caller, request_log};
use crate::routes::proxy::{self as route, PROXY_BODY_LIMIT};
use crate::services::proxy;
use crate::state::AppState;
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BytesMut};
use http::header;
use nexus_bridge::h1::{Agent, RequestBody, RequestHead};
use nexus_bridge::relay::{self, Own, Sender};
use nexus_bridge::upstream::Upstream;
use nexus_core::wire::ErrorCode;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// The lane, when it may serve: `None` when `CORS_ALLOWED_ORIGINS` is set.
#[derive(Clone)]
pub struct ProxyLane {
    state: AppState,
}

impl From<Own> for ApiError {
    fn from(own: Own) -> ApiError {
        ApiError::new(own.code, own.message)
    }
}

/// How a request ended, for the connection: serve the next one, or close
/// (after lingering, when the agent may still be sending).
enum Next {
    KeepAlive,
    Close,
    Linger,
}

impl ProxyLane {
    pub fn new(state: AppState) -> Option<ProxyLane> {
        state.config.cors_allowed_origins.is_empty().then_some(ProxyLane { state })
    }

    fn sender(&self) -> &Sender {
        &self.state.proxy_sender
    }

    /// Serves an agent's connection from `peer` until it closes, or until
    /// `stop` turns `true` (a request in flight is finished first). At the
    /// first request that is not the lane's, the connection (with what was
    /// read of it) is handed to `other`.
    pub async fn serve<F, Fut>(&self, mut agent: TcpStream, peer: SocketAddr, stop: watch::Receiver<bool>, other: F)
    where
        F: FnOnce(Prefixed) -> Fut,
        Fut: Future<Output = ()>,
    {
        let head_timeout = self.state.config.head_timeout;
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let mut link: Option<Upstream> = None;
        let stopped = stop.clone();
        let stopping = relay::stop_requested(stop);
        tokio::pin!(stopping);
        let handed = loop {
            let head = tokio::select! {
                biased;
                head = relay::read_head(&mut agent, &mut buf, head_timeout) => head,
                () = &mut stopping => break false,
            };
            let (head, len, route) = match head {
                Ok(None) => break false,
                Ok(Some((head, len))) => match route::route_of(head.target.path()) {
                    Some(route) => (head, len, route),
                    None => break true,
                },
                // A head the relay refuses: answered here if it is for the
                // proxy, else hyper answers it in its own way.
                Err(refusal) if for_the_lane(&buf) => {
                    let refused = ApiError::new(refusal.code, refusal.message);
                    if self.answer(&mut agent, None, refused.into_response(), Next::Linger).await.is_ok() {
                        relay::linger(&mut agent).await;
                    }
                    break false;
                }
                Err(_) => break true,
            };
            buf.advance(len);
            match self.exchange(&mut agent, &mut buf, &mut link, peer, head, route).await {
                Next::KeepAlive if !*stopped.borrow() => {}
                Next::Linger => {
                    relay::linger(&mut agent).await;
                    break false;
                }
                _ => break false,
            }
        };
        if let Some(up) = link {
            self.sender().upstreams().check_in(up);
        }
        if handed {
            other(Prefixed { prefix: buf, stream: agent }).await;
        }
    }

    /// One proxied request: the router's rules, the send, the answer relayed.
    async fn exchange(
        &self,
        agent: &mut TcpStream,
        buf: &mut BytesMut,
        link: &mut Option<Upstream>,
        peer: SocketAddr,
        head: RequestHead,
        route: &'static str,
    ) -> Next {
        let started = Instant::now();
        let state = &self.state;
        let id = request_log::request_id(&head.headers);
        let method = head.method.clone();
        let framing =
            Agent { head_request: method == http::Method::HEAD, http10: head.http10, keep_alive: head.keep_alive };
        // Counted and logged when the answer's head is ready, as the router
        // does (a long body streams after).
        let finished = |status: u16| {
            state.metrics.http(route, method.as_str(), status, started.elapsed());
            request_log::line(&id, &method, route, started, status);
        };
        match self.forward(agent, buf, link, peer, head, framing).await {
            Ok((mut up, mut resp)) => {
                finished(resp.status);
                set_request_id(&mut resp.out, &id);
                let close = resp.close_agent;
                match relay::relay_body(agent, &mut up, resp, self.sender().timeout()).await {
                    Ok(reusable) => {
                        if reusable {
                            up.answered();
                            *link = Some(up);
                        }
                        if close {
                            Next::Close
                        } else {
                            Next::KeepAlive
                        }
                    }
                    // Cut short: the agent's connection cannot go on.
                    Err(()) => Next::Close,
                }
            }
            Err(Some(Refused { response, next })) => {
                finished(response.status().as_u16());
                let next = match next {
                    Next::KeepAlive if !framing.keep_alive => Next::Close,
                    next => next,
                };
                self.answer(agent, Some((framing, &id)), response, next).await.unwrap_or(Next::Close)
            }
            // The agent's connection ended inside its body: no one to answer,
            // counted as the `400` the router gives an unreadable body.
            Err(None) => {
                finished(400);
                Next::Close
            }
        }
    }

    /// Steps 2–5 of the module's list, to the head of the provider's answer.
    async fn forward(
        &self,
        agent: &mut TcpStream,
        buf: &mut BytesMut,
        link: &mut Option<Upstream>,
        peer: SocketAddr,
        head: RequestHead,
        framing: Agent,
    ) -> Result<(Upstream, nexus_bridge::h1::ResponseHead), Option<Refused>> {
        let state = &self.state;
        if let Some(refused) = body_limit::declared_excess(&head.headers, PROXY_BODY_LIMIT) {
            return Err(Some(Refused { response: refused, next: Next::Linger }));
        }
        let answer = async move {
            let mut caller = caller::caller_of(state, peer.ip(), &head.headers);
            if let Err(e) = api_key::admit(state, &mut caller, &head.method, head.target.path(), &head.headers).await {
                // Refused before its body is read: a body already here whole
                // is passed over, one still to come closes the connection.
                let next = match head.body {
                    RequestBody::Length(n) if buf.len() as u64 >= n => {
                        buf.advance(n as usize);
                        Next::KeepAlive
                    }
                    _ => Next::Linger,
                };
                return Err(Some(Refused { response: e.into_response(), next }));
            }
            let body = match relay::read_body(agent, buf, &head, PROXY_BODY_LIMIT, state.config.head_timeout).await {
                Ok(Ok(body)) => body,
                Ok(Err(own)) => {
                    return Err(Some(Refused { response: ApiError::from(own).into_response(), next: Next::Linger }))
                }
                Err(()) => return Err(None),
            };
            // What the proxy adds is timed from here: the agent's upload is not its.
            let started = Instant::now();
            let RequestHead { method, target, headers, .. } = head;
            let after = target.path().strip_prefix(route::PREFIX).unwrap_or_default();
            let (id, path) = nexus_bridge::split_connection_path(after);
            let incoming = proxy::Incoming { path, method, query: target.query(), headers, body };
            let sent = async {
                let (answer, fwd) = proxy::prepare(state, &caller, id, incoming).await?;
                let refresh = |stale| proxy::renewed(state, &caller, id, stale);
                self.sender().forward::<ApiError, _, _>(link, id, &fwd, answer, framing, refresh).await
            };
            let sent = Box::pin(sent).await;
            match sent {
                Ok((up, resp, provider)) => {
                    state.metrics.proxied(resp.status, Some(started.elapsed().saturating_sub(provider)));
                    Ok((up, resp))
                }
                Err(e) => {
                    state.metrics.proxied(e.status().as_u16(), None);
                    Err(Some(Refused { response: e.into_response(), next: Next::KeepAlive }))
                }
            }
        };
        match tokio::time::timeout(REQUEST_DEADLINE, answer).await {
            Ok(answered) => answered,
            Err(_) => {
                let (code, message) = ErrorCode::for_status(408);
                Err(Some(Refused { response: ApiError::new(code, message).into_response(), next: Next::Linger }))
            }
        }
    }

    /// Writes `response` (an answer of Nexus's own, whole in memory) to the
    /// agent: for the request of `to` (its framing and id), if it was read.
    async fn answer(
        &self,
        agent: &mut TcpStream,
        to: Option<(Agent, &str)>,
        response: Response,
        next: Next,
    ) -> Result<Next, ()> {
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.map_err(|_| ())?;
        // An answer that says it closes the connection does.
        let close = matches!(next, Next::Close | Next::Linger)
            || parts.headers.get(header::CONNECTION).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let mut out = Vec::with_capacity(body.len() + 256);
        let reason = parts.status.canonical_reason().unwrap_or("");
        let _ = write!(out, "HTTP/1.1 {} {reason}\r\n", parts.status.as_u16());
        // As hyper dates the router's answers.
        let _ = write!(out, "date: {}\r\n", httpdate::fmt_http_date(std::time::SystemTime::now()));
        for (name, value) in &parts.headers {
            if [header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::CONNECTION].contains(name) {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some((_, id)) = to {
            let _ = write!(out, "x-request-id: {id}\r\n");
        }
        let _ = write!(out, "content-length: {}\r\n", body.len());
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        } else if to.is_some_and(|(a, _)| a.http10) {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        // The answer to a `HEAD` has the length of its body, not the body.
        if !to.is_some_and(|(a, _)| a.head_request) {
            out.extend_from_slice(&body);
        }
        // An agent that does not read its answers is let go, as `relay_body` lets it go.
        match tokio::time::timeout(self.sender().timeout(), agent.write_all(&out)).await {
            Ok(Ok(())) => {}
            _ => return Err(()),
        }
        Ok(match next {
            Next::KeepAlive if close => Next::Close,
            next => next,
        })
    }
}

/// Why no provider answer is relayed: the answer to send instead, and what
/// the connection does after it (`None` in its place: the agent's
/// connection ended, there is no one to answer).
struct Refused {
    response: Response,
    next: Next,
}

/// Whether the request line at the start of `buf` asks for the proxy route
/// (the only requests the lane answers when the relay refuses their head).
fn for_the_lane(buf: &[u8]) -> bool {
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let _method = words.next();
    words.next().is_some_and(|target| target.starts_with(route::PREFIX.as_bytes()))
}

/// Sets the answer head `out` (ending in an empty line) to carry
/// `x-request-id: id`, in place of any the provider sent: the id is the
/// request's at Nexus, as on every other route.
fn set_request_id(out: &mut Vec<u8>, id: &str) {
    // The relay writes one field a line and ends the head with an empty one.
    let Some(fields) = out.strip_suffix(b"\r\n") else { return };
    let mut head = Vec::with_capacity(out.len() + id.len() + 16);
    for line in fields.split_inclusive(|b| *b == b'\n') {
        let name = line.split(|b| *b == b':').next().unwrap_or_default();
        if !name.eq_ignore_ascii_case(b"x-request-id") {
            head.extend_from_slice(line);
        }
    }
    let _ = write!(head, "x-request-id: {id}\r\n\r\n");
    *out = head;
}

/// An agent's connection handed to hyper, with the bytes the lane read of
/// it first.
pub struct Prefixed {
    prefix: BytesMut,
    stream: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(out.remaining());
            out.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, out)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, bytes)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_id_replaces_the_providers() {
        let mut out = b"HTTP/1.1 200 OK\r\nX-Request-Id: theirs\r\ncontent-length: 2\r\n\r\n".to_vec();
        set_request_id(&mut out, "ours");
        assert_eq!(out, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-request-id: ours\r\n\r\n");
        let mut out = b"HTTP/1.1 204 No Content\r\n\r\n".to_vec();
        set_request_id(&mut out, "id-1");
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\nx-request-id: id-1\r\n\r\n");
    }

    #[test]
    fn refused_heads_are_the_lanes_only_for_the_proxy() {
        assert!(for_the_lane(b"GET /v1/proxy/c1/x HTTP/1.1\r\nContent-Length: 1\r\n"));
        assert!(!for_the_lane(b"GET /v1/providers HTTP/1.1\r\n"));
        assert!(!for_the_lane(b"GET http://h/v1/proxy/c1 HTTP/1.1\r\n"));
        assert!(!for_the_lane(b""));
    }
}
