//! Build logs of the snapshots and images Platinum builds.
//!
//! - `GET /snapshots/{idOrName}/build-logs-url` and `GET /sandbox/{idOrName}/build-logs-url`
//!   (the build of the sandbox's template) answer `{url}`: `/api/snapshots/{template}/build-logs`
//!   on this server, which the SDKs open with their default headers, so the API key
//!   authenticates it as any `/api` call.
//! - `GET /snapshots/{idOrName}/build-logs` (and `/sandbox/{idOrName}/build-logs`) answers the
//!   log as plain text, one line per entry; with `?follow=true` it goes on as the build writes
//!   and ends when the build ends.
//!
//! Built-in templates and snapshots taken of sandboxes have no build log (404).

use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use platinum_engine::builds::model::{BuildLogEntry, BuildStatus, TemplateBuild};
use serde_json::{Value, json};
use std::time::Duration;

use super::builds;
use super::sandbox::BaseUrl;
use crate::Ctx;
use crate::error::{DPath, DResult, DaytonaError};

/// Log lines read at a time.
const PAGE: usize = 512;
/// Longest one wait for new lines before looking at the build again.
const FOLLOW_POLL: Duration = Duration::from_secs(15);

/// The template and build behind a snapshot id or name.
async fn snapshot_build(ctx: &Ctx, name: &str) -> DResult<(String, TemplateBuild)> {
    let template = builds::resolve_template(ctx, name)
        .ok_or_else(|| DaytonaError::not_found(format!("snapshot {name} not found")))?;
    template_build(ctx, &template).await
}

/// The build of template `template`, or a 404 saying there is none.
async fn template_build(ctx: &Ctx, template: &str) -> DResult<(String, TemplateBuild)> {
    match builds::latest_build(ctx, template).await {
        Some(b) => Ok((template.to_string(), b)),
        None => Err(DaytonaError::not_found(format!(
            "{template} has no build logs: it is a built-in template, not built here"
        ))),
    }
}

/// The template and build of a sandbox's template.
async fn sandbox_build(ctx: &Ctx, id: &str) -> DResult<(String, TemplateBuild)> {
    let s = ctx.engine.find_sandbox(id).await?;
    template_build(ctx, &s.template).await
}

fn logs_url(base: &BaseUrl, template: &str) -> Json<Value> {
    Json(json!({ "url": format!("{}/api/snapshots/{template}/build-logs", base.0) }))
}

/// `GET /snapshots/{idOrName}/build-logs-url`.
pub async fn snapshot_logs_url(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath(name): DPath<String>,
) -> DResult<Json<Value>> {
    let (template, _) = snapshot_build(&ctx, &name).await?;
    Ok(logs_url(&base, &template))
}

/// `GET /sandbox/{idOrName}/build-logs-url`: the log of the build that made its template.
pub async fn sandbox_logs_url(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath(id): DPath<String>,
) -> DResult<Json<Value>> {
    let (template, _) = sandbox_build(&ctx, &id).await?;
    Ok(logs_url(&base, &template))
}

/// `GET /snapshots/{idOrName}/build-logs[?follow=true]`.
pub async fn snapshot_logs(
    State(ctx): State<Ctx>,
    DPath(name): DPath<String>,
    RawQuery(query): RawQuery,
) -> DResult<Response> {
    let (_, build) = snapshot_build(&ctx, &name).await?;
    Ok(text_log(ctx, build.id, follows(query.as_deref())))
}

/// `GET /sandbox/{idOrName}/build-logs[?follow=true]`.
pub async fn sandbox_logs(
    State(ctx): State<Ctx>,
    DPath(id): DPath<String>,
    RawQuery(query): RawQuery,
) -> DResult<Response> {
    let (_, build) = sandbox_build(&ctx, &id).await?;
    Ok(text_log(ctx, build.id, follows(query.as_deref())))
}

/// Whether a query asks to follow (`follow=true` or `1`).
fn follows(query: Option<&str>) -> bool {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .any(|(k, v)| k == "follow" && (v == "true" || v == "1"))
}

/// Log entries as text lines.
fn lines(entries: &[BuildLogEntry]) -> Bytes {
    let mut text = String::new();
    for e in entries {
        text.push_str(&e.message);
        text.push('\n');
    }
    Bytes::from(text)
}

/// Build `id`'s log as plain text: what there is, or with `follow` everything until it ends.
fn text_log(ctx: Ctx, id: String, follow: bool) -> Response {
    let chunks = futures::stream::unfold(Some(0usize), move |offset| {
        let (ctx, id) = (ctx.clone(), id.clone());
        async move {
            let mut offset = offset?;
            loop {
                let page = match ctx.engine.template_build_logs(&id, offset, PAGE).await {
                    Ok(page) => page,
                    Err(e) => return Some((Bytes::from(format!("error: {e}\n")), None)),
                };
                if !page.entries.is_empty() {
                    return Some((lines(&page.entries), Some(page.next_offset as usize)));
                }
                offset = page.next_offset as usize;
                if !follow || page.build.status != BuildStatus::Building {
                    return None;
                }
                ctx.engine
                    .wait_template_build(&id, offset, FOLLOW_POLL)
                    .await;
            }
        }
    });
    let body = Body::from_stream(futures::StreamExt::map(chunks, Ok::<_, std::io::Error>));
    ([(CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use platinum_engine::builds::model::LogLevel;
    use time::OffsetDateTime;

    #[test]
    fn follow_is_read_from_the_query() {
        assert!(follows(Some("follow=true")));
        assert!(follows(Some("a=b&follow=1")));
        assert!(!follows(Some("follow=false")));
        assert!(!follows(None));
    }

    #[test]
    fn entries_are_text_lines() {
        let entry = |m: &str| BuildLogEntry {
            timestamp: OffsetDateTime::UNIX_EPOCH,
            level: LogLevel::Info,
            message: m.into(),
            step: None,
        };
        assert_eq!(
            lines(&[entry("[1/2] RUN echo hi"), entry("hi")]),
            "[1/2] RUN echo hi\nhi\n"
        );
    }
}
