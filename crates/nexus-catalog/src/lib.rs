//! The provider catalog (SPEC 12): reviewed provider templates, kept as data
//! in `catalog/` at the repository root (one `NAME.json` per provider, its
//! logo `NAME.svg` beside it, `schema.json` for the format) and embedded
//! into the binary at build time. Nothing here knows any provider: a
//! template becomes a provider only through [`provider_body`] and the same
//! validation every `POST /v1/providers` body goes through.

use nexus_core::merge::merge_patch;
use nexus_core::wire::CatalogEntry;
use serde_json::{Map, Value};
use std::sync::OnceLock;

mod files {
    include!(concat!(env!("OUT_DIR"), "/catalog_files.rs"));
}

/// The catalog's JSON Schema (`catalog/schema.json`).
pub fn schema() -> &'static str {
    files::SCHEMA
}

/// The raw files, by name: (name, entry JSON, logo SVG).
pub fn files() -> &'static [(&'static str, &'static str, Option<&'static str>)] {
    files::FILES
}

/// Where Nexus serves a template's logo.
pub fn logo_path(name: &str) -> String {
    format!("/catalog/{name}/logo.svg")
}

struct Loaded {
    entries: Vec<CatalogEntry>,
}

fn loaded() -> &'static Loaded {
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    LOADED.get_or_init(|| {
        // The files are checked by this crate's tests (schema, names, logos),
        // so one that does not parse is a build that never passed them:
        // it is left out rather than taking the server down.
        let entries = files::FILES
            .iter()
            .filter_map(|(name, json, logo)| {
                let mut entry: CatalogEntry = serde_json::from_str::<Value>(json)
                    .ok()
                    .and_then(|mut v| {
                        v.as_object_mut().map(|o| o.remove("$schema"));
                        serde_json::from_value(v).ok()
                    })
                    .filter(|e: &CatalogEntry| e.name == *name)?;
                entry.logo_url = logo.map(|_| logo_path(name));
                Some(entry)
            })
            .collect();
        Loaded { entries }
    })
}

/// Every entry, by name.
pub fn entries() -> &'static [CatalogEntry] {
    &loaded().entries
}

/// One entry by name.
pub fn get(name: &str) -> Option<&'static CatalogEntry> {
    entries().iter().find(|e| e.name == name)
}

/// A template's logo.
pub fn logo(name: &str) -> Option<&'static str> {
    files::FILES.iter().find(|(n, _, _)| *n == name).and_then(|(_, _, logo)| *logo)
}

/// Filters of `GET /v1/catalog`.
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    pub auth_type: Option<nexus_core::AuthType>,
    pub category: Option<&'a str>,
    /// Case-insensitive, in the name, display name, description or tags.
    pub q: Option<&'a str>,
}

/// The entries `filter` lets through, by name.
pub fn search(filter: &Filter<'_>) -> Vec<&'static CatalogEntry> {
    let q = filter.q.map(str::to_lowercase);
    entries()
        .iter()
        .filter(|e| filter.auth_type.is_none_or(|t| e.auth_type() == Some(t)))
        .filter(|e| filter.category.is_none_or(|c| e.category == c))
        .filter(|e| {
            q.as_deref().is_none_or(|q| {
                e.name.contains(q)
                    || e.display_name.to_lowercase().contains(q)
                    || e.description.as_deref().is_some_and(|d| d.to_lowercase().contains(q))
                    || e.tags.iter().any(|t| t.contains(q))
            })
        })
        .collect()
}

/// The body of `POST /v1/providers` that copies `entry` with `overrides`
/// (the caller's body without `template`): the template's provider fields,
/// its name, display name, description and category, then the overrides
/// applied as a JSON Merge Patch (RFC 7396: `params` merge, `null`
/// removes), and the template's name and version as provenance.
pub fn provider_body(entry: &CatalogEntry, mut overrides: Map<String, Value>) -> Value {
    let mut body = Map::new();
    body.insert("name".into(), Value::from(entry.name.clone()));
    body.insert("display_name".into(), Value::from(entry.display_name.clone()));
    if let Some(d) = &entry.description {
        body.insert("description".into(), Value::from(d.clone()));
    }
    body.insert("category".into(), Value::from(entry.category.clone()));
    body.extend(entry.provider.clone());
    let mut body = Value::Object(body);
    overrides.remove("template");
    overrides.remove("template_version");
    merge_patch(&mut body, &Value::Object(overrides));
    if let Some(o) = body.as_object_mut() {
        o.insert("template".into(), Value::from(entry.name.clone()));
        o.insert("template_version".into(), Value::from(entry.version));
    }
    body
}

#[cfg(test)]
mod tests;
