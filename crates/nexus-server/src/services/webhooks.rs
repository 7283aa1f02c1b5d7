//! Webhook endpoints and their deliveries (SPEC 13): registration, listing,
//! the delivery log and redelivery. Sending is [`crate::services::webhook_sender`].

use crate::error::ApiError;
use crate::middleware::caller::Caller;
use crate::services::providers::rfc3339;
use crate::state::AppState;
use base64::Engine;
use nexus_core::{AuditEvent, SecretString, ValidationErrors, WebhookEvent};
use nexus_store::{AttemptRow, DeliveryFilter, DeliveryRow, DeliveryStatus, WebhookRow};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

/// What a `whsec_` secret must decode to (Standard Webhooks: 24 to 64 bytes).
const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;
const URL_MAX: usize = 2048;
const DESCRIPTION_MAX: usize = 256;
const DEFAULT_LIMIT: i64 = 50;

/// The seal context of a webhook's secret.
pub fn secret_context(webhook_id: &str) -> String {
    format!("webhook:{webhook_id}:secret")
}

/// `POST /v1/webhooks`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// Where deliveries are POSTed: https, or plain http on a loopback host only.
    pub url: String,
    /// Event types to send; every event when omitted.
    pub events: Option<Vec<String>>,
    /// A Standard Webhooks secret (`whsec_` + base64 of 24 to 64 random
    /// bytes). Generated when omitted; either way shown only in this answer.
    #[schema(value_type = Option<String>)]
    pub secret: Option<SecretString>,
    /// A note for operators (at most 256 characters).
    pub description: Option<String>,
}

/// A webhook endpoint.
#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    /// The event types it receives (all six when it was registered without a list).
    pub events: Vec<WebhookEvent>,
    /// `true` when registered without a list (new event types will be sent too).
    pub all_events: bool,
    pub description: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// The signing secret: only in the answer to `POST /v1/webhooks`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl std::fmt::Debug for WebhookView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookView").field("id", &self.id).field("url", &self.url).finish_non_exhaustive()
    }
}

/// One attempt to deliver.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub attempt: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// The receiver's HTTP status, when it answered.
    pub status_code: Option<i64>,
    /// `delivered`, `http_status` (a non-2xx answer), `redirect_refused`
    /// (a 3xx: redirects are never followed), `timeout`, `unreachable`, or
    /// `unfinished` (under way, or its replica stopped mid-way; the next
    /// attempt follows once its lease passes).
    pub outcome: String,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
}

/// One event for one webhook, with every attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// The message id, sent as `webhook-id` on every attempt.
    pub id: String,
    pub webhook_id: String,
    pub event_type: String,
    pub connection_id: Option<String>,
    /// `pending` (to be sent, or retried at `next_attempt_at`), `delivered` or `failed` (retries exhausted).
    pub status: String,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    /// The body as sent and signed.
    #[schema(value_type = Object)]
    pub payload: Value,
    pub attempts: Vec<AttemptView>,
}

/// A page of deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

/// Query parameters of `GET /v1/webhooks/{id}/deliveries`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    #[param(inline)]
    pub status: Option<DeliveryState>,
    #[param(inline)]
    pub event_type: Option<WebhookEvent>,
    #[param(max_length = 256)]
    pub connection_id: Option<String>,
    /// Default 50; larger values are capped at 1000.
    #[param(minimum = 1)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,18}\\.msg_[0-9A-Za-z]{1,60}$")]
    pub cursor: Option<String>,
}

/// A new `whsec_` secret: 32 random bytes.
fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The key bytes of a `whsec_` secret, if it is one.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.strip_prefix("whsec_")?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    SECRET_BYTES.contains(&bytes.len()).then_some(bytes)
}

/// The checked input: the URL as parsed (normalised) and the events (`None`: all).
type Checked = (String, Option<Vec<WebhookEvent>>);

fn check(input: &WebhookInput) -> Result<Checked, ValidationErrors> {
    let mut errs = ValidationErrors::default();
    let mut url = String::new();
    if input.url.len() > URL_MAX {
        errs.push("url", format!("must be at most {URL_MAX} characters"));
    } else if input.url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        errs.push("url", "must not contain whitespace or control characters");
    } else {
        match nexus_core::url_policy::parse_outbound_url(&input.url) {
            Ok(parsed) => url = parsed.to_string(),
            Err(m) => errs.push("url", m),
        }
    }
    let events = match &input.events {
        None => None,
        Some(list) if list.is_empty() => {
            errs.push("events", "must name at least one event (omit it for every event)");
            None
        }
        Some(list) if list.len() > WebhookEvent::ALL.len() => {
            errs.push(
                "events",
                format!("lists {} names; there are {} event types", list.len(), WebhookEvent::ALL.len()),
            );
            None
        }
        Some(list) => {
            let mut out = Vec::new();
            for (i, name) in list.iter().enumerate() {
                match WebhookEvent::parse(name) {
                    Some(e) if !out.contains(&e) => out.push(e),
                    Some(_) => errs.push(format!("events[{i}]"), "is listed twice"),
                    None => errs.push(
                        format!("events[{i}]"),
                        format!(
                            "is not an event type; use one of {}",
                            WebhookEvent::ALL.map(|e| e.as_str()).join(", ")
                        ),
                    ),
                }
            }
            Some(out)
        }
    };
    if let Some(secret) = &input.secret {
        if secret_key(secret.expose()).is_none() {
            errs.push("secret", "must be whsec_ followed by the base64 of 24 to 64 bytes");
        }
    }
    if let Some(d) = &input.description {
        if d.chars().count() > DESCRIPTION_MAX || d.chars().any(char::is_control) {
            errs.push(
                "description",
                format!("must be at most {DESCRIPTION_MAX} characters without control characters"),
            );
        }
    }
    errs.into_result((url, events))
}

pub fn view(row: &WebhookRow) -> WebhookView {
    WebhookView {
        id: row.id.clone(),
        url: row.url.clone(),
        events: row.events.clone().unwrap_or_else(|| WebhookEvent::ALL.to_vec()),
        all_events: row.events.is_none(),
        description: row.description.clone(),
        created_at: rfc3339(row.created_at),
        secret: None,
    }
}

/// Registers a webhook; the answer carries its secret, the only time it is shown.
pub async fn create(state: &AppState, caller: &Caller, body: Value) -> Result<WebhookView, ApiError> {
    let input: WebhookInput = nexus_core::wire::from_body(body)?;
    let (url, events) = check(&input)?;
    let secret = match &input.secret {
        Some(s) => s.expose().to_owned(),
        None => generate_secret(),
    };
    let id = uuid::Uuid::new_v4().to_string();
    let now = state.clock.now_micros();
    let row = WebhookRow {
        id: id.clone(),
        url,
        events,
        secret_enc: state.config.keyring.seal(&secret_context(&id), secret.as_bytes()),
        description: input.description.clone(),
        created_at: now,
        updated_at: now,
    };
    let data = json!({ "webhook_id": id, "url": row.url, "events": view(&row).events });
    state.store.insert_webhook(&row, caller.audit(AuditEvent::WebhookCreated, data)).await?;
    Ok(WebhookView { secret: Some(secret), ..view(&row) })
}

pub async fn list(state: &AppState) -> Result<Vec<WebhookView>, ApiError> {
    Ok(state.store.list_webhooks().await?.iter().map(view).collect())
}

pub async fn find(state: &AppState, id: &str) -> Result<WebhookRow, ApiError> {
    state.store.webhook_by_id(id).await?.ok_or_else(|| ApiError::not_found("no webhook with that id"))
}

pub async fn delete(state: &AppState, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let row = find(state, id).await?;
    let data = json!({ "webhook_id": row.id, "url": row.url });
    if !state.store.delete_webhook(&row.id, caller.audit(AuditEvent::WebhookDeleted, data)).await? {
        return Err(ApiError::not_found("no webhook with that id"));
    }
    Ok(())
}

fn attempt_view(a: &AttemptRow) -> AttemptView {
    AttemptView {
        attempt: a.attempt,
        started_at: rfc3339(a.started_at),
        finished_at: a.finished_at.map(rfc3339),
        status_code: a.status_code,
        outcome: a.outcome.clone().unwrap_or_else(|| "unfinished".into()),
        error: a.error.clone(),
        duration_ms: a.duration_ms,
    }
}

fn delivery_view(d: &DeliveryRow) -> DeliveryView {
    DeliveryView {
        id: d.id.clone(),
        webhook_id: d.webhook_id.clone(),
        event_type: d.event_type.clone(),
        connection_id: d.connection_id.clone(),
        status: d.status.as_str().to_owned(),
        next_attempt_at: d.next_attempt_at.filter(|_| d.status == DeliveryStatus::Pending).map(rfc3339),
        created_at: rfc3339(d.created_at),
        delivered_at: d.delivered_at.map(rfc3339),
        last_status_code: d.last_status_code,
        last_error: d.last_error.clone(),
        payload: serde_json::from_str(&d.payload).unwrap_or(Value::Null),
        attempts: d.attempt_log.iter().map(attempt_view).collect(),
    }
}

/// `created_at.id` of the last delivery of a page.
fn cursor_of(d: &DeliveryRow) -> String {
    format!("{}.{}", d.created_at, d.id)
}

fn parse_cursor(raw: &str) -> Option<(i64, String)> {
    let (at, id) = raw.split_once('.')?;
    let at: i64 = at.parse().ok().filter(|n| *n >= 0 && at.len() <= 18 && at.bytes().all(|b| b.is_ascii_digit()))?;
    (id.starts_with("msg_") && id.len() > 4 && id.len() <= 64 && id[4..].bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| (at, id.to_owned()))
}

pub async fn deliveries(state: &AppState, webhook_id: &str, q: DeliveryQuery) -> Result<DeliveryPage, ApiError> {
    let hook = find(state, webhook_id).await?;
    let mut errs = ValidationErrors::default();
    let status = q.status.map(|s| match s {
        DeliveryState::Pending => DeliveryStatus::Pending,
        DeliveryState::Delivered => DeliveryStatus::Delivered,
        DeliveryState::Failed => DeliveryStatus::Failed,
    });
    let before = q.cursor.as_deref().and_then(|c| {
        let parsed = parse_cursor(c);
        if parsed.is_none() {
            errs.push("cursor", "is not a cursor this server issued");
        }
        parsed
    });
    if q.limit.is_some_and(|l| l < 1) {
        errs.push("limit", "must be at least 1");
    }
    if q.connection_id.as_ref().is_some_and(|c| c.len() > 256) {
        errs.push("connection_id", "must be at most 256 characters");
    }
    errs.into_result(())?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).min(1000);
    let filter = DeliveryFilter { status, event_type: q.event_type, connection_id: q.connection_id, before, limit };
    let rows = state.store.list_deliveries(&hook.id, &filter).await?;
    let next_cursor = (rows.len() as i64 == limit).then(|| rows.last().map(cursor_of)).flatten();
    Ok(DeliveryPage { deliveries: rows.iter().map(delivery_view).collect(), next_cursor })
}

pub async fn delivery(state: &AppState, webhook_id: &str, id: &str) -> Result<DeliveryView, ApiError> {
    let hook = find(state, webhook_id).await?;
    let row = state.store.delivery(&hook.id, id).await?.ok_or_else(|| ApiError::not_found("no such delivery"))?;
    Ok(delivery_view(&row))
}

/// Sends a delivery again (same `webhook-id` and body, a fresh retry schedule).
pub async fn redeliver(
    state: &AppState,
    caller: &Caller,
    webhook_id: &str,
    id: &str,
) -> Result<DeliveryView, ApiError> {
    let hook = find(state, webhook_id).await?;
    let data = json!({ "webhook_id": hook.id, "delivery_id": id });
    let entry = caller.audit(AuditEvent::WebhookRedelivered, data);
    if !state.store.redeliver(&hook.id, id, state.clock.now_micros(), entry).await? {
        return Err(ApiError::not_found("no such delivery"));
    }
    delivery(state, &hook.id, id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_whsec_with_24_to_64_bytes() {
        let generated = generate_secret();
        assert_eq!(secret_key(&generated).map(|k| k.len()), Some(32));
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
        assert!(secret_key(&format!("whsec_{}", b64(24))).is_some());
        assert!(secret_key(&format!("whsec_{}", b64(64))).is_some());
        assert!(secret_key(&format!("whsec_{}", b64(23))).is_none());
        assert!(secret_key(&format!("whsec_{}", b64(65))).is_none());
        assert!(secret_key(&b64(32)).is_none());
        assert!(secret_key("whsec_not base64!").is_none());
    }

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        assert_eq!(parse_cursor("123.msg_abc"), Some((123, "msg_abc".into())));
        for bad in ["", "x.msg_a", "-1.msg_a", "1.evt_a", "1.msg_a'--", "1"] {
            assert_eq!(parse_cursor(bad), None, "{bad}");
        }
    }
}
