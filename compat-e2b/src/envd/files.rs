//! envd's plain HTTP file routes: `GET /files` (download) and `POST /files` (upload), streamed
//! both ways.
//!
//! - Access: `X-Access-Token`, or a URL signature (`signature`, `signature_expiration`) for the
//!   operation (`read` or `write`), see [`crate::auth`].
//! - User: `username=` or `Authorization: Basic`; absolute paths are read and written as root and
//!   what an upload creates (the file and any missing parent directories) is handed to the user,
//!   as envd does.
//! - Download: 200 `application/octet-stream`; `Accept-Encoding: gzip` gets a gzip body; an
//!   encoding that cannot be met (identity refused, no gzip) is 406.
//! - Upload: `multipart/form-data` with `file` parts whose filename is the destination (the
//!   `path` query, when present, names the destination of a single file), or
//!   `application/octet-stream` to `path` (`Content-Encoding: gzip` allowed). Answers 200 with
//!   `[{"path", "name", "type": "file"}]`. Too large is 413, disk full 507.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flate2::write::{GzDecoder, GzEncoder};
use futures::{Stream, StreamExt, TryStreamExt};
use platinum_engine::model::{FileInfo, ListQuery, SandboxState};
use platinum_engine::{CreateAs, Error};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;

use crate::envd::{acting_user, create_as, token};
use crate::error::HttpError;
use crate::routing::SandboxId;
use crate::{Ctx, auth};

type HttpResult<T> = Result<T, HttpError>;

/// The query of `/files`.
#[derive(Debug, Default)]
struct FileQuery {
    path: Option<String>,
    username: Option<String>,
    signature: Option<String>,
    expiration: Option<i64>,
}

impl FileQuery {
    /// The URL's signature claim for `operation`, if it carries a signature.
    fn signed<'a>(&'a self, operation: &'a str) -> Option<auth::SignedUrl<'a>> {
        Some(auth::SignedUrl {
            path: self.path.as_deref().unwrap_or_default(),
            operation,
            user: self.username.as_deref(),
            signature: self.signature.as_deref()?,
            expiration: self.expiration,
        })
    }
}

fn query(req: &Request) -> HttpResult<FileQuery> {
    query_of(req.uri())
}

fn query_of(uri: &Uri) -> HttpResult<FileQuery> {
    let mut q = FileQuery::default();
    for (k, v) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        let v = v.into_owned();
        match k.as_ref() {
            "path" => q.path = Some(v),
            "username" if !v.is_empty() => q.username = Some(v),
            "signature" => q.signature = Some(v),
            "signature_expiration" => {
                q.expiration = Some(
                    v.parse()
                        .map_err(|_| HttpError::new(400, "invalid signature_expiration"))?,
                );
            }
            _ => {}
        }
    }
    Ok(q)
}

/// The operation a `/files` request performs, as signatures name it.
fn operation(method: &Method) -> Option<&'static str> {
    match *method {
        Method::GET => Some("read"),
        Method::POST => Some("write"),
        _ => None,
    }
}

/// Sandboxes looked at per page while finding a URL's signer.
const SIGNER_PAGE: u32 = 500;

/// The running sandbox whose access token signed a `/files` URL that carries no routing: the SDKs
/// build `download_url()`/`upload_url()` on `E2B_SANDBOX_URL` with neither the sandbox id nor a
/// per-sandbox host in it, so the signature, which only that sandbox's token can produce, is what
/// names it. `None` when the request is not such a URL or no running sandbox signed it. Costs one
/// HMAC and one SHA-256 per running sandbox.
pub async fn signer(ctx: &Ctx, method: &Method, uri: &Uri) -> Option<String> {
    if uri.path() != "/files" {
        return None;
    }
    let operation = operation(method)?;
    let q = query_of(uri).ok()?;
    let url = q.signed(operation)?;
    let mut cursor = None;
    loop {
        let page = ctx
            .engine
            .list_sandboxes(ListQuery {
                states: vec![SandboxState::Running],
                limit: SIGNER_PAGE,
                cursor,
                ..ListQuery::default()
            })
            .await
            .ok()?;
        if let Some(s) = page
            .items
            .iter()
            .find(|s| url.signed_with(&token(ctx, &s.id)))
        {
            return Some(s.id.clone());
        }
        cursor = Some(page.next_cursor?);
    }
}

/// Checks access to `/files` for `operation` and returns the user the request acts for.
fn authorize(
    ctx: &Ctx,
    id: &str,
    headers: &HeaderMap,
    q: &FileQuery,
    operation: &str,
) -> HttpResult<Option<String>> {
    let user = match &q.username {
        Some(u) => Some(u.clone()),
        None => auth::basic_user(headers).map_err(|m| HttpError::new(401, m))?,
    };
    let token = token(ctx, id);
    if auth::has_token(headers, &token) {
        return Ok(user);
    }
    let Some(url) = q.signed(operation) else {
        return Err(HttpError::new(
            401,
            "missing X-Access-Token header or signature",
        ));
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    url.check(&token, now).map_err(|m| HttpError::new(401, m))?;
    Ok(user)
}

/// Whether the client takes gzip (`Some(true)`), identity (`Some(false)`), or neither (`None`).
fn wants_gzip(headers: &HeaderMap) -> Option<bool> {
    let Some(value) = headers.get(ACCEPT_ENCODING).and_then(|v| v.to_str().ok()) else {
        return Some(false);
    };
    let mut accepted = HashMap::new();
    for part in value.split(',') {
        let mut bits = part.split(';');
        let coding = bits.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = bits
            .find_map(|b| {
                b.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
            })
            .unwrap_or(1.0);
        accepted.insert(coding, q);
    }
    let ok = |c: &str| {
        accepted
            .get(c)
            .or(accepted.get("*"))
            .is_some_and(|q| *q > 0.0)
    };
    if ok("gzip") && accepted.contains_key("gzip") {
        return Some(true);
    }
    // identity is acceptable unless refused explicitly (or by `*;q=0` without naming it).
    let identity_refused = match accepted.get("identity") {
        Some(q) => *q <= 0.0,
        None => accepted.get("*").is_some_and(|q| *q <= 0.0),
    };
    if !identity_refused {
        Some(false)
    } else if ok("gzip") {
        Some(true)
    } else {
        None
    }
}

/// `GET /files`.
pub async fn download(State(ctx): State<Ctx>, req: Request) -> Response {
    match try_download(ctx, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn try_download(ctx: Ctx, req: Request) -> HttpResult<Response> {
    let id = sandbox(&req)?;
    let q = query(&req)?;
    let user = authorize(&ctx, &id, req.headers(), &q, "read")?;
    let path = q
        .path
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| HttpError::new(400, "path is required"))?;
    let gzip = wants_gzip(req.headers())
        .ok_or_else(|| HttpError::new(406, "only gzip and identity encodings are supported"))?;
    let download = ctx
        .engine
        .read_file(&id, &path, acting_user(&user, &path))
        .await?;
    let size = download.entry.size;
    let chunks = download.into_stream().map_err(Error::from);
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let body = if gzip {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        Body::from_stream(gzip_stream(chunks))
    } else {
        // No Content-Length: a file that changes while it streams must not break the response.
        Body::from_stream(chunks.map_err(std::io::Error::other))
    };
    tracing::debug!(sandbox = %id, %path, size, gzip, "download");
    Ok((StatusCode::OK, headers, body).into_response())
}

/// Compresses a byte stream with gzip as it flows.
fn gzip_stream(
    input: impl Stream<Item = Result<Bytes, Error>> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let encoder = Some(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    futures::stream::unfold(
        (Box::pin(input), encoder),
        |(mut input, mut encoder)| async move {
            let enc = encoder.as_mut()?;
            let out = match input.next().await {
                Some(Ok(chunk)) => enc
                    .write_all(&chunk)
                    .map(|()| Bytes::from(std::mem::take(enc.get_mut()))),
                Some(Err(e)) => Err(std::io::Error::other(e.to_string())),
                None => encoder.take()?.finish().map(Bytes::from),
            };
            Some((out, (input, encoder)))
        },
    )
    .filter(|r| futures::future::ready(r.as_ref().map_or(true, |b| !b.is_empty())))
}

/// Decompresses a gzip byte stream as it flows.
fn gunzip_stream<E: std::fmt::Display + Send + 'static>(
    input: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, String>> + Send + 'static {
    let decoder = Some(GzDecoder::new(Vec::new()));
    futures::stream::unfold(
        (Box::pin(input), decoder),
        |(mut input, mut decoder)| async move {
            let dec = decoder.as_mut()?;
            let out = match input.next().await {
                Some(Ok(chunk)) => dec
                    .write_all(&chunk)
                    .map(|()| Bytes::from(std::mem::take(dec.get_mut())))
                    .map_err(|e| format!("bad gzip body: {e}")),
                Some(Err(e)) => Err(e.to_string()),
                None => decoder
                    .take()?
                    .finish()
                    .map(Bytes::from)
                    .map_err(|e| format!("bad gzip body: {e}")),
            };
            Some((out, (input, decoder)))
        },
    )
    .filter(|r| futures::future::ready(r.as_ref().map_or(true, |b| !b.is_empty())))
}

/// `path` with `.` and `..` resolved lexically, as envd (Go's `filepath.Clean`) reports paths.
fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

fn sandbox(req: &Request) -> HttpResult<String> {
    req.extensions()
        .get::<SandboxId>()
        .map(|s| s.0.clone())
        .ok_or_else(|| HttpError::new(500, "request was not routed to a sandbox"))
}

/// `POST /files`.
pub async fn upload(State(ctx): State<Ctx>, req: Request) -> Response {
    match try_upload(ctx, req).await {
        Ok(written) => {
            let body: Vec<Value> = written
                .iter()
                .map(|f| {
                    let mut v =
                        json!({ "path": clean_path(&f.path), "name": f.name, "type": "file" });
                    if !f.metadata.is_empty() {
                        v["metadata"] = json!(f.metadata);
                    }
                    v
                })
                .collect();
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn try_upload(ctx: Ctx, req: Request) -> HttpResult<Vec<FileInfo>> {
    let id = sandbox(&req)?;
    let q = query(&req)?;
    let user = authorize(&ctx, &id, req.headers(), &q, "write")?;
    let metadata = upload_metadata(req.headers())?;
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(req, &())
            .await
            .map_err(|e| HttpError::new(400, format!("bad multipart body: {e}")))?;
        let mut written = Vec::new();
        let mut seen = HashSet::new();
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| HttpError::new(400, format!("bad multipart body: {e}")))?
        {
            if field.name() != Some("file") {
                continue;
            }
            let dest = match (&q.path, field.file_name()) {
                (Some(p), _) if !p.is_empty() => {
                    if !written.is_empty() {
                        return Err(HttpError::new(
                            400,
                            "the path query names one file, but the body has several",
                        ));
                    }
                    p.clone()
                }
                (_, Some(name)) if !name.is_empty() => name.to_string(),
                _ => return Err(HttpError::new(400, "a file part has no destination path")),
            };
            if !seen.insert(dest.clone()) {
                return Err(HttpError::new(
                    400,
                    format!("two parts are written to {dest}"),
                ));
            }
            written.push(write_one(&ctx, &id, &user, &metadata, &dest, None, field).await?);
        }
        if written.is_empty() {
            return Err(HttpError::new(400, "the body has no file part"));
        }
        Ok(written)
    } else if content_type.is_empty() || content_type.starts_with("application/octet-stream") {
        let dest = q
            .path
            .clone()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| HttpError::new(400, "path is required for octet-stream uploads"))?;
        let gzip = req
            .headers()
            .get(CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase());
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = req.into_body().into_data_stream();
        let file = match gzip.as_deref() {
            None | Some("identity") => {
                write_one(&ctx, &id, &user, &metadata, &dest, declared, body).await?
            }
            Some("gzip") => {
                write_one(
                    &ctx,
                    &id,
                    &user,
                    &metadata,
                    &dest,
                    None,
                    gunzip_stream(body),
                )
                .await?
            }
            Some(other) => {
                return Err(HttpError::new(
                    400,
                    format!("unsupported Content-Encoding {other:?}"),
                ));
            }
        };
        Ok(vec![file])
    } else {
        Err(HttpError::new(
            400,
            format!("unsupported Content-Type {content_type:?}"),
        ))
    }
}

/// The file metadata an upload carries: one `X-Metadata-<key>` header per key (envd 0.6.2; keys
/// arrive in lower case, as HTTP header names do), applied to every file of the upload.
fn upload_metadata(headers: &HeaderMap) -> HttpResult<BTreeMap<String, String>> {
    let mut metadata = BTreeMap::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(METADATA_HEADER_PREFIX) else {
            continue;
        };
        let value = value.to_str().map_err(|_| {
            HttpError::new(
                400,
                format!("metadata value for {key:?} is not printable ASCII"),
            )
        })?;
        metadata.insert(key.to_string(), value.to_string());
    }
    Ok(metadata)
}

/// Header names of upload metadata, as `http` spells them (lower case).
const METADATA_HEADER_PREFIX: &str = "x-metadata-";

/// Writes one file; root writes absolute paths and hands the result (and the parents it made) to
/// the user.
async fn write_one<S, E>(
    ctx: &Ctx,
    id: &str,
    user: &Option<String>,
    metadata: &BTreeMap<String, String>,
    dest: &str,
    declared: Option<u64>,
    body: S,
) -> HttpResult<FileInfo>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    let how = CreateAs {
        metadata: metadata.clone(),
        ..create_as(user, dest)
    };
    let written = ctx.engine.write_file(id, dest, how, declared, body).await?;
    tracing::debug!(sandbox = %id, path = %written.path, size = written.size, "upload");
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> Option<bool> {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, v.parse().unwrap());
        wants_gzip(&h)
    }

    #[test]
    fn encodings_are_negotiated() {
        assert_eq!(wants_gzip(&HeaderMap::new()), Some(false));
        assert_eq!(accept("gzip"), Some(true));
        assert_eq!(accept("gzip, deflate, br"), Some(true));
        assert_eq!(accept("identity"), Some(false));
        assert_eq!(accept("br"), Some(false));
        assert_eq!(accept("br, identity;q=0"), None);
        assert_eq!(accept("gzip;q=0"), Some(false));
        assert_eq!(accept("*;q=0"), None);
    }

    #[test]
    fn paths_are_cleaned_like_go() {
        assert_eq!(clean_path("/home/user/../../../tmp/x"), "/tmp/x");
        assert_eq!(clean_path("/a/./b//c/"), "/a/b/c");
        assert_eq!(clean_path("/"), "/");
    }

    #[tokio::test]
    async fn gzip_streams_round_trip() {
        let data: Vec<Bytes> = (0..50)
            .map(|i| Bytes::from(format!("chunk {i} ").repeat(100)))
            .collect();
        let expected: Vec<u8> = data.iter().flat_map(|b| b.to_vec()).collect();
        let input = futures::stream::iter(data.into_iter().map(Ok::<_, Error>));
        let zipped: Vec<Bytes> = gzip_stream(input).try_collect().await.unwrap();
        let back: Vec<Bytes> = gunzip_stream(futures::stream::iter(
            zipped.into_iter().map(Ok::<_, std::io::Error>),
        ))
        .try_collect()
        .await
        .unwrap();
        assert_eq!(back.concat(), expected);
        let broken = gunzip_stream(futures::stream::iter([Ok::<_, std::io::Error>(
            Bytes::from_static(b"not gzip at all"),
        )]));
        assert!(broken.try_collect::<Vec<_>>().await.is_err());
    }
}
