//! The agent-side credential cache: one entry per connection, reused for
//! the answer's `max_age` and refreshed shortly before `expires_at`;
//! concurrent callers share one in-flight fetch; an unreachable Gateway is
//! retried with exponential backoff and jitter; an `attention_required`
//! connection fails at once with a typed error.
//!
//! The cache follows the Gateway's invalidation stream (see
//! [`crate::invalidations`]) from its first use, so a revoked connection, a
//! deleted provider or a new `api_base_url` takes effect at once, not when
//! `max_age` runs out. A fetch that an invalidation overtakes is answered
//! but not kept.

use crate::client::{GatewayClient, GatewayError, TokenAnswer};
use crate::invalidations::Invalidation;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Refresh this many seconds before `expires_at`.
pub const EXPIRY_SKEW_SECS: i64 = 60;

/// One connection: the current answer (read without waiting) and the lock
/// that lets only one caller fetch at a time.
#[derive(Debug, Default)]
struct Slot {
    answer: std::sync::RwLock<Option<Arc<TokenAnswer>>>,
    fetch: tokio::sync::Mutex<()>,
}

impl Slot {
    fn current(&self) -> Option<Arc<TokenAnswer>> {
        self.answer.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn store(&self, answer: Option<Arc<TokenAnswer>>) {
        *self.answer.write().unwrap_or_else(|p| p.into_inner()) = answer;
    }

    /// Keeps `answer` unless an invalidation came after `epoch` was read
    /// (checked under the same lock that invalidations clear through, so
    /// none can slip between the check and the store).
    fn store_unless_invalidated(&self, answer: Arc<TokenAnswer>, slots: &Slots, epoch: u64) {
        let mut current = self.answer.write().unwrap_or_else(|p| p.into_inner());
        if slots.epoch.load(Ordering::SeqCst) == epoch {
            *current = Some(answer);
        }
    }
}

/// Every connection's slot, and a count of invalidations.
#[derive(Debug, Default)]
struct Slots {
    map: Mutex<HashMap<String, Arc<Slot>>>,
    /// Bumped by every invalidation, before it clears.
    epoch: AtomicU64,
}

impl Slots {
    fn apply(&self, what: &Invalidation) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match what {
            Invalidation::Connection(id) => {
                if let Some(slot) = map.get(id) {
                    slot.store(None);
                }
            }
            Invalidation::All => map.values().for_each(|slot| slot.store(None)),
        }
    }
}

/// Retry policy for an unreachable Gateway.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { attempts: 5, base: Duration::from_millis(100), max: Duration::from_secs(5) }
    }
}

impl Backoff {
    /// The wait before retry `n` (0-based): base·2ⁿ capped at max, with ±50 % jitter.
    pub fn delay(&self, n: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << n.min(16)).min(self.max);
        exp.mul_f64(0.5 + rand_unit())
    }
}

fn rand_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    (h.finish() % 10_000) as f64 / 10_000.0
}

/// Cached token answers for any number of connections.
#[derive(Debug)]
pub struct CredentialCache {
    client: GatewayClient,
    backoff: Backoff,
    slots: Arc<Slots>,
    /// Whether to follow the invalidation stream, and its task once started
    /// (started again if it ended, e.g. with the runtime it ran on).
    follow: bool,
    follower: Mutex<Option<tokio::task::AbortHandle>>,
    /// Set while the follower runs (cleared when its task ends or is
    /// dropped): every `get` checks this, not the lock.
    following: Arc<std::sync::atomic::AtomicBool>,
}

/// Clears `following` when the follower's task ends, however it ends.
struct Following(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Drop for CredentialCache {
    fn drop(&mut self) {
        if let Some(task) = self.follower.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// Whether a cached answer may still be used: within its `max_age`, and not
/// about to expire.
fn fresh(answer: &TokenAnswer) -> bool {
    !answer.is_past_max_age() && answer.expires_at().is_none_or(|e| e - chrono_now() > EXPIRY_SKEW_SECS)
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl CredentialCache {
    pub fn new(client: GatewayClient) -> CredentialCache {
        CredentialCache::with_backoff(client, Backoff::default())
    }

    pub fn with_backoff(client: GatewayClient, backoff: Backoff) -> CredentialCache {
        CredentialCache {
            client,
            backoff,
            slots: Arc::default(),
            follow: true,
            follower: Mutex::new(None),
            following: Arc::default(),
        }
    }

    /// This cache without the invalidation stream: answers live their
    /// `max_age` whatever changes (for a Gateway that has no stream).
    pub fn without_invalidations(mut self) -> CredentialCache {
        self.follow = false;
        self
    }

    pub fn client(&self) -> &GatewayClient {
        &self.client
    }

    fn slot(&self, id: &str) -> Arc<Slot> {
        let mut slots = self.slots.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get(id) {
            return slot.clone();
        }
        slots.entry(id.to_owned()).or_default().clone()
    }

    /// Follows the invalidation stream: starts it, or starts it again if it
    /// ended (needs a Tokio runtime).
    fn follow_invalidations(&self) {
        if !self.follow || self.following.load(Ordering::SeqCst) {
            return;
        }
        let mut follower = self.follower.lock().unwrap_or_else(|p| p.into_inner());
        if self.following.load(Ordering::SeqCst) {
            return;
        }
        *follower = (|| {
            let handle = tokio::runtime::Handle::try_current().ok()?;
            let (alive, feed) = (Arc::downgrade(&self.slots), Arc::downgrade(&self.slots));
            let client = self.client.clone();
            self.following.store(true, Ordering::SeqCst);
            let running = Following(self.following.clone());
            let task = handle.spawn(async move {
                let _running = running;
                let alive = move || alive.strong_count() > 0;
                let apply = move |what: Invalidation| match feed.upgrade() {
                    Some(slots) => {
                        slots.apply(&what);
                        true
                    }
                    None => false,
                };
                client.follow_invalidations(alive, apply).await;
            });
            Some(task.abort_handle())
        })();
    }

    /// Current credentials for `connection_id` (cached while fresh).
    pub async fn get(&self, connection_id: &str) -> Result<Arc<TokenAnswer>, GatewayError> {
        self.follow_invalidations();
        let slot = self.slot(connection_id);
        if let Some(a) = slot.current().filter(|a| fresh(a)) {
            return Ok(a);
        }
        let _fetching = slot.fetch.lock().await;
        if let Some(a) = slot.current().filter(|a| fresh(a)) {
            return Ok(a);
        }
        let epoch = self.slots.epoch.load(Ordering::SeqCst);
        let answer = Arc::new(self.with_retries(|| self.client.token(connection_id)).await?);
        slot.store_unless_invalidated(answer.clone(), &self.slots, epoch);
        Ok(answer)
    }

    /// Forces a refresh at the Gateway (after a provider 401). Callers that saw
    /// `stale` share one refresh: if the cached answer already changed, it is used.
    pub async fn refresh(&self, connection_id: &str, stale: &TokenAnswer) -> Result<Arc<TokenAnswer>, GatewayError> {
        let slot = self.slot(connection_id);
        let _fetching = slot.fetch.lock().await;
        if let Some(a) = slot.current() {
            if a.credentials() != stale.credentials() {
                return Ok(a);
            }
        }
        let epoch = self.slots.epoch.load(Ordering::SeqCst);
        let answer = Arc::new(self.with_retries(|| self.client.refresh(connection_id)).await?);
        slot.store_unless_invalidated(answer.clone(), &self.slots, epoch);
        Ok(answer)
    }

    /// Drops the cached answer of one connection.
    pub async fn forget(&self, connection_id: &str) {
        self.slot(connection_id).store(None);
    }

    async fn with_retries<F, Fut>(&self, mut call: F) -> Result<TokenAnswer, GatewayError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<TokenAnswer, GatewayError>>,
    {
        let mut n = 0;
        loop {
            match call().await {
                Err(e) if e.is_retryable() && n + 1 < self.backoff.attempts => {
                    tokio::time::sleep(self.backoff.delay(n)).await;
                    n += 1;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Backoff { attempts: 5, base: Duration::from_millis(100), max: Duration::from_secs(1) };
        for n in 0..8 {
            let d = b.delay(n);
            let exp = Duration::from_millis(100).saturating_mul(1 << n).min(Duration::from_secs(1));
            assert!(d >= exp.mul_f64(0.5) && d <= exp.mul_f64(1.5), "{n}: {d:?}");
        }
    }
}
