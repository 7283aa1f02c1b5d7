//! The JSON of the API, once: what the Gateway sends and what the Bridge,
//! the proxies and `nexus providers` read. The server derives its OpenAPI
//! schemas from these same types (feature `openapi`).
//!
//! They live beside the domain types they carry (`ProviderConfig`,
//! `Strategy`, `ConnectionStatus`, `AuthType`) rather than in a crate
//! of their own, which would have to depend on this one anyway.

mod catalog;
mod error;
mod views;

pub use catalog::{CatalogEntry, CatalogSource, CatalogSummary};
pub use error::{ErrorBody, ErrorCode};
pub use views::{
    CaptureRequest, ConnectionActivated, ConnectionRequested, ConnectionView, DeletedProvider, InvalidationData,
    MetadataEntry, ProviderView, RequestConnection, TokenAnswer,
};

/// Reads a JSON body as `T`. A field of the wrong type or a missing one is
/// an error naming the field (`details.fields`), never quoting the value
/// sent (it may be a secret).
pub fn from_body<T: serde::de::DeserializeOwned>(body: serde_json::Value) -> Result<T, crate::ValidationErrors> {
    if !body.is_object() {
        return Err(crate::ValidationErrors::single("body", "must be a JSON object"));
    }
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let message = crate::redact::serde_message(e.inner());
        // A missing field is reported at its parent: name it instead.
        let missing = message.strip_prefix("missing field `").and_then(|m| m.split('`').next()).map(str::to_owned);
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => name,
            (".", None) => "body".to_owned(),
            (parent, Some(name)) => format!("{parent}.{name}"),
            (path, None) => path.to_owned(),
        };
        let message = if message.starts_with("missing field") { "is required".to_owned() } else { message };
        crate::ValidationErrors::single(field, message)
    })
}
