//! The seven registrations of the provider guide, sent verbatim (the Google
//! issuer replaced by a real local OpenID provider's).

use nexus_testkit::oidc::{OidcOptions, OidcProvider};
use nexus_testkit::{both_backends, Backend, TestApp};
use serde_json::{json, Value};

pub fn seed_examples(issuer: &str) -> Vec<Value> {
    vec![
        json!({
            "name": "google-workspace",
            "auth_type": "oauth2",
            "client_id": "YOUR_CLIENT_ID",
            "client_secret": "YOUR_CLIENT_SECRET",
            "issuer": issuer,
            "enable_discovery": true,
            "scopes": ["openid", "email", "profile", "offline_access"]
        }),
        json!({
            "name": "github",
            "auth_type": "oauth2",
            "client_id": "YOUR_CLIENT_ID",
            "client_secret": "YOUR_CLIENT_SECRET",
            "auth_url": "https://github.com/login/oauth/authorize",
            "token_url": "https://github.com/login/oauth/access_token",
            "scopes": ["repo", "read:user"]
        }),
        json!({
            "name": "airtable",
            "auth_type": "api_key",
            "params": {"credential_schema": {"type": "object", "required": ["api_key"],
                "properties": {"api_key": {"type": "string", "title": "Personal Access Token"}}}}
        }),
        json!({
            "name": "jira-basic",
            "auth_type": "basic_auth",
            "params": {"credential_schema": {"type": "object", "required": ["username", "password"],
                "properties": {"username": {"type": "string", "title": "Username"},
                               "password": {"type": "string", "title": "Password", "format": "password"}}}}
        }),
        json!({
            "name": "bedrock-us-east",
            "auth_type": "aws_sigv4",
            "params": {"service": "bedrock", "region": "us-east-1",
                "credential_schema": {"type": "object", "required": ["access_key", "secret_key"],
                    "properties": {"access_key": {"type": "string", "title": "AWS Access Key ID"},
                                   "secret_key": {"type": "string", "title": "AWS Secret Access Key"}}}}
        }),
        json!({
            "name": "weatherapi",
            "auth_type": "query_param",
            "params": {"param_name": "api_token",
                "credential_schema": {"type": "object", "required": ["api_key"],
                    "properties": {"api_key": {"type": "string", "title": "API Token"}}}}
        }),
        json!({
            "name": "webhook-hmac",
            "auth_type": "hmac_payload",
            "params": {"header_name": "X-Signature", "algo": "sha256", "encoding": "hex",
                "credential_schema": {"type": "object", "required": ["api_secret"],
                    "properties": {"api_secret": {"type": "string", "title": "Signing Secret"}}}}
        }),
    ]
}

async fn seed_examples_are_accepted_and_grouped(backend: Backend) {
    let idp = OidcProvider::start(OidcOptions::default()).await.expect("oidc-provider starts");
    let app = TestApp::spawn(backend).await;
    let mut ids = Vec::new();
    for example in seed_examples(&idp.issuer()) {
        let resp = app.post("/v1/providers", &example).await;
        assert_eq!(resp.status, 201, "{} -> {}", example["name"], resp.text);
        assert_eq!(resp.json["name"], example["name"]);
        assert_eq!(resp.json["auth_type"], example["auth_type"]);
        assert!(resp.json.get("client_secret").is_none());
        ids.push((example["auth_type"].as_str().unwrap().to_owned(), resp.json["id"].as_str().unwrap().to_owned()));
    }

    let google = app.get("/v1/providers/google-workspace").await;
    assert_eq!(google.status, 200);
    let issuer = idp.issuer();
    assert_eq!(
        google.json["discovery"]["authorization_endpoint"]
            .as_str()
            .unwrap()
            .split('/')
            .take(3)
            .collect::<Vec<_>>()
            .join("/"),
        issuer
    );
    assert!(google.json["discovery"]["token_endpoint"].as_str().unwrap().starts_with(&issuer));
    assert!(google.json["discovery"]["jwks_uri"].as_str().unwrap().starts_with(&issuer));
    assert!(google.json["discovery"]["revocation_endpoint"].as_str().unwrap().starts_with(&issuer));
    assert_eq!(google.json["client_secret_set"], true);
    assert!(google.json["client_secret_fingerprint"].as_str().unwrap().starts_with("sha256:"));

    let meta = app.get("/v1/providers/metadata").await;
    assert_eq!(meta.status, 200, "{}", meta.text);
    for (auth_type, id) in &ids {
        let group = meta.json[auth_type].as_array().unwrap_or_else(|| panic!("no group {auth_type}: {}", meta.text));
        let entry = group.iter().find(|e| e["id"] == id.as_str()).expect("provider in its group");
        let mut keys: Vec<&str> = entry.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            ["api_base_url", "category", "description", "display_name", "id", "name", "scopes", "user_info_endpoint"]
        );
        // A connection UI can show a name: the display name defaults to it.
        assert!(entry["name"].as_str().is_some_and(|n| !n.is_empty()), "{entry}");
        assert_eq!(entry["display_name"], entry["name"], "{entry}");
    }
    assert_eq!(meta.json["oauth2"].as_array().unwrap().len(), 2);
    let github_meta = meta.json["oauth2"].as_array().unwrap().iter().find(|e| e["id"] == ids[1].1.as_str()).unwrap();
    assert_eq!(github_meta["scopes"], json!(["repo", "read:user"]));

    let listed = app.get("/v1/providers").await;
    assert_eq!(listed.json.as_array().unwrap().len(), 7);
    let oauth = app.get("/v1/providers?auth_type=oauth2").await;
    assert_eq!(oauth.json.as_array().unwrap().len(), 2);
    let header_alias = app.get("/v1/providers?auth_type=header").await;
    assert_eq!(header_alias.json.as_array().unwrap().len(), 1);
    assert_eq!(header_alias.json[0]["name"], "airtable");
    app.assert_no_secret_in_responses();
    assert!(!app.bodies().join("\n").contains("YOUR_CLIENT_SECRET"));
}

both_backends!(seed_examples_are_accepted_and_grouped);
