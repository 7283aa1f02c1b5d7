//! The published contract (`GET /openapi.json`): the document utoipa
//! collects from the handlers and the shared wire types, completed with what
//! every route has in common (the API key's `401`/`403`/`429`, a JSON body's
//! `400`/`413`/`415`, the database's `503`) and the routes that are not
//! plain JSON handlers (the proxies, the OAuth callback, the capture page and
//! this document itself). A test runs schemathesis against it, so a route or
//! a status that is not documented fails the build.

use serde_json::{json, Map, Value};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

fn add(responses: &mut Map<String, Value>, status: &str, description: &str) {
    responses.entry(status.to_owned()).or_insert_with(|| error_response(description));
}

/// No string in a request may hold a NUL character outside the free-form
/// members (PostgreSQL text cannot store one; `JsonBody` and `Query`
/// refuse them).
const NO_NUL: &str = "^[^\\u0000]*$";

/// Adds the NUL rule to every string of `schema` (free-form objects, stored
/// as JSON text, take any JSON).
fn forbid_nul(schema: &mut Value) {
    let Some(o) = schema.as_object_mut() else { return };
    let types: Vec<String> = match o.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    if types.iter().any(|t| t == "string") && !o.contains_key("pattern") && !o.contains_key("format") {
        o.insert("pattern".into(), json!(NO_NUL));
    }
    if let Some(Value::Object(props)) = o.get_mut("properties") {
        props.values_mut().for_each(forbid_nul);
    }
    if let Some(v @ Value::Object(_)) = o.get_mut("items") {
        forbid_nul(v);
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(vs)) = o.get_mut(key) {
            vs.iter_mut().for_each(forbid_nul);
        }
    }
}

/// Completes `doc` (as JSON) in place.
pub fn complete(doc: &mut Value) {
    if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        for name in ["ProviderInput", "RequestConnection", "CaptureRequest"] {
            if let Some(schema) = schemas.get_mut(name) {
                forbid_nul(schema);
            }
        }
        // Name the provider by id or by name: one of them is required.
        if let Some(rc) = schemas.get("RequestConnection").cloned() {
            for (variant, field) in [("ProviderId", "provider_id"), ("ProviderName", "provider_name")] {
                let mut v = rc.clone();
                if let Some(Value::Array(required)) = v.get_mut("required") {
                    required.push(json!(field));
                }
                if let Some(Value::Object(p)) = v.pointer_mut(&format!("/properties/{field}")) {
                    p.insert("type".into(), json!("string"));
                }
                schemas.insert(format!("RequestConnectionBy{variant}"), v);
            }
            schemas.insert(
                "RequestConnection".into(),
                json!({
                    "description": "The body of `POST /v1/request-connection`: the provider by `provider_id` or by `provider_name`.",
                    "anyOf": [
                        {"$ref": "#/components/schemas/RequestConnectionByProviderId"},
                        {"$ref": "#/components/schemas/RequestConnectionByProviderName"}
                    ]
                }),
            );
        }
    }
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, op) in item.iter_mut() {
            if !matches!(method.as_str(), "get" | "post" | "put" | "patch" | "delete") {
                continue;
            }
            let has_body = op.get("requestBody").is_some();
            if let Some(Value::Array(params)) = op.get_mut("parameters") {
                for p in params.iter_mut().filter(|p| p["in"] == "query") {
                    if let Some(schema) = p.get_mut("schema") {
                        forbid_nul(schema);
                    }
                }
            }
            let keyed = path.starts_with("/v1/");
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else { continue };
            if keyed {
                add(responses, "401", "unauthorized: the X-API-Key header is missing, wrong, revoked or expired");
                add(responses, "403", "forbidden: the key's role may not call this route, or the caller's address is not in ALLOWED_CIDRS");
                add(
                    responses,
                    "429",
                    "rate_limited: too many failed authentication attempts from this address; see Retry-After",
                );
                add(responses, "503", "storage_unavailable: the database is away; nothing was changed");
            }
            if has_body {
                add(responses, "400", "invalid_input or malformed_json: details.fields names what is wrong");
                add(responses, "413", "payload_too_large");
                add(responses, "415", "unsupported_media_type: send Content-Type: application/json");
            }
        }
    }
    // PATCH takes any subset of the fields, merged into the stored provider
    // (params as JSON Merge Patch, RFC 7396).
    if let Some(input) = doc.pointer("/components/schemas/ProviderInput").cloned() {
        let mut patch = input;
        if let Some(o) = patch.as_object_mut() {
            o.remove("required");
            o.insert("description".into(), json!("Any of the provider's fields; params merges as JSON Merge Patch."));
        }
        if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
            schemas.insert("ProviderPatch".into(), patch);
        }
        if let Some(body) =
            doc.pointer_mut("/paths/~1v1~1providers~1{id}/patch/requestBody/content/application~1json/schema")
        {
            *body = json!({"$ref": "#/components/schemas/ProviderPatch"});
        }
    }
    from_template(doc);
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in extra_paths() {
            paths.insert(path, item);
        }
    }
    add_links(doc);
}

/// `POST` and `PUT` take a whole provider, or a catalog template's name
/// with any fields over it (`name` and `auth_type` then come from the
/// template): two schemas, one of them required.
fn from_template(doc: &mut Value) {
    let Some(input) = doc.pointer("/components/schemas/ProviderInput").cloned() else { return };
    let mut copy = input;
    if let Some(o) = copy.as_object_mut() {
        o.insert("required".into(), json!(["template"]));
        o.insert(
            "description".into(),
            json!("A copy of a catalog template (GET /v1/catalog): the template's fields with these over them; params merge as JSON Merge Patch."),
        );
        let names: Vec<&str> = nexus_catalog::entries().iter().map(|e| e.name.as_str()).collect();
        if let Some(Value::Object(t)) = o.get_mut("properties").and_then(|p| p.get_mut("template")) {
            t.insert("enum".into(), json!(names));
            t.remove("pattern");
        }
    }
    if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        schemas.insert("ProviderFromTemplate".into(), copy);
    }
    let either = json!({"anyOf": [
        {"$ref": "#/components/schemas/ProviderInput"},
        {"$ref": "#/components/schemas/ProviderFromTemplate"}
    ]});
    for pointer in [
        "/paths/~1v1~1providers/post/requestBody/content/application~1json/schema",
        "/paths/~1v1~1providers~1{id}/put/requestBody/content/application~1json/schema",
    ] {
        if let Some(body) = doc.pointer_mut(pointer) {
            *body = either.clone();
        }
    }
}

/// Links from what creates a resource to what reads it, so a client (and
/// the stateful phase of the contract test) can follow one into the other.
fn add_links(doc: &mut Value) {
    let provider = |op: &str| json!({"operationId": op, "parameters": {"id": "$response.body#/id"}});
    let connection =
        |op: &str, param: &str| json!({"operationId": op, "parameters": {param: "$response.body#/connection_id"}});
    let links = [
        (
            "/paths/~1v1~1providers/post/responses/201",
            json!({
                "GetProvider": provider("get_provider"),
                "PatchProvider": provider("patch_provider"),
                "PutProvider": provider("put_provider"),
                "DeleteProvider": provider("delete_provider"),
            }),
        ),
        (
            "/paths/~1v1~1request-connection/post/responses/200",
            json!({
                "CheckConnection": connection("check_connection", "id"),
                "RevokeConnection": connection("revoke_connection", "id"),
                "GetToken": connection("get_token", "connection_id"),
                "RefreshToken": connection("refresh_token", "connection_id"),
                "CaptureSchema": {"operationId": "capture_schema", "parameters": {"state": "$response.body#/state"}},
            }),
        ),
    ];
    for (pointer, set) in links {
        if let Some(Value::Object(response)) = doc.pointer_mut(pointer) {
            response.insert("links".into(), set);
        }
    }
}

/// The proxy: any method, the provider's answer relayed as it is.
fn proxy_operation(with_path: bool) -> Value {
    let mut params = vec![json!({
        "name": "connection_id", "in": "path", "required": true, "schema": {"type": "string"},
        "description": "the connection whose credentials sign the request"
    })];
    if with_path {
        params.push(json!({
            "name": "path", "in": "path", "required": true, "schema": {"type": "string"},
            "description": "the rest of the URL under the provider's api_base_url, as the agent encoded it"
        }));
    }
    let mut responses = Map::new();
    responses.insert("default".into(), json!({"description": "the provider's answer, relayed as it is"}));
    for (status, description) in [
        ("401", "unauthorized: the X-API-Key header is missing, wrong, revoked or expired"),
        ("403", "forbidden: the key's role may not proxy, or the caller's address is not in ALLOWED_CIDRS"),
        ("404", "not_found: no such connection (or not in the key's workspaces)"),
        ("409", "connection_not_active, attention_required, no_api_base_url, provider_misconfigured or cannot_sign"),
        ("410", "provider_deleted"),
        ("413", "payload_too_large: the body is larger than 10 MiB"),
        ("429", "rate_limited: too many failed authentication attempts from this address; see Retry-After"),
        ("502", "provider_unreachable"),
        ("503", "provider_unavailable or storage_unavailable"),
        ("504", "provider_timeout"),
    ] {
        responses.insert(status.into(), error_response(description));
    }
    let op = |summary: &str| {
        json!({
            "tags": ["proxy"],
            "summary": summary,
            "parameters": params,
            "security": [{"api_key": []}],
            "responses": responses,
        })
    };
    json!({
        "get": op("Sends a signed request to the provider"),
        "post": op("Sends a signed request to the provider (the body passes as it is)"),
        "put": op("Sends a signed request to the provider"),
        "patch": op("Sends a signed request to the provider"),
        "delete": op("Sends a signed request to the provider"),
    })
}

fn html(description: &str) -> Value {
    json!({"description": description, "content": {"text/html": {"schema": {"type": "string"}}}})
}

fn extra_paths() -> Vec<(String, Value)> {
    let string = |name: &str, description: &str| json!({"name": name, "in": "query", "required": false, "schema": {"type": "string"}, "description": description});
    vec![
        ("/v1/proxy/{connection_id}".into(), proxy_operation(false)),
        ("/v1/proxy/{connection_id}/{path}".into(), proxy_operation(true)),
        (
            "/auth/callback".into(),
            json!({"get": {
                "tags": ["connections"],
                "summary": "The OAuth2 redirect URI: finishes a connection and sends the user to its return_url",
                "parameters": [
                    string("code", "the authorization code"),
                    string("state", "the state Nexus issued"),
                    string("error", "the provider's error, when the user declined"),
                    string("error_description", "the provider's explanation"),
                    string("iss", "the issuer (RFC 9207)"),
                ],
                "responses": {
                    "302": {"description": "to return_url?connection_id=…&status=success|error"},
                    "400": html("a page saying the link is not valid (no return_url can be trusted)"),
                }
            }}),
        ),
        (
            "/connect".into(),
            json!({"get": {
                "tags": ["connect"],
                "summary": "The connect_url of a Connect session: trades ?session= for an HttpOnly cookie scoped to /connect",
                "parameters": [string("session", "the token of POST /v1/connect/sessions (first visit only)")],
                "responses": {
                    "200": html("with ?session=: sets the session cookie and moves on to /connect at once (the token leaves the address bar); without: the page, for the session of the cookie"),
                    "429": html("a page asking to wait: too many unknown links from this address"),
                    "400": html("a page saying the link has expired or is not valid; nothing was started"),
                    "503": html("a page saying the database is away"),
                }
            }}),
        ),
        (
            "/connect/start".into(),
            json!({"post": {
                "tags": ["connect"],
                "summary": "The Connect UI's provider choice: starts a connection for the session of the cookie",
                "requestBody": {"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {
                    "type": "object", "required": ["provider"],
                    "properties": {
                        "provider": {"type": "string", "description": "a provider name the session may connect"},
                        "connection_id": {"type": "string", "description": "a connection of the session's workspace to reconnect in place"}
                    },
                    "additionalProperties": {"type": "string", "description": "config.<name>: an account detail of the provider's connection_config_schema"}
                }}}},
                "responses": {
                    "200": html("the account details the provider needs (again with inline errors)"),
                    "303": {"description": "to the provider's consent page, the credential form, or back to return_url"},
                    "400": html("a page saying what went wrong, with a way to try again"),
                    "403": html("a page refusing a form posted from another site"),
                    "429": html("a page asking to wait"),
                    "503": html("a page saying the database is away"),
                }
            }}),
        ),
        (
            "/connect/assets/connect.css".into(),
            json!({"get": {
                "tags": ["connect"],
                "summary": "The Connect UI's stylesheet",
                "responses": {"200": {"description": "the stylesheet", "content": {"text/css": {"schema": {"type": "string"}}}}}
            }}),
        ),
        (
            "/auth/capture".into(),
            json!({
                "get": {
                    "tags": ["connections"],
                    "summary": "A form for a static credential, generated from the provider's credential schema",
                    "parameters": [string("state", "the state of POST /v1/request-connection")],
                    "responses": {
                        "200": html("the form"),
                        "400": html("a page saying the link is not valid"),
                        "409": html("a page saying the link was used"),
                        "410": html("a page saying the provider was deleted"),
                    }
                },
                "post": {
                    "tags": ["connections"],
                    "summary": "The form's submission",
                    "requestBody": {"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {
                        "type": "object",
                        "properties": {"state": {"type": "string"}},
                        "additionalProperties": {"type": "string"}
                    }}}},
                    "responses": {
                        "200": html("connected: a page that returns to return_url?connection_id=…&status=success at once (Refresh)"),
                        "400": html("the form again, each error next to its field (a refusal by the provider above it), or a page saying the link is not valid"),
                        "404": html("a page saying the connection is gone"),
                        "409": html("a page saying the link was used"),
                        "410": html("a page saying the provider was deleted"),
                        "413": {"description": "payload_too_large"},
                        "415": {"description": "unsupported_media_type"},
                        "502": html("the form again, saying the provider could not be reached"),
                        "503": html("a page saying the database is away"),
                        "504": html("the form again, saying the provider did not answer in time"),
                    }
                }
            }),
        ),
        (
            "/openapi.json".into(),
            json!({"get": {
                "tags": ["health"],
                "summary": "This document",
                "responses": {"200": {"description": "the OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}}}}}
            }}),
        ),
    ]
}
