//! Secrets on E2B's control plane: the SDKs' `Secret.create` / `update` / `get_info` / `list` /
//! `delete`, over the engine's secrets brokered at egress.
//!
//! | E2B | engine |
//! |---|---|
//! | `POST /secrets` `{name, value, metadata?}` (201 `Secret`; 409 for a name in use) | `create_secret` (the name lower-cased, as E2B stores it) |
//! | `GET /secrets?limit&nextToken` (200 `[Secret]`, `x-next-token`) | `list_secrets`, oldest first |
//! | `GET /secrets/{secret}` (200, 404) | `get_secret` (id or name) |
//! | `POST /secrets/{secret}` `{value, metadata?}` (200 `Secret`) | `update_secret` (the version goes up) |
//! | `DELETE /secrets/{secret}` (204; 409 while a sandbox holds it) | `delete_secret` |
//!
//! Values are write-only. An E2B secret is used through `network.rules[host].transform.headers`
//! (`${e2b.secrets.<name>}`), which Platinum does not apply yet ([`crate::network`] refuses
//! rules), so these secrets are bound to no host: stored, but sent nowhere.

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use platinum_engine::model::{CreateSecret, Secret, UpdateSecret};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

use crate::Ctx;
use crate::control::{Body, PageKey, next_token_headers, page, parse_limit, parse_token};
use crate::error::ApiError;

type ApiResult<T> = Result<T, ApiError>;

const DEFAULT_PAGE: usize = 100;

/// The secret routes (the caller adds the API-key check).
pub(crate) fn routes() -> Router<Ctx> {
    Router::new()
        .route("/secrets", get(list).post(create))
        .route(
            "/secrets/{secret}",
            get(get_one).post(update).delete(remove),
        )
}

/// E2B's `Secret`.
fn secret_json(s: &Secret) -> Value {
    let at = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    json!({
        "secretID": s.id,
        "name": s.name,
        "currentVersion": s.version,
        "metadata": s.metadata,
        "createdAt": at(s.created_at),
        "updatedAt": at(s.updated_at),
    })
}

/// Body of `POST /secrets` (`NewSecret`).
#[derive(Deserialize)]
struct NewSecret {
    name: Option<String>,
    value: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

/// Body of `POST /secrets/{secret}` (`SecretUpdate`).
#[derive(Deserialize)]
struct SecretUpdate {
    value: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

async fn create(State(ctx): State<Ctx>, Body(req): Body<NewSecret>) -> ApiResult<Response> {
    let (Some(name), Some(value)) = (req.name, req.value) else {
        return Err(ApiError::bad_request("name and value are required"));
    };
    let secret = ctx
        .engine
        .create_secret(CreateSecret {
            name: name.to_lowercase(),
            value,
            metadata: req.metadata.unwrap_or_default(),
            ..Default::default()
        })
        .await?;
    Ok((StatusCode::CREATED, Json(secret_json(&secret))).into_response())
}

/// The engine's key for ordering secrets in pages.
fn key(s: &Secret) -> PageKey {
    (s.created_at.unix_timestamp_nanos(), s.id.clone())
}

async fn list(State(ctx): State<Ctx>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let (mut limit, mut after) = (DEFAULT_PAGE, None);
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match (k.as_ref(), v.is_empty()) {
            (_, true) => {}
            ("limit", _) => limit = parse_limit(&v)?,
            ("nextToken", _) => after = Some(parse_token(&v)?),
            _ => {}
        }
    }
    let mut all = ctx.engine.list_secrets().await?;
    all.sort_by_key(key);
    let (items, next) = page(&all, key, after.as_ref(), true, limit);
    let body = Value::Array(items.iter().map(secret_json).collect());
    Ok((StatusCode::OK, next_token_headers(next), Json(body)).into_response())
}

async fn get_one(State(ctx): State<Ctx>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(secret_json(&ctx.engine.get_secret(&id).await?)))
}

async fn update(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Body(req): Body<SecretUpdate>,
) -> ApiResult<Json<Value>> {
    let Some(value) = req.value else {
        return Err(ApiError::bad_request("value is required"));
    };
    let update = UpdateSecret {
        value: Some(value),
        metadata: req.metadata,
        ..Default::default()
    };
    Ok(Json(secret_json(
        &ctx.engine.update_secret(&id, update).await?,
    )))
}

async fn remove(State(ctx): State<Ctx>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    ctx.engine.delete_secret(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
