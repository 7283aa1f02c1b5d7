//! Webhooks (SPEC 13): endpoints, the outbox of deliveries and their attempts.
//!
//! A connection change and the deliveries that report it are written in one
//! transaction ([`enqueue_in_tx`], called by the connection writes), so an
//! event is never lost and never sent for a change that rolled back.
//!
//! Delivering is claim → send → finish. A claim takes due deliveries with a
//! lease (on PostgreSQL `FOR UPDATE SKIP LOCKED`, so replicas never take the
//! same one) and starts their next attempt in the same statement: the
//! attempt's number is the delivery's `attempts` after the claim, and its row
//! (primary key `(delivery_id, attempt)`) is inserted in the claim's
//! transaction, so no two replicas can ever send the same attempt. A replica
//! that dies mid-delivery leaves its attempt without an outcome; once the
//! lease passes, another replica claims the delivery and sends the next
//! attempt with the same `webhook-id`.

use crate::audit::{append_in_tx, NewAudit};
use crate::{get, now_micros, Backend, Store, StoreError, WriteTx};
use nexus_core::{ConnectionStatus, WebhookEvent};
use serde_json::{json, Value};
use sqlx::any::AnyRow;

/// One registered endpoint.
#[derive(Debug, Clone)]
pub struct WebhookRow {
    pub id: String,
    pub url: String,
    /// `None`: every event.
    pub events: Option<Vec<WebhookEvent>>,
    /// The vault envelope of the `whsec_…` secret.
    pub secret_enc: String,
    pub description: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl WebhookRow {
    pub fn wants(&self, event: WebhookEvent) -> bool {
        self.events.as_ref().is_none_or(|e| e.contains(&event))
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<DeliveryStatus> {
        [DeliveryStatus::Pending, DeliveryStatus::Delivered, DeliveryStatus::Failed]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// One delivery (one event for one webhook) with its attempts.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: String,
    pub webhook_id: String,
    pub event_type: String,
    pub connection_id: Option<String>,
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub schedule_base: i64,
    pub next_attempt_at: Option<i64>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
    pub attempt_log: Vec<AttemptRow>,
}

/// One attempt of a delivery.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub attempt: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub status_code: Option<i64>,
    /// `None` while under way, or when its replica died mid-way.
    pub outcome: Option<String>,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
}

/// A delivery claimed for its next attempt, with what sending it needs.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: String,
    pub webhook_id: String,
    pub url: String,
    pub secret_enc: String,
    pub payload: String,
    /// This attempt's number (1 for the first).
    pub attempt: i64,
    /// Attempts in the current retry schedule, this one included.
    pub in_schedule: i64,
    /// Where the schedule began (a redelivery meanwhile moves it).
    pub schedule_base: i64,
}

/// How an attempt ended, and what the delivery does next.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub finished_at: i64,
    pub status_code: Option<i64>,
    pub outcome: &'static str,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub next: NextStep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    RetryAt(i64),
    GiveUp,
}

/// What a connection change reports.
#[derive(Debug, Clone)]
pub struct ConnectionEvent<'a> {
    pub event: WebhookEvent,
    pub connection_id: &'a str,
    pub provider: &'a str,
    pub workspace_id: &'a str,
    pub status: ConnectionStatus,
    pub error: Option<&'a str>,
}

/// The event's body as sent and signed (Standard Webhooks:
/// `{type, timestamp, data}`).
pub fn payload(ev: &ConnectionEvent<'_>, at_micros: i64) -> String {
    let mut data = json!({
        "connection_id": ev.connection_id,
        "provider": ev.provider,
        "workspace_id": ev.workspace_id,
        "status": ev.status.as_str(),
    });
    if let Some(e) = ev.error {
        data["error"] = Value::String(e.to_owned());
    }
    let timestamp = chrono::DateTime::from_timestamp_micros(at_micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    json!({ "type": ev.event.as_str(), "timestamp": timestamp, "data": data }).to_string()
}

/// Writes one delivery per webhook that wants `ev`, due now, in the
/// transaction that makes the change.
pub(crate) async fn enqueue_in_tx(w: &mut WriteTx, ev: &ConnectionEvent<'_>) -> Result<(), StoreError> {
    let rows = sqlx::query(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks")).fetch_all(&mut *w.tx).await?;
    let now = now_micros();
    let body = payload(ev, now);
    for row in &rows {
        // A row this build cannot read (an event type from a newer version,
        // a hand edit) must never fail the connection change: it is skipped.
        let hook = match webhook_from_row(row) {
            Ok(hook) => hook,
            Err(e) => {
                tracing::warn!(error = %e, "a webhook could not be read; it gets no delivery of this event");
                continue;
            }
        };
        if !hook.wants(ev.event) {
            continue;
        }
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, webhook_id, event_type, connection_id, payload, status, attempts,
                    schedule_base, next_attempt_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, 0, $6, $6, $6)",
        )
        .bind(format!("msg_{}", uuid::Uuid::new_v4().simple()))
        .bind(&hook.id)
        .bind(ev.event.as_str())
        .bind(ev.connection_id)
        .bind(&body)
        .bind(now)
        .execute(&mut *w.tx)
        .await?;
    }
    Ok(())
}

const WEBHOOK_COLUMNS: &str = "id, url, events, secret_enc, description, created_at, updated_at";
const DELIVERY_COLUMNS: &str = "id, webhook_id, event_type, connection_id, payload, status, attempts, schedule_base, \
     next_attempt_at, last_status_code, last_error, created_at, delivered_at";

fn webhook_from_row(row: &AnyRow) -> Result<WebhookRow, StoreError> {
    let events: Option<String> = get(row, "events")?;
    // Event names this build does not know (a newer version wrote them) are
    // left out: they cannot happen here.
    let events = events
        .map(|raw| {
            let names: Vec<String> =
                serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(format!("webhook events: {e}")))?;
            Ok::<_, StoreError>(names.iter().filter_map(|n| WebhookEvent::parse(n)).collect::<Vec<_>>())
        })
        .transpose()?;
    Ok(WebhookRow {
        id: get(row, "id")?,
        url: get(row, "url")?,
        events,
        secret_enc: get(row, "secret_enc")?,
        description: get(row, "description")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

fn delivery_from_row(row: &AnyRow) -> Result<DeliveryRow, StoreError> {
    let status: String = get(row, "status")?;
    Ok(DeliveryRow {
        id: get(row, "id")?,
        webhook_id: get(row, "webhook_id")?,
        event_type: get(row, "event_type")?,
        connection_id: get(row, "connection_id")?,
        payload: get(row, "payload")?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery status '{status}'")))?,
        attempts: get(row, "attempts")?,
        schedule_base: get(row, "schedule_base")?,
        next_attempt_at: get(row, "next_attempt_at")?,
        last_status_code: get(row, "last_status_code")?,
        last_error: get(row, "last_error")?,
        created_at: get(row, "created_at")?,
        delivered_at: get(row, "delivered_at")?,
        attempt_log: Vec::new(),
    })
}

fn attempt_from_row(row: &AnyRow) -> Result<(String, AttemptRow), StoreError> {
    Ok((
        get(row, "delivery_id")?,
        AttemptRow {
            attempt: get(row, "attempt")?,
            started_at: get(row, "started_at")?,
            finished_at: get(row, "finished_at")?,
            status_code: get(row, "status_code")?,
            outcome: get(row, "outcome")?,
            error: get(row, "error")?,
            duration_ms: get(row, "duration_ms")?,
        },
    ))
}

/// Filter and page of `GET /v1/webhooks/{id}/deliveries`.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<WebhookEvent>,
    pub connection_id: Option<String>,
    /// Deliveries created before this one (its `created_at` and id), newest first.
    pub before: Option<(i64, String)>,
    pub limit: i64,
}

impl Store {
    pub async fn insert_webhook(&self, row: &WebhookRow, audit: NewAudit) -> Result<(), StoreError> {
        let events = row.events.as_ref().map(|e| json!(e.iter().map(|e| e.as_str()).collect::<Vec<_>>()).to_string());
        let mut w = self.begin_write().await?;
        sqlx::query(&format!("INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"))
            .bind(&row.id)
            .bind(&row.url)
            .bind(events)
            .bind(&row.secret_enc)
            .bind(row.description.as_deref())
            .bind(row.created_at)
            .bind(row.updated_at)
            .execute(&mut *w.tx)
            .await?;
        append_in_tx(&mut w, audit).await?;
        w.commit().await
    }

    pub async fn webhook_by_id(&self, id: &str) -> Result<Option<WebhookRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(webhook_from_row).transpose()
    }

    /// Every webhook, oldest first.
    pub async fn list_webhooks(&self) -> Result<Vec<WebhookRow>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY created_at, id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(webhook_from_row).collect()
    }

    /// Deletes a webhook with its deliveries (nothing more is sent to it).
    pub async fn delete_webhook(&self, id: &str, audit: NewAudit) -> Result<bool, StoreError> {
        let mut w = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries WHERE webhook_id = $1)",
        )
        .bind(id)
        .execute(&mut *w.tx)
        .await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1").bind(id).execute(&mut *w.tx).await?;
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1").bind(id).execute(&mut *w.tx).await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        append_in_tx(&mut w, audit).await?;
        w.commit().await?;
        Ok(true)
    }

    /// Claims up to `limit` deliveries due at `now` (unix microseconds),
    /// leased until `lease_until`, skipping those of `skip_webhooks` (at
    /// their limit of attempts in flight), and starts their next attempt.
    pub async fn claim_deliveries(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
        skip_webhooks: &[String],
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let mut due =
            format!("status = 'pending' AND next_attempt_at <= {now} AND (lease_until IS NULL OR lease_until < {now})");
        if !skip_webhooks.is_empty() {
            let params: Vec<String> = (1..=skip_webhooks.len()).map(|n| format!("${n}")).collect();
            due.push_str(&format!(" AND webhook_id NOT IN ({})", params.join(", ")));
        }
        // The common case, nothing due, is one indexed read and no write.
        let probe_sql = format!("SELECT id FROM webhook_deliveries WHERE {due} LIMIT 1");
        let probe = skip_webhooks
            .iter()
            .fold(sqlx::query(&probe_sql), |q, w| q.bind(w.clone()))
            .fetch_optional(&self.pool)
            .await?;
        if probe.is_none() {
            return Ok(Vec::new());
        }
        let lock = if self.backend == Backend::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        let sql = format!(
            "UPDATE webhook_deliveries SET lease_until = {lease_until}, attempts = attempts + 1, updated_at = {now}
             WHERE id IN (SELECT id FROM webhook_deliveries WHERE {due} ORDER BY next_attempt_at LIMIT {}{lock})
             RETURNING id, webhook_id, payload, attempts, schedule_base",
            limit.clamp(1, 1000)
        );
        let mut w = self.begin_write().await?;
        let rows = skip_webhooks.iter().fold(sqlx::query(&sql), |q, w| q.bind(w.clone())).fetch_all(&mut *w.tx).await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = get(r, "id")?;
            let webhook_id: String = get(r, "webhook_id")?;
            let attempt: i64 = get(r, "attempts")?;
            let base: i64 = get(r, "schedule_base")?;
            let hook = sqlx::query("SELECT url, secret_enc FROM webhooks WHERE id = $1")
                .bind(&webhook_id)
                .fetch_one(&mut *w.tx)
                .await?;
            sqlx::query("INSERT INTO webhook_attempts (delivery_id, attempt, started_at) VALUES ($1, $2, $3)")
                .bind(&id)
                .bind(attempt)
                .bind(now)
                .execute(&mut *w.tx)
                .await?;
            claimed.push(ClaimedDelivery {
                id,
                webhook_id,
                url: get(&hook, "url")?,
                secret_enc: get(&hook, "secret_enc")?,
                payload: get(r, "payload")?,
                attempt,
                in_schedule: attempt - base,
                schedule_base: base,
            });
        }
        w.commit().await?;
        Ok(claimed)
    }

    /// Records how attempt `attempt` of `delivery_id` ended. A success ends
    /// the delivery whichever attempt it was; a failure schedules the next
    /// attempt only if no later attempt has started meanwhile.
    pub async fn finish_attempt(&self, c: &ClaimedDelivery, r: &AttemptResult) -> Result<(), StoreError> {
        let (delivery_id, attempt) = (c.id.as_str(), c.attempt);
        let mut w = self.begin_write().await?;
        sqlx::query(
            "UPDATE webhook_attempts SET finished_at = $1, status_code = $2, outcome = $3, error = $4, duration_ms = $5
             WHERE delivery_id = $6 AND attempt = $7",
        )
        .bind(r.finished_at)
        .bind(r.status_code)
        .bind(r.outcome)
        .bind(r.error.as_deref())
        .bind(r.duration_ms)
        .bind(delivery_id)
        .bind(attempt)
        .execute(&mut *w.tx)
        .await?;
        let (next_at, status, error) = match r.next {
            NextStep::Delivered => (None, "delivered", None),
            NextStep::RetryAt(at) => (Some(at), "pending", r.error.as_deref()),
            NextStep::GiveUp => (None, "failed", r.error.as_deref()),
        };
        // A success ends the delivery from any attempt; a failure moves it on
        // only from the latest one (a later claim owns it otherwise).
        // A redelivery asked for meanwhile (a new schedule) is not undone by
        // this attempt's failure: the delivery is only let go, due at once.
        let owner =
            if r.next == NextStep::Delivered { "$7 > 0 AND $8 >= 0" } else { "attempts = $7 AND schedule_base = $8" };
        let sql = format!(
            "UPDATE webhook_deliveries SET status = $1, next_attempt_at = $2, lease_until = NULL, updated_at = $3,
                    delivered_at = CASE WHEN $1 = 'delivered' THEN $3 ELSE NULL END,
                    last_status_code = $4, last_error = $5
             WHERE id = $6 AND status = 'pending' AND {owner}"
        );
        let q = sqlx::query(&sql)
            .bind(status)
            .bind(next_at)
            .bind(r.finished_at)
            .bind(r.status_code)
            .bind(error)
            .bind(delivery_id)
            .bind(attempt)
            .bind(c.schedule_base);
        let done = q.execute(&mut *w.tx).await?;
        if done.rows_affected() == 0 && r.next != NextStep::Delivered {
            sqlx::query("UPDATE webhook_deliveries SET lease_until = NULL WHERE id = $1 AND attempts = $2 AND status = 'pending'")
                .bind(delivery_id)
                .bind(attempt)
                .execute(&mut *w.tx)
                .await?;
        }
        w.commit().await
    }

    /// A webhook's deliveries, newest first, with their attempts.
    pub async fn list_deliveries(&self, webhook_id: &str, f: &DeliveryFilter) -> Result<Vec<DeliveryRow>, StoreError> {
        let mut sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1");
        let mut binds: Vec<String> = vec![webhook_id.to_owned()];
        if let Some(s) = f.status {
            binds.push(s.as_str().to_owned());
            sql.push_str(&format!(" AND status = ${}", binds.len()));
        }
        if let Some(e) = f.event_type {
            binds.push(e.as_str().to_owned());
            sql.push_str(&format!(" AND event_type = ${}", binds.len()));
        }
        if let Some(c) = &f.connection_id {
            binds.push(c.clone());
            sql.push_str(&format!(" AND connection_id = ${}", binds.len()));
        }
        if let Some((at, id)) = &f.before {
            binds.push(id.clone());
            // `at` is an integer we parsed, never text from the caller.
            sql.push_str(&format!(" AND (created_at < {at} OR (created_at = {at} AND id < ${}))", binds.len()));
        }
        sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT {}", f.limit.clamp(1, 1000)));
        let rows = binds.iter().fold(sqlx::query(&sql), |q, b| q.bind(b.clone())).fetch_all(&self.pool).await?;
        let mut out: Vec<DeliveryRow> = rows.iter().map(delivery_from_row).collect::<Result<_, _>>()?;
        if out.is_empty() {
            return Ok(out);
        }
        let params: Vec<String> = (1..=out.len()).map(|n| format!("${n}")).collect();
        let sql = format!(
            "SELECT delivery_id, attempt, started_at, finished_at, status_code, outcome, error, duration_ms
             FROM webhook_attempts WHERE delivery_id IN ({}) ORDER BY attempt",
            params.join(", ")
        );
        let attempts = out.iter().fold(sqlx::query(&sql), |q, d| q.bind(d.id.clone())).fetch_all(&self.pool).await?;
        for row in &attempts {
            let (id, a) = attempt_from_row(row)?;
            if let Some(d) = out.iter_mut().find(|d| d.id == id) {
                d.attempt_log.push(a);
            }
        }
        Ok(out)
    }

    /// One delivery of `webhook_id`, with its attempts.
    pub async fn delivery(&self, webhook_id: &str, id: &str) -> Result<Option<DeliveryRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1 AND webhook_id = $2"
        ))
        .bind(id)
        .bind(webhook_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(mut d) = row.as_ref().map(delivery_from_row).transpose()? else { return Ok(None) };
        let attempts = sqlx::query(
            "SELECT delivery_id, attempt, started_at, finished_at, status_code, outcome, error, duration_ms
             FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        for row in &attempts {
            d.attempt_log.push(attempt_from_row(row)?.1);
        }
        Ok(Some(d))
    }

    /// Sends a delivery again: pending, due at `now`, with a fresh retry
    /// schedule; same `webhook-id` and body. `false`: no such delivery.
    pub async fn redeliver(&self, webhook_id: &str, id: &str, now: i64, audit: NewAudit) -> Result<bool, StoreError> {
        let mut w = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, schedule_base = attempts,
                    delivered_at = NULL, updated_at = $1
             WHERE id = $2 AND webhook_id = $3",
        )
        .bind(now)
        .bind(id)
        .bind(webhook_id)
        .execute(&mut *w.tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        append_in_tx(&mut w, audit).await?;
        w.commit().await?;
        Ok(true)
    }

    /// Deletes up to `limit` delivered or failed deliveries last changed
    /// before `before` (unix microseconds), with their attempts; how many.
    pub async fn prune_deliveries(&self, before: i64, limit: i64) -> Result<u64, StoreError> {
        let pick = format!(
            "SELECT id FROM webhook_deliveries WHERE status IN ('delivered', 'failed') AND updated_at < {before} \
             ORDER BY updated_at LIMIT {}",
            limit.clamp(1, 10_000)
        );
        let mut w = self.begin_write().await?;
        let ids: Vec<String> = sqlx::query(&pick)
            .fetch_all(&mut *w.tx)
            .await?
            .iter()
            .map(|r| get::<String>(r, "id"))
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(0);
        }
        let params: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
        let list = params.join(", ");
        let attempts_sql = format!("DELETE FROM webhook_attempts WHERE delivery_id IN ({list})");
        ids.iter().fold(sqlx::query(&attempts_sql), |q, id| q.bind(id.clone())).execute(&mut *w.tx).await?;
        let deliveries_sql = format!("DELETE FROM webhook_deliveries WHERE id IN ({list})");
        let done =
            ids.iter().fold(sqlx::query(&deliveries_sql), |q, id| q.bind(id.clone())).execute(&mut *w.tx).await?;
        w.commit().await?;
        Ok(done.rows_affected())
    }

    /// Deliveries still to be sent, and when the oldest due one was due (for metrics and tests).
    pub async fn outbox_backlog(&self, now: i64) -> Result<(i64, Option<i64>), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(next_attempt_at) AS oldest FROM webhook_deliveries
             WHERE status = 'pending' AND next_attempt_at <= $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok((get(&row, "n")?, get(&row, "oldest")?))
    }
}
