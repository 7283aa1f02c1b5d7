//! The agent side of Nexus.
//!
//! * [`GatewayClient`]: the Gateway API (`/v1/*`) with typed errors.
//! * [`strategies::apply`]: interprets a strategy from `GET /v1/token/{id}` and
//!   signs an `http::Request` (`oauth2`, `header`, `query_param`, `basic_auth`,
//!   `aws_sigv4`, `hmac_payload`). Nexus uses the same code to verify captured
//!   credentials live, so what is checked at capture is what agents send.
//! * [`CredentialCache`] and [`Bridge`]: cached credentials per connection,
//!   one in-flight fetch per connection, refresh-and-retry-once on a provider
//!   `401`, backoff with jitter while the Gateway is unreachable, and a typed
//!   [`GatewayError::AttentionRequired`] without retries.
//! * [`Relay`]: the engine of `nexus proxy`, an HTTP/1.1 relay on sockets
//!   that signs each agent request and streams the provider's answer back
//!   ([`h1`] frames messages, [`upstream`] keeps provider connections).
//! * `grpc::GrpcAuth` (feature `tonic`): a tonic interceptor that puts
//!   header-type credentials (`oauth2`, `header`, `basic_auth`) into gRPC metadata.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let bridge = nexus_bridge::Bridge::new("http://127.0.0.1:8080", std::env::var("API_KEY")?);
//! let github = bridge.for_connection("3f1c…connection-id");
//! let resp = github.get("https://api.github.com/user").send().await?;
//! println!("{}", resp.status());
//! # Ok(()) }
//! ```

pub mod bridge;
pub mod cache;
pub mod client;
pub mod forward;
#[cfg(feature = "tonic")]
pub mod grpc;
pub mod h1;
pub mod invalidations;
pub mod pipeline;
pub mod relay;
pub mod resolve;
pub mod strategies;
pub mod streamed;
pub mod target;
pub mod upstream;

pub use bridge::{Bridge, ConnectionClient, SendError, SignedRequestBuilder};
pub use cache::{Backoff, CredentialCache};
pub use client::{GatewayClient, GatewayError, TokenAnswer};
pub use forward::Forward;
#[cfg(feature = "tonic")]
pub use grpc::{GrpcAuth, GrpcAuthError};
pub use relay::Relay;
pub use strategies::{apply, BridgeError};
pub use target::{forwardable_header, host_header, split_connection_path, target_uri, Base};
