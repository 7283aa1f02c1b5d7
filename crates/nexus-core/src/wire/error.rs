//! The error shape every Nexus answer uses (SPEC section 9), and the one
//! table from a condition to its HTTP status.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// Every error condition Nexus (the Gateway, the Broker and both proxies)
/// reports, as its stable snake_case wire name. Each has exactly one status
/// ([`ErrorCode::status`]). A code a newer server sends that this build does
/// not know decodes as [`ErrorCode::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // 400: the request itself is wrong.
    /// A field or parameter is invalid; `details.fields` names it.
    InvalidInput,
    /// The body is not JSON.
    MalformedJson,
    /// A `state` (OAuth or capture) is not one Nexus issued.
    InvalidState,
    /// A `state` was issued but has expired.
    StateExpired,
    /// Captured credentials do not fit the provider's schema or strategy.
    InvalidCredentials,
    /// OIDC discovery at registration failed.
    DiscoveryFailed,
    /// Any other refused request.
    BadRequest,
    // 401, 403
    Unauthorized,
    Forbidden,
    /// `nexus proxy` answers to its own address only.
    HostNotAllowed,
    /// `nexus proxy` refuses requests from web pages.
    OriginNotAllowed,
    // 404, 405, 408, 413, 415
    NotFound,
    MethodNotAllowed,
    Timeout,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// 431: the request head is larger than a proxy accepts.
    HeadersTooLarge,
    // 409: the request is fine but the state of things forbids it.
    Conflict,
    /// Another live provider has this name.
    NameTaken,
    /// A `state` was already used.
    StateUsed,
    /// The connection is pending, failed or revoked.
    ConnectionNotActive,
    /// The provider refused the refresh token: the user must consent again.
    AttentionRequired,
    /// The provider's configuration cannot serve this request.
    ProviderMisconfigured,
    /// The provider has no `api_base_url` to proxy to.
    NoApiBaseUrl,
    /// The credentials cannot sign this request.
    CannotSign,
    // 410
    /// The connection's provider was deleted.
    ProviderDeleted,
    // 500
    InternalError,
    // 502, 504: the provider misbehaved.
    ProviderError,
    ProviderUnreachable,
    ProviderTimeout,
    /// A proxy's Gateway refused its API key.
    GatewayRefusedApiKey,
    /// A proxy could not reach its Gateway.
    GatewayUnavailable,
    // 503: retry later.
    /// The provider cannot be reached and the stored token is no longer usable.
    ProviderUnavailable,
    /// The database is away; nothing was changed.
    StorageUnavailable,
    /// The server is starting or stopping.
    Unavailable,
    /// A proxy serves as many agent connections as it may.
    TooManyConnections,
    /// A code this build does not know (from a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The one HTTP status of this condition.
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidInput | MalformedJson | InvalidState | StateExpired | InvalidCredentials | DiscoveryFailed
            | BadRequest => 400,
            Unauthorized => 401,
            Forbidden | HostNotAllowed | OriginNotAllowed => 403,
            NotFound => 404,
            MethodNotAllowed => 405,
            Timeout => 408,
            Conflict
            | NameTaken
            | StateUsed
            | ConnectionNotActive
            | AttentionRequired
            | ProviderMisconfigured
            | NoApiBaseUrl
            | CannotSign => 409,
            ProviderDeleted => 410,
            PayloadTooLarge => 413,
            UnsupportedMediaType => 415,
            HeadersTooLarge => 431,
            InternalError | Unknown => 500,
            ProviderError | ProviderUnreachable | GatewayRefusedApiKey | GatewayUnavailable => 502,
            ProviderUnavailable | StorageUnavailable | Unavailable | TooManyConnections => 503,
            ProviderTimeout => 504,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidInput => "invalid_input",
            MalformedJson => "malformed_json",
            InvalidState => "invalid_state",
            StateExpired => "state_expired",
            InvalidCredentials => "invalid_credentials",
            DiscoveryFailed => "discovery_failed",
            BadRequest => "bad_request",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            HostNotAllowed => "host_not_allowed",
            OriginNotAllowed => "origin_not_allowed",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            Timeout => "timeout",
            PayloadTooLarge => "payload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            HeadersTooLarge => "headers_too_large",
            Conflict => "conflict",
            NameTaken => "name_taken",
            StateUsed => "state_used",
            ConnectionNotActive => "connection_not_active",
            AttentionRequired => "attention_required",
            ProviderMisconfigured => "provider_misconfigured",
            NoApiBaseUrl => "no_api_base_url",
            CannotSign => "cannot_sign",
            ProviderDeleted => "provider_deleted",
            InternalError => "internal_error",
            ProviderError => "provider_error",
            ProviderUnreachable => "provider_unreachable",
            ProviderTimeout => "provider_timeout",
            GatewayRefusedApiKey => "gateway_refused_api_key",
            GatewayUnavailable => "gateway_unavailable",
            ProviderUnavailable => "provider_unavailable",
            StorageUnavailable => "storage_unavailable",
            Unavailable => "unavailable",
            TooManyConnections => "too_many_connections",
            Unknown => "unknown",
        }
    }

    /// The code of a bare status produced outside our handlers (a framework
    /// rejection), with a sentence for it.
    pub fn for_status(status: u16) -> (ErrorCode, &'static str) {
        use ErrorCode::*;
        match status {
            400 => (InvalidInput, "the request is malformed"),
            401 => (Unauthorized, "a valid X-API-Key header is required"),
            403 => (Forbidden, "this caller may not use this endpoint"),
            404 => (NotFound, "no such endpoint"),
            405 => (MethodNotAllowed, "this endpoint does not accept that method"),
            408 => (Timeout, "the request took too long"),
            413 => (PayloadTooLarge, "the request body is larger than the server accepts"),
            415 => (UnsupportedMediaType, "send the body as Content-Type: application/json"),
            431 => (HeadersTooLarge, "the request head is too large"),
            402..=499 => (BadRequest, "the request was refused"),
            _ => (InternalError, "an internal error occurred; see the server log"),
        }
    }

    /// Every code but [`ErrorCode::Unknown`].
    pub const ALL: [ErrorCode; 36] = {
        use ErrorCode::*;
        [
            InvalidInput,
            MalformedJson,
            InvalidState,
            StateExpired,
            InvalidCredentials,
            DiscoveryFailed,
            BadRequest,
            Unauthorized,
            Forbidden,
            HostNotAllowed,
            OriginNotAllowed,
            NotFound,
            MethodNotAllowed,
            Timeout,
            PayloadTooLarge,
            UnsupportedMediaType,
            HeadersTooLarge,
            Conflict,
            NameTaken,
            StateUsed,
            ConnectionNotActive,
            AttentionRequired,
            ProviderMisconfigured,
            NoApiBaseUrl,
            CannotSign,
            ProviderDeleted,
            InternalError,
            ProviderError,
            ProviderUnreachable,
            ProviderTimeout,
            GatewayRefusedApiKey,
            GatewayUnavailable,
            ProviderUnavailable,
            StorageUnavailable,
            Unavailable,
            TooManyConnections,
        ]
    };
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The wire shape of every error: `{"code", "message", "details"?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// A sentence for humans; never holds a secret.
    pub message: String,
    /// Extra structure, e.g. `{"fields": [{"field": "name", "message": "..."}]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub details: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_and_unknown_codes_decode() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, code.as_str(), "{code:?}");
            assert_eq!(serde_json::from_value::<ErrorCode>(json).unwrap(), code);
            assert!((400..600).contains(&code.status()));
        }
        let later: ErrorBody = serde_json::from_str(r#"{"code":"quota_exceeded","message":"m"}"#).unwrap();
        assert_eq!(later.code, ErrorCode::Unknown);
    }

    #[test]
    fn every_framework_status_gets_a_code_of_that_status() {
        for status in [400, 401, 403, 404, 405, 408, 413, 415, 431] {
            assert_eq!(ErrorCode::for_status(status).0.status(), status);
        }
    }
}
