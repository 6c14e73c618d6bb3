//! Language-server commands: start and stop a server for a language and project directory,
//! open and close documents, and ask for document symbols, workspace symbols and completions.
//! The servers run in the sandbox and are reached through the guest agent ([`crate::lsp`]).
//!
//! Documents are named by `file://` URIs; a relative path (`file://src/app.py`) is taken
//! relative to the project directory. Opening a document reads it from the sandbox (at most
//! [`MAX_DOCUMENT_BYTES`]) and hands its text to the server.

use serde_json::{Value, json};

use crate::StreamOptions;
use crate::commands::run::kill_command;
use crate::engine::Engine;
use crate::env::DEFAULT_HOME;
use crate::error::{Error, Result};
use crate::lsp::server::LanguageServer;
use crate::lsp::types::{CompletionContext, CompletionList, LspLanguage, LspPosition, LspSymbol};
use crate::lsp::{MAX_SERVERS_PER_SANDBOX, ServerKey, TAG_PREFIX, types};
use crate::model::{CommandLine, ExecRequest};
use std::sync::Arc;
use std::time::Duration;

/// Largest document `lsp_did_open` reads.
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;
/// How long a stopping server gets to answer `shutdown` before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Which language server: its language and its project directory (absolute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LspServer {
    /// The language.
    pub language: LspLanguage,
    /// The project's root directory in the sandbox.
    pub project: String,
}

impl LspServer {
    /// Checks and builds a server key from a language id and a project path (a relative one
    /// is taken in the default user's home, where the SDKs' examples put projects).
    pub fn new(language: &str, project: &str) -> Result<Self> {
        let language = LspLanguage::parse(language).ok_or_else(|| {
            Error::InvalidRequest(format!(
                "unsupported language {language:?}: python, typescript or javascript"
            ))
        })?;
        crate::commands::exec::check_guest_path(project)?;
        let project = if project.starts_with('/') {
            project.to_string()
        } else {
            format!("{DEFAULT_HOME}/{project}")
        };
        let project = match project.trim_end_matches('/') {
            "" => "/".to_string(),
            trimmed => trimmed.to_string(),
        };
        Ok(LspServer { language, project })
    }

    fn key(&self) -> ServerKey {
        (self.language, self.project.clone())
    }

    fn describe(&self) -> String {
        format!(
            "the {} language server for {}",
            self.language.as_str(),
            self.project
        )
    }

    /// A document's absolute path and URI, from a `file://` URI (relative to the project).
    fn document(&self, uri: &str) -> Result<(String, String)> {
        let path = uri.strip_prefix("file://").ok_or_else(|| {
            Error::InvalidRequest(format!("document URI {uri:?} must start with file://"))
        })?;
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{path}", self.project.trim_end_matches('/'))
        };
        crate::commands::exec::check_guest_path(&path)?;
        Ok((format!("file://{path}"), path))
    }
}

impl Engine {
    /// Starts a language server (nothing happens if it runs already). Fails with
    /// `spawn_failed` when the sandbox's image lacks it, `capacity_exhausted` past
    /// [`MAX_SERVERS_PER_SANDBOX`].
    pub async fn lsp_start(&self, id: &str, server: &LspServer) -> Result<()> {
        self.running_guest(id).await?;
        let start_lock = self.lsp.start_lock(id);
        let _one_at_a_time = start_lock.lock().await;
        if let Some(running) = self.lsp.get(id, &server.key())
            && running.ended().is_none()
        {
            return Ok(());
        }
        if self.lsp.live_count(id) >= MAX_SERVERS_PER_SANDBOX {
            return Err(Error::CapacityExhausted(format!(
                "a sandbox runs at most {MAX_SERVERS_PER_SANDBOX} language servers; stop one first"
            )));
        }
        let req = ExecRequest {
            cwd: Some(server.project.clone()),
            ..ExecRequest::new(CommandLine::Argv(server.language.command()))
        };
        let opts = StreamOptions {
            stdin: true,
            tag: Some(format!(
                "{TAG_PREFIX}{}:{}",
                server.language.as_str(),
                server.project
            )),
            ..StreamOptions::default()
        };
        let stream = self.exec_stream(id, req, opts).await?;
        let ls = LanguageServer::new(stream);
        if let Err(e) = ls.initialize(initialize_params(&server.project)).await {
            kill_command(self, id, ls.pid).await;
            let why = ls.ended().unwrap_or_else(|| e.to_string());
            return Err(Error::InvalidRequest(format!(
                "{} did not start: {why}",
                server.describe()
            )));
        }
        tracing::info!(sandbox = id, language = server.language.as_str(), project = %server.project, pid = ls.pid, "language server started");
        self.lsp.insert(id, server.key(), ls);
        Ok(())
    }

    /// Stops a language server: `shutdown` and `exit`, then its process is killed.
    pub async fn lsp_stop(&self, id: &str, server: &LspServer) -> Result<()> {
        let ls = self
            .lsp
            .remove(id, &server.key())
            .ok_or_else(|| not_started(server))?;
        if ls.ended().is_none() {
            let polite = async {
                ls.request("shutdown", Value::Null).await?;
                ls.notify("exit", Value::Null).await
            };
            if tokio::time::timeout(SHUTDOWN_GRACE, polite).await.is_err() {
                tracing::debug!(sandbox = id, "language server ignored shutdown");
            }
        }
        kill_command(self, id, ls.pid).await;
        Ok(())
    }

    /// Opens a document: reads it from the sandbox and hands its text to the server.
    pub async fn lsp_did_open(&self, id: &str, server: &LspServer, uri: &str) -> Result<()> {
        let ls = self.language_server(id, server)?;
        let (uri, path) = server.document(uri)?;
        let text = self
            .read_to_vec(id, &path, None, MAX_DOCUMENT_BYTES)
            .await?;
        let params = json!({"textDocument": {
            "uri": uri,
            "languageId": server.language.document_language(&path),
            "version": 1,
            "text": String::from_utf8_lossy(&text),
        }});
        ls.notify("textDocument/didOpen", params).await
    }

    /// Closes a document.
    pub async fn lsp_did_close(&self, id: &str, server: &LspServer, uri: &str) -> Result<()> {
        let ls = self.language_server(id, server)?;
        let (uri, _) = server.document(uri)?;
        ls.notify(
            "textDocument/didClose",
            json!({"textDocument": {"uri": uri}}),
        )
        .await
    }

    /// The symbols of a document (nested ones flattened, parents first).
    pub async fn lsp_document_symbols(
        &self,
        id: &str,
        server: &LspServer,
        uri: &str,
    ) -> Result<Vec<LspSymbol>> {
        let ls = self.language_server(id, server)?;
        let (uri, _) = server.document(uri)?;
        let reply = ls
            .request(
                "textDocument/documentSymbol",
                json!({"textDocument": {"uri": uri}}),
            )
            .await?;
        types::symbols_from(reply, &uri).map_err(|e| unreadable(server, &e))
    }

    /// Symbols whose names match `query` across the project (`unsupported` when the server has
    /// no such search: `pylsp` has none).
    pub async fn lsp_workspace_symbols(
        &self,
        id: &str,
        server: &LspServer,
        query: &str,
    ) -> Result<Vec<LspSymbol>> {
        let ls = self.language_server(id, server)?;
        if !ls.provides("workspaceSymbolProvider") {
            return Err(Error::Unsupported(format!(
                "{} has no workspace symbol search",
                server.describe()
            )));
        }
        let reply = ls
            .request("workspace/symbol", json!({"query": query}))
            .await?;
        types::symbols_from(reply, "").map_err(|e| unreadable(server, &e))
    }

    /// Completion suggestions at a position of an open document.
    pub async fn lsp_completions(
        &self,
        id: &str,
        server: &LspServer,
        uri: &str,
        position: LspPosition,
        context: Option<CompletionContext>,
    ) -> Result<CompletionList> {
        let ls = self.language_server(id, server)?;
        let (uri, _) = server.document(uri)?;
        let mut params = json!({"textDocument": {"uri": uri}, "position": position});
        if let Some(context) = context {
            params["context"] = json!(context);
        }
        let reply = ls.request("textDocument/completion", params).await?;
        types::completions_from(reply).map_err(|e| unreadable(server, &e))
    }

    /// A started server that still serves.
    fn language_server(&self, id: &str, server: &LspServer) -> Result<Arc<LanguageServer>> {
        let ls = self
            .lsp
            .get(id, &server.key())
            .ok_or_else(|| not_started(server))?;
        match ls.ended() {
            None => Ok(ls),
            Some(why) => Err(Error::Conflict(format!(
                "{} stopped ({why}); start it again",
                server.describe()
            ))),
        }
    }
}

fn not_started(server: &LspServer) -> Error {
    Error::Conflict(format!(
        "{} is not started; start it first",
        server.describe()
    ))
}

fn unreadable(server: &LspServer, why: &str) -> Error {
    Error::Guest {
        code: crate::ErrorCode::GuestIoError,
        message: format!("{} answered something unreadable: {why}", server.describe()),
    }
}

/// What the client tells a server it can do: completions, document and workspace symbols.
fn initialize_params(project: &str) -> Value {
    json!({
        "processId": null,
        "clientInfo": {"name": "platinum", "version": env!("CARGO_PKG_VERSION")},
        "rootUri": format!("file://{project}"),
        "workspaceFolders": [{"uri": format!("file://{project}"), "name": project}],
        "capabilities": {
            "textDocument": {
                "completion": {
                    "completionItem": {
                        "snippetSupport": false,
                        "documentationFormat": ["markdown", "plaintext"],
                        "deprecatedSupport": true,
                    },
                    "contextSupport": true,
                },
                "documentSymbol": {"symbolKind": {"valueSet": (1..=26).collect::<Vec<u32>>()}},
                "synchronization": {"didSave": false},
            },
            "workspace": {"symbol": {"symbolKind": {"valueSet": (1..=26).collect::<Vec<u32>>()}}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_and_documents_are_checked() {
        let s = LspServer::new("python", "/home/user/proj/").unwrap();
        assert_eq!(s.project, "/home/user/proj");
        assert!(LspServer::new("cobol", "/p").is_err());
        assert_eq!(
            LspServer::new("python", "work/proj").unwrap().project,
            "/home/user/work/proj"
        );
        assert!(LspServer::new("python", "").is_err());
        assert_eq!(
            s.document("file:///home/user/proj/a.py").unwrap().1,
            "/home/user/proj/a.py"
        );
        assert_eq!(
            s.document("file://src/a.py").unwrap(),
            (
                "file:///home/user/proj/src/a.py".to_string(),
                "/home/user/proj/src/a.py".to_string()
            )
        );
        assert!(s.document("/home/user/proj/a.py").is_err());
        assert_eq!(LspServer::new("python", "/").unwrap().project, "/");
    }
}
