//! `POST /v1/request-connection`: a pending connection and where to send the
//! user (the provider's consent page, or Nexus's capture page).

use super::{audit, client_config, context, grant, param_bool, param_map, param_str};
use crate::error::ApiError;
use crate::middleware::Caller;
use crate::services::state_token::{self, StateClaims};
use crate::services::{connection_config, providers};
use crate::state::AppState;
use nexus_core::connection::{narrow_scopes, parse_return_url, PENDING_TTL_SECS};
use nexus_core::wire::ErrorCode;
use nexus_core::wire::{ConnectionActivated, ConnectionRequested, RequestConnection};
use nexus_core::{AuditEvent, AuthType};
use nexus_store::{ConnectionRow, Handshake};
use serde_json::{json, Value};

/// What `POST /v1/request-connection` answers.
#[derive(Debug)]
pub enum Requested {
    /// `200`: where to send the user.
    Pending(ConnectionRequested),
    /// `201`: nobody needs to act; the connection is active (SPEC 11).
    Active(ConnectionActivated),
}

/// `POST /v1/request-connection`.
pub async fn request(state: &AppState, caller: &Caller, mut body: Value) -> Result<Requested, ApiError> {
    if let Some(session) = caller.session() {
        crate::services::connect_sessions::limit_request(session, &mut body)?;
    }
    let input: RequestConnection = nexus_core::wire::from_body(body)?;
    let workspace_id = input.workspace_id.trim().to_owned();
    if workspace_id.is_empty() || workspace_id.len() > 256 {
        return Err(ApiError::bad_request("workspace_id: must be 1 to 256 characters"));
    }
    let provider_ref = match (&input.provider_id, &input.provider_name) {
        (Some(id), _) if !id.is_empty() => id.clone(),
        (_, Some(name)) if !name.is_empty() => name.clone(),
        _ => return Err(ApiError::bad_request("provider_id: provider_id or provider_name is required")),
    };
    let allowed = state.config.allowed_return_domains.as_deref();
    let return_url = (!input.return_url.is_empty())
        .then(|| parse_return_url(&input.return_url, allowed))
        .transpose()
        .map_err(|m| ApiError::bad_request(format!("return_url: {m}")))?;
    if let Some(m) = &input.metadata {
        if !m.is_object() || m.to_string().len() > 16 * 1024 {
            return Err(ApiError::bad_request("metadata: must be a JSON object of at most 16 KiB"));
        }
    }
    let provider = providers::find(state, &provider_ref).await.map_err(|e| {
        if e.code == ErrorCode::NotFound {
            ApiError::not_found(format!(
                "provider_id: no provider with id or name '{}'",
                provider_ref.chars().take(80).collect::<String>()
            ))
        } else {
            e
        }
    })?;
    if caller
        .session()
        .is_some_and(|s| !crate::services::connect_sessions::allows_provider(s, provider.config.name.as_str()))
    {
        return Err(ApiError::forbidden("provider_id: this Connect session may not connect that provider"));
    }
    let auth_type = provider.config.auth_type;
    // A grant that needs no user runs on the operator's say-so: a session
    // starts one only for a provider it names.
    if caller.session().is_some_and(|s| s.providers.is_none()) && auth_type == AuthType::Oauth2ClientCredentials {
        return Err(ApiError::forbidden(
            "provider_id: a Connect session starts a client credentials grant only for a provider it lists",
        ));
    }
    let connection_config = connection_config::for_request(&provider.config, input.connection_config.clone())?;
    let scopes = if auth_type.uses_token_endpoint() {
        narrow_scopes(&provider.config.scopes, input.scopes.as_deref())
            .map_err(|m| ApiError::bad_request(format!("scopes: {m}")))?
    } else {
        Vec::new()
    };

    let existing = match &input.connection_id {
        None => None,
        Some(id) => {
            let row = super::visible(state, caller, id)
                .await?
                .ok_or_else(|| ApiError::not_found("connection_id: no such connection"))?;
            if row.provider_id != provider.id {
                return Err(ApiError::conflict("connection_id: that connection belongs to another provider"));
            }
            if row.workspace_id != workspace_id {
                return Err(ApiError::conflict("connection_id: that connection belongs to another workspace"));
            }
            if row.auth_type != auth_type {
                return Err(ApiError::conflict(format!(
                    "connection_id: that connection was made as {}, and the provider is now {auth_type}: request a new connection",
                    row.auth_type
                )));
            }
            Some(row)
        }
    };
    if auth_type == AuthType::Oauth2ClientCredentials && !provider.config.captures_credentials() {
        let req =
            grant::Request { workspace_id, scopes, metadata: input.metadata.clone(), connection_config, existing };
        return grant::connect(state, caller, &provider, req).await.map(Requested::Active);
    }
    let Some(return_url) = return_url else {
        return Err(ApiError::bad_request("return_url: is required (the user is sent back there)"));
    };
    let connection_id = existing.as_ref().map(|r| r.id.clone()).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let expires_at = state.clock.now_secs() + PENDING_TTL_SECS;
    let nonce = state_token::random_nonce();
    let state_string = state_token::issue(
        &state.config.state_signer,
        &StateClaims { connection_id: connection_id.clone(), nonce: nonce.clone(), expires_at },
    );

    let (auth_url, pkce_enc, oidc_nonce) = if auth_type == AuthType::Oauth2 {
        let cfg = client_config(state, &provider, &connection_config).await?;
        let verifier = nexus_oauth::new_pkce_verifier();
        let oidc_nonce = scopes.iter().any(|s| s == "openid").then(state_token::random_nonce);
        let extra = param_map(&provider, "authorization_params");
        let url = nexus_oauth::authorization_url(
            &cfg,
            &nexus_oauth::AuthorizationParams {
                scopes: &scopes,
                scope_separator: param_str(&provider, "scope_separator").unwrap_or(" "),
                send_scope: !param_bool(&provider, "skip_scope_on_auth"),
                extra: &extra,
                state: &state_string,
                pkce_verifier: &verifier,
                nonce: oidc_nonce.as_deref(),
            },
        )
        .map_err(|e| ApiError::new(ErrorCode::ProviderMisconfigured, e.to_string()))?;
        let sealed = state.config.keyring.seal(&context(&connection_id, "pkce_verifier"), verifier.expose().as_bytes());
        (url.to_string(), Some(sealed), oidc_nonce)
    } else {
        (capture_url(state, &state_string), None, None)
    };

    let handshake = Handshake {
        state_nonce: nonce,
        expires_at: expires_at * 1_000_000,
        pkce_verifier_enc: pkce_enc,
        oidc_nonce,
        scopes: scopes.clone(),
        return_url: return_url.to_string(),
        metadata: input.metadata.clone(),
        connection_config: connection_config.clone(),
    };
    let data = json!({ "provider": provider.config.name, "auth_type": auth_type, "scopes": scopes, "reauthorize": existing.is_some() });
    match existing {
        Some(row) => {
            state
                .store
                .restart_handshake(
                    &row.id,
                    &handshake,
                    audit(Some(caller), AuditEvent::ConnectionRequested, &row, data),
                )
                .await?;
        }
        None => {
            let now = state.clock.now_micros();
            let row = ConnectionRow {
                workspace_id,
                scopes: handshake.scopes.clone(),
                return_url: handshake.return_url.clone(),
                metadata: handshake.metadata.clone(),
                connection_config: connection_config.clone(),
                handshake_config: Some(connection_config),
                state_nonce: Some(handshake.state_nonce.clone()),
                handshake_expires_at: Some(handshake.expires_at),
                pkce_verifier_enc: handshake.pkce_verifier_enc.clone(),
                oidc_nonce: handshake.oidc_nonce.clone(),
                created_at: now,
                updated_at: now,
                ..ConnectionRow::pending(
                    connection_id.clone(),
                    provider.id.clone(),
                    provider.config.name.to_string(),
                    auth_type,
                )
            };
            state
                .store
                .insert_connection(&row, audit(Some(caller), AuditEvent::ConnectionRequested, &row, data))
                .await?;
        }
    }
    Ok(Requested::Pending(ConnectionRequested {
        connection_id,
        auth_url_alias: auth_url.clone(),
        auth_url,
        state: state_string,
        provider_id: provider.id,
        scopes,
        expires_at,
    }))
}

/// Where a static provider's `auth_url` points: Nexus's own capture page.
fn capture_url(state: &AppState, state_string: &str) -> String {
    let mut url = state.config.base_url.clone();
    let base_path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{base_path}/auth/capture"));
    url.query_pairs_mut().clear().append_pair("state", state_string);
    url.to_string()
}
