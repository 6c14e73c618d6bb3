//! Failures as the model sees them.
//!
//! A tool that fails returns a normal tool result with `isError: true`: one text block
//! `"<code>: <message>"` (plus a hint where the next step is obvious), and the same as data in
//! `_meta["platinum/error"]` = `{"code", "message"}`. (Not as `structuredContent`: clients such
//! as the MCP Inspector validate that against the tool's output schema even on errors.) The code
//! is the engine's stable error code (`sandbox_not_found`,
//! `exec_timeout`, `file_not_found`, ...) or one of the few this front end adds
//! (`invalid_arguments`, `cancelled`, `file_too_large`). JSON-RPC errors are kept for protocol
//! faults: an unknown tool or an unknown resource URI.

use rmcp::ErrorData;
use rmcp::handler::server::tool::IntoCallToolResult;
use rmcp::model::{CallToolResponse, CallToolResult, ContentBlock, MetaObject};
use serde::Serialize;

/// The `_meta` key of a failed result's `{"code", "message"}`.
pub const META_KEY: &str = "platinum/error";

/// A failed tool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ToolError {
    /// Stable machine code.
    pub code: String,
    /// What went wrong.
    pub message: String,
}

impl ToolError {
    /// A failure with a code of this front end's own.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ToolError {
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// Arguments that do not match the tool's input schema.
    pub fn invalid_arguments(message: impl Into<String>) -> Self {
        ToolError::new("invalid_arguments", message)
    }

    /// What the model can do about it, for the codes where that is clear.
    fn hint(&self) -> Option<&'static str> {
        Some(match self.code.as_str() {
            "sandbox_not_found" => "list_sandboxes shows the sandboxes that exist.",
            "invalid_state" => "get_sandbox shows its state; resume_sandbox wakes a paused one.",
            "exec_timeout" => "raise timeout_ms, or start it with background: true.",
            "file_not_found" => "list_files shows what is there.",
            "port_not_open" => "start the service first (run_command with background: true).",
            "capacity_exhausted" => "kill_sandbox the sandboxes you no longer need.",
            "template_not_found" => "omit template to use the default.",
            "snapshot_not_found" => "list_snapshots shows the snapshots that exist.",
            _ => return None,
        })
    }
}

impl From<platinum_engine::Error> for ToolError {
    fn from(e: platinum_engine::Error) -> Self {
        let code = e.code().as_str();
        if e.http_status() >= 500 {
            tracing::warn!(code, error = %e, "tool failed");
        } else {
            tracing::debug!(code, error = %e, "tool refused");
        }
        ToolError::new(code, e.to_string())
    }
}

impl IntoCallToolResult for ToolError {
    fn into_call_tool_result(self) -> Result<CallToolResponse, ErrorData> {
        let text = match self.hint() {
            Some(hint) => format!("{self}. {hint}"),
            None => self.to_string(),
        };
        let mut meta = MetaObject::default();
        meta.0.insert(
            META_KEY.into(),
            serde_json::json!({ "code": self.code, "message": self.message }),
        );
        Ok(CallToolResult::error(vec![ContentBlock::text(text)])
            .with_meta(Some(meta))
            .into())
    }
}

/// Result of a tool body.
pub type ToolResult<T> = Result<T, ToolError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_keep_their_code_and_become_error_results() {
        let e: ToolError = platinum_engine::Error::SandboxNotFound("abc".into()).into();
        assert_eq!(e.code, "sandbox_not_found");
        let Ok(CallToolResponse::Complete(r)) = e.into_call_tool_result() else {
            panic!("expected a complete result");
        };
        assert_eq!(r.is_error, Some(true));
        let text = r.content[0]
            .as_text()
            .map(|t| t.text.clone())
            .unwrap_or_default();
        assert!(
            text.starts_with("sandbox_not_found: sandbox abc not found"),
            "{text}"
        );
        assert!(text.contains("list_sandboxes"), "{text}");
        assert_eq!(r.structured_content, None);
        assert_eq!(
            r.meta.map(|m| m.0[META_KEY].clone()),
            Some(
                serde_json::json!({"code": "sandbox_not_found", "message": "sandbox abc not found"})
            )
        );
    }
}
