//! Refreshing OAuth access tokens: on demand (inside the refresh window),
//! forced (`POST /v1/refresh/{id}`), and in the background.
//!
//! Single flight: callers of one connection first queue on an in-process
//! per-connection lock, then take the store's refresh lock (a row lock on
//! PostgreSQL, held across the provider call, so replicas queue too). Whoever
//! gets the lock re-reads the row; if the token changed since the caller
//! looked, someone else already refreshed and the caller uses that result.
//! A rotated refresh token is stored in the same transaction as the new
//! access token.

use crate::error::ApiError;
use crate::middleware::Caller;
use crate::services::connections::{audit, client_config, context};
use crate::state::AppState;
use nexus_core::AuditEvent;
use nexus_core::AuthType;
use nexus_core::ConnectionStatus;
use nexus_oauth::OAuthError;
use nexus_store::{ConnectionRow, Invalidation, ProviderRow, RefreshOutcome};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// Forced refreshes within this many seconds of a completed one get its result.
pub const FORCED_COALESCE_SECS: i64 = 5;

/// Why a refresh is attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `GET /v1/token` found the token inside the refresh window; carries the
    /// `expires_at` the caller saw, to detect a refresh that happened meanwhile.
    OnDemand(Option<i64>),
    Forced,
    /// The provider answered 401 to a token with this `expires_at`: refresh
    /// unless someone already replaced that token.
    Rejected(Option<i64>),
    Background,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::OnDemand(_) => "on_demand",
            Reason::Forced => "forced",
            Reason::Rejected(_) => "rejected",
            Reason::Background => "background",
        }
    }
}

/// What became of a refresh request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// This call refreshed the token.
    Refreshed,
    /// No refresh was needed (fresh, or refreshed by someone else meanwhile).
    NotNeeded,
    /// The provider could not be reached; the stored token is unchanged.
    ProviderDown(String),
    /// The provider refused the refresh token: `attention_required`.
    Refused(String),
    /// Not an active OAuth connection with a refresh token.
    NotRefreshable,
}

/// Per-connection in-process locks (entries vanish with their last holder).
#[derive(Debug, Default)]
pub struct RefreshLocks {
    map: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl RefreshLocks {
    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = map.get(id).and_then(Weak::upgrade) {
            return existing;
        }
        if map.len() > 10_000 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let fresh = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(id.to_owned(), Arc::downgrade(&fresh));
        fresh
    }
}

fn needs_refresh(state: &AppState, row: &ConnectionRow, reason: Reason) -> bool {
    let window = state.config.refresh_window_secs;
    let near_expiry = row.expires_at.is_some_and(|e| e - state.clock.now_secs() <= window);
    match reason {
        Reason::OnDemand(seen) => row.expires_at == seen && near_expiry,
        Reason::Forced => {
            row.last_refreshed_at.is_none_or(|t| state.clock.now_micros() - t >= FORCED_COALESCE_SECS * 1_000_000)
        }
        Reason::Rejected(seen) => row.expires_at == seen,
        Reason::Background => near_expiry || row.next_refresh_at.is_some_and(|t| t <= state.clock.now_secs()),
    }
}

/// Whether Nexus can renew this connection's token: an oauth2 connection
/// with a refresh token, or a grant it can run again by itself (SPEC 11).
pub(crate) fn renewable(row: &ConnectionRow) -> bool {
    match row.auth_type {
        AuthType::Oauth2 => row.refresh_token_enc.is_some(),
        AuthType::Oauth2ClientCredentials | AuthType::JwtBearer => true,
        _ => false,
    }
}

/// New tokens for `row` from its provider: the refresh grant with its
/// refresh token and `refresh_params`, or the client credentials grant
/// again. `Err` when the request cannot even be made.
async fn ask_provider(
    state: &AppState,
    provider: &ProviderRow,
    row: &ConnectionRow,
) -> Result<Result<nexus_oauth::TokenSet, OAuthError>, ApiError> {
    if row.auth_type == AuthType::JwtBearer {
        return crate::services::connections::grant::renew_bearer(state, provider, row).await;
    }
    if row.auth_type == AuthType::Oauth2ClientCredentials {
        let cfg = crate::services::connections::grant::client_of(state, provider, row).await?;
        return Ok(crate::services::connections::grant::renew(state, provider, &cfg, &row.scopes).await);
    }
    let cfg = client_config(state, provider, &row.connection_config).await?;
    let enc = row.refresh_token_enc.as_deref().unwrap_or_default();
    let refresh_token =
        state.config.keyring.open_string(&context(&row.id, "refresh_token"), enc).map_err(|_| ApiError::internal())?;
    let refresh_params =
        provider.config.params.get("refresh_params").and_then(Value::as_object).cloned().unwrap_or_default();
    let http = nexus_oauth::ProviderHttp::new(state.http.clone());
    let token = nexus_core::SecretString::new(refresh_token.as_str());
    Ok(nexus_oauth::refresh(&http, &cfg, &token, &refresh_params).await)
}

/// When the background refresher should renew a token that expires at
/// `expires_at`: at a random point in the first half of the refresh
/// window, so connections created together (an import, a launch) do not
/// stay due together forever.
pub(crate) fn renew_at(expires_at: i64, window: i64) -> i64 {
    let spread = window / 2;
    let jitter = if spread > 0 { (rand::random::<u64>() % (spread as u64 + 1)) as i64 } else { 0 };
    expires_at - window + jitter
}

/// Backoff after the `failures`-th consecutive failure: 15 s doubling to 1 h, ±20 % jitter.
fn retry_at(now: i64, failures: i64) -> i64 {
    let base = (15i64 << failures.clamp(0, 8)).min(3600);
    let jitter = (rand::random::<f64>() * 0.4 - 0.2) * base as f64;
    now + (base as f64 + jitter).max(1.0) as i64
}

/// A connection as a refresh attempt left it: what the caller answers
/// from, with no second read.
pub struct Settled {
    pub outcome: Refresh,
    /// The row as this refresh wrote it, or as read under its lock when
    /// nothing was written.
    pub row: ConnectionRow,
    /// Its provider, when the refresh got as far as reading it.
    pub provider: Option<ProviderRow>,
    /// The usage credentials this refresh wrote, in the clear (`None`
    /// unless it refreshed).
    pub credentials: Option<Map<String, Value>>,
}

impl std::fmt::Debug for Settled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settled")
            .field("outcome", &self.outcome)
            .field("connection", &self.row.id)
            .field("credentials", &self.credentials.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

/// Refreshes `id` if `reason` says it is needed, with single flight.
///
/// The refresh runs as a task of its own, tracked by the state: if the
/// caller goes away (a client that hangs up, a request cut off by a
/// timeout) it still finishes, so a refresh token the provider has already
/// rotated is stored, and shutdown waits for it.
pub async fn refresh(state: &AppState, caller: Option<&Caller>, id: &str, reason: Reason) -> Result<Settled, ApiError> {
    let (owned, caller, id) = (state.clone(), caller.cloned(), id.to_owned());
    let task = state.tasks.spawn(async move { refresh_now(&owned, caller.as_ref(), &id, reason).await });
    task.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a refresh task failed");
        Err(ApiError::internal())
    })
}

/// One refresh under the lock: the row and its provider are read once
/// (together, in the lock's transaction), the credentials opened once and
/// sealed once, and the row written is the row returned.
async fn refresh_now(state: &AppState, caller: Option<&Caller>, id: &str, reason: Reason) -> Result<Settled, ApiError> {
    // A caller limited to some workspaces is told about another's connection
    // before it waits on any lock (no timing tells it the connection exists).
    if let Some(caller) = caller.filter(|c| c.workspaces().is_some()) {
        let visible = state.store.connection_by_id(id).await?.is_some_and(|row| caller.may_see(&row.workspace_id));
        if !visible {
            return Err(ApiError::not_found("no such connection"));
        }
    }
    let local = state.refresh_locks.lock_for(id);
    let _local = local.lock().await;
    let lock = state.store.lock_for_refresh(id).await?.ok_or_else(|| ApiError::not_found("no such connection"))?;
    let row = lock.row().clone();
    if caller.is_some_and(|c| !c.may_see(&row.workspace_id)) {
        lock.release().await;
        return Err(ApiError::not_found("no such connection"));
    }
    let provider = lock.provider().cloned();
    let unchanged = |outcome| Settled { outcome, row: row.clone(), provider: provider.clone(), credentials: None };
    if row.status != ConnectionStatus::Active || !renewable(&row) {
        lock.release().await;
        return Ok(unchanged(Refresh::NotRefreshable));
    }
    if !needs_refresh(state, &row, reason) {
        lock.release().await;
        return Ok(unchanged(Refresh::NotNeeded));
    }
    let Some(provider) = provider.clone() else {
        lock.release().await;
        return Err(ApiError::provider_deleted());
    };
    let keyring = &state.config.keyring;
    let result = match ask_provider(state, &provider, &row).await {
        Ok(result) => result,
        Err(e) => {
            lock.release().await;
            return Err(e);
        }
    };

    let mut written_credentials = None;
    let (outcome, answer, audits) = match result {
        Ok(tokens) => {
            let mut credentials: Map<String, Value> = row
                .credentials_enc
                .as_deref()
                .and_then(|enc| keyring.open_string(&context(&row.id, "credentials"), enc).ok())
                .and_then(|plain| serde_json::from_str(&plain).ok())
                .unwrap_or_default();
            for (k, v) in tokens.extras {
                credentials.insert(k, v);
            }
            credentials.insert("access_token".into(), Value::String(tokens.access_token.expose().to_owned()));
            credentials.insert("token_type".into(), Value::String(tokens.token_type));
            if let Some(scope) = tokens.scope {
                credentials.insert("scope".into(), Value::String(scope));
            }
            if let Some(id_token) = tokens.id_token {
                credentials.insert("id_token".into(), Value::String(id_token));
            }
            let expires_at = tokens.expires_in.map(|s| state.clock.now_secs() + s as i64);
            let rotated = tokens.refresh_token.is_some();
            let credentials_enc = keyring.seal(
                &context(&row.id, "credentials"),
                serde_json::to_string(&credentials).map_err(|_| ApiError::internal())?.as_bytes(),
            );
            written_credentials = Some(credentials);
            let outcome = RefreshOutcome::Refreshed {
                credentials_enc,
                // Only an oauth2 connection keeps a refresh token; the
                // grants keep their client or key in that place instead.
                refresh_token_enc: tokens
                    .refresh_token
                    .filter(|_| row.auth_type == AuthType::Oauth2)
                    .map(|r| keyring.seal(&context(&row.id, "refresh_token"), r.expose().as_bytes())),
                expires_at,
                next_refresh_at: expires_at.map(|e| renew_at(e, state.config.refresh_window_secs)),
            };
            let a = audit(
                caller,
                AuditEvent::TokenRefreshed,
                &row,
                json!({ "reason": reason.label(), "rotated": rotated }),
            );
            (outcome, Refresh::Refreshed, vec![a])
        }
        // SPEC 11: a grant Nexus runs by itself needs a person only when the
        // client or the key is refused; any other refusal is retried.
        Err(OAuthError::Provider { code, .. })
            if row.auth_type == AuthType::Oauth2 || code == "invalid_client" || code == "invalid_grant" =>
        {
            let failed =
                audit(caller, AuditEvent::TokenRefreshFailed, &row, json!({ "reason": reason.label(), "error": code }));
            let attention = audit(caller, AuditEvent::ConnectionAttentionRequired, &row, json!({ "error": code }));
            (RefreshOutcome::Refused { error: code.clone() }, Refresh::Refused(code), vec![failed, attention])
        }
        Err(other) => {
            let code = other.code();
            tracing::warn!(connection = %row.id, error = %other, "refresh failed; will retry");
            let a =
                audit(caller, AuditEvent::TokenRefreshFailed, &row, json!({ "reason": reason.label(), "error": code }));
            let outcome = RefreshOutcome::Failed {
                error: code.clone(),
                retry_at: retry_at(state.clock.now_secs(), row.refresh_failures),
            };
            (outcome, Refresh::ProviderDown(code), vec![a])
        }
    };
    let label = match &answer {
        Refresh::Refreshed => "refreshed",
        Refresh::Refused(_) => "refused",
        _ => "provider_down",
    };
    state.metrics.refresh(provider.config.name.as_str(), label);
    let written = state.store.finish_refresh(lock, &outcome, audits, state.clock.now_micros()).await?;
    state.invalidate(Invalidation::Connection(row.id.clone()));
    match written {
        Some(row) => Ok(Settled { outcome: answer, row, provider: Some(provider), credentials: written_credentials }),
        // Revoked (or otherwise ended) while the provider was asked: what
        // the provider said is not stored, and the row says why.
        None => {
            let row =
                state.store.connection_by_id(id).await?.ok_or_else(|| ApiError::not_found("no such connection"))?;
            Ok(Settled { outcome: Refresh::NotRefreshable, row, provider: Some(provider), credentials: None })
        }
    }
}
