//! API key management: list, create, revoke, rotate. Every front end (REST `/v1/keys`, the
//! `platinum keys` CLI through it) calls these.
//!
//! A key's secret is returned once, by create and rotate; listings show only its id, name, the
//! first characters for display and its times. Revocation is immediate (also of the key making
//! the request) and final. Rotation creates a key with the same name and format and revokes the
//! old one in one step.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::Engine;
use crate::auth::{self, KeyFormat};
use crate::error::{Error, Result};
use crate::store::ApiKeyRecord;

/// Longest key name, in characters.
pub const MAX_KEY_NAME_LEN: usize = 64;

/// An API key as listings show it: never the secret.
#[derive(
    Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema, schemars::JsonSchema,
)]
pub struct ApiKeyInfo {
    /// Public id (use it to revoke or rotate the key).
    pub id: String,
    /// Name given at creation.
    pub name: String,
    /// The key's first characters, for recognising it (empty for keys stored by older versions).
    pub prefix: String,
    /// Its form: `platinum` (`pt_...`) or `e2b` (`e2b_...`, for E2B's SDKs).
    pub format: KeyFormat,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    #[schemars(with = "String")]
    pub created_at: OffsetDateTime,
    /// Last time a request presented it, if ever.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    #[schemars(with = "Option<String>")]
    pub last_used_at: Option<OffsetDateTime>,
    /// True once revoked; a revoked key is refused with 401.
    pub revoked: bool,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    #[schemars(with = "Option<String>")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A key just created (or rotated): the only time its secret is returned.
#[derive(
    Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema, schemars::JsonSchema,
)]
pub struct CreatedApiKey {
    /// The key itself. Store it now: it cannot be shown again.
    pub key: String,
    /// Its record.
    #[serde(flatten)]
    pub info: ApiKeyInfo,
}

/// What to create.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A name for the key (1 to 64 printable characters), e.g. the client that will use it.
    pub name: String,
    /// Form of the generated key: `platinum` (default) or `e2b` (what E2B's SDKs require).
    #[serde(default)]
    pub format: KeyFormat,
    /// A key of your own instead of a generated one (at least 32 printable ASCII characters, 10
    /// distinct, and 128 bits estimated from length x log2 of the character classes used).
    #[serde(default)]
    pub key: Option<String>,
}

fn info(r: &ApiKeyRecord) -> ApiKeyInfo {
    ApiKeyInfo {
        id: r.id.clone(),
        name: r.name.clone(),
        prefix: r.prefix.clone(),
        format: KeyFormat::of(&r.prefix),
        created_at: r.created_at,
        last_used_at: r.last_used_at,
        revoked: r.revoked_at.is_some(),
        revoked_at: r.revoked_at,
    }
}

fn check_name(name: &str) -> Result<()> {
    let len = name.chars().count();
    if len == 0 || len > MAX_KEY_NAME_LEN || name.trim() != name {
        return Err(Error::InvalidRequest(format!(
            "the key name must be 1 to {MAX_KEY_NAME_LEN} characters without leading or \
             trailing spaces"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::InvalidRequest(
            "the key name must not contain control characters".into(),
        ));
    }
    if name == auth::ENV_KEY_NAME {
        return Err(Error::InvalidRequest(format!(
            "the name {} is reserved for the key set in that environment variable",
            auth::ENV_KEY_NAME
        )));
    }
    Ok(())
}

impl Engine {
    /// API keys, oldest first; revoked ones only when `include_revoked`. Never the secrets.
    pub async fn list_api_keys(&self, include_revoked: bool) -> Result<Vec<ApiKeyInfo>> {
        let pending = self.keys.last_used();
        if let Err(e) = self.keys.flush_usage(self.store.as_ref()).await {
            tracing::warn!(error = %e, "recording API key use failed");
        }
        Ok(self
            .store
            .api_keys()
            .await?
            .iter()
            .filter(|r| include_revoked || r.revoked_at.is_none())
            .map(|r| {
                let mut i = info(r);
                if let Some(at) = pending.get(&r.id) {
                    i.last_used_at = Some(i.last_used_at.map_or(*at, |l| l.max(*at)));
                }
                i
            })
            .collect())
    }

    /// Creates a key (generated in `req.format`, or the caller's own `req.key` if it is strong
    /// enough) and returns it, the only time the secret is shown.
    pub async fn create_api_key(&self, req: CreateApiKey) -> Result<CreatedApiKey> {
        check_name(&req.name)?;
        let key = match req.key {
            Some(own) => {
                auth::check_strength(&own, "the key")?;
                if req.format == KeyFormat::E2b && !is_e2b_form(&own) {
                    return Err(Error::InvalidRequest(
                        "a key of format e2b must be `e2b_` followed by hex digits".into(),
                    ));
                }
                let hash = auth::hash_key(&own);
                if self.store.api_keys().await?.iter().any(|k| k.hash == hash) {
                    return Err(Error::Conflict("that key is already stored".into()));
                }
                own
            }
            None => auth::generate(req.format),
        };
        let record = auth::new_record(&req.name, &key);
        self.keys.insert(self.store.as_ref(), &record).await?;
        tracing::info!(id = %record.id, name = %record.name, "API key created");
        Ok(CreatedApiKey {
            key,
            info: info(&record),
        })
    }

    /// Revokes a key: from now on it is refused. Revoking a revoked key changes nothing; both
    /// return the key's record.
    pub async fn revoke_api_key(&self, id: &str) -> Result<ApiKeyInfo> {
        self.find_key(id).await?;
        if self.keys.revoke(self.store.as_ref(), id).await? {
            tracing::info!(%id, "API key revoked");
        }
        Ok(info(&self.find_key(id).await?))
    }

    /// Rotates a live key: a new key with the same name and format replaces it (the old one is
    /// revoked in the same step). Returns the new key, the only time its secret is shown.
    pub async fn rotate_api_key(&self, id: &str) -> Result<CreatedApiKey> {
        let old = self.find_key(id).await?;
        if old.revoked_at.is_some() {
            return Err(Error::Conflict(format!(
                "API key {id} is revoked; create a new key instead"
            )));
        }
        let key = auth::generate(KeyFormat::of(&old.prefix));
        let record = auth::new_record(&old.name, &key);
        if !self.keys.replace(self.store.as_ref(), id, &record).await? {
            return Err(Error::Conflict(format!(
                "API key {id} was revoked while rotating it"
            )));
        }
        tracing::info!(old = %id, new = %record.id, "API key rotated");
        Ok(CreatedApiKey {
            key,
            info: info(&record),
        })
    }

    async fn find_key(&self, id: &str) -> Result<ApiKeyRecord> {
        self.store
            .api_keys()
            .await?
            .into_iter()
            .find(|k| k.id == id)
            .ok_or_else(|| Error::ApiKeyNotFound(id.to_string()))
    }
}

fn is_e2b_form(key: &str) -> bool {
    key.strip_prefix(auth::E2B_KEY_PREFIX)
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::store::Store;
    use crate::testing::{NoVms, engine};
    use std::sync::Arc;

    fn named(name: &str) -> CreateApiKey {
        CreateApiKey {
            name: name.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn create_list_revoke_rotate() {
        let (engine, store) = engine().await;
        let keys = engine.api_keys();
        let a = engine.create_api_key(named("ci")).await.unwrap();
        assert!(a.key.starts_with("pt_") && a.key.len() == 43);
        assert_eq!(a.info.format, KeyFormat::Platinum);
        assert_eq!(a.info.prefix, &a.key[..8]);
        assert!(!a.info.revoked && a.info.last_used_at.is_none());
        assert!(keys.verify(&a.key));

        let e = engine
            .create_api_key(CreateApiKey {
                name: "e2b".into(),
                format: KeyFormat::E2b,
                key: None,
            })
            .await
            .unwrap();
        let body = e.key.strip_prefix("e2b_").unwrap();
        assert!(body.len() == 40 && body.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!body.bytes().any(|b| b.is_ascii_uppercase()));
        assert_eq!(e.info.format, KeyFormat::E2b);
        assert!(keys.verify(&e.key));

        // Listing shows both, with last use, and never a secret.
        let listed = engine.list_api_keys(false).await.unwrap();
        assert_eq!(
            listed.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
            [a.info.id.as_str(), e.info.id.as_str()]
        );
        assert!(listed.iter().all(|k| k.last_used_at.is_some()));
        let text = serde_json::to_string(&listed).unwrap();
        assert!(!text.contains(&a.key) && !text.contains(&e.key));
        assert!(!text.contains(&store.api_keys().await.unwrap()[0].hash));
        // The use was written to the store by the listing.
        assert!(
            store
                .api_keys()
                .await
                .unwrap()
                .iter()
                .all(|k| k.last_used_at.is_some())
        );

        // Revoke: refused at once; listed only on request; revoking again changes nothing.
        let r = engine.revoke_api_key(&a.info.id).await.unwrap();
        assert!(r.revoked && r.revoked_at.is_some());
        assert!(!keys.verify(&a.key) && keys.verify(&e.key));
        assert_eq!(engine.list_api_keys(false).await.unwrap().len(), 1);
        let all = engine.list_api_keys(true).await.unwrap();
        assert!(all.iter().any(|k| k.id == a.info.id && k.revoked));
        assert!(engine.revoke_api_key(&a.info.id).await.unwrap().revoked);
        let err = engine
            .rotate_api_key(&a.info.id)
            .await
            .expect_err("a revoked key cannot be rotated");
        assert_eq!(err.code(), ErrorCode::Conflict);

        // Rotate: same name and format, a new secret, the old one refused.
        let rotated = engine.rotate_api_key(&e.info.id).await.unwrap();
        assert_eq!(rotated.info.name, "e2b");
        assert_eq!(rotated.info.format, KeyFormat::E2b);
        assert_ne!(rotated.info.id, e.info.id);
        assert!(keys.verify(&rotated.key) && !keys.verify(&e.key));
        let live = engine.list_api_keys(false).await.unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].id, rotated.info.id);

        // A fresh engine over the same store agrees.
        let again = Engine::new(Default::default(), store.clone(), Arc::new(NoVms))
            .await
            .unwrap();
        assert!(again.api_keys().verify(&rotated.key));
        assert!(!again.api_keys().verify(&e.key) && !again.api_keys().verify(&a.key));

        // Unknown ids are typed 404s.
        for err in [
            engine.revoke_api_key("nope").await.unwrap_err(),
            engine.rotate_api_key("nope").await.unwrap_err(),
        ] {
            assert_eq!(
                (err.code(), err.http_status()),
                (ErrorCode::ApiKeyNotFound, 404)
            );
        }
    }

    #[tokio::test]
    async fn bad_names_and_weak_or_malformed_own_keys_are_refused() {
        let (engine, store) = engine().await;
        for name in ["", " x", "x ", "a\nb", &"n".repeat(65), auth::ENV_KEY_NAME] {
            let err = engine.create_api_key(named(name)).await.unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidRequest, "{name:?}");
        }
        let own = |key: &str, format| CreateApiKey {
            name: "own".into(),
            format,
            key: Some(key.into()),
        };
        for weak in ["short", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"] {
            let err = engine
                .create_api_key(own(weak, KeyFormat::Platinum))
                .await
                .unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidRequest);
            assert!(err.to_string().contains("too weak"), "{err}");
        }
        let strong = "3f2b9c0e8d7a41e6b5c4d3e2f1a09b8c";
        let err = engine
            .create_api_key(own(strong, KeyFormat::E2b))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
        assert!(store.api_keys().await.unwrap().is_empty());

        let made = engine
            .create_api_key(own(strong, KeyFormat::Platinum))
            .await
            .unwrap();
        assert_eq!(made.key, strong);
        assert!(engine.api_keys().verify(strong));
        let err = engine
            .create_api_key(own(strong, KeyFormat::Platinum))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Conflict);
        let e2b_own = format!("e2b_{strong}");
        let made = engine
            .create_api_key(own(&e2b_own, KeyFormat::E2b))
            .await
            .unwrap();
        assert_eq!(made.info.format, KeyFormat::E2b);
    }
}
