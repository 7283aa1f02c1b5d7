//! The provider catalog (SPEC 12) on the wire: an entry as `catalog/NAME.json`
//! holds it, and the summary `GET /v1/catalog` lists.

use crate::AuthType;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One catalog entry: a reviewed provider template and where its settings
/// come from. `provider` holds the fields of `POST /v1/providers` but the
/// ones each operator brings (`name`, `client_id`, `client_secret`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub name: String,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub category: String,
    pub tags: Vec<String>,
    /// The provider's documentation the entry follows.
    pub docs_url: String,
    /// Raised whenever the entry changes; a provider keeps the version it was copied from.
    pub version: u32,
    /// Each quirk's documentation page and, where known, the sentence it comes from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<CatalogSource>,
    /// What the operator does at the provider before registering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<String>,
    /// The provider fields the template sets.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub provider: Map<String, Value>,
    /// Where Nexus serves the entry's logo (set when served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
}

/// Where an entry's quirk is documented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CatalogSource {
    pub about: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<String>,
}

impl CatalogEntry {
    /// The template's `auth_type`.
    pub fn auth_type(&self) -> Option<AuthType> {
        self.provider.get("auth_type").and_then(Value::as_str).and_then(AuthType::parse)
    }

    /// The short form `GET /v1/catalog` lists.
    pub fn summary(&self) -> CatalogSummary {
        CatalogSummary {
            name: self.name.clone(),
            display_name: self.display_name.clone(),
            description: self.description.clone(),
            category: self.category.clone(),
            tags: self.tags.clone(),
            auth_type: self.auth_type(),
            docs_url: self.docs_url.clone(),
            version: self.version,
            logo_url: self.logo_url.clone(),
        }
    }
}

/// An entry of `GET /v1/catalog`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CatalogSummary {
    pub name: String,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub category: String,
    pub tags: Vec<String>,
    pub auth_type: Option<AuthType>,
    pub docs_url: String,
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
}
