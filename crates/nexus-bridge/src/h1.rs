//! HTTP/1.1 message framing for [`crate::relay`] (RFC 9112): request and
//! response heads parsed by `httparse`, and where each body ends.
//!
//! The relay shares provider connections between agents, so the one rule
//! that matters most here is that a body's end is found exactly, or the
//! connection is not used again: any doubt (a body that ends at the close,
//! bytes after the end, a malformed chunk) makes the relay close it.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use nexus_core::wire::ErrorCode;
use std::mem::MaybeUninit;
use std::ops::Range;

/// The longest request or response head, and the longest trailer section.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in one head.
pub const MAX_HEADERS: usize = 128;
/// The longest chunk-size line (with extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// Why a request cannot be served: the status and what to tell the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: &'static str,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::BAD_REQUEST)
    }
}

fn refuse(code: ErrorCode, message: &'static str) -> Refusal {
    Refusal { code, message }
}

fn bad(message: &'static str) -> Refusal {
    refuse(ErrorCode::InvalidInput, message)
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    Length(u64),
    Chunked,
}

/// An agent's request head.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    /// The request target's path and query, as sent (origin form; the path
    /// and query of an absolute-form target).
    pub target: http::uri::PathAndQuery,
    pub headers: HeaderMap,
    pub body: RequestBody,
    /// Whether the agent's connection may carry another request after this one.
    pub keep_alive: bool,
    /// `HTTP/1.0`: no chunked answers.
    pub http10: bool,
    /// `Expect: 100-continue` with a body still to come.
    pub expects_continue: bool,
}

/// Parses a request head at the start of `buf`: `Ok(None)` while it is
/// incomplete, else the head and its length.
pub fn parse_request(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, Refusal> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(refuse(ErrorCode::HeadersTooLarge, "the request head is too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(ErrorCode::HeadersTooLarge, "the request has too many header fields"))
        }
        Err(_) => return Err(bad("the request head is not valid HTTP/1.1")),
    };
    if len > MAX_HEAD {
        return Err(refuse(ErrorCode::HeadersTooLarge, "the request head is too large"));
    }
    let http10 = req.version == Some(0);
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes()).map_err(|_| bad("bad method"))?;
    let target = target(req.path.unwrap_or_default())?;
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let (mut length, mut chunked, mut encoded) = (None::<u64>, false, false);
    let (mut close, mut keep_alive, mut expects_continue) = (false, false, false);
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("bad header name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| bad("bad header value"))?;
        if name == header::CONTENT_LENGTH {
            let n = content_length(h.value).ok_or(bad("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("conflicting Content-Length values"));
            }
            length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            // One field, `chunked` alone: the relay decodes it and sends a
            // length on; another coding would arrive unlabelled.
            chunked = !encoded && h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            encoded = true;
        } else if name == header::CONNECTION {
            close |= has_token(h.value, "close");
            keep_alive |= has_token(h.value, "keep-alive");
        } else if name == header::EXPECT {
            expects_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        }
        headers.append(name, value);
    }
    let body = match (encoded, length) {
        // Both: a request smuggling attempt, or a broken client (RFC 9112 §6.1).
        (true, Some(_)) => return Err(bad("both Transfer-Encoding and Content-Length")),
        (true, None) if http10 => return Err(bad("Transfer-Encoding in an HTTP/1.0 request")),
        (true, None) if !chunked => return Err(bad("only Transfer-Encoding: chunked is supported")),
        (true, None) => RequestBody::Chunked,
        (false, length) => RequestBody::Length(length.unwrap_or(0)),
    };
    let keep_alive = !close && (!http10 || keep_alive);
    let expects_continue = expects_continue && !http10 && body != RequestBody::Length(0);
    Ok(Some((RequestHead { method, target, headers, body, keep_alive, http10, expects_continue }, len)))
}

fn target(raw: &str) -> Result<http::uri::PathAndQuery, Refusal> {
    if raw.starts_with('/') {
        return raw.parse().map_err(|_| bad("bad request target"));
    }
    // Absolute form (`GET http://127.0.0.1:PORT/id/path`), as sent to a proxy.
    let uri: http::Uri = raw.parse().map_err(|_| bad("bad request target"))?;
    let parts = uri.into_parts();
    match (parts.scheme, parts.path_and_query) {
        (Some(_), Some(pq)) => Ok(pq),
        _ => Err(bad("bad request target")),
    }
}

/// `Content-Length`: digits only (RFC 9110 §8.6), and no more than fit.
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(|t| t.trim_ascii())
}

fn has_token(value: &[u8], token: &str) -> bool {
    tokens(value).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// How a provider's response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// `HEAD`, `1xx`, `204`, `304`: nothing follows the head.
    None,
    Length(u64),
    Chunked,
    /// No length: the body ends when the provider closes the connection.
    UntilClose,
}

/// How the relay sends a response body on to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    /// As the provider sent it (a length, or to the close).
    AsIs,
    /// In chunks of the relay's own: the data of the provider's chunks, or
    /// each piece of a body that ends at the close (an HTTP/1.1 agent).
    Chunk,
    /// Only the data of the provider's chunks (an HTTP/1.0 agent).
    Dechunk,
}

/// A provider's final response head, already rewritten for the agent.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    /// The bytes of the provider's head (the relay consumes them).
    pub len: usize,
    pub body: ResponseBody,
    /// Whether the provider's connection may carry another request after this answer.
    pub reusable: bool,
    /// How the body goes on to the agent.
    pub relayed: Relayed,
    /// Whether the agent's connection must close after this answer.
    pub close_agent: bool,
    /// The head to send to the agent.
    pub out: Vec<u8>,
}

/// A provider's answer that cannot be relayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadResponse(pub &'static str);

/// What the relay needs to know of the agent's request to frame the answer.
#[derive(Debug, Clone, Copy)]
pub struct Agent {
    pub head_request: bool,
    pub http10: bool,
    pub keep_alive: bool,
}

/// Parses the provider's response head at the start of `buf`: `Ok(None)`
/// while incomplete; an interim (`1xx`) response comes back with
/// `status < 200` for the caller to skip. Headers of the hop, the ones
/// `Connection` names, and `Set-Cookie` stay behind (see [`relayed_header`]).
pub fn parse_response(buf: &[u8], agent: Agent) -> Result<Option<ResponseHead>, BadResponse> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
        Ok(_) => return Err(BadResponse("the provider's response head is too large")),
        Err(_) => return Err(BadResponse("the provider's response is not valid HTTP/1.1")),
    };
    let status = resp.code.unwrap_or_default();
    if !(100..=599).contains(&status) {
        return Err(BadResponse("the provider's status code is out of range"));
    }
    let http10 = resp.version == Some(0);
    let (mut length, mut encoded, mut close, mut connection) = (None::<u64>, false, false, false);
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = content_length(h.value).ok_or(BadResponse("the provider sent a bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(BadResponse("the provider sent conflicting Content-Length values"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // We send no `TE`, so `chunked` is the one coding a provider may
            // use (RFC 9112 §6.1); any other would reach the agent unlabelled.
            if encoded || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(BadResponse("the provider used a transfer coding other than chunked"));
            }
            encoded = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= has_token(h.value, "close");
            connection = true;
        }
    }
    let body = if agent.head_request || status < 200 || status == 204 || status == 304 {
        ResponseBody::None
    } else if encoded {
        ResponseBody::Chunked
    } else {
        length.map_or(ResponseBody::UntilClose, ResponseBody::Length)
    };
    // Both framings at once: the length is ignored and the connection
    // closed after the answer (RFC 9112 §6.3 rule 3).
    let both = encoded && length.is_some();
    let reusable = !close && !http10 && !both && body != ResponseBody::UntilClose;
    if status < 200 {
        return Ok(Some(ResponseHead {
            status,
            len,
            body,
            reusable,
            relayed: Relayed::AsIs,
            close_agent: false,
            out: Vec::new(),
        }));
    }
    // Chunks are sent on as the relay's own (`{size}\r\n{data}\r\n`), never
    // as the provider wrote them: extensions and trailers stay behind, so a
    // chunk line that one client reads differently from another cannot
    // smuggle an answer through.
    let (relayed, mut close_agent) = match (body, agent.http10) {
        (ResponseBody::Chunked, true) => (Relayed::Dechunk, true),
        (ResponseBody::UntilClose, true) => (Relayed::AsIs, true),
        (ResponseBody::Chunked | ResponseBody::UntilClose, false) => (Relayed::Chunk, false),
        _ => (Relayed::AsIs, false),
    };
    close_agent |= !agent.keep_alive;
    let mut out = Vec::with_capacity(len + 64);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status_digits(status).as_slice());
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers.iter() {
        let name = h.name;
        // The length stays unless chunks override it, whatever `Connection` names.
        let keep = if name.eq_ignore_ascii_case("content-length") {
            !encoded
        } else {
            relayed_header(name) && !(connection && named_by_connection(resp.headers, name))
        };
        if !keep {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if relayed == Relayed::Chunk {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close_agent {
        out.extend_from_slice(b"connection: close\r\n");
    } else if agent.http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseHead { status, len, body, reusable, relayed, close_agent, out }))
}

fn named_by_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers.iter().any(|h| h.name.eq_ignore_ascii_case("connection") && has_token(h.value, name))
}

fn status_digits(status: u16) -> [u8; 3] {
    [b'0' + (status / 100 % 10) as u8, b'0' + (status / 10 % 10) as u8, b'0' + (status % 10) as u8]
}

/// Whether a provider's response header is passed on to the agent: not one
/// of the hop (`Content-Length` is kept), not `Set-Cookie` (a provider's
/// cookies must not reach agents through a shared origin). Any case.
pub fn relayed_header(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-length")
        || (crate::target::forwardable_header(name) && !name.eq_ignore_ascii_case("set-cookie"))
}

/// Where a body ends, fed the bytes that follow the head as they arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyReader {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

/// The state of a chunked body (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data: this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields until an empty line; bytes of
    /// trailer section seen so far.
    Trailer(usize),
    /// After the empty line that ends the body.
    End,
}

/// A framing error in a body: the connection cannot be used again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadBody(pub &'static str);

impl BodyReader {
    pub fn request(body: RequestBody) -> BodyReader {
        match body {
            RequestBody::Length(0) => BodyReader::Done,
            RequestBody::Length(n) => BodyReader::Length(n),
            RequestBody::Chunked => BodyReader::Chunked(Chunked::Size),
        }
    }

    pub fn response(body: ResponseBody) -> BodyReader {
        match body {
            ResponseBody::None | ResponseBody::Length(0) => BodyReader::Done,
            ResponseBody::Length(n) => BodyReader::Length(n),
            ResponseBody::Chunked => BodyReader::Chunked(Chunked::Size),
            ResponseBody::UntilClose => BodyReader::UntilClose,
        }
    }

    pub fn is_done(&self) -> bool {
        *self == BodyReader::Done
    }

    /// Consumes what of `buf` belongs to the body, calling `data` with the
    /// ranges of payload (chunk data, not framing) in order; returns how
    /// many bytes it consumed. Bytes after the body's end are left alone.
    pub fn advance(&mut self, buf: &[u8], mut data: impl FnMut(Range<usize>)) -> Result<usize, BadBody> {
        let mut at = 0;
        loop {
            let rest = &buf[at..];
            let used = match self {
                BodyReader::Done => return Ok(at),
                BodyReader::UntilClose => {
                    if !rest.is_empty() {
                        data(at..buf.len());
                    }
                    return Ok(buf.len());
                }
                BodyReader::Length(left) => {
                    let take = (*left).min(rest.len() as u64) as usize;
                    if take == 0 {
                        return Ok(at);
                    }
                    data(at..at + take);
                    *left -= take as u64;
                    if *left == 0 {
                        *self = BodyReader::Done;
                    }
                    take
                }
                BodyReader::Chunked(state) => {
                    let used = state.step(rest, |r| data(at + r.start..at + r.end))?;
                    if *state == Chunked::End {
                        *self = BodyReader::Done;
                    }
                    used
                }
            };
            if used == 0 {
                return Ok(at);
            }
            at += used;
        }
    }
}

impl Chunked {
    /// One step: the bytes it consumed (0: it needs more, or it is at the end).
    fn step(&mut self, buf: &[u8], mut data: impl FnMut(Range<usize>)) -> Result<usize, BadBody> {
        match *self {
            Chunked::Size => match httparse::parse_chunk_size(buf) {
                // Stricter than httparse: hex digits first, and no bare LF
                // in the line (some clients end a line there).
                Ok(httparse::Status::Complete((used, _)))
                    if !buf[..used].ends_with(b"\r\n")
                        || !buf[0].is_ascii_hexdigit()
                        || buf[..used - 2].contains(&b'\n') =>
                {
                    Err(BadBody("bad chunk-size line"))
                }
                Ok(httparse::Status::Complete((used, 0))) => {
                    *self = Chunked::Trailer(0);
                    Ok(used)
                }
                Ok(httparse::Status::Complete((used, size))) => {
                    *self = Chunked::Data(size);
                    Ok(used)
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => Err(BadBody("chunk-size line too long")),
                Ok(httparse::Status::Partial) => Ok(0),
                Err(_) => Err(BadBody("bad chunk size")),
            },
            Chunked::Data(left) => {
                let take = left.min(buf.len() as u64) as usize;
                if take > 0 {
                    data(0..take);
                }
                *self = if take as u64 == left { Chunked::DataEnd } else { Chunked::Data(left - take as u64) };
                Ok(take)
            }
            Chunked::DataEnd => match buf {
                [b'\r', b'\n', ..] => {
                    *self = Chunked::Size;
                    Ok(2)
                }
                [] | [b'\r'] => Ok(0),
                _ => Err(BadBody("chunk data longer than its size")),
            },
            Chunked::Trailer(seen) => {
                if buf.starts_with(b"\r\n") {
                    *self = Chunked::End;
                    return Ok(2);
                }
                match buf.windows(2).position(|w| w == b"\r\n") {
                    Some(end) if buf[..end].iter().any(|b| matches!(b, b'\r' | b'\n')) => {
                        Err(BadBody("bad trailer line"))
                    }
                    Some(end) if seen + end + 2 <= MAX_HEAD => {
                        *self = Chunked::Trailer(seen + end + 2);
                        Ok(end + 2)
                    }
                    None if seen + buf.len() <= MAX_HEAD => Ok(0),
                    _ => Err(BadBody("trailer section too large")),
                }
            }
            Chunked::End => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: Agent = Agent { head_request: false, http10: false, keep_alive: true };

    fn request(raw: &str) -> Result<Option<(RequestHead, usize)>, Refusal> {
        parse_request(raw.as_bytes())
    }

    #[test]
    fn request_heads_parse_whole_or_not_at_all() {
        let raw = "POST /c1/v2/me?a=%26 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Trace: t\r\n\r\nhello";
        for cut in 0..raw.len() - 5 {
            assert!(request(&raw[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        let (head, len) = request(raw).unwrap().unwrap();
        assert_eq!(len, raw.len() - 5);
        assert_eq!((head.method, head.target.path(), head.target.query()), (Method::POST, "/c1/v2/me", Some("a=%26")));
        assert_eq!(head.body, RequestBody::Length(5));
        assert!(head.keep_alive && !head.http10 && !head.expects_continue);
        assert_eq!(head.headers["x-trace"], "t");
        let (absolute, _) = request("GET http://127.0.0.1:1/c/p?q HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(absolute.target.as_str(), "/c/p?q");
    }

    #[test]
    fn request_framing_follows_rfc_9112() {
        let body = |raw: &str| request(raw).map(|r| r.unwrap().0.body);
        assert_eq!(body("GET / HTTP/1.1\r\n\r\n"), Ok(RequestBody::Length(0)));
        assert_eq!(body("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"), Ok(RequestBody::Chunked));
        assert_eq!(
            body("POST / HTTP/1.1\r\ncontent-length: 7\r\nContent-Length: 7\r\n\r\n"),
            Ok(RequestBody::Length(7))
        );
        for refused in [
            "POST / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 8\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +7\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 7, 7\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
            "GET * HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nbad name: x\r\n\r\n",
        ] {
            assert_eq!(body(refused).map_err(|r| r.status()), Err(StatusCode::BAD_REQUEST), "{refused:?}");
        }
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(body(&many).map_err(|r| r.status()), Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        let huge = format!("GET / HTTP/1.1\r\na: {}", "b".repeat(MAX_HEAD));
        assert_eq!(
            request(&huge).map(|_| ()).map_err(|r| r.status()),
            Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
    }

    #[test]
    fn keep_alive_and_expect_continue() {
        let head = |raw: &str| request(raw).unwrap().unwrap().0;
        assert!(!head("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(head("PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n").expects_continue);
        assert!(!head("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").expects_continue, "no body to wait for");
    }

    fn response(raw: &str, agent: Agent) -> ResponseHead {
        parse_response(raw.as_bytes(), agent).unwrap().unwrap()
    }

    #[test]
    fn response_heads_are_rewritten_for_the_agent() {
        let raw = "HTTP/1.1 418 I'm a teapot\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 3\r\nETag: \"v\"\r\n\r\nabc";
        for cut in 0..raw.len() - 3 {
            assert!(parse_response(&raw.as_bytes()[..cut], AGENT).unwrap().is_none(), "cut at {cut}");
        }
        let head = response(raw, AGENT);
        assert_eq!(
            (head.status, head.len, head.body, head.reusable),
            (418, raw.len() - 3, ResponseBody::Length(3), true)
        );
        assert_eq!(
            String::from_utf8(head.out).unwrap(),
            "HTTP/1.1 418 I'm a teapot\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nETag: \"v\"\r\n\r\n"
        );
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let framing = |raw: &str, agent: Agent| {
            let h = response(raw, agent);
            (h.body, h.reusable, h.relayed, h.close_agent)
        };
        use {Relayed::*, ResponseBody::*};
        let head = Agent { head_request: true, ..AGENT };
        let old = Agent { http10: true, keep_alive: false, ..AGENT };
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", head), (None, true, AsIs, false));
        assert_eq!(framing("HTTP/1.1 204 No Content\r\n\r\n", AGENT), (None, true, AsIs, false));
        assert_eq!(framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", AGENT), (None, true, AsIs, false));
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", AGENT),
            (Chunked, true, Chunk, false)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", old),
            (Chunked, true, Dechunk, true)
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n", AGENT), (UntilClose, false, Chunk, false));
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n", old), (UntilClose, false, AsIs, true));
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n", AGENT),
            (Length(1), false, AsIs, false)
        );
        assert_eq!(framing("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", AGENT), (Length(1), false, AsIs, false));
        let both = response("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", AGENT);
        assert_eq!((both.body, both.reusable), (Chunked, false));
        let out = String::from_utf8(both.out).unwrap().to_ascii_lowercase();
        assert!(!out.contains("content-length") && out.contains("transfer-encoding: chunked"), "{out}");
        assert_eq!(response("HTTP/1.1 100 Continue\r\n\r\n", AGENT).status, 100);
        // `Connection` cannot take the framing away.
        let named = response("HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\n", AGENT);
        assert!(String::from_utf8(named.out).unwrap().contains("Content-Length: 5\r\n"));
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 099 Odd\r\n\r\n",
            "HTTP/1.1 600 Odd\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(parse_response(bad.as_bytes(), AGENT).is_err(), "{bad:?}");
        }
        let closing = response("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Agent { keep_alive: false, ..AGENT });
        assert!(String::from_utf8(closing.out).unwrap().ends_with("connection: close\r\n\r\n"));
    }

    /// Feeds `raw` in two pieces split at every position, as reads may
    /// deliver it; returns the payload and the bytes consumed.
    fn read_split(reader: BodyReader, raw: &[u8]) -> Vec<(Vec<u8>, usize)> {
        let mut results = Vec::new();
        for cut in 0..=raw.len() {
            let mut reader = reader;
            let mut buf = raw[..cut].to_vec();
            let (mut payload, mut consumed) = (Vec::new(), 0);
            let mut fed = cut;
            loop {
                let used = reader.advance(&buf, |r| payload.extend_from_slice(&buf[r])).unwrap();
                buf.drain(..used);
                consumed += used;
                if reader.is_done() || fed == raw.len() {
                    break;
                }
                buf.extend_from_slice(&raw[fed..]);
                fed = raw.len();
            }
            assert!(reader.is_done(), "cut at {cut}: not done");
            results.push((payload, consumed));
        }
        results
    }

    #[test]
    fn chunked_bodies_end_exactly_however_they_arrive() {
        let body = b"4;ext=1\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\n";
        let mut raw = body.to_vec();
        raw.extend_from_slice(b"HTTP/1.1 200 OK\r\n"); // the next answer on the connection
        for (payload, consumed) in read_split(BodyReader::Chunked(Chunked::Size), &raw) {
            assert_eq!(payload, b"Wikipedia in \r\n\r\nchunks.");
            assert_eq!(consumed, body.len());
        }
        for (payload, consumed) in read_split(BodyReader::Length(5), b"helloHTTP/1.1") {
            assert_eq!((payload.as_slice(), consumed), (b"hello".as_slice(), 5));
        }
    }

    /// Random bodies in random chunkings (extensions, trailers, either hex
    /// case), read in random pieces: the payload comes out whole and the
    /// reader stops exactly at the body's end.
    #[test]
    fn random_chunkings_decode_whole_and_end_exactly() {
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let len = (next() % 300) as usize;
            let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let mut raw = Vec::new();
            let mut at = 0;
            while at < len {
                let take = ((next() % 40) as usize + 1).min(len - at);
                let size = if next() % 2 == 0 { format!("{take:x}") } else { format!("{take:X}") };
                raw.extend_from_slice(size.as_bytes());
                if next() % 4 == 0 {
                    raw.extend_from_slice(b";name=\"v\"");
                }
                raw.extend_from_slice(b"\r\n");
                raw.extend_from_slice(&body[at..at + take]);
                raw.extend_from_slice(b"\r\n");
                at += take;
            }
            raw.extend_from_slice(b"0\r\n");
            if next() % 3 == 0 {
                raw.extend_from_slice(b"X-Trailer: t\r\n");
            }
            raw.extend_from_slice(b"\r\n");
            let end = raw.len();
            raw.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            let mut reader = BodyReader::Chunked(Chunked::Size);
            let (mut buf, mut fed, mut payload, mut consumed) = (Vec::new(), 0, Vec::new(), 0);
            while !reader.is_done() {
                assert!(fed < raw.len(), "ran past the end");
                let n = ((next() % 17) as usize + 1).min(raw.len() - fed);
                buf.extend_from_slice(&raw[fed..fed + n]);
                fed += n;
                let used = reader.advance(&buf, |r| payload.extend_from_slice(&buf[r])).unwrap();
                buf.drain(..used);
                consumed += used;
            }
            assert_eq!((payload, consumed), (body, end));
        }
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for bad in [
            &b"z\r\n"[..],
            b"3\r\nabcd\r\n",
            b"3\r\nabc\n0\r\n\r\n",
            b"ffffffffffffffffff\r\n",
            b"\r\n",
            b";x\r\n",
            b"0;x\n\nHTTP/1.1 200 OK\r\n\r\n",
            b"0\r\nX: a\nHTTP/1.1 200 OK\r\n\r\n",
        ] {
            let mut reader = BodyReader::Chunked(Chunked::Size);
            assert!(reader.advance(bad, |_| {}).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut reader = BodyReader::Chunked(Chunked::Size);
        assert!(reader.advance(&vec![b'1'; MAX_CHUNK_LINE + 1], |_| {}).is_err(), "endless size line");
    }
}
