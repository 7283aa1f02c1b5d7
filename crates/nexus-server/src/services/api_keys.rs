//! API keys with roles and workspaces (SPEC 13): creating, listing and
//! revoking them, and checking the key a request presents.
//!
//! * Keys are `nxk_` + 43 base64url characters (256 random bits); only
//!   their SHA-256 is stored, and the key is shown once, at creation.
//! * What a replica read of a key is trusted for at most [`TRUST`] (0.8 s),
//!   so a revoked or expired key is refused by every replica within a
//!   second; the replica that revokes it forgets it at once.
//! * Failed authentication is limited per caller IP (per /64 for IPv6)
//!   with a keyed GCRA limiter (`governor`) that counts failures only: a
//!   burst of [`FAILURE_BURST`], then one more a second. A blocked address
//!   gets `429` with `Retry-After` before any database work and without an
//!   audit row per request (one `auth.rejected` row with reason
//!   `rate_limited` per block; a request with no key at all is answered
//!   `401` all the same, unaudited while blocked); a caller whose key is good (the bootstrap
//!   key, or a named key this replica already trusts) is never slowed.

use crate::error::{ApiError, ErrorCode};
use crate::middleware::Caller;
use crate::services::providers::rfc3339;
use crate::state::AppState;
use base64::Engine;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use nexus_core::{AuditEvent, Role, ValidationErrors};
use nexus_store::{ApiKeyRef, ApiKeyRow, NewAudit};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use utoipa::ToSchema;

/// How long a replica trusts what it read of a key (under the second SPEC 13
/// allows a revocation to take, leaving room for the request itself).
pub const TRUST: Duration = Duration::from_millis(800);
/// Failed attempts an address may make at once before it is limited (the
/// default of `AUTH_FAILURE_LIMIT`).
pub const FAILURE_BURST: u32 = 10;
/// Failed attempts an address may make per second once limited.
pub const FAILURES_PER_SECOND: u32 = 1;
const PREFIX: &str = "nxk_";
const KEY_LEN: usize = 4 + 43;
const NAME_MAX: usize = 128;
const WORKSPACES_MAX: usize = 100;

/// The key a caller presented, once checked: its id and name (audit rows),
/// role and workspaces.
#[derive(Debug, Clone)]
pub struct Access {
    pub key: ApiKeyRef,
    pub role: Role,
    /// `None`: every workspace.
    pub workspaces: Option<Arc<[String]>>,
    /// When a Connect session (not a key) authenticated the request.
    pub session: Option<Arc<nexus_store::ConnectSessionRow>>,
}

impl Access {
    /// The environment's `API_KEY`.
    pub fn bootstrap() -> Access {
        Access { key: crate::middleware::caller::bootstrap_key(), role: Role::Admin, workspaces: None, session: None }
    }

    pub fn may_see(&self, workspace_id: &str) -> bool {
        self.workspaces.as_ref().is_none_or(|w| w.iter().any(|x| x == workspace_id))
    }
}

/// The address a failed attempt counts against: the IP, or its /64 for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Knocker(u128);

impl Knocker {
    pub fn of(ip: IpAddr) -> Knocker {
        match ip {
            IpAddr::V4(v4) => Knocker(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => Knocker((u128::from(v6) & !((1u128 << 64) - 1)) | 1),
        }
    }
}

/// Keys read recently, and the failed-attempt limiter.
pub struct Keys {
    /// digest → the key as read (`None`: no such key), for at most [`TRUST`].
    read: moka::sync::Cache<String, Option<Arc<ApiKeyRow>>>,
    /// Digests of keys and sessions found good in the last hour: from an
    /// address that is blocked they are still looked up (they are not
    /// guesses), so a good caller sharing an address with a scanner is
    /// not refused.
    known_good: moka::sync::Cache<String, ()>,
    /// key id → whether it still holds, for at most [`TRUST`] (streams ask every second).
    holds: moka::sync::Cache<String, bool>,
    failures: DefaultKeyedRateLimiter<Knocker>,
    /// Addresses over their limit, until when.
    blocked: Mutex<HashMap<Knocker, Instant>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("read", &self.read.entry_count()).finish_non_exhaustive()
    }
}

impl Keys {
    /// Allowing `burst` failures at once per address, then one a second.
    pub fn new(burst: u32) -> Keys {
        let quota = Quota::per_second(NonZeroU32::new(FAILURES_PER_SECOND).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Keys {
            read: moka::sync::Cache::builder().max_capacity(10_000).time_to_live(TRUST).build(),
            known_good: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            holds: moka::sync::Cache::builder().max_capacity(10_000).time_to_live(TRUST).build(),
            failures: RateLimiter::keyed(quota),
            blocked: Mutex::new(HashMap::new()),
        }
    }
    /// Until when `who` is blocked, if it is.
    fn blocked_until(&self, who: Knocker) -> Option<Instant> {
        let blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        blocked.get(&who).copied().filter(|until| *until > Instant::now())
    }

    /// Counts a failure of `who`: `Ok` (answer 401) or `Err(until, newly)`
    /// (answer 429; `newly`: this failure started the block).
    fn fail(&self, who: Knocker) -> Result<(), (Instant, bool)> {
        match self.failures.check_key(&who) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let until = Instant::now()
                    + not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
                let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
                if blocked.len() > 100_000 {
                    let now = Instant::now();
                    blocked.retain(|_, t| *t > now);
                    self.failures.retain_recent();
                }
                let newly = blocked.insert(who, until).is_none_or(|before| before <= Instant::now());
                Err((until, newly))
            }
        }
    }

    fn forget(&self, digest: &str, id: &str) {
        self.read.invalidate(digest);
        self.known_good.invalidate(digest);
        self.holds.invalidate(id);
    }

    /// Whether `digest` may be looked up from `who` now: `Err` (answer 429)
    /// when `who` is blocked and the digest is not one found good before.
    pub fn may_look_up(&self, who: Knocker, digest: &str) -> Result<(), ApiError> {
        match self.blocked_until(who) {
            Some(until) if !self.known_good.contains_key(digest) => Err(too_many(until)),
            _ => Ok(()),
        }
    }

    /// Remembers that `digest` was good.
    pub fn good(&self, digest: &str) {
        self.known_good.insert(digest.to_owned(), ());
    }

    /// Counts a failure of `who` outside the API gate (the `connect_url`
    /// page): `Err` when it is now limited.
    pub fn count_failure(&self, who: Knocker) -> Result<(), Instant> {
        self.fail(who).map_err(|(until, _)| until)
    }

    /// Forgets limiter state that no longer matters (housekeeping).
    pub fn prune(&self) {
        let now = Instant::now();
        self.blocked.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, t| *t > now);
        self.failures.retain_recent();
        self.failures.shrink_to_fit();
    }
}

/// The SHA-256 of a key, hex.
pub fn digest(key: &[u8]) -> String {
    hex::encode(Sha256::digest(key))
}

fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Why a presented key is refused (the `reason` of `auth.rejected`).
fn refusal(reason: &'static str) -> ApiError {
    let message = match reason {
        "missing_api_key" => "the X-API-Key header is required",
        "expired_api_key" => "this API key has expired",
        "revoked_api_key" => "this API key was revoked",
        "expired_session" => "this Connect session has expired; start a new one",
        "invalid_session" => "the Authorization header is not a valid Connect session",
        _ => "the X-API-Key header is not a valid API key",
    };
    ApiError::unauthorized(message).with_details(json!({ "reason": reason }))
}

pub fn too_many(until: Instant) -> ApiError {
    let secs = until.saturating_duration_since(Instant::now()).as_secs_f64().ceil().max(1.0) as u64;
    ApiError::new(ErrorCode::RateLimited, format!("too many failed authentication attempts; retry in {secs} s"))
        .with_details(json!({ "retry_after": secs }))
}

/// Checks the key `presented` by `caller` for `method` `path`: the caller's
/// access, or the refusal (audited as `auth.rejected`).
pub async fn admit(
    state: &AppState,
    caller: &Caller,
    presented: Option<&[u8]>,
    bearer: Option<&[u8]>,
    method: &str,
    path: &str,
) -> Result<Access, ApiError> {
    let who = Knocker::of(caller.ip);
    if let (None, Some(token)) = (presented, bearer) {
        return admit_session(state, caller, token, method, path).await;
    }
    let access = match presented {
        // The bootstrap key: an in-memory, constant-time comparison.
        Some(key) if state.config.api_key_check.matches(key) => Ok(Access::bootstrap()),
        Some(key) if key.len() == KEY_LEN && key.starts_with(PREFIX.as_bytes()) => {
            let digest = digest(key);
            let known = match state.keys.read.get(&digest) {
                Some(known) => known,
                None => {
                    // Not trusted here yet: a blocked address gets no database
                    // work for a guess (a key found good before is no guess).
                    state.keys.may_look_up(who, &digest)?;
                    let row = state.store.api_key_by_digest(&digest).await?.map(Arc::new);
                    if row.as_ref().is_some_and(|r| r.revoked_at.is_none()) {
                        state.keys.good(&digest);
                    }
                    state.keys.read.insert(digest, row.clone());
                    row
                }
            };
            match known {
                None => Err("invalid_api_key"),
                Some(row) if row.revoked_at.is_some() => Err("revoked_api_key"),
                Some(row) if row.expires_at.is_some_and(|at| at <= state.clock.now_micros()) => Err("expired_api_key"),
                Some(row) => match Role::parse(&row.role) {
                    Some(role) => Ok(Access {
                        key: ApiKeyRef { id: row.id.clone(), name: row.name.clone() },
                        role,
                        workspaces: row.workspaces.as_ref().map(|w| Arc::from(w.clone().into_boxed_slice())),
                        session: None,
                    }),
                    None => Err("invalid_api_key"),
                },
            }
        }
        Some(_) => Err("invalid_api_key"),
        None => Err("missing_api_key"),
    };
    let access = match access {
        Ok(access) => access,
        Err(reason) => return Err(failed(state, caller, who, method, path, reason).await),
    };
    if !access.role.allows(method, path) {
        audit_rejection(state, caller, method, path, "forbidden_for_role", Some(&access.key)).await?;
        return Err(ApiError::forbidden(format!(
            "an {} key may not call {method} {}",
            access.role.as_str(),
            path.chars().take(256).collect::<String>()
        ))
        .with_details(json!({ "role": access.role.as_str() })));
    }
    Ok(access)
}

/// A failed authentication of `who`: counted, audited unless its address
/// is limited, and answered 401 or 429.
async fn failed(
    state: &AppState,
    caller: &Caller,
    who: Knocker,
    method: &str,
    path: &str,
    reason: &'static str,
) -> ApiError {
    // A request without a key guesses nothing: it is always told it needs
    // one (401), but counts like a failure, so its audit rows stop too once
    // its address is limited.
    let missing = reason == "missing_api_key";
    let limited = |until| if missing { refusal(reason) } else { too_many(until) };
    if let Some(until) = state.keys.blocked_until(who) {
        return limited(until);
    }
    match state.keys.fail(who) {
        Ok(()) => match audit_rejection(state, caller, method, path, reason, None).await {
            Ok(()) => refusal(reason),
            Err(e) => e,
        },
        Err((until, newly)) => {
            if newly {
                if let Err(e) = audit_rejection(state, caller, method, path, "rate_limited", None).await {
                    return e;
                }
            }
            limited(until)
        }
    }
}

/// `Authorization: Bearer <Connect session token>` on the routes a browser needs.
async fn admit_session(
    state: &AppState,
    caller: &Caller,
    token: &[u8],
    method: &str,
    path: &str,
) -> Result<Access, ApiError> {
    use crate::services::connect_sessions;
    let who = Knocker::of(caller.ip);
    // A limited address gets no database work for a guess.
    let token_digest = digest(token);
    state.keys.may_look_up(who, &token_digest)?;
    let session = match connect_sessions::find(state, token).await? {
        Ok(session) => {
            state.keys.good(&token_digest);
            session
        }
        Err(reason) => return Err(failed(state, caller, who, method, path, reason).await),
    };
    let access = connect_sessions::access(session);
    if !connect_sessions::allows(method, path) {
        audit_rejection(state, caller, method, path, "forbidden_for_session", Some(&access.key)).await?;
        return Err(ApiError::forbidden(format!(
            "a Connect session may not call {method} {}",
            path.chars().take(256).collect::<String>()
        )));
    }
    Ok(access)
}

pub async fn audit_rejection(
    state: &AppState,
    caller: &Caller,
    method: &str,
    path: &str,
    reason: &str,
    key: Option<&ApiKeyRef>,
) -> Result<(), ApiError> {
    let path: String = path.chars().take(256).collect();
    let entry = NewAudit {
        ip: Some(caller.ip_string()),
        user_agent: caller.user_agent.clone(),
        data: json!({ "reason": reason, "method": method, "path": path }),
        at: Some(chrono::Utc::now().timestamp_micros()),
        api_key: key.cloned(),
        ..NewAudit::new(AuditEvent::AuthRejected)
    };
    // Through the batch writer: a scan of wrong keys costs no transaction
    // per request, and repeats merge into one row with a count.
    state.audit_batched(entry).await
}

/// `POST /v1/api-keys`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyInput {
    /// For people (at most 128 characters).
    pub name: String,
    pub role: Role,
    /// The workspaces whose connections the key may use; every workspace when omitted.
    pub workspaces: Option<Vec<String>>,
    /// RFC 3339; the key stops working then.
    pub expires_at: Option<String>,
}

/// An API key (never the key itself, except in the answer to its creation).
#[derive(Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub workspaces: Option<Vec<String>>,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    /// The key: only in the answer to `POST /v1/api-keys`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl std::fmt::Debug for ApiKeyView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyView").field("id", &self.id).field("name", &self.name).finish_non_exhaustive()
    }
}

fn view(row: &ApiKeyRow) -> ApiKeyView {
    ApiKeyView {
        id: row.id.clone(),
        name: row.name.clone(),
        role: Role::parse(&row.role).unwrap_or(Role::Agent),
        workspaces: row.workspaces.clone(),
        prefix: row.prefix.clone(),
        created_at: rfc3339(row.created_at),
        expires_at: row.expires_at.map(rfc3339),
        revoked_at: row.revoked_at.map(rfc3339),
        key: None,
    }
}

fn clean_text(s: &str) -> bool {
    !s.trim().is_empty() && !s.chars().any(char::is_control)
}

pub async fn create(state: &AppState, caller: &Caller, body: Value) -> Result<ApiKeyView, ApiError> {
    let input: ApiKeyInput = nexus_core::wire::from_body(body)?;
    let mut errs = ValidationErrors::default();
    if input.name.chars().count() > NAME_MAX || !clean_text(&input.name) {
        errs.push("name", format!("must be 1 to {NAME_MAX} characters without control characters"));
    }
    if let Some(ws) = &input.workspaces {
        if ws.is_empty() || ws.len() > WORKSPACES_MAX {
            errs.push(
                "workspaces",
                format!("must list 1 to {WORKSPACES_MAX} workspaces (omit it for every workspace)"),
            );
        }
        for (i, w) in ws.iter().enumerate() {
            if w.len() > 256 || !clean_text(w) {
                errs.push(format!("workspaces[{i}]"), "must be 1 to 256 characters without control characters");
            }
        }
    }
    if input.role == Role::Admin && input.workspaces.is_some() {
        // An admin manages what no workspace bounds (providers, webhooks, keys, the audit log).
        errs.push("workspaces", "an admin key sees every workspace; limit agent or connect keys instead");
    }
    let now = state.clock.now_micros();
    let expires_at = match input.expires_at.as_deref().map(chrono::DateTime::parse_from_rfc3339) {
        None => None,
        Some(Ok(t)) if t.timestamp_micros() > now => Some(t.timestamp_micros()),
        Some(Ok(_)) => {
            errs.push("expires_at", "must be in the future");
            None
        }
        Some(Err(_)) => {
            errs.push("expires_at", "must be an RFC 3339 time, e.g. 2027-01-01T00:00:00Z");
            None
        }
    };
    errs.into_result(())?;
    let key = generate();
    let mut workspaces = input.workspaces;
    if let Some(ws) = workspaces.as_mut() {
        ws.sort();
        ws.dedup();
    }
    let row = ApiKeyRow {
        id: uuid::Uuid::new_v4().to_string(),
        name: input.name.trim().to_owned(),
        role: input.role.as_str().to_owned(),
        workspaces,
        digest: digest(key.as_bytes()),
        prefix: key.chars().take(12).collect(),
        created_at: now,
        expires_at,
        revoked_at: None,
    };
    let data = json!({ "key_id": row.id, "name": row.name, "role": row.role, "workspaces": row.workspaces });
    state.store.insert_api_key(&row, caller.audit(AuditEvent::ApiKeyCreated, data)).await?;
    Ok(ApiKeyView { key: Some(key), ..view(&row) })
}

pub async fn list(state: &AppState) -> Result<Vec<ApiKeyView>, ApiError> {
    Ok(state.store.list_api_keys().await?.iter().map(view).collect())
}

pub async fn revoke(state: &AppState, caller: &Caller, id: &str) -> Result<ApiKeyView, ApiError> {
    let row = state.store.api_key_by_id(id).await?.ok_or_else(|| ApiError::not_found("no API key with that id"))?;
    if row.revoked_at.is_none() {
        let data = json!({ "key_id": row.id, "name": row.name });
        state
            .store
            .revoke_api_key(&row.id, state.clock.now_micros(), caller.audit(AuditEvent::ApiKeyRevoked, data))
            .await?;
        state.keys.forget(&row.digest, &row.id);
    }
    let row = state.store.api_key_by_id(id).await?.ok_or_else(|| ApiError::not_found("no API key with that id"))?;
    Ok(view(&row))
}

/// Whether `access` still holds (for long-lived streams): the key is
/// neither revoked nor expired, as this replica trusts it (≤ [`TRUST`] old).
pub async fn still_valid(state: &AppState, access: &Access) -> bool {
    if access.key.id == "bootstrap" {
        return true;
    }
    if let Some(holds) = state.keys.holds.get(&access.key.id) {
        return holds;
    }
    let row = match state.store.api_key_by_id(&access.key.id).await {
        Ok(row) => row,
        // The database away: keep the stream; the next check decides.
        Err(_) => return true,
    };
    let holds =
        row.is_some_and(|r| r.revoked_at.is_none() && r.expires_at.is_none_or(|at| at > state.clock.now_micros()));
    state.keys.holds.insert(access.key.id.clone(), holds);
    holds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_recognisable() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert_eq!(a.len(), KEY_LEN);
        assert!(a.starts_with(PREFIX));
        assert_eq!(digest(a.as_bytes()).len(), 64);
    }

    #[test]
    fn ipv6_addresses_count_per_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Knocker::of(a), Knocker::of(b));
        assert_ne!(Knocker::of(a), Knocker::of(c));
        assert_ne!(Knocker::of("10.0.0.1".parse().unwrap()), Knocker::of("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn failures_are_limited_after_a_burst() {
        let keys = Keys::new(FAILURE_BURST);
        let who = Knocker::of("192.0.2.7".parse().unwrap());
        for _ in 0..FAILURE_BURST {
            assert!(keys.fail(who).is_ok());
        }
        let (until, newly) = keys.fail(who).unwrap_err();
        assert!(newly && until > Instant::now());
        assert!(keys.blocked_until(who).is_some());
        assert!(!keys.fail(who).unwrap_err().1, "one block, not one per failure");
        assert!(keys.blocked_until(Knocker::of("192.0.2.8".parse().unwrap())).is_none());
    }
}
