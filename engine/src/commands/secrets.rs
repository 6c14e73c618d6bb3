//! Secrets brokered at egress: created through the API, stored encrypted ([`crate::vault`]),
//! never answered after creation and never written into a VM.
//!
//! A sandbox is granted secrets at create (`CreateSandbox::secrets`: variable → secret); the
//! variable holds the secret's placeholder, and the host's egress broker (see
//! `platinum_hostagent::broker`) replaces the placeholder with the value in HTTPS request
//! headers to the secret's hosts only. The engine gives the host every sandbox's secrets
//! ([`Engine::push_secrets`]) when they are granted, when a granted secret changes, and at
//! start (the host keeps them in memory only); forks keep their source's grants, delete drops
//! them. With them go the sandbox's egress header rules, resolved
//! ([`crate::commands::egress_headers`]): a secret a rule uses is given to the host the same
//! way, and cannot be deleted while a rule uses it.

use std::collections::BTreeMap;

use platinum_hostagent::broker::{BrokeredEgress, BrokeredSecret};
use time::OffsetDateTime;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{CreateSecret, SandboxState, Secret, UpdateSecret};

/// Hosts per secret.
pub const MAX_HOSTS: usize = 64;
/// Bytes of a value.
pub const MAX_VALUE: usize = 16 * 1024;
/// Prefix of every placeholder.
pub const PLACEHOLDER_PREFIX: &str = "platinum-secret-";

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random_word(len: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with("sec_")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "secret name {name:?}: 1-128 of A-Z a-z 0-9 . _ -, not starting with sec_"
        )))
    }
}

fn check_value(value: &str) -> Result<()> {
    if value.is_empty() || value.len() > MAX_VALUE {
        return Err(Error::InvalidRequest(format!(
            "a secret's value has 1-{MAX_VALUE} bytes"
        )));
    }
    // It goes into HTTP header values: no control characters (CR/LF would split headers).
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(Error::InvalidRequest(
            "a secret's value cannot hold control characters (it is sent in HTTP headers)".into(),
        ));
    }
    Ok(())
}

/// One host pattern, lowercased: a DNS name, or `*.` and a DNS name.
pub(crate) fn check_host(host: &str) -> Result<String> {
    let h = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let name = h.strip_prefix("*.").unwrap_or(&h);
    let labels_ok = name.contains('.')
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let is_address = name.parse::<std::net::Ipv4Addr>().is_ok();
    if !labels_ok || is_address {
        return Err(Error::InvalidRequest(format!(
            "{host:?} is not a host name (like api.example.com or *.example.com); \
             secrets are bound to names, which TLS proves"
        )));
    }
    Ok(h)
}

fn check_hosts(hosts: &[String]) -> Result<Vec<String>> {
    if hosts.len() > MAX_HOSTS {
        return Err(Error::InvalidRequest(format!(
            "a secret has at most {MAX_HOSTS} hosts"
        )));
    }
    let mut out: Vec<String> = Vec::new();
    for h in hosts {
        let h = check_host(h)?;
        if !out.contains(&h) {
            out.push(h);
        }
    }
    Ok(out)
}

fn check_description(d: &Option<String>) -> Result<()> {
    if d.as_ref().is_some_and(|d| d.len() > 1024) {
        return Err(Error::InvalidRequest(
            "a secret's description has at most 1024 bytes".into(),
        ));
    }
    Ok(())
}

impl Engine {
    /// Creates a secret; the answer has its placeholder, never its value.
    pub async fn create_secret(&self, req: CreateSecret) -> Result<Secret> {
        check_name(&req.name)?;
        check_value(&req.value)?;
        check_description(&req.description)?;
        crate::commands::sandbox::check_pairs(
            crate::commands::sandbox::Pairs::Metadata,
            &req.metadata,
        )?;
        let hosts = check_hosts(&req.hosts)?;
        let now = OffsetDateTime::now_utc();
        let secret = Secret {
            id: format!("sec_{}", random_word(24)),
            name: req.name,
            description: req.description,
            hosts,
            placeholder: format!("{PLACEHOLDER_PREFIX}{}", random_word(32)),
            metadata: req.metadata,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let sealed = self.vault.seal(&secret.id, &req.value)?;
        self.store.insert_secret(&secret, &sealed).await?;
        tracing::info!(secret = %secret.id, name = %secret.name, hosts = ?secret.hosts, "secret created");
        Ok(secret)
    }

    /// Every secret, oldest first (without values).
    pub async fn list_secrets(&self) -> Result<Vec<Secret>> {
        self.store.list_secrets().await
    }

    /// One secret by id or name (without its value).
    pub async fn get_secret(&self, id_or_name: &str) -> Result<Secret> {
        self.store
            .get_secret(id_or_name)
            .await?
            .map(|(s, _)| s)
            .ok_or_else(|| Error::SecretNotFound(id_or_name.to_string()))
    }

    /// Changes a secret; sandboxes granted it broker the new value and hosts from their next
    /// request on.
    pub async fn update_secret(&self, id_or_name: &str, req: UpdateSecret) -> Result<Secret> {
        let (mut secret, _) = self
            .store
            .get_secret(id_or_name)
            .await?
            .ok_or_else(|| Error::SecretNotFound(id_or_name.to_string()))?;
        check_description(&req.description)?;
        let sealed = match &req.value {
            Some(v) => {
                check_value(v)?;
                secret.version += 1;
                Some(self.vault.seal(&secret.id, v)?)
            }
            None => None,
        };
        if let Some(hosts) = &req.hosts {
            secret.hosts = check_hosts(hosts)?;
        }
        if let Some(m) = req.metadata {
            crate::commands::sandbox::check_pairs(crate::commands::sandbox::Pairs::Metadata, &m)?;
            secret.metadata = m;
        }
        if req.description.is_some() {
            secret.description = req.description;
        }
        secret.updated_at = OffsetDateTime::now_utc();
        self.store.update_secret(&secret, sealed.as_deref()).await?;
        tracing::info!(secret = %secret.id, version = secret.version, hosts = ?secret.hosts, "secret updated");
        for id in self.sandboxes_using(&secret).await? {
            self.push_secrets(&id).await?;
        }
        Ok(secret)
    }

    /// Sandboxes granted `secret` or with a header rule that uses it.
    async fn sandboxes_using(&self, secret: &Secret) -> Result<Vec<String>> {
        let granted = self.store.secret_grants(None, Some(&secret.id)).await?;
        let mut ids: Vec<String> = granted.into_iter().map(|g| g.sandbox_id).collect();
        for (id, policy) in self.store.egress_policies().await? {
            if crate::commands::egress_headers::uses(&policy, secret) {
                ids.push(id);
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Deletes a secret; refused (`conflict`) while a sandbox holds its placeholder or has a
    /// header rule that uses it.
    pub async fn delete_secret(&self, id_or_name: &str) -> Result<()> {
        let secret = self.get_secret(id_or_name).await?;
        let using = self.sandboxes_using(&secret).await?;
        if let Some(first) = using.first() {
            return Err(Error::Conflict(format!(
                "secret {} is used by sandbox {first} (and {} more): granted to it or in its \
                 egress header rules; delete those sandboxes or change their policies first",
                secret.name,
                using.len() - 1
            )));
        }
        self.store.delete_secret(&secret.id).await?;
        tracing::info!(secret = %secret.id, "secret deleted");
        Ok(())
    }

    /// The secrets sandbox `id` holds placeholders of: variable → secret.
    pub async fn sandbox_secrets(&self, id: &str) -> Result<BTreeMap<String, Secret>> {
        let s = self.load(id).await?;
        let mut out = BTreeMap::new();
        for g in self.store.secret_grants(Some(&s.id), None).await? {
            if let Some((secret, _)) = self.store.get_secret(&g.secret_id).await? {
                out.insert(g.env, secret);
            }
        }
        Ok(out)
    }

    /// Replaces the secrets running sandbox `id` holds (variable → secret id or name): the
    /// variables of its earlier grants leave its environment, the new ones hold placeholders.
    /// New processes see the change; running ones keep the environment they started with.
    pub async fn set_sandbox_secrets(
        &self,
        id: &str,
        wanted: BTreeMap<String, String>,
    ) -> Result<crate::model::Sandbox> {
        let _g = self.lock(id).await;
        let mut s = self.load(id).await?;
        if s.state != SandboxState::Running {
            return Err(Error::InvalidState {
                id: s.id.clone(),
                state: s.state.to_string(),
                action: "a change of its secrets".into(),
                needed: "running".into(),
            });
        }
        let mut env = s.env.clone();
        for g in self.store.secret_grants(Some(&s.id), None).await? {
            env.remove(&g.env);
        }
        let (grants, vars) = self.grant_secrets(&wanted, &env).await?;
        env.extend(vars);
        crate::commands::sandbox::check_pairs(crate::commands::sandbox::Pairs::Env, &env)?;
        if env != s.env {
            self.host.set_env(&s.id, env.clone()).await?;
            s.env = env;
            self.store.update_sandbox(&s).await?;
        }
        self.store_grants(&s.id, &grants).await?;
        let variables: Vec<&String> = grants.keys().collect();
        self.store
            .append_event(
                &s.id,
                "secrets_set",
                &serde_json::json!({ "variables": variables }),
            )
            .await?;
        Ok(s)
    }

    /// Resolves a create's `secrets` (variable → secret id or name), none of which may also be
    /// in its `env`: the grants to store once the sandbox exists (variable → secret id) and the
    /// variables to set (variable → placeholder).
    pub(crate) async fn grant_secrets(
        &self,
        wanted: &BTreeMap<String, String>,
        env: &BTreeMap<String, String>,
    ) -> Result<(BTreeMap<String, String>, BTreeMap<String, String>)> {
        let (mut grants, mut vars) = (BTreeMap::new(), BTreeMap::new());
        for (var, name) in wanted {
            crate::env::check_env_name(var)?;
            if env.contains_key(var) {
                return Err(Error::InvalidRequest(format!(
                    "{var} is given both as a variable and as a secret"
                )));
            }
            let secret = self.get_secret(name).await?;
            vars.insert(var.clone(), secret.placeholder);
            grants.insert(var.clone(), secret.id);
        }
        Ok((grants, vars))
    }

    /// Stores sandbox `id`'s grants and gives the host their secrets.
    pub(crate) async fn store_grants(
        &self,
        id: &str,
        grants: &BTreeMap<String, String>,
    ) -> Result<()> {
        self.store.set_sandbox_secrets(id, grants).await?;
        self.push_secrets(id).await
    }

    /// Gives the host the secrets sandbox `id` is granted and its egress header rules (values
    /// decrypted here, handed over in memory), replacing what it had.
    pub(crate) async fn push_secrets(&self, id: &str) -> Result<()> {
        let mut brokered = Vec::new();
        for g in self.store.secret_grants(Some(id), None).await? {
            let Some((secret, sealed)) = self.store.get_secret(&g.secret_id).await? else {
                continue;
            };
            if brokered
                .iter()
                .any(|b: &BrokeredSecret| b.placeholder == secret.placeholder)
            {
                continue;
            }
            brokered.push(BrokeredSecret {
                value: self.vault.open_value(&secret.id, &sealed)?,
                placeholder: secret.placeholder,
                hosts: secret.hosts,
            });
        }
        let rules = match self.store.get_egress_policy(id).await? {
            Some(p) => p.header_rules,
            None => Vec::new(),
        };
        let headers = self.resolve_header_rules(id, &rules).await?;
        self.host
            .set_secrets(
                id,
                BrokeredEgress {
                    secrets: brokered,
                    headers,
                },
            )
            .await?;
        Ok(())
    }

    /// Drops sandbox `id`'s grants (it is deleted).
    pub(crate) async fn forget_secrets(&self, id: &str) -> Result<()> {
        self.store.set_sandbox_secrets(id, &BTreeMap::new()).await?;
        self.host.set_secrets(id, BrokeredEgress::default()).await?;
        Ok(())
    }

    /// At start: the host gets the secrets and header rules of every sandbox that has some.
    pub(crate) async fn push_all_secrets(&self) -> Result<()> {
        let mut ids: Vec<String> = self
            .store
            .secret_grants(None, None)
            .await?
            .into_iter()
            .map(|g| g.sandbox_id)
            .collect();
        for (id, policy) in self.store.egress_policies().await? {
            if !policy.header_rules.is_empty() {
                ids.push(id);
            }
        }
        ids.sort();
        ids.dedup();
        for id in ids {
            match self.store.get_sandbox(&id).await? {
                // A sandbox whose secrets cannot be given (a value that no longer decrypts)
                // loses only its own brokering.
                Some(s) if s.state != SandboxState::Deleted => {
                    if let Err(e) = self.push_secrets(&id).await {
                        tracing::error!(sandbox = %id, error = %e, "its secrets cannot be brokered");
                    }
                }
                _ => {
                    self.store
                        .set_sandbox_secrets(&id, &BTreeMap::new())
                        .await?
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
