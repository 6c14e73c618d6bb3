//! Test support: a real Platinum server in a temporary data directory, an authenticated HTTP
//! client for it, and cleanup that cannot leak VMs.
//!
//! [`TestServer`] boots the real stack (SQLite store, QEMU driver, guest images from the shared
//! cache) on a free port. When it is dropped — also when a test panics — every VMM process
//! started for its data directory is killed (found through `/proc`, so this works even if the
//! server task is wedged) and, if the test failed, each sandbox's console tail is printed. Set
//! `PLATINUM_TEST_KEEP=1` to keep the data directory for inspection.

pub mod netns;
pub mod registry;
pub mod s3;
pub mod up;

use anyhow::{Context, Result, bail};
use platinum::server::{RunningServer, Server, ServerConfig};
use platinum_engine::EngineConfig;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A shell command that starts a background process writing an increasing counter to
/// `/tmp/count` every 0.2 s (find it with `pgrep -f 'import[ ]time'`): a process whose survival
/// across a pause, snapshot or archive a test can check.
pub const COUNTER: &str = "nohup python3 -c 'import time\nn = 0\nwhile True:\n    n += 1\n    open(\"/tmp/count.tmp\", \"w\").write(str(n))\n    __import__(\"os\").replace(\"/tmp/count.tmp\", \"/tmp/count\")\n    time.sleep(0.2)\n' >/dev/null 2>&1 &";

/// A running server for one test.
pub struct TestServer {
    server: Option<RunningServer>,
    network: Option<platinum_hostagent::net::NetworkConfig>,
    dir: Option<tempfile::TempDir>,
    /// Base URL.
    pub url: String,
    /// A valid API key.
    pub key: String,
    http: reqwest::Client,
}

/// Engine settings for tests: small VMs, a low upload limit so limits are testable, and every
/// sandbox booted (no template ready snapshots: each test server would otherwise boot one more
/// VM to build its own; `template_snapshots_e2e` and the SDK runs cover that path).
pub fn test_engine_config() -> EngineConfig {
    EngineConfig {
        default_memory_mib: 512,
        max_upload_bytes: 64 << 20,
        template_snapshots: false,
        ..EngineConfig::default()
    }
}

impl TestServer {
    /// Starts a server with [`test_engine_config`].
    pub async fn start() -> Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `tweak` adjusted its config.
    pub async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Result<Self> {
        Self::start_under(&temp_root(), tweak).await
    }

    /// Starts a server whose data directory is in a new directory under `parent` (a
    /// [`ReflinkFs`], say).
    pub async fn start_under(parent: &Path, tweak: impl FnOnce(&mut ServerConfig)) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("platinum-test-")
            .tempdir_in(parent)?;
        Self::start_in(dir, tweak).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> Result<Self> {
        platinum::logging::init("warn", false);
        let agent = platinum::agent_binary::locate(None).map_err(anyhow::Error::msg)?;
        let mut config = ServerConfig::new(dir.path().join("data"), agent);
        config.listen = "127.0.0.1:0".parse()?;
        config.engine = test_engine_config();
        // Tests run several servers at once; networking is opt-in per test (see `test_network`).
        config.network = None;
        tweak(&mut config);
        let network = config.network.clone();
        let server = Server::start(config)
            .await
            .context("starting the test server")?;
        Ok(TestServer {
            network,
            url: server.url(),
            key: server.api_key.clone(),
            server: Some(server),
            dir: Some(dir),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()?,
        })
    }

    /// Shuts the server down gracefully (sandboxes are stopped) and starts a new one on the same
    /// data directory, as a restart of the service would.
    pub async fn restart(self, tweak: impl FnOnce(&mut ServerConfig)) -> Result<Self> {
        self.restart_after(|_| Ok(()), tweak).await
    }

    /// [`TestServer::restart`], with `between` run on the data directory while no server runs.
    pub async fn restart_after(
        mut self,
        between: impl FnOnce(&Path) -> Result<()>,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> Result<Self> {
        if let Some(s) = self.server.take() {
            s.shutdown().await?;
        }
        let dir = self.dir.take().context("test server has no directory")?;
        between(&dir.path().join("data"))?;
        Self::start_in(dir, tweak).await
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().join("data"))
            .unwrap_or_default()
    }

    /// The in-process server.
    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("server is running")
    }

    /// A request with the API key.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.key)
    }

    /// A request without any key.
    pub fn anon(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }

    /// Sends and returns (status, JSON body or `Null`).
    pub async fn call(&self, req: RequestBuilder) -> Result<(u16, Value)> {
        let resp: Response = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// Sends and requires `status`; returns the JSON body.
    pub async fn expect(&self, req: RequestBuilder, status: u16) -> Result<Value> {
        let (got, body) = self.call(req).await?;
        if got != status {
            bail!("expected HTTP {status}, got {got}: {body}");
        }
        Ok(body)
    }

    /// Sends and requires a typed error: HTTP `status` with `code` in the body's `code` field;
    /// returns the body.
    pub async fn expect_error(
        &self,
        req: RequestBuilder,
        status: u16,
        code: &str,
    ) -> Result<Value> {
        let (got, body) = self.call(req).await?;
        if (got, body["code"].as_str()) != (status, Some(code)) {
            bail!("expected HTTP {status} with code {code:?}, got {got}: {body}");
        }
        Ok(body)
    }

    /// Creates a sandbox (`body` is the create request) and returns it.
    pub async fn create(&self, body: Value) -> Result<Value> {
        self.expect(self.req(Method::POST, "/v1/sandboxes").json(&body), 201)
            .await
    }

    /// Runs a shell command that must exit 0 (it panics otherwise, with the result) and returns
    /// its stdout, trimmed.
    pub async fn out(&self, id: &str, command: &str) -> String {
        let r = self.exec(id, command).await.unwrap();
        assert_eq!(r["exit_code"], 0, "{command}: {r}");
        r["stdout"].as_str().unwrap_or_default().trim().to_string()
    }

    /// Runs a shell command and returns the exec result.
    pub async fn exec(&self, id: &str, command: &str) -> Result<Value> {
        self.exec_with(id, serde_json::json!({ "command": command }))
            .await
    }

    /// Runs an exec request (`body`: command, env, cwd, user, stdin, background, ...) and returns
    /// the exec result.
    pub async fn exec_with(&self, id: &str, body: Value) -> Result<Value> {
        self.expect(
            self.req(Method::POST, &sandbox_path(id, "/exec"))
                .json(&body),
            200,
        )
        .await
    }

    /// `POST /v1/sandboxes/{id}/{action}` (`stop`, `start`, `pause`, `resume`), requiring 200;
    /// returns the sandbox.
    pub async fn action(&self, id: &str, action: &str) -> Result<Value> {
        self.expect(
            self.req(Method::POST, &sandbox_path(id, &format!("/{action}"))),
            200,
        )
        .await
    }

    /// Deletes a sandbox, requiring 204.
    pub async fn delete(&self, id: &str) -> Result<()> {
        self.expect(self.req(Method::DELETE, &sandbox_path(id, "")), 204)
            .await
            .map(drop)
    }

    /// Writes a file in a sandbox (`PUT /files`), requiring 200; returns the file's entry.
    pub async fn write_file(
        &self,
        id: &str,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> Result<Value> {
        self.expect(
            self.req(Method::PUT, &sandbox_path(id, "/files"))
                .query(&[("path", path)])
                .body(body),
            200,
        )
        .await
    }

    /// Reads a file from a sandbox (`GET /files`), requiring 200; returns its bytes.
    pub async fn read_file(&self, id: &str, path: &str) -> Result<Vec<u8>> {
        let resp = self
            .req(Method::GET, &sandbox_path(id, "/files"))
            .query(&[("path", path)])
            .send()
            .await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status != 200 {
            bail!(
                "reading {path}: expected HTTP 200, got {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(bytes.to_vec())
    }

    /// Polls `GET /v1/sandboxes/{id}` until `pred` holds or `timeout` passes.
    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let until = Instant::now() + timeout;
        loop {
            let (_, s) = self
                .call(self.req(Method::GET, &sandbox_path(id, "")))
                .await?;
            if pred(&s) {
                return Ok(s);
            }
            if Instant::now() > until {
                bail!("sandbox {id} did not reach the expected state in {timeout:?}; last: {s}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let Some(dir) = self.dir.as_ref() else { return };
        let root = dir.path().to_path_buf();
        if std::thread::panicking() {
            dump_consoles(&root.join("data/sandboxes"));
        }
        kill_processes_under(&root);
        unmount_beneath(&root);
        if let Some(net) = &self.network {
            remove_network(net);
        }
        if std::env::var_os("PLATINUM_TEST_KEEP").is_some()
            && let Some(d) = self.dir.take()
        {
            eprintln!("keeping test data in {}", d.keep().display());
        }
    }
}

/// A scratch XFS filesystem with reflinks (`mkfs.xfs -m reflink=1` on a sparse image, loop
/// mounted), for what reflinks make fast when the test machine's own filesystem has none.
/// Needs root, a loop device and xfsprogs (`platinum.sh` installs it). Unmounted and its image
/// removed on drop; drop every [`TestServer`] in it first.
pub struct ReflinkFs {
    mount: Option<tempfile::TempDir>,
    image: PathBuf,
}

impl ReflinkFs {
    /// Makes and mounts a filesystem of `gib` GiB (sparse: it takes only what is written).
    pub fn create(gib: u64) -> Result<Self> {
        let root = temp_root();
        let image = tempfile::Builder::new()
            .prefix("platinum-xfs-")
            .suffix(".img")
            .tempfile_in(&root)?
            .into_temp_path()
            .keep()?;
        // From here on, dropping `fs` removes the image (and unmounts once mounted).
        let mut fs = ReflinkFs { mount: None, image };
        std::fs::OpenOptions::new()
            .write(true)
            .open(&fs.image)?
            .set_len(gib << 30)?;
        run(
            "mkfs.xfs",
            &[
                "-q".as_ref(),
                "-f".as_ref(),
                "-m".as_ref(),
                "reflink=1".as_ref(),
                fs.image.as_os_str(),
            ],
        )?;
        let mount = tempfile::Builder::new()
            .prefix("pt-xfs-")
            .tempdir_in(&root)?;
        run(
            "mount",
            &[
                "-o".as_ref(),
                "loop".as_ref(),
                "-t".as_ref(),
                "xfs".as_ref(),
                fs.image.as_os_str(),
                mount.path().as_os_str(),
            ],
        )?;
        fs.mount = Some(mount);
        Ok(fs)
    }

    /// The mounted filesystem's root.
    pub fn path(&self) -> &Path {
        self.mount
            .as_ref()
            .map_or(Path::new("/nonexistent"), |m| m.path())
    }
}

impl Drop for ReflinkFs {
    fn drop(&mut self) {
        if let Some(mount) = self.mount.take() {
            kill_processes_under(mount.path());
            // Killed VMMs take a moment to close their files.
            let unmounted = (0..30).any(|_| {
                let done = std::process::Command::new("umount")
                    .arg(mount.path())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !done {
                    std::thread::sleep(Duration::from_millis(100));
                }
                done
            });
            if !unmounted {
                // Busy (a process still closing files): detach now, the kernel finishes later.
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(mount.path())
                    .status();
            }
            drop(mount);
        }
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Runs `program args`, failing with its stderr.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Sends the request `req` builds until it answers 200 (a service in a sandbox coming up),
/// polling for at most `timeout`; returns the body. Fails with the last status after that.
pub async fn poll_until_ok(req: impl Fn() -> RequestBuilder, timeout: Duration) -> Result<String> {
    let until = Instant::now() + timeout;
    loop {
        let resp = req().send().await?;
        if resp.status() == 200 {
            return Ok(resp.text().await?);
        }
        if Instant::now() > until {
            bail!("the service never answered: {}", resp.status());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The `id` of a JSON object (a created sandbox, volume, ...).
pub fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// The native API path of a sandbox: `/v1/sandboxes/{id}{rest}`.
pub fn sandbox_path(id: &str, rest: &str) -> String {
    format!("/v1/sandboxes/{id}{rest}")
}

/// A sandbox network of its own for one test server: a unique bridge and /16, removed again
/// when the server is dropped.
///
/// The /16 is one of 10.100-199.x.x that no interface has an address in yet: test servers of
/// other binaries run beside this one's (`platinum.sh test` runs the SDK conformance beside the
/// other tests), and two bridges with one subnet would take each other's routes.
pub fn test_network() -> platinum_hostagent::net::NetworkConfig {
    let n = std::process::id() as u16
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0) as u16);
    let in_use = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let free = (0..100u16)
        .map(|k| n.wrapping_add(k))
        .find(|m| !in_use.contains(&format!(" 10.{}.", 100 + m % 100)))
        .unwrap_or(n);
    platinum_hostagent::net::NetworkConfig {
        bridge: format!("ptt{:04x}", free),
        subnet: std::net::Ipv4Addr::new(10, 100 + (free % 100) as u8, 0, 0),
        prefix: 16,
        ..platinum_hostagent::net::NetworkConfig::default()
    }
}

/// Deletes a test network's TAPs, bridge and firewall table (synchronously; used from `Drop`).
pub fn remove_network(net: &platinum_hostagent::net::NetworkConfig) {
    let run =
        |args: &[&str], program: &str| std::process::Command::new(program).args(args).output();
    if let Ok(out) = run(&["-o", "link", "show", "master", &net.bridge], "ip") {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(name) = line
                .split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            {
                let _ = run(&["link", "delete", "dev", &name], "ip");
            }
        }
    }
    let _ = run(&["link", "delete", "dev", &net.bridge], "ip");
    let table = platinum_hostagent::net::firewall::table(&net.bridge);
    let _ = run(&["delete", "table", "inet", &table], "nft");
    let _ = run(&["delete", "table", "bridge", &table], "nft");
}

/// Where test data directories go (`$PLATINUM_TEST_TMP`, else the system temp dir). Socket paths
/// must fit in 108 bytes, so keep this short.
pub fn temp_root() -> PathBuf {
    std::env::var_os("PLATINUM_TEST_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The `platinum` binary of this build, for tests in any crate of the workspace:
/// `target/<profile>/deps/<test binary>` -> `target/<profile>/platinum`. Panics (asking for a
/// `cargo build`) when it has not been built.
pub fn platinum_bin() -> PathBuf {
    let bin = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("platinum")))
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace (`cargo build`) before running this test",
        bin.display()
    );
    bin
}

/// The pinned MCP and OpenAPI clients (Python MCP SDK, openapi-spec-validator, MCP Inspector,
/// Redocly CLI, skills, Node 22), installed by `evals/mcp/setup.sh` on first use in this process
/// (the script returns at once when the install is current). Returns their root,
/// `~/.cache/platinum/sdk/mcp`: `py/bin/...` and `npm/node_modules/.bin/...`. Panics with the
/// script's output when it fails.
pub fn agent_clients() -> PathBuf {
    static SETUP: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    let done = SETUP.get_or_init(|| {
        let out = std::process::Command::new("bash")
            .arg(repo_root().join("evals/mcp/setup.sh"))
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    });
    if let Err(e) = done {
        panic!("evals/mcp/setup.sh failed (it installs pinned clients from PyPI and npm):\n{e}");
    }
    std::env::var_os("PLATINUM_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/platinum")
        })
        .join("sdk/mcp")
}

/// Names of the interfaces (TAPs) attached to `bridge`.
pub fn taps_on(bridge: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .collect()
}

/// Pids of processes whose command line mentions `path`.
pub fn processes_mentioning(path: &Path) -> Vec<i32> {
    platinum_hostagent::process::processes_mentioning(path)
}

/// The processes whose command line mentions `path`, with their names (`/proc/<pid>/comm`:
/// `qemu-system-x86`, `virtiofsd`, `vhost-device-vs`, ...), sorted by name.
pub fn named_processes_mentioning(path: &Path) -> Vec<(String, i32)> {
    let mut named: Vec<(String, i32)> = processes_mentioning(path)
        .into_iter()
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            (comm.trim().to_string(), pid)
        })
        .collect();
    named.sort();
    named
}

fn kill_processes_under(root: &Path) {
    platinum_hostagent::process::kill_processes_mentioning(root);
}

/// Detaches every mount beneath `root` (deepest first): the shares a server left mounted for
/// its sandboxes, so removing a test's directory frees their images and loop devices.
pub fn unmount_beneath(root: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(unescape_mount_point(point)))
        .filter(|point| point.starts_with(root) && point != root)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A mount point as the kernel writes it in `mountinfo` (space, tab, newline and backslash as
/// octal escapes) back to its bytes.
fn unescape_mount_point(point: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let bytes = point.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

fn dump_consoles(sandboxes: &Path) {
    let Ok(entries) = std::fs::read_dir(sandboxes) else {
        return;
    };
    for e in entries.flatten() {
        let log = e.path().join("console.log");
        let tail = platinum_hostagent::console::tail(&log, 40).unwrap_or_default();
        eprintln!(
            "--- console of sandbox {} ---\n{tail}",
            e.file_name().to_string_lossy()
        );
    }
}
