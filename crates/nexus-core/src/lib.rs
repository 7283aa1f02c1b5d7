//! Domain types and rules of Nexus: providers, their validation, and the small
//! pure algorithms (JSON Merge Patch, secret fingerprints) the services build on.
//!
//! Nothing in this crate performs IO or knows about HTTP or SQL, so every rule
//! here is unit-tested without a server or a database.

pub mod access;
pub mod audit;
pub mod clock;
pub mod connection;
pub mod error;
pub mod merge;
pub mod provider;
pub mod redact;
pub mod secret;
pub mod strategy;
pub mod template;
pub mod url_policy;
pub mod webhook;
pub mod wire;

pub use access::Role;
pub use audit::AuditEvent;
pub use connection::ConnectionStatus;
pub use error::{FieldError, ValidationErrors};
pub use provider::{AuthType, ProviderConfig, ProviderInput, ProviderName};
pub use secret::SecretString;
pub use webhook::WebhookEvent;
