//! The OpenAPI document is generated from the handlers and covers every route.

use nexus_testkit::{both_backends, Backend, TestApp};

async fn openapi_lists_every_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = app.send(app.client.get(app.url("/openapi.json"))).await;
    assert_eq!(doc.status, 200);
    assert!(doc.json["openapi"].as_str().unwrap().starts_with("3."));
    let expected = [
        ("/v1/providers", "post"),
        ("/v1/providers", "get"),
        ("/v1/providers/metadata", "get"),
        ("/v1/providers/{id}", "get"),
        ("/v1/providers/{id}", "patch"),
        ("/v1/providers/{id}", "put"),
        ("/v1/providers/{id}", "delete"),
        ("/v1/audit", "get"),
        ("/health", "get"),
        ("/ready", "get"),
    ];
    for (path, method) in expected {
        assert!(doc.json["paths"][path][method].is_object(), "{method} {path} missing from the OpenAPI document");
    }
    assert!(doc.json["components"]["securitySchemes"]["api_key"].is_object());
    assert!(doc.json["components"]["schemas"]["ErrorBody"].is_object());
    // And each documented route is really served (no 404/405 from the router).
    for (path, method) in expected {
        let url = app.url(&path.replace("{id}", "does-not-exist"));
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let resp = app
            .send(
                app.client
                    .request(m, url)
                    .header("x-api-key", &app.api_key)
                    .header("content-type", "application/json")
                    .body("{}"),
            )
            .await;
        assert_ne!(resp.code(), "method_not_allowed", "{method} {path}");
        assert!(!(resp.status == 404 && resp.json["message"] == "no such endpoint"), "{method} {path} not routed");
    }
}

both_backends!(openapi_lists_every_route);
