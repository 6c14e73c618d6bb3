//! Files for `COPY` steps: `GET /templates/{templateID}/files/{hash}` says whether the archive
//! of that hash is here and hands out a URL to upload it to, `PUT` [`UPLOAD_PATH`] takes it.
//!
//! The SDKs upload to that URL without their API key (it stands for E2B's presigned storage
//! URL), so the URL carries its own authorization: a signature over the hash and an expiry an
//! hour ahead ([`crate::auth::template_files_signature`]); a missing, wrong or expired one is a
//! 401. The body is the tar archive the SDK made (gzip or not), stored by the engine under the
//! hash as given (the SDKs' hash covers the files' contents and modes, not the archive's bytes,
//! so it cannot be checked here); past the server's upload limit it is a 413.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use platinum_frontend_http::origin::request_base_url;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::{Ctx, auth};

type ApiResult<T> = Result<T, ApiError>;

/// Where archives are uploaded (outside the API-key check; see the module docs).
pub const UPLOAD_PATH: &str = "/e2b/template-files/{hash}";
/// How long an upload URL stays valid, seconds.
const URL_LIFETIME_SECS: i64 = 3600;

/// The signed upload URL of `hash` on `base`, valid until `expires` (Unix seconds).
fn upload_url(secret: &[u8], base: &str, hash: &str, expires: i64) -> String {
    let signature = auth::template_files_signature(secret, hash, expires);
    let path = UPLOAD_PATH.replace("{hash}", hash);
    format!("{base}{path}?expires={expires}&signature={signature}")
}

/// `GET /templates/{templateID}/files/{hash}`: 201 `{present, url}` (`TemplateBuildFileUpload`).
/// The URL comes even when the archive is here, for the SDKs' `forceUpload`.
pub(crate) async fn link(
    State(ctx): State<Ctx>,
    Path((template_id, hash)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !super::is_known(&ctx, &template_id) {
        return Err(super::template_not_found(&template_id));
    }
    let present = ctx.engine.has_template_files(&hash)?;
    let expires = OffsetDateTime::now_utc().unix_timestamp() + URL_LIFETIME_SECS;
    let url = upload_url(
        &ctx.config.secret,
        &request_base_url(&headers),
        &hash,
        expires,
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({ "present": present, "url": url })),
    ))
}

/// `PUT /e2b/template-files/{hash}?expires=&signature=`: stores the archive; 200.
pub(crate) async fn upload(
    State(ctx): State<Ctx>,
    Path(hash): Path<String>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> ApiResult<StatusCode> {
    let (mut expires, mut signature) = (None, None);
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "expires" => expires = value.parse::<i64>().ok(),
            "signature" => signature = Some(value.into_owned()),
            _ => {}
        }
    }
    let unauthorized = |message: String| ApiError {
        status: 401,
        message,
    };
    let (Some(expires), Some(signature)) = (expires, signature) else {
        return Err(unauthorized(
            "the upload URL needs its expires and signature parameters".into(),
        ));
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    auth::check_template_files_signature(&ctx.config.secret, &hash, expires, &signature, now)
        .map_err(unauthorized)?;
    let size = ctx
        .engine
        .upload_template_files(&hash, body.into_data_stream(), false)
        .await?;
    tracing::info!(hash = %hash, size, "E2B template files uploaded");
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_urls_are_signed_on_the_base_the_client_used() {
        let hash = "ab".repeat(32);
        let url = upload_url(b"key", "http://h", &hash, 100);
        let sig = auth::template_files_signature(b"key", &hash, 100);
        assert_eq!(
            url,
            format!("http://h/e2b/template-files/{hash}?expires=100&signature={sig}")
        );
    }
}
