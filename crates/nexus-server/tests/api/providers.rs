//! The provider registry: CRUD, merge-patch, secrets, name rules, orphan counts.

use nexus_testkit::{both_backends, Backend, TestApp};
use serde_json::{json, Value};

pub fn github(name: &str, secret: &str) -> Value {
    json!({
        "name": name,
        "auth_type": "oauth2",
        "client_id": "client-123",
        "client_secret": secret,
        "auth_url": "https://github.com/login/oauth/authorize",
        "token_url": "https://github.com/login/oauth/access_token",
        "api_base_url": "https://api.github.com",
        "user_info_endpoint": "/user",
        "scopes": ["repo", "read:user"],
        "category": "dev",
        "params": {"authorization_params": {"allow_signup": "false"}, "skip_scope_on_exchange": true}
    })
}

async fn provider_crud_round_trip(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = app.post("/v1/providers", &json!({"profile": github("github", "first-secret-value")})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_owned();
    assert_eq!(created.json["client_secret_set"], true);
    assert_eq!(created.json["params"]["skip_scope_on_exchange"], true);
    assert_eq!(created.json["params"]["authorization_params"]["allow_signup"], "false");
    let fp1 = created.json["client_secret_fingerprint"].as_str().unwrap().to_owned();

    // By id and by name.
    let by_id = app.get(&format!("/v1/providers/{id}")).await;
    let by_name = app.get("/v1/providers/github").await;
    assert_eq!(by_id.status, 200);
    assert_eq!(by_id.json, by_name.json);

    // The secret is sealed at rest.
    let row = app.store().provider_by_id(&id).await.unwrap().unwrap();
    let sealed = row.client_secret_enc.unwrap();
    assert!(sealed.starts_with("v1:") && !sealed.contains("first-secret-value"));

    // PATCH merges params (RFC 7396): add a key, drop one with null, keep the rest.
    let patched = app
        .patch(
            &format!("/v1/providers/{id}"),
            &json!({"params": {"skip_scope_on_exchange": null, "scope_separator": ","}, "description": "GitHub"}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert!(patched.json["params"].get("skip_scope_on_exchange").is_none());
    assert_eq!(patched.json["params"]["scope_separator"], ",");
    assert_eq!(patched.json["params"]["authorization_params"]["allow_signup"], "false");
    assert_eq!(patched.json["description"], "GitHub");
    assert_eq!(patched.json["client_secret_fingerprint"], fp1.as_str(), "secret untouched");

    // Rotating the secret changes the fingerprint and is audited with the field name only.
    let rotated = app.patch("/v1/providers/github", &json!({"client_secret": "rotated-secret-value"})).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let fp2 = rotated.json["client_secret_fingerprint"].as_str().unwrap().to_owned();
    assert_ne!(fp1, fp2);
    let audit = app.get(&format!("/v1/audit?event_type=provider.updated&provider={id}&limit=1")).await;
    let entry = &audit.json["entries"][0];
    assert_eq!(entry["data"]["changed_fields"], json!(["client_secret"]));
    assert_eq!(entry["ip"], "127.0.0.1");
    assert!(entry["user_agent"].is_string() || entry["user_agent"].is_null());
    assert!(chrono::DateTime::parse_from_rfc3339(entry["at"].as_str().unwrap()).is_ok());
    assert!(!audit.text.contains("rotated-secret-value"));

    // Renaming keeps the id; the old name is free; the fingerprint follows the name.
    let renamed = app.patch(&format!("/v1/providers/{id}"), &json!({"name": "github-enterprise"})).await;
    assert_eq!(renamed.status, 200, "{}", renamed.text);
    assert_eq!(renamed.json["id"], id.as_str());
    assert_eq!(app.get("/v1/providers/github").await.status, 404);
    assert_eq!(app.get("/v1/providers/github-enterprise").await.json["id"], id.as_str());

    // PUT replaces: fields not given are gone, the stored secret is kept.
    let mut replacement = github("github-enterprise", "unused");
    replacement.as_object_mut().unwrap().remove("client_secret");
    replacement.as_object_mut().unwrap().remove("category");
    let put = app.put(&format!("/v1/providers/{id}"), &replacement).await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert!(put.json.get("category").is_none());
    assert!(put.json.get("description").is_none());
    assert_eq!(put.json["client_secret_set"], true);

    // A connection that references it is counted as orphaned on delete.
    let now = chrono::Utc::now().timestamp_micros();
    sqlx::query("INSERT INTO connections (id, provider_id, workspace_id, status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind("conn-1").bind(&id).bind("ws-1").bind("active").bind(now).bind(now)
        .execute(app.store().pool()).await.unwrap();
    let deleted = app.delete(&format!("/v1/providers/{id}")).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_eq!(deleted.json["orphaned_connections"], 1);
    assert_eq!(app.get(&format!("/v1/providers/{id}")).await.status, 404);
    assert!(app.store().provider_by_id(&id).await.unwrap().is_none(), "secret removed with the row");
    let del_audit = app.get("/v1/audit?event_type=provider.deleted").await;
    let entry = &del_audit.json["entries"][0];
    assert_eq!(entry["provider_id"], id.as_str());
    assert_eq!(entry["data"]["orphaned_connections"], 1);
    assert_eq!(entry["ip"], "127.0.0.1");
    assert!(entry["at"].as_str().unwrap().ends_with('Z'));

    // The name is free again.
    assert_eq!(app.post("/v1/providers", &github("github-enterprise", "another-secret")).await.status, 201);
}

async fn static_types_and_aliases(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let schema = json!({"type": "object", "required": ["api_key"], "properties": {"api_key": {"type": "string"}}});
    let header = app
        .post("/v1/providers", &json!({"name": "stripe", "auth_type": "header", "auth_header": "X-Api-Token",
            "params": {"credential_schema": schema, "auth_strategy": "header", "value_prefix": "Token ", "custom_key": [1, 2]}}))
        .await;
    assert_eq!(header.status, 201, "{}", header.text);
    assert_eq!(header.json["auth_type"], "api_key");
    assert_eq!(header.json["auth_header"], "X-Api-Token");
    assert_eq!(header.json["params"]["custom_key"], json!([1, 2]), "unknown params are kept");
    assert_eq!(header.json["client_secret_set"], false);
    assert!(header.json["client_secret_fingerprint"].is_null());

    let twitter = app
        .post(
            "/v1/providers",
            &json!({"name": "twitter", "auth_type": "oauth2", "client_id": "c", "client_secret": "twitter-secret",
            "auth_url": "https://twitter.com/i/oauth2/authorize", "token_url": "https://api.twitter.com/2/oauth2/token",
            "auth_header": "client_secret_basic", "params": {"skip_scope_on_auth": true, "token_params": {"x": "y"}}}),
        )
        .await;
    assert_eq!(twitter.status, 201, "{}", twitter.text);
    assert_eq!(twitter.json["auth_header"], "client_secret_basic");
    assert_eq!(twitter.json["params"]["token_params"]["x"], "y");

    let by_category = app.get("/v1/providers?category=none").await;
    assert_eq!(by_category.json, json!([]));
}

async fn same_secret_for_two_providers_has_different_fingerprints(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.post("/v1/providers", &github("one", "shared-secret-value")).await;
    let b = app.post("/v1/providers", &github("two", "shared-secret-value")).await;
    assert_ne!(a.json["client_secret_fingerprint"], b.json["client_secret_fingerprint"]);
    // Setting the same secret again is not a change.
    let same = app.patch("/v1/providers/one", &json!({"client_secret": "shared-secret-value"})).await;
    assert_eq!(same.json["client_secret_fingerprint"], a.json["client_secret_fingerprint"]);
    assert_eq!(app.get("/v1/audit?event_type=provider.updated").await.json["entries"], json!([]));
}

async fn concurrent_creates_of_one_name_yield_one_provider(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bodies: Vec<_> = (0..8).map(|i| github("racy", &format!("secret-{i}-xxxx"))).collect();
    let attempts = bodies.iter().map(|b| app.post("/v1/providers", b));
    let results = futures::future::join_all(attempts).await;
    let created = results.iter().filter(|r| r.status == 201).count();
    assert_eq!(created, 1, "{:?}", results.iter().map(|r| r.status).collect::<Vec<_>>());
    assert!(results.iter().all(|r| r.status == 201 || (r.status == 409 && r.code() == "name_taken")));
    assert_eq!(app.store().count_providers().await.unwrap(), 1);
}

/// A provider whose discovery document is hostile (another issuer, a
/// token endpoint off loopback over plain http, a megabyte of issuer) is
/// refused with `400 discovery_failed` naming what is wrong, in a bounded
/// message, and nothing is written: no provider, no audit row.
async fn hostile_discovery_documents_register_nothing(backend: Backend) {
    use axum::response::IntoResponse;
    let app = TestApp::spawn(backend).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let docs = [
        ("another-issuer", json!({"issuer": "https://evil.example"}), "unexpected issuer"),
        ("token-endpoint", json!({"token_endpoint": "http://10.0.0.1/token"}), "token_endpoint"),
        ("huge-issuer", json!({"issuer": format!("https://{}.example", "x".repeat(1_000_000))}), "issuer"),
    ];
    let served: std::collections::HashMap<String, Value> = docs
        .iter()
        .map(|(name, patch, _)| {
            let at = format!("{issuer}/{name}");
            let mut doc = json!({
                "issuer": at,
                "authorization_endpoint": format!("{at}/auth"),
                "token_endpoint": format!("{at}/token"),
                "jwks_uri": format!("{at}/jwks"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            });
            for (k, v) in patch.as_object().unwrap() {
                doc[k] = v.clone();
            }
            (format!("/{name}/.well-known/openid-configuration"), doc)
        })
        .collect();
    let served = std::sync::Arc::new(served);
    let idp = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let served = served.clone();
        async move {
            match served.get(uri.path()) {
                Some(doc) => axum::Json(doc.clone()).into_response(),
                None => axum::Json(json!({"keys": []})).into_response(),
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, idp).await });
    let audit_before = app.audit_count().await;
    for (name, _, expected) in docs {
        let resp = app
            .post(
                "/v1/providers",
                &json!({"name": name, "auth_type": "oauth2", "client_id": "c", "client_secret": "hostile-secret-1",
                    "issuer": format!("{issuer}/{name}"), "enable_discovery": true}),
            )
            .await;
        assert_eq!((resp.status, resp.code()), (400, "discovery_failed"), "{name}: {}", resp.text);
        let message = resp.json["message"].as_str().unwrap();
        assert!(message.contains(expected), "{name}: {message}");
        assert!(message.len() < 1_000, "{name}: a message of {} bytes", message.len());
        assert!(!resp.text.contains("hostile-secret-1"));
    }
    let listed = app.get("/v1/providers").await;
    assert_eq!(listed.json.as_array().map(Vec::len), Some(0), "{}", listed.text);
    app.state.flush_audit().await;
    assert_eq!(app.audit_count().await, audit_before, "nothing audited as written");
}

both_backends!(
    hostile_discovery_documents_register_nothing,
    provider_crud_round_trip,
    static_types_and_aliases,
    same_secret_for_two_providers_has_different_fingerprints,
    concurrent_creates_of_one_name_yield_one_provider
);
