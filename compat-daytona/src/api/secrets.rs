//! `/api/secret`: Daytona secrets over the engine's secrets brokered at egress.
//!
//! | Daytona | engine |
//! |---|---|
//! | `POST /secret` `{name, value, description?, hosts?}` (201 `Secret`; 409 for a name in use) | `create_secret` |
//! | `GET /secret` (200 `[Secret]`), `GET /secret/paginated?cursor&limit&name&sort&order` (200 `{items, total, nextCursor}`) | `list_secrets` |
//! | `GET /secret/{secretId}` (200, 404) | `get_secret` (an id or a name) |
//! | `PATCH /secret/{secretId}` `{value?, description?, hosts?}` (200 `Secret`) | `update_secret` |
//! | `DELETE /secret/{secretId}` (204; 409 while a sandbox holds it) | `delete_secret` |
//! | `secrets: [{ENV: secretName}]` of `POST /sandbox` | `CreateSandbox.secrets` |
//! | `PUT /sandbox/{idOrName}/secrets` `{secrets: [{ENV: secretName}]}` (200 `Sandbox`) | `set_sandbox_secrets` (running sandboxes) |
//!
//! The value is never answered. A sandbox's variable holds the secret's `placeholder`; the host
//! puts the value into HTTPS request headers to the secret's `hosts` only. Daytona sends a
//! secret without `hosts` anywhere; on Platinum it is sent nowhere (the guest could otherwise
//! hand it to any server it likes).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use platinum_engine::model::{CreateSecret, Secret, UpdateSecret};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;

use crate::Ctx;
use crate::error::{DJson, DPath, DQuery, DResult, DaytonaError};

/// The `Secret` object.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretDto {
    id: String,
    name: String,
    description: Option<String>,
    placeholder: String,
    hosts: Vec<String>,
    created_at: String,
    updated_at: String,
}

fn dto(s: &Secret) -> SecretDto {
    SecretDto {
        id: s.id.clone(),
        name: s.name.clone(),
        description: s.description.clone(),
        placeholder: s.placeholder.clone(),
        hosts: s.hosts.clone(),
        created_at: s.created_at.format(&Rfc3339).unwrap_or_default(),
        updated_at: s.updated_at.format(&Rfc3339).unwrap_or_default(),
    }
}

/// Body of `POST /secret` (`CreateSecret`).
#[derive(Deserialize)]
pub struct CreateSecretRequest {
    name: String,
    value: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    hosts: Option<Vec<String>>,
}

/// Body of `PATCH /secret/{secretId}` (`UpdateSecret`).
#[derive(Deserialize)]
pub struct UpdateSecretRequest {
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    hosts: Option<Vec<String>>,
}

/// Query of `GET /secret/paginated`.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    cursor: Option<String>,
    limit: Option<usize>,
    name: Option<String>,
    sort: Option<String>,
    order: Option<String>,
}

/// `GET /secret`.
pub async fn list(State(ctx): State<Ctx>) -> DResult<Json<Vec<SecretDto>>> {
    Ok(Json(
        ctx.engine.list_secrets().await?.iter().map(dto).collect(),
    ))
}

/// `GET /secret/paginated`: filtered by part of the name, sorted, cut at an offset cursor.
pub async fn paginated(
    State(ctx): State<Ctx>,
    DQuery(q): DQuery<PageQuery>,
) -> DResult<Json<Value>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=200).contains(&limit) {
        return Err(DaytonaError::bad_request("limit must be 1-200"));
    }
    let start: usize = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => c
            .parse()
            .map_err(|_| DaytonaError::bad_request(format!("invalid cursor {c:?}")))?,
        None => 0,
    };
    let mut all = ctx.engine.list_secrets().await?;
    if let Some(part) = q.name.as_deref().filter(|n| !n.is_empty()) {
        let part = part.to_ascii_lowercase();
        all.retain(|s| s.name.to_ascii_lowercase().contains(&part));
    }
    match q.sort.as_deref().unwrap_or("createdAt") {
        "name" => all.sort_by(|a, b| a.name.cmp(&b.name)),
        "createdAt" => all.sort_by_key(|s| s.created_at),
        "updatedAt" => all.sort_by_key(|s| s.updated_at),
        other => {
            return Err(DaytonaError::bad_request(format!(
                "sort {other:?}: name, createdAt or updatedAt"
            )));
        }
    }
    match q.order.as_deref().unwrap_or("desc") {
        "desc" => all.reverse(),
        "asc" => {}
        other => {
            return Err(DaytonaError::bad_request(format!(
                "order {other:?}: asc or desc"
            )));
        }
    }
    let total = all.len();
    let items: Vec<SecretDto> = all.iter().skip(start).take(limit).map(dto).collect();
    let next = (start + items.len() < total).then(|| (start + items.len()).to_string());
    Ok(Json(serde_json::json!({
        "items": items,
        "total": total,
        "nextCursor": next,
    })))
}

/// `POST /secret`: 201 with the secret (no value).
pub async fn create(
    State(ctx): State<Ctx>,
    DJson(req): DJson<CreateSecretRequest>,
) -> DResult<(StatusCode, Json<SecretDto>)> {
    let secret = ctx
        .engine
        .create_secret(CreateSecret {
            name: req.name,
            value: req.value,
            description: req.description,
            hosts: req.hosts.unwrap_or_default(),
            metadata: BTreeMap::new(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(dto(&secret))))
}

/// `GET /secret/{secretId}`.
pub async fn get(State(ctx): State<Ctx>, DPath(id): DPath<String>) -> DResult<Json<SecretDto>> {
    Ok(Json(dto(&ctx.engine.get_secret(&id).await?)))
}

/// `PATCH /secret/{secretId}`.
pub async fn update(
    State(ctx): State<Ctx>,
    DPath(id): DPath<String>,
    DJson(req): DJson<UpdateSecretRequest>,
) -> DResult<Json<SecretDto>> {
    let update = UpdateSecret {
        value: req.value,
        description: req.description,
        hosts: req.hosts,
        metadata: None,
    };
    Ok(Json(dto(&ctx.engine.update_secret(&id, update).await?)))
}

/// `DELETE /secret/{secretId}`: 204.
pub async fn delete(State(ctx): State<Ctx>, DPath(id): DPath<String>) -> DResult<StatusCode> {
    ctx.engine.delete_secret(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `secrets` of a sandbox create (`[{ENV: secretName}]`) as the engine's variable → secret.
pub(crate) fn grants(requested: &[Value]) -> DResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for entry in requested {
        let Some(map) = entry.as_object() else {
            return Err(DaytonaError::bad_request(
                "each entry of secrets is an object {ENV_NAME: secretName}",
            ));
        };
        for (env, name) in map {
            let Some(name) = name.as_str() else {
                return Err(DaytonaError::bad_request(format!(
                    "secrets: {env} must name a secret (a string)"
                )));
            };
            if out.insert(env.clone(), name.to_string()).is_some() {
                return Err(DaytonaError::bad_request(format!(
                    "secrets: {env} is given twice"
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_secrets_list_becomes_variables_and_anything_else_is_refused() {
        // The Python SDK's body for `secrets={"OPENAI_API_KEY": "openai"}`.
        let body = serde_json::json!([{"OPENAI_API_KEY": "openai"}, {"GH": "gh"}]);
        let got = grants(body.as_array().unwrap()).unwrap();
        assert_eq!(
            got.get("OPENAI_API_KEY").map(String::as_str),
            Some("openai")
        );
        assert_eq!(got.len(), 2);
        for bad in [
            serde_json::json!(["x"]),
            serde_json::json!([{"A": 1}]),
            serde_json::json!([{"A": "x"}, {"A": "y"}]),
        ] {
            assert!(grants(bad.as_array().unwrap()).is_err());
        }
    }
}
