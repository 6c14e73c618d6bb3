//! Small toolbox endpoints: directories, version, metrics, listening ports, and clear refusals
//! for the daemon features Platinum does not have (computer use, live env changes).

use axum::Json;
use axum::extract::{Extension, Request, State};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Ctx;
use crate::auth::ToolboxSandbox;
use crate::error::{DPath, DResult, DaytonaError};
use crate::run::{Cmd, run};

async fn dir_of(ctx: &Ctx, id: &str, argv: &[&str]) -> DResult<Json<Value>> {
    let out = run(&ctx.engine, id, Cmd::new(argv.iter().copied())).await?;
    if out.exit_code() != 0 {
        return Err(DaytonaError::internal(format!(
            "could not read the directory: {}",
            out.stderr_text().trim()
        )));
    }
    Ok(Json(
        json!({ "dir": out.stdout_text().trim_end_matches('\n') }),
    ))
}

/// `GET /user-home-dir` → `{dir}`.
pub async fn user_home_dir(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
) -> DResult<Json<Value>> {
    dir_of(&ctx, &s.id, &["/bin/sh", "-c", "printf '%s\\n' \"$HOME\""]).await
}

/// `GET /work-dir` → `{dir}`: where relative paths and commands start (the user's home).
pub async fn work_dir(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
) -> DResult<Json<Value>> {
    dir_of(&ctx, &s.id, &["/bin/pwd"]).await
}

/// `GET /version`.
pub async fn version() -> Json<Value> {
    Json(json!({ "version": format!("platinum-{}", env!("CARGO_PKG_VERSION")) }))
}

/// `GET /system/metrics`.
pub async fn metrics(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
) -> DResult<Json<Value>> {
    let m = ctx.engine.sandbox_metrics(&s.id).await?;
    let now = OffsetDateTime::now_utc();
    Ok(Json(json!({
        "cpuCount": m.cpu_count,
        "cpuUsedPct": m.cpu_used_pct,
        "memTotal": m.mem_total,
        "memUsed": m.mem_used,
        "memCache": m.mem_cache,
        "diskTotal": m.disk_total,
        "diskUsed": m.disk_used,
        "diskFree": m.disk_total.saturating_sub(m.disk_used),
        "timestamp": now.format(&Rfc3339).unwrap_or_default(),
        "timestampUnix": now.unix_timestamp(),
    })))
}

/// `GET /port` → `{ports}`.
pub async fn ports(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
) -> DResult<Json<Value>> {
    Ok(Json(
        json!({ "ports": ctx.engine.listening_ports(&s.id).await? }),
    ))
}

/// `GET /port/{port}/in-use` → `{isInUse}`.
pub async fn port_in_use(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DPath((_, port)): DPath<(String, u16)>,
) -> DResult<Json<Value>> {
    let in_use = ctx.engine.listening_ports(&s.id).await?.contains(&port);
    Ok(Json(json!({ "isInUse": in_use })))
}

/// Daemon features Platinum does not have: a clear 501 naming the feature.
pub async fn unsupported(req: Request) -> DaytonaError {
    let path = req.uri().path();
    let feature = path.split('/').nth(3).unwrap_or_default();
    let what = match feature {
        "computeruse" => "computer use (desktop, mouse, keyboard, screenshots)",
        "env" | "init" => "changing the sandbox environment after create",
        _ => "this toolbox feature",
    };
    DaytonaError::unsupported(format!("{what} is not supported by Platinum"))
}
