//! The connection events Nexus sends to webhooks (SPEC 13).

use serde::{Deserialize, Serialize};

/// A webhook event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum WebhookEvent {
    /// pending → active: a first consent or capture, or a re-consent of a
    /// connection that was not `attention_required`.
    #[serde(rename = "connection.activated")]
    ConnectionActivated,
    /// A handshake failed or expired (the connection is now `failed`).
    #[serde(rename = "connection.failed")]
    ConnectionFailed,
    /// The provider refused a renewal: the user must consent again.
    #[serde(rename = "connection.attention_required")]
    ConnectionAttentionRequired,
    /// `attention_required` → `active` (sent instead of `connection.activated`).
    #[serde(rename = "connection.recovered")]
    ConnectionRecovered,
    #[serde(rename = "connection.revoked")]
    ConnectionRevoked,
    /// A renewal failed for a passing reason; the connection is still active.
    #[serde(rename = "token.refresh_failed")]
    TokenRefreshFailed,
}

impl WebhookEvent {
    pub const ALL: [WebhookEvent; 6] = [
        WebhookEvent::ConnectionActivated,
        WebhookEvent::ConnectionFailed,
        WebhookEvent::ConnectionAttentionRequired,
        WebhookEvent::ConnectionRecovered,
        WebhookEvent::ConnectionRevoked,
        WebhookEvent::TokenRefreshFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::ConnectionActivated => "connection.activated",
            WebhookEvent::ConnectionFailed => "connection.failed",
            WebhookEvent::ConnectionAttentionRequired => "connection.attention_required",
            WebhookEvent::ConnectionRecovered => "connection.recovered",
            WebhookEvent::ConnectionRevoked => "connection.revoked",
            WebhookEvent::TokenRefreshFailed => "token.refresh_failed",
        }
    }

    pub fn parse(raw: &str) -> Option<WebhookEvent> {
        WebhookEvent::ALL.into_iter().find(|e| e.as_str() == raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_parse() {
        for e in WebhookEvent::ALL {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(json, format!("\"{}\"", e.as_str()));
            assert_eq!(WebhookEvent::parse(e.as_str()), Some(e));
        }
        assert_eq!(WebhookEvent::parse("connection.created"), None);
    }
}
