//! `POST /process/execute` and `POST /process/code-run`: one command or one program, run to
//! completion, stdout and stderr merged in `result`.
//!
//! - execute: the command text is `eval`ed by `bash -l` (passed as an argument, never pasted
//!   into a script), with stderr joined to stdout so `result` keeps their order. A relative `cwd`
//!   resolves against the work directory (the user's home). `timeout` (seconds) kills the
//!   process group and answers 408 `PROCESS_EXECUTION_TIMEOUT`; without one there is no limit.
//!   A command that cannot be started at all is a 200 with exit code -1, as on Daytona.
//! - code-run: stateless; `python3 -u -c <code> <argv...>`, `node -e <code> <argv...>`, or for
//!   TypeScript the code in a temporary file run by `tsx` or `ts-node` when the sandbox has one
//!   (the templates do not ship one; the result then says how to install it).

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::Ctx;
use crate::auth::ToolboxSandbox;
use crate::error::{DJson, DResult, DaytonaError};
use crate::run::{Cmd, run};
use platinum_engine::RunOutput;

/// `ExecuteRequest`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteRequest {
    command: String,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    envs: Option<BTreeMap<String, String>>,
    #[serde(default)]
    timeout: Option<i64>,
}

/// `CodeRunRequest`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeRunRequest {
    code: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    argv: Option<Vec<String>>,
    #[serde(default)]
    envs: Option<BTreeMap<String, String>>,
    #[serde(default)]
    timeout: Option<i64>,
}

/// `timeout` seconds: positive = a limit, 0 or absent = none.
pub fn timeout_of(secs: Option<i64>) -> DResult<Option<Duration>> {
    match secs {
        None | Some(0) => Ok(None),
        Some(s) if s > 0 => Ok(Some(Duration::from_secs(s as u64))),
        Some(_) => Err(DaytonaError::bad_request("timeout must not be negative")),
    }
}

/// Runs `cmd` and renders `{exitCode, result}` the way Daytona's daemon does.
async fn run_merged(ctx: &Ctx, id: &str, cmd: Cmd) -> DResult<Json<Value>> {
    let limit = cmd.timeout;
    let finished: RunOutput = match run(&ctx.engine, id, cmd).await {
        Ok(f) => f,
        Err(e) if e.code() == platinum_engine::ErrorCode::SpawnFailed => {
            return Ok(Json(json!({ "exitCode": -1, "result": e.to_string() })));
        }
        Err(e) => return Err(e.into()),
    };
    if finished.exit.timed_out {
        return Err(DaytonaError::new(
            StatusCode::REQUEST_TIMEOUT,
            "PROCESS_EXECUTION_TIMEOUT",
            format!(
                "command exceeded its timeout of {}s",
                limit.map_or(0, |d| d.as_secs())
            ),
        ));
    }
    let mut result = finished.stdout_text();
    // Normally empty (stderr is joined to stdout); kept in case the program reopened it.
    result.push_str(&finished.stderr_text());
    Ok(Json(
        json!({ "exitCode": finished.exit_code(), "result": result }),
    ))
}

/// `POST /process/execute`.
pub async fn execute(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<ExecuteRequest>,
) -> DResult<Json<Value>> {
    if req.command.trim().is_empty() {
        return Err(DaytonaError::bad_request("command is empty"));
    }
    let envs = req.envs.unwrap_or_default();
    platinum_engine::env::check_env(&envs)?;
    let cmd = Cmd::new([
        "/bin/bash",
        "-l",
        "-c",
        "exec 2>&1\neval \"$1\"",
        "daytona-execute",
        req.command.as_str(),
    ])
    .cwd(req.cwd.filter(|c| !c.is_empty()))
    .envs(envs)
    .timeout(timeout_of(req.timeout)?);
    run_merged(&ctx, &s.id, cmd).await
}

/// The argv that runs `code` in `language`.
pub fn code_argv(language: &str, code: &str, argv: &[String]) -> DResult<Vec<String>> {
    let script = match language {
        "python" => "exec 2>&1\nexec python3 -u -c \"$1\" \"${@:2}\"",
        "javascript" => "exec 2>&1\nexec node -e \"$1\" \"${@:2}\"",
        "typescript" => {
            "exec 2>&1\n\
             f=$(mktemp --suffix=.ts) || exit 1\n\
             printf '%s' \"$1\" > \"$f\"\n\
             if command -v tsx >/dev/null; then tsx \"$f\" \"${@:2}\"\n\
             elif command -v ts-node >/dev/null; then ts-node \"$f\" \"${@:2}\"\n\
             else echo 'TypeScript needs tsx or ts-node in the sandbox (for example: npm install -g tsx)'; false; fi\n\
             rc=$?; rm -f \"$f\"; exit $rc"
        }
        other => {
            return Err(DaytonaError::bad_request(format!(
                "unsupported language {other:?} (python, javascript or typescript)"
            )));
        }
    };
    let mut args = vec![
        "/bin/bash".to_string(),
        "-l".into(),
        "-c".into(),
        script.into(),
        format!("daytona-code-run-{language}"),
        code.to_string(),
    ];
    args.extend(argv.iter().cloned());
    Ok(args)
}

/// `POST /process/code-run` (stateless; the language comes from the sandbox's label).
pub async fn code_run(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<CodeRunRequest>,
) -> DResult<Json<Value>> {
    let envs = req.envs.unwrap_or_default();
    platinum_engine::env::check_env(&envs)?;
    let language = req
        .language
        .or_else(|| s.metadata.get(crate::api::sandbox::LANGUAGE_LABEL).cloned())
        .unwrap_or_else(|| "python".into());
    let argv = code_argv(&language, &req.code, &req.argv.unwrap_or_default())?;
    let cmd = Cmd {
        argv,
        env: envs,
        cwd: None,
        timeout: timeout_of(req.timeout)?,
        stdin: None,
    };
    run_merged(&ctx, &s.id, cmd).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_is_an_argument_never_part_of_the_script() {
        let code = "print('$(rm -rf /)'); \"; exit 3";
        let argv = code_argv("python", code, &["a b".into()]).unwrap();
        assert_eq!(argv[5], code);
        assert_eq!(argv[6], "a b");
        assert!(!argv[3].contains("rm -rf"));
        assert!(code_argv("cobol", "x", &[]).is_err());
    }

    #[test]
    fn timeouts() {
        assert_eq!(timeout_of(None).unwrap(), None);
        assert_eq!(timeout_of(Some(0)).unwrap(), None);
        assert_eq!(timeout_of(Some(5)).unwrap(), Some(Duration::from_secs(5)));
        assert!(timeout_of(Some(-1)).is_err());
    }
}
