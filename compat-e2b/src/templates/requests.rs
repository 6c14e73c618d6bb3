//! Template builds asked for through E2B and not started yet, or started under an id E2B
//! handed out: E2B gives out a build's id (`POST /v3/templates`) before its steps come
//! (`POST /v2/templates/{templateID}/builds/{buildID}`), so the request waits here, in memory.
//! A build is forgotten an hour after its last use, and at most [`MAX_REMEMBERED`] are kept (the
//! least recently used going first); the engine keeps the builds themselves.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

use crate::error::ApiError;

/// How long a requested build is remembered after its last use.
const REMEMBER: Duration = Duration::from_secs(3600);
/// Most requested builds remembered at once.
pub const MAX_REMEMBERED: usize = 1024;

/// Where a requested build is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Asked for; its steps have not come yet.
    Waiting,
    /// Being handed to the engine.
    Starting,
    /// The engine's build of this id runs or ran.
    Started(String),
}

/// A build asked for with `POST /v3/templates`.
#[derive(Debug, Clone)]
pub struct Requested {
    /// The template it makes.
    pub name: String,
    /// vCPUs asked for.
    pub vcpus: Option<u32>,
    /// Memory asked for, MiB.
    pub memory_mib: Option<u32>,
    /// Where it is.
    pub phase: Phase,
    /// When it was asked for.
    pub created_at: OffsetDateTime,
    last_used: Instant,
}

impl Requested {
    /// A build of template `name` asked for now, waiting for its steps.
    pub(crate) fn new(name: &str, vcpus: Option<u32>, memory_mib: Option<u32>) -> Self {
        Requested {
            name: name.to_string(),
            vcpus,
            memory_mib,
            phase: Phase::Waiting,
            created_at: OffsetDateTime::now_utc(),
            last_used: Instant::now(),
        }
    }
}

/// The builds requested through E2B, by E2B build id (see the module docs).
#[derive(Debug, Default)]
pub struct Requests(Mutex<HashMap<String, Requested>>);

impl Requests {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Requested>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers a build under a fresh E2B id, which it returns.
    pub(crate) fn insert(&self, requested: Requested) -> String {
        let id = new_build_id();
        let mut all = self.lock();
        forget_old(&mut all, Instant::now(), MAX_REMEMBERED - 1);
        all.insert(id.clone(), requested);
        id
    }

    /// The build of E2B id `id`, marked as used now.
    pub(crate) fn get(&self, id: &str) -> Option<Requested> {
        let mut all = self.lock();
        forget_old(&mut all, Instant::now(), MAX_REMEMBERED);
        let r = all.get_mut(id)?;
        r.last_used = Instant::now();
        Some(r.clone())
    }

    /// Marks a waiting build as being started; refused when it was started already.
    pub(crate) fn begin(&self, id: &str) -> Result<(), ApiError> {
        let mut all = self.lock();
        let r = all.get_mut(id).ok_or_else(|| build_not_found(id))?;
        if r.phase != Phase::Waiting {
            return Err(ApiError {
                status: 409,
                message: format!("build {id} was started already"),
            });
        }
        r.phase = Phase::Starting;
        Ok(())
    }

    /// Records how starting a build ended: the engine's build id, or back to waiting.
    pub(crate) fn started(&self, id: &str, engine_build: Option<String>) {
        if let Some(r) = self.lock().get_mut(id) {
            r.phase = engine_build.map_or(Phase::Waiting, Phase::Started);
            r.last_used = Instant::now();
        }
    }

    /// The remembered builds of template `name` (E2B id and build).
    pub(crate) fn of_template(&self, name: &str) -> Vec<(String, Requested)> {
        self.lock()
            .iter()
            .filter(|(_, r)| r.name == name)
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect()
    }

    /// The E2B id under which engine build `engine_id` was started, if remembered.
    pub(crate) fn e2b_id(&self, engine_id: &str) -> Option<String> {
        self.lock()
            .iter()
            .find(|(_, r)| matches!(&r.phase, Phase::Started(e) if e == engine_id))
            .map(|(id, _)| id.clone())
    }
}

/// Drops builds unused for [`REMEMBER`], then the least recently used until at most `keep`
/// are left.
fn forget_old(all: &mut HashMap<String, Requested>, now: Instant, keep: usize) {
    all.retain(|_, r| now.saturating_duration_since(r.last_used) < REMEMBER);
    while all.len() > keep {
        let Some(oldest) = all
            .iter()
            .min_by_key(|(_, r)| r.last_used)
            .map(|(id, _)| id.clone())
        else {
            break;
        };
        all.remove(&oldest);
    }
}

/// A 404 for E2B build id `id`.
pub(crate) fn build_not_found(id: &str) -> ApiError {
    ApiError {
        status: 404,
        message: format!(
            "build '{id}' not found (a build that was asked for but not started is kept for an hour)"
        ),
    }
}

/// A fresh E2B build id (a random UUID, as E2B's are).
fn new_build_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requested(name: &str, last_used: Instant) -> Requested {
        Requested {
            name: name.into(),
            vcpus: None,
            memory_mib: None,
            phase: Phase::Waiting,
            created_at: OffsetDateTime::UNIX_EPOCH,
            last_used,
        }
    }

    #[test]
    fn requested_builds_are_forgotten_after_an_hour_or_when_too_many() {
        let t0 = Instant::now();
        let mut all = HashMap::new();
        all.insert("old".to_string(), requested("a", t0));
        all.insert(
            "newer".to_string(),
            requested("b", t0 + Duration::from_secs(60)),
        );
        all.insert(
            "newest".to_string(),
            requested("c", t0 + Duration::from_secs(120)),
        );
        forget_old(&mut all, t0 + REMEMBER, 10);
        assert!(!all.contains_key("old") && all.len() == 2);
        forget_old(&mut all, t0 + REMEMBER, 1);
        assert_eq!(all.keys().collect::<Vec<_>>(), ["newest"]);
    }

    #[test]
    fn builds_start_once() {
        let r = Requests::default();
        let id = r.insert(Requested::new("web", None, None));
        r.begin(&id).unwrap();
        assert_eq!(r.begin(&id).unwrap_err().status, 409);
        r.started(&id, None);
        r.begin(&id).unwrap();
        r.started(&id, Some("bldx".into()));
        assert_eq!(r.get(&id).unwrap().phase, Phase::Started("bldx".into()));
        assert_eq!(r.e2b_id("bldx"), Some(id));
        assert_eq!(r.of_template("web").len(), 1);
        assert_eq!(r.begin("nope").unwrap_err().status, 404);
    }

    #[test]
    fn build_ids_are_uuids() {
        let id = new_build_id();
        let parts: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, new_build_id());
    }
}
