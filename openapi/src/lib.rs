//! The agent- and developer-facing documents of Platinum, generated from the code, and the routes
//! that serve them.
//!
//! - [`document`]: the OpenAPI 3.1 document of the native API (`/v1`, `/health`) and of the
//!   routes below; checked in at `openapi/openapi.json`.
//! - [`llms`]: `llms.txt` and `llms-full.txt` (llmstxt.org), rendered from the OpenAPI document
//!   and the MCP server's tool list; checked in at the repository root.
//! - [`router`]: `GET /openapi.json`, `/docs` (interactive docs, vendored Swagger UI, works
//!   offline), `/llms.txt`, `/llms-full.txt`. No API key needed.
//!
//! Tests in `openapi/tests/` fail when a checked-in file differs from what the code generates
//! (`UPDATE_OPENAPI=1` / `UPDATE_LLMS=1` rewrite them), when a route is undocumented, and when
//! the document does not validate.

mod docs;
pub mod llms;

use std::sync::LazyLock;
use utoipa::openapi::OpenApi;

pub use docs::router;

/// The OpenAPI 3.1 document: the REST API's plus the documentation routes.
pub fn document() -> OpenApi {
    let mut doc = platinum_rest::openapi();
    doc.merge(docs::openapi());
    doc
}

/// [`document`] as the checked-in file has it: pretty JSON with a final newline.
pub fn document_json() -> String {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        let mut s = document()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"cannot render the document: {e}\"}}"));
        s.push('\n');
        s
    });
    JSON.clone()
}
