//! `/v1/keys`: API keys. List (never the secrets), create (the secret is returned once, in
//! Platinum's `pt_` form or E2B's `e2b_` form), revoke (immediate, also for the key making the
//! request) and rotate (a new key with the same name; the old one is revoked).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platinum_engine::Engine;
use platinum_engine::commands::keys::{ApiKeyInfo, CreateApiKey, CreatedApiKey};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiJson, ApiQuery, ApiResult, ErrorBody};

/// The `{id}` path parameter of a key.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyPath {
    /// API key id (from the listing or the create answer).
    pub id: String,
}

/// Listing options.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListKeysParams {
    /// Include revoked keys (default false).
    pub include_revoked: Option<bool>,
}

/// API keys, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    /// The keys (no secrets).
    pub keys: Vec<ApiKeyInfo>,
}

/// List API keys. Secrets are never returned; `prefix` shows a key's first characters.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", operation_id = "listApiKeys",
    params(ListKeysParams),
    responses(
        (status = 200, description = "The keys", body = KeyList),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody)))]
pub async fn list_keys(
    State(engine): State<Arc<Engine>>,
    ApiQuery(q): ApiQuery<ListKeysParams>,
) -> ApiResult<Json<KeyList>> {
    let keys = engine
        .list_api_keys(q.include_revoked.unwrap_or(false))
        .await?;
    Ok(Json(KeyList { keys }))
}

/// Create an API key. The answer carries the key itself, the only time it is shown. Use
/// `"format": "e2b"` for a key E2B's SDKs accept (`e2b_` + 40 hex digits).
#[utoipa::path(post, path = "/v1/keys", tag = "keys", operation_id = "createApiKey",
    request_body = CreateApiKey,
    responses(
        (status = 201, description = "Created; `key` is shown only now", body = CreatedApiKey),
        (status = 400, description = "Invalid name, or an own key that is too weak", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 409, description = "That own key is already stored", body = ErrorBody)))]
pub async fn create_key(
    State(engine): State<Arc<Engine>>,
    ApiJson(req): ApiJson<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    Ok((StatusCode::CREATED, Json(engine.create_api_key(req).await?)))
}

/// Revoke an API key: it is refused from now on (also when it is the key making this request).
/// Revoking a revoked key changes nothing.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", operation_id = "revokeApiKey",
    params(KeyPath),
    responses(
        (status = 200, description = "Revoked", body = ApiKeyInfo),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such key (`api_key_not_found`)", body = ErrorBody)))]
pub async fn revoke_key(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<KeyPath>,
) -> ApiResult<Json<ApiKeyInfo>> {
    Ok(Json(engine.revoke_api_key(&p.id).await?))
}

/// Rotate an API key: a new key with the same name and format replaces it, and the old one is
/// revoked. The answer carries the new key, the only time it is shown.
#[utoipa::path(post, path = "/v1/keys/{id}/rotate", tag = "keys", operation_id = "rotateApiKey",
    params(KeyPath),
    responses(
        (status = 201, description = "Rotated; `key` is the new key, shown only now", body = CreatedApiKey),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such key (`api_key_not_found`)", body = ErrorBody),
        (status = 409, description = "The key is revoked", body = ErrorBody)))]
pub async fn rotate_key(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<KeyPath>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    Ok((
        StatusCode::CREATED,
        Json(engine.rotate_api_key(&p.id).await?),
    ))
}
