//! The error shape every Nexus answer uses (SPEC section 9), and the one
//! table from a condition to its HTTP status.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// Declares [`ErrorCode`] from one table: each condition once, with its
/// wire name and its one status.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal => $status:literal,)+) => {
        /// Every error condition Nexus (the Gateway, the Broker and both
        /// proxies) reports, as its stable snake_case wire name. Each has
        /// exactly one status ([`ErrorCode::status`]). A code a newer server
        /// sends that this build does not know decodes as [`ErrorCode::Unknown`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            // The wire name is the variant's in snake_case (serde and the
            // OpenAPI schema); `as_str` returns the same, tested below.
            $($(#[doc = $doc])* $variant,)+
            /// A code this build does not know (from a newer server).
            #[serde(other)]
            Unknown,
        }

        impl ErrorCode {
            /// Every code but [`ErrorCode::Unknown`].
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)+
                    ErrorCode::Unknown => "unknown",
                }
            }

            /// The one HTTP status of this condition.
            pub fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)+
                    ErrorCode::Unknown => 500,
                }
            }
        }
    };
}

error_codes! {
    /// A field or parameter is invalid; `details.fields` names it.
    InvalidInput = "invalid_input" => 400,
    /// The body is not JSON.
    MalformedJson = "malformed_json" => 400,
    /// A `state` (OAuth or capture) is not one Nexus issued.
    InvalidState = "invalid_state" => 400,
    /// A `state` was issued but has expired.
    StateExpired = "state_expired" => 400,
    /// Captured credentials do not fit the provider's schema or strategy.
    InvalidCredentials = "invalid_credentials" => 400,
    /// OIDC discovery at registration failed.
    DiscoveryFailed = "discovery_failed" => 400,
    /// Any other refused request.
    BadRequest = "bad_request" => 400,
    Unauthorized = "unauthorized" => 401,
    Forbidden = "forbidden" => 403,
    /// `nexus proxy` answers to its own address only.
    HostNotAllowed = "host_not_allowed" => 403,
    /// `nexus proxy` refuses requests from web pages.
    OriginNotAllowed = "origin_not_allowed" => 403,
    NotFound = "not_found" => 404,
    MethodNotAllowed = "method_not_allowed" => 405,
    Timeout = "timeout" => 408,
    PayloadTooLarge = "payload_too_large" => 413,
    UnsupportedMediaType = "unsupported_media_type" => 415,
    /// Too many failed authentication attempts from this address; `Retry-After` says when to try again.
    RateLimited = "rate_limited" => 429,
    /// The request head is larger than a proxy accepts.
    HeadersTooLarge = "headers_too_large" => 431,
    /// The state of things forbids the request.
    Conflict = "conflict" => 409,
    /// Another live provider has this name.
    NameTaken = "name_taken" => 409,
    /// A `state` was already used.
    StateUsed = "state_used" => 409,
    /// The connection is pending, failed or revoked.
    ConnectionNotActive = "connection_not_active" => 409,
    /// The provider refused the refresh token: the user must consent again.
    AttentionRequired = "attention_required" => 409,
    /// The provider's configuration cannot serve this request.
    ProviderMisconfigured = "provider_misconfigured" => 409,
    /// The provider has no `api_base_url` to proxy to.
    NoApiBaseUrl = "no_api_base_url" => 409,
    /// The credentials cannot sign this request.
    CannotSign = "cannot_sign" => 409,
    /// The connection's provider was deleted.
    ProviderDeleted = "provider_deleted" => 410,
    InternalError = "internal_error" => 500,
    ProviderError = "provider_error" => 502,
    ProviderUnreachable = "provider_unreachable" => 502,
    /// A proxy's Gateway refused its API key.
    GatewayRefusedApiKey = "gateway_refused_api_key" => 502,
    /// A proxy could not reach its Gateway.
    GatewayUnavailable = "gateway_unavailable" => 502,
    /// The provider cannot be reached and the stored token is no longer usable.
    ProviderUnavailable = "provider_unavailable" => 503,
    /// The database is away; nothing was changed.
    StorageUnavailable = "storage_unavailable" => 503,
    /// The server is starting or stopping.
    Unavailable = "unavailable" => 503,
    /// A proxy serves as many agent connections as it may.
    TooManyConnections = "too_many_connections" => 503,
    ProviderTimeout = "provider_timeout" => 504,
}

impl ErrorCode {
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
            429 => (RateLimited, "too many requests; retry later"),
            431 => (HeadersTooLarge, "the request head is too large"),
            402..=499 => (BadRequest, "the request was refused"),
            _ => (InternalError, "an internal error occurred; see the server log"),
        }
    }
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
        assert_eq!(ErrorCode::ALL.len(), 37);
        for &code in ErrorCode::ALL {
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
        for status in [400, 401, 403, 404, 405, 408, 413, 415, 429, 431] {
            assert_eq!(ErrorCode::for_status(status).0.status(), status);
        }
    }
}
