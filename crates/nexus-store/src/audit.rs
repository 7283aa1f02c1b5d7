//! The append-only, hash-chained audit log.
//!
//! Row `n` stores the hash of row `n - 1` (`prev_hash`) and its own `hash` over
//! that and all its fields, so editing, deleting or reordering any row breaks
//! the chain from that row on. Appends are serialised (see the crate docs) so
//! the chain never forks, even with several processes on one PostgreSQL.
//!
//! Two hash formats (SPEC 6b):
//! * v1: SHA-256, which anyone can recompute — a row edited with every later
//!   hash recomputed would verify. Only rows written before audit keys
//!   existed are v1, and they stay valid only before the first keyed row.
//! * v2: HMAC-SHA256 under an audit key (`AUDIT_KEYS`), whose id each row
//!   stores. Without the key, no row can be rewritten unnoticed. The first
//!   keyed row's HMAC covers the last v1 hash, so the v1 part cannot be
//!   rewritten either.
//!
//! What no hash can show is rows cut from the end: the head (`seq`, `hash`)
//! is published (`GET /v1/audit/head`, the log) so that a verifier can
//! insist the chain still reaches it ([`ExpectedHead`]).

use crate::{get, now_micros, Backend, Store, StoreError, WriteTx};
use nexus_core::AuditEvent;
use nexus_vault::AuditKeys;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;

/// The hash that the first row points back to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event to record. `data` must never hold a secret value.
#[derive(Debug, Clone)]
pub struct NewAudit {
    pub event_type: AuditEvent,
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
    /// The API key that caused the event (`None`: no key, e.g. the
    /// refresher or a browser's callback).
    pub api_key: Option<ApiKeyRef>,
}

impl NewAudit {
    /// An event with no details; set the other fields with `..NewAudit::new(event)`.
    pub fn new(event_type: AuditEvent) -> NewAudit {
        NewAudit {
            event_type,
            ip: None,
            user_agent: None,
            provider_id: None,
            connection_id: None,
            workspace_id: None,
            data: Value::Object(Default::default()),
            at: None,
            id: None,
            api_key: None,
        }
    }
}

/// An API key as audit rows name it: its id and name (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiKeyRef {
    pub id: String,
    pub name: String,
}

/// Hash formats.
pub const HASH_V1: i64 = 1;
pub const HASH_V2: i64 = 2;

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
    /// [`HASH_V1`] or [`HASH_V2`].
    pub hash_version: i64,
    /// The audit key that signed a v2 row.
    pub key_id: Option<String>,
    pub api_key_id: Option<String>,
    pub api_key_name: Option<String>,
}

/// The newest row of the chain, as published for verifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: String,
    /// Unix microseconds; `None` for the empty chain.
    pub at: Option<i64>,
}

/// A head the chain must still contain (`SEQ:HASH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedHead {
    pub seq: i64,
    pub hash: String,
}

impl std::str::FromStr for ExpectedHead {
    type Err = String;
    fn from_str(s: &str) -> Result<ExpectedHead, String> {
        let (seq, hash) = s.trim().split_once(':').ok_or("expected SEQ:HASH, e.g. 42:9f86d0…")?;
        let seq: i64 = seq.parse().map_err(|_| format!("'{seq}' is not a row number"))?;
        let hash = hash.trim().to_ascii_lowercase();
        if seq < 0 || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("expected SEQ:HASH with a 64-digit hex hash".into());
        }
        Ok(ExpectedHead { seq, hash })
    }
}

/// Filters of `GET /v1/audit`. `before_seq` is the page cursor.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub event_type: Option<AuditEvent>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub provider_id: Option<String>,
    pub connection_id: Option<String>,
    pub workspace_id: Option<String>,
    /// Rows caused by this API key id.
    pub api_key_id: Option<String>,
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

/// A row's own fields with the previous hash, in the order both formats
/// hash them.
fn chained_fields(e: &AuditEntry, data: &str) -> Vec<Value> {
    vec![
        e.prev_hash.clone().into(),
        e.seq.into(),
        e.id.clone().into(),
        e.at.into(),
        e.event_type.clone().into(),
        e.ip.clone().into(),
        e.user_agent.clone().into(),
        e.provider_id.clone().into(),
        e.connection_id.clone().into(),
        e.workspace_id.clone().into(),
        data.into(),
    ]
}

/// The v1 hash of a row: SHA-256 over a JSON array of its fields, so no
/// field boundary is ambiguous.
fn v1_hash(e: &AuditEntry, data: &str) -> String {
    hex::encode(Sha256::digest(Value::Array(chained_fields(e, data)).to_string().as_bytes()))
}

/// What the v2 HMAC covers: the version, every field, the audit key's id
/// and the API key's, as a JSON array.
fn v2_input(e: &AuditEntry, data: &str) -> String {
    let mut fields = vec![Value::from(HASH_V2)];
    fields.extend(chained_fields(e, data));
    fields.extend([e.key_id.clone().into(), e.api_key_id.clone().into(), e.api_key_name.clone().into()]);
    Value::Array(fields).to_string()
}

const COLUMNS: &str = "seq, id, at, event_type, ip, user_agent, provider_id, connection_id, workspace_id, data, \
    prev_hash, hash, hash_version, key_id, api_key_id, api_key_name";

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
        hash_version: get::<Option<i64>>(row, "hash_version")?.unwrap_or(HASH_V1),
        key_id: get(row, "key_id")?,
        api_key_id: get(row, "api_key_id")?,
        api_key_name: get(row, "api_key_name")?,
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

/// Builds the row that follows `(prev_seq, prev_hash)`, signed with `keys`
/// (v2) or, without keys, hashed as v1, and inserts it.
async fn insert_after(
    w: &mut WriteTx,
    keys: Option<&AuditKeys>,
    prev_seq: i64,
    prev_hash: String,
    audit: NewAudit,
) -> Result<AuditEntry, StoreError> {
    let data = audit.data.to_string();
    let mut entry = AuditEntry {
        seq: prev_seq + 1,
        id: audit.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        at: audit.at.unwrap_or_else(now_micros),
        event_type: audit.event_type.as_str().to_owned(),
        ip: audit.ip,
        user_agent: audit.user_agent.map(|ua| ua.chars().take(512).collect()),
        provider_id: audit.provider_id,
        connection_id: audit.connection_id,
        workspace_id: audit.workspace_id,
        data: audit.data,
        prev_hash,
        hash: String::new(),
        hash_version: if keys.is_some() { HASH_V2 } else { HASH_V1 },
        key_id: keys.map(|k| k.signing_key_id().to_owned()),
        api_key_id: audit.api_key.as_ref().map(|k| k.id.clone()),
        api_key_name: audit.api_key.map(|k| k.name),
    };
    entry.hash = match keys {
        Some(keys) => keys.sign(v2_input(&entry, &data).as_bytes()),
        None => v1_hash(&entry, &data),
    };
    sqlx::query(&format!(
        "INSERT INTO audit_log ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
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
    .bind(entry.hash_version)
    .bind(entry.key_id.as_deref())
    .bind(entry.api_key_id.as_deref())
    .bind(entry.api_key_name.as_deref())
    .execute(&mut *w.tx)
    .await?;
    Ok(entry)
}

/// Appends `audit` inside an open write transaction, after the chain head.
pub(crate) async fn append_in_tx(w: &mut WriteTx, audit: NewAudit) -> Result<AuditEntry, StoreError> {
    let (seq, hash) = chain_head(w).await?;
    let keys = w.audit_keys.clone();
    insert_after(w, keys.as_deref(), seq, hash, audit).await
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
        let keys = w.audit_keys.clone();
        for a in audits {
            let entry = insert_after(&mut w, keys.as_deref(), seq, hash, a).await?;
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
        if let Some(v) = f.event_type {
            add("event_type =", Bind::Text(v.as_str().to_owned()));
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
        if let Some(v) = &f.api_key_id {
            add("api_key_id =", Bind::Text(v.clone()));
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

    /// When the chain ends in an unkeyed (v1) row and this store signs rows:
    /// appends `audit` (keyed) after it, so the chain's end is keyed. A
    /// verifier with the keys refuses a chain that ends unkeyed (a log
    /// rewritten whole as v1 would otherwise verify). `Ok(true)` when the
    /// row was written.
    pub async fn sign_unkeyed_tail(&self, audit: NewAudit) -> Result<bool, StoreError> {
        if self.audit_keys.is_none() {
            return Ok(false);
        }
        let mut w = self.begin_write().await?;
        let (seq, hash) = chain_head(&mut w).await?;
        let version: Option<i64> = match seq {
            0 => None,
            _ => sqlx::query("SELECT hash_version FROM audit_log WHERE seq = $1")
                .bind(seq)
                .fetch_one(&mut *w.tx)
                .await
                .and_then(|row| sqlx::Row::try_get::<Option<i64>, _>(&row, "hash_version"))?
                .or(Some(HASH_V1)),
        };
        if version != Some(HASH_V1) {
            return Ok(false);
        }
        let keys = w.audit_keys.clone();
        insert_after(&mut w, keys.as_deref(), seq, hash, audit).await?;
        w.commit().await?;
        Ok(true)
    }

    /// The newest row's `seq`, `hash` and time (`seq` 0 and the genesis
    /// hash for an empty log).
    pub async fn audit_head(&self) -> Result<ChainHead, StoreError> {
        let head = sqlx::query("SELECT seq, hash, at FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(match head {
            Some(row) => ChainHead { seq: get(&row, "seq")?, hash: get(&row, "hash")?, at: Some(get(&row, "at")?) },
            None => ChainHead { seq: 0, hash: GENESIS_HASH.to_owned(), at: None },
        })
    }

    /// Walks the whole chain in order and reports the first row that does
    /// not verify: a wrong hash or HMAC (an edited row), a wrong back-link or
    /// a gap in `seq` (a deleted or inserted row), an unkeyed row after a
    /// keyed one (rows rewritten without the audit key), a row signed by a
    /// key `keys` does not hold; and, with `expected`, a chain that does not
    /// reach that head or holds another row there (rows cut from its end).
    pub async fn verify_audit_chain(
        &self,
        keys: Option<&AuditKeys>,
        expected: Option<&ExpectedHead>,
    ) -> Result<ChainReport, StoreError> {
        let mut expected_prev = GENESIS_HASH.to_owned();
        let mut expected_seq = 1i64;
        let mut checked = 0i64;
        let mut keyed = false;
        let mut last: Option<(i64, i64)> = None;
        let mut head_seen = expected.is_none_or(|h| h.seq == 0 && h.hash == GENESIS_HASH);
        let broken = |seq: i64, why: String, checked: i64| {
            Ok(ChainReport { rows_checked: checked, first_broken: Some((seq, why)) })
        };
        loop {
            let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT 1000"))
                .bind(expected_seq)
                .fetch_all(&self.pool)
                .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let (entry, data) = from_row(row)?;
                if let Some(why) = row_problem(&entry, &data, keys, expected_seq, &expected_prev, keyed) {
                    return broken(entry.seq, why, checked);
                }
                if let Some(head) = expected.filter(|h| h.seq == entry.seq) {
                    if head.hash != entry.hash {
                        let why = format!("the expected head says hash {}, the row has {}", head.hash, entry.hash);
                        return broken(entry.seq, why, checked);
                    }
                    head_seen = true;
                }
                keyed |= entry.hash_version == HASH_V2;
                last = Some((entry.seq, entry.hash_version));
                checked += 1;
                expected_prev = entry.hash;
                expected_seq += 1;
            }
        }
        // Keyed servers sign after any unkeyed rows they find, so with the
        // keys at hand a chain that ends unkeyed was rewritten without them.
        if let (Some(_), Some((seq, HASH_V1))) = (keys, last) {
            let why = "the chain ends with unkeyed (v1) rows: rows after the audit keys took effect were written \
                       or rewritten without them (or no keyed server has run since the upgrade)"
                .to_owned();
            return broken(seq, why, checked);
        }
        match expected.filter(|_| !head_seen) {
            Some(head) => {
                let why = format!(
                    "the chain ends at row {}, before the expected head (rows were removed from its end)",
                    expected_seq - 1
                );
                broken(head.seq, why, checked)
            }
            None => Ok(ChainReport { rows_checked: checked, first_broken: None }),
        }
    }
}

/// Why `entry` does not continue the chain, if it does not.
fn row_problem(
    entry: &AuditEntry,
    data: &str,
    keys: Option<&AuditKeys>,
    expected_seq: i64,
    expected_prev: &str,
    after_keyed: bool,
) -> Option<String> {
    if entry.seq != expected_seq {
        return Some(format!("expected row {expected_seq} next, found {} (a row is missing)", entry.seq));
    }
    if entry.prev_hash != expected_prev {
        return Some("prev_hash does not match the previous row's hash".to_owned());
    }
    match entry.hash_version {
        HASH_V1 if after_keyed => Some(
            "an unkeyed (v1) row after a keyed one: rows were written or rewritten without the audit key".to_owned(),
        ),
        HASH_V1 if entry.key_id.is_some() || entry.api_key_id.is_some() || entry.api_key_name.is_some() => {
            Some("a v1 row carries fields that only keyed rows have".to_owned())
        }
        HASH_V1 => (v1_hash(entry, data) != entry.hash)
            .then(|| "hash does not match the row's contents (the row was modified)".to_owned()),
        HASH_V2 => {
            let key_id = entry.key_id.as_deref().unwrap_or_default();
            match keys.and_then(|k| k.sign_with(key_id, v2_input(entry, data).as_bytes())) {
                None => Some(format!("the row is signed with audit key {key_id}, which AUDIT_KEYS does not hold")),
                Some(mac) if !nexus_vault::constant_time_eq(mac.as_bytes(), entry.hash.as_bytes()) => Some(
                    "the HMAC does not match the row's contents (modified, or signed without the audit key)".to_owned(),
                ),
                Some(_) => None,
            }
        }
        other => Some(format!("unknown hash format {other}")),
    }
}
