//! The Connect UI (SPEC 13), server-rendered with templates checked at
//! compile time (`askama`, escaped by default): the provider picker of a
//! Connect session, and starting a connection from it.
//!
//! The pages live under `/connect`, where the session's cookie is sent
//! (HttpOnly, SameSite=Strict, so a cross-site form cannot post with it;
//! a foreign `Origin` is refused as well).

use crate::error::ApiError;
use crate::middleware::Caller;
use crate::services::connect_sessions;
use crate::services::connections::{self, Requested};
use crate::services::providers::catalog_logo;
use crate::state::AppState;
use askama::Template;
use nexus_store::{ConnectSessionRow, ProviderFilter};
use serde_json::json;
use std::sync::Arc;

/// One provider in the picker.
pub struct PickerEntry {
    pub name: String,
    pub display_name: String,
    pub description: String,
    /// The catalog template's logo, served by Nexus (never a third-party image).
    pub logo_url: Option<String>,
    /// Shown when there is no logo.
    pub initials: String,
}

/// A connection of the session's workspace that needs the user again.
pub struct AttentionEntry {
    pub connection_id: String,
    pub provider: String,
    pub display_name: String,
    pub reason: String,
}

#[derive(Template)]
#[template(path = "connect/picker.html")]
pub struct PickerPage {
    pub title: String,
    pub query: String,
    pub providers: Vec<PickerEntry>,
    pub attention: Vec<AttentionEntry>,
}

#[derive(Template)]
#[template(path = "connect/config.html")]
pub struct ConfigPage {
    pub title: String,
    pub provider: String,
    pub provider_name: String,
    pub fields: Vec<Field>,
    pub form_error: Option<String>,
    /// The connection being reconnected, if any (kept across the form).
    pub connection_id: String,
}

#[derive(Template)]
#[template(path = "connect/message.html")]
pub struct MessagePage {
    pub title: String,
    pub message: String,
    pub error: bool,
    /// Where "Try again" leads, if anywhere.
    pub retry: Option<String>,
}

/// Up to two letters standing for `name` (initials of its words).
pub fn initials(name: &str) -> String {
    let words: Vec<&str> = name.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let letters: String = match words.as_slice() {
        [] => "?".into(),
        [one] => one.chars().take(2).collect(),
        [first, second, ..] => first.chars().take(1).chain(second.chars().take(1)).collect(),
    };
    letters.to_uppercase()
}

/// The providers `session` may connect, matching `query` (name, display
/// name or description, case-insensitively), by display name.
pub async fn picker(state: &AppState, session: &ConnectSessionRow, query: &str) -> Result<PickerPage, ApiError> {
    let query: String = query.trim().chars().take(100).collect();
    let needle = query.to_lowercase();
    let rows = state.store.list_providers(&ProviderFilter::default()).await?;
    let mut providers: Vec<PickerEntry> = rows
        .into_iter()
        .filter(|row| connect_sessions::allows_provider(session, row.config.name.as_str()))
        // A grant that needs no user is offered only when the session names it.
        .filter(|row| {
            session.providers.is_some() || row.config.auth_type != nexus_core::AuthType::Oauth2ClientCredentials
        })
        .map(|row| {
            let c = row.config;
            let display_name = c.display_name.clone().unwrap_or_else(|| c.name.to_string());
            PickerEntry {
                name: c.name.to_string(),
                initials: initials(&display_name),
                description: c.description.clone().unwrap_or_default(),
                logo_url: c.template.as_deref().and_then(catalog_logo),
                display_name,
            }
        })
        .collect();
    providers.sort_by_key(|p| p.display_name.to_lowercase());
    let names: std::collections::HashMap<String, String> =
        providers.iter().map(|p| (p.name.clone(), p.display_name.clone())).collect();
    providers.retain(|p| {
        needle.is_empty()
            || [&p.name, &p.display_name, &p.description].iter().any(|s| s.to_lowercase().contains(&needle))
    });
    // Connections of this workspace that need the user again, re-authorized in place.
    let filter = nexus_store::ConnectionFilter {
        workspace_id: Some(session.workspace_id.clone()),
        status: Some(nexus_core::ConnectionStatus::AttentionRequired),
        limit: 50,
        ..Default::default()
    };
    let attention = state
        .store
        .list_connections(&filter)
        .await?
        .into_iter()
        .filter(|c| connect_sessions::allows_provider(session, &c.provider_name))
        .map(|c| AttentionEntry {
            display_name: names.get(&c.provider_name).cloned().unwrap_or_else(|| c.provider_name.clone()),
            reason: "The service no longer accepts the access it gave. Sign in again.".into(),
            connection_id: c.id,
            provider: c.provider_name,
        })
        .collect();
    Ok(PickerPage { title: "Connect an account".into(), query, providers, attention })
}

/// The fields of a JSON Schema's properties, in the operator's order.
pub fn schema_fields(
    schema: &serde_json::Value,
    input_prefix: &str,
    values: &std::collections::BTreeMap<String, String>,
    errors: &std::collections::BTreeMap<String, String>,
) -> Vec<Field> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(serde_json::Value::as_array)
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(serde_json::Value::as_object) else { return Vec::new() };
    let first_error = props.keys().find(|k| errors.contains_key(*k)).cloned();
    props
        .iter()
        .map(|(name, prop)| {
            let text = |key: &str| prop.get(key).and_then(serde_json::Value::as_str).map(str::to_owned);
            let secret = is_secret(name, prop);
            Field {
                autofocus: first_error.as_deref() == Some(name.as_str()),
                title: text("title").unwrap_or_else(|| name.replace('_', " ")),
                description: text("description").unwrap_or_default(),
                required: required.contains(&name.as_str()),
                value: if secret { String::new() } else { values.get(name).cloned().unwrap_or_default() },
                error: errors.get(name).cloned(),
                secret,
                input_name: format!("{input_prefix}{name}"),
                name: name.clone(),
            }
        })
        .collect()
}

/// Errors of fields the form does not show go to the form's own error, so
/// none is lost.
pub fn fold_unshown(fields: &[Field], errors: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let unshown: Vec<String> = errors
        .iter()
        .filter(|(k, _)| !k.is_empty() && !fields.iter().any(|f| &f.name == *k))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let mut all: Vec<String> = errors.get("").cloned().into_iter().collect();
    all.extend(unshown);
    (!all.is_empty()).then(|| all.join("; "))
}

/// What `POST /connect/start` leads to.
pub enum Next {
    /// Send the user there.
    Redirect(String),
    /// The provider needs account details first (or they were wrong).
    Config(ConfigPage),
}

/// The errors of a refused request under `connection_config.<field>`, and
/// the rest under `""`.
fn config_errors(e: &ApiError) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let listed = e.details.as_ref().and_then(|d| d.get("fields")).and_then(serde_json::Value::as_array);
    for f in listed.into_iter().flatten() {
        if let (Some(field), Some(message)) = (f["field"].as_str(), f["message"].as_str()) {
            if let Some(name) = field.strip_prefix("connection_config.") {
                out.entry(name.to_owned()).or_insert_with(|| message.to_owned());
            }
        }
    }
    if let Some((name, message)) = e.message.strip_prefix("connection_config.").and_then(|m| m.split_once(": ")) {
        out.entry(name.to_owned()).or_insert_with(|| message.to_owned());
    }
    if out.is_empty() {
        out.insert(String::new(), e.message.clone());
    }
    out
}

/// Starts a connection to `provider` for `session`: where to send the user
/// (the provider's consent page, the credential form, or back to the
/// application when a grant needed nobody).
pub async fn start(
    state: &AppState,
    caller: &Caller,
    session: Arc<ConnectSessionRow>,
    form: &std::collections::BTreeMap<String, String>,
) -> Result<Next, ApiError> {
    let provider_name = form.get("provider").map(String::as_str).unwrap_or_default();
    let provider = state
        .store
        .provider_by_name(provider_name)
        .await?
        .filter(|p| connect_sessions::allows_provider(&session, p.config.name.as_str()))
        .ok_or_else(|| ApiError::bad_request("That service cannot be connected here. Choose one from the list."))?;
    let display = provider.config.display_name.clone().unwrap_or_else(|| provider.config.name.to_string());
    // Account details the provider's URLs need: asked for unless the session brought them.
    let values: std::collections::BTreeMap<String, String> = form
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("config.").map(|k| (k.to_owned(), v.trim().to_owned())))
        .collect();
    let schema = provider.config.connection_config_schema().filter(|s| s.get("properties").is_some()).cloned();
    let connection_id = form.get("connection_id").filter(|id| !id.is_empty()).cloned();
    let config_page = |errors: &std::collections::BTreeMap<String, String>| {
        let fields = schema.as_ref().map(|s| schema_fields(s, "config.", &values, errors)).unwrap_or_default();
        ConfigPage {
            title: if errors.is_empty() { format!("Connect {display}") } else { format!("Error: connect {display}") },
            provider: display.clone(),
            provider_name: provider.config.name.to_string(),
            form_error: fold_unshown(&fields, errors),
            fields,
            connection_id: connection_id.clone().unwrap_or_default(),
        }
    };
    let mut body = json!({ "provider_name": provider.config.name.as_str() });
    // Reconnecting keeps the account details the connection already has.
    let mut known_config = None;
    if let Some(id) = &connection_id {
        body["connection_id"] = json!(id);
        if let Some(row) = state.store.connection_by_id(id).await?.filter(|r| r.workspace_id == session.workspace_id) {
            known_config = (!row.connection_config.is_empty()).then_some(row.connection_config);
        }
    }
    if let (Some(config), true) = (known_config, values.is_empty()) {
        body["connection_config"] = serde_json::Value::Object(config);
    } else if schema.is_some() && session.connection_config.is_none() {
        if values.is_empty() {
            return Ok(Next::Config(config_page(&Default::default())));
        }
        let config: serde_json::Map<String, serde_json::Value> =
            values.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.clone(), json!(v))).collect();
        body["connection_config"] = serde_json::Value::Object(config);
    }
    let access = connect_sessions::access(session);
    let caller = Caller { api_key: Some(access.key.clone()), access: Some(access), ..caller.clone() };
    match connections::request(state, &caller, body).await {
        Ok(Requested::Pending(p)) => Ok(Next::Redirect(p.auth_url)),
        Ok(Requested::Active(a)) => {
            let back = caller.session().map(|s| s.return_url.clone()).unwrap_or_default();
            let mut url = url::Url::parse(&back).map_err(|_| ApiError::internal())?;
            url.query_pairs_mut().append_pair("connection_id", &a.connection_id).append_pair("status", "success");
            Ok(Next::Redirect(url.to_string()))
        }
        Err(e) if schema.is_some() && e.status().is_client_error() && e.message.contains("connection_config") => {
            Ok(Next::Config(config_page(&config_errors(&e))))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initials_stand_for_names() {
        assert_eq!(initials("Zendesk"), "ZE");
        assert_eq!(initials("Google Drive"), "GD");
        assert_eq!(initials("aws-s3 (eu)"), "AS");
        assert_eq!(initials("--"), "?");
        assert_eq!(initials("émile zola"), "ÉZ");
    }

    #[test]
    fn pages_escape_what_they_show() {
        let page = PickerPage {
            title: "Connect".into(),
            query: "<script>".into(),
            providers: vec![PickerEntry {
                name: "x\"><img src=x onerror=alert(1)>".into(),
                display_name: "<b>Evil</b>".into(),
                description: "&".into(),
                logo_url: None,
                initials: "EV".into(),
            }],
            attention: vec![AttentionEntry {
                connection_id: "c\"1".into(),
                provider: "p".into(),
                display_name: "<i>x</i>".into(),
                reason: "r".into(),
            }],
        };
        let html = page.render().unwrap();
        assert!(!html.contains("<script>") && !html.contains("<b>Evil") && !html.contains("<img src=x"));
        assert!(!html.contains("<i>x</i>") && !html.contains("c\"1"));
        assert!(html.contains("&#60;b&#62;Evil") || html.contains("&lt;b&gt;Evil"), "{html}");
    }
}

/// One field of the credential form.
pub struct Field {
    pub name: String,
    /// The form's name for it (`config.` + name on the account-details form).
    pub input_name: String,
    pub title: String,
    pub description: String,
    pub required: bool,
    /// Masked (`format: password`, or a name that says secret).
    pub secret: bool,
    /// What the user typed, shown again after an error (never for a secret).
    pub value: String,
    pub error: Option<String>,
    /// The first field in error takes the focus when the page opens.
    pub autofocus: bool,
}

/// Whether a field is a secret: marked so by the schema, or named like one
/// (`app_key`, `apiKey`, `passphrase`, `client-secret`…). Secrets are masked
/// and never shown again.
pub fn is_secret(name: &str, prop: &serde_json::Value) -> bool {
    let flat: String = name.chars().filter(|c| c.is_alphanumeric()).collect::<String>().to_lowercase();
    prop.get("format").and_then(serde_json::Value::as_str) == Some("password")
        || prop.get("writeOnly").and_then(serde_json::Value::as_bool) == Some(true)
        || ["key", "pass", "secret", "token", "auth", "credential", "pin", "private", "signature", "cert"]
            .iter()
            .any(|w| flat.contains(w))
}

#[derive(Template)]
#[template(path = "connect/credentials.html")]
pub struct CredentialsPage {
    pub title: String,
    pub provider: String,
    pub description: String,
    pub logo_url: Option<String>,
    pub initials: String,
    pub state: String,
    pub fields: Vec<Field>,
    /// An error of the whole form (live verification, an expired link).
    pub form_error: Option<String>,
}

#[derive(Template)]
#[template(path = "connect/done.html")]
pub struct DonePage {
    pub title: String,
    pub message: String,
    pub return_url: String,
}

/// The credential form of a static connection, from the provider's
/// credential schema: its properties in the operator's order, titles,
/// descriptions, masked secrets and required marks; with `values` typed
/// before and `errors` (field → message; `""` for the whole form).
pub async fn credentials_page(
    state: &AppState,
    schema: &crate::services::capture::CaptureSchema,
    raw_state: &str,
    values: &std::collections::BTreeMap<String, String>,
    errors: &std::collections::BTreeMap<String, String>,
) -> CredentialsPage {
    let provider = state.store.provider_by_name(&schema.provider).await.ok().flatten();
    let config = provider.as_ref().map(|p| &p.config);
    let display = config.and_then(|c| c.display_name.clone()).unwrap_or_else(|| schema.provider.clone());
    let fields = schema_fields(&schema.credential_schema, "", values, errors);
    let form_error = fold_unshown(&fields, errors);
    CredentialsPage {
        title: if errors.is_empty() { format!("Connect {display}") } else { format!("Error: connect {display}") },
        initials: initials(&display),
        description: config.and_then(|c| c.description.clone()).unwrap_or_default(),
        logo_url: config.and_then(|c| c.template.as_deref()).and_then(catalog_logo),
        provider: display,
        state: raw_state.to_owned(),
        fields,
        form_error,
    }
}

/// The field errors of a refused capture (`details.fields` named
/// `credentials.<field>`), and the rest as the form's error under `""`.
pub fn form_errors(e: &ApiError) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let listed = e.details.as_ref().and_then(|d| d.get("fields")).and_then(serde_json::Value::as_array);
    for f in listed.into_iter().flatten() {
        let (Some(field), Some(message)) = (f["field"].as_str(), f["message"].as_str()) else { continue };
        match field.strip_prefix("credentials.") {
            Some(name) if !name.is_empty() => {
                out.entry(name.to_owned()).or_insert_with(|| message.to_owned());
            }
            _ => {
                out.entry(String::new()).or_insert_with(|| e.message.clone());
            }
        }
    }
    if out.is_empty() {
        out.insert(String::new(), e.message.clone());
    }
    out
}
