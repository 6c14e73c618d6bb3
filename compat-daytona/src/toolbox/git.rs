//! `/git/...`: Daytona's git API, each operation one `git` run in the sandbox (the templates ship
//! git) as the sandbox user.
//!
//! Commands are argv vectors: repository paths, branch names, messages, URLs and file lists are
//! single arguments, placed after `--` where git takes options, so nothing a caller sends is
//! parsed by a shell or read as an option.
//!
//! Credentials: the `username`/`password` of a clone, pull or push are never in argv and Platinum
//! writes them nowhere. They go into that one git run's environment (`PLATINUM_GIT_USERNAME`,
//! username `git` when only a password is given; `PLATINUM_GIT_PASSWORD`, empty when only a
//! username is given), read by a fixed inline helper (`-c credential.helper=…`, answering `get`
//! only). Git asks configured helpers before that inline one, and after a successful
//! authentication offers the credential to every helper to store. So once
//! `POST /git/credentials` has configured git's `store` helper for the sandbox user, a stored
//! credential for the same host wins over the request's, and a request's credential that works
//! is saved in plain text in `~/.git-credentials` too. `POST /git/credentials` itself stores its
//! credential there (see [`credentials`]). Prompts are disabled (`GIT_TERMINAL_PROMPT=0`), so a
//! missing credential fails at once instead of hanging.
//!
//! Failures are classified from git's message into Daytona's git error codes
//! (`GIT_AUTH_FAILED`, `GIT_REPO_NOT_FOUND`, `GIT_BRANCH_NOT_FOUND`, `GIT_BRANCH_EXISTS`,
//! `GIT_PUSH_REJECTED`, `GIT_DIRTY_WORKTREE`, `GIT_MERGE_CONFLICT`, `GIT_TRANSPORT_FAILED`,
//! `GIT_REMOTE_REJECTED`), else 400.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

use crate::Ctx;
use crate::auth::ToolboxSandbox;
use crate::error::{DJson, DQuery, DResult, DaytonaError};
use crate::run::{Cmd, run};
use platinum_engine::RunOutput;

/// Answers git's `get` with `PLATINUM_GIT_USERNAME`/`PLATINUM_GIT_PASSWORD` from the environment
/// (no caller input in its text); ignores `store` and `erase`.
const CREDENTIAL_HELPER: &str = "credential.helper=!f() { test \"$1\" = get && \
     printf 'username=%s\\npassword=%s\\n' \"$PLATINUM_GIT_USERNAME\" \"$PLATINUM_GIT_PASSWORD\"; }; f";

/// Classifies a failed git run.
pub fn git_error(stderr: &str) -> DaytonaError {
    let msg = stderr.trim();
    let has = |needles: &[&str]| {
        let lower = msg.to_ascii_lowercase();
        needles
            .iter()
            .any(|n| lower.contains(&n.to_ascii_lowercase()))
    };
    let (status, code) = if has(&[
        "authentication failed",
        "could not read username",
        "could not read password",
        "terminal prompts disabled",
        "invalid username or password",
        "permission denied (publickey)",
    ]) {
        (StatusCode::UNAUTHORIZED, "GIT_AUTH_FAILED")
    } else if has(&["remote rejected", "pre-receive hook declined"]) {
        (StatusCode::UNPROCESSABLE_ENTITY, "GIT_REMOTE_REJECTED")
    } else if has(&["[rejected]", "non-fast-forward", "failed to push some refs"]) {
        (StatusCode::CONFLICT, "GIT_PUSH_REJECTED")
    } else if has(&["already exists"]) && has(&["branch"]) {
        (StatusCode::CONFLICT, "GIT_BRANCH_EXISTS")
    } else if has(&[
        "would be overwritten",
        "please commit your changes or stash them",
    ]) {
        (StatusCode::CONFLICT, "GIT_DIRTY_WORKTREE")
    } else if has(&["conflict", "unmerged", "fix conflicts"]) {
        (StatusCode::CONFLICT, "GIT_MERGE_CONFLICT")
    } else if has(&[
        "remote branch",
        "did not match any file(s) known to git",
        "invalid reference",
        "not a valid branch name",
        "branch '",
    ]) && has(&[
        "not found",
        "did not match",
        "invalid reference",
        "not a valid",
    ]) {
        (StatusCode::NOT_FOUND, "GIT_BRANCH_NOT_FOUND")
    } else if has(&[
        "repository not found",
        "not a git repository",
        "does not appear to be a git repository",
        "does not exist",
    ]) {
        (StatusCode::NOT_FOUND, "GIT_REPO_NOT_FOUND")
    } else if has(&[
        "could not resolve host",
        "unable to access",
        "connection refused",
        "connection timed out",
        "network is unreachable",
        "could not connect",
        "ssl certificate problem",
        "gnutls",
    ]) {
        (StatusCode::BAD_GATEWAY, "GIT_TRANSPORT_FAILED")
    } else {
        (StatusCode::BAD_REQUEST, "BAD_REQUEST")
    };
    let message = if msg.is_empty() {
        "git failed".to_string()
    } else {
        msg.to_string()
    };
    DaytonaError::new(status, code, message)
}

/// One git invocation.
struct Git {
    args: Vec<String>,
    env: BTreeMap<String, String>,
    stdin: Option<String>,
}

impl Git {
    /// `git -C <repo> ...` (no `-C` when `repo` is `None`).
    fn new(repo: Option<&str>) -> Self {
        let mut args = vec![
            "git".to_string(),
            "-c".into(),
            "core.quotePath=false".into(),
        ];
        if let Some(repo) = repo {
            args.push("-C".into());
            args.push(if repo.is_empty() {
                ".".into()
            } else {
                repo.into()
            });
        }
        let env = BTreeMap::from([
            ("GIT_TERMINAL_PROMPT".to_string(), "0".to_string()),
            ("LC_ALL".to_string(), "C".to_string()),
        ]);
        Git {
            args,
            env,
            stdin: None,
        }
    }

    fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Passes these credentials to this run through its environment and [`CREDENTIAL_HELPER`]
    /// (which goes before the subcommand); nothing when both are `None`. Helpers configured in
    /// the sandbox (e.g. `store`) are asked first and may also store them (see the module doc).
    fn credentials(mut self, username: Option<String>, password: Option<String>) -> Self {
        if username.is_none() && password.is_none() {
            return self;
        }
        let at = if self.args.iter().any(|a| a == "-C") {
            5
        } else {
            3
        };
        self.args.insert(at, "-c".into());
        self.args.insert(at + 1, CREDENTIAL_HELPER.into());
        self.env.insert(
            "PLATINUM_GIT_USERNAME".into(),
            username.unwrap_or_else(|| "git".into()),
        );
        self.env
            .insert("PLATINUM_GIT_PASSWORD".into(), password.unwrap_or_default());
        self
    }

    fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }

    /// Runs; a non-zero exit is a classified error.
    async fn run(self, ctx: &Ctx, id: &str) -> DResult<RunOutput> {
        let cmd = Cmd {
            argv: self.args,
            env: self.env,
            cwd: None,
            timeout: None,
            stdin: self.stdin,
        };
        let out = run(&ctx.engine, id, cmd).await?;
        if out.exit_code() != 0 {
            return Err(git_error(&out.stderr_text()));
        }
        Ok(out)
    }
}

/// A branch or ref name a caller gave: never an option.
fn ref_name(name: &str, what: &str) -> DResult<String> {
    if name.is_empty() || name.starts_with('-') || name.contains('\0') {
        return Err(DaytonaError::bad_request(format!(
            "invalid {what} {name:?}"
        )));
    }
    Ok(name.to_string())
}

/// `?path=`.
#[derive(Debug, Deserialize)]
pub struct RepoQuery {
    path: String,
}

/// `GitCloneRequest`.
#[derive(Debug, Deserialize)]
pub struct CloneRequest {
    url: String,
    path: String,
    branch: Option<String>,
    commit_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    depth: Option<u32>,
    insecure_skip_tls: Option<bool>,
}

/// `POST /git/clone`: 200, no body.
pub async fn clone(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<CloneRequest>,
) -> DResult<StatusCode> {
    let mut git = Git::new(None);
    if req.insecure_skip_tls == Some(true) {
        git = git.arg("-c").arg("http.sslVerify=false");
    }
    git = git.arg("clone");
    if let Some(b) = req.branch.as_deref().filter(|b| !b.is_empty()) {
        git = git.arg("--branch").arg(ref_name(b, "branch")?);
    }
    if let Some(d) = req.depth.filter(|d| *d > 0) {
        git = git.arg(format!("--depth={d}"));
    }
    git.args(["--", req.url.as_str(), req.path.as_str()])
        .credentials(req.username, req.password)
        .run(&ctx, &s.id)
        .await?;
    if let Some(commit) = req.commit_id.as_deref().filter(|c| !c.is_empty()) {
        Git::new(Some(&req.path))
            .args(["checkout", "--detach", &ref_name(commit, "commit")?, "--"])
            .run(&ctx, &s.id)
            .await?;
    }
    tracing::info!(sandbox = %s.id, path = %req.path, "git clone");
    Ok(StatusCode::OK)
}

fn status_name(c: char) -> &'static str {
    match c {
        'M' | 'T' => "Modified",
        'A' => "Added",
        'D' => "Deleted",
        'R' => "Renamed",
        'C' => "Copied",
        'U' => "Updated but unmerged",
        '?' => "Untracked",
        _ => "Unmodified",
    }
}

/// Parses `git status --porcelain=v2 --branch -z`.
pub fn parse_status(out: &str) -> Value {
    let mut branch = String::new();
    let mut upstream: Option<String> = None;
    let (mut ahead, mut behind) = (0i64, 0i64);
    let mut detached = false;
    let mut files = Vec::new();
    let mut items = out.split('\0').filter(|s| !s.is_empty());
    while let Some(item) = items.next() {
        if let Some(h) = item.strip_prefix("# branch.head ") {
            detached = h == "(detached)";
            branch = if detached { "HEAD".into() } else { h.into() };
        } else if let Some(u) = item.strip_prefix("# branch.upstream ") {
            upstream = Some(u.into());
        } else if let Some(ab) = item.strip_prefix("# branch.ab ") {
            let mut it = ab.split(' ');
            ahead = it
                .next()
                .and_then(|a| a.trim_start_matches('+').parse().ok())
                .unwrap_or(0);
            behind = it
                .next()
                .and_then(|b| b.trim_start_matches('-').parse().ok())
                .unwrap_or(0);
        } else if item.starts_with('#') {
            continue;
        } else if let Some(path) = item.strip_prefix("? ") {
            files.push(
                json!({"name": path, "staging": "Untracked", "worktree": "Untracked", "extra": ""}),
            );
        } else {
            let kind = item.chars().next().unwrap_or(' ');
            let fields = match kind {
                '1' => 9,
                '2' => 10,
                'u' => 11,
                _ => continue,
            };
            let parts: Vec<&str> = item.splitn(fields, ' ').collect();
            let (Some(xy), Some(path)) = (parts.get(1), parts.get(fields - 1)) else {
                continue;
            };
            let mut xy = xy.chars();
            let (x, y) = (xy.next().unwrap_or('.'), xy.next().unwrap_or('.'));
            let extra = if kind == '2' {
                items.next().unwrap_or_default()
            } else {
                ""
            };
            files.push(json!({
                "name": path,
                "staging": status_name(x),
                "worktree": status_name(y),
                "extra": extra,
            }));
        }
    }
    json!({
        "currentBranch": branch,
        "fileStatus": files,
        "ahead": ahead,
        "behind": behind,
        "branchPublished": upstream.is_some(),
        "detached": detached,
        "upstream": upstream,
    })
}

/// `GET /git/status?path`.
pub async fn status(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DQuery(q): DQuery<RepoQuery>,
) -> DResult<Json<Value>> {
    let out = Git::new(Some(&q.path))
        .args(["status", "--porcelain=v2", "--branch", "-z"])
        .run(&ctx, &s.id)
        .await?;
    Ok(Json(parse_status(&out.stdout_text())))
}

/// `GET /git/branches?path` → `{branches, current}`.
pub async fn list_branches(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DQuery(q): DQuery<RepoQuery>,
) -> DResult<Json<Value>> {
    let out = Git::new(Some(&q.path))
        .args(["for-each-ref", "--format=%(refname:short)", "refs/heads"])
        .run(&ctx, &s.id)
        .await?;
    let branches: Vec<String> = out.stdout_text().lines().map(str::to_owned).collect();
    // Fails (exit 1) on a detached HEAD, which has no current branch.
    let current = run(
        &ctx.engine,
        &s.id,
        Cmd::new([
            "git",
            "-C",
            q.path.as_str(),
            "symbolic-ref",
            "--short",
            "-q",
            "HEAD",
        ]),
    )
    .await?;
    let current = (current.exit_code() == 0).then(|| current.stdout_text().trim().to_string());
    Ok(Json(json!({ "branches": branches, "current": current })))
}

/// `{path, name}` of branch create/delete.
#[derive(Debug, Deserialize)]
pub struct BranchRequest {
    path: String,
    name: String,
}

/// `POST /git/branches`: 201.
pub async fn create_branch(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<BranchRequest>,
) -> DResult<StatusCode> {
    Git::new(Some(&req.path))
        .args(["branch", "--", &ref_name(&req.name, "branch")?])
        .run(&ctx, &s.id)
        .await?;
    Ok(StatusCode::CREATED)
}

/// `DELETE /git/branches`: 204 (merged or not, like the daemon).
pub async fn delete_branch(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<BranchRequest>,
) -> DResult<StatusCode> {
    Git::new(Some(&req.path))
        .args(["branch", "-D", "--", &ref_name(&req.name, "branch")?])
        .run(&ctx, &s.id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `{path, branch}` of checkout.
#[derive(Debug, Deserialize)]
pub struct CheckoutRequest {
    path: String,
    branch: String,
}

/// `POST /git/checkout`: 200.
pub async fn checkout(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<CheckoutRequest>,
) -> DResult<StatusCode> {
    Git::new(Some(&req.path))
        .args(["checkout", &ref_name(&req.branch, "branch")?, "--"])
        .run(&ctx, &s.id)
        .await?;
    Ok(StatusCode::OK)
}

/// `{path, files}` of add.
#[derive(Debug, Deserialize)]
pub struct AddRequest {
    path: String,
    files: Vec<String>,
}

/// `POST /git/add`: 200.
pub async fn add(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<AddRequest>,
) -> DResult<StatusCode> {
    if req.files.is_empty() {
        return Err(DaytonaError::bad_request("files is empty"));
    }
    Git::new(Some(&req.path))
        .args(["add", "--"])
        .args(req.files)
        .run(&ctx, &s.id)
        .await?;
    Ok(StatusCode::OK)
}

/// `GitCommitRequest`.
#[derive(Debug, Deserialize)]
pub struct CommitRequest {
    path: String,
    message: String,
    author: String,
    email: String,
    allow_empty: Option<bool>,
}

/// `POST /git/commit` → `{hash}`.
pub async fn commit(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<CommitRequest>,
) -> DResult<Json<Value>> {
    let mut git = Git::new(Some(&req.path))
        .args(["commit", "-m", req.message.as_str()])
        .env("GIT_AUTHOR_NAME", req.author.as_str())
        .env("GIT_AUTHOR_EMAIL", req.email.as_str())
        .env("GIT_COMMITTER_NAME", req.author.as_str())
        .env("GIT_COMMITTER_EMAIL", req.email.as_str());
    if req.allow_empty == Some(true) {
        git = git.arg("--allow-empty");
    }
    git.run(&ctx, &s.id).await?;
    let head = Git::new(Some(&req.path))
        .args(["rev-parse", "HEAD"])
        .run(&ctx, &s.id)
        .await?;
    Ok(Json(json!({ "hash": head.stdout_text().trim() })))
}

/// `{path, username?, password?, remote?, branch?, set_upstream?}` of pull and push.
#[derive(Debug, Deserialize)]
pub struct RemoteOpRequest {
    path: String,
    username: Option<String>,
    password: Option<String>,
    remote: Option<String>,
    branch: Option<String>,
    set_upstream: Option<bool>,
}

async fn remote_op(ctx: &Ctx, id: &str, op: &str, req: RemoteOpRequest) -> DResult<StatusCode> {
    let mut git = Git::new(Some(&req.path)).arg(op);
    if op == "push" && req.set_upstream == Some(true) {
        git = git.arg("--set-upstream");
    }
    let remote = req.remote.as_deref().filter(|r| !r.is_empty());
    let branch = req.branch.as_deref().filter(|b| !b.is_empty());
    match (remote, branch) {
        (Some(r), Some(b)) => git = git.args([ref_name(r, "remote")?, ref_name(b, "branch")?]),
        (Some(r), None) => git = git.arg(ref_name(r, "remote")?),
        (None, Some(b)) => git = git.args(["origin".to_string(), ref_name(b, "branch")?]),
        (None, None) => {}
    }
    git.credentials(req.username, req.password)
        .run(ctx, id)
        .await?;
    Ok(StatusCode::OK)
}

/// `POST /git/pull`: 200.
pub async fn pull(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<RemoteOpRequest>,
) -> DResult<StatusCode> {
    remote_op(&ctx, &s.id, "pull", req).await
}

/// `POST /git/push`: 200.
pub async fn push(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<RemoteOpRequest>,
) -> DResult<StatusCode> {
    remote_op(&ctx, &s.id, "push", req).await
}

/// `GET /git/history?path` → `[{hash, author, email, message, timestamp}]`, newest first.
pub async fn history(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DQuery(q): DQuery<RepoQuery>,
) -> DResult<Json<Value>> {
    let out = run(
        &ctx.engine,
        &s.id,
        Cmd::new([
            "git",
            "-C",
            q.path.as_str(),
            "log",
            "--format=%H%x1f%an%x1f%ae%x1f%B%x1f%aI%x1e",
        ])
        .envs([("LC_ALL".to_string(), "C".to_string())].into()),
    )
    .await?;
    if out.exit_code() != 0 {
        let err = out.stderr_text();
        // A repository without commits has no history rather than an error.
        if err.contains("does not have any commits") {
            return Ok(Json(json!([])));
        }
        return Err(git_error(&err));
    }
    let commits: Vec<Value> = out
        .stdout_text()
        .split('\x1e')
        .map(|r| r.trim_start_matches('\n'))
        .filter(|r| !r.is_empty())
        .filter_map(|r| {
            let f: Vec<&str> = r.split('\x1f').collect();
            (f.len() == 5).then(|| {
                json!({
                    "hash": f[0], "author": f[1], "email": f[2],
                    "message": f[3].trim_end(), "timestamp": f[4],
                })
            })
        })
        .collect();
    Ok(Json(Value::Array(commits)))
}

/// `{path, bare?, initial_branch?}` of init.
#[derive(Debug, Deserialize)]
pub struct InitRequest {
    path: String,
    bare: Option<bool>,
    initial_branch: Option<String>,
}

/// `POST /git/init`: 201.
pub async fn init(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<InitRequest>,
) -> DResult<StatusCode> {
    let mut git = Git::new(None).arg("init").arg("-q");
    if req.bare == Some(true) {
        git = git.arg("--bare");
    }
    if let Some(b) = req.initial_branch.as_deref().filter(|b| !b.is_empty()) {
        git = git.arg(format!("--initial-branch={}", ref_name(b, "branch")?));
    }
    git.args(["--", req.path.as_str()]).run(&ctx, &s.id).await?;
    Ok(StatusCode::CREATED)
}

/// `GET /git/remotes?path` → `{remotes: [{name, url}]}` (fetch URLs).
pub async fn list_remotes(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DQuery(q): DQuery<RepoQuery>,
) -> DResult<Json<Value>> {
    let out = Git::new(Some(&q.path))
        .args(["remote", "-v"])
        .run(&ctx, &s.id)
        .await?;
    let remotes: Vec<Value> = out
        .stdout_text()
        .lines()
        .filter(|l| l.ends_with("(fetch)"))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some(json!({ "name": it.next()?, "url": it.next()? }))
        })
        .collect();
    Ok(Json(json!({ "remotes": remotes })))
}

/// `{path, name, url, fetch?, overwrite?}` of remote add.
#[derive(Debug, Deserialize)]
pub struct RemoteAddRequest {
    path: String,
    name: String,
    url: String,
    fetch: Option<bool>,
    overwrite: Option<bool>,
}

/// `POST /git/remotes`: 201.
pub async fn add_remote(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<RemoteAddRequest>,
) -> DResult<StatusCode> {
    let name = ref_name(&req.name, "remote")?;
    let result = Git::new(Some(&req.path))
        .args(["remote", "add", "--", name.as_str(), req.url.as_str()])
        .run(&ctx, &s.id)
        .await;
    match result {
        Ok(_) => {}
        Err(e) if req.overwrite == Some(true) && e.message.contains("already exists") => {
            Git::new(Some(&req.path))
                .args(["remote", "set-url", "--", name.as_str(), req.url.as_str()])
                .run(&ctx, &s.id)
                .await?;
        }
        Err(e) => return Err(e),
    }
    if req.fetch == Some(true) {
        Git::new(Some(&req.path))
            .args(["fetch", "--", name.as_str()])
            .run(&ctx, &s.id)
            .await?;
    }
    Ok(StatusCode::CREATED)
}

/// `{path, mode?, target?, files?}` of reset.
#[derive(Debug, Deserialize)]
pub struct ResetRequest {
    path: String,
    mode: Option<String>,
    target: Option<String>,
    files: Option<Vec<String>>,
}

/// `POST /git/reset`: 200.
pub async fn reset(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<ResetRequest>,
) -> DResult<StatusCode> {
    let mut git = Git::new(Some(&req.path)).arg("reset");
    let files = req.files.unwrap_or_default();
    if let Some(mode) = req.mode.as_deref().filter(|m| !m.is_empty()) {
        if !files.is_empty() {
            return Err(DaytonaError::bad_request(
                "a reset mode cannot be used with files",
            ));
        }
        match mode {
            "soft" | "mixed" | "hard" | "merge" | "keep" => git = git.arg(format!("--{mode}")),
            other => {
                return Err(DaytonaError::bad_request(format!(
                    "unknown reset mode {other:?}"
                )));
            }
        }
    }
    if let Some(t) = req.target.as_deref().filter(|t| !t.is_empty()) {
        git = git.arg(ref_name(t, "target")?);
    }
    if !files.is_empty() {
        git = git.arg("--").args(files);
    }
    git.run(&ctx, &s.id).await?;
    Ok(StatusCode::OK)
}

/// `{path, files, staged?, worktree?, source?}` of restore.
#[derive(Debug, Deserialize)]
pub struct RestoreRequest {
    path: String,
    files: Vec<String>,
    staged: Option<bool>,
    worktree: Option<bool>,
    source: Option<String>,
}

/// `POST /git/restore`: 200.
pub async fn restore(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<RestoreRequest>,
) -> DResult<StatusCode> {
    if req.files.is_empty() {
        return Err(DaytonaError::bad_request("files is empty"));
    }
    let mut git = Git::new(Some(&req.path)).arg("restore");
    if req.staged == Some(true) {
        git = git.arg("--staged");
    }
    if req.worktree == Some(true) {
        git = git.arg("--worktree");
    }
    if let Some(src) = req.source.as_deref().filter(|s| !s.is_empty()) {
        git = git.arg(format!("--source={}", ref_name(src, "source")?));
    }
    git.arg("--").args(req.files).run(&ctx, &s.id).await?;
    Ok(StatusCode::OK)
}

/// Config scope flag.
fn scope_flag(scope: Option<&str>) -> DResult<Option<&'static str>> {
    match scope.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some("local") => Ok(Some("--local")),
        Some("global") => Ok(Some("--global")),
        Some("system") => Ok(Some("--system")),
        Some(other) => Err(DaytonaError::bad_request(format!(
            "unknown scope {other:?}"
        ))),
    }
}

/// `?key&path&scope` of config get.
#[derive(Debug, Deserialize)]
pub struct ConfigQuery {
    key: String,
    path: Option<String>,
    scope: Option<String>,
}

fn config_git(path: Option<&str>, scope: Option<&str>) -> DResult<Git> {
    let flag = scope_flag(scope)?;
    let repo = path.filter(|p| !p.is_empty());
    if repo.is_none() && flag == Some("--local") {
        return Err(DaytonaError::bad_request(
            "local scope needs a repository path",
        ));
    }
    let mut git = Git::new(repo).arg("config");
    if let Some(f) = flag {
        git = git.arg(f);
    } else if repo.is_none() {
        git = git.arg("--global");
    }
    Ok(git)
}

/// `GET /git/config?key&path&scope` → `{value}` (`null` when unset).
pub async fn get_config(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DQuery(q): DQuery<ConfigQuery>,
) -> DResult<Json<Value>> {
    let mut git = config_git(q.path.as_deref(), q.scope.as_deref())?;
    git = git.args(["--get", "--", q.key.as_str()]);
    let out = run(
        &ctx.engine,
        &s.id,
        Cmd {
            argv: git.args,
            env: git.env,
            ..Default::default()
        },
    )
    .await?;
    match out.exit_code() {
        0 => Ok(Json(
            json!({ "value": out.stdout_text().trim_end_matches('\n') }),
        )),
        1 => Ok(Json(json!({ "value": null }))),
        _ => Err(git_error(&out.stderr_text())),
    }
}

/// Sets each `(key, value)` in turn (`git config [scope] -- key value`); the first failure stops.
async fn set_config_values(
    ctx: &Ctx,
    id: &str,
    path: Option<&str>,
    scope: Option<&str>,
    values: &[(&str, &str)],
) -> DResult<StatusCode> {
    for &(key, value) in values {
        config_git(path, scope)?
            .args(["--", key, value])
            .run(ctx, id)
            .await?;
    }
    Ok(StatusCode::OK)
}

/// `{key, value, scope?, path?}` of config set.
#[derive(Debug, Deserialize)]
pub struct ConfigSet {
    key: String,
    value: String,
    scope: Option<String>,
    path: Option<String>,
}

/// `POST /git/config`: 200.
pub async fn set_config(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<ConfigSet>,
) -> DResult<StatusCode> {
    let (path, scope) = (req.path.as_deref(), req.scope.as_deref());
    set_config_values(&ctx, &s.id, path, scope, &[(&req.key, &req.value)]).await
}

/// `{name, email, scope?, path?}` of config user.
#[derive(Debug, Deserialize)]
pub struct ConfigUser {
    name: String,
    email: String,
    scope: Option<String>,
    path: Option<String>,
}

/// `POST /git/config/user`: 200.
pub async fn set_user(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<ConfigUser>,
) -> DResult<StatusCode> {
    let (path, scope) = (req.path.as_deref(), req.scope.as_deref());
    let values = [("user.name", req.name.as_str()), ("user.email", &req.email)];
    set_config_values(&ctx, &s.id, path, scope, &values).await
}

/// `{username, password, host?, protocol?}` of credentials.
#[derive(Debug, Deserialize)]
pub struct CredentialsRequest {
    username: String,
    password: String,
    host: Option<String>,
    protocol: Option<String>,
}

/// `POST /git/credentials`: sets `credential.helper store` in the sandbox user's global git config
/// and approves the credential (protocol default `https`, host default `github.com`), so git
/// writes it in plain text to `~/.git-credentials` (mode 0600). Later clones, pulls and pushes to
/// that host use it, ahead of any credentials given with the request (see the module doc).
pub async fn credentials(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<CredentialsRequest>,
) -> DResult<StatusCode> {
    let clean = |v: &str, what: &str| {
        if v.contains(['\n', '\0']) {
            Err(DaytonaError::bad_request(format!(
                "{what} must be one line"
            )))
        } else {
            Ok(v.to_string())
        }
    };
    let mut input = format!(
        "protocol={}\nhost={}\nusername={}\npassword={}\n\n",
        clean(req.protocol.as_deref().unwrap_or("https"), "protocol")?,
        clean(req.host.as_deref().unwrap_or("github.com"), "host")?,
        clean(&req.username, "username")?,
        clean(&req.password, "password")?,
    );
    Git::new(None)
        .args(["config", "--global", "credential.helper", "store"])
        .run(&ctx, &s.id)
        .await?;
    let mut approve = Git::new(None).args(["credential", "approve"]);
    approve.stdin = Some(std::mem::take(&mut input));
    approve.run(&ctx, &s.id).await?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn porcelain_v2_status_parses() {
        let out = "# branch.oid abc\0# branch.head main\0# branch.upstream origin/main\0# branch.ab +2 -1\0\
                   1 M. N... 100644 100644 100644 aaa bbb src/a file.rs\0\
                   2 R. N... 100644 100644 100644 aaa bbb R100 new.rs\0old.rs\0\
                   1 .D N... 100644 100644 000000 aaa bbb gone.txt\0? untracked.txt\0";
        let v = parse_status(out);
        assert_eq!(v["currentBranch"], "main");
        assert_eq!(
            (v["ahead"].as_i64(), v["behind"].as_i64()),
            (Some(2), Some(1))
        );
        assert_eq!(v["branchPublished"], true);
        let f = v["fileStatus"].as_array().unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(
            f[0],
            json!({"name": "src/a file.rs", "staging": "Modified", "worktree": "Unmodified", "extra": ""})
        );
        assert_eq!(f[1]["staging"], "Renamed");
        assert_eq!(f[1]["extra"], "old.rs");
        assert_eq!(f[2]["worktree"], "Deleted");
        assert_eq!(f[3]["staging"], "Untracked");
        let detached = parse_status("# branch.oid abc\0# branch.head (detached)\0");
        assert_eq!(
            (
                detached["detached"].as_bool(),
                detached["currentBranch"].as_str()
            ),
            (Some(true), Some("HEAD"))
        );
    }

    #[test]
    fn git_messages_map_to_daytona_codes() {
        let cases = [
            (
                "fatal: Authentication failed for 'https://x'",
                "GIT_AUTH_FAILED",
                401,
            ),
            (
                "fatal: could not read Username for 'https://github.com': terminal prompts disabled",
                "GIT_AUTH_FAILED",
                401,
            ),
            (
                "fatal: repository 'https://x/y' not found\nremote: Repository not found.",
                "GIT_REPO_NOT_FOUND",
                404,
            ),
            (
                "fatal: not a git repository (or any of the parent directories): .git",
                "GIT_REPO_NOT_FOUND",
                404,
            ),
            (
                "fatal: Remote branch nope not found in upstream origin",
                "GIT_BRANCH_NOT_FOUND",
                404,
            ),
            (
                "error: pathspec 'nope' did not match any file(s) known to git",
                "GIT_BRANCH_NOT_FOUND",
                404,
            ),
            (
                "fatal: a branch named 'x' already exists",
                "GIT_BRANCH_EXISTS",
                409,
            ),
            (
                " ! [rejected]        main -> main (non-fast-forward)",
                "GIT_PUSH_REJECTED",
                409,
            ),
            (
                "error: Your local changes to the following files would be overwritten by checkout",
                "GIT_DIRTY_WORKTREE",
                409,
            ),
            (
                "fatal: unable to access 'https://x/': Could not resolve host: x",
                "GIT_TRANSPORT_FAILED",
                502,
            ),
            (
                " ! [remote rejected] main -> main (pre-receive hook declined)",
                "GIT_REMOTE_REJECTED",
                422,
            ),
            ("nothing to commit, working tree clean", "BAD_REQUEST", 400),
        ];
        for (msg, code, status) in cases {
            let e = git_error(msg);
            assert_eq!((e.code, e.status.as_u16()), (code, status), "{msg}");
        }
    }

    #[test]
    fn names_never_become_options_and_credentials_stay_out_of_argv() {
        assert!(ref_name("-rf", "branch").is_err());
        assert!(ref_name("feature/x", "branch").is_ok());
        let g = Git::new(Some("repo"))
            .args(["clone", "--", "u", "p"])
            .credentials(Some("me".into()), Some("s3cret".into()));
        assert!(g.args.iter().all(|a| !a.contains("s3cret")));
        assert_eq!(g.args[5], "-c");
        assert!(g.args[6].starts_with("credential.helper="));
        assert_eq!(g.args[7], "clone");
        assert_eq!(g.env["PLATINUM_GIT_PASSWORD"], "s3cret");
    }
}
