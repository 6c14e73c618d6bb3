//! Code contexts: stateful Python and JavaScript interpreters inside a sandbox (what the E2B code
//! interpreter calls `run_code`).
//!
//! A context keeps its variables between runs. Each run streams [`CodeEvent`]s: the execution
//! count, stdout and stderr as they are written, rich results (MIME bundles: `text/plain`,
//! `text/html`, `image/png` from matplotlib figures, ...), and at most one error with name,
//! value and traceback; [`CodeRun::next`] returns `Ok(None)` when the run has finished. A run
//! names a context, or only a language, which uses that language's default context (created on
//! first use, in `/home/user`). Runs of one context queue; dropping a [`CodeRun`] before it
//! finished interrupts the run (SIGINT, like Ctrl-C in a notebook).
//!
//! How contexts are kept alive, and what happens when their process dies, is in
//! [`crate::code`].

use bytes::Bytes;
use platinum_hostagent::guest::GuestClient;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

use crate::code::{self, Contexts, Feed, Kernel, Liveness, Proc};
use crate::commands::exec::{StreamOptions, check_guest_path};
use crate::commands::files::CreateAs;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{ExecRequest, Sandbox};

/// Where kernels are uploaded in the guest.
const DRIVER_DIR: &str = "/usr/local/lib/platinum";
/// Working directory of contexts that name none.
pub const DEFAULT_CODE_CWD: &str = crate::env::DEFAULT_HOME;
/// How long a kernel may take to start (a cold Python start under TCG takes seconds).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Most contexts one sandbox may have.
const MAX_CONTEXTS: usize = 32;
/// Events buffered between a kernel and a slow reader of its run.
const RUN_BUFFER: usize = 64;
const SIGINT: i32 = 2;
const SIGKILL: i32 = 9;

/// A language a context runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodeLanguage {
    /// Python 3 (the sandbox's `python3`).
    Python,
    /// JavaScript (the sandbox's `node`).
    JavaScript,
}

impl CodeLanguage {
    /// Parses a language name: empty or missing is Python; `python`/`python3`/`py` and
    /// `javascript`/`js`/`node`/`nodejs` (any case).
    pub fn parse(name: Option<&str>) -> Result<Self> {
        let name = name
            .map(|n| n.trim().to_ascii_lowercase())
            .unwrap_or_default();
        match name.as_str() {
            "" | "python" | "python3" | "py" => Ok(CodeLanguage::Python),
            "javascript" | "js" | "node" | "nodejs" => Ok(CodeLanguage::JavaScript),
            other => Err(Error::InvalidRequest(format!(
                "language {other:?} is not available; use python or javascript"
            ))),
        }
    }

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            CodeLanguage::Python => "python",
            CodeLanguage::JavaScript => "javascript",
        }
    }
}

/// A code context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeContext {
    /// Context id.
    pub id: String,
    /// Its language.
    pub language: CodeLanguage,
    /// Its working directory.
    pub cwd: String,
}

/// Which context a run uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeTarget {
    /// A context by id.
    Context(String),
    /// The default context of a language.
    Language(CodeLanguage),
}

/// One run of code.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCode {
    /// The code.
    pub code: String,
    /// Where it runs.
    pub target: CodeTarget,
    /// Environment variables set for this run only.
    pub env: BTreeMap<String, String>,
    /// Interrupt the run after this long (`None`: never).
    pub timeout: Option<Duration>,
}

/// A rich result: a MIME bundle (`text/plain` always; binary formats base64).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeResult {
    /// MIME type -> data.
    pub data: serde_json::Map<String, serde_json::Value>,
    /// The value of the code's last expression (others come from `display` or figures).
    pub is_main: bool,
}

/// The error a run ended with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeError {
    /// Exception class, e.g. `ZeroDivisionError`.
    pub name: String,
    /// Its message.
    pub value: String,
    /// The formatted traceback.
    pub traceback: String,
}

/// Something a run produced.
#[derive(Debug, Clone, PartialEq)]
pub enum CodeEvent {
    /// The context's execution counter for this run (first event).
    ExecutionCount(u32),
    /// Text written to stdout.
    Stdout(String),
    /// Text written to stderr.
    Stderr(String),
    /// A rich result.
    Result(CodeResult),
    /// The code raised.
    Error(CodeError),
}

/// A run in progress. Dropping it before it finished interrupts the run.
pub struct CodeRun {
    rx: mpsc::Receiver<Feed>,
    guest: GuestClient,
    pid: u32,
    deadline: Option<(tokio::time::Instant, Duration)>,
    done: bool,
}

impl CodeRun {
    /// The next event; `Ok(None)` once the run has finished. Fails when the kernel or the sandbox
    /// went away before the end, or with `exec_timeout` when the run's timeout fired (the run is
    /// interrupted).
    pub async fn next(&mut self) -> Result<Option<CodeEvent>> {
        if self.done {
            return Ok(None);
        }
        let feed = match self.deadline {
            Some((at, timeout)) => match tokio::time::timeout_at(at, self.rx.recv()).await {
                Ok(feed) => feed,
                Err(_) => {
                    self.done = true;
                    self.interrupt();
                    return Err(Error::ExecTimeout(timeout.as_millis() as u64));
                }
            },
            None => self.rx.recv().await,
        };
        match feed {
            Some(Feed::Event(e)) => Ok(Some(e)),
            Some(Feed::Finished) => {
                self.done = true;
                Ok(None)
            }
            Some(Feed::Failed(e)) => {
                self.done = true;
                Err(e)
            }
            None => {
                self.done = true;
                Err(Error::Internal(
                    "the kernel stopped reporting this run".into(),
                ))
            }
        }
    }

    fn interrupt(&self) {
        let (guest, pid) = (self.guest.clone(), self.pid);
        tokio::spawn(async move {
            if let Err(e) = guest.signal(pid, SIGINT).await {
                tracing::debug!(pid, error = %e, "could not interrupt a kernel");
            }
        });
    }
}

impl Drop for CodeRun {
    fn drop(&mut self) {
        if !self.done {
            tracing::debug!(pid = self.pid, "run abandoned; interrupting it");
            self.interrupt();
        }
    }
}

fn new_context_id() -> String {
    let b: [u8; 16] = rand::rng().random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn driver(language: CodeLanguage) -> (&'static str, String) {
    let (script, ext) = match language {
        CodeLanguage::Python => (code::PYTHON_DRIVER, "py"),
        CodeLanguage::JavaScript => (code::JS_DRIVER, "js"),
    };
    let hash = hex::encode(&Sha256::digest(script.as_bytes())[..6]);
    (script, format!("{DRIVER_DIR}/kernel-{hash}.{ext}"))
}

impl Engine {
    /// The contexts of a running sandbox, loaded from the guest's processes when this server has
    /// not seen this boot of its VM yet.
    async fn code_contexts(
        &self,
        id: &str,
    ) -> Result<(Sandbox, GuestClient, tokio::sync::OwnedMutexGuard<Contexts>)> {
        let (sandbox, guest) = self.running_guest(id).await?;
        let mut contexts = self.code.of(id).lock_owned().await;
        let boot = sandbox.runtime.as_ref().map(|r| r.pid);
        if contexts.boot != boot || boot.is_none() {
            contexts.list.clear();
            for p in self.list_processes(id).await? {
                let Some((ctx, language, default)) = p
                    .tag
                    .as_deref()
                    .filter(|_| p.running)
                    .and_then(code::parse_tag)
                else {
                    continue;
                };
                tracing::info!(sandbox = %id, context = %ctx, pid = p.pid, "found a running kernel");
                let info = CodeContext {
                    id: ctx,
                    language,
                    cwd: p.cwd.clone(),
                };
                contexts
                    .list
                    .push(Kernel::new(info, default, Proc::detached(p.pid)));
            }
            contexts.boot = boot;
        }
        Ok((sandbox, guest, contexts))
    }

    /// Uploads the kernel and starts it; returns once it said `ready`.
    async fn spawn_kernel(&self, id: &str, info: &CodeContext, default: bool) -> Result<Proc> {
        let (script, path) = driver(info.language);
        let body = futures::stream::once(async move {
            Ok::<_, std::convert::Infallible>(Bytes::from_static(script.as_bytes()))
        });
        let how = CreateAs {
            mode: Some(0o644),
            ..CreateAs::user(Some("root".into()))
        };
        self.write_file(id, &path, how, Some(script.len() as u64), body)
            .await?;
        let command = match info.language {
            CodeLanguage::Python => vec!["python3".to_string(), path],
            CodeLanguage::JavaScript => vec![
                "/bin/sh".to_string(),
                "-c".to_string(),
                format!("exec node {path} 3>&1 1>&2"),
            ],
        };
        let req = ExecRequest {
            cwd: Some(info.cwd.clone()),
            user: Some("root".into()),
            ..ExecRequest::argv(command)
        };
        let opts = StreamOptions {
            stdin: true,
            pty: None,
            tag: Some(code::tag(info, default)),
        };
        let mut stream = self.exec_stream(id, req, opts).await?;
        let pid = stream.pid();
        let leftover =
            match tokio::time::timeout(READY_TIMEOUT, code::wait_ready(&mut stream, info.language))
                .await
            {
                Ok(Ok(leftover)) => leftover,
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    let _ = self.signal_process(id, pid, SIGKILL).await;
                    return Err(Error::Internal(format!(
                        "the {} kernel did not start within {}s",
                        info.language.as_str(),
                        READY_TIMEOUT.as_secs()
                    )));
                }
            };
        tracing::info!(sandbox = %id, context = %info.id, language = info.language.as_str(), pid, "kernel started");
        let shared = Arc::new(code::Shared::default());
        let stdin = stream.stdin();
        code::spawn_pump(
            stream,
            leftover,
            shared.clone(),
            format!("{id}/{}", info.id),
        );
        Ok(Proc {
            pid,
            stdin: Some(stdin),
            shared,
        })
    }

    /// Makes sure the kernel can take a cell: re-attaches to a detached process, starts a new
    /// one for a dead context.
    async fn ensure_kernel(&self, id: &str, kernel: &Kernel, proc: &mut Proc) -> Result<()> {
        match proc.liveness() {
            Liveness::Alive if proc.stdin.is_some() => return Ok(()),
            Liveness::Alive | Liveness::Detached => match self.attach(id, proc.pid, false).await {
                Ok(stream) => {
                    tracing::info!(sandbox = %id, context = %kernel.info.id, pid = proc.pid, "re-attached to a kernel");
                    let shared = Arc::new(code::Shared::default());
                    let stdin = stream.stdin();
                    let label = format!("{id}/{}", kernel.info.id);
                    code::spawn_pump(stream, Default::default(), shared.clone(), label);
                    *proc = Proc {
                        pid: proc.pid,
                        stdin: Some(stdin),
                        shared,
                    };
                    return Ok(());
                }
                Err(e) => {
                    tracing::info!(sandbox = %id, context = %kernel.info.id, error = %e, "kernel is gone; starting a new one");
                }
            },
            Liveness::Dead => {
                tracing::info!(sandbox = %id, context = %kernel.info.id, "kernel died; starting a new one");
            }
        }
        *proc = self.spawn_kernel(id, &kernel.info, kernel.default).await?;
        Ok(())
    }

    /// Creates a context.
    pub async fn create_code_context(
        &self,
        id: &str,
        language: CodeLanguage,
        cwd: Option<String>,
    ) -> Result<CodeContext> {
        let cwd = cwd
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| DEFAULT_CODE_CWD.into());
        check_guest_path(&cwd)?;
        let (_, _, mut contexts) = self.code_contexts(id).await?;
        if contexts.list.len() >= MAX_CONTEXTS {
            return Err(Error::CapacityExhausted(format!(
                "a sandbox has at most {MAX_CONTEXTS} code contexts"
            )));
        }
        let info = CodeContext {
            id: new_context_id(),
            language,
            cwd,
        };
        let proc = self.spawn_kernel(id, &info, false).await?;
        contexts.list.push(Kernel::new(info.clone(), false, proc));
        Ok(info)
    }

    /// The default context of a language (created on first use).
    pub async fn default_code_context(
        &self,
        id: &str,
        language: CodeLanguage,
    ) -> Result<CodeContext> {
        Ok(self.default_kernel(id, language).await?.info.clone())
    }

    async fn default_kernel(&self, id: &str, language: CodeLanguage) -> Result<Arc<Kernel>> {
        let (_, _, mut contexts) = self.code_contexts(id).await?;
        if let Some(k) = contexts.default_for(language) {
            return Ok(k);
        }
        let info = CodeContext {
            id: new_context_id(),
            language,
            cwd: DEFAULT_CODE_CWD.into(),
        };
        let proc = self.spawn_kernel(id, &info, true).await?;
        let kernel = Kernel::new(info, true, proc);
        contexts.list.push(kernel.clone());
        Ok(kernel)
    }

    /// The sandbox's contexts, oldest first.
    pub async fn list_code_contexts(&self, id: &str) -> Result<Vec<CodeContext>> {
        let (_, _, contexts) = self.code_contexts(id).await?;
        Ok(contexts.list.iter().map(|k| k.info.clone()).collect())
    }

    /// Restarts a context: its process is killed (a running cell fails) and a fresh one starts,
    /// with an empty namespace.
    pub async fn restart_code_context(&self, id: &str, context: &str) -> Result<CodeContext> {
        let (_, guest, contexts) = self.code_contexts(id).await?;
        let kernel = contexts
            .get(context)
            .ok_or_else(|| Error::CodeContextNotFound(context.to_string()))?;
        let mut proc = kernel.proc.lock().await;
        if proc.liveness() != Liveness::Dead
            && let Err(e) = guest.signal(proc.pid, SIGKILL).await
        {
            tracing::debug!(pid = proc.pid, error = %e, "kernel was already gone");
        }
        *proc = self.spawn_kernel(id, &kernel.info, kernel.default).await?;
        Ok(kernel.info.clone())
    }

    /// Removes a context and ends its process.
    pub async fn remove_code_context(&self, id: &str, context: &str) -> Result<()> {
        let (_, guest, mut contexts) = self.code_contexts(id).await?;
        let at = contexts
            .list
            .iter()
            .position(|k| k.info.id == context)
            .ok_or_else(|| Error::CodeContextNotFound(context.to_string()))?;
        let kernel = contexts.list.remove(at);
        let pid = kernel.proc.lock().await.pid;
        if let Err(e) = guest.signal(pid, SIGKILL).await {
            tracing::debug!(pid, error = %e, "kernel was already gone");
        }
        Ok(())
    }

    /// Runs code in a context. Returns once the code was handed to the kernel (after any run
    /// queued before it on the same context).
    pub async fn run_code(&self, id: &str, req: RunCode) -> Result<CodeRun> {
        let kernel = match &req.target {
            CodeTarget::Language(language) => self.default_kernel(id, *language).await?,
            CodeTarget::Context(context) => {
                let (_, _, contexts) = self.code_contexts(id).await?;
                contexts
                    .get(context)
                    .ok_or_else(|| Error::CodeContextNotFound(context.clone()))?
            }
        };
        let (_, guest) = self.running_guest(id).await?;
        let slot = kernel
            .slot
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("the context's cell slot is closed".into()))?;
        let mut proc = kernel.proc.lock().await;
        self.ensure_kernel(id, &kernel, &mut proc).await?;
        let cell = new_context_id();
        let (tx, rx) = mpsc::channel(RUN_BUFFER);
        proc.shared.begin(cell.clone(), tx, slot);
        let mut line = serde_json::to_vec(&serde_json::json!({
            "id": cell,
            "code": req.code,
            "env": req.env,
        }))
        .map_err(|e| Error::Internal(format!("encoding a cell: {e}")))?;
        line.push(b'\n');
        let stdin = proc
            .stdin
            .clone()
            .ok_or_else(|| Error::Internal("the kernel has no input".into()))?;
        if let Err(e) = stdin.write(&line).await {
            proc.shared.abandon();
            return Err(e);
        }
        tracing::debug!(sandbox = %id, context = %kernel.info.id, cell = %cell, "cell sent");
        Ok(CodeRun {
            rx,
            guest,
            pid: proc.pid,
            deadline: req.timeout.map(|t| (tokio::time::Instant::now() + t, t)),
            done: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn languages_parse_with_aliases() {
        assert_eq!(CodeLanguage::parse(None).unwrap(), CodeLanguage::Python);
        assert_eq!(
            CodeLanguage::parse(Some(" JS ")).unwrap(),
            CodeLanguage::JavaScript
        );
        assert_eq!(
            CodeLanguage::parse(Some("python3")).unwrap(),
            CodeLanguage::Python
        );
        assert_eq!(
            CodeLanguage::parse(Some("cobol")).unwrap_err().code(),
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn drivers_are_named_by_content() {
        let (_, py) = driver(CodeLanguage::Python);
        let (_, js) = driver(CodeLanguage::JavaScript);
        assert!(py.starts_with(DRIVER_DIR) && py.ends_with(".py"), "{py}");
        assert!(js.ends_with(".js"), "{js}");
        assert_ne!(py, js);
        let id = new_context_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }
}
