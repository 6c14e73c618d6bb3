//! File bytes as MCP content.
//!
//! A file is text when it is valid UTF-8 without NUL bytes; an image when its first bytes are a
//! PNG, JPEG, GIF or WebP signature; a binary otherwise. The `read_file` tool returns text as a
//! text block, images as image blocks (real `ImageContent`, which clients show to the model as a
//! picture) and binaries as an embedded resource with the file's `platinum://` URI. Resources
//! read through `resources/read` use the same classification.

use base64::Engine as _;
use platinum_engine::{Engine, FileDownload};
use rmcp::model::{CallToolResult, ContentBlock, ResourceContents};
use schemars::JsonSchema;
use serde::Serialize;

use crate::error::{ToolError, ToolResult};
use crate::resources::file_uri;

/// Text `read_file` returns by default.
pub const DEFAULT_TEXT_BYTES: u64 = 256 * 1024;
/// Largest image or binary returned (base64 makes it a third larger on the wire).
pub const MAX_BLOB_BYTES: u64 = 8 << 20;

/// What a file is, for choosing its content block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// UTF-8 text.
    Text,
    /// PNG, JPEG, GIF or WebP.
    Image,
    /// Anything else.
    Binary,
}

/// Structured result of `read_file` (the bytes are in the content block).
#[derive(Debug, Serialize, JsonSchema)]
pub struct FileRead {
    /// Absolute path.
    pub path: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// `text`, `image` or `binary`.
    pub kind: Kind,
    /// MIME type.
    pub mime_type: String,
    /// The text, for text files.
    pub text: Option<String>,
    /// Only the first `max_bytes` of the text were returned.
    pub truncated: bool,
}

/// The image MIME type of `bytes`, from its signature.
pub fn image_mime(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// Text MIME type from a file name (for clients that render by type).
pub fn text_mime(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("json") => "application/json",
        Some("md") => "text/markdown",
        Some("html" | "htm") => "text/html",
        Some("csv") => "text/csv",
        Some("py") => "text/x-python",
        Some("js" | "mjs") => "text/javascript",
        Some("svg") => "image/svg+xml",
        _ => "text/plain",
    }
}

/// Classifies file bytes (`complete`: the whole file was read, so a cut cannot be the reason
/// the bytes are not valid UTF-8).
pub fn classify(bytes: &[u8], complete: bool) -> Kind {
    if image_mime(bytes).is_some() {
        return Kind::Image;
    }
    if bytes.contains(&0) {
        return Kind::Binary;
    }
    match std::str::from_utf8(bytes) {
        Ok(_) => Kind::Text,
        // A read cut in the middle of a character is still text.
        Err(e) if !complete && e.error_len().is_none() => Kind::Text,
        Err(_) => Kind::Binary,
    }
}

/// Appends chunks of `dl` to `buf` until it holds more than `limit` bytes or the file ends.
async fn fill(
    dl: &mut FileDownload,
    buf: &mut Vec<u8>,
    limit: u64,
) -> Result<(), platinum_engine::Error> {
    while (buf.len() as u64) <= limit {
        match dl.chunk().await? {
            Some(chunk) => buf.extend_from_slice(&chunk),
            None => break,
        }
    }
    Ok(())
}

/// Reads a whole file of at most `limit` bytes; returns its absolute path and bytes.
pub async fn read_whole(
    engine: &Engine,
    id: &str,
    path: &str,
    limit: u64,
) -> ToolResult<(String, Vec<u8>)> {
    let mut dl = engine.read_file(id, path, None).await?;
    let abs = dl.entry.path.clone();
    let mut bytes = Vec::new();
    fill(&mut dl, &mut bytes, limit).await?;
    if bytes.len() as u64 > limit {
        return Err(too_large(
            &abs,
            dl.entry.size.max(bytes.len() as u64),
            limit,
        ));
    }
    Ok((abs, bytes))
}

fn too_large(path: &str, size: u64, limit: u64) -> ToolError {
    ToolError::new(
        "file_too_large",
        format!(
            "{path} is {size} bytes; at most {limit} are returned whole (process it with run_command)"
        ),
    )
}

/// The `read_file` tool.
pub async fn read_file(
    engine: &Engine,
    id: &str,
    path: &str,
    max_bytes: Option<u64>,
) -> ToolResult<CallToolResult> {
    let text_limit = max_bytes.unwrap_or(DEFAULT_TEXT_BYTES).max(1);
    let mut dl = engine.read_file(id, path, None).await?;
    let (abs, size) = (dl.entry.path.clone(), dl.entry.size);
    let mut bytes = Vec::new();
    fill(&mut dl, &mut bytes, text_limit).await?;
    let complete = bytes.len() as u64 <= text_limit;
    let kind = classify(&bytes[..bytes.len().min(text_limit as usize)], complete);
    let (block, text, mime, truncated) = match kind {
        Kind::Text => {
            let truncated = !complete;
            bytes.truncate(text_limit as usize);
            if let Err(e) = std::str::from_utf8(&bytes)
                && e.error_len().is_none()
            {
                // The cut fell inside a character: end before it.
                bytes.truncate(e.valid_up_to());
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            (
                ContentBlock::text(text.clone()),
                Some(text),
                text_mime(&abs),
                truncated,
            )
        }
        Kind::Image | Kind::Binary => {
            fill(&mut dl, &mut bytes, MAX_BLOB_BYTES).await?;
            if bytes.len() as u64 > MAX_BLOB_BYTES {
                return Err(too_large(&abs, size, MAX_BLOB_BYTES));
            }
            let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
            match image_mime(&bytes) {
                Some(mime) => (ContentBlock::image(data, mime), None, mime, false),
                None => {
                    let mime = "application/octet-stream";
                    let blob =
                        ResourceContents::blob(data, file_uri(id, &abs)).with_mime_type(mime);
                    (ContentBlock::resource(blob), None, mime, false)
                }
            }
        }
    };
    let structured = FileRead {
        path: abs,
        size,
        kind,
        mime_type: mime.to_string(),
        text,
        truncated,
    };
    let value = serde_json::to_value(&structured)
        .map_err(|e| ToolError::new("internal", format!("serialising the result: {e}")))?;
    let mut result = CallToolResult::success(vec![block]);
    result.structured_content = Some(value);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_text_images_and_binaries() {
        assert_eq!(classify(b"hello\n", true), Kind::Text);
        assert_eq!(classify("h\u{e9}".as_bytes(), true), Kind::Text);
        // A cut inside a multi-byte character is still text, unless the file ended there.
        assert_eq!(classify(&"\u{e9}".as_bytes()[..1], false), Kind::Text);
        assert_eq!(classify(&"\u{e9}".as_bytes()[..1], true), Kind::Binary);
        assert_eq!(classify(b"\x89PNG\r\n\x1a\n\0\0", true), Kind::Image);
        assert_eq!(classify(b"ELF\0\x01", true), Kind::Binary);
        assert_eq!(image_mime(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(image_mime(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(text_mime("/a/b.JSON"), "application/json");
        assert_eq!(text_mime("/a/Makefile"), "text/plain");
    }
}
