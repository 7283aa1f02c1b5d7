//! The append-only, hash-chained audit log.
//!
//! Row `n` stores the hash of row `n - 1` (`prev_hash`) and its own `hash` over
//! that and all its fields, so editing, deleting or reordering any row breaks
//! the chain from that row on. Appends are serialised (see the crate docs) so
//! the chain never forks, even with several processes on one PostgreSQL.

use crate::{get, now_micros, Backend, Store, StoreError, WriteTx};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;

/// The hash that the first row points back to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event to record. `data` must never hold a secret value.
#[derive(Debug, Clone, Default)]
pub struct NewAudit {
    pub event_type: &'static str,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub provider_id: Option<String>,
    pub connection_id: Option<String>,
    pub workspace_id: Option<String>,
    pub data: Value,
    /// When the event happened (unix microseconds); default: when written.
    pub at: Option<i64>,
    /// The row's id, when the writer fixes it beforehand (so a retried
    /// batch can tell it was already written); default: a new UUIDv7.
    pub id: Option<String>,
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub seq: i64,
    pub id: String,
    pub at: i64,
    pub event_type: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub provider_id: Option<String>,
    pub connection_id: Option<String>,
    pub workspace_id: Option<String>,
    pub data: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// Filters of `GET /v1/audit`. `before_seq` is the page cursor.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub event_type: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub provider_id: Option<String>,
    pub connection_id: Option<String>,
    pub workspace_id: Option<String>,
    pub before_seq: Option<i64>,
    pub limit: i64,
}

/// One page, newest first; `next_before` is set when older rows remain.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next_before: Option<i64>,
}

/// The outcome of walking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub rows_checked: i64,
    /// The first row that does not verify, and why.
    pub first_broken: Option<(i64, String)>,
}

/// The hash of a row: SHA-256 over a JSON array of its fields, so no field
/// boundary is ambiguous.
#[allow(clippy::too_many_arguments)]
fn row_hash(
    prev_hash: &str,
    seq: i64,
    id: &str,
    at: i64,
    event_type: &str,
    ip: Option<&str>,
    user_agent: Option<&str>,
    provider_id: Option<&str>,
    connection_id: Option<&str>,
    workspace_id: Option<&str>,
    data: &str,
) -> String {
    let canonical = serde_json::json!([
        prev_hash,
        seq,
        id,
        at,
        event_type,
        ip,
        user_agent,
        provider_id,
        connection_id,
        workspace_id,
        data
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

fn entry_hash(e: &AuditEntry, data: &str) -> String {
    row_hash(
        &e.prev_hash,
        e.seq,
        &e.id,
        e.at,
        &e.event_type,
        e.ip.as_deref(),
        e.user_agent.as_deref(),
        e.provider_id.as_deref(),
        e.connection_id.as_deref(),
        e.workspace_id.as_deref(),
        data,
    )
}

const COLUMNS: &str =
    "seq, id, at, event_type, ip, user_agent, provider_id, connection_id, workspace_id, data, prev_hash, hash";

fn from_row(row: &AnyRow) -> Result<(AuditEntry, String), StoreError> {
    let data: String = get(row, "data")?;
    let entry = AuditEntry {
        seq: get(row, "seq")?,
        id: get(row, "id")?,
        at: get(row, "at")?,
        event_type: get(row, "event_type")?,
        ip: get(row, "ip")?,
        user_agent: get(row, "user_agent")?,
        provider_id: get(row, "provider_id")?,
        connection_id: get(row, "connection_id")?,
        workspace_id: get(row, "workspace_id")?,
        data: serde_json::from_str(&data).unwrap_or(Value::String(data.clone())),
        prev_hash: get(row, "prev_hash")?,
        hash: get(row, "hash")?,
    };
    Ok((entry, data))
}

/// Locks the chain (PostgreSQL: across processes) and reads its head.
async fn chain_head(w: &mut WriteTx) -> Result<(i64, String), StoreError> {
    if w.backend == Backend::Postgres {
        // One chain, one appender at a time across every process on this database.
        sqlx::query("SELECT pg_advisory_xact_lock(7243100417)").execute(&mut *w.tx).await?;
    }
    let head =
        sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *w.tx).await?;
    Ok(match head {
        Some(row) => (get::<i64>(&row, "seq")?, get::<String>(&row, "hash")?),
        None => (0, GENESIS_HASH.to_owned()),
    })
}

/// Builds the row that follows `(prev_seq, prev_hash)` and inserts it.
async fn insert_after(
    w: &mut WriteTx,
    prev_seq: i64,
    prev_hash: String,
    audit: NewAudit,
) -> Result<AuditEntry, StoreError> {
    let data = audit.data.to_string();
    let mut entry = AuditEntry {
        seq: prev_seq + 1,
        id: audit.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        at: audit.at.unwrap_or_else(now_micros),
        event_type: audit.event_type.to_owned(),
        ip: audit.ip,
        user_agent: audit.user_agent.map(|ua| ua.chars().take(512).collect()),
        provider_id: audit.provider_id,
        connection_id: audit.connection_id,
        workspace_id: audit.workspace_id,
        data: audit.data,
        prev_hash,
        hash: String::new(),
    };
    entry.hash = entry_hash(&entry, &data);
    sqlx::query(&format!(
        "INSERT INTO audit_log ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    ))
    .bind(entry.seq)
    .bind(&entry.id)
    .bind(entry.at)
    .bind(&entry.event_type)
    .bind(entry.ip.as_deref())
    .bind(entry.user_agent.as_deref())
    .bind(entry.provider_id.as_deref())
    .bind(entry.connection_id.as_deref())
    .bind(entry.workspace_id.as_deref())
    .bind(&data)
    .bind(&entry.prev_hash)
    .bind(&entry.hash)
    .execute(&mut *w.tx)
    .await?;
    Ok(entry)
}

/// Appends `audit` inside an open write transaction, after the chain head.
pub(crate) async fn append_in_tx(w: &mut WriteTx, audit: NewAudit) -> Result<AuditEntry, StoreError> {
    let (seq, hash) = chain_head(w).await?;
    insert_after(w, seq, hash, audit).await
}

impl Store {
    /// Appends one audit row in its own transaction.
    pub async fn append_audit(&self, audit: NewAudit) -> Result<AuditEntry, StoreError> {
        let mut w = self.begin_write().await?;
        let entry = append_in_tx(&mut w, audit).await?;
        w.commit().await?;
        Ok(entry)
    }

    /// Appends several rows in one transaction (in order), for batched
    /// writers. Idempotent when the rows carry ids: a batch whose first row
    /// is already stored (an earlier attempt committed, but its answer was
    /// lost) is not written again.
    pub async fn append_audit_batch(&self, audits: Vec<NewAudit>) -> Result<(), StoreError> {
        if audits.is_empty() {
            return Ok(());
        }
        let mut w = self.begin_write().await?;
        let (mut seq, mut hash) = chain_head(&mut w).await?;
        if let Some(id) = audits[0].id.as_deref() {
            let written =
                sqlx::query("SELECT seq FROM audit_log WHERE id = $1").bind(id).fetch_optional(&mut *w.tx).await?;
            if written.is_some() {
                return Ok(());
            }
        }
        for a in audits {
            let entry = insert_after(&mut w, seq, hash, a).await?;
            (seq, hash) = (entry.seq, entry.hash);
        }
        w.commit().await
    }

    /// A page of the log, newest first.
    pub async fn list_audit(&self, f: &AuditFilter) -> Result<AuditPage, StoreError> {
        let limit = f.limit.clamp(1, 1000);
        // Only the filters given become SQL, so no parameter is an untyped NULL.
        enum Bind {
            Text(String),
            Int(i64),
        }
        let mut sql = format!("SELECT {COLUMNS} FROM audit_log WHERE 1 = 1");
        let mut binds: Vec<Bind> = Vec::new();
        let mut add = |clause: &str, bind: Bind| {
            binds.push(bind);
            sql.push_str(&format!(" AND {clause} ${}", binds.len()));
        };
        if let Some(v) = &f.event_type {
            add("event_type =", Bind::Text(v.clone()));
        }
        if let Some(v) = f.since {
            add("at >=", Bind::Int(v));
        }
        if let Some(v) = f.until {
            add("at <=", Bind::Int(v));
        }
        if let Some(v) = &f.provider_id {
            add("provider_id =", Bind::Text(v.clone()));
        }
        if let Some(v) = &f.connection_id {
            add("connection_id =", Bind::Text(v.clone()));
        }
        if let Some(v) = &f.workspace_id {
            add("workspace_id =", Bind::Text(v.clone()));
        }
        if let Some(v) = f.before_seq {
            add("seq <", Bind::Int(v));
        }
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT {}", limit + 1));
        let mut query = sqlx::query(&sql);
        for b in binds {
            query = match b {
                Bind::Text(t) => query.bind(t),
                Bind::Int(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut entries = rows.iter().map(|r| from_row(r).map(|(e, _)| e)).collect::<Result<Vec<_>, _>>()?;
        let next_before = if entries.len() as i64 > limit {
            entries.truncate(limit as usize);
            entries.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(AuditPage { entries, next_before })
    }

    /// Walks the whole chain in order and reports the first row that does not
    /// verify: a wrong hash (edited row), a wrong back-link or a gap in `seq`
    /// (deleted or inserted row).
    pub async fn verify_audit_chain(&self) -> Result<ChainReport, StoreError> {
        let mut expected_prev = GENESIS_HASH.to_owned();
        let mut expected_seq = 1i64;
        let mut checked = 0i64;
        loop {
            let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT 1000"))
                .bind(expected_seq)
                .fetch_all(&self.pool)
                .await?;
            if rows.is_empty() {
                return Ok(ChainReport { rows_checked: checked, first_broken: None });
            }
            for row in &rows {
                let (entry, data) = from_row(row)?;
                let broken = if entry.seq != expected_seq {
                    Some(format!("expected row {expected_seq} next, found {} (a row is missing)", entry.seq))
                } else if entry.prev_hash != expected_prev {
                    Some("prev_hash does not match the previous row's hash".to_owned())
                } else if entry_hash(&entry, &data) != entry.hash {
                    Some("hash does not match the row's contents (the row was modified)".to_owned())
                } else {
                    None
                };
                if let Some(why) = broken {
                    return Ok(ChainReport { rows_checked: checked, first_broken: Some((entry.seq, why)) });
                }
                checked += 1;
                expected_prev = entry.hash;
                expected_seq += 1;
            }
        }
    }
}
