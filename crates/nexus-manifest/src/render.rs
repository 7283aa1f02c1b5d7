//! A plan written for people (one line per provider, `+ CREATE`, `~ UPDATE
//! name (fields: …)`, `- DELETE`, `! ORPHAN`, then what changes in each
//! updated field) and as JSON for programs. A client secret is only ever
//! shown as `(sensitive)`.

use crate::plan::{Action, Change, FieldDiff, Plan};
use serde_json::{json, Value};
use std::fmt::Write;

/// Longest value shown in a human-readable field diff before it is cut.
const MAX_VALUE_CHARS: usize = 100;

/// The first line of a change: `+ CREATE github`.
pub fn headline(change: &Change) -> String {
    match change.action {
        Action::Create => format!("+ CREATE {}", change.name),
        Action::Update => format!("~ UPDATE {} (fields: {})", change.name, change.fields.join(", ")),
        Action::Delete => format!("- DELETE {}", change.name),
        Action::Orphan => format!("! ORPHAN {} (only on the server; --prune deletes it)", change.name),
    }
}

/// The plan as text, ending with a summary line.
pub fn human(plan: &Plan) -> String {
    let mut out = String::new();
    for change in &plan.changes {
        let _ = writeln!(out, "{}", headline(change));
        for d in &change.details {
            let _ = writeln!(out, "      {}", detail(d));
        }
    }
    for n in &plan.newer_templates {
        let _ = writeln!(
            out,
            "* TEMPLATE {}: copied from '{}' version {}; the catalog holds version {} (`nexus providers catalog show {}`)",
            n.name, n.template, n.from_version, n.catalog_version, n.template
        );
    }
    if !plan.has_changes() {
        if !plan.changes.is_empty() || !plan.newer_templates.is_empty() {
            out.push('\n');
        }
        out.push_str("No changes. The server matches the manifest.\n");
    } else {
        let _ = writeln!(
            out,
            "\nPlan: {} to create, {} to update, {} to delete{}.",
            plan.count(Action::Create),
            plan.count(Action::Update),
            plan.count(Action::Delete),
            orphans(plan)
        );
    }
    out
}

fn orphans(plan: &Plan) -> String {
    match plan.count(Action::Orphan) {
        0 => String::new(),
        n => format!(", {n} orphaned (left alone without --prune)"),
    }
}

fn detail(d: &FieldDiff) -> String {
    if d.sensitive {
        return format!("{}: (sensitive)", d.field);
    }
    format!("{}: {} -> {}", d.field, shown(d.before.as_ref()), shown(d.after.as_ref()))
}

fn shown(v: Option<&Value>) -> String {
    let Some(v) = v else { return "(not set)".to_owned() };
    let text = v.to_string();
    if text.chars().count() <= MAX_VALUE_CHARS {
        text
    } else {
        let cut: String = text.chars().take(MAX_VALUE_CHARS - 1).collect();
        format!("{cut}…")
    }
}

/// The plan as JSON:
/// `{"changes_pending", "summary": {create, update, delete, orphan}, "changes": [{action, name, id?, fields?, details?}]}`.
pub fn json(plan: &Plan) -> Value {
    let changes: Vec<Value> = plan
        .changes
        .iter()
        .map(|c| {
            let mut v = json!({"action": c.action, "name": c.name});
            if let Some(id) = &c.id {
                v["id"] = json!(id);
            }
            if c.action == Action::Update {
                v["fields"] = json!(c.fields);
                v["details"] = json!(c.details);
            }
            v
        })
        .collect();
    json!({
        "format_version": 1,
        "changes_pending": plan.has_changes(),
        "summary": {
            "create": plan.count(Action::Create),
            "update": plan.count(Action::Update),
            "delete": plan.count(Action::Delete),
            "orphan": plan.count(Action::Orphan),
        },
        "changes": changes,
        "newer_templates": plan.newer_templates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::RemoteProvider;
    use crate::manifest::Manifest;
    use nexus_core::secret::fingerprint;

    fn plan() -> Plan {
        let env = |n: &str| (n == "S").then(|| "super-secret-value".to_owned());
        let m = Manifest::parse(
            "providers:\n  - name: gh\n    auth_type: oauth2\n    client_id: c\n    client_secret: ${S}\n    auth_url: https://a.example/a\n    token_url: https://a.example/t\n    scopes: [a, b]\n  - name: new-one\n    auth_type: basic_auth\n    params: {credential_schema: {type: object}}\n",
            &env,
        )
        .unwrap();
        let mut gh = m.providers[0].config.clone();
        gh.scopes = vec!["a".into()];
        let mut orphan = gh.clone();
        orphan.name = nexus_core::ProviderName::parse("legacy").unwrap();
        let server = vec![
            RemoteProvider {
                id: "1".into(),
                config: gh,
                client_secret_set: true,
                client_secret_fingerprint: Some(fingerprint("gh", "old")),
                discovery: None,
                created_at: String::new(),
                updated_at: String::new(),
            },
            RemoteProvider {
                id: "2".into(),
                config: orphan,
                client_secret_set: false,
                client_secret_fingerprint: None,
                discovery: None,
                created_at: String::new(),
                updated_at: String::new(),
            },
        ];
        Plan::compute(&m, &server, false)
    }

    #[test]
    fn human_output_lists_changes_and_hides_the_secret() {
        let text = human(&plan());
        assert_eq!(
            text,
            "~ UPDATE gh (fields: client_secret, scopes)\n      client_secret: (sensitive)\n      scopes: [\"a\"] -> [\"a\",\"b\"]\n\
             + CREATE new-one\n! ORPHAN legacy (only on the server; --prune deletes it)\n\n\
             Plan: 1 to create, 1 to update, 0 to delete, 1 orphaned (left alone without --prune).\n"
        );
        assert!(!text.contains("super-secret-value"));
    }

    #[test]
    fn json_output_is_machine_readable_and_hides_the_secret() {
        let v = json(&plan());
        assert_eq!(v["changes_pending"], true);
        assert_eq!(v["summary"], json!({"create": 1, "update": 1, "delete": 0, "orphan": 1}));
        assert_eq!(v["changes"][0]["action"], "update");
        assert_eq!(v["changes"][0]["fields"], json!(["client_secret", "scopes"]));
        assert_eq!(v["changes"][0]["details"][0], json!({"field": "client_secret", "sensitive": true}));
        assert_eq!(v["changes"][0]["details"][1], json!({"field": "scopes", "before": ["a"], "after": ["a", "b"]}));
        assert_eq!(v["changes"][2], json!({"action": "orphan", "name": "legacy", "id": "2"}));
        assert!(!v.to_string().contains("super-secret-value"));
    }

    #[test]
    fn an_empty_plan_says_so() {
        assert_eq!(human(&Plan::default()), "No changes. The server matches the manifest.\n");
        assert_eq!(json(&Plan::default())["changes_pending"], false);
    }

    #[test]
    fn long_values_are_cut() {
        let long = Value::String("x".repeat(500));
        assert_eq!(shown(Some(&long)).chars().count(), MAX_VALUE_CHARS);
        assert_eq!(shown(None), "(not set)");
    }
}
