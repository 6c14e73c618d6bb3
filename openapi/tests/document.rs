//! The OpenAPI document is complete and describes the server that runs.
//!
//! - Every operation has an `operationId` (unique), a summary, a tag, a `description` on every
//!   response (OpenAPI 3.1 requires it), and every `/v1` operation a 4XX response.
//! - Every route is documented: routes registered through utoipa's `OpenApiRouter` are in the
//!   document by construction; the ones registered by hand (the port proxy, edge token minting)
//!   are listed in `platinum_rest::PORT_PROXY_ROUTES` and `EDGE_TOKEN_ROUTE` and must each be
//!   documented here.
//! - Every documented operation exists: a real server answers each one (without a key: 401 for
//!   `/v1`, 200 for the open routes), never 404 or 405.

use platinum_testkit::TestServer;
use serde_json::Value;
use std::collections::BTreeSet;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn doc() -> Value {
    serde_json::to_value(platinum_openapi::document()).unwrap()
}

/// (method, path) of every documented operation.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                ops.push((method.clone(), path.clone(), op.clone()));
            }
        }
    }
    ops
}

/// An axum route path as OpenAPI writes it: `{*rest}` is `{rest}`, no trailing slash.
fn normalised(route: &str) -> String {
    route.replace("{*", "{").trim_end_matches('/').to_string()
}

#[test]
fn document_is_openapi_3_1_and_every_operation_is_complete() {
    let doc = doc();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["description"].is_string());
    let mut ids = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        let at = format!("{} {path}", method.to_uppercase());
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: no operationId"));
        assert!(
            ids.insert(id.to_string()),
            "{at}: duplicate operationId {id}"
        );
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{at}: no summary"
        );
        assert!(
            op["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{at}: no tag"
        );
        let responses = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{at}: no responses"));
        for (status, r) in responses {
            assert!(
                r["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{at}: response {status} has no description"
            );
        }
        if path.starts_with("/v1/") {
            assert!(
                responses.keys().any(|s| s.starts_with('4')),
                "{at}: no 4XX response"
            );
            assert!(
                responses.contains_key("401"),
                "{at}: the API key is required, so 401 is documented"
            );
        }
    }
    assert!(ids.len() > 30, "only {} operations", ids.len());
}

#[test]
fn routes_registered_by_hand_are_documented() {
    let doc = doc();
    let paths: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for route in platinum_rest::PORT_PROXY_ROUTES
        .into_iter()
        .chain([platinum_rest::EDGE_TOKEN_ROUTE])
    {
        assert!(
            paths.contains(normalised(route).as_str()),
            "route {route} is registered but not documented (documented paths: {paths:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    let t = TestServer::start().await.unwrap();
    let doc = doc();
    for (method, path, _) in operations(&doc) {
        // Path parameters get plausible values; the request carries no key.
        let url_path = path
            .replace("{id}", "aaaaaaaaaaaaaaaaaaaa")
            .replace("{port}", "8080")
            .replace("{pid}", "1")
            .replace("{path}", "index.html");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let resp = t.anon(method.clone(), &url_path).send().await.unwrap();
        let status = resp.status().as_u16();
        let expected = if path.starts_with("/v1/") { 401 } else { 200 };
        assert_eq!(
            status, expected,
            "{method} {url_path} (documented as {path})"
        );
    }
    // The document the server serves is the generated one.
    let served = t
        .anon(reqwest::Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(served.headers()["content-type"], "application/json");
    assert_eq!(
        served.text().await.unwrap(),
        platinum_openapi::document_json()
    );
    let page = t
        .anon(reqwest::Method::GET, "/docs")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/docs/swagger-ui-bundle.js") && page.contains("url: \"/openapi.json\""));
    assert!(
        !page.contains("https://"),
        "the docs page loads nothing from elsewhere"
    );
}
