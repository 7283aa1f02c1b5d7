//! Connections (SPEC section 4), by what each part does: requesting one
//! ([`request`]), the OAuth2 callback ([`callback`]), reading them
//! ([`lifecycle`]), revoking ([`revoke`]), and an oauth2 provider's client
//! registration ([`oauth_client`]). Static credential capture lives in
//! [`super::capture`]; what they share is here.

mod callback;
pub(crate) mod grant;
mod lifecycle;
mod oauth_client;
mod request;
mod revoke;

pub use callback::{callback, CallbackOutcome, CallbackQuery};
pub(crate) use lifecycle::expire_if_stale;
pub use lifecycle::{check, list, ListQuery};
pub use nexus_core::wire::{ConnectionRequested, ConnectionView, RequestConnection};
pub use oauth_client::redirect_uri;
pub(crate) use oauth_client::{client_config, client_config_at, endpoints, endpoints_with};
use oauth_client::{param_bool, param_map, param_str};
pub use request::{request, Requested};
pub use revoke::revoke;

use crate::middleware::Caller;
use crate::services::providers::rfc3339;
use nexus_core::AuditEvent;
use nexus_store::{ConnectionRow, NewAudit};
use serde_json::Value;

/// The connection `id`, if `caller` may see it: one of a workspace its key
/// is not limited to is answered as if it did not exist.
pub async fn visible(
    state: &crate::state::AppState,
    caller: &Caller,
    id: &str,
) -> Result<Option<ConnectionRow>, crate::error::ApiError> {
    Ok(state.store.connection_by_id(id).await?.filter(|row| caller.may_see(&row.workspace_id)))
}

pub fn view(row: ConnectionRow) -> ConnectionView {
    ConnectionView {
        connection_id: row.id,
        status: row.status,
        provider: row.provider_name,
        provider_id: row.provider_id,
        auth_type: row.auth_type,
        workspace_id: row.workspace_id,
        scopes: row.scopes,
        metadata: row.metadata,
        connection_config: row.connection_config,
        error: row.last_error,
        expires_at: row.expires_at,
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
    }
}

pub(crate) fn context(connection_id: &str, field: &str) -> String {
    format!("connection:{connection_id}:{field}")
}

pub(crate) fn audit(caller: Option<&Caller>, event: AuditEvent, row: &ConnectionRow, data: Value) -> NewAudit {
    NewAudit {
        event_type: event,
        ip: caller.map(Caller::ip_string),
        user_agent: caller.and_then(|c| c.user_agent.clone()),
        provider_id: Some(row.provider_id.clone()),
        connection_id: Some(row.id.clone()),
        workspace_id: Some(row.workspace_id.clone()),
        data,
        at: Some(chrono::Utc::now().timestamp_micros()),
        id: None,
        api_key: caller.and_then(|c| c.api_key.clone()),
    }
}
