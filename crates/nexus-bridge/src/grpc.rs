//! gRPC (feature `tonic`): [`GrpcAuth`], a tonic interceptor that puts a
//! connection's credentials into each call's metadata.
//!
//! Only strategies that sign with headers alone fit gRPC metadata: `oauth2`
//! (`authorization: Bearer …`), `header` and `basic_auth`. `query_param`,
//! `hmac_payload` and `aws_sigv4` sign the URL or the body, which an
//! interceptor never sees; [`Bridge::grpc_auth`] refuses them up front.
//!
//! tonic's interceptors are synchronous, so `GrpcAuth` never waits for the
//! Gateway inside a call: it signs with the credentials cached by the
//! [`Bridge`], and once they are within [`EXPIRY_SKEW_SECS`] of expiring it
//! starts one background fetch while calls go on with the still-valid ones.
//! Only a call made after the credentials have actually expired (the Gateway
//! has been unreachable all that time) fails, with `UNAVAILABLE`, which gRPC
//! clients treat as retryable; a connection that needs the user again fails
//! with `UNAUTHENTICATED` naming `attention_required`.
//!
//! When the server answers `UNAUTHENTICATED` (the provider revoked the
//! token), call [`GrpcAuth::refresh`] once and retry: the Gateway refreshes,
//! and every clone of the interceptor signs with the new credentials.
//!
//! ```no_run
//! # async fn demo(channel: tonic::transport::Channel) -> Result<(), Box<dyn std::error::Error>> {
//! use tonic_health::pb::health_client::HealthClient;
//!
//! let bridge = nexus_bridge::Bridge::new("http://127.0.0.1:8080", std::env::var("API_KEY")?);
//! let auth = bridge.grpc_auth("3f1c…connection-id").await?;
//! // Any generated client: `with_interceptor` adds the credentials to every call.
//! let mut client = HealthClient::with_interceptor(channel, auth.clone());
//! # Ok(()) }
//! ```

use crate::bridge::Bridge;
use crate::cache::EXPIRY_SKEW_SECS;
use crate::client::{GatewayError, TokenAnswer};
use crate::strategies::BridgeError;
use nexus_core::strategy::StrategyType;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tonic::metadata::{AsciiMetadataValue, MetadataKey};
use tonic::{Request, Status};

/// Why a [`GrpcAuth`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum GrpcAuthError {
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// The connection's strategy signs the URL or body, which gRPC metadata cannot carry.
    #[error("the {} strategy signs the URL or body; gRPC metadata can carry only oauth2, header and basic_auth", .0.as_str())]
    Unsupported(StrategyType),
    #[error(transparent)]
    Sign(#[from] BridgeError),
}

/// A tonic [`Interceptor`](tonic::service::Interceptor) for one connection.
/// Cheap to clone; clones share the cached credentials.
#[derive(Clone)]
pub struct GrpcAuth {
    shared: Arc<Shared>,
}

struct Shared {
    bridge: Bridge,
    connection_id: String,
    /// The credentials in use and the metadata they make.
    current: Mutex<Signed>,
    fetching: AtomicBool,
    /// Set when a background fetch learnt that the user must authorize again.
    attention_required: AtomicBool,
}

struct Signed {
    answer: Arc<TokenAnswer>,
    /// The one entry they sign with.
    metadata: Vec<(MetadataKey<tonic::metadata::Ascii>, AsciiMetadataValue)>,
}

impl std::fmt::Debug for GrpcAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcAuth").field("connection_id", &self.shared.connection_id).finish_non_exhaustive()
    }
}

impl Bridge {
    /// A gRPC interceptor for `connection_id`, with its credentials fetched
    /// now (so a connection that needs the user again, or a strategy gRPC
    /// cannot carry, is an error here rather than on the first call).
    pub async fn grpc_auth(&self, connection_id: &str) -> Result<GrpcAuth, GrpcAuthError> {
        let answer = self.credentials(connection_id).await?;
        let signed = Signed::new(answer)?;
        Ok(GrpcAuth {
            shared: Arc::new(Shared {
                bridge: self.clone(),
                connection_id: connection_id.to_owned(),
                current: Mutex::new(signed),
                fetching: AtomicBool::new(false),
                attention_required: AtomicBool::new(false),
            }),
        })
    }
}

impl Signed {
    fn new(answer: Arc<TokenAnswer>) -> Result<Signed, GrpcAuthError> {
        // gRPC metadata can carry what signs every request alike: the
        // strategies that add headers only, worked out once per answer.
        let headers = match answer.static_headers() {
            Ok(Some(headers)) => headers,
            Ok(None) => return Err(GrpcAuthError::Unsupported(answer.strategy().kind())),
            Err(e) => return Err(e.clone().into()),
        };
        let mut metadata = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            let key = MetadataKey::from_bytes(name.as_str().as_bytes())
                .map_err(|_| BridgeError::Config(format!("'{name}' is not a gRPC metadata key")))?;
            let mut value = value
                .to_str()
                .ok()
                .and_then(|v| AsciiMetadataValue::try_from(v).ok())
                .ok_or_else(|| BridgeError::Request("credential is not valid gRPC metadata".into()))?;
            value.set_sensitive(true);
            metadata.push((key, value));
        }
        Ok(Signed { answer, metadata })
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl GrpcAuth {
    /// The connection this interceptor signs for.
    pub fn connection_id(&self) -> &str {
        &self.shared.connection_id
    }

    /// Forces a refresh at the Gateway after the server answered
    /// `UNAUTHENTICATED`; concurrent callers share one refresh. Retry the
    /// call once afterwards.
    pub async fn refresh(&self) -> Result<(), GrpcAuthError> {
        let stale = self.current().answer;
        let renewed = self.shared.bridge.cache().refresh(&self.shared.connection_id, &stale).await?;
        self.install(renewed)
    }

    fn current(&self) -> Signed {
        let current = self.shared.current.lock().unwrap_or_else(|p| p.into_inner());
        Signed { answer: current.answer.clone(), metadata: current.metadata.clone() }
    }

    fn install(&self, answer: Arc<TokenAnswer>) -> Result<(), GrpcAuthError> {
        let signed = Signed::new(answer)?;
        *self.shared.current.lock().unwrap_or_else(|p| p.into_inner()) = signed;
        self.shared.attention_required.store(false, Ordering::Release);
        Ok(())
    }

    /// Starts one background fetch (if none runs and a runtime is there).
    fn renew_in_background(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if self.shared.fetching.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        runtime.spawn(async move {
            let fetched = this.shared.bridge.credentials(&this.shared.connection_id).await;
            match fetched {
                // A strategy that changed to one gRPC cannot carry keeps the
                // old credentials until they expire.
                Ok(answer) => {
                    let _ = this.install(answer);
                }
                Err(GatewayError::AttentionRequired(_)) => {
                    this.shared.attention_required.store(true, Ordering::Release);
                }
                // Unreachable after the cache's own retries: the next call tries again.
                Err(_) => {}
            }
            this.shared.fetching.store(false, Ordering::Release);
        });
    }
}

impl tonic::service::Interceptor for GrpcAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if self.shared.attention_required.load(Ordering::Acquire) {
            return Err(Status::unauthenticated(format!(
                "connection {} needs the user to authorize again (attention_required)",
                self.shared.connection_id
            )));
        }
        let signed = self.current();
        if let Some(expires_at) = signed.answer.expires_at() {
            let left = expires_at - now_secs();
            if left <= EXPIRY_SKEW_SECS {
                self.renew_in_background();
            }
            if left <= 0 {
                return Err(Status::unavailable(format!(
                    "the credentials of connection {} expired and the Gateway has not renewed them yet",
                    self.shared.connection_id
                )));
            }
        }
        for (key, value) in signed.metadata {
            request.metadata_mut().insert(key, value);
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_core::strategy::Strategy;
    use nexus_core::AuthType;
    use serde_json::{json, Map, Value};
    use tonic::service::Interceptor;

    fn answer(kind: StrategyType, config: Value, credentials: Value, expires_at: Option<i64>) -> Arc<TokenAnswer> {
        let (Value::Object(config), Value::Object(credentials)) = (config, credentials) else { unreachable!() };
        let strategy = Strategy::from_parts(kind, config).unwrap();
        Arc::new(TokenAnswer::new("c1", "p", AuthType::ApiKey, strategy, credentials).with_expires_at(expires_at))
    }

    fn auth(answer: Arc<TokenAnswer>) -> Result<GrpcAuth, GrpcAuthError> {
        let signed = Signed::new(answer)?;
        Ok(GrpcAuth {
            shared: Arc::new(Shared {
                // Never contacted: the credentials are fresh.
                bridge: Bridge::new("http://127.0.0.1:9", "unused"),
                connection_id: "c1".into(),
                current: Mutex::new(signed),
                fetching: AtomicBool::new(false),
                attention_required: AtomicBool::new(false),
            }),
        })
    }

    fn metadata(auth: &mut GrpcAuth) -> Result<Map<String, Value>, Status> {
        let req = auth.call(Request::new(()))?;
        Ok(req
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    Some((k.as_str().to_owned(), json!(v.to_str().unwrap())))
                }
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .collect())
    }

    #[test]
    fn header_strategies_become_metadata() {
        let later = Some(now_secs() + 3600);
        let mut bearer = auth(answer(StrategyType::Oauth2, json!({}), json!({"access_token": "at-1"}), later)).unwrap();
        assert_eq!(metadata(&mut bearer).unwrap()["authorization"], "Bearer at-1");
        let config = json!({"header_name": "X-Api-Key", "credential_field": "api_key"});
        let mut header = auth(answer(StrategyType::Header, config, json!({"api_key": "k-1"}), None)).unwrap();
        assert_eq!(metadata(&mut header).unwrap()["x-api-key"], "k-1");
        let config = json!({"username_field": "u", "password_field": "p"});
        let mut basic = auth(answer(StrategyType::BasicAuth, config, json!({"u": "ann", "p": "pw"}), None)).unwrap();
        assert_eq!(metadata(&mut basic).unwrap()["authorization"], "Basic YW5uOnB3");
    }

    #[test]
    fn url_and_body_strategies_are_refused_up_front() {
        for kind in [StrategyType::QueryParam, StrategyType::HmacPayload, StrategyType::AwsSigv4] {
            let err = auth(answer(kind, json!({}), json!({}), None)).unwrap_err();
            assert!(matches!(err, GrpcAuthError::Unsupported(k) if k == kind), "{err}");
            assert!(err.to_string().starts_with(&format!("the {} strategy", kind.as_str())), "{err}");
        }
    }

    #[test]
    fn missing_credentials_are_an_error_not_a_panic() {
        let err = auth(answer(StrategyType::Oauth2, json!({}), json!({}), None)).unwrap_err();
        assert!(err.to_string().contains("access_token"), "{err}");
    }

    #[test]
    fn expired_credentials_are_unavailable_and_attention_is_unauthenticated() {
        let past = Some(now_secs() - 1);
        let mut expired = auth(answer(StrategyType::Oauth2, json!({}), json!({"access_token": "old"}), past)).unwrap();
        // No runtime here: no background fetch is started, the call fails retryably.
        assert_eq!(metadata(&mut expired).unwrap_err().code(), tonic::Code::Unavailable);
        expired.shared.attention_required.store(true, Ordering::Release);
        let status = metadata(&mut expired).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(status.message().contains("attention_required"));
    }

    #[test]
    fn debug_shows_no_credentials() {
        let auth = auth(answer(StrategyType::Oauth2, json!({}), json!({"access_token": "secret-at"}), None)).unwrap();
        let shown = format!("{auth:?}");
        assert!(shown.contains("c1") && !shown.contains("secret-at"), "{shown}");
    }
}
