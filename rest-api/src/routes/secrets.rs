//! Secrets: `/v1/secrets`. A secret's value is write-only: given at create (or update), stored
//! encrypted, never answered. Sandboxes get its placeholder (`secrets` in the create body), and
//! the host's egress broker puts the value into HTTPS request headers to the secret's hosts.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platinum_engine::Engine;
use platinum_engine::model::{CreateSecret, SandboxSecrets, Secret, SecretList, UpdateSecret};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;

use super::SandboxPath;
use crate::error::{ApiJson, ApiResult, ErrorBody};

/// The `{id}` of a secret.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SecretPath {
    /// Secret id or name.
    pub id: String,
}

/// Create a secret.
///
/// The answer has its `placeholder`, never its value (no read returns it). A sandbox created
/// with `secrets: {"VAR": "<name>"}` has the placeholder in `VAR`; HTTPS requests from it to
/// one of `hosts` carry the value wherever a header held the placeholder. Requests to other
/// hosts carry the placeholder unchanged.
#[utoipa::path(post, path = "/v1/secrets", tag = "secrets", operation_id = "createSecret",
    request_body = CreateSecret,
    responses(
        (status = 201, description = "Created (without its value)", body = Secret),
        (status = 400, description = "Invalid name, value or host", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 409, description = "A secret of that name exists", body = ErrorBody)))]
pub async fn create_secret(
    State(engine): State<Arc<Engine>>,
    ApiJson(req): ApiJson<CreateSecret>,
) -> ApiResult<(StatusCode, Json<Secret>)> {
    Ok((StatusCode::CREATED, Json(engine.create_secret(req).await?)))
}

/// List secrets (without values).
#[utoipa::path(get, path = "/v1/secrets", tag = "secrets", operation_id = "listSecrets",
    responses(
        (status = 200, description = "Secrets, oldest first", body = SecretList),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody)))]
pub async fn list_secrets(State(engine): State<Arc<Engine>>) -> ApiResult<Json<SecretList>> {
    Ok(Json(SecretList {
        secrets: engine.list_secrets().await?,
    }))
}

/// Get a secret (without its value).
#[utoipa::path(get, path = "/v1/secrets/{id}", tag = "secrets", operation_id = "getSecret",
    params(SecretPath),
    responses(
        (status = 200, description = "The secret", body = Secret),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such secret", body = ErrorBody)))]
pub async fn get_secret(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SecretPath>,
) -> ApiResult<Json<Secret>> {
    Ok(Json(engine.get_secret(&p.id).await?))
}

/// Update a secret.
///
/// Fields given replace what was stored; a new `value` raises `version`. Sandboxes holding its
/// placeholder send the new value and hosts from their next request on.
#[utoipa::path(patch, path = "/v1/secrets/{id}", tag = "secrets", operation_id = "updateSecret",
    params(SecretPath),
    request_body = UpdateSecret,
    responses(
        (status = 200, description = "Updated (without its value)", body = Secret),
        (status = 400, description = "Invalid value or host", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such secret", body = ErrorBody)))]
pub async fn update_secret(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SecretPath>,
    ApiJson(req): ApiJson<UpdateSecret>,
) -> ApiResult<Json<Secret>> {
    Ok(Json(engine.update_secret(&p.id, req).await?))
}

/// Delete a secret.
#[utoipa::path(delete, path = "/v1/secrets/{id}", tag = "secrets", operation_id = "deleteSecret",
    params(SecretPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such secret", body = ErrorBody),
        (status = 409, description = "A sandbox holds its placeholder", body = ErrorBody)))]
pub async fn delete_secret(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SecretPath>,
) -> ApiResult<StatusCode> {
    engine.delete_secret(&p.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The secrets a sandbox holds placeholders of, by variable.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/secrets", tag = "secrets", operation_id = "getSandboxSecrets",
    params(SandboxPath),
    responses(
        (status = 200, description = "Variable → secret (without values)", body = SandboxSecrets),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn sandbox_secrets(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
) -> ApiResult<Json<SandboxSecrets>> {
    Ok(Json(SandboxSecrets {
        secrets: engine.sandbox_secrets(&p.id).await?,
    }))
}
