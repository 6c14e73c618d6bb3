//! The edge proxy's commands: tokens (mint, verify, revoke), their keys (list, rotate,
//! delete), exposed ports (expose, list, unexpose) and waking a sandbox for edge traffic.
//!
//! A token is verified in memory (key ring, revocation list), so the per-request check costs
//! no store round trip. A single token is revoked through the engine's revoked-token list
//! ([`crate::commands::tokens`], kind `edge`); deleting its key revokes every token it signed.
//! Waking: a paused or suspended sandbox is resumed once however many requests hit it at
//! the same time (they queue on one lock per sandbox and find it running); stopped, archived and
//! failed sandboxes are never started by traffic (no lifecycle rule asks for that): `invalid_state`.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::commands::sandbox::require;
use crate::commands::tokens::token_hash;
use crate::edge::keys::{EdgeKeyInfo, EdgeKeyRecord};
use crate::edge::token::{self, Claims, Refusal};
use crate::edge::{EdgeToken, Exposure};
use crate::engine::Engine;
use crate::error::{Error, ErrorCode, Result};
use crate::model::{Sandbox, SandboxState};

/// Longest lifetime of an edge token (30 days).
pub const MAX_EDGE_TOKEN_TTL_SECS: u64 = 30 * 24 * 3600;

/// Most ports exposed per sandbox.
pub const MAX_EXPOSURES_PER_SANDBOX: usize = 64;

/// How long a request waits for a sandbox another caller is starting.
const STARTING_WAIT: Duration = Duration::from_secs(120);

fn check_port(port: u16) -> Result<()> {
    if port == 0 {
        return Err(Error::InvalidRequest("port must be 1-65535".into()));
    }
    Ok(())
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// What a request that woke a sandbox learns: the sandbox (running) and, when this request
/// resumed it, how long that took.
#[derive(Debug, Clone)]
pub struct Woken {
    /// The sandbox, running.
    pub sandbox: Sandbox,
    /// Time spent resuming it, when this request did.
    pub resumed_in: Option<Duration>,
}

impl Engine {
    /// Mints a token for `port` of sandbox `id`, valid `ttl_secs` (1 s to 30 days).
    pub async fn mint_edge_token(&self, id: &str, port: u16, ttl_secs: u64) -> Result<EdgeToken> {
        check_port(port)?;
        if ttl_secs == 0 || ttl_secs > MAX_EDGE_TOKEN_TTL_SECS {
            return Err(Error::InvalidRequest(format!(
                "ttl_secs must be 1-{MAX_EDGE_TOKEN_TTL_SECS}"
            )));
        }
        let s = self.load(id).await?;
        let key = match self.edge.keys.signer() {
            Some(k) => k,
            None => {
                let _w = self.edge.keys.writer.lock().await;
                match self.edge.keys.signer() {
                    Some(k) => k,
                    None => {
                        let key = EdgeKeyRecord::generate();
                        self.edge
                            .keys
                            .add(self.store.as_ref(), &self.vault, key.clone())
                            .await?;
                        tracing::info!(kid = %key.kid, "first edge key made");
                        key
                    }
                }
            }
        };
        let expires_at = now_unix() + ttl_secs as i64;
        let claims = Claims {
            kid: key.kid.clone(),
            sandbox: s.id.clone(),
            port,
            expires_at,
            nonce: token::nonce(),
        };
        let token = token::sign(&claims, &key.secret);
        tracing::info!(sandbox = %s.id, port, kid = %key.kid, ttl_secs, "edge token minted");
        Ok(EdgeToken {
            token,
            kid: key.kid,
            sandbox_id: s.id,
            port,
            expires_at: OffsetDateTime::from_unix_timestamp(expires_at)
                .map_err(|e| Error::Internal(e.to_string()))?,
        })
    }

    /// Checks `token` for `port` of sandbox `id`: its shape, its key (still in the ring), its
    /// signature (constant time), target, expiry and revocation.
    pub fn verify_edge_token(
        &self,
        token: &str,
        id: &str,
        port: u16,
    ) -> std::result::Result<Claims, Refusal> {
        let parsed = token::parse(token)?;
        let secret = self
            .edge
            .keys
            .secret(&parsed.claims.kid)
            .ok_or(Refusal::UnknownKey)?;
        token::verify(&parsed, &secret, id, port, now_unix())?;
        if self.is_token_revoked(&token_hash(token)) {
            return Err(Refusal::Revoked);
        }
        Ok(parsed.claims)
    }

    /// Revokes one token until its expiry. It must be genuine (signed by a key in the ring);
    /// an expired one needs nothing.
    pub async fn revoke_edge_token(&self, token: &str) -> Result<()> {
        let invalid = |r: Refusal| Error::InvalidRequest(format!("cannot revoke: {}", r.as_str()));
        let parsed = token::parse(token).map_err(invalid)?;
        let secret = self
            .edge
            .keys
            .secret(&parsed.claims.kid)
            .ok_or(invalid(Refusal::UnknownKey))?;
        token::verify_signature(&parsed, &secret).map_err(invalid)?;
        self.revoke_token("edge", &token_hash(token), parsed.claims.expires_at)
            .await
    }

    /// The signing keys, oldest first (never their secrets).
    pub fn edge_keys(&self) -> Vec<EdgeKeyInfo> {
        self.edge.keys.infos()
    }

    /// Makes a new key the signer; older keys still verify until deleted.
    pub async fn rotate_edge_key(&self) -> Result<EdgeKeyInfo> {
        let _w = self.edge.keys.writer.lock().await;
        let info = self
            .edge
            .keys
            .add(self.store.as_ref(), &self.vault, EdgeKeyRecord::generate())
            .await?;
        tracing::info!(kid = %info.kid, "edge key rotated");
        Ok(info)
    }

    /// Deletes key `kid`: every token it signed is refused from now on. When it was the signer,
    /// the newest remaining key signs (or a new one is made at the next mint).
    pub async fn delete_edge_key(&self, kid: &str) -> Result<()> {
        let _w = self.edge.keys.writer.lock().await;
        self.edge.keys.remove(self.store.as_ref(), kid).await?;
        tracing::info!(kid, "edge key deleted; its tokens are revoked");
        Ok(())
    }

    /// Exposes `port` of sandbox `id` at the edge (`public`: no token needed), or changes an
    /// exposure's `public` flag.
    pub async fn expose_port(&self, id: &str, port: u16, public: bool) -> Result<Exposure> {
        check_port(port)?;
        let s = self.load(id).await?;
        let _w = self.edge.writer.lock().await;
        let key = (s.id.clone(), port);
        {
            let map = self.edge.exposures_read();
            let count = map.keys().filter(|(sb, _)| *sb == s.id).count();
            if !map.contains_key(&key) && count >= MAX_EXPOSURES_PER_SANDBOX {
                return Err(Error::InvalidRequest(format!(
                    "a sandbox exposes at most {MAX_EXPOSURES_PER_SANDBOX} ports"
                )));
            }
        }
        let exposure = Exposure {
            sandbox_id: s.id.clone(),
            port,
            public,
            created_at: OffsetDateTime::now_utc(),
        };
        self.store.put_edge_exposure(&exposure).await?;
        self.edge.exposures_write().insert(key, exposure.clone());
        self.store
            .append_event(
                &s.id,
                "port_exposed",
                &serde_json::json!({ "port": port, "public": public }),
            )
            .await?;
        Ok(exposure)
    }

    /// The ports sandbox `id` exposes, by port.
    pub async fn exposures_of(&self, id: &str) -> Result<Vec<Exposure>> {
        let s = self.load(id).await?;
        let mut list: Vec<Exposure> = self
            .edge
            .exposures_read()
            .values()
            .filter(|e| e.sandbox_id == s.id)
            .cloned()
            .collect();
        list.sort_by_key(|e| e.port);
        Ok(list)
    }

    /// Closes an exposure (`port_not_exposed` when there is none).
    pub async fn unexpose_port(&self, id: &str, port: u16) -> Result<()> {
        check_port(port)?;
        let s = self.load(id).await?;
        let _w = self.edge.writer.lock().await;
        if !self.store.delete_edge_exposure(&s.id, port).await? {
            return Err(Error::PortNotExposed(format!("{}:{port}", s.id)));
        }
        self.edge.exposures_write().remove(&(s.id.clone(), port));
        self.store
            .append_event(
                &s.id,
                "port_unexposed",
                &serde_json::json!({ "port": port }),
            )
            .await
    }

    /// Whether `port` of sandbox `id` is exposed publicly (no token needed).
    pub fn is_port_public(&self, id: &str, port: u16) -> bool {
        self.edge
            .exposures_read()
            .get(&(id.to_string(), port))
            .is_some_and(|e| e.public)
    }

    /// Drops a deleted sandbox's exposures.
    pub(crate) async fn forget_exposures(&self, id: &str) -> Result<()> {
        let _w = self.edge.writer.lock().await;
        self.store.delete_edge_exposures(id).await?;
        self.edge.exposures_write().retain(|(s, _), _| s != id);
        Ok(())
    }

    /// Makes sandbox `id` ready for edge traffic: a running one as it is; a paused or suspended
    /// one resumed (once, whatever the number of concurrent requests; event `edge_resumed`);
    /// one being started waited for; any other is `invalid_state`.
    pub async fn wake_for_edge(&self, id: &str) -> Result<Woken> {
        let s = self.load(id).await?;
        if s.state == SandboxState::Running {
            return Ok(Woken {
                sandbox: s,
                resumed_in: None,
            });
        }
        let lock = self.edge.wake_lock(&s.id);
        let woken = {
            let _g = lock.lock().await;
            self.wake_locked(&s.id).await
        };
        drop(lock);
        self.edge.forget_idle_wakes();
        woken
    }

    async fn wake_locked(&self, id: &str) -> Result<Woken> {
        let deadline = Instant::now() + STARTING_WAIT;
        let mut raced = false;
        loop {
            let s = self.load(id).await?;
            match s.state {
                SandboxState::Running => {
                    return Ok(Woken {
                        sandbox: s,
                        resumed_in: None,
                    });
                }
                SandboxState::Paused | SandboxState::Suspended => {
                    let from = s.state;
                    let t0 = Instant::now();
                    let s = match self.resume_sandbox(id).await {
                        Ok(s) => s,
                        // Another caller (REST `resume`, a lifecycle rule) changed its state
                        // between the load and the resume's lock: look again, once.
                        Err(e) if e.code() == ErrorCode::InvalidState && !raced => {
                            raced = true;
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    let took = t0.elapsed();
                    self.store
                        .append_event(
                            id,
                            "edge_resumed",
                            &serde_json::json!({
                                "from": from.as_str(),
                                "ms": took.as_millis() as u64,
                            }),
                        )
                        .await?;
                    tracing::info!(sandbox = %id, from = %from, ms = took.as_millis() as u64, "edge traffic resumed a sandbox");
                    return Ok(Woken {
                        sandbox: s,
                        resumed_in: Some(took),
                    });
                }
                SandboxState::Starting | SandboxState::Creating if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => {
                    require(
                        &s,
                        "edge traffic (a stopped or archived sandbox is not started by traffic)",
                        &[
                            SandboxState::Running,
                            SandboxState::Paused,
                            SandboxState::Suspended,
                        ],
                    )?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::testing;

    async fn with_sandbox(
        (engine, store): (
            std::sync::Arc<Engine>,
            std::sync::Arc<crate::store::sqlite::SqliteStore>,
        ),
        state: SandboxState,
    ) -> (
        std::sync::Arc<Engine>,
        std::sync::Arc<crate::store::sqlite::SqliteStore>,
        String,
    ) {
        let id = "edgesbx1".to_string();
        store
            .insert_sandbox(&testing::sandbox(&id, state))
            .await
            .unwrap();
        (engine, store, id)
    }

    async fn engine_with_sandbox(
        state: SandboxState,
    ) -> (
        std::sync::Arc<Engine>,
        std::sync::Arc<crate::store::sqlite::SqliteStore>,
        String,
    ) {
        with_sandbox(testing::engine().await, state).await
    }

    #[tokio::test]
    async fn edge_tokens_verify_expire_rotate_and_revoke() {
        let (e, _store, id) = engine_with_sandbox(SandboxState::Running).await;
        let tok = e.mint_edge_token(&id, 8000, 60).await.unwrap();
        assert_eq!(
            e.verify_edge_token(&tok.token, &id, 8000).unwrap().port,
            8000
        );
        assert_eq!(
            e.verify_edge_token(&tok.token, &id, 8001),
            Err(Refusal::WrongTarget)
        );
        assert_eq!(
            e.verify_edge_token(&tok.token, "othersandbox", 8000),
            Err(Refusal::WrongTarget)
        );
        // Tampered: the port changed without the key.
        let forged = tok.token.replacen(".8000.", ".8001.", 1);
        assert_eq!(
            e.verify_edge_token(&forged, &id, 8001),
            Err(Refusal::BadSignature)
        );
        // Expired: signed with the same key, an expiry in the past.
        let secret = e.edge.keys.secret(&tok.kid).unwrap();
        let old = token::sign(
            &Claims {
                kid: tok.kid.clone(),
                sandbox: id.clone(),
                port: 8000,
                expires_at: now_unix() - 1,
                nonce: token::nonce(),
            },
            &secret,
        );
        assert_eq!(e.verify_edge_token(&old, &id, 8000), Err(Refusal::Expired));

        // Rotation: the new key signs, the old token still verifies until its key goes.
        let first = tok.kid.clone();
        let rotated = e.rotate_edge_key().await.unwrap();
        assert_ne!(rotated.kid, first);
        let tok2 = e.mint_edge_token(&id, 8000, 60).await.unwrap();
        assert_eq!(tok2.kid, rotated.kid);
        let keys = e.edge_keys();
        assert_eq!(keys.len(), 2);
        assert!(!keys[0].active && keys[1].active);
        assert!(e.verify_edge_token(&tok.token, &id, 8000).is_ok());
        e.delete_edge_key(&first).await.unwrap();
        assert_eq!(
            e.verify_edge_token(&tok.token, &id, 8000),
            Err(Refusal::UnknownKey)
        );
        assert!(e.verify_edge_token(&tok2.token, &id, 8000).is_ok());
        let gone = e.delete_edge_key(&first).await.unwrap_err();
        assert_eq!(gone.code(), ErrorCode::EdgeKeyNotFound);

        // One token revoked, the other of the same key untouched.
        let tok3 = e.mint_edge_token(&id, 8000, 60).await.unwrap();
        e.revoke_edge_token(&tok2.token).await.unwrap();
        assert_eq!(
            e.verify_edge_token(&tok2.token, &id, 8000),
            Err(Refusal::Revoked)
        );
        assert!(e.verify_edge_token(&tok3.token, &id, 8000).is_ok());
        // Forged tokens take no place on the revocation list.
        let bad = e.revoke_edge_token(&forged).await.unwrap_err();
        assert_eq!(bad.code(), ErrorCode::InvalidRequest);

        // Bad requests are typed errors.
        for (port, ttl) in [(0, 60), (8000, 0), (8000, MAX_EDGE_TOKEN_TTL_SECS + 1)] {
            let err = e.mint_edge_token(&id, port, ttl).await.unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidRequest);
        }
        let err = e
            .mint_edge_token("nosuchsandbox", 8000, 60)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::SandboxNotFound);
    }

    #[tokio::test]
    async fn keys_and_exposures_survive_a_restart() {
        // Keys are sealed with the data directory's vault key: the restart keeps the directory.
        let dir = tempfile::tempdir().unwrap();
        let (e, store, id) =
            with_sandbox(testing::engine_in(dir.path()).await, SandboxState::Running).await;
        let tok = e.mint_edge_token(&id, 3000, 600).await.unwrap();
        e.expose_port(&id, 8080, true).await.unwrap();
        e.expose_port(&id, 9090, false).await.unwrap();
        assert!(e.is_port_public(&id, 8080) && !e.is_port_public(&id, 9090));
        let again = testing::reopen(&store, dir.path()).await;
        assert!(again.verify_edge_token(&tok.token, &id, 3000).is_ok());
        let ports: Vec<(u16, bool)> = again
            .exposures_of(&id)
            .await
            .unwrap()
            .iter()
            .map(|x| (x.port, x.public))
            .collect();
        assert_eq!(ports, [(8080, true), (9090, false)]);
        again.unexpose_port(&id, 8080).await.unwrap();
        assert!(!again.is_port_public(&id, 8080));
        let err = again.unexpose_port(&id, 8080).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::PortNotExposed);
    }

    #[tokio::test]
    async fn concurrent_edge_requests_resume_a_paused_sandbox_once() {
        let (e, store, id) = engine_with_sandbox(SandboxState::Running).await;
        e.pause_sandbox(&id).await.unwrap();
        let (a, b, c) = tokio::join!(
            e.wake_for_edge(&id),
            e.wake_for_edge(&id),
            e.wake_for_edge(&id)
        );
        let woken = [a.unwrap(), b.unwrap(), c.unwrap()];
        assert!(
            woken
                .iter()
                .all(|w| w.sandbox.state == SandboxState::Running)
        );
        assert_eq!(woken.iter().filter(|w| w.resumed_in.is_some()).count(), 1);
        let events = store.events(&id).await.unwrap();
        assert_eq!(
            events
                .iter()
                .filter(|(_, k, _)| k == "edge_resumed")
                .count(),
            1
        );

        let mut s = store.get_sandbox(&id).await.unwrap().unwrap();
        s.state = SandboxState::Stopped;
        store.update_sandbox(&s).await.unwrap();
        let err = e.wake_for_edge(&id).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidState);
    }
}
