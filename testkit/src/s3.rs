//! A real S3-compatible server for tests, on loopback: `s3s-fs` (installed by `platinum.sh test`
//! into `~/.cache/platinum/tools`), keeping each object as a file `<root>/<bucket>/<key>`, so a
//! test can count, corrupt or remove chunks where they lie. It checks SigV4 signatures with the
//! access key it was started with.

use anyhow::{Context, Result, bail};
use platinum_hostagent::archive::{ObjectStoreConfig, S3Config, S3Credentials};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bucket every test store uses.
pub const BUCKET: &str = "platinum-test";
const ACCESS_KEY: &str = "platinum-test-access";
const SECRET_KEY: &str = "platinum-test-secret-key";

/// An `s3s-fs` process; killed when dropped (its files go with the temporary directory).
pub struct TestS3 {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    port: u16,
    dir: tempfile::TempDir,
}

/// `s3s-fs` on `PATH`, else in the project's tool cache.
fn program() -> PathBuf {
    let cached = std::env::var_os("CARGO_INSTALL_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/platinum/tools")))
        .map(|root| root.join("bin/s3s-fs"));
    match cached {
        Some(path) if path.is_file() => path,
        _ => PathBuf::from("s3s-fs"),
    }
}

impl TestS3 {
    /// Starts `s3s-fs` on a free loopback port with the test bucket, and waits until it answers.
    pub async fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join(BUCKET))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut s3 = TestS3 {
            child: None,
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            dir,
        };
        s3.resume().await?;
        Ok(s3)
    }

    /// The store a server archives to: this bucket, path-style, under `prefix`.
    pub fn store(&self, prefix: &str) -> ObjectStoreConfig {
        ObjectStoreConfig::S3(S3Config {
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".into(),
            bucket: BUCKET.into(),
            prefix: prefix.into(),
            path_style: true,
            credentials: S3Credentials {
                access_key_id: ACCESS_KEY.into(),
                secret_access_key: SECRET_KEY.into(),
                session_token: None,
            },
        })
    }

    /// Where the objects of `prefix` lie.
    pub fn objects(&self, prefix: &str) -> PathBuf {
        self.dir.path().join(BUCKET).join(prefix)
    }

    /// Every object file under `prefix`, with its modification time.
    pub fn object_files(&self, prefix: &str) -> Vec<(PathBuf, std::time::SystemTime)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, std::time::SystemTime)>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                match entry.metadata() {
                    Ok(m) if m.is_dir() => walk(&path, out),
                    Ok(m) if m.is_file() => {
                        out.push((path, m.modified().unwrap_or(std::time::UNIX_EPOCH)))
                    }
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.objects(prefix), &mut out);
        out
    }

    /// Stops the server (the objects stay): the store becomes unreachable.
    pub fn pause(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and files.
    pub async fn resume(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let child = Command::new(program())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting s3s-fs (./platinum.sh test installs it with cargo)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Unsigned requests are refused (403): the server is up.
            if reqwest::get(&self.endpoint).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("s3s-fs did not answer at {} within 30 s", self.endpoint);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        self.pause();
    }
}
