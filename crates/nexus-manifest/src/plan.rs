//! The plan: what must change on the server so that it holds exactly the
//! manifest, and the requests that do it.
//!
//! Providers are matched by name. Every field is compared on the normalized
//! [`ProviderConfig`] (the same validation produced both sides), and the
//! client secret, which the API never reveals, through its fingerprint: the
//! manifest's secret is fingerprinted locally exactly as the server does
//! ([`nexus_core::secret::fingerprint`], salted with the name) and compared with
//! `client_secret_fingerprint`.
//!
//! An update is one `PATCH` with only the changed fields. A removed optional
//! field is sent as `null`; `params` is sent as the RFC 7396 merge patch that
//! turns the server's params into the manifest's (removed keys as `null`,
//! nested objects patched recursively), so the merged result equals the file.

use crate::client::RemoteProvider;
use crate::manifest::{DesiredProvider, Manifest};
use nexus_core::ProviderConfig;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;

/// What happens to one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// In the manifest, not on the server: `POST`.
    Create,
    /// On both, with differences: `PATCH` with the changed fields.
    Update,
    /// Only on the server, and `--prune` was given: `DELETE`.
    Delete,
    /// Only on the server, without `--prune`: reported, left alone.
    Orphan,
}

/// One changed field (or one changed key of `params`, as `params.<key>`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDiff {
    pub field: String,
    /// The server's value; absent when the field is not set there or is sensitive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// The manifest's value; absent when the field is removed or is sensitive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// True for `client_secret`: values are never shown.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
}

/// One step of a plan.
#[derive(Debug, Clone)]
pub struct Change {
    pub action: Action,
    pub name: String,
    /// The server's id (update, delete, orphan).
    pub id: Option<String>,
    /// Changed top-level fields, sorted (update only).
    pub fields: Vec<String>,
    /// What changed, field by field (update only).
    pub details: Vec<FieldDiff>,
    pub(crate) request: Option<Request>,
    /// What the server must show afterwards (create, update).
    pub(crate) expected: Option<Expected>,
}

/// The HTTP request that carries out a change.
#[derive(Debug, Clone)]
pub(crate) enum Request {
    Create(Body),
    Patch { id: String, body: Body },
    Delete { id: String },
}

/// A request body. It may hold the client secret, so `Debug` does not show it.
#[derive(Clone)]
pub(crate) struct Body(pub(crate) Value);

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[request body]")
    }
}

/// The state a create or update must leave on the server.
#[derive(Debug, Clone)]
pub(crate) struct Expected {
    pub(crate) config: ProviderConfig,
    pub(crate) fingerprint: Option<String>,
}

/// Every change, creates and updates in manifest order, then deletes and orphans in the server's order.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Providers copied from a catalog template the catalog now holds a
    /// newer version of (SPEC 12), by the server's order.
    pub newer_templates: Vec<NewerTemplate>,
}

/// A provider made from an older version of a catalog template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewerTemplate {
    pub name: String,
    pub template: String,
    /// The version the provider was copied from.
    pub from_version: u32,
    /// The catalog's version now.
    pub catalog_version: u32,
}

/// What the catalog (embedded in this build) holds newer than `remote`'s templates.
pub fn newer_templates(remote: &[RemoteProvider]) -> Vec<NewerTemplate> {
    newer_than(remote, |name| nexus_catalog::get(name).map(|e| e.version))
}

/// [`newer_templates`] against any catalog: `version` of a template name.
fn newer_than(remote: &[RemoteProvider], version: impl Fn(&str) -> Option<u32>) -> Vec<NewerTemplate> {
    remote
        .iter()
        .filter_map(|r| {
            let template = r.config.template.as_deref()?;
            let from_version = r.config.template_version?;
            let catalog_version = version(template)?;
            (catalog_version > from_version).then(|| NewerTemplate {
                name: r.config.name.to_string(),
                template: template.to_owned(),
                from_version,
                catalog_version,
            })
        })
        .collect()
}

impl Plan {
    /// Compares the manifest with the server's providers.
    pub fn compute(manifest: &Manifest, remote: &[RemoteProvider], prune: bool) -> Plan {
        let mut changes = Vec::new();
        for desired in &manifest.providers {
            match remote.iter().find(|r| r.config.name == desired.config.name) {
                None => changes.push(create(desired)),
                Some(current) => changes.extend(update(desired, current)),
            }
        }
        for current in remote {
            if manifest.providers.iter().any(|d| d.config.name == current.config.name) {
                continue;
            }
            let (action, request) = if prune {
                (Action::Delete, Some(Request::Delete { id: current.id.clone() }))
            } else {
                (Action::Orphan, None)
            };
            changes.push(Change {
                action,
                name: current.config.name.to_string(),
                id: Some(current.id.clone()),
                fields: Vec::new(),
                details: Vec::new(),
                request,
                expected: None,
            });
        }
        Plan { changes, newer_templates: newer_templates(remote) }
    }

    /// How many changes of this kind.
    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }

    /// True when applying would change the server (orphans alone change nothing).
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.action != Action::Orphan)
    }
}

fn create(desired: &DesiredProvider) -> Change {
    let mut body = desired.config.to_input_json();
    if let (Value::Object(map), Some(secret)) = (&mut body, &desired.client_secret) {
        map.insert("client_secret".into(), Value::String(secret.expose().to_owned()));
    }
    Change {
        action: Action::Create,
        name: desired.name().to_owned(),
        id: None,
        fields: Vec::new(),
        details: Vec::new(),
        request: Some(Request::Create(Body(body))),
        expected: Some(expected(desired)),
    }
}

fn expected(desired: &DesiredProvider) -> Expected {
    Expected { config: desired.config.clone(), fingerprint: desired.secret_fingerprint() }
}

fn update(desired: &DesiredProvider, current: &RemoteProvider) -> Option<Change> {
    let fields = drift(&desired.config, desired.secret_fingerprint().as_deref(), current);
    if fields.is_empty() {
        return None;
    }
    let before = object(current.config.to_input_json());
    let after = object(desired.config.to_input_json());
    let mut body = Map::new();
    let mut details = Vec::new();
    for field in &fields {
        match field.as_str() {
            "client_secret" => {
                let secret = desired.client_secret.as_ref().map(|s| Value::String(s.expose().to_owned()));
                body.insert(field.clone(), secret.unwrap_or(Value::Null));
                details.push(FieldDiff { field: field.clone(), before: None, after: None, sensitive: true });
            }
            "params" => {
                let old = before.get("params").cloned().unwrap_or_else(|| Value::Object(Map::new()));
                let new = after.get("params").cloned().unwrap_or_else(|| Value::Object(Map::new()));
                details.extend(param_details(&old, &new));
                body.insert(field.clone(), merge_diff(&old, &new));
            }
            _ => {
                body.insert(field.clone(), after.get(field).cloned().unwrap_or(Value::Null));
                details.push(FieldDiff {
                    field: field.clone(),
                    before: before.get(field).cloned(),
                    after: after.get(field).cloned(),
                    sensitive: false,
                });
            }
        }
    }
    Some(Change {
        action: Action::Update,
        name: desired.name().to_owned(),
        id: Some(current.id.clone()),
        fields,
        details,
        request: Some(Request::Patch { id: current.id.clone(), body: Body(Value::Object(body)) }),
        expected: Some(expected(desired)),
    })
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The top-level fields in which the server's provider differs from `desired`
/// (whose secret has fingerprint `desired_fp`), sorted. Empty when they match.
pub fn drift(desired: &ProviderConfig, desired_fp: Option<&str>, current: &RemoteProvider) -> Vec<String> {
    let mut fields = current.config.changed_fields(desired);
    let secret_differs = match (desired_fp, current.client_secret_set, current.client_secret_fingerprint.as_deref()) {
        (None, set, _) => set,
        (Some(want), true, Some(have)) => want != have,
        (Some(_), _, _) => true,
    };
    if secret_differs {
        fields.push("client_secret".into());
        fields.sort();
    }
    fields
}

/// The RFC 7396 merge patch that turns `old` into `new` (`new` holds no nulls:
/// the manifest refuses them, since a merge patch cannot write one).
pub fn merge_diff(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = Map::new();
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            for (key, value) in new {
                match old.get(key) {
                    Some(prev) if prev == value => {}
                    Some(prev @ Value::Object(_)) if value.is_object() => {
                        patch.insert(key.clone(), merge_diff(prev, value));
                    }
                    _ => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

fn param_details(old: &Value, new: &Value) -> Vec<FieldDiff> {
    let (Value::Object(old), Value::Object(new)) = (old, new) else { return Vec::new() };
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| FieldDiff {
            field: format!("params.{k}"),
            before: old.get(k).cloned(),
            after: new.get(k).cloned(),
            sensitive: false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_core::merge::merge_patch;
    use nexus_core::secret::fingerprint;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        (name == "GH_SECRET").then(|| "gh-secret-1".to_owned())
    }

    const MANIFEST: &str = "\
providers:
  - name: github
    auth_type: oauth2
    client_id: abc
    client_secret: ${GH_SECRET}
    auth_url: https://github.com/login/oauth/authorize
    token_url: https://github.com/login/oauth/access_token
    scopes: [repo, read:user]
  - name: weatherapi
    auth_type: query_param
    params:
      param_name: api_token
      credential_schema: {type: object, required: [api_key]}
";

    fn manifest(text: &str) -> Manifest {
        Manifest::parse(text, &env).unwrap()
    }

    /// What the server would show after registering the manifest as it is.
    fn live(m: &Manifest) -> Vec<RemoteProvider> {
        m.providers
            .iter()
            .enumerate()
            .map(|(i, p)| RemoteProvider {
                id: format!("id-{i}"),
                config: p.config.clone(),
                client_secret_set: p.client_secret.is_some(),
                client_secret_fingerprint: p.secret_fingerprint(),
                discovery: None,
                created_at: String::new(),
                updated_at: String::new(),
            })
            .collect()
    }

    fn summary(plan: &Plan) -> Vec<(Action, String, Vec<String>)> {
        plan.changes.iter().map(|c| (c.action, c.name.clone(), c.fields.clone())).collect()
    }

    fn patch_body(c: &Change) -> Value {
        match &c.request {
            Some(Request::Patch { body, .. }) => body.0.clone(),
            other => panic!("not a patch: {other:?}"),
        }
    }

    #[test]
    fn everything_is_created_on_an_empty_server() {
        let m = manifest(MANIFEST);
        let plan = Plan::compute(&m, &[], false);
        assert_eq!(
            summary(&plan),
            [(Action::Create, "github".into(), vec![]), (Action::Create, "weatherapi".into(), vec![])]
        );
        assert!(plan.has_changes());
        let Some(Request::Create(body)) = &plan.changes[0].request else { panic!() };
        assert_eq!(body.0["client_secret"], "gh-secret-1");
        assert!(!format!("{plan:?}").contains("gh-secret-1"), "Debug of a plan hides the secret");
    }

    #[test]
    fn a_matching_server_has_no_changes() {
        let m = manifest(MANIFEST);
        let plan = Plan::compute(&m, &live(&m), true);
        assert!(plan.changes.is_empty());
        assert!(!plan.has_changes());
    }

    #[test]
    fn a_changed_secret_is_seen_through_the_fingerprint_only() {
        let m = manifest(MANIFEST);
        let mut server = live(&m);
        server[0].client_secret_fingerprint = Some(fingerprint("github", "an-older-secret"));
        let plan = Plan::compute(&m, &server, false);
        assert_eq!(summary(&plan), [(Action::Update, "github".into(), vec!["client_secret".into()])]);
        assert_eq!(patch_body(&plan.changes[0]), json!({"client_secret": "gh-secret-1"}));
        assert!(plan.changes[0].details[0].sensitive);
        // The same secret registered for another name has another fingerprint.
        server[0].client_secret_fingerprint = Some(fingerprint("gitlab", "gh-secret-1"));
        assert_eq!(Plan::compute(&m, &server, false).count(Action::Update), 1);
        // A secret on the server that the manifest does not have is removed.
        let mut server = live(&m);
        server[1].client_secret_set = true;
        server[1].client_secret_fingerprint = Some(fingerprint("weatherapi", "x"));
        let plan = Plan::compute(&m, &server, false);
        assert_eq!(patch_body(&plan.changes[0]), json!({"client_secret": null}));
    }

    #[test]
    fn updates_patch_only_the_changed_fields_and_params_as_a_merge_patch() {
        let m = manifest(MANIFEST);
        let mut server = live(&m);
        server[0].config.scopes = vec!["repo".into()];
        server[0].config.description = Some("old text".into());
        server[1].config.params.insert("param_name".into(), json!("token"));
        server[1].config.params.insert("stale".into(), json!({"x": 1}));
        let plan = Plan::compute(&m, &server, false);
        assert_eq!(
            summary(&plan),
            [
                (Action::Update, "github".into(), vec!["description".into(), "scopes".into()]),
                (Action::Update, "weatherapi".into(), vec!["params".into()]),
            ]
        );
        assert_eq!(patch_body(&plan.changes[0]), json!({"description": null, "scopes": ["repo", "read:user"]}));
        assert_eq!(patch_body(&plan.changes[1]), json!({"params": {"param_name": "api_token", "stale": null}}));
        let details: Vec<&str> = plan.changes[1].details.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(details, ["params.param_name", "params.stale"]);
        assert_eq!(plan.changes[0].details[0].before, Some(json!("old text")));
        assert_eq!(plan.changes[0].details[0].after, None);
    }

    #[test]
    fn patching_the_server_with_the_plan_gives_the_manifest() {
        // What the server does with a PATCH: merge the body into its config, validate.
        let m = manifest(MANIFEST);
        let mut server = live(&m);
        server[0].config.auth_header = Some("client_secret_basic".into());
        server[0].config.client_id = Some("old".into());
        server[1].config.params.insert("credential_schema".into(), json!({"type": "object", "title": "x"}));
        server[1].config.params.insert("extra".into(), json!(true));
        let plan = Plan::compute(&m, &server, false);
        for (change, current) in plan.changes.iter().zip(&server) {
            let mut merged = current.config.to_input_json();
            merge_patch(&mut merged, &patch_body(change));
            assert_eq!(merged, change.expected.as_ref().unwrap().config.to_input_json(), "{}", change.name);
        }
    }

    #[test]
    fn providers_only_on_the_server_are_orphans_or_deleted_with_prune() {
        let m = manifest(MANIFEST);
        let mut server = live(&m);
        let mut extra = server[1].clone();
        extra.id = "id-x".into();
        extra.config.name = nexus_core::ProviderName::parse("legacy").unwrap();
        server.push(extra);
        let plan = Plan::compute(&m, &server, false);
        assert_eq!(summary(&plan), [(Action::Orphan, "legacy".into(), vec![])]);
        assert!(!plan.has_changes(), "an orphan alone changes nothing");
        let plan = Plan::compute(&m, &server, true);
        assert_eq!(summary(&plan), [(Action::Delete, "legacy".into(), vec![])]);
        assert!(matches!(&plan.changes[0].request, Some(Request::Delete { id }) if id == "id-x"));
    }

    #[test]
    fn merge_diff_round_trips() {
        let cases = [
            (json!({}), json!({"a": 1})),
            (json!({"a": 1, "b": 2}), json!({"a": 1})),
            (json!({"a": {"x": 1, "y": 2}}), json!({"a": {"x": 1, "z": [1]}})),
            (json!({"a": {"x": 1}}), json!({"a": "flat"})),
            (json!({"a": "flat"}), json!({"a": {"x": 1}})),
            (json!({"a": [1, 2]}), json!({"a": [2]})),
            (json!({"a": null}), json!({})),
        ];
        for (old, new) in cases {
            let mut merged = old.clone();
            merge_patch(&mut merged, &merge_diff(&old, &new));
            assert_eq!(merged, new, "{old} -> {new}");
        }
        assert_eq!(merge_diff(&json!({"a": {"x": 1, "y": 2}}), &json!({"a": {"x": 1}})), json!({"a": {"y": null}}));
    }

    #[test]
    fn a_template_entry_is_the_template_with_its_fields_over_it() {
        let text = "\
providers:
  - template: zendesk
    client_id: zd
    client_secret: ${GH_SECRET}
    scopes: [read]
    user_info_endpoint: ~
    params:
      allowed_hosts: [\"*.zendesk.com\", \"*.zendesk.eu\"]
  - name: my-stripe
    template: stripe
    params:
      header_name: ~
";
        let m = manifest(text);
        let zendesk = &m.providers[0].config;
        let entry = nexus_catalog::get("zendesk").unwrap();
        assert_eq!(zendesk.name.as_str(), "zendesk", "the template's name when the entry gives none");
        assert_eq!((zendesk.template.as_deref(), zendesk.template_version), (Some("zendesk"), Some(entry.version)));
        assert_eq!(zendesk.auth_url.as_deref(), entry.provider["auth_url"].as_str());
        assert_eq!(zendesk.scopes, ["read"]);
        assert_eq!(zendesk.user_info_endpoint, None, "~ removes a template's field");
        assert_eq!(zendesk.params["allowed_hosts"], json!(["*.zendesk.com", "*.zendesk.eu"]));
        assert!(zendesk.params.contains_key("connection_config_schema"), "params merge");
        let stripe = &m.providers[1].config;
        assert_eq!(stripe.name.as_str(), "my-stripe");
        assert!(!stripe.params.contains_key("header_name"), "~ inside params removes the key");
        // Registered as planned, the server shows no drift; a create sends the whole provider.
        assert!(Plan::compute(&m, &live(&m), false).changes.is_empty());
        let plan = Plan::compute(&m, &[], false);
        let Some(Request::Create(body)) = &plan.changes[0].request else { panic!("a create") };
        assert_eq!(body.0["template_version"], entry.version, "the server takes it as a whole provider");

        let unknown = Manifest::parse("providers:\n  - name: a\n    template: no-such-thing\n", &env).unwrap_err();
        assert_eq!(unknown.0[0].line, Some(3), "{unknown}");
        assert!(unknown.to_string().contains("not in the catalog"), "{unknown}");
        // A version the entry names is kept (an export of an older copy says so).
        let pinned = Manifest::parse("providers:\n  - template: stripe\n    template_version: 1\n", &env).unwrap();
        assert_eq!(pinned.providers[0].config.template_version, Some(1));
        let typo = Manifest::parse("providers:\n  - template: stripe\n    template_version: one\n", &env).unwrap_err();
        assert!(typo.to_string().contains("template_version: expected a whole number"), "{typo}");
        // Without a template, null is still refused (a PATCH would read it as remove).
        let null = Manifest::parse("providers:\n  - name: a\n    auth_type: api_key\n    params:\n      x: ~\n", &env);
        assert!(null.is_err());
    }

    #[test]
    fn a_newer_catalog_version_is_reported() {
        let m = manifest(MANIFEST);
        let mut server = live(&m);
        server[0].config.template = Some("github".into());
        server[0].config.template_version = Some(1);
        let found = newer_than(&server, |name| (name == "github").then_some(3));
        assert_eq!(
            found,
            [NewerTemplate { name: "github".into(), template: "github".into(), from_version: 1, catalog_version: 3 }]
        );
        assert!(newer_than(&server, |_| Some(1)).is_empty(), "the same version is not newer");
        let plan = Plan { changes: Vec::new(), newer_templates: found };
        let text = crate::render::human(&plan);
        assert!(
            text.contains("* TEMPLATE github: copied from 'github' version 1; the catalog holds version 3"),
            "{text}"
        );
        assert_eq!(crate::render::json(&plan)["newer_templates"][0]["catalog_version"], 3);
    }
}
