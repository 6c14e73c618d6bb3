//! Custom templates and template builds in SQLite: whole records as JSON, keyed by what the
//! engine looks them up by.

use sqlx::Row;

use super::{SqliteStore, ms, parse_json};
use crate::builds::model::{BuildLogEntry, BuildStatus, CustomTemplate, TemplateBuild};
use crate::error::{Error, Result};

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Store(e.to_string()))
}

fn status_str(s: BuildStatus) -> &'static str {
    match s {
        BuildStatus::Building => "building",
        BuildStatus::Ready => "ready",
        BuildStatus::Error => "error",
    }
}

impl SqliteStore {
    pub(super) async fn put_template_row(&self, t: &CustomTemplate) -> Result<()> {
        sqlx::query(
            "INSERT INTO templates (name, id, body, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET id = excluded.id, body = excluded.body, \
             updated_at = excluded.updated_at",
        )
        .bind(&t.name)
        .bind(&t.id)
        .bind(to_json(t)?)
        .bind(ms(t.updated_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn template_rows(&self) -> Result<Vec<CustomTemplate>> {
        let rows = sqlx::query("SELECT body FROM templates ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| parse_json(&r.try_get::<String, _>("body")?, "templates.body"))
            .collect()
    }

    pub(super) async fn delete_template_row(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM templates WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn put_build_row(
        &self,
        b: &TemplateBuild,
        log: &[BuildLogEntry],
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO template_builds (id, template, status, body, log, created_at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status = excluded.status, \
             body = excluded.body, log = excluded.log",
        )
        .bind(&b.id)
        .bind(&b.template)
        .bind(status_str(b.status))
        .bind(to_json(b)?)
        .bind(to_json(&log)?)
        .bind(ms(b.created_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn build_row(
        &self,
        id: &str,
    ) -> Result<Option<(TemplateBuild, Vec<BuildLogEntry>)>> {
        let Some(row) = sqlx::query("SELECT body, log FROM template_builds WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some((
            parse_json(&row.try_get::<String, _>("body")?, "template_builds.body")?,
            parse_json(&row.try_get::<String, _>("log")?, "template_builds.log")?,
        )))
    }

    pub(super) async fn build_rows_in(&self, status: BuildStatus) -> Result<Vec<TemplateBuild>> {
        let rows = sqlx::query(
            "SELECT body FROM template_builds WHERE status = ? ORDER BY created_at, id",
        )
        .bind(status_str(status))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| parse_json(&r.try_get::<String, _>("body")?, "template_builds.body"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builds::model::{LogLevel, ProcessDefaults, TemplateBuildRequest};
    use crate::store::Store;
    use time::OffsetDateTime;

    fn template(name: &str) -> CustomTemplate {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        CustomTemplate {
            name: name.into(),
            id: format!("tpl{name}"),
            base: "base".into(),
            from_image: Some("python:3.11".into()),
            layer: Some("ab".repeat(32)),
            defaults: ProcessDefaults::default(),
            start_cmd: Some("python3 -m http.server".into()),
            ready_cmd: None,
            vcpus: 1,
            memory_mib: 512,
            build_id: "bld1".into(),
            build_count: 1,
            created_at: now,
            updated_at: now,
        }
    }

    #[tokio::test]
    async fn templates_and_builds_round_trip() {
        let store = SqliteStore::in_memory().await.unwrap();
        store.put_template(&template("web")).await.unwrap();
        let mut again = template("web");
        again.build_count = 2;
        store.put_template(&again).await.unwrap();
        assert_eq!(store.custom_templates().await.unwrap(), vec![again]);
        assert!(store.delete_template("web").await.unwrap());
        assert!(!store.delete_template("web").await.unwrap());

        let mut build = TemplateBuild {
            id: "bld1".into(),
            template: "web".into(),
            status: BuildStatus::Building,
            request: TemplateBuildRequest {
                name: "web".into(),
                ..Default::default()
            },
            cached_steps: 0,
            run_steps: 0,
            failure: None,
            log_lines: 0,
            created_at: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            finished_at: None,
        };
        store.put_build(&build, &[]).await.unwrap();
        assert_eq!(
            store.builds_in(BuildStatus::Building).await.unwrap().len(),
            1
        );
        build.status = BuildStatus::Ready;
        let line = BuildLogEntry {
            timestamp: build.created_at,
            level: LogLevel::Info,
            message: "done".into(),
            step: None,
        };
        store
            .put_build(&build, std::slice::from_ref(&line))
            .await
            .unwrap();
        assert!(
            store
                .builds_in(BuildStatus::Building)
                .await
                .unwrap()
                .is_empty()
        );
        let (got, log) = store.get_build("bld1").await.unwrap().unwrap();
        assert_eq!((got, log), (build, vec![line]));
        assert!(store.get_build("nope").await.unwrap().is_none());
    }
}
