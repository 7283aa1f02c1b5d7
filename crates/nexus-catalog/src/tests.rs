//! The catalog's files, checked as CI must: each against `schema.json`,
//! named as its file, with a logo that makes no request, and registrable
//! by the very validation `POST /v1/providers` runs.

use super::*;
use nexus_core::ProviderInput;
use serde_json::json;

#[test]
fn every_file_matches_the_catalog_schema() {
    let schema: Value = serde_json::from_str(schema()).expect("schema.json is JSON");
    let validator = jsonschema::draft202012::new(&schema).expect("schema.json is a valid 2020-12 schema");
    let mut problems = Vec::new();
    for (name, json, _) in files() {
        match serde_json::from_str::<Value>(json) {
            Ok(doc) => {
                problems.extend(validator.iter_errors(&doc).map(|e| format!("{name}.json: {}: {e}", e.instance_path())))
            }
            Err(e) => problems.push(format!("{name}.json: not JSON: {e}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_file_loads_under_its_own_name() {
    let names: Vec<&str> = files().iter().map(|(n, _, _)| *n).collect();
    let loaded: Vec<&str> = entries().iter().map(|e| e.name.as_str()).collect();
    assert_eq!(loaded, names, "an entry did not load, or names another file");
    assert!(names.len() >= 100, "the catalog holds {} templates; the issue asks for at least 100", names.len());
    for name in &names {
        nexus_core::provider::ProviderName::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// A logo is drawn by Nexus's own pages: it may not fetch anything, run
/// anything or be large.
#[test]
fn every_template_has_a_self_contained_logo() {
    for (name, _, logo) in files() {
        let svg = logo.unwrap_or_else(|| panic!("catalog/{name}.svg is missing"));
        let lower = svg.to_lowercase();
        assert!(lower.trim_start().starts_with("<svg"), "{name}.svg: not an SVG document");
        assert!(svg.len() <= 8 * 1024, "{name}.svg: {} bytes (at most 8 KiB)", svg.len());
        for banned in ["<script", "<foreignobject", "javascript:", "@import", "<image", "<use", "<!entity", "<!doctype"]
        {
            assert!(!lower.contains(banned), "{name}.svg: contains {banned}");
        }
        for (i, _) in lower.match_indices(" on") {
            let rest = &lower[i + 3..];
            let word = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            assert!(!rest[word..].trim_start().starts_with('='), "{name}.svg: an event handler attribute at byte {i}");
        }
        assert!(!lower.contains("href"), "{name}.svg: a link");
        for (i, _) in lower.match_indices("url(") {
            assert!(lower[i + 4..].starts_with('#'), "{name}.svg: an external url( at byte {i}");
        }
        let namespaces = lower.matches("http").count();
        let svg_ns = lower.matches("http://www.w3.org/2000/svg").count();
        assert_eq!(namespaces, svg_ns, "{name}.svg: names a URL other than the SVG namespace");
    }
}

/// The credentials an operator brings, as placeholders.
fn placeholders(entry: &CatalogEntry) -> Map<String, Value> {
    let needs_client = match entry.auth_type() {
        Some(nexus_core::AuthType::Oauth2) => true,
        Some(nexus_core::AuthType::Oauth2ClientCredentials) => {
            entry.provider.get("params").is_none_or(|p| p.get("credential_schema").is_none())
        }
        _ => false,
    };
    let mut body = Map::new();
    if needs_client {
        body.insert("client_id".into(), json!("placeholder-client-id"));
        body.insert("client_secret".into(), json!("placeholder-client-secret"));
    }
    body
}

#[test]
fn every_template_passes_provider_validation() {
    let mut problems = Vec::new();
    for entry in entries() {
        let body = provider_body(entry, placeholders(entry));
        match ProviderInput::from_json(body)
            .map_err(|e| e.to_string())
            .and_then(|i| i.validate(false).map_err(|e| e.to_string()))
        {
            Ok(v) => {
                assert_eq!(v.config.template.as_deref(), Some(entry.name.as_str()));
                assert_eq!(v.config.template_version, Some(entry.version));
                if !v.config.enable_discovery && v.config.issuer.is_some() {
                    assert!(v.config.jwks_uri.is_some(), "{}: issuer without jwks_uri", entry.name);
                }
            }
            Err(e) => problems.push(format!("{}: {e}", entry.name)),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn overrides_merge_over_the_template() {
    let entry = get("zendesk").expect("the zendesk template");
    let body = provider_body(
        entry,
        json!({"name": "zd", "client_id": "c", "template_version": 99,
               "params": {"allowed_hosts": ["*.zendesk.eu"], "connection_config_schema": null}})
        .as_object()
        .cloned()
        .unwrap(),
    );
    assert_eq!(body["name"], "zd");
    assert_eq!(body["client_id"], "c");
    assert_eq!(body["template"], "zendesk");
    assert_eq!(body["template_version"], entry.version, "the version is the catalog's, whatever the body says");
    assert_eq!(body["params"]["allowed_hosts"], json!(["*.zendesk.eu"]));
    assert!(body["params"].get("connection_config_schema").is_none(), "null removes");
    assert_eq!(body["auth_url"], entry.provider["auth_url"]);
}

#[test]
fn search_filters_by_type_category_and_text() {
    let oauth = search(&Filter { auth_type: Some(nexus_core::AuthType::Oauth2), ..Filter::default() });
    assert!(!oauth.is_empty() && oauth.iter().all(|e| e.auth_type() == Some(nexus_core::AuthType::Oauth2)));
    let support = search(&Filter { category: Some("support"), ..Filter::default() });
    assert!(support.iter().any(|e| e.name == "zendesk") && support.iter().all(|e| e.category == "support"));
    let found = search(&Filter { q: Some("ZENDESK"), ..Filter::default() });
    assert!(found.iter().any(|e| e.name == "zendesk"));
    assert!(search(&Filter { q: Some("no-such-provider-anywhere"), ..Filter::default() }).is_empty());
}

/// The catalog is data: no template's name is written in the code outside
/// tests (a provider's behaviour comes from its entry, never from a branch
/// on its name).
#[test]
fn no_provider_name_in_rust_code_outside_tests() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut sources = Vec::new();
    let crates = std::fs::read_dir(root.join("crates")).unwrap();
    for krate in crates.flatten() {
        collect_rs(&krate.path().join("src"), &mut sources);
    }
    let mut found = Vec::new();
    for path in sources {
        if path.ends_with("tests.rs") || path.to_string_lossy().contains("nexus-testkit") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Test modules sit at the end of a file.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for entry in entries() {
            for quoted in [format!("\"{}\"", entry.name), format!("\"{}.", entry.name)] {
                if code.contains(&quoted) && !ALLOWED_WORDS.contains(&entry.name.as_str()) {
                    found.push(format!("{}: {quoted}", path.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "provider names in code:\n{}", found.join("\n"));
}

/// Template names that are also ordinary words the code uses for itself:
/// `"x"` is a sample value for checking a URL template.
const ALLOWED_WORDS: [&str; 1] = ["x"];

fn collect_rs(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(read) = std::fs::read_dir(dir) else { return };
    for e in read.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_rs(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}
