//! The toolbox's `lsp/...` routes: language servers (`pylsp`, `typescript-language-server`)
//! running in the sandbox, started, fed and queried through the engine's language-server
//! commands. Servers are keyed by `languageId` and `pathToProject`, as the daemon keys them.

use axum::Json;
use axum::extract::{Extension, State};
use platinum_engine::commands::lsp::LspServer;
use platinum_engine::lsp::types::{CompletionContext, CompletionList, LspPosition, LspSymbol};
use serde::Deserialize;

use crate::Ctx;
use crate::auth::ToolboxSandbox;
use crate::error::{DJson, DQuery, DResult};

/// `LspServerRequest`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerRequest {
    language_id: String,
    path_to_project: String,
}

impl ServerRequest {
    fn server(&self) -> DResult<LspServer> {
        Ok(LspServer::new(&self.language_id, &self.path_to_project)?)
    }
}

/// `LspDocumentRequest`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentRequest {
    #[serde(flatten)]
    server: ServerRequest,
    uri: String,
}

/// `LspCompletionParams`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompletionRequest {
    #[serde(flatten)]
    server: ServerRequest,
    uri: String,
    position: LspPosition,
    #[serde(default)]
    context: Option<CompletionContext>,
}

/// `GET /lsp/workspacesymbols` query.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SymbolQuery {
    #[serde(flatten)]
    server: ServerRequest,
    query: String,
}

/// `POST /lsp/start`.
pub async fn start(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<ServerRequest>,
) -> DResult<()> {
    Ok(ctx.engine.lsp_start(&s.id, &req.server()?).await?)
}

/// `POST /lsp/stop`.
pub async fn stop(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<ServerRequest>,
) -> DResult<()> {
    Ok(ctx.engine.lsp_stop(&s.id, &req.server()?).await?)
}

/// `POST /lsp/did-open`.
pub async fn did_open(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<DocumentRequest>,
) -> DResult<()> {
    let server = req.server.server()?;
    Ok(ctx.engine.lsp_did_open(&s.id, &server, &req.uri).await?)
}

/// `POST /lsp/did-close`.
pub async fn did_close(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<DocumentRequest>,
) -> DResult<()> {
    let server = req.server.server()?;
    Ok(ctx.engine.lsp_did_close(&s.id, &server, &req.uri).await?)
}

/// `GET /lsp/document-symbols?languageId&pathToProject&uri` → `[LspSymbol]`.
pub async fn document_symbols(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DQuery(q): DQuery<DocumentRequest>,
) -> DResult<Json<Vec<LspSymbol>>> {
    let server = q.server.server()?;
    Ok(Json(
        ctx.engine
            .lsp_document_symbols(&s.id, &server, &q.uri)
            .await?,
    ))
}

/// `GET /lsp/workspacesymbols?languageId&pathToProject&query` → `[LspSymbol]`.
pub async fn workspace_symbols(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DQuery(q): DQuery<SymbolQuery>,
) -> DResult<Json<Vec<LspSymbol>>> {
    let server = q.server.server()?;
    Ok(Json(
        ctx.engine
            .lsp_workspace_symbols(&s.id, &server, &q.query)
            .await?,
    ))
}

/// `POST /lsp/completions` → `CompletionList`.
pub async fn completions(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<CompletionRequest>,
) -> DResult<Json<CompletionList>> {
    let server = req.server.server()?;
    Ok(Json(
        ctx.engine
            .lsp_completions(&s.id, &server, &req.uri, req.position, req.context)
            .await?,
    ))
}
