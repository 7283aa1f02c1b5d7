//! The provider catalog (SPEC 12) through the real server: every template
//! registers with placeholder credentials, every OAuth template's
//! authorization URL is well formed on the provider's own host with the
//! template's scopes and parameters, and a copy keeps its overrides and its
//! provenance.

use nexus_testkit::{both_backends, Backend, TestApp};
use serde_json::{json, Map, Value};

const RETURN_URL: &str = "https://app.example.org/connected";

/// A value for each property of a template's `connection_config_schema`:
/// its `default`, its first `enum` or `examples` value, else `acme`.
fn sample_config(entry: &Value) -> Map<String, Value> {
    let mut config = Map::new();
    let props = entry.pointer("/provider/params/connection_config_schema/properties").and_then(Value::as_object);
    for (name, schema) in props.into_iter().flatten() {
        let value = schema
            .get("default")
            .or_else(|| schema.pointer("/enum/0"))
            .or_else(|| schema.pointer("/examples/0"))
            .cloned()
            .unwrap_or_else(|| json!("acme"));
        config.insert(name.clone(), value);
    }
    config
}

/// `raw` with each `{name}` / `{+name}` replaced from `config` (the sample
/// values are plain host labels, so no encoding is at stake here).
fn expand(raw: &str, config: &Map<String, Value>) -> String {
    let mut out = raw.to_owned();
    for (name, value) in config {
        let v = value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string());
        out = out.replace(&format!("{{{name}}}"), &v).replace(&format!("{{+{name}}}"), &v);
    }
    out
}

fn placeholders(entry: &Value) -> Value {
    let auth_type = entry["provider"]["auth_type"].as_str().unwrap();
    let captured = entry.pointer("/provider/params/credential_schema").is_some();
    let mut body = json!({"template": entry["name"]});
    if auth_type == "oauth2" || auth_type == "oauth2_client_credentials" && !captured {
        body["client_id"] = json!("placeholder-client-id");
        body["client_secret"] = json!("placeholder-client-secret");
    }
    body
}

async fn every_template_registers_and_builds_its_authorization_url(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let list = app.get("/v1/catalog").await;
    assert_eq!(list.status, 200, "{}", list.text);
    let names: Vec<String> =
        list.json.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect();
    assert!(names.len() >= 100, "{} templates", names.len());
    let mut oauth = 0;
    for name in &names {
        let entry = app.get(&format!("/v1/catalog/{name}")).await;
        assert_eq!(entry.status, 200, "{name}: {}", entry.text);
        let entry = entry.json;
        let created = app.post("/v1/providers", &placeholders(&entry)).await;
        assert_eq!(created.status, 201, "{name}: {}", created.text);
        assert_eq!(
            (created.json["template"].as_str(), created.json["template_version"].as_u64()),
            (Some(name.as_str()), entry["version"].as_u64()),
            "{name}"
        );
        assert_eq!(created.json["auth_type"], entry["provider"]["auth_type"], "{name}");
        if entry["provider"]["auth_type"] != "oauth2" {
            continue;
        }
        oauth += 1;
        let config = sample_config(&entry);
        let req = app
            .post(
                "/v1/request-connection",
                &json!({"workspace_id": "catalog-test", "provider_name": name, "return_url": RETURN_URL,
                        "connection_config": config}),
            )
            .await;
        assert_eq!(req.status, 200, "{name}: {}", req.text);
        let auth_url = url::Url::parse(req.json["auth_url"].as_str().unwrap()).expect("a well-formed URL");
        let documented = url::Url::parse(&expand(entry["provider"]["auth_url"].as_str().unwrap(), &config)).unwrap();
        assert_eq!(auth_url.scheme(), "https", "{name}: {auth_url}");
        assert_eq!(auth_url.host_str(), documented.host_str(), "{name}: on the provider's documented host");
        assert_eq!(auth_url.path(), documented.path(), "{name}");
        let query: std::collections::HashMap<String, String> = auth_url.query_pairs().into_owned().collect();
        assert_eq!(query.get("response_type").map(String::as_str), Some("code"), "{name}: {auth_url}");
        assert_eq!(query.get("client_id").map(String::as_str), Some("placeholder-client-id"), "{name}");
        assert_eq!(query.get("code_challenge_method").map(String::as_str), Some("S256"), "{name}");
        assert!(query.contains_key("code_challenge") && query.contains_key("state"), "{name}: {auth_url}");
        assert!(query.get("redirect_uri").is_some_and(|r| r.ends_with("/auth/callback")), "{name}: {auth_url}");
        let params = &entry["provider"]["params"];
        let scopes: Vec<&str> =
            entry["provider"]["scopes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        if params["skip_scope_on_auth"] == true || scopes.is_empty() {
            assert!(!query.contains_key("scope") || scopes.is_empty(), "{name}: {auth_url}");
        } else {
            let separator = params["scope_separator"].as_str().unwrap_or(" ");
            assert_eq!(
                query.get("scope").map(String::as_str),
                Some(scopes.join(separator).as_str()),
                "{name}: {auth_url}"
            );
        }
        for (key, value) in params["authorization_params"].as_object().into_iter().flatten() {
            let expected = value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string());
            assert_eq!(query.get(key), Some(&expected), "{name}: authorization param {key} in {auth_url}");
        }
    }
    assert!(oauth >= 40, "{oauth} OAuth templates");
    let providers = app.get("/v1/providers").await;
    assert_eq!(providers.json.as_array().unwrap().len(), names.len());
}

both_backends!(every_template_registers_and_builds_its_authorization_url);

async fn the_catalog_is_listed_filtered_and_shown(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let all = app.get("/v1/catalog").await;
    let all = all.json.as_array().unwrap().clone();
    let by = |q: &str| {
        let app = &app;
        let q = q.to_owned();
        async move {
            let r = app.get(&format!("/v1/catalog?{q}")).await;
            assert_eq!(r.status, 200, "{q}: {}", r.text);
            r.json.as_array().unwrap().clone()
        }
    };
    let oauth = by("auth_type=oauth2").await;
    assert!(!oauth.is_empty() && oauth.len() < all.len());
    assert!(oauth.iter().all(|e| e["auth_type"] == "oauth2"));
    let support = by("category=support").await;
    assert!(support.iter().any(|e| e["name"] == "zendesk") && support.iter().all(|e| e["category"] == "support"));
    let found = by("q=ZenDesk").await;
    assert!(found.iter().any(|e| e["name"] == "zendesk"), "{found:?}");
    assert!(by("q=nothing-is-called-this").await.is_empty());
    assert_eq!(by("q=").await.len(), all.len(), "an empty filter is no filter");

    assert_eq!(by("category=").await.len(), all.len(), "an empty category is no filter");
    for bad in ["auth_type=oauth3", "nope=1"] {
        let r = app.get(&format!("/v1/catalog?{bad}")).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert_eq!(r.json["code"], "invalid_input", "{bad}");
    }
    let long = app.get(&format!("/v1/catalog?q={}", "a".repeat(300))).await;
    assert_eq!(long.status, 400, "{}", long.text);
    assert_eq!(long.json["details"]["fields"][0]["field"], "q", "{}", long.text);

    let zendesk = app.get("/v1/catalog/zendesk").await;
    assert_eq!(zendesk.status, 200);
    assert_eq!(zendesk.json["provider"]["params"]["allowed_hosts"], json!(["*.zendesk.com"]));
    assert!(zendesk.json["docs_url"].as_str().unwrap().starts_with("https://developer.zendesk.com/"));
    assert_eq!(zendesk.json["logo_url"], "/catalog/zendesk/logo.svg");
    let missing = app.get("/v1/catalog/no-such-template").await;
    assert_eq!((missing.status, missing.code()), (404, "not_found"));

    // Logos are public (the Connect pages show them) and can only draw.
    let logo = app.client.get(app.url("/catalog/zendesk/logo.svg")).send().await.unwrap();
    assert_eq!(logo.status(), 200);
    let headers = logo.headers().clone();
    assert_eq!(headers["content-type"], "image/svg+xml");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(headers["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    assert!(logo.text().await.unwrap().starts_with("<svg"));
    let none = app.client.get(app.url("/catalog/no-such-template/logo.svg")).send().await.unwrap();
    assert_eq!(none.status(), 404);
    // The catalog itself needs the API key.
    let anonymous = app.client.get(app.url("/v1/catalog")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

both_backends!(the_catalog_is_listed_filtered_and_shown);

async fn a_copy_keeps_its_overrides_and_its_provenance(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.remember_secret("zd-secret-value-1");
    let entry = app.get("/v1/catalog/zendesk").await.json;
    let version = entry["version"].as_u64().unwrap();
    let created = app
        .post(
            "/v1/providers",
            &json!({"template": "zendesk", "name": "zendesk-eu", "client_id": "zd-client",
                    "client_secret": "zd-secret-value-1", "scopes": ["read"],
                    "params": {"allowed_hosts": ["*.zendesk.com", "*.zendesk.eu"]}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let p = &created.json;
    assert_eq!(
        (p["name"].as_str(), p["template"].as_str(), p["template_version"].as_u64()),
        (Some("zendesk-eu"), Some("zendesk"), Some(version))
    );
    assert_eq!(p["display_name"], entry["display_name"]);
    assert_eq!(p["auth_url"], entry["provider"]["auth_url"], "the template's fields");
    assert_eq!(p["scopes"], json!(["read"]), "the body's over them");
    assert_eq!(p["params"]["allowed_hosts"], json!(["*.zendesk.com", "*.zendesk.eu"]));
    assert_eq!(
        p["params"]["connection_config_schema"], entry["provider"]["params"]["connection_config_schema"],
        "params merge: the template's other keys stay"
    );
    assert_eq!(p["client_secret_set"], true);

    // Metadata shows the template's logo; a provider of its own has none.
    let meta = app.get("/v1/providers/metadata").await;
    let zd = meta.json["oauth2"].as_array().unwrap().iter().find(|e| e["name"] == "zendesk-eu").unwrap();
    assert_eq!(zd["logo_url"], "/catalog/zendesk/logo.svg");

    // From then on it is edited like any provider; the provenance stays.
    let patched = app.patch("/v1/providers/zendesk-eu", &json!({"description": "EU accounts"})).await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(
        (patched.json["template"].as_str(), patched.json["description"].as_str()),
        (Some("zendesk"), Some("EU accounts"))
    );
    // A GET's answer PUT back is a whole provider: taken as it is.
    let mut whole = patched.json.clone();
    for k in ["id", "created_at", "updated_at", "client_secret_set", "client_secret_fingerprint", "discovery"] {
        whole.as_object_mut().unwrap().remove(k);
    }
    whole["params"].as_object_mut().unwrap().remove("connection_config_schema");
    let put = app.put("/v1/providers/zendesk-eu", &whole).await;
    assert_eq!(put.status, 400, "the URL templates need their schema back: {}", put.text);
    let put = app.put("/v1/providers/zendesk-eu", &json!({"template": "zendesk", "client_id": "zd-client-2"})).await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(
        (put.json["name"].as_str(), put.json["client_id"].as_str()),
        (Some("zendesk-eu"), Some("zd-client-2")),
        "PUT with a template copies it again, keeping the provider's name"
    );
    assert_eq!(put.json["params"], entry["provider"]["params"]);
    assert_eq!(put.json["client_secret_set"], true, "a stored secret is kept");

    // Another template is a fresh copy (PUT), never a PATCH; a wrapped PUT keeps the name too.
    let other = app.patch("/v1/providers/zendesk-eu", &json!({"template": "stripe"})).await;
    assert_eq!(other.status, 400, "{}", other.text);
    assert_eq!(other.json["details"]["fields"][0]["field"], "template");
    let wrapped =
        app.put("/v1/providers/zendesk-eu", &json!({"profile": {"template": "zendesk", "client_id": "zd-3"}})).await;
    assert_eq!((wrapped.status, wrapped.json["name"].as_str()), (200, Some("zendesk-eu")), "{}", wrapped.text);
    // A PUT copy with a null secret removes it, as any PUT does (then oauth2 needs one).
    let cleared = app
        .put("/v1/providers/zendesk-eu", &json!({"template": "zendesk", "client_id": "zd-3", "client_secret": null}))
        .await;
    assert_eq!(cleared.status, 400, "{}", cleared.text);
    assert_eq!(cleared.json["details"]["fields"][0]["field"], "client_secret", "{}", cleared.text);
    // Provenance cannot be made up: a template the catalog lacks, or a version it never had.
    for (body, field) in [
        (
            json!({"name": "forged-1", "template": "stripe", "template_version": 99, "auth_type": "api_key",
                "params": {"credential_schema": {"type": "object"}}}),
            "template_version",
        ),
        (
            json!({"name": "forged-2", "template": "no-such-template", "template_version": 1, "auth_type": "api_key",
                "params": {"credential_schema": {"type": "object"}}}),
            "template",
        ),
    ] {
        let r = app.post("/v1/providers", &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.json["details"]["fields"][0]["field"], field, "{}", r.text);
    }
    let forged = app.patch("/v1/providers/zendesk-eu", &json!({"template_version": 99})).await;
    assert_eq!(forged.status, 400, "{}", forged.text);

    // Hostile template values: refused, naming the field, nothing written.
    let before = app.audit_count().await;
    for (body, field) in [
        (json!({"template": "no-such-template", "client_id": "c", "client_secret": "s"}), "template"),
        (json!({"template": {"name": "zendesk"}}), "template"),
        (json!({"template": ["zendesk"]}), "template"),
        (json!({"template": "../zendesk"}), "template"),
        (json!({"template": "a".repeat(10_000)}), "template"),
        (
            json!({"name": "x1", "auth_type": "api_key", "template_version": 3,
                "params": {"credential_schema": {"type": "object"}}}),
            "template_version",
        ),
        (
            json!({"template": "stripe", "name": "s2", "params": {"header_name": "Bad Header\r\n"}}),
            "params.header_name",
        ),
        (json!({"template": "zendesk", "client_id": "c"}), "client_secret"),
        // A key set elsewhere than the issuer's, or off the URL policy.
        (
            json!({"template": "okta", "client_id": "c", "client_secret": "s", "jwks_uri": "https://{evil}/keys",
                "params": {"connection_config_schema": {"type": "object", "properties": {"domain": {"type": "string"}, "evil": {"type": "string"}}}}}),
            "jwks_uri",
        ),
        (
            json!({"template": "google", "client_id": "c", "client_secret": "s", "jwks_uri": "http://keys.example.org/certs"}),
            "jwks_uri",
        ),
        (json!({"template": "google", "client_id": "c", "client_secret": "s", "issuer": null}), "jwks_uri"),
    ] {
        let r = app.post("/v1/providers", &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        let fields: Vec<&str> = r.json["details"]["fields"]
            .as_array()
            .map(|f| f.iter().filter_map(|x| x["field"].as_str()).collect())
            .unwrap_or_default();
        assert!(fields.contains(&field), "{body}: {} names {field}", r.text);
        assert!(!r.text.contains(&"a".repeat(200)), "the error does not echo a huge value");
    }
    let nul =
        app.post("/v1/providers", &json!({"template": "zendesk\u{0}", "client_id": "c", "client_secret": "s"})).await;
    assert_eq!((nul.status, nul.code()), (400, "invalid_input"), "{}", nul.text);
    assert_eq!(app.audit_count().await, before, "nothing was written");
    app.assert_no_secret_in_responses();
}

both_backends!(a_copy_keeps_its_overrides_and_its_provenance);

/// API keys as the templates say to send them (a header of its own, a
/// prefix, a version header), seen by a recording upstream standing in for
/// the API's host.
async fn api_key_templates_sign_as_their_entries_say(backend: Backend) {
    use nexus_testkit::upstream::{capture_connection, recording_upstream, seen_after};
    let app = TestApp::spawn(backend).await;
    let (addr, seen) = recording_upstream().await;
    let cases = [
        (
            "anthropic",
            "sk-ant-api03-catalogtest",
            "x-api-key",
            "sk-ant-api03-catalogtest",
            Some(("anthropic-version", "2023-06-01")),
        ),
        ("stripe", "sk_test_catalogtest123", "authorization", "Bearer sk_test_catalogtest123", None),
        (
            "pagerduty",
            "pd-catalog-key-1",
            "authorization",
            "Token token=pd-catalog-key-1",
            Some(("accept", "application/vnd.pagerduty+json;version=2")),
        ),
    ];
    for (template, key, header, value, extra) in cases {
        app.remember_secret(key);
        let created = app
            .post("/v1/providers", &json!({"template": template, "api_base_url": format!("http://{addr}/{template}")}))
            .await;
        assert_eq!(created.status, 201, "{template}: {}", created.text);
        let id = capture_connection(&app, template, json!({}), json!({"api_key": key})).await;
        let before = seen.lock().unwrap().len();
        let resp =
            app.send(app.client.get(app.url(&format!("/v1/proxy/{id}/check"))).header("x-api-key", &app.api_key)).await;
        assert_eq!(resp.status, 200, "{template}: {}", resp.text);
        let got = seen_after(&seen).split_off(before);
        assert_eq!(got.len(), 1, "{template}");
        assert_eq!(got[0].uri, format!("/{template}/check"));
        assert_eq!(got[0].header(header), Some(value), "{template}: {:?}", got[0].headers);
        if let Some((name, v)) = extra {
            assert_eq!(got[0].header(name), Some(v), "{template}: {:?}", got[0].headers);
        }
    }
}

both_backends!(api_key_templates_sign_as_their_entries_say);

/// An OpenID template carries its issuer and key set (no discovery at
/// registration): the id_token is verified against them. Tested with the
/// Google template's endpoints moved to a real OpenID provider; with the
/// template's own issuer left in place, the same provider's answer is
/// refused (its callback names another issuer, RFC 9207).
async fn an_openid_template_verifies_id_tokens_with_its_own_keys(backend: Backend) {
    use nexus_testkit::flows;
    let (app, idp) = flows::setup(backend, "client_secret_post").await;
    let moved = json!({"client_id": "nexus-client", "client_secret": "nexus-client-secret-1",
        "auth_url": idp.url("/auth"), "token_url": idp.url("/token"), "revocation_url": idp.url("/token/revocation"),
        "api_base_url": idp.issuer(), "user_info_endpoint": "/me", "jwks_uri": idp.url("/jwks")});
    let mut body = moved.clone();
    body["template"] = json!("google");
    body["issuer"] = json!(idp.issuer());
    let created = app.post("/v1/providers", &body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert!(created.json.get("discovery").is_none_or(Value::is_null), "nothing discovered: {}", created.text);
    let id = flows::connect(&app, "google", json!(["openid", "email", "profile"])).await;
    app.state.flush_audit().await;
    let audit = app.get("/v1/audit?event_type=connection.activated").await;
    let entry = audit.json["entries"].as_array().unwrap().iter().find(|e| e["connection_id"] == id).unwrap().clone();
    assert_eq!(entry["data"]["id_token_verified"], true, "{entry}");
    // The template's revocation endpoint (moved with it) is told when the connection goes.
    let revoked = app.delete(&format!("/v1/connections/{id}")).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    app.state.flush_audit().await;
    let audit = app.get("/v1/audit?event_type=connection.revoked").await;
    assert_eq!(audit.json["entries"][0]["data"]["provider_revocation"], "ok", "{}", audit.text);

    let mut other = moved;
    other["template"] = json!("google");
    other["name"] = json!("google-own-issuer");
    let created = app.post("/v1/providers", &other).await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.json["issuer"], "https://accounts.google.com");
    let req = flows::request(&app, "google-own-issuer", json!(["openid", "email"])).await;
    assert_eq!(req.status, 200, "{}", req.text);
    let cb = nexus_testkit::oidc::authorize_via_browser(
        req.json["auth_url"].as_str().unwrap(),
        "alice",
        true,
        &app.url("/auth/callback"),
    )
    .await
    .expect("consent");
    let resp = flows::callback(&app, cb.as_str()).await;
    let back = flows::query(&flows::location(&resp));
    assert_eq!(
        (back.get("status").map(String::as_str), back.get("error").map(String::as_str)),
        (Some("error"), Some("invalid_issuer")),
        "RFC 9207: the callback's iss is not the template's issuer: {back:?}"
    );
    idp.stop().await.unwrap();
}

both_backends!(an_openid_template_verifies_id_tokens_with_its_own_keys);

/// An app-only template (PayPal's client credentials, HTTP Basic) against
/// a real OpenID provider's token endpoint: connected at request-connection,
/// its token signed onto a request.
async fn a_client_credentials_template_connects_at_once(backend: Backend) {
    use nexus_testkit::oidc::{OidcOptions, OidcProvider};
    use nexus_testkit::upstream::{recording_upstream, seen_after};
    let client = json!({"client_id": "paypal-app", "client_secret": "paypal-secret-7c1e", "token_endpoint_auth_method": "client_secret_basic",
                        "grant_types": ["client_credentials"], "response_types": [], "redirect_uris": []});
    let idp = OidcProvider::start(OidcOptions { clients: json!([client]), ..OidcOptions::default() })
        .await
        .expect("oidc-provider");
    let app = TestApp::spawn(backend).await;
    app.remember_secret("paypal-secret-7c1e");
    let (addr, seen) = recording_upstream().await;
    let created = app
        .post(
            "/v1/providers",
            &json!({"template": "paypal", "client_id": "paypal-app", "client_secret": "paypal-secret-7c1e",
                                       "token_url": idp.url("/token"), "api_base_url": format!("http://{addr}")}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.json["auth_header"], "client_secret_basic", "the template's client authentication");
    let req = app.post("/v1/request-connection", &json!({"workspace_id": "w", "provider_name": "paypal"})).await;
    assert_eq!((req.status, req.json["status"].as_str()), (201, Some("active")), "{}", req.text);
    let id = req.json["connection_id"].as_str().unwrap();
    let token = app.get(&format!("/v1/token/{id}")).await;
    let access = token.json["credentials"]["access_token"].as_str().unwrap().to_owned();
    let resp = app
        .send(
            app.client
                .get(app.url(&format!("/v1/proxy/{id}/v1/identity/oauth2/userinfo")))
                .header("x-api-key", &app.api_key),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let got = seen_after(&seen);
    assert_eq!(got.last().unwrap().header("authorization"), Some(format!("Bearer {access}").as_str()));
    idp.stop().await.unwrap();
}

both_backends!(a_client_credentials_template_connects_at_once);
