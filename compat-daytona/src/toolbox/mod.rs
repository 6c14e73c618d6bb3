//! The Daytona toolbox (the in-sandbox daemon's API) under `/toolbox/{sandboxId}`, implemented
//! host-side on engine commands: nothing of the daemon runs in the guest (code kernels and
//! language servers are ordinary guest processes the engine starts).
//!
//! - [`process`]: `process/execute`, `process/code-run`.
//! - [`sessions`]: `process/session/...` (background shells, logs, follow over WebSocket).
//! - [`pty`]: `process/pty/...` (terminals over WebSocket).
//! - [`files`]: `files/...` (bulk upload and download, list, info, folder, delete, move,
//!   permissions, find, search, replace, signed download and upload).
//! - [`git`]: the `git/...` routes.
//! - [`interpreter`]: `process/interpreter/...` (stateful code contexts, run over WebSocket).
//! - [`lsp`]: `lsp/...` (language servers run in the sandbox, reached through the guest agent).
//! - [`info`]: home and work directories, version, metrics, ports, and refusals.

pub mod files;
pub mod git;
pub mod info;
pub mod interpreter;
pub mod lsp;
pub mod process;
pub mod pty;
pub mod sessions;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};

use crate::Ctx;
use crate::error::route_not_found;

fn t(path: &str) -> String {
    format!("/toolbox/{{sandboxId}}{path}")
}

/// Every toolbox route (authentication is added by the caller).
pub fn routes() -> Router<Ctx> {
    Router::new()
        .route(&t("/process/execute"), post(process::execute))
        .route(&t("/process/code-run"), post(process::code_run))
        .route(
            &t("/process/session"),
            post(sessions::create).get(sessions::list),
        )
        .route(&t("/process/session/entrypoint"), get(sessions::entrypoint))
        .route(
            &t("/process/session/entrypoint/logs"),
            get(sessions::entrypoint),
        )
        .route(
            &t("/process/session/{sessionId}"),
            get(sessions::get).delete(sessions::delete),
        )
        .route(
            &t("/process/session/{sessionId}/exec"),
            post(sessions::exec),
        )
        .route(
            &t("/process/session/{sessionId}/command/{commandId}"),
            get(sessions::command),
        )
        .route(
            &t("/process/session/{sessionId}/command/{commandId}/logs"),
            get(sessions::logs),
        )
        .route(
            &t("/process/session/{sessionId}/command/{commandId}/input"),
            post(sessions::input),
        )
        .route(&t("/process/pty"), post(pty::create).get(pty::list))
        .route(&t("/process/pty/create-connect"), get(pty::create_connect))
        .route(
            &t("/process/pty/{sessionId}"),
            get(pty::get).delete(pty::delete),
        )
        .route(&t("/process/pty/{sessionId}/connect"), get(pty::connect))
        .route(&t("/process/pty/{sessionId}/resize"), post(pty::resize))
        .route(
            &t("/process/interpreter/context"),
            post(interpreter::create_context).get(interpreter::list_contexts),
        )
        .route(
            &t("/process/interpreter/context/{id}"),
            axum::routing::delete(interpreter::delete_context),
        )
        .route(
            &t("/process/interpreter/execute"),
            get(interpreter::execute),
        )
        .route(&t("/files"), get(files::list).delete(files::delete))
        .route(&t("/files/info"), get(files::info))
        .route(&t("/files/folder"), post(files::create_folder))
        .route(&t("/files/move"), post(files::move_file))
        .route(&t("/files/permissions"), post(files::set_permissions))
        .route(&t("/files/find"), get(files::find))
        .route(&t("/files/search"), get(files::search))
        .route(&t("/files/replace"), post(files::replace))
        .route(
            &t("/files/bulk-upload"),
            post(files::bulk_upload).layer(DefaultBodyLimit::disable()),
        )
        .route(&t("/files/bulk-download"), post(files::bulk_download))
        .route(&t("/files/download"), get(files::download))
        .route(
            &t("/files/upload-v2"),
            post(files::upload_v2).layer(DefaultBodyLimit::disable()),
        )
        .route(&t("/git/clone"), post(git::clone))
        .route(&t("/git/status"), get(git::status))
        .route(
            &t("/git/branches"),
            get(git::list_branches)
                .post(git::create_branch)
                .delete(git::delete_branch),
        )
        .route(&t("/git/checkout"), post(git::checkout))
        .route(&t("/git/add"), post(git::add))
        .route(&t("/git/commit"), post(git::commit))
        .route(&t("/git/pull"), post(git::pull))
        .route(&t("/git/push"), post(git::push))
        .route(&t("/git/history"), get(git::history))
        .route(&t("/git/init"), post(git::init))
        .route(
            &t("/git/remotes"),
            get(git::list_remotes).post(git::add_remote),
        )
        .route(&t("/git/reset"), post(git::reset))
        .route(&t("/git/restore"), post(git::restore))
        .route(
            &t("/git/config"),
            get(git::get_config).post(git::set_config),
        )
        .route(&t("/git/config/user"), post(git::set_user))
        .route(&t("/git/credentials"), post(git::credentials))
        .route(&t("/user-home-dir"), get(info::user_home_dir))
        .route(&t("/work-dir"), get(info::work_dir))
        .route(&t("/version"), get(info::version))
        .route(&t("/system/metrics"), get(info::metrics))
        .route(&t("/port"), get(info::ports))
        .route(&t("/port/{port}/in-use"), get(info::port_in_use))
        .route(&t("/env"), post(info::unsupported))
        .route(&t("/init"), post(info::unsupported))
        .route(&t("/lsp/start"), post(lsp::start))
        .route(&t("/lsp/stop"), post(lsp::stop))
        .route(&t("/lsp/did-open"), post(lsp::did_open))
        .route(&t("/lsp/did-close"), post(lsp::did_close))
        .route(&t("/lsp/document-symbols"), get(lsp::document_symbols))
        .route(&t("/lsp/workspacesymbols"), get(lsp::workspace_symbols))
        .route(&t("/lsp/completions"), post(lsp::completions))
        .route(&t("/computeruse/{*rest}"), any(info::unsupported))
        .route(&t("/{*rest}"), any(route_not_found))
        .route("/toolbox/{sandboxId}", any(route_not_found))
}
