//! `run_code`: code in a stateful Python or JavaScript context, with the E2B code interpreter's
//! semantics (the engine's [`platinum_engine::commands::code`]): variables, imports and
//! definitions persist between calls of the same context; the value of the last expression and
//! every figure are rich results; an exception is reported as the run's `error`, not as a tool
//! failure (the tool worked; the code raised).
//!
//! Images among the results (matplotlib figures, `display(Image(...))`) come back as MCP image
//! content blocks; the structured result lists each result's formats and its `text/plain`, not
//! the image bytes again. stdout and stderr stream as progress notifications; cancelling the
//! call interrupts the run (SIGINT, like Ctrl-C in a notebook).

use platinum_engine::Engine;
use platinum_engine::commands::code::{CodeEvent, CodeLanguage, CodeTarget, RunCode};
use rmcp::RoleServer;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{ToolError, ToolResult};
use crate::run::{DEFAULT_TIMEOUT_MS, OUTPUT_TAIL_BYTES, Progress};

/// Image formats returned as image content, in order of preference.
const IMAGE_FORMATS: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];

/// Arguments of `run_code`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCodeArgs {
    /// Sandbox id.
    pub sandbox_id: String,
    /// The code (a notebook cell: the last expression's value is returned).
    pub code: String,
    /// `python` (default) or `javascript`; each has its own default context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub language: Option<String>,
    /// Run in this context (from an earlier result) instead of the language's default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub context_id: Option<String>,
    /// Interrupt the run after this many milliseconds (default 60000; 0 = no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64")]
    pub timeout_ms: Option<u64>,
    /// Environment variables for this run only.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// One rich result of a run.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RichResult {
    /// Its `text/plain` form.
    pub text: Option<String>,
    /// MIME types it has (`image/png` ones are returned as image content).
    pub formats: Vec<String>,
    /// The value of the last expression (others come from `display()` or figures).
    pub is_main: bool,
}

/// The exception a run raised.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RunError {
    /// Exception class, e.g. `ZeroDivisionError`.
    pub name: String,
    /// Its message.
    pub value: String,
    /// The formatted traceback.
    pub traceback: String,
}

/// Result of `run_code`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CodeOutput {
    /// The context it ran in; pass it as context_id to continue there.
    pub context_id: String,
    /// The context's execution counter for this run.
    pub execution_count: Option<u32>,
    /// stdout (last 32 KiB).
    pub stdout: String,
    /// stderr (last 32 KiB).
    pub stderr: String,
    /// Rich results, in order.
    pub results: Vec<RichResult>,
    /// The exception the code raised, if it did.
    pub error: Option<RunError>,
}

/// Appends `s`, keeping the last [`OUTPUT_TAIL_BYTES`] (cut on a character boundary).
fn push_tail(buf: &mut String, s: &str) {
    buf.push_str(s);
    if buf.len() > OUTPUT_TAIL_BYTES {
        let mut cut = buf.len() - OUTPUT_TAIL_BYTES;
        while !buf.is_char_boundary(cut) {
            cut += 1;
        }
        buf.drain(..cut);
    }
}

/// Runs `args`; see the module docs.
pub async fn run_code(
    engine: &Engine,
    args: RunCodeArgs,
    ctx: &RequestContext<RoleServer>,
) -> ToolResult<CallToolResult> {
    let id = args.sandbox_id;
    let context_id = match args.context_id {
        Some(c) => c,
        None => {
            let language = CodeLanguage::parse(args.language.as_deref())?;
            engine.default_code_context(&id, language).await?.id
        }
    };
    let timeout = match args.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS) {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    };
    let mut run = engine
        .run_code(
            &id,
            RunCode {
                code: args.code,
                target: CodeTarget::Context(context_id.clone()),
                env: args.env,
                timeout,
            },
        )
        .await?;
    let mut progress = Progress::new(ctx);
    progress
        .note(format!("running in context {context_id}"))
        .await;

    let mut out = CodeOutput {
        context_id,
        execution_count: None,
        stdout: String::new(),
        stderr: String::new(),
        results: Vec::new(),
        error: None,
    };
    let mut images = Vec::new();
    loop {
        let event = tokio::select! {
            event = run.next() => event?,
            _ = ctx.ct.cancelled() => {
                // Dropping an unfinished run interrupts it in the kernel.
                drop(run);
                return Err(ToolError::new("cancelled", "cancelled; the run was interrupted"));
            }
        };
        match event {
            None => break,
            Some(CodeEvent::ExecutionCount(n)) => out.execution_count = Some(n),
            Some(CodeEvent::Stdout(s)) => {
                progress.output(s.as_bytes()).await;
                push_tail(&mut out.stdout, &s);
            }
            Some(CodeEvent::Stderr(s)) => {
                progress.output(s.as_bytes()).await;
                push_tail(&mut out.stderr, &s);
            }
            Some(CodeEvent::Result(r)) => {
                if let Some((mime, data)) = IMAGE_FORMATS
                    .iter()
                    .find_map(|m| Some((*m, r.data.get(*m)?.as_str()?)))
                {
                    images.push(ContentBlock::image(data.to_string(), mime));
                }
                out.results.push(RichResult {
                    text: r
                        .data
                        .get("text/plain")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned),
                    formats: r.data.keys().cloned().collect(),
                    is_main: r.is_main,
                });
            }
            Some(CodeEvent::Error(e)) => {
                out.error = Some(RunError {
                    name: e.name,
                    value: e.value,
                    traceback: e.traceback,
                })
            }
        }
    }
    let value = serde_json::to_value(&out)
        .map_err(|e| ToolError::new("internal", format!("serialising the result: {e}")))?;
    let mut content = vec![ContentBlock::text(value.to_string())];
    content.extend(images);
    let mut result = CallToolResult::success(content);
    result.structured_content = Some(value);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_tail_cuts_on_character_boundaries() {
        let mut s = String::new();
        push_tail(&mut s, &"é".repeat(OUTPUT_TAIL_BYTES));
        assert!(s.len() <= OUTPUT_TAIL_BYTES);
        assert!(s.chars().all(|c| c == 'é'));
        push_tail(&mut s, "end");
        assert!(s.ends_with("end") && s.len() <= OUTPUT_TAIL_BYTES);
    }
}
