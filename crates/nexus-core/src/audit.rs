//! The closed set of audit event types (SPEC section 6).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AuditEvent {
    #[serde(rename = "provider.created")]
    ProviderCreated,
    #[serde(rename = "provider.updated")]
    ProviderUpdated,
    #[serde(rename = "provider.deleted")]
    ProviderDeleted,
    #[serde(rename = "connection.requested")]
    ConnectionRequested,
    #[serde(rename = "connection.activated")]
    ConnectionActivated,
    #[serde(rename = "connection.failed")]
    ConnectionFailed,
    #[serde(rename = "connection.revoked")]
    ConnectionRevoked,
    #[serde(rename = "connection.attention_required")]
    ConnectionAttentionRequired,
    #[serde(rename = "credential.captured")]
    CredentialCaptured,
    #[serde(rename = "token.retrieved")]
    TokenRetrieved,
    #[serde(rename = "token.refreshed")]
    TokenRefreshed,
    #[serde(rename = "token.refresh_failed")]
    TokenRefreshFailed,
    #[serde(rename = "auth.rejected")]
    AuthRejected,
    /// A server with audit keys found the chain ending in unkeyed rows (the
    /// first start after an upgrade) and signed this row after them, so
    /// the end of the chain is always keyed (SPEC 6b).
    #[serde(rename = "audit.signing_started")]
    AuditSigningStarted,
    #[serde(rename = "webhook.created")]
    WebhookCreated,
    #[serde(rename = "webhook.deleted")]
    WebhookDeleted,
    /// A delivery was sent again on demand.
    #[serde(rename = "webhook.redelivered")]
    WebhookRedelivered,
    #[serde(rename = "api_key.created")]
    ApiKeyCreated,
    #[serde(rename = "api_key.revoked")]
    ApiKeyRevoked,
    #[serde(rename = "connect_session.created")]
    ConnectSessionCreated,
}

impl AuditEvent {
    pub const ALL: [AuditEvent; 20] = [
        AuditEvent::ProviderCreated,
        AuditEvent::ProviderUpdated,
        AuditEvent::ProviderDeleted,
        AuditEvent::ConnectionRequested,
        AuditEvent::ConnectionActivated,
        AuditEvent::ConnectionFailed,
        AuditEvent::ConnectionRevoked,
        AuditEvent::ConnectionAttentionRequired,
        AuditEvent::CredentialCaptured,
        AuditEvent::TokenRetrieved,
        AuditEvent::TokenRefreshed,
        AuditEvent::TokenRefreshFailed,
        AuditEvent::AuthRejected,
        AuditEvent::AuditSigningStarted,
        AuditEvent::WebhookCreated,
        AuditEvent::WebhookDeleted,
        AuditEvent::WebhookRedelivered,
        AuditEvent::ApiKeyCreated,
        AuditEvent::ApiKeyRevoked,
        AuditEvent::ConnectSessionCreated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::ProviderCreated => "provider.created",
            AuditEvent::ProviderUpdated => "provider.updated",
            AuditEvent::ProviderDeleted => "provider.deleted",
            AuditEvent::ConnectionRequested => "connection.requested",
            AuditEvent::ConnectionActivated => "connection.activated",
            AuditEvent::ConnectionFailed => "connection.failed",
            AuditEvent::ConnectionRevoked => "connection.revoked",
            AuditEvent::ConnectionAttentionRequired => "connection.attention_required",
            AuditEvent::CredentialCaptured => "credential.captured",
            AuditEvent::TokenRetrieved => "token.retrieved",
            AuditEvent::TokenRefreshed => "token.refreshed",
            AuditEvent::TokenRefreshFailed => "token.refresh_failed",
            AuditEvent::AuthRejected => "auth.rejected",
            AuditEvent::AuditSigningStarted => "audit.signing_started",
            AuditEvent::WebhookCreated => "webhook.created",
            AuditEvent::WebhookDeleted => "webhook.deleted",
            AuditEvent::WebhookRedelivered => "webhook.redelivered",
            AuditEvent::ApiKeyCreated => "api_key.created",
            AuditEvent::ApiKeyRevoked => "api_key.revoked",
            AuditEvent::ConnectSessionCreated => "connect_session.created",
        }
    }

    pub fn parse(raw: &str) -> Option<AuditEvent> {
        AuditEvent::ALL.into_iter().find(|e| e.as_str() == raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for e in AuditEvent::ALL {
            assert_eq!(AuditEvent::parse(e.as_str()), Some(e));
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
        assert_eq!(AuditEvent::parse("nope"), None);
    }
}
