//! Header rules of egress policies ([`EgressHeaderRule`]): headers the host's egress broker
//! sets on a sandbox's HTTPS requests to given hosts, with `${secrets.NAME}` in a value standing
//! for a secret's value (E2B's `network.rules[host].transform.headers`). One rule per host; of
//! the rules matching a request's host the broker applies the most specific alone.
//!
//! Rules are checked when a policy is set ([`Engine::check_header_rules`]: names, values, the
//! secrets they use and the hosts those secrets allow) and resolved into values only when they
//! are handed to the host ([`Engine::resolve_header_rules`], in memory, never stored or sent to
//! a guest). A secret with hosts of its own is only ever put into a rule for hosts among them;
//! a rule whose secret is gone or no longer allows its host sets nothing (its requests go out
//! without the header: the secret is never sent where it may not go).

use platinum_hostagent::broker::{HeaderRule, host_matches};
use zeroize::Zeroizing;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{EgressHeaderRule, EgressPolicy, Secret};

/// Rules per policy.
pub const MAX_RULES: usize = 32;
/// Headers per rule.
pub const MAX_HEADERS: usize = 16;
/// Bytes of a value as written (before secrets are put in).
pub const MAX_VALUE: usize = 4096;

/// What opens a secret reference in a value; `}` closes it.
const SECRET_REF: &str = "${secrets.";

/// Headers a rule may not set: they describe the connection or the message framing, which the
/// broker owns.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// One piece of a value.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Secret(&'a str),
}

fn invalid(msg: String) -> Error {
    Error::InvalidRequest(msg)
}

/// A value split into text and secret references (a `${` that does not open `${secrets.` is
/// text).
fn pieces(value: &str) -> Result<Vec<Piece<'_>>> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(at) = rest.find(SECRET_REF) {
        if at > 0 {
            out.push(Piece::Text(&rest[..at]));
        }
        let after = &rest[at + SECRET_REF.len()..];
        let end = after
            .find('}')
            .ok_or_else(|| invalid(format!("{value:?}: `${{secrets.` without its `}}`")))?;
        let name = &after[..end];
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            return Err(invalid(format!(
                "{value:?}: `${{secrets.{name}}}` does not name a secret"
            )));
        }
        out.push(Piece::Secret(name));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// A header name: an RFC 9110 token, not one of [`RESERVED`].
fn check_header_name(name: &str) -> Result<()> {
    let token = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(invalid(format!("{name:?} is not a header name")));
    }
    if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(invalid(format!(
            "{name} cannot be set by a header rule (the broker owns it)"
        )));
    }
    Ok(())
}

/// Whether a secret allowing `pattern` may be sent to every name `host` (a rule's host)
/// matches. A secret without hosts is bound by the rule alone.
fn covers(pattern: &str, host: &str) -> bool {
    match host.strip_prefix("*.") {
        None => host_matches(pattern, host),
        Some(domain) => pattern
            .strip_prefix("*.")
            .is_some_and(|p| p == domain || host_matches(pattern, domain)),
    }
}

/// Whether `secret` may be used in a rule for `host`.
fn allows(secret: &Secret, host: &str) -> bool {
    secret.hosts.is_empty() || secret.hosts.iter().any(|p| covers(p, host))
}

/// Whether any rule of `policy` uses `secret` (by name or id).
pub(crate) fn uses(policy: &EgressPolicy, secret: &Secret) -> bool {
    policy.header_rules.iter().any(|r| {
        r.headers.values().any(|v| {
            pieces(v).is_ok_and(|ps| {
                ps.iter()
                    .any(|p| matches!(p, Piece::Secret(n) if *n == secret.name || *n == secret.id))
            })
        })
    })
}

impl Engine {
    /// Checks `policy`'s header rules: hosts, header names, values, and that each secret they
    /// use exists and allows the rule's host. Returns the rules with hosts normalized.
    pub(crate) async fn check_header_rules(
        &self,
        rules: &[EgressHeaderRule],
    ) -> Result<Vec<EgressHeaderRule>> {
        if rules.len() > MAX_RULES {
            return Err(invalid(format!(
                "a policy has at most {MAX_RULES} header rules"
            )));
        }
        let mut out = Vec::with_capacity(rules.len());
        for rule in rules {
            let host = crate::commands::secrets::check_host(&rule.host)?;
            if out.iter().any(|r: &EgressHeaderRule| r.host == host) {
                return Err(invalid(format!("{host} has two header rules; give it one")));
            }
            if rule.headers.is_empty() || rule.headers.len() > MAX_HEADERS {
                return Err(invalid(format!(
                    "the header rule for {host} sets 1-{MAX_HEADERS} headers"
                )));
            }
            for (name, value) in &rule.headers {
                check_header_name(name)?;
                if value.len() > MAX_VALUE || value.chars().any(|c| c.is_control() && c != '\t') {
                    return Err(invalid(format!(
                        "the value of {name} for {host}: at most {MAX_VALUE} bytes, no control \
                         characters"
                    )));
                }
                for piece in pieces(value)? {
                    let Piece::Secret(secret) = piece else {
                        continue;
                    };
                    let secret = self.get_secret(secret).await.map_err(|_| {
                        invalid(format!(
                            "the value of {name} for {host} uses secret {secret:?}, which does \
                             not exist"
                        ))
                    })?;
                    if !allows(&secret, &host) {
                        return Err(invalid(format!(
                            "secret {} may only be sent to {}, not {host}",
                            secret.name,
                            secret.hosts.join(", ")
                        )));
                    }
                }
            }
            out.push(EgressHeaderRule {
                host,
                headers: rule.headers.clone(),
            });
        }
        Ok(out)
    }

    /// `rules` with every secret reference replaced by the secret's value, for the host's
    /// broker (sandbox `id` only names the log lines). A header whose secret is gone or no
    /// longer allows the host is left out.
    pub(crate) async fn resolve_header_rules(
        &self,
        id: &str,
        rules: &[EgressHeaderRule],
    ) -> Result<Vec<HeaderRule>> {
        let mut out = Vec::with_capacity(rules.len());
        for rule in rules {
            let mut headers = Vec::with_capacity(rule.headers.len());
            'header: for (name, template) in &rule.headers {
                let mut value = Zeroizing::new(String::with_capacity(template.len()));
                for piece in pieces(template)? {
                    match piece {
                        Piece::Text(t) => value.push_str(t),
                        Piece::Secret(s) => {
                            let found = self.store.get_secret(s).await?;
                            let Some((secret, sealed)) =
                                found.filter(|(secret, _)| allows(secret, &rule.host))
                            else {
                                tracing::warn!(
                                    sandbox = %id, host = %rule.host, header = %name, secret = %s,
                                    "a header rule's secret is gone or no longer allows its host; \
                                     the header is not set"
                                );
                                continue 'header;
                            };
                            value.push_str(&self.vault.open_value(&secret.id, &sealed)?);
                        }
                    }
                }
                headers.push((name.clone(), value));
            }
            out.push(HeaderRule {
                host: rule.host.clone(),
                headers,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::model::{CreateSecret, SandboxState, UpdateSecret};
    use crate::store::Store;
    use crate::testing;

    fn rule(host: &str, headers: &[(&str, &str)]) -> EgressHeaderRule {
        EgressHeaderRule {
            host: host.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    async fn secret(engine: &Engine, name: &str, value: &str, hosts: &[&str]) -> Secret {
        engine
            .create_secret(CreateSecret {
                name: name.into(),
                value: value.into(),
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                ..Default::default()
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn rules_are_checked_resolved_and_keep_their_secrets_from_deletion() {
        let (engine, store) = testing::engine().await;
        let free = secret(&engine, "free", "v-free", &[]).await;
        secret(&engine, "bound", "v-bound", &["*.example.com"]).await;
        let rules = engine
            .check_header_rules(&[
                rule(
                    "API.example.com.",
                    &[("Authorization", "Bearer ${secrets.bound}")],
                ),
                rule(
                    "other.test",
                    &[("X-Key", "${secrets.free}-${secrets.free}")],
                ),
            ])
            .await
            .unwrap();
        assert_eq!(rules[0].host, "api.example.com");
        let code = |rules: Vec<EgressHeaderRule>| {
            let engine = &engine;
            async move { engine.check_header_rules(&rules).await.unwrap_err().code() }
        };
        for bad in [
            vec![rule("other.test", &[("X", "${secrets.bound}")])],
            vec![rule("x.test", &[("X", "${secrets.nope}")])],
            vec![rule("x.test", &[("Host", "y.test")])],
            vec![rule("x.test", &[("X", "a\r\nInjected: 1")])],
            vec![rule("x.test", &[])],
            vec![rule("10.0.0.1", &[("X", "1")])],
            vec![rule("x.test", &[("X", "1")]), rule("X.test", &[("Y", "2")])],
            vec![rule("x.test", &[("X", &"v".repeat(MAX_VALUE + 1))])],
        ] {
            assert_eq!(
                code(bad.clone()).await,
                ErrorCode::InvalidRequest,
                "{bad:?}"
            );
        }

        let resolved = engine.resolve_header_rules("sb", &rules).await.unwrap();
        assert_eq!(resolved[0].headers[0].1.as_str(), "Bearer v-bound");
        assert_eq!(resolved[1].headers[0].1.as_str(), "v-free-v-free");

        store
            .insert_sandbox(&testing::sandbox("sbx1", SandboxState::Running))
            .await
            .unwrap();
        let policy = EgressPolicy {
            header_rules: rules.clone(),
            ..Default::default()
        };
        store
            .set_egress_policy("sbx1", Some(&policy))
            .await
            .unwrap();
        assert!(uses(&policy, &free));
        assert_eq!(
            engine.delete_secret("free").await.unwrap_err().code(),
            ErrorCode::Conflict
        );
        // Narrowing a secret's hosts away from a rule's host: the header is no longer set.
        engine
            .update_secret(
                "bound",
                UpdateSecret {
                    hosts: Some(vec!["api.example.org".into()]),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let resolved = engine.resolve_header_rules("sb", &rules).await.unwrap();
        assert!(resolved[0].headers.is_empty());
        store.set_egress_policy("sbx1", None).await.unwrap();
        engine.delete_secret("free").await.unwrap();
    }

    #[test]
    fn values_split_into_text_and_secret_references() {
        assert_eq!(
            pieces("Bearer ${secrets.api-key} and ${x} ${secrets.b.c}").unwrap(),
            [
                Piece::Text("Bearer "),
                Piece::Secret("api-key"),
                Piece::Text(" and ${x} "),
                Piece::Secret("b.c"),
            ]
        );
        assert_eq!(pieces("").unwrap(), []);
        assert!(pieces("${secrets.open").is_err());
        assert!(pieces("${secrets.}").is_err());
        assert!(pieces("${secrets.a b}").is_err());
    }

    #[test]
    fn header_names_are_tokens_and_framing_headers_are_refused() {
        assert!(check_header_name("Authorization").is_ok());
        assert!(check_header_name("x-api-key").is_ok());
        for bad in [
            "",
            "a b",
            "a:b",
            "Host",
            "content-length",
            "Transfer-Encoding",
            "é",
        ] {
            assert!(check_header_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_secret_covers_a_rule_only_for_names_it_allows() {
        assert!(covers("api.example.com", "api.example.com"));
        assert!(covers("*.example.com", "api.example.com"));
        assert!(covers("*.example.com", "*.example.com"));
        assert!(covers("*.example.com", "*.eu.example.com"));
        assert!(!covers("api.example.com", "*.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("*.eu.example.com", "*.example.com"));
        assert!(!covers("api.example.com", "evil.example"));
    }
}
