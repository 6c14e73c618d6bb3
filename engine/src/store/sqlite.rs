//! The embedded SQLite store (sqlx), with migrations from `engine/migrations/sqlite`.

use async_trait::async_trait;
use base64::Engine as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::sync::LazyLock;
use time::OffsetDateTime;

use super::{ApiKeyRecord, ListQuery, Page, Store};
use crate::builds::model::{BuildLogEntry, BuildStatus, CustomTemplate, TemplateBuild};
use crate::error::{Error, Result};
use crate::model::{
    BackupPolicy, EgressPolicy, LifecycleRules, Pool, Sandbox, SandboxState, Secret, Snapshot,
    SnapshotKind, TimeoutAction, Volume,
};
use crate::snapshots::archive::SignedArchive;

mod archives;
mod backups;
mod edge;
mod egress;
mod secrets;
mod templates;
mod volumes;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| Error::Store(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10));
        Self::connect(opts).await
    }

    /// An in-memory database (tests).
    pub async fn in_memory() -> Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|e| Error::Store(e.to_string()))?;
        Self::connect(opts).await
    }

    async fn connect(opts: SqliteConnectOptions) -> Result<Self> {
        // One writer at a time is SQLite's model; a small pool serves concurrent readers.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| Error::Store(format!("migration failed: {e}")))?;
        Ok(SqliteStore { pool })
    }
}

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_ms(v: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(v as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Store(e.to_string()))
}

fn parse_json<T: serde::de::DeserializeOwned>(s: &str, column: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Store(format!("corrupt {column} column: {e}")))
}

fn on_timeout_str(a: TimeoutAction) -> &'static str {
    match a {
        TimeoutAction::Kill => "kill",
        TimeoutAction::Pause => "pause",
        TimeoutAction::Stop => "stop",
    }
}

/// A rule column: seconds, NULL = never.
fn secs(row: &sqlx::sqlite::SqliteRow, column: &str) -> Result<Option<u64>> {
    Ok(row
        .try_get::<Option<i64>, _>(column)?
        .map(|v| v.max(0) as u64))
}

fn secs_col(v: Option<u64>) -> Option<i64> {
    v.map(|s| s.min(i64::MAX as u64) as i64)
}

/// Inserting a second live sandbox with a taken name trips the partial unique index.
fn name_conflict(e: sqlx::Error, name: Option<&str>) -> Error {
    match (e.as_database_error(), name) {
        (Some(db), Some(name)) if db.is_unique_violation() => {
            Error::Conflict(format!("a sandbox named {name:?} already exists"))
        }
        _ => e.into(),
    }
}

fn row_to_sandbox(row: &sqlx::sqlite::SqliteRow) -> Result<Sandbox> {
    let state: String = row.try_get("state")?;
    let on_timeout: String = row.try_get("on_timeout")?;
    let runtime: Option<String> = row.try_get("runtime")?;
    Ok(Sandbox {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        template: row.try_get("template")?,
        state: SandboxState::parse(&state)
            .ok_or_else(|| Error::Store(format!("unknown state {state:?}")))?,
        vcpus: row.try_get::<i64, _>("vcpus")? as u32,
        memory_mib: row.try_get::<i64, _>("memory_mib")? as u32,
        env: parse_json(&row.try_get::<String, _>("env")?, "env")?,
        metadata: parse_json(&row.try_get::<String, _>("metadata")?, "metadata")?,
        attributes: parse_json(&row.try_get::<String, _>("attributes")?, "attributes")?,
        created_at: from_ms(row.try_get("created_at")?),
        expires_at: row.try_get::<Option<i64>, _>("expires_at")?.map(from_ms),
        on_timeout: match on_timeout.as_str() {
            "pause" => TimeoutAction::Pause,
            "stop" => TimeoutAction::Stop,
            _ => TimeoutAction::Kill,
        },
        lifecycle: LifecycleRules {
            stop_after_idle_secs: secs(row, "stop_after_idle_secs")?,
            archive_after_stopped_secs: secs(row, "archive_after_stopped_secs")?,
            delete_after_stopped_secs: secs(row, "delete_after_stopped_secs")?,
        },
        last_activity_at: from_ms(row.try_get("last_activity_at")?),
        error: row.try_get("error")?,
        runtime: runtime.map(|r| parse_json(&r, "runtime")).transpose()?,
    })
}

/// Cursor = base64("<created_at ms>:<id>") of the last item of a page.
fn row_to_snapshot(row: &sqlx::sqlite::SqliteRow) -> Result<Snapshot> {
    let kind: String = row.try_get("kind")?;
    Ok(Snapshot {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: SnapshotKind::parse(&kind)
            .ok_or_else(|| Error::Store(format!("unknown snapshot kind {kind:?}")))?,
        sandbox_id: row.try_get("sandbox_id")?,
        template: row.try_get("template")?,
        vcpus: row.try_get::<i64, _>("vcpus")? as u32,
        memory_mib: row.try_get::<i64, _>("memory_mib")? as u32,
        size_bytes: row.try_get::<i64, _>("size_bytes")?.max(0) as u64,
        created_at: from_ms(row.try_get("created_at")?),
        vmm: row.try_get("vmm")?,
        accel: row.try_get("accel")?,
        key_id: row.try_get("key_id")?,
        timings: parse_json(&row.try_get::<String, _>("timings")?, "timings")?,
        env: parse_json(&row.try_get::<String, _>("env")?, "env")?,
        metadata: parse_json(&row.try_get::<String, _>("metadata")?, "metadata")?,
    })
}

/// A second snapshot with a taken name trips the unique index.
fn snapshot_name_conflict(e: sqlx::Error, name: Option<&str>) -> Error {
    match (e.as_database_error(), name) {
        (Some(db), Some(name)) if db.is_unique_violation() => {
            Error::Conflict(format!("a snapshot named {name:?} already exists"))
        }
        _ => e.into(),
    }
}

fn encode_cursor(s: &Sandbox) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}:{}",
        ms(s.created_at),
        s.id
    ))
}

fn decode_cursor(c: &str) -> Result<(i64, String)> {
    let bad = || Error::InvalidRequest("invalid pagination cursor".into());
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (t, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((t.parse().map_err(|_| bad())?, id.to_string()))
}

/// The sandbox columns written on insert and update, in the order [`bind_row`] binds them
/// (`id` and `created_at` are set once, on insert).
const ROW_COLUMNS: [&str; 17] = [
    "template",
    "state",
    "vcpus",
    "memory_mib",
    "env",
    "metadata",
    "attributes",
    "updated_at",
    "expires_at",
    "on_timeout",
    "last_activity_at",
    "error",
    "runtime",
    "name",
    "stop_after_idle_secs",
    "archive_after_stopped_secs",
    "delete_after_stopped_secs",
];

// Built only from the constant column list above, never from input.
static INSERT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO sandboxes (id, created_at, {}) VALUES (?, ?, {})",
        ROW_COLUMNS.join(", "),
        vec!["?"; ROW_COLUMNS.len()].join(", ")
    )
});

static UPDATE_SQL: LazyLock<String> = LazyLock::new(|| {
    let sets: Vec<String> = ROW_COLUMNS.iter().map(|c| format!("{c} = ?")).collect();
    format!("UPDATE sandboxes SET {} WHERE id = ?", sets.join(", "))
});

/// The update of a claim: only while the row is still in the pool it was picked from.
static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| {
    let sets: Vec<String> = ROW_COLUMNS.iter().map(|c| format!("{c} = ?")).collect();
    format!(
        "UPDATE sandboxes SET {}, pool_id = NULL WHERE id = ? AND pool_id = ?",
        sets.join(", ")
    )
});

/// Attempts of a claim that lost its pick to a concurrent claim before it gives up.
const CLAIM_ATTEMPTS: usize = 8;

fn row_to_pool(row: &sqlx::sqlite::SqliteRow) -> Result<Pool> {
    Ok(Pool {
        id: row.try_get("id")?,
        template: row.try_get("template")?,
        snapshot: row.try_get("snapshot")?,
        vcpus: row.try_get::<i64, _>("vcpus")? as u32,
        memory_mib: row.try_get::<i64, _>("memory_mib")? as u32,
        size: row.try_get::<i64, _>("size")?.max(0) as u32,
        ready: 0,
        starting: 0,
        error: None,
        created_at: from_ms(row.try_get("created_at")?),
        updated_at: from_ms(row.try_get("updated_at")?),
    })
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// Binds the values of [`ROW_COLUMNS`] for `s`.
fn bind_row<'q>(q: SqliteQuery<'q>, s: &'q Sandbox) -> Result<SqliteQuery<'q>> {
    Ok(q.bind(&s.template)
        .bind(s.state.as_str())
        .bind(s.vcpus as i64)
        .bind(s.memory_mib as i64)
        .bind(json(&s.env)?)
        .bind(json(&s.metadata)?)
        .bind(json(&s.attributes)?)
        .bind(ms(OffsetDateTime::now_utc()))
        .bind(s.expires_at.map(ms))
        .bind(on_timeout_str(s.on_timeout))
        .bind(ms(s.last_activity_at))
        .bind(&s.error)
        .bind(s.runtime.as_ref().map(json).transpose()?)
        .bind(&s.name)
        .bind(secs_col(s.lifecycle.stop_after_idle_secs))
        .bind(secs_col(s.lifecycle.archive_after_stopped_secs))
        .bind(secs_col(s.lifecycle.delete_after_stopped_secs)))
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_sandbox(&self, s: &Sandbox) -> Result<()> {
        let q = sqlx::query(sqlx::AssertSqlSafe(INSERT_SQL.as_str()))
            .bind(&s.id)
            .bind(ms(s.created_at));
        bind_row(q, s)?
            .execute(&self.pool)
            .await
            .map_err(|e| name_conflict(e, s.name.as_deref()))?;
        Ok(())
    }

    async fn update_sandbox(&self, s: &Sandbox) -> Result<()> {
        let done = bind_row(sqlx::query(sqlx::AssertSqlSafe(UPDATE_SQL.as_str())), s)?
            .bind(&s.id)
            .execute(&self.pool)
            .await
            .map_err(|e| name_conflict(e, s.name.as_deref()))?;
        if done.rows_affected() == 0 {
            return Err(Error::SandboxNotFound(s.id.clone()));
        }
        Ok(())
    }

    async fn touch_sandbox(&self, id: &str, at_unix_ms: i64) -> Result<()> {
        sqlx::query(
            "UPDATE sandboxes SET last_activity_at = MAX(last_activity_at, ?) WHERE id = ?",
        )
        .bind(at_unix_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_sandbox(&self, id: &str) -> Result<Option<Sandbox>> {
        let row = sqlx::query("SELECT * FROM sandboxes WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_to_sandbox).transpose()
    }

    async fn get_sandbox_by_name(&self, name: &str) -> Result<Option<Sandbox>> {
        let row = sqlx::query("SELECT * FROM sandboxes WHERE name = ? AND state != 'deleted'")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_to_sandbox).transpose()
    }

    async fn list_sandboxes(&self, q: &ListQuery) -> Result<Page> {
        let limit = q.limit.clamp(1, 1000);
        // Sandboxes waiting in a warm pool are nobody's yet.
        let mut b: QueryBuilder<sqlx::Sqlite> =
            QueryBuilder::new("SELECT * FROM sandboxes WHERE pool_id IS NULL AND ");
        if q.states.is_empty() {
            b.push("state != 'deleted'");
        } else {
            b.push("state IN (");
            let mut sep = b.separated(", ");
            for s in &q.states {
                sep.push_bind(s.as_str());
            }
            b.push(")");
        }
        for (k, v) in &q.metadata {
            // A quoted JSON path, so keys with dots or spaces are matched literally.
            let path = format!("$.\"{}\"", k.replace('\\', "\\\\").replace('"', "\\\""));
            b.push(" AND json_extract(metadata, ")
                .push_bind(path)
                .push(") = ")
                .push_bind(v.clone());
        }
        if let Some(prefix) = &q.name_prefix {
            // substr() rather than LIKE, so `%` and `_` in the prefix are literal; lower() makes
            // it ASCII case-insensitive (names are ASCII).
            b.push(" AND lower(substr(name, 1, ")
                .push_bind(prefix.chars().count() as i64)
                .push(")) = lower(")
                .push_bind(prefix.clone())
                .push(")");
        }
        if let Some(c) = &q.cursor {
            let (t, id) = decode_cursor(c)?;
            b.push(" AND (created_at < ")
                .push_bind(t)
                .push(" OR (created_at = ")
                .push_bind(t);
            b.push(" AND id < ").push_bind(id).push("))");
        }
        b.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(limit as i64 + 1);
        let rows = b.build().fetch_all(&self.pool).await?;
        let mut items = rows
            .iter()
            .map(row_to_sandbox)
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(encode_cursor)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn sandboxes_in_states(&self, states: &[SandboxState]) -> Result<Vec<Sandbox>> {
        let mut b: QueryBuilder<sqlx::Sqlite> =
            QueryBuilder::new("SELECT * FROM sandboxes WHERE state IN (");
        let mut sep = b.separated(", ");
        for s in states {
            sep.push_bind(s.as_str());
        }
        b.push(")");
        let rows = b.build().fetch_all(&self.pool).await?;
        rows.iter().map(row_to_sandbox).collect()
    }

    async fn append_event(
        &self,
        sandbox_id: &str,
        kind: &str,
        detail: &serde_json::Value,
    ) -> Result<()> {
        sqlx::query("INSERT INTO events (sandbox_id, at, kind, detail) VALUES (?, ?, ?, ?)")
            .bind(sandbox_id)
            .bind(ms(OffsetDateTime::now_utc()))
            .bind(kind)
            .bind(detail.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn events(&self, sandbox_id: &str) -> Result<Vec<(i64, String, serde_json::Value)>> {
        let rows =
            sqlx::query("SELECT at, kind, detail FROM events WHERE sandbox_id = ? ORDER BY id")
                .bind(sandbox_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("at")?,
                    r.try_get("kind")?,
                    parse_json(&r.try_get::<String, _>("detail")?, "detail")?,
                ))
            })
            .collect()
    }

    async fn insert_revoked_token(&self, hash: &str, kind: &str, expires_at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO revoked_tokens (hash, kind, expires_at, revoked_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (hash) DO UPDATE SET expires_at = MAX(expires_at, excluded.expires_at)",
        )
        .bind(hash)
        .bind(kind)
        .bind(expires_at)
        .bind(ms(OffsetDateTime::now_utc()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn revoked_tokens(&self, now: i64) -> Result<Vec<(String, i64)>> {
        sqlx::query("DELETE FROM revoked_tokens WHERE expires_at <= ?")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let rows = sqlx::query("SELECT hash, expires_at FROM revoked_tokens")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("hash")?, r.try_get("expires_at")?)))
            .collect()
    }

    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        insert_api_key_query(key).execute(&self.pool).await?;
        Ok(())
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let rows = sqlx::query(
            "SELECT id, name, hash, prefix, created_at, last_used_at, revoked_at FROM api_keys \
             ORDER BY created_at, rowid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ApiKeyRecord {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    hash: r.try_get("hash")?,
                    prefix: r.try_get("prefix")?,
                    created_at: from_ms(r.try_get("created_at")?),
                    last_used_at: r.try_get::<Option<i64>, _>("last_used_at")?.map(from_ms),
                    revoked_at: r.try_get::<Option<i64>, _>("revoked_at")?.map(from_ms),
                })
            })
            .collect()
    }

    async fn revoke_api_key(&self, id: &str, at: OffsetDateTime) -> Result<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(ms(at))
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn replace_api_key(
        &self,
        old_id: &str,
        new: &ApiKeyRecord,
        at: OffsetDateTime,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(ms(at))
                .bind(old_id)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_api_key_query(new).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn touch_api_key(&self, id: &str, at: OffsetDateTime) -> Result<()> {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?",
        )
        .bind(ms(at))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_snapshot(&self, snap: &Snapshot, ready: bool) -> Result<()> {
        sqlx::query(
            "INSERT INTO snapshots (id, name, kind, sandbox_id, template, vcpus, memory_mib, size_bytes, \
             created_at, vmm, accel, key_id, timings, env, metadata, ready) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&snap.id)
        .bind(&snap.name)
        .bind(snap.kind.as_str())
        .bind(&snap.sandbox_id)
        .bind(&snap.template)
        .bind(i64::from(snap.vcpus))
        .bind(i64::from(snap.memory_mib))
        .bind(snap.size_bytes.min(i64::MAX as u64) as i64)
        .bind(ms(snap.created_at))
        .bind(&snap.vmm)
        .bind(&snap.accel)
        .bind(&snap.key_id)
        .bind(json(&snap.timings)?)
        .bind(json(&snap.env)?)
        .bind(json(&snap.metadata)?)
        .bind(ready)
        .execute(&self.pool)
        .await
        .map_err(|e| snapshot_name_conflict(e, snap.name.as_deref()))?;
        Ok(())
    }

    async fn finish_snapshot(&self, snap: &Snapshot) -> Result<()> {
        sqlx::query(
            "UPDATE snapshots SET size_bytes = ?, timings = ?, key_id = ?, ready = 1 WHERE id = ?",
        )
        .bind(snap.size_bytes.min(i64::MAX as u64) as i64)
        .bind(json(&snap.timings)?)
        .bind(&snap.key_id)
        .bind(&snap.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_snapshot(&self, id_or_name: &str) -> Result<Option<Snapshot>> {
        sqlx::query(
            "SELECT * FROM snapshots WHERE ready = 1 AND (id = ? OR name = ?) \
             ORDER BY (id = ?) DESC LIMIT 1",
        )
        .bind(id_or_name)
        .bind(id_or_name)
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| row_to_snapshot(&r))
        .transpose()
    }

    async fn list_snapshots(
        &self,
        sandbox_id: Option<&str>,
        kind: Option<SnapshotKind>,
    ) -> Result<Vec<Snapshot>> {
        sqlx::query(
            "SELECT * FROM snapshots WHERE ready = 1 AND (? IS NULL OR sandbox_id = ?) \
             AND (? IS NULL OR kind = ?) ORDER BY created_at, id",
        )
        .bind(sandbox_id)
        .bind(sandbox_id)
        .bind(kind.map(SnapshotKind::as_str))
        .bind(kind.map(SnapshotKind::as_str))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(row_to_snapshot)
        .collect()
    }

    async fn unready_snapshots(&self) -> Result<Vec<Snapshot>> {
        sqlx::query("SELECT * FROM snapshots WHERE ready = 0")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(row_to_snapshot)
            .collect()
    }

    async fn delete_snapshot(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM snapshots WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_pool(&self, p: &Pool) -> Result<()> {
        sqlx::query(
            "INSERT INTO pools (id, template, snapshot, vcpus, memory_mib, size, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&p.id)
        .bind(&p.template)
        .bind(&p.snapshot)
        .bind(p.vcpus as i64)
        .bind(p.memory_mib as i64)
        .bind(p.size as i64)
        .bind(ms(p.created_at))
        .bind(ms(p.updated_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn resize_pool(&self, id: &str, size: u32) -> Result<bool> {
        let done = sqlx::query("UPDATE pools SET size = ?, updated_at = ? WHERE id = ?")
            .bind(size as i64)
            .bind(ms(OffsetDateTime::now_utc()))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_pool(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM pools WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_pools(&self) -> Result<Vec<Pool>> {
        let rows = sqlx::query("SELECT * FROM pools ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_pool).collect()
    }

    async fn put_template(&self, template: &CustomTemplate) -> Result<()> {
        self.put_template_row(template).await
    }

    async fn custom_templates(&self) -> Result<Vec<CustomTemplate>> {
        self.template_rows().await
    }

    async fn delete_template(&self, name: &str) -> Result<bool> {
        self.delete_template_row(name).await
    }

    async fn put_build(&self, build: &TemplateBuild, log: &[BuildLogEntry]) -> Result<()> {
        self.put_build_row(build, log).await
    }

    async fn get_build(&self, id: &str) -> Result<Option<(TemplateBuild, Vec<BuildLogEntry>)>> {
        self.build_row(id).await
    }

    async fn builds_in(&self, status: BuildStatus) -> Result<Vec<TemplateBuild>> {
        self.build_rows_in(status).await
    }

    async fn put_archive(&self, archive: &SignedArchive) -> Result<()> {
        self.put_archive_row(archive).await
    }

    async fn get_archive(&self, sandbox_id: &str) -> Result<Option<SignedArchive>> {
        self.archive_row(sandbox_id).await
    }

    async fn delete_archive(&self, sandbox_id: &str) -> Result<()> {
        self.delete_archive_row(sandbox_id).await
    }

    async fn put_backup(&self, archive: &SignedArchive) -> Result<()> {
        self.put_backup_row(archive).await
    }

    async fn get_backup(&self, snapshot_id: &str) -> Result<Option<SignedArchive>> {
        self.backup_row(snapshot_id).await
    }

    async fn delete_backup(&self, snapshot_id: &str) -> Result<()> {
        self.delete_backup_row(snapshot_id).await
    }

    async fn set_backup_policy(
        &self,
        sandbox_id: &str,
        policy: Option<BackupPolicy>,
    ) -> Result<()> {
        self.set_backup_policy_row(sandbox_id, policy).await
    }

    async fn get_backup_policy(&self, sandbox_id: &str) -> Result<Option<BackupPolicy>> {
        self.backup_policy_row(sandbox_id).await
    }

    async fn backup_policies(&self) -> Result<Vec<(String, BackupPolicy)>> {
        self.backup_policy_rows().await
    }

    async fn edge_keys(&self) -> Result<Vec<crate::edge::keys::StoredEdgeKey>> {
        self.edge_key_rows().await
    }

    async fn insert_edge_key(
        &self,
        kid: &str,
        sealed: &[u8],
        created_at: OffsetDateTime,
    ) -> Result<()> {
        self.insert_edge_key_row(kid, sealed, created_at).await
    }

    async fn seal_edge_key(&self, kid: &str, sealed: &[u8]) -> Result<()> {
        self.seal_edge_key_row(kid, sealed).await
    }

    async fn delete_edge_key(&self, kid: &str) -> Result<bool> {
        self.delete_edge_key_row(kid).await
    }

    async fn edge_exposures(&self) -> Result<Vec<crate::edge::Exposure>> {
        self.edge_exposure_rows().await
    }

    async fn put_edge_exposure(&self, exposure: &crate::edge::Exposure) -> Result<()> {
        self.put_edge_exposure_row(exposure).await
    }

    async fn delete_edge_exposure(&self, sandbox_id: &str, port: u16) -> Result<bool> {
        self.delete_edge_exposure_row(sandbox_id, port).await
    }

    async fn delete_edge_exposures(&self, sandbox_id: &str) -> Result<()> {
        self.delete_edge_exposure_rows(sandbox_id).await
    }

    async fn set_egress_policy(
        &self,
        sandbox_id: &str,
        policy: Option<&EgressPolicy>,
    ) -> Result<()> {
        self.set_egress_policy_row(sandbox_id, policy).await
    }

    async fn get_egress_policy(&self, sandbox_id: &str) -> Result<Option<EgressPolicy>> {
        self.egress_policy_row(sandbox_id).await
    }

    async fn egress_policies(&self) -> Result<Vec<(String, EgressPolicy)>> {
        self.egress_policy_rows().await
    }

    async fn insert_secret(&self, secret: &Secret, sealed: &[u8]) -> Result<()> {
        self.insert_secret_row(secret, sealed).await
    }

    async fn update_secret(&self, secret: &Secret, sealed: Option<&[u8]>) -> Result<()> {
        self.update_secret_row(secret, sealed).await
    }

    async fn get_secret(&self, id_or_name: &str) -> Result<Option<(Secret, Vec<u8>)>> {
        self.secret_row(id_or_name).await
    }

    async fn list_secrets(&self) -> Result<Vec<Secret>> {
        self.secret_rows().await
    }

    async fn delete_secret(&self, id: &str) -> Result<bool> {
        self.delete_secret_row(id).await
    }

    async fn set_sandbox_secrets(
        &self,
        sandbox_id: &str,
        grants: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        self.set_sandbox_secret_rows(sandbox_id, grants).await
    }

    async fn secret_grants(
        &self,
        sandbox_id: Option<&str>,
        secret_id: Option<&str>,
    ) -> Result<Vec<super::SecretGrant>> {
        self.secret_grant_rows(sandbox_id, secret_id).await
    }

    async fn insert_volume(&self, volume: &Volume) -> Result<()> {
        self.insert_volume_row(volume).await
    }

    async fn update_volume(&self, volume: &Volume) -> Result<()> {
        self.update_volume_row(volume).await
    }

    async fn get_volume(&self, id_or_name: &str) -> Result<Option<Volume>> {
        self.volume_row(id_or_name).await
    }

    async fn list_volumes(&self) -> Result<Vec<Volume>> {
        self.volume_rows().await
    }

    async fn delete_volume(&self, id: &str) -> Result<bool> {
        self.delete_volume_row(id).await
    }

    async fn insert_pooled_sandbox(&self, s: &Sandbox, pool_id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let q = sqlx::query(sqlx::AssertSqlSafe(INSERT_SQL.as_str()))
            .bind(&s.id)
            .bind(ms(s.created_at));
        bind_row(q, s)?.execute(&mut *tx).await?;
        sqlx::query("UPDATE sandboxes SET pool_id = ? WHERE id = ?")
            .bind(pool_id)
            .bind(&s.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn pooled_sandboxes(&self, pool_id: &str) -> Result<Vec<Sandbox>> {
        let rows = sqlx::query(
            "SELECT * FROM sandboxes WHERE pool_id = ? AND state != 'deleted' ORDER BY created_at, id",
        )
        .bind(pool_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_sandbox).collect()
    }

    async fn claim_pooled(
        &self,
        pool_id: &str,
        claim: &(dyn for<'s> Fn(&'s mut Sandbox) + Send + Sync),
    ) -> Result<Option<Sandbox>> {
        for _ in 0..CLAIM_ATTEMPTS {
            // IMMEDIATE: the write lock is taken before the pick is read, so no concurrent writer
            // can make this transaction's snapshot stale (SQLITE_BUSY_SNAPSHOT) between the two.
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let row = sqlx::query(
                "SELECT * FROM sandboxes WHERE pool_id = ? AND state = 'running' \
                 ORDER BY created_at, id LIMIT 1",
            )
            .bind(pool_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let mut s = row_to_sandbox(&row)?;
            claim(&mut s);
            let done = bind_row(sqlx::query(sqlx::AssertSqlSafe(CLAIM_SQL.as_str())), &s)?
                .bind(&s.id)
                .bind(pool_id)
                .execute(&mut *tx)
                .await
                .map_err(|e| name_conflict(e, s.name.as_deref()))?;
            if done.rows_affected() == 1 {
                tx.commit().await?;
                return Ok(Some(s));
            }
            // A concurrent claim took it first: pick again.
        }
        Ok(None)
    }
}

fn insert_api_key_query(key: &ApiKeyRecord) -> SqliteQuery<'_> {
    sqlx::query(
        "INSERT INTO api_keys (id, name, hash, prefix, created_at, last_used_at, revoked_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&key.id)
    .bind(&key.name)
    .bind(&key.hash)
    .bind(&key.prefix)
    .bind(ms(key.created_at))
    .bind(key.last_used_at.map(ms))
    .bind(key.revoked_at.map(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn sandbox(id: &str, created_ms: i64, meta: &[(&str, &str)]) -> Sandbox {
        Sandbox {
            id: id.into(),
            name: None,
            template: "base".into(),
            state: SandboxState::Running,
            vcpus: 2,
            memory_mib: 512,
            env: BTreeMap::from([("A".into(), "1".into())]),
            attributes: BTreeMap::from([("platinum.test/flag".into(), "1".into())]),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            created_at: from_ms(created_ms),
            expires_at: Some(from_ms(created_ms + 1000)),
            on_timeout: TimeoutAction::Pause,
            lifecycle: LifecycleRules::default(),
            last_activity_at: from_ms(created_ms),
            error: None,
            runtime: None,
        }
    }

    #[tokio::test]
    async fn snapshots_are_listed_only_once_ready_and_names_are_unique() {
        let store = SqliteStore::in_memory().await.unwrap();
        let mut snap = Snapshot {
            id: "snapaaaa".into(),
            name: Some("golden".into()),
            kind: SnapshotKind::Snapshot,
            sandbox_id: "sbx1".into(),
            template: "base".into(),
            vcpus: 2,
            memory_mib: 512,
            size_bytes: 0,
            created_at: from_ms(1_000),
            vmm: "qemu 10.0.2".into(),
            accel: "tcg".into(),
            key_id: String::new(),
            timings: Default::default(),
            env: BTreeMap::from([("A".into(), "1".into())]),
            metadata: BTreeMap::new(),
        };
        store.insert_snapshot(&snap, false).await.unwrap();
        assert!(store.get_snapshot("golden").await.unwrap().is_none());
        assert_eq!(store.unready_snapshots().await.unwrap().len(), 1);
        snap.size_bytes = 42;
        snap.key_id = "kid".into();
        snap.timings.total_ms = 7;
        store.finish_snapshot(&snap).await.unwrap();
        assert_eq!(
            store.get_snapshot("golden").await.unwrap(),
            Some(snap.clone())
        );
        assert_eq!(
            store.get_snapshot("snapaaaa").await.unwrap(),
            Some(snap.clone())
        );
        assert!(store.unready_snapshots().await.unwrap().is_empty());

        let mut ckpt = snap.clone();
        ckpt.id = "ckptbbbb".into();
        ckpt.name = None;
        ckpt.kind = SnapshotKind::Checkpoint;
        store.insert_snapshot(&ckpt, true).await.unwrap();
        let mut dup = snap.clone();
        dup.id = "snapcccc".into();
        assert!(matches!(
            store.insert_snapshot(&dup, true).await,
            Err(Error::Conflict(_))
        ));
        assert_eq!(
            store
                .list_snapshots(Some("sbx1"), None)
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            store
                .list_snapshots(None, Some(SnapshotKind::Checkpoint))
                .await
                .unwrap(),
            vec![ckpt]
        );
        store.delete_snapshot("snapaaaa").await.unwrap();
        assert!(
            store
                .list_snapshots(Some("other"), None)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.list_snapshots(None, None).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn pooled_sandboxes_are_claimed_once_and_hidden_until_then() {
        let store = SqliteStore::in_memory().await.unwrap();
        let now = OffsetDateTime::now_utc();
        let pool = Pool {
            id: "poolaaaa".into(),
            template: "base".into(),
            snapshot: None,
            vcpus: 2,
            memory_mib: 512,
            size: 2,
            ready: 0,
            starting: 0,
            error: None,
            created_at: now,
            updated_at: now,
        };
        store.insert_pool(&pool).await.unwrap();
        let ready = sandbox("warm1", 1_700_000_000_000, &[]);
        let mut booting = sandbox("warm2", 1_700_000_000_001, &[]);
        booting.state = SandboxState::Creating;
        store.insert_pooled_sandbox(&ready, &pool.id).await.unwrap();
        store
            .insert_pooled_sandbox(&booting, &pool.id)
            .await
            .unwrap();
        store
            .insert_sandbox(&sandbox("mine", 1_700_000_000_002, &[]))
            .await
            .unwrap();
        let listed = |store: &SqliteStore| {
            let store = store.clone();
            async move {
                let page = store
                    .list_sandboxes(&ListQuery {
                        limit: 100,
                        ..ListQuery::default()
                    })
                    .await
                    .unwrap();
                page.items.into_iter().map(|s| s.id).collect::<Vec<_>>()
            }
        };
        assert_eq!(listed(&store).await, ["mine"]);
        assert_eq!(store.pooled_sandboxes(&pool.id).await.unwrap().len(), 2);

        let claimed = store
            .claim_pooled(&pool.id, &|s: &mut Sandbox| {
                s.name = Some("caller".into());
                s.env = BTreeMap::from([("WHO".into(), "me".into())]);
            })
            .await
            .unwrap()
            .expect("a running pooled sandbox");
        assert_eq!(claimed.id, "warm1");
        assert_eq!(claimed.name.as_deref(), Some("caller"));
        let stored = store.get_sandbox("warm1").await.unwrap().unwrap();
        assert_eq!(stored.env["WHO"], "me");
        assert_eq!(listed(&store).await.len(), 2);
        // Only the booting one is left in the pool: nothing more to claim.
        assert!(
            store
                .claim_pooled(&pool.id, &|_: &mut Sandbox| {})
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(store.pooled_sandboxes(&pool.id).await.unwrap().len(), 1);

        assert!(store.resize_pool(&pool.id, 0).await.unwrap());
        assert_eq!(store.list_pools().await.unwrap()[0].size, 0);
        assert!(store.delete_pool(&pool.id).await.unwrap());
        assert!(!store.delete_pool(&pool.id).await.unwrap());
        assert!(!store.resize_pool(&pool.id, 1).await.unwrap());
    }

    #[tokio::test]
    async fn round_trips_and_updates() {
        let store = SqliteStore::in_memory().await.unwrap();
        let mut s = sandbox("aaa", 1_700_000_000_000, &[("team", "x")]);
        store.insert_sandbox(&s).await.unwrap();
        assert_eq!(store.get_sandbox("aaa").await.unwrap().unwrap(), s);
        s.state = SandboxState::Error;
        s.error = Some("boom".into());
        store.update_sandbox(&s).await.unwrap();
        assert_eq!(store.get_sandbox("aaa").await.unwrap().unwrap(), s);
        assert!(store.get_sandbox("nope").await.unwrap().is_none());
        let mut ghost = s.clone();
        ghost.id = "ghost".into();
        assert!(matches!(
            store.update_sandbox(&ghost).await,
            Err(Error::SandboxNotFound(_))
        ));
    }

    #[tokio::test]
    async fn lists_with_filters_and_cursor_paging() {
        let store = SqliteStore::in_memory().await.unwrap();
        for i in 0..7 {
            let team = if i % 2 == 0 { "even" } else { "odd" };
            store
                .insert_sandbox(&sandbox(
                    &format!("s{i}"),
                    1_000 + i,
                    &[("team", team), ("dotted.key", "v")],
                ))
                .await
                .unwrap();
        }
        let mut deleted = sandbox("gone", 5_000, &[]);
        deleted.state = SandboxState::Deleted;
        store.insert_sandbox(&deleted).await.unwrap();

        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .list_sandboxes(&ListQuery {
                    limit: 3,
                    cursor,
                    ..Default::default()
                })
                .await
                .unwrap();
            seen.extend(page.items.iter().map(|s| s.id.clone()));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, ["s6", "s5", "s4", "s3", "s2", "s1", "s0"]);

        let odd = store
            .list_sandboxes(&ListQuery {
                metadata: vec![
                    ("team".into(), "odd".into()),
                    ("dotted.key".into(), "v".into()),
                ],
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            odd.items.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["s5", "s3", "s1"]
        );

        let only_deleted = store
            .list_sandboxes(&ListQuery {
                states: vec![SandboxState::Deleted],
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(only_deleted.items.len(), 1);
        assert!(
            store
                .list_sandboxes(&ListQuery {
                    cursor: Some("!!".into()),
                    limit: 1,
                    ..Default::default()
                })
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn names_are_unique_among_live_sandboxes_and_rules_round_trip() {
        let store = SqliteStore::in_memory().await.unwrap();
        let mut a = sandbox("a1", 1_000, &[]);
        a.name = Some("web_1%".into());
        a.lifecycle = LifecycleRules {
            stop_after_idle_secs: Some(60),
            archive_after_stopped_secs: None,
            delete_after_stopped_secs: Some(0),
        };
        store.insert_sandbox(&a).await.unwrap();
        assert_eq!(store.get_sandbox("a1").await.unwrap().unwrap(), a);
        assert_eq!(
            store
                .get_sandbox_by_name("web_1%")
                .await
                .unwrap()
                .map(|s| s.id),
            Some("a1".to_string())
        );
        let mut b = sandbox("b1", 2_000, &[]);
        b.name = Some("web_1%".into());
        assert!(matches!(
            store.insert_sandbox(&b).await,
            Err(Error::Conflict(_))
        ));
        // Once the first is deleted, its name is free again.
        a.state = SandboxState::Deleted;
        store.update_sandbox(&a).await.unwrap();
        assert!(store.get_sandbox_by_name("web_1%").await.unwrap().is_none());
        store.insert_sandbox(&b).await.unwrap();
        let mut c = sandbox("c1", 3_000, &[]);
        c.name = Some("webXYZ".into());
        store.insert_sandbox(&c).await.unwrap();
        // `%` and `_` in a prefix are literal characters; case does not matter.
        let page = store
            .list_sandboxes(&ListQuery {
                name_prefix: Some("WEB_".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            page.items.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["b1"]
        );
    }

    #[tokio::test]
    async fn keeps_an_audit_trail_and_api_keys() {
        let store = SqliteStore::in_memory().await.unwrap();
        store
            .append_event("a", "created", &serde_json::json!({"template": "base"}))
            .await
            .unwrap();
        store
            .append_event("a", "deleted", &serde_json::json!({}))
            .await
            .unwrap();
        let ev = store.events("a").await.unwrap();
        assert_eq!(
            ev.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(),
            ["created", "deleted"]
        );
        let k = ApiKeyRecord {
            id: "k1".into(),
            name: "default".into(),
            hash: "ab".into(),
            prefix: "pt_abcd".into(),
            created_at: from_ms(1_000),
            last_used_at: None,
            revoked_at: None,
        };
        store.insert_api_key(&k).await.unwrap();
        assert_eq!(store.api_keys().await.unwrap(), vec![k.clone()]);
        assert!(store.insert_api_key(&k).await.is_err());

        // Last use only moves forwards; revocation happens once; a rotation is all or nothing.
        store.touch_api_key("k1", from_ms(5_000)).await.unwrap();
        store.touch_api_key("k1", from_ms(4_000)).await.unwrap();
        let k2 = ApiKeyRecord {
            id: "k2".into(),
            hash: "cd".into(),
            created_at: from_ms(2_000),
            ..k.clone()
        };
        assert!(
            store
                .replace_api_key("k1", &k2, from_ms(6_000))
                .await
                .unwrap()
        );
        assert!(
            !store
                .replace_api_key("k1", &k2, from_ms(7_000))
                .await
                .unwrap()
        );
        assert!(!store.revoke_api_key("k1", from_ms(7_000)).await.unwrap());
        let keys = store.api_keys().await.unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].last_used_at, Some(from_ms(5_000)));
        assert_eq!(keys[0].revoked_at, Some(from_ms(6_000)));
        assert_eq!(keys[1], k2);
        assert!(store.revoke_api_key("k2", from_ms(8_000)).await.unwrap());
        assert!(!store.revoke_api_key("nope", from_ms(8_000)).await.unwrap());
    }
}
