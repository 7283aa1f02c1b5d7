//! A provider's answer, read by the relay's provider side ([`Sender`]), for
//! a server or client that frames it itself: an `http::Response` whose
//! body ([`ProviderBody`]) yields the answer's data as it arrives.
//!
//! The Gateway proxy's router route (when CORS is configured) and
//! [`crate::Bridge::forward`] send on the same provider connections, with
//! the same signing and 401 rule, as the lane and `nexus proxy`; only the
//! way back differs. The provider connection returns to its idle list when
//! the body ended exactly, as the relay's does.

use crate::h1::{BodyReader, ResponseHead, MAX_HEADERS};
use crate::relay::Sender;
use crate::upstream::{Upstream, Upstreams};
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body::{Body, Frame};
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

/// Why an answer's body stopped short.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the provider stopped sending its answer")]
    Stalled,
    #[error("the provider's answer ended early")]
    Cut,
    #[error("the provider's answer is badly framed: {0}")]
    Framing(&'static str),
    #[error("reading the provider's answer failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The body of a provider's answer as it arrives (data frames only: the
/// chunked framing and trailers stay behind).
pub struct ProviderBody {
    /// The connection, until the body ends.
    up: Option<Upstream>,
    reader: BodyReader,
    /// Whether the connection may carry another request once the body ends.
    reusable: bool,
    upstreams: Upstreams,
    idle: Duration,
    /// When the provider's silence ends the body ([`BodyError::Stalled`]).
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl std::fmt::Debug for ProviderBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderBody").field("up", &self.up).field("reader", &self.reader).finish_non_exhaustive()
    }
}

impl Sender {
    /// The answer whose head `head` was read on `up`: its status, the
    /// headers the relay passes on (minus the hop's framing, which the
    /// caller's HTTP stack sets), and its body as it streams.
    pub fn respond(&self, up: Upstream, head: ResponseHead) -> http::Response<ProviderBody> {
        let mut up = up;
        up.buf.advance(head.len);
        let mut body = ProviderBody {
            up: Some(up),
            reader: BodyReader::response(head.body),
            reusable: head.reusable,
            upstreams: self.upstreams().clone(),
            idle: self.timeout(),
            deadline: Box::pin(tokio::time::sleep(self.timeout())),
        };
        body.end_if_done();
        let mut resp = http::Response::new(body);
        *resp.status_mut() = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
        *resp.headers_mut() = passed_on(&head.out);
        resp
    }
}

/// The headers of `out` (a head the relay built for the agent) that an
/// HTTP stack of its own sends on: all but `Transfer-Encoding` and
/// `Connection`, which describe the relay's framing.
fn passed_on(out: &[u8]) -> HeaderMap {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS + 2];
    let mut parsed = httparse::Response::new(&mut slots);
    let mut headers = HeaderMap::new();
    if parsed.parse(out).is_err() {
        return headers;
    }
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") || h.name.eq_ignore_ascii_case("connection") {
            continue;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_bytes(h.value)) {
            headers.append(name, value);
        }
    }
    headers
}

impl ProviderBody {
    /// Once the body has ended: the connection goes back to the idle list
    /// if nothing follows the answer on it.
    fn end_if_done(&mut self) {
        if !self.reader.is_done() {
            return;
        }
        if let Some(mut up) = self.up.take() {
            if self.reusable && up.buf.is_empty() {
                up.answered();
                self.upstreams.check_in(up);
            }
        }
    }
}

impl Body for ProviderBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            let Some(up) = this.up.as_mut() else { return Poll::Ready(None) };
            if !up.buf.is_empty() {
                let mut data = BytesMut::new();
                let used = match this.reader.advance(&up.buf, |r| data.extend_from_slice(&up.buf[r])) {
                    Ok(used) => used,
                    Err(bad) => {
                        this.up = None;
                        return Poll::Ready(Some(Err(BodyError::Framing(bad.0))));
                    }
                };
                up.buf.advance(used);
                this.end_if_done();
                if !data.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(data.freeze()))));
                }
                if this.up.is_none() {
                    return Poll::Ready(None);
                }
            }
            let Some(up) = this.up.as_mut() else { return Poll::Ready(None) };
            match up.poll_read_more(cx) {
                Poll::Ready(Ok(0)) if this.reader == BodyReader::UntilClose => {
                    // The end of an answer framed by the connection's close.
                    this.up = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    this.up = None;
                    return Poll::Ready(Some(Err(BodyError::Cut)));
                }
                Poll::Ready(Ok(_)) => {
                    let next = tokio::time::Instant::now() + this.idle;
                    this.deadline.as_mut().reset(next);
                }
                Poll::Ready(Err(e)) => {
                    this.up = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Pending => {
                    ready!(this.deadline.as_mut().poll(cx));
                    this.up = None;
                    return Poll::Ready(Some(Err(BodyError::Stalled)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.up.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::passed_on;

    #[test]
    fn the_relays_framing_stays_behind() {
        let out = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-a: 1\r\nx-a: 2\r\n\
                    transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
        let headers = passed_on(out);
        assert_eq!(headers.len(), 3);
        assert_eq!(headers.get_all("x-a").iter().count(), 2);
        assert!(!headers.contains_key("transfer-encoding") && !headers.contains_key("connection"));
    }
}
