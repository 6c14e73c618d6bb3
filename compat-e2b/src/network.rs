//! E2B's egress settings as the engine's egress policies: `network` (and
//! `allow_internet_access`) at create, `PUT /sandboxes/{id}/network` (the SDKs'
//! `update_network`, which replaces everything: an omitted field is cleared), and `network` in
//! `GET /sandboxes/{id}` (the SDKs' `get_info`).
//!
//! | E2B | engine [`EgressPolicy`] |
//! |---|---|
//! | `allowOut` (IPv4 addresses, CIDRs, domains, `*.` wildcards) | `allow` |
//! | `denyOut` (IPv4 addresses, CIDRs, domains, `*.` wildcards) | `deny` |
//! | `"0.0.0.0/0"` in `denyOut`, or `allow_internet_access: false` | `default: deny` |
//! | `rules[host][i].transform.headers` | `header_rules` (one per host, the list's headers merged in order) |
//! | `${e2b.secrets.NAME}` in a header value | `${secrets.NAME}` |
//!
//! Allowed entries win over denied ones, in E2B and in the engine alike, so "deny all but
//! these" works as E2B documents it, and a runtime update holds from the next packet on.
//! Domain entries are enforced on the host side (the engine's resolver and proxy); header rules
//! by the host's egress broker, which puts the secrets in (the sandbox never holds them).
//! `maskRequestHost` (create only) is the `Host` the sandbox's services see for requests routed
//! to them (`${PORT}` standing for the port), kept as a sandbox attribute by `control.rs`.
//! Refused here, never ignored: `egressProxy`, non-empty `dnsServers`, workload identity tokens
//! (`${e2b.identity.tokens.NAME}`) and rule keys that are addresses.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::put;
use platinum_engine::model::{EgressDefault, EgressHeaderRule, EgressPolicy};
use serde_json::{Value, json};

use crate::Ctx;
use crate::control::{Body, load};
use crate::error::ApiError;

type ApiResult<T> = Result<T, ApiError>;

/// All IPv4 traffic, as E2B spells "deny everything".
const ALL_TRAFFIC: &str = "0.0.0.0/0";

/// A secret reference in an E2B header value, and in the engine's.
const E2B_SECRET_REF: &str = "${e2b.secrets.";
const SECRET_REF: &str = "${secrets.";
/// A workload identity token reference (E2B Cloud only).
const E2B_IDENTITY_REF: &str = "${e2b.identity.";

pub(crate) fn routes() -> Router<Ctx> {
    Router::new().route("/sandboxes/{id}/network", put(update))
}

/// A list of strings at `key` of `network` (absent or null: empty).
fn strings(network: &serde_json::Map<String, Value>, key: &str) -> ApiResult<Vec<String>> {
    match network.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::bad_request(format!("network.{key} must be a list of strings"))
                })
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(format!(
            "network.{key} must be a list of strings"
        ))),
    }
}

/// The policy `network` (an E2B network object) and `allow_internet_access` ask for, `None`
/// when they ask for nothing. `create` says whether create-only keys (`allowPublicTraffic`,
/// read elsewhere) may appear.
pub(crate) fn egress_policy(
    allow_internet_access: Option<bool>,
    network: Option<&Value>,
    create: bool,
) -> ApiResult<Option<EgressPolicy>> {
    let empty = serde_json::Map::new();
    let network = match network {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(o)) => o,
        Some(_) => return Err(ApiError::bad_request("network must be an object")),
    };
    for (key, value) in network {
        let unset = value.is_null()
            || value.as_array().is_some_and(|a| a.is_empty())
            || value.as_object().is_some_and(|o| o.is_empty());
        match key.as_str() {
            "allowOut" | "denyOut" | "rules" => {}
            "allowPublicTraffic" if create && (value.is_boolean() || value.is_null()) => {}
            // Read by `mask_request_host` (create only).
            "maskRequestHost" if create => {}
            _ if unset => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "network.{other} is not supported by this server"
                )));
            }
        }
    }
    let allow = strings(network, "allowOut")?;
    let mut deny = strings(network, "denyOut")?;
    let all = deny.iter().any(|d| d.trim() == ALL_TRAFFIC);
    deny.retain(|d| d.trim() != ALL_TRAFFIC);
    let default = if all || allow_internet_access == Some(false) {
        EgressDefault::Deny
    } else {
        EgressDefault::Allow
    };
    let policy = EgressPolicy {
        default,
        allow,
        deny,
        header_rules: header_rules(network.get("rules"))?,
    };
    Ok((policy != EgressPolicy::default()).then_some(policy))
}

/// What `maskRequestHost` writes for the port of the request.
pub(crate) const PORT_VARIABLE: &str = "${PORT}";

/// `network.maskRequestHost` of a create, checked: a host name or address, optionally with a
/// port, where `${PORT}` stands for the port the request was routed to. `None` when not given.
pub(crate) fn mask_request_host(network: Option<&Value>) -> ApiResult<Option<String>> {
    let mask = match network.and_then(|n| n.get("maskRequestHost")) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(ApiError::bad_request(
                "network.maskRequestHost must be a string",
            ));
        }
    };
    let sample = mask.replace(PORT_VARIABLE, "8080");
    let ok = sample.len() <= 260
        && sample
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:_[]".contains(&b));
    if !ok {
        return Err(ApiError::bad_request(format!(
            "network.maskRequestHost {mask:?} is not a host (like localhost:${{PORT}})"
        )));
    }
    Ok(Some(mask.clone()))
}

/// `rules` (host → list of `{transform: {headers}}`) as header rules: each host's headers merged
/// in list order (a later one wins), hosts without headers left out.
fn header_rules(rules: Option<&Value>) -> ApiResult<Vec<EgressHeaderRule>> {
    let bad = |what: String| ApiError::bad_request(format!("network.rules: {what}"));
    let rules = match rules {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(bad("must be an object of host to rule list".into())),
    };
    let mut out = Vec::new();
    for (host, list) in rules {
        let list = list
            .as_array()
            .ok_or_else(|| bad(format!("{host}: must be a list of rules")))?;
        let mut headers = std::collections::BTreeMap::new();
        for rule in list {
            let transform = match rule.get("transform") {
                None | Some(Value::Null) => continue,
                Some(t @ Value::Object(_)) => t,
                Some(_) => return Err(bad(format!("{host}: transform must be an object"))),
            };
            let set = match transform.get("headers") {
                None | Some(Value::Null) => continue,
                Some(Value::Object(h)) => h,
                Some(_) => return Err(bad(format!("{host}: headers must be an object"))),
            };
            for (name, value) in set {
                let value = value
                    .as_str()
                    .ok_or_else(|| bad(format!("{host}: the value of {name} must be a string")))?;
                if value.contains(E2B_IDENTITY_REF) {
                    return Err(ApiError::bad_request(
                        "workload identity tokens (${e2b.identity.tokens.*}) are not supported \
                         by this server; use a secret (${e2b.secrets.NAME})",
                    ));
                }
                headers.insert(name.clone(), value.replace(E2B_SECRET_REF, SECRET_REF));
            }
        }
        if !headers.is_empty() {
            out.push(EgressHeaderRule {
                host: host.clone(),
                headers,
            });
        }
    }
    Ok(out)
}

/// `network` of a sandbox's detail: its policy in E2B's words.
pub(crate) fn network_json(policy: &EgressPolicy) -> Value {
    let mut deny = policy.deny.clone();
    if policy.default == EgressDefault::Deny {
        deny.push(ALL_TRAFFIC.into());
    }
    let rules: serde_json::Map<String, Value> = policy
        .header_rules
        .iter()
        .map(|r| {
            let headers: serde_json::Map<String, Value> = r
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), json!(v.replace(SECRET_REF, E2B_SECRET_REF))))
                .collect();
            (
                r.host.clone(),
                json!([{ "transform": { "headers": headers } }]),
            )
        })
        .collect();
    json!({ "allowOut": policy.allow, "denyOut": deny, "rules": rules })
}

/// `PUT /sandboxes/{id}/network`: the whole egress configuration replaced (204).
async fn update(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Body(body): Body<Value>,
) -> ApiResult<StatusCode> {
    let s = load(&ctx, &id).await?;
    let allow_internet_access = match body.get("allow_internet_access") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(ApiError::bad_request(
                "allow_internet_access must be a boolean",
            ));
        }
    };
    let mut network = body.clone();
    if let Some(o) = network.as_object_mut() {
        o.remove("allow_internet_access");
    }
    let policy = egress_policy(allow_internet_access, Some(&network), false)?.unwrap_or_default();
    ctx.engine.set_egress_policy(&s.id, policy).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(v: Value) -> ApiResult<Option<EgressPolicy>> {
        egress_policy(None, Some(&v), true)
    }

    #[test]
    fn e2b_network_settings_map_to_egress_policies() {
        assert_eq!(policy(json!({})).unwrap(), None);
        assert_eq!(
            policy(json!({"allowOut": [], "denyOut": []})).unwrap(),
            None
        );
        let deny_all = policy(json!({"denyOut": ["0.0.0.0/0"], "allowOut": ["1.1.1.1"]}))
            .unwrap()
            .unwrap();
        assert_eq!(deny_all.default, EgressDefault::Deny);
        assert_eq!(deny_all.allow, ["1.1.1.1"]);
        assert!(deny_all.deny.is_empty());
        let some = policy(json!({"denyOut": ["8.8.8.0/24"]})).unwrap().unwrap();
        assert_eq!(
            (some.default, some.deny.as_slice()),
            (EgressDefault::Allow, ["8.8.8.0/24".to_string()].as_slice())
        );
        let offline = egress_policy(Some(false), None, true).unwrap().unwrap();
        assert_eq!(offline.default, EgressDefault::Deny);
        assert_eq!(egress_policy(Some(true), None, true).unwrap(), None);
        // Public traffic is read elsewhere, at create only.
        assert_eq!(policy(json!({"allowPublicTraffic": true})).unwrap(), None);
        assert!(egress_policy(None, Some(&json!({"allowPublicTraffic": true})), false).is_err());
        for refused in [
            json!({"rules": {"api.example.com": {"transform": {}}}}),
            json!({"rules": {"api.example.com": [{"transform": {"headers": {"a": 1}}}]}}),
            json!({"rules": {"x.test": [{"transform": {"headers": {
                "Authorization": "Bearer ${e2b.identity.tokens.aws}"
            }}}]}}),
            json!({"egressProxy": {"address": "x:1080"}}),
            json!({"dnsServers": ["1.1.1.1"]}),
            json!({"allowOut": "1.1.1.1"}),
            json!({"allowOut": [1]}),
            json!({"allowPublicTraffic": "yes"}),
        ] {
            assert_eq!(
                policy(refused.clone()).unwrap_err().status,
                400,
                "{refused}"
            );
        }
        assert!(egress_policy(None, Some(&json!([])), true).is_err());
        // maskRequestHost is a create-time setting.
        assert_eq!(policy(json!({"maskRequestHost": "x"})).unwrap(), None);
        assert!(egress_policy(None, Some(&json!({"maskRequestHost": "x"})), false).is_err());
    }

    #[test]
    fn a_request_host_mask_is_a_host_with_an_optional_port_variable() {
        let mask = |v: Value| mask_request_host(Some(&json!({ "maskRequestHost": v })));
        assert_eq!(
            mask(json!("localhost:${PORT}")).unwrap().as_deref(),
            Some("localhost:${PORT}")
        );
        assert_eq!(
            mask(json!("app.internal")).unwrap().as_deref(),
            Some("app.internal")
        );
        assert_eq!(mask(json!("")).unwrap(), None);
        assert_eq!(mask_request_host(None).unwrap(), None);
        for bad in [
            json!("a b"),
            json!("x\r\nEvil: 1"),
            json!(7),
            json!("${HOME}"),
        ] {
            assert!(mask(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_transforms_become_header_rules_and_come_back_the_same() {
        let network = json!({
            "allowOut": ["api.example.com"],
            "denyOut": ["0.0.0.0/0"],
            "rules": {
                "api.example.com": [
                    {"transform": {"headers": {"Authorization": "Bearer ${e2b.secrets.key}"}}},
                    {"transform": {"headers": {"X-Team": "a"}}},
                    {}
                ],
                "*.example.org": [{"transform": {}}],
            }
        });
        let p = policy(network).unwrap().unwrap();
        assert_eq!(p.header_rules.len(), 1);
        let rule = &p.header_rules[0];
        assert_eq!(rule.host, "api.example.com");
        assert_eq!(rule.headers["Authorization"], "Bearer ${secrets.key}");
        assert_eq!(rule.headers["X-Team"], "a");
        let back = network_json(&p);
        assert_eq!(back["denyOut"], json!(["0.0.0.0/0"]));
        assert_eq!(
            back["rules"]["api.example.com"][0]["transform"]["headers"]["Authorization"],
            "Bearer ${e2b.secrets.key}"
        );
        // Rules alone are a policy.
        let only = policy(json!({"rules": {"a.test": [
            {"transform": {"headers": {"X": "1"}}}
        ]}}))
        .unwrap()
        .unwrap();
        assert_eq!(only.default, EgressDefault::Allow);
    }
}
