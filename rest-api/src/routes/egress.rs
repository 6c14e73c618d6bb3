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
/// In force without restarting the VM, and kept for every later start: address rules from the
/// next packet (new and established connections alike), name rules from the next DNS query and
/// connection. Entries are IPv4 addresses, CIDRs, domain names or `*.` wildcards; `allow` wins
/// over `deny`; `default` decides the rest. Names are enforced on the host (its resolver answers
/// the sandbox's DNS, its proxy checks the TLS server name or HTTP Host of ports 80 and 443).
/// The host, other sandboxes, private and metadata ranges stay unreachable whatever the policy
/// allows. `header_rules` set headers on the sandbox's HTTPS requests to given hosts (from the
/// next connection), with `${secrets.NAME}` in a value put in by the host: the sandbox never
/// holds the secret.
#[utoipa::path(put, path = "/v1/sandboxes/{id}/egress-policy", tag = "network", operation_id = "setEgressPolicy",
    params(SandboxPath),
    request_body = EgressPolicy,
    responses(
        (status = 200, description = "In force", body = EgressPolicy),
        (status = 400, description = "An entry is not an IPv4 address, CIDR or domain name, a list is too long, or a header rule is bad (a reserved header, an unknown secret, a secret that may not go to its host)", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Archived or deleted", body = ErrorBody)))]
pub async fn set_egress_policy(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiJson(policy): ApiJson<EgressPolicy>,
) -> ApiResult<Json<EgressPolicy>> {
    Ok(Json(engine.set_egress_policy(&p.id, policy).await?))
}
