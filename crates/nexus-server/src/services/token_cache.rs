//! A short-lived in-memory cache of `GET /v1/token` answers, so the hot path
//! of agents needs no database round trip.
//!
//! Correctness rests on invalidation, not on the TTL: every write that changes
//! an answer invalidates it here (this process) and, on PostgreSQL, through
//! `NOTIFY` in the same transaction (other replicas; see
//! `nexus_store::invalidation`). The TTL is only a backstop, and an OAuth
//! answer is never served from cache inside its refresh window.
//!
//! It is bounded (`moka`: the least useful entries go first when it is
//! full, each entry expires on its own), so a burst of connections evicts
//! the coldest answers, not all of them at once.

use axum::body::Bytes;
use nexus_bridge::TokenAnswer;
use nexus_store::Invalidation;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The most entries kept.
pub const MAX_ENTRIES: u64 = 100_000;

/// One answer: its JSON as served, and (for the proxy) parsed once. `Debug`
/// shows neither: both hold the credentials.
pub struct Cached {
    pub body: Bytes,
    pub provider_id: String,
    pub workspace_id: String,
    valid_until: Instant,
    /// When (by the application's clock, Unix seconds) the answer enters
    /// its refresh window: from then on it is not served.
    refresh_by: Option<i64>,
    parsed: OnceLock<Option<Arc<TokenAnswer>>>,
    base_allowed: OnceLock<Result<(), String>>,
}

impl std::fmt::Debug for Cached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cached")
            .field("body", &format_args!("[{} bytes, redacted]", self.body.len()))
            .field("provider_id", &self.provider_id)
            .field("workspace_id", &self.workspace_id)
            .field("valid_until", &self.valid_until)
            .finish_non_exhaustive()
    }
}

impl Cached {
    /// An answer that is not (or no longer) in the cache.
    pub fn uncached(body: Bytes, provider_id: &str, workspace_id: &str) -> Arc<Cached> {
        Arc::new(Cached {
            body,
            provider_id: provider_id.to_owned(),
            workspace_id: workspace_id.to_owned(),
            valid_until: Instant::now(),
            refresh_by: None,
            parsed: OnceLock::new(),
            base_allowed: OnceLock::new(),
        })
    }

    /// The answer as the bridge reads it, parsed on first use.
    pub fn answer(&self) -> Option<Arc<TokenAnswer>> {
        self.parsed.get_or_init(|| serde_json::from_slice(&self.body).ok().map(Arc::new)).clone()
    }

    /// Whether the answer's `api_base_url` passes the outbound URL policy
    /// (`nexus_core::url_policy`), checked on first use; `Ok` when there is
    /// none to check.
    pub fn base_allowed(&self) -> Result<(), &str> {
        let checked = self.base_allowed.get_or_init(|| match self.answer().as_deref().and_then(|a| a.api_base_url()) {
            Some(base) => nexus_core::url_policy::parse_outbound_url(base).map(drop),
            None => Ok(()),
        });
        checked.as_ref().map(|_| ()).map_err(String::as_str)
    }
}

/// Each entry lives until its own `valid_until`.
struct UntilValid;

impl moka::Expiry<String, Arc<Cached>> for UntilValid {
    fn expire_after_create(&self, _: &String, value: &Arc<Cached>, created_at: Instant) -> Option<Duration> {
        Some(value.valid_until.saturating_duration_since(created_at))
    }
}

pub struct TokenCache {
    entries: moka::sync::Cache<String, Arc<Cached>>,
    ttl: Duration,
    /// Bumped by every invalidation, before it clears: an answer built
    /// from a read that an invalidation overtook is not kept.
    generation: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").field("entries", &self.entries.entry_count()).field("ttl", &self.ttl).finish()
    }
}

impl TokenCache {
    pub fn new(ttl: Duration) -> TokenCache {
        TokenCache::with_capacity(ttl, MAX_ENTRIES)
    }

    /// A cache of at most `capacity` entries.
    pub fn with_capacity(ttl: Duration, capacity: u64) -> TokenCache {
        let entries = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .expire_after(UntilValid)
            .support_invalidation_closures()
            .build();
        TokenCache { entries, ttl, generation: std::sync::atomic::AtomicU64::new(0) }
    }

    /// Read before reading what [`TokenCache::put`] will cache.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The cached answer, unless it is past its TTL or (at `now`, Unix
    /// seconds by the application's clock) inside its refresh window.
    pub fn get(&self, connection_id: &str, now: i64) -> Option<Arc<Cached>> {
        self.entries
            .get(connection_id)
            .filter(|c| c.valid_until > Instant::now() && c.refresh_by.is_none_or(|t| now < t))
    }

    /// Caches an answer for at most the TTL and at most `max_age`, and
    /// not past `refresh_by` (see [`TokenCache::get`]); returns it. Not
    /// kept when an invalidation came after `generation` was read (the
    /// answer may predate the change).
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &self,
        connection_id: &str,
        body: Bytes,
        provider_id: &str,
        workspace_id: &str,
        max_age: Option<Duration>,
        refresh_by: Option<i64>,
        generation: u64,
    ) -> Arc<Cached> {
        let age = max_age.map_or(self.ttl, |m| m.min(self.ttl));
        if age.is_zero() {
            return Cached::uncached(body, provider_id, workspace_id);
        }
        let cached = Arc::new(Cached {
            body,
            provider_id: provider_id.to_owned(),
            workspace_id: workspace_id.to_owned(),
            valid_until: Instant::now() + age,
            refresh_by,
            parsed: OnceLock::new(),
            base_allowed: OnceLock::new(),
        });
        self.entries.insert(connection_id.to_owned(), cached.clone());
        // Checked after the insert: an invalidation that bumped before this
        // check is seen here; one that bumps after it clears after it, so
        // after the insert too.
        if self.generation() != generation {
            self.entries.invalidate(connection_id);
        }
        cached
    }

    pub fn invalidate(&self, what: &Invalidation) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match what {
            Invalidation::Connection(id) => self.entries.invalidate(id),
            Invalidation::Provider(id) => {
                let id = id.clone();
                // Only fails when closures are not enabled, and they are.
                if self.entries.invalidate_entries_if(move |_, c| c.provider_id == id).is_err() {
                    self.entries.invalidate_all();
                }
            }
            Invalidation::All => self.entries.invalidate_all(),
        }
    }

    /// Entries held (after pending housekeeping).
    #[cfg(test)]
    fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_url_policy_is_checked_once_per_entry() {
        let entry = |base: Option<&str>| {
            let body = serde_json::json!({
                "connection_id": "c", "provider": "p", "auth_type": "api_key",
                "strategy": {"type": "header", "config": {}}, "credentials": {}, "expires_at": null,
                "api_base_url": base,
            });
            Cached::uncached(Bytes::from(body.to_string()), "p", "w")
        };
        assert_eq!(entry(Some("https://api.x.com/v1")).base_allowed(), Ok(()));
        assert_eq!(entry(Some("http://127.0.0.1:9/")).base_allowed(), Ok(()), "loopback may be plain http");
        let plain = entry(Some("http://api.x.com/"));
        assert!(plain.base_allowed().unwrap_err().contains("https"));
        assert!(std::ptr::eq(plain.base_allowed().unwrap_err(), plain.base_allowed().unwrap_err()), "kept");
        assert_eq!(entry(None).base_allowed(), Ok(()));
    }

    #[test]
    fn invalidation_by_connection_provider_and_all() {
        let c = TokenCache::new(Duration::from_secs(60));
        c.put("c1", Bytes::from_static(b"1"), "p1", "w", None, None, c.generation());
        c.put("c2", Bytes::from_static(b"2"), "p2", "w", None, None, c.generation());
        c.put("c3", Bytes::from_static(b"3"), "p1", "w", None, None, c.generation());
        c.invalidate(&Invalidation::Connection("c2".into()));
        assert!(c.get("c2", 0).is_none() && c.get("c1", 0).is_some());
        c.invalidate(&Invalidation::Provider("p1".into()));
        assert!(c.get("c1", 0).is_none() && c.get("c3", 0).is_none());
        c.put("c4", Bytes::from_static(b"4"), "p3", "w", None, None, c.generation());
        c.invalidate(&Invalidation::All);
        assert!(c.get("c4", 0).is_none());
    }

    #[test]
    fn the_parsed_answer_is_the_body() {
        let c = TokenCache::new(Duration::from_secs(60));
        let body = r#"{"connection_id":"c1","provider":"p","auth_type":"api_key","strategy":{"type":"header","config":{}},"credentials":{"api_key":"k"},"expires_at":null}"#;
        let hit = c.put("c1", Bytes::from_static(body.as_bytes()), "p", "w", None, None, c.generation());
        let answer = hit.answer().unwrap();
        assert_eq!((answer.connection_id(), answer.credentials()["api_key"].as_str()), ("c1", Some("k")));
        assert!(Arc::ptr_eq(&answer, &c.get("c1", 0).unwrap().answer().unwrap()), "parsed once, shared");
        assert!(Cached::uncached(Bytes::from_static(b"{}"), "p", "w").answer().is_none());
    }

    #[test]
    fn a_full_cache_evicts_some_entries_not_all() {
        let c = TokenCache::with_capacity(Duration::from_secs(60), 1000);
        for n in 0..1500 {
            c.put(&format!("c{n}"), Bytes::from_static(b"x"), "p", "w", None, None, c.generation());
        }
        let held = c.len();
        assert!((900..=1000).contains(&held), "{held} entries held of 1000");
    }

    #[test]
    fn debug_shows_no_credentials() {
        let c = TokenCache::new(Duration::from_secs(60));
        let body = r#"{"credentials":{"api_key":"sk-debug-secret-1"}}"#;
        let hit = c.put("c1", Bytes::from_static(body.as_bytes()), "p", "w", None, None, c.generation());
        for shown in [format!("{c:?}"), format!("{hit:?}"), format!("{:?}", c.get("c1", 0))] {
            assert!(!shown.contains("sk-debug-secret-1"), "{shown}");
        }
    }

    #[test]
    fn an_answer_read_before_an_invalidation_is_not_kept() {
        let c = TokenCache::new(Duration::from_secs(60));
        let seen = c.generation();
        // The connection changes while its answer is being built.
        c.invalidate(&Invalidation::Connection("c1".into()));
        let served = c.put("c1", Bytes::from_static(b"old"), "p", "w", None, None, seen);
        assert_eq!(served.body, "old", "the caller still gets its answer");
        assert!(c.get("c1", 0).is_none(), "but it is not cached");
        c.put("c1", Bytes::from_static(b"new"), "p", "w", None, None, c.generation());
        assert_eq!(c.get("c1", 0).unwrap().body, "new");
    }

    #[test]
    fn entries_expire() {
        let c = TokenCache::new(Duration::from_secs(60));
        c.put("c1", Bytes::from_static(b"1"), "p", "w", Some(Duration::ZERO), None, c.generation());
        assert!(c.get("c1", 0).is_none(), "zero max age is not cached");
        let short = TokenCache::new(Duration::from_millis(1));
        short.put("c1", Bytes::from_static(b"1"), "p", "w", None, None, short.generation());
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.get("c1", 0).is_none());
    }

    #[test]
    fn an_answer_is_not_served_from_its_refresh_window_on() {
        let c = TokenCache::new(Duration::from_secs(30));
        c.put("c1", Bytes::from_static(b"1"), "p", "w", None, Some(1_000), c.generation());
        assert!(c.get("c1", 999).is_some());
        assert!(c.get("c1", 1_000).is_none(), "the clock reached the window");
    }
}
