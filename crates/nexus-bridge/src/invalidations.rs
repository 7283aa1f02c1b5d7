//! Following the Gateway's `GET /v1/invalidations` (server-sent events), so
//! that a cached token answer is dropped as soon as its connection is
//! revoked or its provider deleted or edited, not when its `max_age` runs
//! out.
//!
//! [`follow`] runs for as long as the cache it feeds exists: it reconnects
//! with backoff when the stream ends or stalls (no byte, not even the
//! Gateway's ping, for [`STALL`]). Each (re)connection starts with a `ready`
//! event, on which everything cached is dropped: changes made while nobody
//! listened are not replayed.

use crate::cache::Backoff;
use nexus_core::wire::InvalidationData;
use std::time::Duration;

/// A stream that sends nothing for this long (the Gateway pings every
/// 15 s) is taken to be dead, and reopened.
pub const STALL: Duration = Duration::from_secs(45);

/// What a cache must drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// The answers of one connection.
    Connection(String),
    /// Everything: a provider changed (its connections are not known here),
    /// the stream (re)started, or the follower fell behind.
    All,
}

/// Server-sent events as they arrive in pieces: complete events out.
#[derive(Debug, Default)]
pub struct EventReader {
    line: Vec<u8>,
    event: String,
    data: String,
}

impl EventReader {
    /// Feeds bytes; returns the invalidations of the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Invalidation> {
        let mut out = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if let Some(i) = self.dispatch() {
                    out.push(i);
                }
                continue;
            }
            if line.starts_with(':') {
                continue; // a comment: the Gateway's ping
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.event = value.to_owned(),
                "data" => {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                }
                _ => {}
            }
        }
        out
    }

    fn dispatch(&mut self) -> Option<Invalidation> {
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        match event.as_str() {
            "ready" => Some(Invalidation::All),
            "invalidate" => match serde_json::from_str::<InvalidationData>(&data) {
                Ok(InvalidationData { connection_id: Some(id), .. }) => Some(Invalidation::Connection(id)),
                // A provider, `all`, or something this version does not know.
                _ => Some(Invalidation::All),
            },
            _ => None,
        }
    }
}

/// Follows the stream at `gateway` with `api_key`, calling `apply` for each
/// invalidation, until `apply` returns `false` or, between attempts,
/// `alive` does (the cache it feeds is gone).
pub async fn follow(
    gateway: String,
    api_key: String,
    alive: impl Fn() -> bool,
    mut apply: impl FnMut(Invalidation) -> bool,
) {
    let http = match reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build() {
        Ok(http) => http,
        Err(_) => return,
    };
    // Unreachable: retry soon. Refused (an older Gateway, a revoked key):
    // retry rarely, and say so.
    let unreachable = Backoff { attempts: u32::MAX, base: Duration::from_millis(200), max: Duration::from_secs(5) };
    let refused = Backoff { attempts: u32::MAX, base: Duration::from_secs(5), max: Duration::from_secs(60) };
    let mut failures = 0u32;
    loop {
        let url = format!("{gateway}/v1/invalidations");
        let opened = tokio::time::timeout(STALL, http.get(&url).header("x-api-key", &api_key).send()).await;
        let mut backoff = unreachable;
        match opened {
            Ok(Ok(mut resp)) if resp.status().is_success() => {
                let mut reader = EventReader::default();
                // Until it ends, fails or stalls; then it is opened again.
                while let Ok(Ok(Some(bytes))) = tokio::time::timeout(STALL, resp.chunk()).await {
                    for invalidation in reader.feed(&bytes) {
                        if invalidation == Invalidation::All {
                            failures = 0; // `ready`: the stream works
                        }
                        if !apply(invalidation) {
                            return;
                        }
                    }
                }
                // Ended: the Gateway stopped, or our key was revoked. What was
                // cached under it is dropped, so a revoked key stops working
                // now rather than when answers expire.
                tracing::debug!("the Gateway's invalidation stream ended; reopening it");
                if !apply(Invalidation::All) {
                    return;
                }
            }
            Ok(Ok(resp)) => {
                tracing::warn!(status = resp.status().as_u16(), "the Gateway refused its invalidation stream");
                if !apply(Invalidation::All) {
                    return;
                }
                backoff = refused;
            }
            _ => tracing::debug!("the Gateway's invalidation stream could not be opened"),
        }
        // Whatever was missed meanwhile, `max_age` bounds it; the next
        // `ready` drops it.
        if !alive() {
            return;
        }
        tokio::time::sleep(backoff.delay(failures)).await;
        failures = failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_across_any_split() {
        let stream =
            b": ping\n\nevent: ready\ndata: {}\n\nevent: invalidate\r\ndata: {\"connection_id\":\"c1\"}\r\n\r\n\
            event: invalidate\ndata: {\"provider_id\":\"p1\"}\n\nevent: invalidate\ndata:{\"all\":true}\n\n\
            event: other\ndata: x\n\n";
        let expected =
            vec![Invalidation::All, Invalidation::Connection("c1".into()), Invalidation::All, Invalidation::All];
        for split in 0..stream.len() {
            let mut reader = EventReader::default();
            let mut got = reader.feed(&stream[..split]);
            got.extend(reader.feed(&stream[split..]));
            assert_eq!(got, expected, "split at {split}");
        }
        let mut reader = EventReader::default();
        let got: Vec<_> = stream.iter().flat_map(|b| reader.feed(std::slice::from_ref(b))).collect();
        assert_eq!(got, expected, "byte by byte");
    }
}
