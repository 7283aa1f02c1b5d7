//! The provider registry (SPEC section 3): create, read, update, delete, each
//! write validated by `nexus-core`, its secret sealed by the vault, and audited
//! in the same transaction.

use crate::error::ApiError;
use crate::middleware::Caller;
use crate::state::AppState;
use nexus_core::merge::merge_patch;
use nexus_core::provider::{Discovery, ProviderConfig, SecretChange};
use nexus_core::secret::fingerprint;
use nexus_core::wire::ErrorCode;
pub use nexus_core::wire::{DeletedProvider as DeletedView, MetadataEntry, ProviderView};
use nexus_core::{AuditEvent, AuthType, ProviderInput, SecretString, ValidationErrors};
use nexus_store::providers::now;
use nexus_store::{NewAudit, ProviderFilter, ProviderRow};
use serde_json::{json, Map, Value};

pub fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub fn view(row: ProviderRow) -> ProviderView {
    ProviderView {
        id: row.id,
        config: row.config,
        discovery: row.discovery,
        client_secret_set: row.client_secret_enc.is_some(),
        client_secret_fingerprint: row.client_secret_fp,
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
    }
}

pub(crate) fn secret_context(id: &str) -> String {
    format!("provider:{id}:client_secret")
}

fn audit(caller: &Caller, event: AuditEvent, provider_id: &str, data: Value) -> NewAudit {
    NewAudit {
        ip: Some(caller.ip_string()),
        user_agent: caller.user_agent.clone(),
        provider_id: Some(provider_id.to_owned()),
        data,
        api_key: caller.api_key.clone(),
        ..NewAudit::new(event)
    }
}

/// Finds a provider by id or by name.
pub async fn find(state: &AppState, id_or_name: &str) -> Result<ProviderRow, ApiError> {
    if let Some(row) = state.store.provider_by_id(id_or_name).await? {
        return Ok(row);
    }
    if let Some(row) = state.store.provider_by_name(id_or_name).await? {
        return Ok(row);
    }
    Err(ApiError::not_found(format!("no provider with id or name '{}'", clip(id_or_name))))
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

async fn discovery_for(state: &AppState, config: &ProviderConfig) -> Result<Option<Discovery>, ApiError> {
    if !config.auth_type.uses_token_endpoint() || !config.enable_discovery {
        return Ok(None);
    }
    if crate::services::tenant_discovery::per_tenant(config) {
        // Discovered per connection, at the issuer expanded for it.
        return Ok(None);
    }
    let issuer = config.issuer.as_deref().unwrap_or_default();
    nexus_oauth::discover(&nexus_oauth::ProviderHttp::new(state.http.clone()), issuer, state.clock.now_secs())
        .await
        .map(Some)
        .map_err(|reason| {
            ApiError::new(ErrorCode::DiscoveryFailed, format!("issuer: OIDC discovery failed: {reason}"))
                .with_details(json!({ "field": "issuer" }))
        })
}

/// `POST /v1/providers`.
pub async fn create(state: &AppState, caller: &Caller, body: Value) -> Result<ProviderView, ApiError> {
    let body = from_template(body)?;
    let validated = ProviderInput::from_json(body)?.validate(false)?;
    let config = validated.config;
    check_provenance(&config, None)?;
    if state.store.provider_by_name(config.name.as_str()).await?.is_some() {
        return Err(name_taken(config.name.as_str()));
    }
    let discovery = discovery_for(state, &config).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let (enc, fp) = match &validated.secret {
        SecretChange::Set(secret) => seal(state, &id, config.name.as_str(), secret),
        SecretChange::Keep => (None, None),
    };
    let at = now();
    let row = ProviderRow {
        id: id.clone(),
        config,
        client_secret_enc: enc,
        client_secret_fp: fp,
        discovery,
        created_at: at,
        updated_at: at,
    };
    let entry = audit(
        caller,
        AuditEvent::ProviderCreated,
        &id,
        json!({ "name": row.config.name, "auth_type": row.config.auth_type, "client_secret_set": row.client_secret_enc.is_some() }),
    );
    state.store.insert_provider(&row, entry).await?;
    Ok(view(row))
}

/// A body naming a catalog `template` (SPEC 12) becomes the template's
/// fields with the body's over them, and records the catalog's version. A
/// body that already carries `template_version` is a whole provider that
/// says where it came from (what `GET` shows, what manifests send): it is
/// taken as it is, like any body without a template.
fn from_template(body: Value) -> Result<Value, ApiError> {
    let Value::Object(mut map) = body else { return Ok(body) };
    if map.len() == 1 {
        if let Some(Value::Object(inner)) = map.get("profile") {
            map = inner.clone();
        }
    }
    if map.get("template_version").is_some_and(|v| !v.is_null()) {
        return Ok(Value::Object(map));
    }
    let name = match map.get("template") {
        None | Some(Value::Null) => return Ok(Value::Object(map)),
        Some(Value::String(name)) => name.clone(),
        Some(_) => return Err(ValidationErrors::single("template", "must be a catalog template's name").into()),
    };
    let entry = nexus_catalog::get(&name).ok_or_else(|| unknown_template(&name))?;
    // A null secret means "remove it" here as in any PUT, not "no such
    // member" as the merge patch would read it.
    let secret = map.remove("client_secret");
    let mut body = nexus_catalog::provider_body(entry, map);
    if let (Some(secret), Value::Object(o)) = (secret, &mut body) {
        o.insert("client_secret".into(), secret);
    }
    Ok(body)
}

fn unknown_template(name: &str) -> ApiError {
    ValidationErrors::single("template", format!("'{}' is not in the catalog (GET /v1/catalog lists it)", clip(name)))
        .into()
}

/// A provider's provenance, when it changes: a template the catalog holds,
/// at a version it has had. A name no longer in the catalog is kept as it
/// was (the provider is edited like any other).
fn check_provenance(config: &ProviderConfig, stored: Option<&ProviderConfig>) -> Result<(), ApiError> {
    let unchanged =
        stored.is_some_and(|s| s.template == config.template && s.template_version == config.template_version);
    let (Some(template), false) = (config.template.as_deref(), unchanged) else { return Ok(()) };
    let entry = nexus_catalog::get(template).ok_or_else(|| unknown_template(template))?;
    match config.template_version {
        Some(v) if v > entry.version => Err(ValidationErrors::single(
            "template_version",
            format!("the catalog's '{template}' is at version {}; a copy cannot be newer", entry.version),
        )
        .into()),
        _ => Ok(()),
    }
}

fn name_taken(name: &str) -> ApiError {
    nexus_store::StoreError::NameTaken(name.to_owned()).into()
}

fn seal(state: &AppState, id: &str, name: &str, secret: &SecretString) -> (Option<String>, Option<String>) {
    let enc = state.config.keyring.seal(&secret_context(id), secret.expose().as_bytes());
    (Some(enc), Some(fingerprint(name, secret.expose())))
}

/// How an update treats fields it does not mention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// `PATCH`: absent fields keep their value, `params` merges (RFC 7396).
    Patch,
    /// `PUT`: the body is the whole new configuration (the stored client
    /// secret is kept when the body omits `client_secret`).
    Put,
}

/// What the body says about the secret.
enum SecretEdit {
    Keep,
    Set(SecretString),
    Clear,
}

/// `PATCH` / `PUT /v1/providers/{id}`.
pub async fn update(
    state: &AppState,
    caller: &Caller,
    id_or_name: &str,
    body: Value,
    mode: UpdateMode,
) -> Result<ProviderView, ApiError> {
    let stored = find(state, id_or_name).await?;
    let mut body = unwrap_profile(body)?;
    match mode {
        // A PUT that copies a template keeps the provider's name unless it gives one.
        UpdateMode::Put => {
            if body.contains_key("template") && !body.contains_key("name") {
                body.insert("name".into(), Value::from(stored.config.name.to_string()));
            }
            body = match from_template(Value::Object(body))? {
                Value::Object(map) => map,
                _ => Map::new(),
            };
        }
        // PATCH edits the provider's own fields: copying another template is a PUT.
        UpdateMode::Patch => {
            if body.get("template").is_some_and(|t| t.as_str() != stored.config.template.as_deref()) {
                return Err(ValidationErrors::single(
                    "template",
                    "changes only by PUT with the new template (a fresh copy of it)",
                )
                .into());
            }
        }
    }
    let secret_edit = match body.remove("client_secret") {
        None => SecretEdit::Keep,
        Some(Value::Null) => SecretEdit::Clear,
        Some(Value::String(s)) if !s.is_empty() => SecretEdit::Set(SecretString::new(s)),
        Some(Value::String(_)) => return Err(ApiError::bad_request("client_secret: must not be empty")),
        Some(_) => return Err(ApiError::bad_request("client_secret: must be a string (or null to remove it)")),
    };
    let merged = match mode {
        UpdateMode::Patch => {
            let mut base = stored.config.to_input_json();
            merge_patch(&mut base, &Value::Object(body));
            base
        }
        UpdateMode::Put => Value::Object(body),
    };
    let keeps_secret = matches!(secret_edit, SecretEdit::Keep) && stored.client_secret_enc.is_some();
    let mut input = ProviderInput::from_json(merged)?;
    if let SecretEdit::Set(s) = &secret_edit {
        input.client_secret = Some(s.clone());
    }
    let validated = input.validate(keeps_secret)?;
    let config = validated.config;
    check_provenance(&config, Some(&stored.config))?;

    if config.name != stored.config.name {
        if let Some(other) = state.store.provider_by_name(config.name.as_str()).await? {
            if other.id != stored.id {
                return Err(name_taken(config.name.as_str()));
            }
        }
    }
    let endpoints_changed = config.issuer != stored.config.issuer
        || config.enable_discovery != stored.config.enable_discovery
        || config.auth_type != stored.config.auth_type;
    let discovery = if mode == UpdateMode::Put || endpoints_changed || stored.discovery.is_none() {
        discovery_for(state, &config).await?
    } else {
        stored.discovery.clone().filter(|_| config.enable_discovery)
    };

    let mut changed = stored.config.changed_fields(&config);
    let (enc, fp) = match (&secret_edit, &validated.secret) {
        (SecretEdit::Set(_), SecretChange::Set(secret)) => {
            let sealed = seal(state, &stored.id, config.name.as_str(), secret);
            if sealed.1 != stored.client_secret_fp || config.name != stored.config.name {
                changed.push("client_secret".into());
            }
            sealed
        }
        (SecretEdit::Clear, _) => {
            if stored.client_secret_enc.is_some() {
                changed.push("client_secret".into());
            }
            (None, None)
        }
        _ => match &stored.client_secret_enc {
            // The fingerprint is salted with the name, so a rename recomputes it.
            Some(enc) if config.name != stored.config.name => {
                let plain = state.config.keyring.open_string(&secret_context(&stored.id), enc).map_err(|e| {
                    tracing::error!(provider = %stored.id, error = %e, "stored client secret does not open");
                    ApiError::internal()
                })?;
                (Some(enc.clone()), Some(fingerprint(config.name.as_str(), &plain)))
            }
            // Kept as it is, but sealed under the current key if an older
            // one sealed it (a rewrap racing this update cannot leave the
            // old key's envelope behind).
            Some(enc) if state.config.keyring.needs_reseal(enc) => {
                let ctx = secret_context(&stored.id);
                let plain = state.config.keyring.open(&ctx, enc).map_err(|e| {
                    tracing::error!(provider = %stored.id, error = %e, "stored client secret does not open");
                    ApiError::internal()
                })?;
                (Some(state.config.keyring.seal(&ctx, &plain)), stored.client_secret_fp.clone())
            }
            other => (other.clone(), stored.client_secret_fp.clone()),
        },
    };
    if discovery.as_ref().map(|d| (&d.authorization_endpoint, &d.token_endpoint))
        != stored.discovery.as_ref().map(|d| (&d.authorization_endpoint, &d.token_endpoint))
    {
        changed.push("discovery".into());
    }
    changed.sort();
    changed.dedup();
    if changed.is_empty() {
        return Ok(view(stored));
    }
    let row = ProviderRow {
        id: stored.id.clone(),
        config,
        client_secret_enc: enc,
        client_secret_fp: fp,
        discovery,
        created_at: stored.created_at,
        updated_at: now().max(stored.updated_at + 1),
    };
    let entry = audit(
        caller,
        AuditEvent::ProviderUpdated,
        &row.id,
        json!({ "name": row.config.name, "changed_fields": changed, "method": if mode == UpdateMode::Patch { "PATCH" } else { "PUT" } }),
    );
    let updated = state.store.update_provider(&row, stored.updated_at, entry).await;
    state.invalidate(nexus_store::Invalidation::Provider(row.id.clone()));
    updated?;
    Ok(view(row))
}

fn unwrap_profile(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(mut map) => {
            if map.len() == 1 {
                if let Some(Value::Object(inner)) = map.remove("profile") {
                    return Ok(inner);
                }
                if map.is_empty() {
                    return Err(ApiError::bad_request("profile: must be an object"));
                }
            }
            Ok(map)
        }
        _ => Err(ApiError::bad_request("body: must be a JSON object")),
    }
}

/// `DELETE /v1/providers/{id}`.
pub async fn delete(state: &AppState, caller: &Caller, id_or_name: &str) -> Result<DeletedView, ApiError> {
    let stored = find(state, id_or_name).await?;
    let name = stored.config.name.to_string();
    let orphaned = state
        .store
        .delete_provider(&stored.id, |orphaned| {
            audit(
                caller,
                AuditEvent::ProviderDeleted,
                &stored.id,
                json!({ "name": name, "orphaned_connections": orphaned }),
            )
        })
        .await;
    state.invalidate(nexus_store::Invalidation::Provider(stored.id.clone()));
    let orphaned = orphaned?;
    Ok(DeletedView { id: stored.id, name, deleted: true, orphaned_connections: orphaned })
}

/// The provider id a list filter means: a live provider's name becomes its
/// id; anything else is taken as an id (so a deleted provider's rows are
/// still found by it).
pub async fn filter_id(state: &AppState, provider: Option<String>) -> Result<Option<String>, ApiError> {
    Ok(match provider {
        None => None,
        Some(p) => match state.store.provider_by_name(&p).await? {
            Some(row) => Some(row.id),
            None => Some(p),
        },
    })
}

/// `GET /v1/providers`.
pub async fn list(state: &AppState, filter: ProviderFilter) -> Result<Vec<ProviderView>, ApiError> {
    Ok(state.store.list_providers(&filter).await?.into_iter().map(view).collect())
}

/// Where a template's logo is served, when the catalog has one.
pub fn catalog_logo(template: &str) -> Option<String> {
    nexus_catalog::logo(template).map(|_| nexus_catalog::logo_path(template))
}

/// `GET /v1/providers/metadata`: every auth type as a key, its providers as a list.
pub async fn metadata(state: &AppState) -> Result<Map<String, Value>, ApiError> {
    let rows = state.store.list_providers(&ProviderFilter::default()).await?;
    let mut groups: Map<String, Value> =
        AuthType::ALL.iter().map(|t| (t.as_str().to_owned(), Value::Array(Vec::new()))).collect();
    for row in rows {
        let entry = MetadataEntry {
            id: row.id,
            name: row.config.name.to_string(),
            display_name: row.config.display_name().to_owned(),
            api_base_url: row.config.api_base_url,
            user_info_endpoint: row.config.user_info_endpoint,
            scopes: row.config.scopes,
            description: row.config.description,
            category: row.config.category,
            logo_url: row.config.template.as_deref().and_then(catalog_logo),
        };
        if let Some(Value::Array(list)) = groups.get_mut(row.config.auth_type.as_str()) {
            list.push(serde_json::to_value(entry).unwrap_or(Value::Null));
        }
    }
    Ok(groups)
}
