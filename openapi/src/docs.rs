//! Routes serving the documents: `/openapi.json`, `/docs` (+ its assets), `/llms.txt`,
//! `/llms-full.txt`. They are registered through utoipa's `OpenApiRouter`, so each one is in the
//! OpenAPI document by construction.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use std::sync::LazyLock;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const BUNDLE: &str = include_str!("../assets/swagger-ui/swagger-ui-bundle.js");
const CSS: &str = include_str!("../assets/swagger-ui/swagger-ui.css");

/// The docs page: Swagger UI over `/openapi.json`, nothing loaded from elsewhere (the spec
/// validator badge, which calls swagger.io, is off). The API key typed into it is kept in memory
/// only: this origin also serves sandbox content (previews, `/v1/.../ports/...`), so nothing
/// secret may sit in its `localStorage`; a key persisted there by an older page is removed.
const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Platinum API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="docs"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>
try { window.localStorage.removeItem("authorized"); } catch (e) {}
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#docs",
  deepLinking: true,
  validatorUrl: null,
  persistAuthorization: false
});
</script>
</body>
</html>
"##;

const TEXT: &str = "text/plain; charset=utf-8";

/// This OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "system", operation_id = "openapi", security(()),
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi_json() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], crate::document_json())
}

/// Interactive API documentation (Swagger UI; works offline).
#[utoipa::path(get, path = "/docs", tag = "system", operation_id = "docs", security(()),
    responses((status = 200, description = "HTML page", content_type = "text/html")))]
async fn docs_page() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/html; charset=utf-8")], PAGE)
}

/// Script of the docs page (Swagger UI bundle).
#[utoipa::path(get, path = "/docs/swagger-ui-bundle.js", tag = "system", operation_id = "docsScript", security(()),
    responses((status = 200, description = "JavaScript", content_type = "text/javascript")))]
async fn docs_bundle() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=86400"),
        ],
        BUNDLE,
    )
}

/// Stylesheet of the docs page.
#[utoipa::path(get, path = "/docs/swagger-ui.css", tag = "system", operation_id = "docsStyle", security(()),
    responses((status = 200, description = "CSS", content_type = "text/css")))]
async fn docs_css() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=86400"),
        ],
        CSS,
    )
}

/// How to use Platinum, for language models (llmstxt.org).
#[utoipa::path(get, path = "/llms.txt", tag = "system", operation_id = "llmsTxt", security(()),
    responses((status = 200, description = "Markdown index", content_type = "text/plain")))]
async fn llms_txt() -> impl IntoResponse {
    static DOC: LazyLock<String> = LazyLock::new(crate::llms::llms_txt);
    ([(CONTENT_TYPE, TEXT)], DOC.as_str())
}

/// The whole REST and MCP reference in one Markdown file, for language models.
#[utoipa::path(get, path = "/llms-full.txt", tag = "system", operation_id = "llmsFullTxt", security(()),
    responses((status = 200, description = "Markdown reference", content_type = "text/plain")))]
async fn llms_full_txt() -> impl IntoResponse {
    static DOC: LazyLock<String> = LazyLock::new(crate::llms::llms_full_txt);
    ([(CONTENT_TYPE, TEXT)], DOC.as_str())
}

fn build() -> (axum::Router, OpenApi) {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(docs_page))
        .routes(routes!(docs_bundle))
        .routes(routes!(docs_css))
        .routes(routes!(llms_txt))
        .routes(routes!(llms_full_txt))
        .split_for_parts()
}

/// The documentation routes' part of the OpenAPI document.
pub(crate) fn openapi() -> OpenApi {
    build().1
}

/// The documentation routes (no API key needed).
pub fn router() -> axum::Router {
    build().0
}

#[cfg(test)]
mod tests {
    use super::PAGE;

    #[test]
    fn the_docs_page_never_persists_the_api_key() {
        assert!(PAGE.contains("persistAuthorization: false"), "{PAGE}");
        assert!(!PAGE.contains("persistAuthorization: true"));
        assert!(PAGE.contains(r#"localStorage.removeItem("authorized")"#));
    }
}
