//! Reading the audit log (`GET /v1/audit`): filters checked and translated to
//! the store's terms, rows rendered with RFC 3339 times and an opaque cursor.

use crate::error::ApiError;
use crate::services::providers::rfc3339;
use crate::state::AppState;
use nexus_core::AuditEvent;
use nexus_store::{AuditEntry, AuditFilter};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 1000;

/// Query parameters of `GET /v1/audit`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// One of the event types of SPEC section 6, e.g. `provider.updated`.
    pub event_type: Option<AuditEvent>,
    /// RFC 3339 time; rows at or after it.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// RFC 3339 time; rows at or before it.
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// Provider id or name.
    pub provider: Option<String>,
    pub connection_id: Option<String>,
    pub workspace_id: Option<String>,
    /// Rows caused by this API key (its id; `bootstrap` is the environment's `API_KEY`).
    pub api_key: Option<String>,
    /// Default 50; larger values are capped at 1000.
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    pub cursor: Option<String>,
}

/// One audit row.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryView {
    pub id: String,
    /// Position in the hash chain (1 is the first row ever written).
    pub seq: i64,
    /// RFC 3339.
    pub at: String,
    pub event_type: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub provider_id: Option<String>,
    pub connection_id: Option<String>,
    pub workspace_id: Option<String>,
    #[schema(value_type = Object)]
    pub data: Value,
    pub prev_hash: String,
    pub hash: String,
    /// 1: unkeyed SHA-256 (rows from before audit keys); 2: HMAC-SHA256 under `key_id`.
    pub hash_version: i64,
    /// The audit key that signed the row (v2).
    pub key_id: Option<String>,
    /// The API key that caused the event: `{id, name}` (`bootstrap` is the environment's `API_KEY`).
    #[schema(value_type = Option<Object>)]
    pub api_key: Option<Value>,
}

/// The newest row of the audit chain: a verifier keeps it and later runs
/// `nexus audit verify --expect-head SEQ:HASH` to prove no row was cut
/// from the end since.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditHeadView {
    /// 0 when the log is empty.
    pub seq: i64,
    pub hash: String,
    /// RFC 3339; `null` when the log is empty.
    pub at: Option<String>,
}

/// A page of rows, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPageView {
    pub entries: Vec<AuditEntryView>,
    /// Pass as `cursor` to get the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

fn view(e: AuditEntry) -> AuditEntryView {
    AuditEntryView {
        id: e.id,
        seq: e.seq,
        at: rfc3339(e.at),
        event_type: e.event_type,
        ip: e.ip,
        user_agent: e.user_agent,
        provider_id: e.provider_id,
        connection_id: e.connection_id,
        workspace_id: e.workspace_id,
        data: e.data,
        prev_hash: e.prev_hash,
        hash: e.hash,
        hash_version: e.hash_version,
        key_id: e.key_id,
        api_key: e.api_key_id.map(|id| serde_json::json!({ "id": id, "name": e.api_key_name })),
    }
}

/// `GET /v1/audit/head`.
pub async fn head(state: &AppState) -> Result<AuditHeadView, ApiError> {
    let head = state.store.audit_head().await?;
    Ok(AuditHeadView { seq: head.seq, hash: head.hash, at: head.at.map(rfc3339) })
}

/// Logs the chain head (SPEC 6b: at least every minute, and at shutdown),
/// so a copy of it lives outside the database.
pub async fn log_head(state: &AppState) {
    match state.store.audit_head().await {
        Ok(head) => tracing::info!(seq = head.seq, hash = %head.hash, at = head.at.map(rfc3339), "audit chain head"),
        Err(e) => tracing::warn!(error = %e, "the audit chain head could not be read"),
    }
}

fn parse_time(field: &str, raw: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(raw).map(|t| t.timestamp_micros()).map_err(|_| {
        ApiError::bad_request(format!("{field}: '{raw}' is not an RFC 3339 time such as 2026-01-31T12:00:00Z"))
    })
}

pub async fn list(state: &AppState, q: AuditQuery) -> Result<AuditPageView, ApiError> {
    let limit = match q.limit {
        None => DEFAULT_LIMIT,
        Some(n) if n >= 1 => n.min(MAX_LIMIT),
        Some(_) => return Err(ApiError::bad_request(format!("limit: must be a whole number from 1 to {MAX_LIMIT}"))),
    };
    let before_seq = match q.cursor.as_deref() {
        None => None,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if n >= 1 => Some(n),
            _ => return Err(ApiError::bad_request("cursor: not a cursor returned by this endpoint")),
        },
    };
    let since = q.since.as_deref().map(|s| parse_time("since", s)).transpose()?;
    let until = q.until.as_deref().map(|s| parse_time("until", s)).transpose()?;
    let provider_id = crate::services::providers::filter_id(state, q.provider).await?;
    let page = state
        .store
        .list_audit(&AuditFilter {
            event_type: q.event_type,
            since,
            until,
            provider_id,
            connection_id: q.connection_id,
            workspace_id: q.workspace_id,
            api_key_id: q.api_key.filter(|k| !k.is_empty()),
            before_seq,
            limit,
        })
        .await?;
    Ok(AuditPageView {
        entries: page.entries.into_iter().map(view).collect(),
        next_cursor: page.next_before.map(|s| s.to_string()),
    })
}
