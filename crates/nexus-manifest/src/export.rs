//! The live providers written as a manifest, so an existing installation can
//! be brought under Security-as-Code: `export`, review, commit, `plan`.
//!
//! Secrets are never exported (the API does not reveal them): each provider
//! with a client secret gets `client_secret: ${<NAME>_CLIENT_SECRET}` (the name
//! upper-cased, every other character than a letter or digit as `_`). Every
//! other string is written so that the manifest reader gives it back exactly:
//! `$` doubled (`$$`), quoted whenever a plain scalar would read as something
//! else. Defaults (`enable_discovery: false`, empty `scopes` and `params`) are
//! left out. Planning the result against the same server shows no changes once
//! the placeholder variables hold the live secrets.

use crate::client::RemoteProvider;
use crate::env;
use crate::manifest::FIELDS;
use crate::yaml::reads_back_as_string;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt::Write;

/// A manifest produced from the server.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The YAML text.
    pub text: String,
    /// `(variable, provider name)` for every secret placeholder, in file order.
    pub variables: Vec<(String, String)>,
}

/// `github` → `GITHUB_CLIENT_SECRET`, `google-workspace` → `GOOGLE_WORKSPACE_CLIENT_SECRET`.
pub fn secret_variable(provider_name: &str) -> String {
    let stem: String =
        provider_name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    let stem = if stem.starts_with(|c: char| c.is_ascii_digit()) { format!("_{stem}") } else { stem };
    format!("{stem}_CLIENT_SECRET")
}

/// Writes `providers` (in the given order) as a manifest.
pub fn export(providers: &[RemoteProvider], source: &str) -> Exported {
    let mut variables = Vec::new();
    let mut used = HashSet::new();
    let mut body = String::new();
    for p in providers {
        let mut fields = match p.config.to_input_json() {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        if fields.get("enable_discovery") == Some(&Value::Bool(false)) {
            fields.remove("enable_discovery");
        }
        for key in ["scopes", "params"] {
            if fields.get(key).is_some_and(is_empty_collection) {
                fields.remove(key);
            }
        }
        let version = fields.remove("template_version");
        if let Some(template) = fields.remove("template") {
            match template.as_str().and_then(nexus_catalog::get) {
                // `template:` and what differs from it (`null` removes a
                // template's field), read back by the manifest the same way.
                Some(entry) => {
                    let base = nexus_catalog::provider_body(entry, Map::new());
                    let mut base = match base {
                        Value::Object(map) => map,
                        _ => Map::new(),
                    };
                    base.remove("template");
                    base.remove("template_version");
                    base.insert("name".into(), Value::from(p.config.name.to_string()));
                    let diff = nexus_core::merge::merge_diff(&Value::Object(base), &Value::Object(fields));
                    fields = match diff {
                        Value::Object(map) => map,
                        _ => Map::new(),
                    };
                    fields.insert("name".into(), Value::from(p.config.name.to_string()));
                    fields.insert("template".into(), template);
                    // A copy of an older version says so (plan then names the newer one).
                    if let Some(v) = version.filter(|v| v.as_u64() != Some(u64::from(entry.version))) {
                        fields.insert("template_version".into(), v);
                    }
                }
                None => {
                    let _ = writeln!(
                        body,
                        "  # {}: copied from template {template}, which this build's catalog does not hold",
                        p.config.name
                    );
                }
            }
        }
        let mut placeholder = None;
        if p.client_secret_set {
            // `a-b` and `a.b` would share a variable: number the later one.
            let base = secret_variable(p.config.name.as_str());
            let mut var = base.clone();
            let mut n = 2;
            while !used.insert(var.clone()) {
                var = format!("{base}_{n}");
                n += 1;
            }
            variables.push((var.clone(), p.config.name.to_string()));
            placeholder = Some(format!("${{{var}}}"));
        }
        let mut first = true;
        for field in FIELDS {
            let line_start = if first { "  - " } else { "    " };
            if field == "client_secret" {
                if let Some(ph) = &placeholder {
                    let _ = writeln!(body, "{line_start}client_secret: {}", scalar_text(ph));
                    first = false;
                }
                continue;
            }
            let Some(value) = fields.get(field) else { continue };
            body.push_str(line_start);
            body.push_str(field);
            body.push(':');
            write_value(&mut body, value, 6);
            first = false;
        }
    }
    let mut text = String::new();
    let _ = writeln!(text, "# Nexus providers exported from {source}.");
    let _ = writeln!(text, "# Review and commit; `nexus providers plan` shows any drift from the live server.");
    if !variables.is_empty() {
        text.push_str("# Secrets are not exported. Set these variables to the live client secrets:\n");
        for (var, name) in &variables {
            let _ = writeln!(text, "#   {var}  ({name})");
        }
    }
    if body.is_empty() {
        text.push_str("providers: []\n");
    } else {
        text.push_str("providers:\n");
        text.push_str(&body);
    }
    Exported { text, variables }
}

fn is_empty_collection(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Writes the rest of a `key:` line and, for collections, the block below it.
fn write_value(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, indent);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(out, items, indent);
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
}

fn write_map(out: &mut String, map: &Map<String, Value>, indent: usize) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&key_text(key));
        out.push(':');
        write_value(out, value, indent + 2);
    }
}

fn write_seq(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first entry goes on the dash's line, the rest align with it.
                let mut block = String::new();
                write_map(&mut block, map, indent + 2);
                out.push(' ');
                out.push_str(&block[indent + 2..]);
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_seq(out, inner, indent + 2);
            }
            scalar => {
                out.push(' ');
                out.push_str(&inline(scalar));
                out.push('\n');
            }
        }
    }
}

/// A scalar or an empty collection on one line; strings `$`-escaped for `${VAR}` expansion.
fn inline(v: &Value) -> String {
    match v {
        Value::String(s) => scalar_text(&env::escape(s)),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
        other => other.to_string(), // null, booleans and numbers read back as themselves
    }
}

/// Keys are not expanded, so only quoting applies.
fn key_text(key: &str) -> String {
    scalar_text(key)
}

/// `s` plain when that reads back as the same string, else double-quoted
/// (JSON escapes are valid YAML double-quoted escapes).
fn scalar_text(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
    }
}

/// Words that YAML 1.1 tools (still common: PyYAML, yamllint) read as booleans.
const YAML_1_1_BOOLEANS: [&str; 8] = ["y", "n", "yes", "no", "on", "off", "true", "false"];

fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return false };
    if YAML_1_1_BOOLEANS.iter().any(|b| s.eq_ignore_ascii_case(b)) {
        return false;
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-./:@+$(){}=?&%,~ ".contains(c);
    (first.is_ascii_alphanumeric() || "_/$.".contains(first))
        && s.chars().all(allowed)
        && !s.ends_with([' ', ':'])
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.contains("  ")
        && reads_back_as_string(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;
    use crate::plan::Plan;
    use nexus_core::secret::fingerprint;
    use nexus_core::{ProviderConfig, ProviderInput};
    use serde_json::json;

    fn remote(id: &str, body: Value, secret: Option<&str>) -> RemoteProvider {
        let config: ProviderConfig = ProviderInput::from_json(body).unwrap().validate(true).unwrap().config;
        RemoteProvider {
            id: id.into(),
            client_secret_set: secret.is_some(),
            client_secret_fingerprint: secret.map(|s| fingerprint(config.name.as_str(), s)),
            config,
            discovery: None,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    fn tricky_server() -> Vec<RemoteProvider> {
        vec![
            remote(
                "1",
                json!({"name": "google-workspace", "auth_type": "oauth2", "client_id": "12345",
                    "issuer": "https://accounts.google.com", "enable_discovery": true,
                    "scopes": ["openid", "email"], "description": "Costs $5: really # not a comment",
                    "category": "yes",
                    "params": {"authorization_params": {"access_type": "offline", "prompt": "consent"},
                               "token_params": {"n": 1, "f": 1.5, "b": true}, "skip_scope_on_auth": false}}),
                Some("live-google-secret"),
            ),
            remote(
                "2",
                json!({"name": "jira-basic", "auth_type": "basic_auth", "params": {"credential_schema": {
                    "type": "object", "required": ["username", "password"],
                    "properties": {"username": {"type": "string", "title": "User name"},
                                   "password": {"type": "string", "title": "Pass: word", "format": "password"}},
                    "allOf": [{"required": ["username"]}, {"anyOf": [{"type": "object"}]}], "examples": [[], "-", "", " x", "'q'", "a\nb", "null", "0x1F", "${HOME}"]}}}),
                None,
            ),
            remote(
                "3",
                json!({"name": "1password", "auth_type": "oauth2", "client_id": "c",
                "auth_url": "https://a.example/a", "token_url": "https://a.example/t"}),
                Some("one-secret"),
            ),
        ]
    }

    #[test]
    fn secret_variables_are_upper_snake_case() {
        assert_eq!(secret_variable("github"), "GITHUB_CLIENT_SECRET");
        assert_eq!(secret_variable("google-workspace"), "GOOGLE_WORKSPACE_CLIENT_SECRET");
        assert_eq!(secret_variable("a.b_c"), "A_B_C_CLIENT_SECRET");
        assert_eq!(secret_variable("1password"), "_1PASSWORD_CLIENT_SECRET");
        assert!(env::is_var_name(&secret_variable("9.9")));
    }

    #[test]
    fn an_export_plans_clean_against_the_same_server() {
        let server = tricky_server();
        let exported = export(&server, "http://127.0.0.1:8080/");
        assert_eq!(
            exported.variables,
            [
                ("GOOGLE_WORKSPACE_CLIENT_SECRET".to_owned(), "google-workspace".to_owned()),
                ("_1PASSWORD_CLIENT_SECRET".to_owned(), "1password".to_owned())
            ]
        );
        assert!(exported.text.contains("client_secret: ${GOOGLE_WORKSPACE_CLIENT_SECRET}\n"), "{}", exported.text);
        assert!(exported.text.contains("description: \"Costs $$5: really # not a comment\""), "{}", exported.text);
        assert!(!exported.text.contains("enable_discovery: false"));
        assert!(exported.text.contains("    category: \"yes\"\n"), "quoted for YAML 1.1 readers too");
        let env = |name: &str| match name {
            "GOOGLE_WORKSPACE_CLIENT_SECRET" => Some("live-google-secret".to_owned()),
            "_1PASSWORD_CLIENT_SECRET" => Some("one-secret".to_owned()),
            _ => None,
        };
        let manifest = Manifest::parse(&exported.text, &env).unwrap_or_else(|e| panic!("{e}\n{}", exported.text));
        let plan = Plan::compute(&manifest, &server, true);
        assert!(plan.changes.is_empty(), "{:?}\n{}", plan.changes, exported.text);
        // With another secret in the variable, the drift shows.
        let other = |name: &str| Some(format!("{name}-rotated"));
        let manifest = Manifest::parse(&exported.text, &other).unwrap();
        assert_eq!(Plan::compute(&manifest, &server, true).count(crate::plan::Action::Update), 2);
    }

    /// A copy of a catalog template as the server stores one.
    fn copy(id: &str, template: &str, overrides: Value, secret: Option<&str>) -> RemoteProvider {
        let entry = nexus_catalog::get(template).unwrap();
        remote(id, nexus_catalog::provider_body(entry, overrides.as_object().cloned().unwrap()), secret)
    }

    #[test]
    fn a_template_copy_exports_as_its_template_and_what_differs() {
        let server = vec![
            copy(
                "1",
                "zendesk",
                json!({"name": "zendesk-eu", "client_id": "zd", "scopes": ["read"], "user_info_endpoint": null,
                       "params": {"allowed_hosts": ["*.zendesk.com", "*.zendesk.eu"]}}),
                Some("zd-secret"),
            ),
            copy("2", "stripe", json!({}), None),
        ];
        let exported = export(&server, "x");
        let text = &exported.text;
        assert!(text.contains("  - name: zendesk-eu\n    template: zendesk\n"), "{text}");
        assert!(text.contains("  - name: stripe\n    template: stripe\n"), "{text}");
        assert!(text.contains("    user_info_endpoint: null\n"), "a removed template field: {text}");
        assert!(!text.contains("auth_url") && !text.contains("credential_schema"), "only what differs: {text}");
        assert!(!text.contains("template_version"), "{text}");
        let env = |name: &str| (name == "ZENDESK_EU_CLIENT_SECRET").then(|| "zd-secret".to_owned());
        let manifest = Manifest::parse(text, &env).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let plan = Plan::compute(&manifest, &server, true);
        assert!(plan.changes.is_empty(), "{:?}\n{text}", plan.changes);
    }

    #[test]
    fn colliding_variables_are_numbered() {
        let body = |name: &str| {
            json!({"name": name, "auth_type": "oauth2", "client_id": "c",
                "auth_url": "https://a.example/a", "token_url": "https://a.example/t"})
        };
        let server = vec![remote("1", body("a-b"), Some("s1")), remote("2", body("a.b"), Some("s2"))];
        let vars: Vec<String> = export(&server, "x").variables.into_iter().map(|(v, _)| v).collect();
        assert_eq!(vars, ["A_B_CLIENT_SECRET", "A_B_CLIENT_SECRET_2"]);
    }

    #[test]
    fn an_empty_server_exports_an_empty_list() {
        let e = export(&[], "x");
        assert!(e.text.ends_with("providers: []\n"));
        assert!(Manifest::parse(&e.text, &|_| None).unwrap().providers.is_empty());
    }
}
