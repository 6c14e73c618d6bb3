//! `/files`: Daytona's file API on the engine's file commands.
//!
//! - Every upload is `POST /files/bulk-upload`: multipart parts `files[i].path` (the destination;
//!   it must come before its file) and `files[i].file` (the bytes; the part's filename is never
//!   trusted). Each file streams straight into the guest (atomic replace, parents created); one
//!   file failing does not stop the others. Any failure: 400 `{errors, files}` plus the usual
//!   error fields.
//! - Every download is `POST /files/bulk-download` `{paths}`: a `multipart/form-data` stream with
//!   one part per path, in order. A file is `name="file"` with `filename` echoing the exact
//!   requested path (plus `filename*` when the path is not plain ASCII); a failure is
//!   `name="error"` with a JSON error body. The stream always ends with the closing boundary,
//!   except when a file breaks off half-way, where ending early is the only honest signal.
//! - `find` is `grep -rnIHZ`, `search` is `find -name`, both with the pattern as one argument;
//!   `replace` is a literal replacement done on the host (read, replace, atomic write).
//! - Relative paths resolve against the work directory (the user's home).

use axum::Json;
use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Extension, Multipart, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use platinum_engine::CreateAs;
use platinum_engine::model::FileInfo;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use time::format_description::well_known::Rfc3339;

use crate::Ctx;
use crate::auth::ToolboxSandbox;
use crate::error::{DJson, DQuery, DResult, DaytonaError};

/// A Daytona `FileInfo`.
pub fn file_info(f: &FileInfo) -> Value {
    let modified = f.modified_at.format(&Rfc3339).unwrap_or_default();
    json!({
        "name": f.name,
        "path": f.path,
        "isDir": f.kind == "dir",
        "size": f.size,
        "mode": f.permissions,
        "permissions": format!("{:04o}", f.mode & 0o7777),
        "owner": f.owner,
        "group": f.group,
        "modTime": modified,
        "modifiedAt": modified,
    })
}

/// A boolean query value as the generated clients send it (`true`, `True`, `1`).
fn truthy(v: &Option<String>) -> bool {
    v.as_deref()
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// An octal mode string (`"755"`, `"0644"`).
fn parse_mode(mode: &str) -> DResult<u32> {
    let m = mode.trim();
    let digits = m.strip_prefix("0o").unwrap_or(m);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|v| *v <= 0o7777)
        .ok_or_else(|| {
            DaytonaError::bad_request(format!("invalid mode {mode:?}: use octal like 755"))
        })
}

/// `?path=`.
#[derive(Debug, Deserialize)]
pub struct PathQuery {
    path: String,
}

/// `GET /files?path&depth`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    path: String,
    depth: Option<u32>,
}

/// `DELETE /files?path&recursive`.
#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    path: String,
    recursive: Option<String>,
}

/// `POST /files/folder?path&mode`.
#[derive(Debug, Deserialize)]
pub struct FolderQuery {
    path: String,
    mode: Option<String>,
}

/// `POST /files/move?source&destination`.
#[derive(Debug, Deserialize)]
pub struct MoveQuery {
    source: String,
    destination: String,
}

/// `POST /files/permissions?path&owner&group&mode`.
#[derive(Debug, Deserialize)]
pub struct PermissionsQuery {
    path: String,
    owner: Option<String>,
    group: Option<String>,
    mode: Option<String>,
}

/// `?path&pattern` of find and search.
#[derive(Debug, Deserialize)]
pub struct PatternQuery {
    path: String,
    pattern: String,
}

/// `POST /files/replace`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplaceRequest {
    files: Vec<String>,
    pattern: String,
    new_value: String,
}

/// `POST /files/bulk-download`.
#[derive(Debug, Deserialize)]
pub struct DownloadRequest {
    paths: Vec<String>,
}

/// `GET /files`.
pub async fn list(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DQuery(q): DQuery<ListQuery>,
) -> DResult<Json<Value>> {
    let entries = ctx
        .engine
        .list_dir(&s.id, &q.path, q.depth.unwrap_or(1), None)
        .await?;
    Ok(Json(Value::Array(entries.iter().map(file_info).collect())))
}

/// `GET /files/info`.
pub async fn info(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DQuery(q): DQuery<PathQuery>,
) -> DResult<Json<Value>> {
    Ok(Json(file_info(
        &ctx.engine.stat(&s.id, &q.path, None).await?,
    )))
}

/// `POST /files/folder`: 201, no body (like `mkdir -p`; `mode` applies to the folder).
pub async fn create_folder(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DQuery(q): DQuery<FolderQuery>,
) -> DResult<StatusCode> {
    let mode = q
        .mode
        .as_deref()
        .filter(|m| !m.is_empty())
        .map(parse_mode)
        .transpose()?;
    ctx.engine
        .make_dir(&s.id, &q.path, CreateAs::default())
        .await?;
    if let Some(mode) = mode {
        ctx.engine.chmod(&s.id, &q.path, mode, None).await?;
    }
    Ok(StatusCode::CREATED)
}

/// `DELETE /files`: 204.
pub async fn delete(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DQuery(q): DQuery<DeleteQuery>,
) -> DResult<StatusCode> {
    ctx.engine
        .remove(&s.id, &q.path, truthy(&q.recursive), None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /files/move`: 200, no body; 409 when the destination exists.
pub async fn move_file(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DQuery(q): DQuery<MoveQuery>,
) -> DResult<StatusCode> {
    ctx.engine
        .rename(&s.id, &q.source, &q.destination, false, None)
        .await?;
    Ok(StatusCode::OK)
}

/// `POST /files/permissions`: 200, no body.
pub async fn set_permissions(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DQuery(q): DQuery<PermissionsQuery>,
) -> DResult<StatusCode> {
    let nonempty = |v: Option<String>| v.filter(|v| !v.is_empty());
    let (owner, group) = (nonempty(q.owner), nonempty(q.group));
    let mode = nonempty(q.mode).as_deref().map(parse_mode).transpose()?;
    if owner.is_none() && group.is_none() && mode.is_none() {
        return Err(DaytonaError::bad_request(
            "give a mode, an owner or a group",
        ));
    }
    // As root, like Daytona's daemon: ownership changes need it, and the sandbox user has
    // passwordless sudo anyway. The path is resolved as the user first (relative paths are
    // relative to the user's home, not root's).
    let path = ctx.engine.stat(&s.id, &q.path, None).await?.path;
    if let Some(mode) = mode {
        ctx.engine
            .chmod(&s.id, &path, mode, Some("root".into()))
            .await?;
    }
    if owner.is_some() || group.is_some() {
        ctx.engine
            .chown(&s.id, &path, owner, group, Some("root".into()))
            .await?;
    }
    Ok(StatusCode::OK)
}

/// `GET /files/find?path&pattern`: lines matching `pattern` (grep regex) under `path`.
pub async fn find(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DQuery(q): DQuery<PatternQuery>,
) -> DResult<Json<Value>> {
    let matches = ctx.engine.find_in_files(&s.id, &q.path, &q.pattern).await?;
    Ok(Json(serde_json::to_value(matches).unwrap_or_default()))
}

/// `GET /files/search?path&pattern`: paths under `path` whose name matches the glob `pattern`.
pub async fn search(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DQuery(q): DQuery<PatternQuery>,
) -> DResult<Json<Value>> {
    let files = ctx.engine.find_files(&s.id, &q.path, &q.pattern).await?;
    Ok(Json(json!({ "files": files })))
}

/// `POST /files/replace`: literal replacement in each file; one result per file.
pub async fn replace(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<ReplaceRequest>,
) -> DResult<Json<Value>> {
    if req.pattern.is_empty() {
        return Err(DaytonaError::bad_request("pattern is empty"));
    }
    let mut results = Vec::with_capacity(req.files.len());
    for file in &req.files {
        match ctx
            .engine
            .replace_in_file(&s.id, file, &req.pattern, &req.new_value)
            .await
        {
            Ok(_) => results.push(json!({ "file": file, "success": true })),
            Err(e) => results.push(
                json!({ "file": file, "success": false, "error": DaytonaError::from(e).message }),
            ),
        }
    }
    Ok(Json(Value::Array(results)))
}

fn malformed(e: impl std::fmt::Display) -> DaytonaError {
    DaytonaError::new(
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST_BODY",
        format!("malformed multipart body: {e}"),
    )
}

/// Which `files[i].path` / `files[i].file` part this is.
fn upload_part(name: &str) -> Option<(usize, bool)> {
    let rest = name.strip_prefix("files[")?;
    let (index, field) = rest.split_once("].")?;
    let index = index.parse().ok()?;
    match field {
        "path" => Some((index, false)),
        "file" => Some((index, true)),
        _ => None,
    }
}

/// `POST /files/bulk-upload`.
pub async fn bulk_upload(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let mut multipart = match multipart {
        Ok(m) => m,
        Err(r) => return malformed(r.body_text()).into_response(),
    };
    let mut paths: HashMap<usize, String> = HashMap::new();
    let mut done: Vec<Value> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let mut first_error: Option<DaytonaError> = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return malformed(e.body_text()).into_response(),
        };
        let name = field.name().unwrap_or_default().to_string();
        match upload_part(&name) {
            Some((i, false)) => match field.text().await {
                Ok(p) => {
                    paths.insert(i, p);
                }
                Err(e) => return malformed(e.body_text()).into_response(),
            },
            Some((i, true)) => {
                let Some(path) = paths.get(&i).cloned() else {
                    errors.push(format!(
                        "files[{i}]: its path part must come before its file part"
                    ));
                    first_error.get_or_insert_with(|| {
                        DaytonaError::bad_request("file part without a preceding path part")
                    });
                    continue;
                };
                match ctx
                    .engine
                    .write_file(&s.id, &path, CreateAs::default(), None, field)
                    .await
                {
                    Ok(info) => done.push(json!({ "path": path, "bytes": info.size })),
                    Err(e) => {
                        let e = DaytonaError::from(e);
                        errors.push(format!("{path}: {}", e.message));
                        first_error.get_or_insert(e);
                    }
                }
            }
            None => {
                tracing::debug!(field = %name, "ignoring unknown bulk-upload part");
            }
        }
    }
    match first_error {
        None => Json(json!({ "files": done })).into_response(),
        Some(first) => {
            tracing::info!(sandbox = %s.id, failed = errors.len(), "bulk upload had failures");
            let mut body = first.body();
            body["statusCode"] = json!(400);
            body["message"] = json!(errors.join("; "));
            body["errors"] = json!(errors);
            body["files"] = json!(done);
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
    }
}

/// RFC 5987 `attr-char`s stay; everything else is percent-encoded.
fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `Content-Disposition` of a bulk-download part: `filename` echoes the requested path exactly
/// (quoted-string escaped); paths that are not printable ASCII also get `filename*`, which the
/// SDKs prefer.
pub fn disposition(name: &str, path: &str) -> String {
    let plain = path.bytes().all(|b| (0x20..0x7f).contains(&b));
    if plain {
        let quoted = path.replace('\\', "\\\\").replace('"', "\\\"");
        format!("form-data; name=\"{name}\"; filename=\"{quoted}\"")
    } else {
        let enc = pct_encode(path);
        format!("form-data; name=\"{name}\"; filename=\"{enc}\"; filename*=utf-8''{enc}")
    }
}

/// `POST /files/bulk-download`.
pub async fn bulk_download(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<DownloadRequest>,
) -> Response {
    let boundary = format!("platinum-{}", hex::encode(crate::tokens::random_secret()));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let b = boundary.clone();
    let request = crate::error::current_request();
    tokio::spawn(async move {
        for path in req.paths {
            if !send_part(&ctx, &s.id, &b, &path, &tx, request.as_ref()).await {
                return;
            }
        }
        let _ = tx.send(Ok(Bytes::from(format!("--{b}--\r\n")))).await;
    });
    let stream = tokio_stream_from(rx);
    (
        [(
            CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )],
        Body::from_stream(stream),
    )
        .into_response()
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Sends one part; false when the response is gone or broke off.
async fn send_part(
    ctx: &Ctx,
    id: &str,
    boundary: &str,
    path: &str,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    request: Option<&crate::error::RequestInfo>,
) -> bool {
    match ctx.engine.read_file(id, path, None).await {
        Ok(mut dl) => {
            let head = format!(
                "--{boundary}\r\nContent-Disposition: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                disposition("file", path),
                dl.entry.size
            );
            if tx.send(Ok(Bytes::from(head))).await.is_err() {
                return false;
            }
            loop {
                match dl.chunk().await {
                    Ok(Some(chunk)) => {
                        if tx.send(Ok(chunk)).await.is_err() {
                            return false;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(sandbox = %id, %path, error = %e, "download broke off");
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        return false;
                    }
                }
            }
            tx.send(Ok(Bytes::from_static(b"\r\n"))).await.is_ok()
        }
        Err(e) => {
            let e = DaytonaError::from(e);
            let body = e.body_for(request).to_string();
            let mut part = BytesMut::new();
            part.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    disposition("error", path),
                    body.len()
                )
                .as_bytes(),
            );
            part.extend_from_slice(body.as_bytes());
            part.extend_from_slice(b"\r\n");
            tx.send(Ok(part.freeze())).await.is_ok()
        }
    }
}

/// `GET /files/download?path` (signed download URLs): the raw bytes.
pub async fn download(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DQuery(q): DQuery<PathQuery>,
) -> DResult<Response> {
    let dl = ctx.engine.read_file(&s.id, &q.path, None).await?;
    let name = dl.entry.name.clone();
    let size = dl.entry.size;
    let stream = dl
        .into_stream()
        .map(|r| r.map_err(|e| std::io::Error::other(e.to_string())));
    Ok((
        [
            (CONTENT_TYPE, "application/octet-stream".to_string()),
            (CONTENT_LENGTH, size.to_string()),
            (
                CONTENT_DISPOSITION,
                disposition("file", &name).replacen("form-data", "attachment", 1),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `POST /files/upload-v2?path` (signed upload URLs): multipart part `file`.
pub async fn upload_v2(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DQuery(q): DQuery<PathQuery>,
    multipart: Result<Multipart, MultipartRejection>,
) -> DResult<Json<Value>> {
    let mut multipart = multipart.map_err(|r| malformed(r.body_text()))?;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| malformed(e.body_text()))?
    {
        if field.name() != Some("file") {
            continue;
        }
        let mime = field
            .content_type()
            .unwrap_or("application/octet-stream")
            .to_string();
        let info = ctx
            .engine
            .write_file(&s.id, &q.path, CreateAs::default(), None, field)
            .await?;
        return Ok(Json(
            json!({ "name": info.name, "path": info.path, "type": mime }),
        ));
    }
    Err(malformed("no part named \"file\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_parts_are_recognised() {
        assert_eq!(upload_part("files[0].path"), Some((0, false)));
        assert_eq!(upload_part("files[12].file"), Some((12, true)));
        assert_eq!(upload_part("files[x].file"), None);
        assert_eq!(upload_part("file"), None);
    }

    #[test]
    fn dispositions_echo_paths_the_sdks_can_match() {
        assert_eq!(
            disposition("file", "/home/user/a b.txt"),
            "form-data; name=\"file\"; filename=\"/home/user/a b.txt\""
        );
        assert_eq!(
            disposition("error", "q\"x\\y"),
            "form-data; name=\"error\"; filename=\"q\\\"x\\\\y\""
        );
        let d = disposition("file", "dir/ü.txt");
        assert!(d.ends_with("filename*=utf-8''dir%2F%C3%BC.txt"), "{d}");
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode("755").unwrap(), 0o755);
        assert_eq!(parse_mode("0644").unwrap(), 0o644);
        assert!(parse_mode("999").is_err());
        assert!(parse_mode("77777").is_err());
    }
}
