//! The tools. Each one maps its arguments to one engine command and its reply to a structured
//! result (`outputSchema` + `structuredContent`); failures are [`ToolError`] results.
//!
//! The set is small on purpose (clients such as Windsurf cap the total tool count, and every
//! description costs tokens in every conversation): sandbox lifecycle, one command runner, the
//! file operations and preview URLs (the snapshot tools are in [`crate::snapshots`]). Argument names are the same across tools (`sandbox_id`,
//! `path`).

use bytes::Bytes;
use platinum_engine::CreateAs;
use platinum_engine::model::ListQuery;
use platinum_engine::model::{CreateSandbox, FileInfo, Sandbox, SandboxState};
use rmcp::handler::server::common::FromContextPart;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{ErrorData, Json, RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::PlatinumMcp;
use crate::code::{CodeOutput, RunCodeArgs, run_code};
use crate::content::{self, FileRead};
use crate::error::{ToolError, ToolResult};
use crate::run::{RunCommandArgs, run_command};

/// Tool arguments. Unlike rmcp's own extractor, arguments that do not match the schema become
/// an `invalid_arguments` tool result the model can read and correct, not a JSON-RPC error.
pub struct Parameters<T>(ToolResult<T>);

impl<T> Parameters<T> {
    /// The parsed arguments.
    pub fn get(self) -> ToolResult<T> {
        self.0
    }
}

impl<T: JsonSchema> JsonSchema for Parameters<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

impl<S, T: DeserializeOwned> FromContextPart<ToolCallContext<'_, S>> for Parameters<T> {
    fn from_context_part(context: &mut ToolCallContext<'_, S>) -> Result<Self, ErrorData> {
        let args = context.arguments.take().unwrap_or_default();
        Ok(Parameters(
            serde_json::from_value(serde_json::Value::Object(args))
                .map_err(|e| ToolError::invalid_arguments(e.to_string())),
        ))
    }
}

/// Arguments naming one sandbox.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxArgs {
    /// Sandbox id (from create_sandbox or list_sandboxes).
    pub sandbox_id: String,
}

/// Arguments of `create_sandbox`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateArgs {
    /// Template (default `base`: Debian with python3, node, git).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub template: Option<String>,
    /// vCPUs (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32")]
    pub vcpus: Option<u32>,
    /// Memory in MiB (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32")]
    pub memory_mib: Option<u32>,
    /// Environment variables every command gets.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Free-form labels.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Seconds until the sandbox is deleted (default 300; 0 = never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64")]
    pub timeout_secs: Option<u64>,
    /// Internet access (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "bool")]
    pub internet: Option<bool>,
}

/// Arguments of `list_sandboxes`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only sandboxes in this state: `running`, `paused`, `stopped`, `error`, ... (default: all
    /// but deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub state: Option<String>,
    /// Only sandboxes whose metadata has all these pairs.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A sandbox, as the tools report it (the `platinum://sandboxes/{id}` resource has every
/// detail).
#[derive(Debug, Serialize, JsonSchema)]
pub struct SandboxInfo {
    /// Id; pass it as `sandbox_id`.
    pub id: String,
    /// Template.
    pub template: String,
    /// `running`, `paused`, `creating`, `stopped`, `error` or `deleted`.
    pub state: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u32,
    /// Labels.
    pub metadata: BTreeMap<String, String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// When it is deleted (RFC 3339), if it expires.
    pub expires_at: Option<String>,
    /// Why it is in `error`.
    pub error: Option<String>,
}

/// Result of `list_sandboxes`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SandboxList {
    /// Newest first.
    pub sandboxes: Vec<SandboxInfo>,
    /// More sandboxes exist than were listed.
    pub truncated: bool,
}

/// Result of `list_templates`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TemplateNames {
    /// Built-in, then custom.
    pub templates: Vec<String>,
}

/// Result of `kill_sandbox`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Killed {
    /// The sandbox.
    pub sandbox_id: String,
    /// Always `deleted`.
    pub state: String,
}

/// Arguments of `read_file`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadArgs {
    /// Sandbox id.
    pub sandbox_id: String,
    /// File path (absolute, or relative to /home/user).
    pub path: String,
    /// Most bytes of text to return (default 262144); images and binaries return whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64")]
    pub max_bytes: Option<u64>,
}

/// How `write_file` content is encoded.
#[derive(Debug, Default, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Text, written as UTF-8.
    #[default]
    Utf8,
    /// Base64 bytes (for binaries).
    Base64,
}

/// Arguments of `write_file`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteArgs {
    /// Sandbox id.
    pub sandbox_id: String,
    /// File path (absolute, or relative to /home/user); parent directories are created.
    pub path: String,
    /// The whole new content.
    pub content: String,
    /// `utf8` (default) or `base64`.
    #[serde(default)]
    pub encoding: Encoding,
}

/// Arguments of `list_files`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListFilesArgs {
    /// Sandbox id.
    pub sandbox_id: String,
    /// Directory (default /home/user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub path: Option<String>,
    /// Levels to descend (default 1 = children only; max 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32")]
    pub depth: Option<u32>,
}

/// A directory entry.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Entry {
    /// Absolute path.
    pub path: String,
    /// `file`, `dir`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
}

/// Result of `list_files`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Listing {
    /// The directory listed.
    pub path: String,
    /// Its entries (at most 1000).
    pub entries: Vec<Entry>,
    /// More entries exist than were listed.
    pub truncated: bool,
}

/// Arguments naming one path.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathArgs {
    /// Sandbox id.
    pub sandbox_id: String,
    /// Path (absolute, or relative to /home/user).
    pub path: String,
}

/// Arguments of `remove_file`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveArgs {
    /// Sandbox id.
    pub sandbox_id: String,
    /// Path (absolute, or relative to /home/user).
    pub path: String,
    /// Remove a directory and everything in it (default false).
    #[serde(default)]
    pub recursive: bool,
}

/// Result of `remove_file`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Removed {
    /// The path that was removed.
    pub path: String,
}

/// Arguments of `move_file`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveArgs {
    /// Sandbox id.
    pub sandbox_id: String,
    /// Current path.
    pub from: String,
    /// New path.
    pub to: String,
    /// Replace an existing destination (default false).
    #[serde(default)]
    pub overwrite: bool,
}

/// Arguments of `preview_url`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewArgs {
    /// Sandbox id.
    pub sandbox_id: String,
    /// TCP port a service listens on inside the sandbox.
    pub port: u16,
}

/// Result of `preview_url`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Preview {
    /// URL of the service (HTTP and WebSocket); append the path.
    pub url: String,
    /// Header every request to the URL needs.
    pub auth_header: String,
}

/// Most entries `list_files` returns.
const MAX_ENTRIES: usize = 1000;
/// Most text `read_file` returns in one call, whatever `max_bytes` asks: the whole text is held
/// in memory and sent to the model, so a larger file is read in ranges or downloaded.
pub const MAX_TEXT_BYTES: u64 = 10 << 20;

/// Checks `read_file`'s `max_bytes` against [`MAX_TEXT_BYTES`].
fn text_limit(max_bytes: Option<u64>) -> Result<Option<u64>, ToolError> {
    match max_bytes {
        Some(n) if n > MAX_TEXT_BYTES => Err(ToolError::new(
            "file_too_large",
            format!(
                "max_bytes is at most {MAX_TEXT_BYTES} ({n} asked); read a larger file in ranges \
                 (run_command with `tail -c +OFFSET FILE | head -c COUNT`) or download it with \
                 GET /v1/sandboxes/{{id}}/files?path=..."
            ),
        )),
        other => Ok(other),
    }
}
/// Most sandboxes `list_sandboxes` returns.
const MAX_LISTED: u32 = 200;

pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl From<Sandbox> for SandboxInfo {
    fn from(s: Sandbox) -> Self {
        SandboxInfo {
            id: s.id,
            template: s.template,
            state: s.state.to_string(),
            vcpus: s.vcpus,
            memory_mib: s.memory_mib,
            metadata: s.metadata,
            created_at: rfc3339(s.created_at),
            expires_at: s.expires_at.map(rfc3339),
            error: s.error,
        }
    }
}

#[tool_router(vis = "pub(crate)")]
impl PlatinumMcp {
    /// Create a sandbox (a microVM) and wait until it runs. Returns its id.
    #[tool(annotations(destructive_hint = false, open_world_hint = false))]
    async fn create_sandbox(
        &self,
        args: Parameters<CreateArgs>,
    ) -> Result<Json<SandboxInfo>, ToolError> {
        let a = args.get()?;
        let sandbox = self
            .engine
            .create_sandbox(CreateSandbox {
                template: a.template,
                vcpus: a.vcpus,
                memory_mib: a.memory_mib,
                env: a.env,
                metadata: a.metadata,
                timeout_secs: a.timeout_secs,
                internet: a.internet,
                ..Default::default()
            })
            .await?;
        Ok(Json(sandbox.into()))
    }

    /// List sandboxes, newest first.
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn list_sandboxes(
        &self,
        args: Parameters<ListArgs>,
    ) -> Result<Json<SandboxList>, ToolError> {
        let a = args.get()?;
        let page = self
            .engine
            .list_sandboxes(ListQuery {
                states: match a.state.as_deref() {
                    None => Vec::new(),
                    Some(name) => vec![SandboxState::parse(name).ok_or_else(|| {
                        ToolError::invalid_arguments(format!("unknown state {name:?}"))
                    })?],
                },
                metadata: a.metadata.into_iter().collect(),
                limit: MAX_LISTED,
                ..Default::default()
            })
            .await?;
        Ok(Json(SandboxList {
            truncated: page.next_cursor.is_some(),
            sandboxes: page.items.into_iter().map(Into::into).collect(),
        }))
    }

    /// Templates create_sandbox can start from.
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn list_templates(&self) -> Result<Json<TemplateNames>, ToolError> {
        Ok(Json(TemplateNames {
            templates: self
                .engine
                .templates()
                .into_iter()
                .map(|t| t.name)
                .collect(),
        }))
    }

    /// Get one sandbox: state, size, expiry, error.
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn get_sandbox(
        &self,
        args: Parameters<SandboxArgs>,
    ) -> Result<Json<SandboxInfo>, ToolError> {
        let a = args.get()?;
        Ok(Json(self.engine.get_sandbox(&a.sandbox_id).await?.into()))
    }

    /// Delete a sandbox and everything in it.
    #[tool(annotations(
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn kill_sandbox(&self, args: Parameters<SandboxArgs>) -> Result<Json<Killed>, ToolError> {
        let a = args.get()?;
        self.engine.kill_sandbox(&a.sandbox_id).await?;
        Ok(Json(Killed {
            sandbox_id: a.sandbox_id,
            state: SandboxState::Deleted.to_string(),
        }))
    }

    /// Pause a running sandbox (memory kept, no CPU used; resume is instant).
    #[tool(annotations(destructive_hint = false, open_world_hint = false))]
    async fn pause_sandbox(
        &self,
        args: Parameters<SandboxArgs>,
    ) -> Result<Json<SandboxInfo>, ToolError> {
        let a = args.get()?;
        Ok(Json(self.engine.pause_sandbox(&a.sandbox_id).await?.into()))
    }

    /// Resume a paused sandbox.
    #[tool(annotations(destructive_hint = false, open_world_hint = false))]
    async fn resume_sandbox(
        &self,
        args: Parameters<SandboxArgs>,
    ) -> Result<Json<SandboxInfo>, ToolError> {
        let a = args.get()?;
        Ok(Json(
            self.engine.resume_sandbox(&a.sandbox_id).await?.into(),
        ))
    }

    /// Run a shell command (bash) in a sandbox and return exit code, stdout and stderr (each
    /// keeps its last 32 KiB). Output streams as progress notifications; cancelling kills it.
    #[tool(annotations(destructive_hint = true, open_world_hint = true))]
    async fn run_command(
        &self,
        args: Parameters<RunCommandArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<platinum_engine::model::ExecResult>, ToolError> {
        let a = args.get()?;
        Ok(Json(run_command(&self.engine, a, &ctx).await?))
    }

    /// Run Python (default) or JavaScript in a stateful notebook-like context (state persists
    /// between calls). Returns stdout, stderr, rich results (figures as images) and any error.
    #[tool(annotations(destructive_hint = true, open_world_hint = true), output_schema = rmcp::handler::server::tool::schema_for_output::<CodeOutput>())]
    async fn run_code(
        &self,
        args: Parameters<RunCodeArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> ToolResult<CallToolResult> {
        let a = args.get()?;
        run_code(&self.engine, a, &ctx).await
    }

    /// Read a file. Text comes back as text, images (PNG, JPEG, GIF, WebP) as image content,
    /// other binaries as an embedded resource.
    #[tool(annotations(read_only_hint = true, open_world_hint = false), output_schema = rmcp::handler::server::tool::schema_for_output::<FileRead>())]
    async fn read_file(&self, args: Parameters<ReadArgs>) -> ToolResult<CallToolResult> {
        let a = args.get()?;
        let max_bytes = text_limit(a.max_bytes)?;
        content::read_file(&self.engine, &a.sandbox_id, &a.path, max_bytes).await
    }

    /// Write a file (replaces it; creates parent directories). Returns the file's details.
    #[tool(annotations(destructive_hint = true, open_world_hint = false))]
    async fn write_file(&self, args: Parameters<WriteArgs>) -> Result<Json<FileInfo>, ToolError> {
        let a = args.get()?;
        let bytes = match a.encoding {
            Encoding::Utf8 => Bytes::from(a.content.into_bytes()),
            Encoding::Base64 => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(a.content.trim())
                    .map(Bytes::from)
                    .map_err(|e| {
                        ToolError::invalid_arguments(format!("content is not base64: {e}"))
                    })?
            }
        };
        let len = bytes.len() as u64;
        let body = futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]);
        let info = self
            .engine
            .write_file(&a.sandbox_id, &a.path, CreateAs::default(), Some(len), body)
            .await?;
        Ok(Json(info))
    }

    /// List a directory (default /home/user).
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn list_files(
        &self,
        args: Parameters<ListFilesArgs>,
    ) -> Result<Json<Listing>, ToolError> {
        let a = args.get()?;
        let path = a
            .path
            .unwrap_or_else(|| platinum_engine::env::DEFAULT_HOME.into());
        let entries = self
            .engine
            .list_dir(&a.sandbox_id, &path, a.depth.unwrap_or(1), None)
            .await?;
        let truncated = entries.len() > MAX_ENTRIES;
        Ok(Json(Listing {
            path,
            truncated,
            entries: entries
                .into_iter()
                .take(MAX_ENTRIES)
                .map(|f| Entry {
                    path: f.path,
                    kind: f.kind,
                    size: f.size,
                })
                .collect(),
        }))
    }

    /// Details of one path: type, size, permissions, owner, modification time.
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn stat_file(&self, args: Parameters<PathArgs>) -> Result<Json<FileInfo>, ToolError> {
        let a = args.get()?;
        Ok(Json(self.engine.stat(&a.sandbox_id, &a.path, None).await?))
    }

    /// Remove a file, or a directory with recursive: true.
    #[tool(annotations(
        destructive_hint = true,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn remove_file(&self, args: Parameters<RemoveArgs>) -> Result<Json<Removed>, ToolError> {
        let a = args.get()?;
        self.engine
            .remove(&a.sandbox_id, &a.path, a.recursive, None)
            .await?;
        Ok(Json(Removed { path: a.path }))
    }

    /// Move or rename a file or directory.
    #[tool(annotations(destructive_hint = true, open_world_hint = false))]
    async fn move_file(&self, args: Parameters<MoveArgs>) -> Result<Json<FileInfo>, ToolError> {
        let a = args.get()?;
        Ok(Json(
            self.engine
                .rename(&a.sandbox_id, &a.from, &a.to, a.overwrite, None)
                .await?,
        ))
    }

    /// URL of a service listening on a port inside the sandbox (fails if nothing listens).
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn preview_url(
        &self,
        args: Parameters<PreviewArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<Preview>, ToolError> {
        let a = args.get()?;
        // Connecting proves something listens; the connection is dropped at once.
        drop(self.engine.connect_port(&a.sandbox_id, a.port).await?);
        let base = self.base_url(&ctx).ok_or_else(|| {
            ToolError::new(
                "unsupported",
                "this server has no HTTP address to build a URL from (start it with `platinum up`)",
            )
        })?;
        Ok(Json(Preview {
            url: format!("{base}/v1/sandboxes/{}/ports/{}/", a.sandbox_id, a.port),
            auth_header: "Authorization: Bearer <your Platinum API key>".into(),
        }))
    }
}

impl PlatinumMcp {
    /// The server's base URL as the client reaches it: configured, else from the request's
    /// `Host` header (HTTP transport).
    fn base_url(&self, ctx: &RequestContext<RoleServer>) -> Option<String> {
        if let Some(url) = &self.options.public_url {
            return Some(url.trim_end_matches('/').to_string());
        }
        let parts = ctx.extensions.get::<axum::http::request::Parts>()?;
        let host = parts.headers.get(axum::http::header::HOST)?.to_str().ok()?;
        let scheme = parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("http");
        Some(format!("{scheme}://{host}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str) -> rmcp::model::Tool {
        PlatinumMcp::tools()
            .into_iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tool {name}"))
    }

    #[test]
    fn every_tool_has_a_description_an_object_input_and_an_output_schema() {
        let tools = PlatinumMcp::tools();
        assert!(
            tools.len() <= 26,
            "keep the tool set small: {}",
            tools.len()
        );
        // Clients send the list to the model in every conversation: keep it lean (24 000, then
        // 25 000 when file entries said where a symlink leads, 26 000 with their metadata,
        // 32 000 with the six snapshot tools; list_templates fits in that; 37 000 with the
        // three volume tools: 36 500; 38 000 with set_egress_policy).
        let size = serde_json::to_string(&tools).map_or(usize::MAX, |s| s.len());
        eprintln!("tools/list: {size} bytes");
        assert!(size < 38_000, "tools/list is {size} bytes");
        for t in &tools {
            let d = t.description.as_deref().unwrap_or("");
            assert!(
                !d.is_empty() && d.len() <= 300,
                "{}: description {d:?}",
                t.name
            );
            assert_eq!(
                t.input_schema.get("type"),
                Some(&serde_json::json!("object")),
                "{}",
                t.name
            );
            let out = t
                .output_schema
                .as_ref()
                .unwrap_or_else(|| panic!("{} has no outputSchema", t.name));
            assert_eq!(
                out.get("type"),
                Some(&serde_json::json!("object")),
                "{}",
                t.name
            );
            assert!(t.annotations.is_some(), "{} has no annotations", t.name);
        }
    }

    #[test]
    fn read_file_refuses_a_max_bytes_above_the_cap_with_a_typed_error() {
        assert_eq!(text_limit(None), Ok(None));
        assert_eq!(text_limit(Some(1)), Ok(Some(1)));
        assert_eq!(text_limit(Some(MAX_TEXT_BYTES)), Ok(Some(MAX_TEXT_BYTES)));
        for n in [MAX_TEXT_BYTES + 1, u64::MAX] {
            let e = text_limit(Some(n)).expect_err("over the cap");
            assert_eq!(e.code, "file_too_large");
            assert!(e.message.contains("ranges"), "{}", e.message);
            assert!(e.message.contains("/files"), "{}", e.message);
        }
    }

    #[test]
    fn optional_arguments_have_single_type_schemas_and_are_not_required() {
        let t = tool("create_sandbox");
        let props = t.input_schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(props["vcpus"]["type"], "integer");
        assert_eq!(props["template"]["type"], "string");
        assert!(
            t.input_schema.get("required").is_none(),
            "{:?}",
            t.input_schema.get("required")
        );
        let t = tool("run_command");
        let required = t.input_schema["required"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            required,
            vec![
                serde_json::json!("sandbox_id"),
                serde_json::json!("command")
            ]
        );
        // No input schema uses a type list (`["integer", "null"]`, which single-type dialects
        // reject) or a `null` default that contradicts its type.
        for t in PlatinumMcp::tools() {
            let s = serde_json::Value::Object((*t.input_schema).clone()).to_string();
            assert!(!s.contains("\"type\":["), "{}: {s}", t.name);
            assert!(!s.contains("\"default\":null"), "{}: {s}", t.name);
        }
    }
}
