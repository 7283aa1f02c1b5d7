//! The background refresher: renews OAuth tokens before they expire, fairly
//! across providers.
//!
//! It claims due connections continuously, as capacity frees up (a lease
//! plus, on PostgreSQL, `SKIP LOCKED`, so replicas never take the same
//! one), never more than it can start, and runs each through the same
//! single-flight path as on-demand refreshes. Two limits keep one provider
//! from holding everyone else's renewals hostage, which a batch run 8 at a
//! time did (a provider that hangs held every slot):
//!
//! * a global limit (`REFRESH_CONCURRENCY`, refreshes in flight) and a
//!   limit per token-endpoint host (`REFRESH_PER_HOST`): while a host is at
//!   its limit, claims skip its connections, which stay due in their place
//!   (a connection claimed in a race with its host filling up is released
//!   as it was), so one host's backlog never fills the refresher and the
//!   claim reaches other hosts' connections;
//! * a circuit per host: after consecutive failures (timeouts, 5xx,
//!   unreachable) the host gets no refresh until a backoff passes, then one
//!   probe (half-open); claims skip its connections until then. The host
//!   is the token endpoint's, so one tenant's outage does not stop another
//!   tenant of the same provider once endpoints are per tenant.
//!
//! Every 30 s it logs the backlog (connections due now), the lag (how late
//! the oldest due renewal is) and the open circuits.
//!
//! It stops cooperatively: once the server begins to stop, nothing more is
//! claimed or started; refreshes already talking to a provider finish (the
//! provider may already have rotated the refresh token: aborting would
//! lose it).

use crate::services::refresh::{refresh, Reason, Refresh};
use crate::state::AppState;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most connections claimed in one query.
pub const BATCH: i64 = 200;
/// How long a claim keeps other replicas away.
pub const LEASE_SECS: i64 = 60;
/// Consecutive failures that open a host's circuit.
pub const FAILURES_TO_OPEN: u32 = 3;
/// How often the refresher reports its backlog, lag and circuits.
const REPORT_EVERY: Duration = Duration::from_secs(30);
/// How long a host's provider list answer is kept (token endpoints rarely move).
const HOST_TTL: Duration = Duration::from_secs(60);

/// What a host may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Go,
    /// At its limit: wait for one of its refreshes to end.
    Busy,
    /// Its circuit is open until then.
    Open(Instant),
}

#[derive(Debug, Default)]
struct HostState {
    in_flight: usize,
    failures: u32,
    open_until: Option<Instant>,
    /// The one refresh let through a half-open circuit is under way.
    probing: bool,
}

/// Per token-endpoint host: refreshes in flight, those waiting for a slot,
/// and the circuit. Owned by the refresher's one task.
#[derive(Debug)]
pub struct Hosts {
    per_host: usize,
    map: HashMap<String, HostState>,
}

impl Hosts {
    pub fn new(per_host: usize) -> Hosts {
        Hosts { per_host, map: HashMap::new() }
    }

    /// Whether a refresh for `host` may start now; `Go` counts it in flight.
    pub fn admit(&mut self, host: &str, now: Instant) -> Admission {
        let st = self.map.entry(host.to_owned()).or_default();
        if let Some(until) = st.open_until {
            if now < until {
                return Admission::Open(until);
            }
            if st.probing {
                return Admission::Open(now + Duration::from_secs(1));
            }
            // Half-open: one probe.
            st.probing = true;
            st.in_flight += 1;
            return Admission::Go;
        }
        if st.in_flight >= self.per_host {
            return Admission::Busy;
        }
        st.in_flight += 1;
        Admission::Go
    }

    /// A refresh for `host` ended: `Some(true)` the host answered,
    /// `Some(false)` it failed (timeout, 5xx, unreachable), `None` neither
    /// (the refresh stopped before the provider was asked).
    pub fn done(&mut self, host: &str, answered: Option<bool>, now: Instant) {
        let Some(st) = self.map.get_mut(host) else { return };
        st.in_flight = st.in_flight.saturating_sub(1);
        let probe = std::mem::take(&mut st.probing);
        match answered {
            Some(true) => {
                st.failures = 0;
                st.open_until = None;
            }
            Some(false) => {
                st.failures += 1;
                if probe || st.failures >= FAILURES_TO_OPEN {
                    st.open_until = Some(now + backoff(st.failures));
                }
            }
            None if probe => st.open_until = Some(now + Duration::from_secs(1)),
            None => {}
        }
        if st.in_flight == 0 && st.failures == 0 && st.open_until.is_none() {
            self.map.remove(host);
        }
    }

    /// Whether `host` can take no more work now: its circuit is open, or
    /// as many as may run are running.
    fn blocked(&self, host: &str, now: Instant) -> bool {
        self.map.get(host).is_some_and(|st| st.open_until.is_some_and(|u| u > now) || st.in_flight >= self.per_host)
    }

    /// Hosts whose circuit is open now.
    pub fn open(&self, now: Instant) -> Vec<String> {
        self.map.iter().filter(|(_, st)| st.open_until.is_some_and(|u| u > now)).map(|(h, _)| h.clone()).collect()
    }
}

/// How long a host's circuit stays open after `failures` in a row: 5 s,
/// doubling, at most 5 minutes.
fn backoff(failures: u32) -> Duration {
    let steps = failures.saturating_sub(FAILURES_TO_OPEN).min(6);
    Duration::from_secs(5 << steps).min(Duration::from_secs(300))
}

/// The host (and port) of each provider's token endpoint, looked up once a minute.
#[derive(Default)]
struct TokenHosts {
    known: HashMap<String, (String, Instant)>,
}

impl TokenHosts {
    /// The providers whose host `blocked` says is blocked.
    fn providers_of(&self, blocked: impl Fn(&str) -> bool) -> Vec<String> {
        self.known.iter().filter(|(_, (host, _))| blocked(host)).map(|(p, _)| p.clone()).take(500).collect()
    }

    async fn of(&mut self, state: &AppState, provider_id: &str) -> String {
        if let Some((host, at)) = self.known.get(provider_id) {
            if at.elapsed() < HOST_TTL {
                return host.clone();
            }
        }
        let host = match state.store.provider_by_id(provider_id).await {
            Ok(Some(provider)) => crate::services::connections::endpoints_with(
                &provider,
                provider.discovery.as_ref(),
                &serde_json::Map::new(),
            )
            .ok()
            .and_then(|e| e.refresh_url)
            .and_then(|u| url::Url::parse(&u).ok())
            .map(|u| format!("{}:{}", u.host_str().unwrap_or_default(), u.port_or_known_default().unwrap_or(0)))
            // A token endpoint per tenant (a template): one circuit for the provider.
            .unwrap_or_else(|| format!("provider:{provider_id}")),
            // Deleted or unreadable: the refresh itself reports it.
            _ => String::new(),
        };
        if self.known.len() > 10_000 {
            self.known.clear();
        }
        self.known.insert(provider_id.to_owned(), (host.clone(), Instant::now()));
        host
    }
}

/// A refresh that ended: its host and whether the host answered.
type Ended = (String, Option<bool>);

/// The refresher's one task: what it runs.
struct Scheduler {
    state: AppState,
    hosts: Hosts,
    token_hosts: TokenHosts,
    tasks: tokio::task::JoinSet<Ended>,
    /// Refreshes in flight at once (`REFRESH_CONCURRENCY`).
    capacity: usize,
}

impl Scheduler {
    fn room(&self) -> usize {
        self.capacity.saturating_sub(self.tasks.len())
    }

    fn start(&mut self, id: String, host: String) {
        let state = self.state.clone();
        self.tasks.spawn(async move {
            let answered = match refresh(&state, None, &id, Reason::Background).await.map(|settled| settled.outcome) {
                Ok(Refresh::ProviderDown(_)) => Some(false),
                Ok(Refresh::Refreshed | Refresh::Refused(_)) => Some(true),
                Ok(Refresh::NotNeeded | Refresh::NotRefreshable) => None,
                Err(e) => {
                    tracing::warn!(connection = %id, code = %e.code, "background refresh failed");
                    None
                }
            };
            (host, answered)
        });
    }

    fn ended(&mut self, (host, answered): Ended) {
        self.hosts.done(&host, answered, Instant::now());
    }

    /// Claims what fits, skipping connections of blocked hosts, and starts
    /// each (or releases it, if its host filled up meanwhile); how many
    /// were claimed.
    async fn claim(&mut self) -> usize {
        let room = self.room() as i64;
        if room == 0 {
            return 0;
        }
        let now = self.state.clock.now_secs();
        let skip = self.token_hosts.providers_of(|host| self.hosts.blocked(host, Instant::now()));
        let due = match self.state.store.claim_due_refreshes(now, LEASE_SECS, room.min(BATCH), &skip).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "refresher could not claim due connections");
                return 0;
            }
        };
        let claimed = due.len();
        let mut release = Vec::new();
        for (id, provider_id) in due {
            let host = self.token_hosts.of(&self.state, &provider_id).await;
            match self.hosts.admit(&host, Instant::now()) {
                Admission::Go => self.start(id, host),
                // Its host filled up within this claim: due as it was, for later.
                Admission::Busy | Admission::Open(_) => release.push(id),
            }
        }
        if !release.is_empty() {
            if let Err(e) = self.state.store.release_refresh_claims(&release).await {
                tracing::warn!(error = %e, "could not release claimed refreshes (their leases will expire)");
            }
        }
        claimed
    }
}

/// Runs until the server begins to stop, then returns once the refreshes
/// in flight are done (connections waiting for a host keep their leases,
/// which expire: another replica, or the next start, takes them).
pub async fn run(state: AppState) {
    let mut s = Scheduler {
        hosts: Hosts::new(state.config.refresh_per_host),
        token_hosts: TokenHosts::default(),
        tasks: tokio::task::JoinSet::new(),
        capacity: state.config.refresh_concurrency,
        state,
    };
    let interval = s.state.config.refresh_interval_secs as f64;
    let stopping = s.state.stopping();
    tokio::pin!(stopping);
    let mut last_report = Instant::now();
    loop {
        if s.state.is_stopping() {
            break;
        }
        let claimed = s.claim().await;
        if last_report.elapsed() >= REPORT_EVERY {
            report(&s.state, &s.hosts).await;
            last_report = Instant::now();
        }
        if claimed as i64 == BATCH && s.room() > 0 {
            continue; // more may be due, and there is room
        }
        let jitter = 1.0 + (rand::random::<f64>() * 0.4 - 0.2);
        let pause = tokio::time::sleep(Duration::from_secs_f64(interval * jitter));
        tokio::select! {
            () = &mut stopping => break,
            () = pause => {}
            // A refresh ended: its host may take a waiting one, and there is room to claim.
            Some(ended) = s.tasks.join_next(), if !s.tasks.is_empty() => {
                if let Ok(ended) = ended {
                    s.ended(ended);
                }
            }
        }
    }
    while s.tasks.join_next().await.is_some() {}
}

/// The refresher's state in one log line.
async fn report(state: &AppState, hosts: &Hosts) {
    let now = state.clock.now_secs();
    let backlog = state.store.count_due_refreshes(now).await.unwrap_or(-1);
    let lag = state.store.refresh_lag(now).await.unwrap_or(-1);
    let open = hosts.open(Instant::now());
    if backlog > 0 || !open.is_empty() {
        tracing::info!(backlog, lag_secs = lag, open_circuits = ?open, "refresher");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_at_its_limit_waits_and_a_failing_one_opens_then_probes() {
        let mut hosts = Hosts::new(2);
        let t = Instant::now();
        assert_eq!(hosts.admit("a:443", t), Admission::Go);
        assert_eq!(hosts.admit("a:443", t), Admission::Go);
        assert_eq!(hosts.admit("a:443", t), Admission::Busy);
        assert_eq!(hosts.admit("b:443", t), Admission::Go, "another host is not held up");
        assert!(hosts.blocked("a:443", t) && !hosts.blocked("b:443", t));
        hosts.done("a:443", Some(true), t);
        assert_eq!(hosts.admit("a:443", t), Admission::Go);

        for _ in 0..FAILURES_TO_OPEN {
            assert_eq!(hosts.admit("down:443", t), Admission::Go);
            hosts.done("down:443", Some(false), t);
        }
        let Admission::Open(until) = hosts.admit("down:443", t) else { panic!("open after failures") };
        assert_eq!(until - t, Duration::from_secs(5));
        assert_eq!(hosts.open(t), vec!["down:443".to_owned()]);
        // Half-open after the backoff: one probe, nobody else.
        let later = until + Duration::from_millis(1);
        assert_eq!(hosts.admit("down:443", later), Admission::Go);
        assert!(matches!(hosts.admit("down:443", later), Admission::Open(_)));
        // The probe fails: open again, for longer.
        hosts.done("down:443", Some(false), later);
        let Admission::Open(again) = hosts.admit("down:443", later) else { panic!() };
        assert_eq!(again - later, Duration::from_secs(10));
        // A probe that succeeds closes it.
        let after = again + Duration::from_millis(1);
        assert_eq!(hosts.admit("down:443", after), Admission::Go);
        hosts.done("down:443", Some(true), after);
        assert_eq!(hosts.admit("down:443", after), Admission::Go);
        assert!(hosts.open(after).is_empty());
    }
}
