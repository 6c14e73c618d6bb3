//! A sandbox's egress policy: `/v1/sandboxes/{id}/egress-policy`.

use axum::Json;
use axum::extract::{Path, State};
use platinum_engine::Engine;
use platinum_engine::model::EgressPolicy;
use std::sync::Arc;

use super::SandboxPath;
use crate::error::{ApiJson, ApiResult, ErrorBody};

/// A sandbox's egress policy (`default: allow` with empty lists when none was set).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/egress-policy", tag = "network", operation_id = "getEgressPolicy",
    params(SandboxPath),
    responses(
        (status = 200, description = "The policy", body = EgressPolicy),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn get_egress_policy(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
) -> ApiResult<Json<EgressPolicy>> {
    Ok(Json(engine.get_egress_policy(&p.id).await?))
}

/// Replace a sandbox's egress policy.
///
/// In force from the next packet (new and established connections alike), without restarting
/// the VM, and kept for every later start. Entries are IPv4 addresses or CIDRs; `allow` wins
/// over `deny`; `default` decides the rest. The host, other sandboxes, private and metadata
/// ranges stay unreachable whatever the policy allows. Domain entries are refused
/// (`unsupported`) until they can be enforced on the host side.
#[utoipa::path(put, path = "/v1/sandboxes/{id}/egress-policy", tag = "network", operation_id = "setEgressPolicy",
    params(SandboxPath),
    request_body = EgressPolicy,
    responses(
        (status = 200, description = "In force", body = EgressPolicy),
        (status = 400, description = "An entry is not an IPv4 address or CIDR, or a list is too long", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Archived or deleted", body = ErrorBody),
        (status = 501, description = "A domain entry (`unsupported`)", body = ErrorBody)))]
pub async fn set_egress_policy(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiJson(policy): ApiJson<EgressPolicy>,
) -> ApiResult<Json<EgressPolicy>> {
    Ok(Json(engine.set_egress_policy(&p.id, policy).await?))
}
