//! `platinum://` resources.
//!
//! | URI | contents |
//! |---|---|
//! | `platinum://sandboxes` | the sandbox list (JSON) |
//! | `platinum://sandboxes/{id}` | one sandbox (JSON) |
//! | `platinum://sandboxes/{id}/console` | the last lines of its serial console (text) |
//! | `platinum://sandboxes/{id}/files/{+path}` | a file, by absolute path (text or blob) |
//!
//! `resources/list` names the sandbox list and every sandbox; the parametrised forms are
//! resource templates (RFC 6570). Failures are JSON-RPC errors: `-32002` (resource not found)
//! for unknown URIs, sandboxes and files, with the engine's code in `data.code`.

use base64::Engine as _;
use platinum_engine::Engine;
use platinum_engine::model::ListQuery;
use rmcp::ErrorData;
use rmcp::model::{
    ListResourcesResult, ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
};

use crate::content::{Kind, MAX_BLOB_BYTES, classify, image_mime, read_whole, text_mime};
use crate::error::ToolError;

const SCHEME: &str = "platinum://sandboxes";
const JSON: &str = "application/json";
/// Console lines a console resource returns.
const CONSOLE_LINES: usize = 200;
/// Sandboxes listed as resources.
const MAX_LISTED: u32 = 200;

/// A parsed `platinum://` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    /// The sandbox list.
    Sandboxes,
    /// One sandbox.
    Sandbox(String),
    /// A sandbox's console log.
    Console(String),
    /// A file in a sandbox (absolute path).
    File(String, String),
}

/// Characters kept as they are in a file URI's path (RFC 3986 unreserved, plus `/`).
fn keep(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/')
}

/// The URI of file `path` (absolute) in sandbox `id`.
pub fn file_uri(id: &str, path: &str) -> String {
    let mut out = format!("{SCHEME}/{id}/files/");
    for b in path.trim_start_matches('/').bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses a `platinum://` URI; `None` for anything else.
pub fn parse(uri: &str) -> Option<Uri> {
    let rest = uri.strip_prefix(SCHEME)?;
    if rest.is_empty() || rest == "/" {
        return Some(Uri::Sandboxes);
    }
    let rest = rest.strip_prefix('/')?;
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if id.is_empty() {
        return None;
    }
    let id = id.to_string();
    match tail {
        "" => Some(Uri::Sandbox(id)),
        "console" => Some(Uri::Console(id)),
        _ => {
            let path = percent_decode(tail.strip_prefix("files/")?)?;
            (!path.is_empty()).then(|| Uri::File(id, format!("/{path}")))
        }
    }
}

/// The resource templates.
pub fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(format!("{SCHEME}/{{id}}"), "sandbox")
            .with_description("A sandbox: state, resources, expiry, runtime")
            .with_mime_type(JSON),
        ResourceTemplate::new(format!("{SCHEME}/{{id}}/files/{{+path}}"), "sandbox-file")
            .with_description("A file in a sandbox by absolute path, e.g. platinum://sandboxes/ID/files/home/user/out.png"),
        ResourceTemplate::new(format!("{SCHEME}/{{id}}/console"), "sandbox-console")
            .with_description("The last lines of a sandbox's serial console (boot and kernel messages)")
            .with_mime_type("text/plain"),
    ]
}

fn engine_error(e: impl Into<ToolError>) -> ErrorData {
    let e: ToolError = e.into();
    let data = Some(serde_json::json!({ "code": e.code }));
    if e.code.ends_with("_not_found") {
        ErrorData::resource_not_found(e.to_string(), data)
    } else if e.code == "invalid_request" {
        ErrorData::invalid_params(e.to_string(), data)
    } else {
        ErrorData::internal_error(e.to_string(), data)
    }
}

/// The newest sandboxes (all but deleted ones).
async fn sandboxes(engine: &Engine) -> Result<Vec<platinum_engine::model::Sandbox>, ErrorData> {
    let page = engine
        .list_sandboxes(ListQuery {
            limit: MAX_LISTED,
            ..Default::default()
        })
        .await
        .map_err(engine_error)?;
    Ok(page.items)
}

/// `resources/list`: the sandbox list and each sandbox.
pub async fn list(engine: &Engine) -> Result<ListResourcesResult, ErrorData> {
    let mut resources = vec![
        Resource::new(SCHEME, "sandboxes")
            .with_description("All sandboxes (JSON)")
            .with_mime_type(JSON),
    ];
    resources.extend(sandboxes(engine).await?.into_iter().map(|s| {
        Resource::new(format!("{SCHEME}/{}", s.id), format!("sandbox {}", s.id))
            .with_description(format!("{} sandbox, {}", s.template, s.state))
            .with_mime_type(JSON)
    }));
    Ok(ListResourcesResult::with_all_items(resources))
}

fn json_contents(value: &impl serde::Serialize, uri: &str) -> Result<ResourceContents, ErrorData> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| ErrorData::internal_error(format!("serialising {uri}: {e}"), None))?;
    Ok(ResourceContents::text(text, uri).with_mime_type(JSON))
}

/// `resources/read`.
pub async fn read(engine: &Engine, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let parsed = parse(uri).ok_or_else(|| {
        ErrorData::resource_not_found(
            format!("unknown resource {uri:?}; see resources/templates/list"),
            None,
        )
    })?;
    let contents = match parsed {
        Uri::Sandboxes => json_contents(
            &serde_json::json!({ "sandboxes": sandboxes(engine).await? }),
            uri,
        )?,
        Uri::Sandbox(id) => {
            json_contents(&engine.get_sandbox(&id).await.map_err(engine_error)?, uri)?
        }
        Uri::Console(id) => {
            let log = engine
                .console_log(&id, CONSOLE_LINES)
                .await
                .map_err(engine_error)?;
            ResourceContents::text(log, uri)
        }
        Uri::File(id, path) => {
            let (abs, bytes) = read_whole(engine, &id, &path, MAX_BLOB_BYTES)
                .await
                .map_err(engine_error)?;
            match classify(&bytes, true) {
                Kind::Text => {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    ResourceContents::text(text, uri).with_mime_type(text_mime(&abs))
                }
                Kind::Image | Kind::Binary => {
                    let mime = image_mime(&bytes).unwrap_or("application/octet-stream");
                    let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
                    ResourceContents::blob(data, uri).with_mime_type(mime)
                }
            }
        }
    };
    Ok(ReadResourceResult::new(vec![contents]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        assert_eq!(parse("platinum://sandboxes"), Some(Uri::Sandboxes));
        assert_eq!(
            parse("platinum://sandboxes/abc"),
            Some(Uri::Sandbox("abc".into()))
        );
        assert_eq!(
            parse("platinum://sandboxes/abc/console"),
            Some(Uri::Console("abc".into()))
        );
        let uri = file_uri("abc", "/home/user/my plot #1.png");
        assert_eq!(
            uri,
            "platinum://sandboxes/abc/files/home/user/my%20plot%20%231.png"
        );
        assert_eq!(
            parse(&uri),
            Some(Uri::File("abc".into(), "/home/user/my plot #1.png".into()))
        );
        assert_eq!(parse("platinum://sandboxes/abc/files/"), None);
        assert_eq!(parse("platinum://sandboxes/abc/other"), None);
        assert_eq!(parse("platinum://sandboxes/abc/files/%zz"), None);
        assert_eq!(parse("file:///etc/passwd"), None);
        assert_eq!(parse("platinum://sandboxesx"), None);
    }

    #[test]
    fn engine_failures_map_to_resource_errors() {
        let e = engine_error(platinum_engine::Error::SandboxNotFound("x".into()));
        assert_eq!(e.code, rmcp::model::ErrorCode::RESOURCE_NOT_FOUND);
        assert_eq!(
            e.data,
            Some(serde_json::json!({"code": "sandbox_not_found"}))
        );
        let e = engine_error(platinum_engine::Error::InvalidRequest("bad".into()));
        assert_eq!(e.code, rmcp::model::ErrorCode::INVALID_PARAMS);
    }
}
