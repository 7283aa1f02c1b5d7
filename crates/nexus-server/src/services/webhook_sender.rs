//! Sends the webhook outbox (SPEC 13): claims due deliveries, signs each as
//! Standard Webhooks says, POSTs it, and records the attempt.
//!
//! * An attempt is a 2xx within `WEBHOOK_TIMEOUT`; anything else (another
//!   status, a redirect — never followed —, a timeout, no connection) is
//!   retried after [`SCHEDULE`]: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
//!   (27.6 h in all, each delay stretched by up to 10 % so a receiver
//!   coming back is not hit by every retry at once), then the delivery is
//!   `failed` (it can still be redelivered on demand).
//! * A slow or dead receiver holds at most [`PER_WEBHOOK`] attempts in
//!   flight per process and each for at most `WEBHOOK_TIMEOUT`: claims skip
//!   its deliveries while it is at that limit, so other webhooks' deliveries
//!   go on.
//! * Claims are leased (see `nexus_store::webhooks`): a replica that dies
//!   mid-attempt leaves the delivery to another once the lease passes, and
//!   no attempt is ever sent by two replicas.
//! * It stops cooperatively: once the server begins to stop nothing more is
//!   claimed; attempts under way finish (they are tracked tasks).

use crate::services::webhooks::{secret_context, secret_key};
use crate::state::AppState;
use base64::Engine;
use hmac::{Hmac, Mac};
use nexus_store::{AttemptResult, ClaimedDelivery, NextStep};
use sha2::Sha256;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Delays after the 1st, 2nd, … failed attempt of a schedule (seconds).
pub const SCHEDULE: [i64; 7] = [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000];
/// Attempts in flight at once per process.
pub const MAX_IN_FLIGHT: usize = 32;
/// Attempts in flight at once per webhook per process.
pub const PER_WEBHOOK: usize = 4;
/// How often the outbox is looked at when nothing wakes the sender.
const POLL: Duration = Duration::from_millis(250);
/// How long the sender waits after a failed claim (the database away).
const CLAIM_BACKOFF: Duration = Duration::from_secs(2);
/// How much of a receiver's answer is read (the rest is dropped).
const BODY_LIMIT: usize = 64 * 1024;

/// The `webhook-signature` value: `v1,` + base64 of HMAC-SHA256 over
/// `{id}.{timestamp}.{body}` under the secret's key bytes.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &str) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot refuse one.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return String::new() };
    mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// When to try again after the `n`th failed attempt of a schedule (`None`: give up).
pub fn retry_after(n: i64, jitter: f64) -> Option<Duration> {
    let base = *SCHEDULE.get(usize::try_from(n.checked_sub(1)?).ok()?)?;
    Some(Duration::from_secs_f64(base as f64 * (1.0 + jitter.clamp(0.0, 0.1))))
}

/// How long a claim keeps other replicas away: long enough for an attempt
/// (connect, send, answer) and recording it.
pub fn lease(timeout: Duration) -> Duration {
    timeout * 2 + Duration::from_secs(5)
}

fn client(timeout: Duration) -> reqwest::Client {
    nexus_bridge::resolve::reqwest_builder()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("nexus-webhooks/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(PER_WEBHOOK)
        .build()
        .expect("the webhook client configuration is static and valid")
}

/// The sender's loop; returns once the server begins to stop.
pub async fn run(state: AppState) {
    let http = client(state.config.webhook_timeout);
    let lease_micros = i64::try_from(lease(state.config.webhook_timeout).as_micros()).unwrap_or(i64::MAX);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut in_flight: HashMap<String, usize> = HashMap::new();
    let mut total = 0usize;
    let stopping = state.stopping();
    tokio::pin!(stopping);
    loop {
        if state.is_stopping() {
            return;
        }
        let free = MAX_IN_FLIGHT - total;
        let mut full_batch = false;
        if free > 0 {
            let skip: Vec<String> =
                in_flight.iter().filter(|(_, n)| **n >= PER_WEBHOOK).map(|(k, _)| k.clone()).collect();
            // A claim may return every delivery of one webhook: no more than
            // the room the fullest webhook not skipped has left, so none goes
            // past PER_WEBHOOK.
            let room = in_flight.values().filter(|n| **n < PER_WEBHOOK).map(|n| PER_WEBHOOK - n).min();
            let batch = free.min(room.unwrap_or(PER_WEBHOOK));
            let now = state.clock.now_micros();
            match state.store.claim_deliveries(now, now.saturating_add(lease_micros), batch as i64, &skip).await {
                Ok(claimed) => {
                    full_batch = claimed.len() == batch;
                    for c in claimed {
                        *in_flight.entry(c.webhook_id.clone()).or_default() += 1;
                        total += 1;
                        let (state, http, done) = (state.clone(), http.clone(), done_tx.clone());
                        state.tasks.clone().spawn(async move {
                            // Reported however the attempt ends (a panic included), so the slot is freed.
                            let _done = Done(Some((done, c.webhook_id.clone())));
                            attempt(&state, &http, c).await;
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "webhook deliveries could not be claimed; trying again shortly");
                    // The database is away: wait a little longer than a poll.
                    tokio::select! {
                        _ = &mut stopping => return,
                        _ = tokio::time::sleep(CLAIM_BACKOFF) => {}
                    }
                }
            }
        }
        if !full_batch || total >= MAX_IN_FLIGHT {
            tokio::select! {
                _ = &mut stopping => return,
                Some(id) = done_rx.recv() => finished(&mut in_flight, &mut total, id),
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        while let Ok(id) = done_rx.try_recv() {
            finished(&mut in_flight, &mut total, id);
        }
    }
}

/// Tells the loop that an attempt of a webhook ended, when dropped.
struct Done(Option<(mpsc::UnboundedSender<String>, String)>);

impl Drop for Done {
    fn drop(&mut self) {
        if let Some((tx, webhook_id)) = self.0.take() {
            let _ = tx.send(webhook_id);
        }
    }
}

fn finished(in_flight: &mut HashMap<String, usize>, total: &mut usize, webhook_id: String) {
    *total = total.saturating_sub(1);
    if let Some(n) = in_flight.get_mut(&webhook_id) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            in_flight.remove(&webhook_id);
        }
    }
}

/// One attempt: sign, send, record.
async fn attempt(state: &AppState, http: &reqwest::Client, c: ClaimedDelivery) {
    let started = Instant::now();
    let (status_code, outcome, error) = send(state, http, &c).await;
    let finished_at = state.clock.now_micros();
    let next = if outcome == "delivered" {
        NextStep::Delivered
    } else {
        match retry_after(c.in_schedule, rand::random::<f64>() * 0.1) {
            Some(d) => NextStep::RetryAt(finished_at.saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))),
            None => NextStep::GiveUp,
        }
    };
    state.metrics.webhook_attempt(outcome);
    let result = AttemptResult {
        finished_at,
        status_code: status_code.map(i64::from),
        outcome,
        error,
        duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        next,
    };
    if let Err(e) = state.store.finish_attempt(&c, &result).await {
        // The lease passes and another attempt follows: at least once, never lost.
        tracing::warn!(delivery = %c.id, attempt = c.attempt, error = %e, "a webhook attempt could not be recorded");
    }
}

/// Sends `c`: (status, outcome, error).
async fn send(
    state: &AppState,
    http: &reqwest::Client,
    c: &ClaimedDelivery,
) -> (Option<u16>, &'static str, Option<String>) {
    // The URL was checked at registration; checked again in case the row was edited by hand.
    if let Err(m) = nexus_core::url_policy::parse_outbound_url(&c.url) {
        return (None, "unreachable", Some(format!("the webhook's url {m}")));
    }
    let key = match state.config.keyring.open_string(&secret_context(&c.webhook_id), &c.secret_enc) {
        Ok(secret) => match secret_key(&secret) {
            Some(k) => zeroize::Zeroizing::new(k),
            None => return (None, "unreachable", Some("the webhook's stored secret is not a whsec_ secret".into())),
        },
        Err(_) => {
            return (None, "unreachable", Some("the webhook's secret cannot be opened with ENCRYPTION_KEYS".into()))
        }
    };
    let timestamp = state.clock.now_secs();
    let signature = sign(&key, &c.id, timestamp, &c.payload);
    let sent = http
        .post(&c.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &c.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(c.payload.clone())
        .send()
        .await;
    match sent {
        Ok(mut resp) => {
            let status = resp.status();
            // Read a little of the answer so the connection can be reused; never more.
            let mut read = 0usize;
            while read < BODY_LIMIT {
                match resp.chunk().await {
                    Ok(Some(chunk)) => read += chunk.len(),
                    _ => break,
                }
            }
            let code = Some(status.as_u16());
            if status.is_success() {
                (code, "delivered", None)
            } else if status.is_redirection() {
                (code, "redirect_refused", Some(format!("the receiver answered {status}; redirects are not followed")))
            } else {
                (code, "http_status", Some(format!("the receiver answered {status}")))
            }
        }
        Err(e) if e.is_timeout() => {
            (None, "timeout", Some(format!("no answer within {} s", state.config.webhook_timeout.as_secs())))
        }
        Err(e) => (None, "unreachable", Some(format!("the receiver could not be reached: {}", e.without_url()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_lasts_more_than_a_day_and_ends() {
        let total: i64 = SCHEDULE.iter().sum();
        assert!(total >= 24 * 3600, "{total}");
        assert_eq!(retry_after(1, 0.0), Some(Duration::from_secs(5)));
        assert_eq!(retry_after(7, 0.0), Some(Duration::from_secs(36_000)));
        assert_eq!(retry_after(8, 0.0), None);
        assert_eq!(retry_after(0, 0.0), None);
        assert_eq!(retry_after(2, 0.5), Some(Duration::from_secs(330)), "jitter is capped at 10 %");
    }

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn signs_like_standard_webhooks() {
        let key = base64::engine::general_purpose::STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
