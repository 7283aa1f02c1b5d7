//! The manifest: a `providers:` list with the fields of SPEC section 3, read
//! from YAML into the normalized [`ProviderConfig`] the server itself stores.
//!
//! Each entry is typed here (unknown fields, wrong types, duplicate names),
//! its strings are `${VAR}`-expanded, and then it goes through the very
//! validation the server runs on `POST /v1/providers`
//! ([`ProviderInput::validate`]), so a manifest that parses will be accepted
//! (discovery aside) and the plan compares like with like. Every problem
//! carries the line it is about.

use crate::env::{self, ExpandError};
use crate::yaml::{self, Entry, Node, Value};
use nexus_core::provider::SecretChange;
use nexus_core::secret::fingerprint;
use nexus_core::{ProviderConfig, ProviderInput, SecretString};
use serde_json::{Map, Value as Json};
use std::collections::HashMap;
use std::fmt;

/// One thing wrong with a manifest, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the manifest, when the problem has one.
    pub line: Option<usize>,
    pub message: String,
}

impl Problem {
    pub fn at(line: usize, message: impl Into<String>) -> Problem {
        Problem { line: Some(line), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Every problem found in a manifest (never empty), in line order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError(pub Vec<Problem>);

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(Problem::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl From<Problem> for ManifestError {
    fn from(p: Problem) -> Self {
        ManifestError(vec![p])
    }
}

/// A parsed, expanded and validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// In file order; names are unique.
    pub providers: Vec<DesiredProvider>,
}

/// One provider as the manifest wants it.
#[derive(Debug, Clone)]
pub struct DesiredProvider {
    /// Line of the list entry.
    pub line: usize,
    /// Normalized exactly as the server normalizes (alias `header` → `api_key`,
    /// trimmed strings, empty optional fields dropped, defaults filled in).
    pub config: ProviderConfig,
    /// The expanded secret. `Debug` prints `[redacted]`.
    pub client_secret: Option<SecretString>,
}

impl DesiredProvider {
    pub fn name(&self) -> &str {
        self.config.name.as_str()
    }

    /// The fingerprint the server would show for this secret
    /// (`client_secret_fingerprint`), computed locally.
    pub fn secret_fingerprint(&self) -> Option<String> {
        self.client_secret.as_ref().map(|s| fingerprint(self.name(), s.expose()))
    }
}

/// How a top-level provider field must be written.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int,
    Bool,
    TextList,
    Object,
}

/// The fields of SPEC section 3, in the order the exporter writes them.
pub const FIELDS: [&str; 21] = [
    "name",
    "template",
    "template_version",
    "auth_type",
    "display_name",
    "description",
    "category",
    "client_id",
    "client_secret",
    "issuer",
    "enable_discovery",
    "auth_url",
    "token_url",
    "refresh_url",
    "revocation_url",
    "api_base_url",
    "user_info_endpoint",
    "jwks_uri",
    "auth_header",
    "scopes",
    "params",
];

fn kind_of(field: &str) -> Option<Kind> {
    Some(match field {
        "enable_discovery" => Kind::Bool,
        "template_version" => Kind::Int,
        "scopes" => Kind::TextList,
        "params" => Kind::Object,
        f if FIELDS.contains(&f) => Kind::Text,
        _ => return None,
    })
}

impl Manifest {
    /// Reads a manifest. `lookup` resolves `${VAR}` (normally `std::env::var`).
    ///
    /// # Errors
    /// Every problem found, each with its line: YAML syntax, unknown or
    /// mistyped fields, unset variables, duplicate names, and whatever the
    /// server's own validation would refuse.
    pub fn parse(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Manifest, ManifestError> {
        let doc = yaml::parse(text)?;
        let Value::Map(top) = doc.value else {
            return Err(Problem::at(
                doc.line,
                format!("expected a mapping with `providers:`, found {}", doc.value.kind()),
            )
            .into());
        };
        let mut problems = Vec::new();
        let mut list = None;
        for entry in top {
            if entry.key == "providers" {
                list = Some(entry);
            } else {
                problems.push(Problem::at(
                    entry.key_line,
                    format!("unknown top-level field '{}' (expected `providers:`)", entry.key),
                ));
            }
        }
        let Some(list) = list else {
            problems.push(Problem::at(1, "missing `providers:` list"));
            return Err(ManifestError(problems));
        };
        let items = match list.value.value {
            Value::Seq(items) => items,
            other => {
                problems
                    .push(Problem::at(list.key_line, format!("providers: expected a list, found {}", other.kind())));
                return Err(ManifestError(problems));
            }
        };

        let mut providers: Vec<DesiredProvider> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (index, item) in items.into_iter().enumerate() {
            match provider(index, item, lookup) {
                Ok((p, name_line)) => {
                    if let Some(first) = seen.get(p.name()) {
                        problems.push(Problem::at(
                            name_line,
                            format!("duplicate provider name '{}' (first defined on line {first})", p.name()),
                        ));
                    } else {
                        seen.insert(p.name().to_owned(), name_line);
                        providers.push(p);
                    }
                }
                Err(mut ps) => problems.append(&mut ps),
            }
        }
        if problems.is_empty() {
            Ok(Manifest { providers })
        } else {
            problems.sort_by_key(|p| p.line);
            Err(ManifestError(problems))
        }
    }
}

/// Lines of the fields of one entry, by the dotted paths `nexus-core` uses in
/// its errors (`auth_type`, `scopes[1]`, `params.algo`).
#[derive(Default)]
struct Positions(HashMap<String, usize>);

impl Positions {
    /// The line of `path`, or of its nearest recorded parent.
    fn find(&self, mut path: &str) -> Option<usize> {
        loop {
            if let Some(line) = self.0.get(path) {
                return Some(*line);
            }
            path = &path[..path.rfind(['.', '['])?];
        }
    }
}

/// Reads one list entry: the provider and the line of its `name`.
fn provider(
    index: usize,
    item: Node,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(DesiredProvider, usize), Vec<Problem>> {
    let line = item.line;
    let Value::Map(entries) = item.value else {
        let what = item.value.kind();
        return Err(vec![Problem::at(line, format!("provider #{}: expected a mapping, found {what}", index + 1))]);
    };
    let label = match entries.iter().find(|e| e.key == "name").map(|e| &e.value.value) {
        Some(Value::Str(name)) if !name.contains('$') => format!("provider '{}'", name.trim()),
        _ => format!("provider #{}", index + 1),
    };
    let mut problems = Vec::new();
    let mut positions = Positions::default();
    let mut body = Map::new();
    let templated = entries.iter().any(|e| e.key == "template" && e.value.value != Value::Null);
    for Entry { key, key_line, value } in entries {
        positions.0.insert(key.clone(), key_line);
        let Some(kind) = kind_of(&key) else {
            problems.push(Problem::at(key_line, format!("{label}: unknown field '{key}'{}", suggestion(&key))));
            continue;
        };
        if value.value == Value::Null {
            // `description:` with nothing after it: not set, or, over a
            // template, removed from it.
            if templated {
                body.insert(key, Json::Null);
            }
            continue;
        }
        match typed(&key, kind, value, templated, &mut positions, lookup) {
            Ok(json) => {
                body.insert(key, json);
            }
            Err(p) => problems.push(Problem { message: format!("{label}: {}", p.message), ..p }),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if let Some(template) = body.remove("template") {
        // A copy of a catalog template with this entry's fields over it,
        // exactly as the server makes one (SPEC 12).
        let name = template.as_str().unwrap_or_default();
        let Some(entry) = nexus_catalog::get(name) else {
            let at = positions.find("template").unwrap_or(line);
            return Err(vec![Problem::at(
                at,
                format!("{label}: template: '{name}' is not in the catalog (`nexus providers catalog list`)"),
            )]);
        };
        // A version the entry names (as `export` writes one older than this
        // catalog's) is kept: the provider says which version it follows.
        let version = body.remove("template_version").filter(|v| !v.is_null());
        body = match nexus_catalog::provider_body(entry, body) {
            Json::Object(map) => map,
            _ => Map::new(),
        };
        if let Some(v) = version {
            body.insert("template_version".into(), v);
        }
    }
    for required in ["name", "auth_type"] {
        if !body.contains_key(required) {
            problems.push(Problem::at(line, format!("{label}: missing field '{required}'")));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let at = |field: &str| positions.find(field).unwrap_or(line);
    let validated =
        ProviderInput::from_json(Json::Object(body)).and_then(|input| input.validate(false)).map_err(|errs| {
            errs.0
                .iter()
                .map(|e| Problem::at(at(&e.field), format!("{label}: {}: {}", e.field, e.message)))
                .collect::<Vec<_>>()
        })?;
    let client_secret = match validated.secret {
        SecretChange::Set(secret) => Some(secret),
        SecretChange::Keep => None,
    };
    Ok((DesiredProvider { line, config: validated.config, client_secret }, at("name")))
}

/// Checks one top-level field's type and turns it into JSON, expanding strings.
fn typed(
    field: &str,
    kind: Kind,
    node: Node,
    templated: bool,
    positions: &mut Positions,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Json, Problem> {
    let line = node.line;
    let wrong = |expected: &str, found: &Value| {
        let hint = if expected == "a string" && matches!(found, Value::Int(_) | Value::Float(_) | Value::Bool(_)) {
            " (quote it)"
        } else {
            ""
        };
        Problem::at(line, format!("{field}: expected {expected}, found {}{hint}", found.kind()))
    };
    match (kind, node.value) {
        (Kind::Text, Value::Str(s)) => expand(field, &s, line, lookup).map(Json::String),
        (Kind::Bool, Value::Bool(b)) => Ok(Json::Bool(b)),
        (Kind::Int, Value::Int(i)) => Ok(Json::from(i)),
        (Kind::TextList, Value::Seq(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let path = format!("{field}[{i}]");
                positions.0.insert(path.clone(), item.line);
                match item.value {
                    Value::Str(s) => out.push(Json::String(expand(&path, &s, item.line, lookup)?)),
                    other => {
                        return Err(Problem::at(
                            item.line,
                            format!("{path}: expected a string, found {}", other.kind()),
                        ))
                    }
                }
            }
            Ok(Json::Array(out))
        }
        (Kind::Object, value @ Value::Map(_)) => to_json(field, Node { line, value }, templated, positions, lookup),
        (Kind::Text, other) => Err(wrong("a string", &other)),
        (Kind::Bool, other) => Err(wrong("true or false", &other)),
        (Kind::Int, other) => Err(wrong("a whole number", &other)),
        (Kind::TextList, other) => Err(wrong("a list of strings", &other)),
        (Kind::Object, other) => Err(wrong("a mapping", &other)),
    }
}

/// Free-form JSON (`params`), strings expanded, key lines recorded.
fn to_json(
    path: &str,
    node: Node,
    templated: bool,
    positions: &mut Positions,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Json, Problem> {
    Ok(match node.value {
        // Over a template, null removes the template's key (RFC 7396).
        Value::Null if templated => Json::Null,
        Value::Null => {
            return Err(Problem::at(
                node.line,
                format!("{path}: null is not allowed here (a PATCH treats null as \"remove\"); omit the key instead"),
            ))
        }
        Value::Bool(b) => Json::Bool(b),
        Value::Int(i) => Json::from(i),
        Value::Float(f) => serde_json::Number::from_f64(f).map(Json::Number).unwrap_or(Json::Null),
        Value::Str(s) => Json::String(expand(path, &s, node.line, lookup)?),
        Value::Seq(items) => Json::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| to_json(&format!("{path}[{i}]"), item, false, positions, lookup))
                .collect::<Result<_, _>>()?,
        ),
        Value::Map(entries) => {
            let mut map = Map::new();
            for Entry { key, key_line, value } in entries {
                let child = format!("{path}.{key}");
                positions.0.insert(child.clone(), key_line);
                map.insert(key, to_json(&child, value, templated, positions, lookup)?);
            }
            Json::Object(map)
        }
    })
}

fn expand(path: &str, raw: &str, line: usize, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, Problem> {
    env::expand(raw, lookup).map_err(|e: ExpandError| Problem::at(line, format!("{path}: {e}")))
}

/// ` (did you mean 'client_secret'?)` for a near-miss of a known field.
fn suggestion(unknown: &str) -> String {
    let best = FIELDS.iter().map(|f| (edit_distance(unknown, f), *f)).min();
    match best {
        Some((d, f)) if d <= 2 => format!(" (did you mean '{f}'?)"),
        _ => format!(" (known fields: {})", FIELDS.join(", ")),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb { prev } else { 1 + prev.min(row[j]).min(cur) };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_core::AuthType;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "GITHUB_CLIENT_SECRET" => Some("gh-secret-value".into()),
            "REGION" => Some("eu-west-1".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, &env)
    }

    fn problem(text: &str) -> Problem {
        let e = parse(text).unwrap_err();
        assert_eq!(e.0.len(), 1, "one problem expected: {e}");
        e.0.into_iter().next().unwrap()
    }

    const GOOD: &str = "\
providers:
  - name: github
    auth_type: oauth2
    client_id: abc
    client_secret: ${GITHUB_CLIENT_SECRET}
    auth_url: https://github.com/login/oauth/authorize
    token_url: https://github.com/login/oauth/access_token
    scopes: [repo, read:user]
  - name: bedrock
    auth_type: aws_sigv4
    description: \"Costs $$5\"
    params:
      service: bedrock
      region: ${REGION}
      credential_schema:
        type: object
        required: [access_key]
  - name: airtable
    auth_type: header
    category:
    params:
      credential_schema: {type: object}
";

    #[test]
    fn a_good_manifest_is_expanded_and_normalized() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.providers.len(), 3);
        let gh = &m.providers[0];
        assert_eq!((gh.name(), gh.line), ("github", 2));
        assert_eq!(gh.client_secret.as_ref().unwrap().expose(), "gh-secret-value");
        assert_eq!(gh.secret_fingerprint(), Some(fingerprint("github", "gh-secret-value")));
        assert_eq!(gh.config.scopes, ["repo", "read:user"]);
        assert!(!gh.config.enable_discovery);
        let bedrock = &m.providers[1];
        assert_eq!(bedrock.config.params["region"], json!("eu-west-1"));
        assert_eq!(bedrock.config.description.as_deref(), Some("Costs $5"));
        assert_eq!(bedrock.client_secret, None);
        let airtable = &m.providers[2];
        assert_eq!(airtable.config.auth_type, AuthType::ApiKey, "alias normalized");
        assert_eq!(airtable.config.category, None);
        assert!(!format!("{m:?}").contains("gh-secret-value"), "Debug never shows a secret");
    }

    #[test]
    fn a_missing_variable_names_it_and_its_line() {
        let p = problem(&GOOD.replace("${REGION}", "${NO_SUCH_REGION}"));
        assert_eq!(p.line, Some(14));
        assert!(p.message.contains("NO_SUCH_REGION is not set"), "{p}");
        assert!(p.message.contains("provider 'bedrock'") && p.message.contains("params.region"), "{p}");
    }

    #[test]
    fn unknown_fields_suggest_the_right_one() {
        let p = problem(&GOOD.replace("    client_secret:", "    client_secrt:"));
        assert_eq!(p.line, Some(5));
        assert!(p.message.contains("unknown field 'client_secrt'") && p.message.contains("'client_secret'"), "{p}");
        let p = problem("providers: []\nversion: 2\n");
        assert_eq!(p.line, Some(2));
    }

    #[test]
    fn duplicate_names_point_at_the_second_and_the_first() {
        let text = format!("{GOOD}  - name: github\n    auth_type: basic_auth\n    params:\n      credential_schema: {{type: object}}\n");
        let p = problem(&text);
        assert_eq!(p.line, Some(23));
        assert!(p.message.contains("duplicate provider name 'github'") && p.message.contains("line 2"), "{p}");
    }

    #[test]
    fn wrong_types_are_reported_without_the_value() {
        let p = problem(&GOOD.replace("client_id: abc", "client_id: 12345"));
        assert_eq!(p.line, Some(4));
        assert!(p.message.contains("client_id: expected a string, found an integer"), "{p}");
        assert!(!p.message.contains("12345"));
        let p = problem(&GOOD.replace("scopes: [repo, read:user]", "scopes: repo"));
        assert_eq!(p.line, Some(8));
        assert!(p.message.contains("scopes: expected a list of strings"), "{p}");
        let p = problem(&GOOD.replace("scopes: [repo, read:user]", "scopes: [repo, 7]"));
        assert!(p.message.contains("scopes[1]: expected a string"), "{p}");
        let p = problem(&GOOD.replace("client_secret: ${GITHUB_CLIENT_SECRET}", "client_secret: [a]"));
        assert_eq!(p.line, Some(5));
        let p = problem(&GOOD.replace("category:", "enable_discovery: yes"));
        assert!(p.message.contains("enable_discovery: expected true or false, found a string"), "{p}");
        let p = problem("providers:\n  - just-a-name\n");
        assert_eq!(p.line, Some(2));
        let p = problem("providers: {}\n");
        assert!(p.message.contains("expected a list"), "{p}");
    }

    #[test]
    fn server_rules_are_checked_locally_with_the_line_of_the_field() {
        let p = problem(&GOOD.replace("auth_type: oauth2", "auth_type: oauth3"));
        assert_eq!(p.line, Some(3));
        assert!(p.message.contains("auth_type: 'oauth3' is not one of"), "{p}");
        let p = problem(&GOOD.replace("      service: bedrock\n", "      service: bedrock\n      algo: md5\n"));
        assert_eq!(p.line, Some(14));
        assert!(p.message.contains("params.algo"), "{p}");
        // A required field that is absent points at the provider.
        let p = problem(&GOOD.replace("    client_id: abc\n", ""));
        assert_eq!(p.line, Some(2));
        assert!(p.message.contains("client_id: is required for oauth2"), "{p}");
        let p = problem(&GOOD.replace("    auth_type: aws_sigv4\n", ""));
        assert!(p.message.contains("provider 'bedrock': missing field 'auth_type'"), "{p}");
        let p = problem(&GOOD.replace("      region: ${REGION}\n", "      region: ~\n"));
        assert!(p.message.contains("params.region: null is not allowed"), "{p}");
    }

    #[test]
    fn several_problems_are_all_reported_in_line_order() {
        let text = GOOD.replace("client_id: abc", "client_id: 1").replace("${REGION}", "${NOPE}");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.0.iter().map(|p| p.line).collect::<Vec<_>>(), [Some(4), Some(14)]);
        assert!(e.to_string().starts_with("line 4: "));
    }

    #[test]
    fn the_example_manifest_holds_the_seven_seed_providers() {
        let text = include_str!("../../../examples/nexus-providers.yaml");
        let m = Manifest::parse(text, &|name| name.ends_with("_CLIENT_SECRET").then(|| format!("{name}-value")))
            .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = m.providers.iter().map(DesiredProvider::name).collect();
        assert_eq!(
            names,
            ["google-workspace", "github", "airtable", "jira-basic", "bedrock-us-east", "weatherapi", "webhook-hmac"]
        );
        let google = &m.providers[0];
        assert!(google.config.enable_discovery);
        assert_eq!(google.client_secret.as_ref().unwrap().expose(), "GOOGLE_WORKSPACE_CLIENT_SECRET-value");
        // Without the secrets the example is refused, naming the first variable and its line.
        let e = Manifest::parse(text, &|_| None).unwrap_err();
        assert!(e.0[0].message.contains("GOOGLE_WORKSPACE_CLIENT_SECRET is not set"), "{e}");
    }

    #[test]
    fn an_empty_list_is_a_valid_manifest() {
        assert!(parse("providers: []\n").unwrap().providers.is_empty());
        assert!(problem("").message.contains("empty"));
        let e = parse("something: else\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 1: unknown top-level field 'something' (expected `providers:`)\nline 1: missing `providers:` list"
        );
    }
}
