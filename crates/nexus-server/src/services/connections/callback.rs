//! `GET /auth/callback`: the provider sends the user back; Nexus checks the
//! state, exchanges the code and activates the connection.

use super::{audit, client_config_at, context, endpoints_with, param_bool, param_map, param_str};
use crate::error::ApiError;
use crate::middleware::Caller;
use crate::services::state_token::{self, StateProblem};
use crate::services::{connection_config, tenant_discovery};
use crate::state::AppState;
use nexus_core::{AuditEvent, SecretString};
use nexus_store::{Activation, ConnectionRow, Invalidation};
use serde::Deserialize;
use serde_json::{json, Value};

/// What the callback answers: a redirect to the return URL, or a plain page
/// when the state cannot be trusted.
#[derive(Debug)]
pub enum CallbackOutcome {
    Redirect(String),
    Untrusted(&'static str),
}

/// Query parameters of `GET /auth/callback`.
#[derive(Debug, Default, Deserialize)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub iss: Option<String>,
    /// Everything else the provider put in the query; only the names
    /// `params.connection_config_from_callback` lists are kept.
    #[serde(flatten)]
    pub extra: std::collections::HashMap<String, String>,
}

fn redirect_to(return_url: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(return_url) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
            }
            u.to_string()
        }
        Err(_) => return_url.to_owned(),
    }
}

fn error_code(raw: &str) -> String {
    let code: String =
        raw.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.' || *c == '-').take(64).collect();
    if code.is_empty() {
        "error".into()
    } else {
        code
    }
}

/// `GET /auth/callback`.
pub async fn callback(state: &AppState, caller: &Caller, q: CallbackQuery) -> CallbackOutcome {
    let Some(raw_state) = q.state.as_deref() else {
        return CallbackOutcome::Untrusted("The authorization response has no state.");
    };
    let claims = match state_token::verify(&state.config.state_signer, raw_state, state.clock.now_secs()) {
        Ok(c) => c,
        Err(StateProblem::Expired) => {
            return CallbackOutcome::Untrusted("This authorization link has expired. Start again.")
        }
        Err(StateProblem::Invalid) => return CallbackOutcome::Untrusted("The authorization state is not valid."),
    };
    let conn = match state.store.consume_state(&claims.connection_id, &claims.nonce).await {
        Ok(Some(row)) => row,
        Ok(None) => return CallbackOutcome::Untrusted("This authorization response was already used or has expired."),
        Err(e) => {
            tracing::error!(error = %e, "consuming state failed");
            return CallbackOutcome::Untrusted("The authorization could not be completed. Try again.");
        }
    };
    match complete(state, caller, &conn, &q).await {
        Ok(()) => CallbackOutcome::Redirect(redirect_to(
            &conn.return_url,
            &[("connection_id", &conn.id), ("status", "success")],
        )),
        Err(code) => {
            let audit_row = audit(Some(caller), AuditEvent::ConnectionFailed, &conn, json!({ "error": code }));
            if let Err(e) = state.store.fail_connection(&conn.id, &code, audit_row).await {
                tracing::error!(error = %e, connection = %conn.id, "could not record a failed connection");
            }
            state.invalidate(Invalidation::Connection(conn.id.clone()));
            CallbackOutcome::Redirect(redirect_to(
                &conn.return_url,
                &[("connection_id", &conn.id), ("status", "error"), ("error", &code)],
            ))
        }
    }
}

/// Finishes a trusted callback; `Err(code)` is the error reported to the return URL.
async fn complete(state: &AppState, caller: &Caller, conn: &ConnectionRow, q: &CallbackQuery) -> Result<(), String> {
    if let Some(err) = &q.error {
        return Err(error_code(err));
    }
    let provider = match state.store.provider_by_id(&conn.provider_id).await {
        Ok(Some(p)) => p,
        Ok(None) => return Err("provider_deleted".into()),
        Err(_) => return Err("server_error".into()),
    };
    let mut config = conn.handshake_config.clone().unwrap_or_else(|| conn.connection_config.clone());
    connection_config::learn_from_callback(&provider.config, &q.extra, &mut config);
    let unusable = |e: ApiError| {
        tracing::warn!(connection = %conn.id, error = %e.message, "no usable token endpoint");
        e.code.as_str().to_owned()
    };
    let discovery = tenant_discovery::for_connection(state, &provider, &config).await.map_err(unusable)?;
    let issuer = tenant_discovery::issuer(&provider.config, &config).map_err(unusable)?;
    // RFC 9207: an `iss` in the callback must be the issuer whose keys
    // verify (a discovered one, or one configured with its jwks_uri).
    let expected_issuer = issuer.as_deref().filter(|_| discovery.is_some() || provider.config.jwks_uri.is_some());
    if let (Some(iss), Some(expected)) = (q.iss.as_deref(), expected_issuer) {
        if iss.trim_end_matches('/') != expected.trim_end_matches('/') {
            return Err("invalid_issuer".into());
        }
    }
    let Some(code) = q.code.as_deref().filter(|c| !c.is_empty() && c.len() <= 4096) else {
        return Err("missing_code".into());
    };
    let endpoints = endpoints_with(&provider, discovery.as_ref(), &config).map_err(unusable)?;
    let jwks = endpoints.jwks_uri.clone();
    let cfg = client_config_at(state, &provider, endpoints).map_err(unusable)?;
    let verifier = conn
        .pkce_verifier_enc
        .as_deref()
        .and_then(|enc| state.config.keyring.open_string(&context(&conn.id, "pkce_verifier"), enc).ok())
        .ok_or_else(|| "server_error".to_owned())?;
    let verifier = SecretString::new(verifier.as_str());
    let scopes = (!param_bool(&provider, "skip_scope_on_exchange"))
        .then(|| (conn.scopes.as_slice(), param_str(&provider, "scope_separator").unwrap_or(" ")));
    let http = nexus_oauth::ProviderHttp::new(state.http.clone());
    let tokens =
        nexus_oauth::exchange_code(&http, &cfg, code, &verifier, scopes, &param_map(&provider, "token_params"))
            .await
            .map_err(|e| {
            tracing::warn!(connection = %conn.id, error = %e, "code exchange failed");
            e.code()
        })?;

    let mut id_token_verified = false;
    if let Some(id_token) = &tokens.id_token {
        match (issuer, jwks, conn.oidc_nonce.as_deref()) {
            (Some(issuer), Some(jwks), Some(nonce)) => {
                let check = nexus_oauth::IdTokenCheck {
                    issuer: &issuer,
                    jwks_uri: &jwks,
                    client_id: &cfg.client_id,
                    client_secret: &cfg.client_secret,
                    nonce,
                };
                crate::services::key_sets::verify(state, id_token, &check).await.map_err(|why| {
                    tracing::warn!(connection = %conn.id, reason = %why, "id_token rejected");
                    "invalid_id_token".to_owned()
                })?;
                id_token_verified = true;
            }
            (_, _, None) => return Err("unexpected_id_token".into()),
            // Keys configured but not expandable for this connection: never
            // keep an id_token unverified that the provider said to verify.
            _ if provider.config.jwks_uri.is_some() => {
                tracing::warn!(connection = %conn.id, "id_token refused: the provider's jwks_uri does not expand for this connection");
                return Err("invalid_id_token".into());
            }
            _ => tracing::warn!(connection = %conn.id, "id_token kept unverified: the provider has no discovered JWKS"),
        }
    }

    let mut answer = tokens.extras.clone();
    if let Some(scope) = &tokens.scope {
        answer.insert("scope".into(), Value::String(scope.clone()));
    }
    connection_config::learn_from(&provider.config, "connection_config_from_token", &answer, &mut config);
    if provider.config.params.contains_key("connection_config_from_userinfo") {
        // Mailchimp names its data centre only in the answer of its
        // metadata endpoint, asked with the new token.
        let url = connection_config::user_info_url(&provider.config, &config).ok().flatten();
        let learned = match url {
            Some(url) => http.get_json(&url, tokens.access_token.expose()).await,
            None => Err("user_info_endpoint does not expand for this connection".into()),
        };
        match learned {
            Ok(info) => {
                connection_config::learn_from(&provider.config, "connection_config_from_userinfo", &info, &mut config)
            }
            Err(why) => {
                tracing::warn!(connection = %conn.id, reason = %why, "the user-info endpoint gave no values");
                return Err("provider_unavailable".into());
            }
        }
    }
    if let Err(why) = connection_config::check_all(&provider.config, &config) {
        // A value the provider gave points where the provider may not send us.
        tracing::warn!(connection = %conn.id, reason = %why, "the provider's values do not expand to allowed URLs");
        return Err("provider_misconfigured".into());
    }

    let mut credentials = tokens.extras.clone();
    credentials.insert("access_token".into(), Value::String(tokens.access_token.expose().to_owned()));
    credentials.insert("token_type".into(), Value::String(tokens.token_type.clone()));
    let granted_scope = tokens.scope.clone().unwrap_or_else(|| conn.scopes.join(" "));
    credentials.insert("scope".into(), Value::String(granted_scope));
    if let Some(id_token) = &tokens.id_token {
        credentials.insert("id_token".into(), Value::String(id_token.clone()));
    }
    let activation = Activation {
        credentials_enc: state
            .config
            .keyring
            .seal(&context(&conn.id, "credentials"), Value::Object(credentials).to_string().as_bytes()),
        refresh_token_enc: tokens
            .refresh_token
            .as_ref()
            .map(|r| state.config.keyring.seal(&context(&conn.id, "refresh_token"), r.expose().as_bytes())),
        expires_at: tokens.expires_in.map(|s| state.clock.now_secs() + s as i64),
        scopes: None,
        next_refresh_at: tokens.refresh_token.as_ref().and(tokens.expires_in).map(|s| {
            crate::services::refresh::renew_at(state.clock.now_secs() + s as i64, state.config.refresh_window_secs)
        }),
        connection_config: config,
    };
    let data = json!({ "auth_type": "oauth2", "id_token_verified": id_token_verified, "refresh_token": tokens.refresh_token.is_some() });
    let stored = state
        .store
        .activate_connection(
            &conn.id,
            None,
            &activation,
            audit(Some(caller), AuditEvent::ConnectionActivated, conn, data),
        )
        .await;
    state.invalidate(Invalidation::Connection(conn.id.clone()));
    match stored {
        Ok(true) => Ok(()),
        Ok(false) => Err("connection_revoked".into()),
        Err(e) => {
            tracing::error!(error = %e, "storing tokens failed");
            Err("server_error".into())
        }
    }
}
