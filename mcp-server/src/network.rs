//! The network tool: a sandbox's egress destinations, replaced at any time (one engine command;
//! failures are tool results). Its header rules, which this tool does not show, are kept.

use platinum_engine::model::{EgressDefault, EgressPolicy};
use rmcp::{Json, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::PlatinumMcp;
use crate::error::ToolError;
use crate::tools::Parameters;

/// Arguments of `set_egress_policy`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressArgs {
    /// Sandbox id.
    pub sandbox_id: String,
    /// Refuse destinations neither list names (else allow them).
    #[serde(default)]
    pub deny_by_default: bool,
    /// Reachable: IPv4 addresses, CIDRs, domains, `*.` wildcards (allow wins over deny).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Unreachable unless allowed.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// The policy in force.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EgressInfo {
    /// Destinations neither list names are refused.
    pub deny_by_default: bool,
    /// Reachable.
    pub allow: Vec<String>,
    /// Unreachable unless allowed.
    pub deny: Vec<String>,
}

#[tool_router(router = network_router, vis = "pub(crate)")]
impl PlatinumMcp {
    /// Replace where a sandbox may connect: by IPv4/CIDR and domain (`*.example.com`),
    /// enforced on the host from the next connection. Empty lists: open. Header rules stay.
    #[tool(annotations(
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn set_egress_policy(
        &self,
        args: Parameters<EgressArgs>,
    ) -> Result<Json<EgressInfo>, ToolError> {
        let a = args.get()?;
        let policy = EgressPolicy {
            default: if a.deny_by_default {
                EgressDefault::Deny
            } else {
                EgressDefault::Allow
            },
            allow: a.allow,
            deny: a.deny,
            header_rules: Vec::new(),
        };
        let set = self
            .engine
            .set_egress_destinations(&a.sandbox_id, policy)
            .await?;
        Ok(Json(EgressInfo {
            deny_by_default: set.default == EgressDefault::Deny,
            allow: set.allow,
            deny: set.deny,
        }))
    }
}
