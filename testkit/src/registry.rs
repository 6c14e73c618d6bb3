//! A real OCI registry for tests, on loopback: Debian's `docker-registry` (the CNCF
//! distribution registry) with its storage in a temporary directory, and a small image pushed
//! into it with the same OCI client the host pulls with.
//!
//! The test image is busybox (the host's static `/bin/busybox`, every applet a symlink to it)
//! in two layers, the second with a whiteout and an opaque directory, and a configuration that
//! sets environment, working directory and a command, so a pull exercises what real images use.

use anyhow::{Context, Result, bail};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What the test image's `/etc/os-release` says.
pub const TEST_IMAGE_OS: &str = "ID=platinum-test-busybox";

/// A registry process; killed when dropped.
pub struct TestRegistry {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// The user name and password it requires, if any.
    auth: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    /// Starts `docker-registry` on a free loopback port and waits until it answers.
    pub async fn start() -> Result<Self> {
        Self::start_with(None).await
    }

    /// Starts one that requires `user` and `password` (htpasswd, basic auth) for everything.
    pub async fn start_private(user: &str, password: &str) -> Result<Self> {
        Self::start_with(Some((user.to_string(), password.to_string()))).await
    }

    async fn start_with(auth: Option<(String, String)>) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = &auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(
                &htpasswd,
                format!("{user}:{}\n", bcrypt::hash(password, 5)?),
            )?;
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: platinum-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, yaml)?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting docker-registry (apt-get install docker-registry)")?;
        let registry = Self {
            child,
            addr,
            auth,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("http://{}/v2/", registry.addr);
        loop {
            // A private registry answers 401 until asked with credentials: it is up.
            if let Ok(r) = reqwest::get(&url).await
                && (r.status().is_success() || r.status() == 401)
            {
                return Ok(registry);
            }
            if Instant::now() > deadline {
                bail!("docker-registry did not answer at {url} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Pushes the test image (see the module docs) as `repo:tag`; returns its reference.
    pub async fn push_busybox(&self, repo: &str, tag: &str) -> Result<String> {
        let reference = format!("{}/{repo}:{tag}", self.addr);
        let parsed: Reference = reference.parse()?;
        let base = busybox_layer()?;
        let top = top_layer()?;
        let diff_ids: Vec<String> = [&base, &top]
            .iter()
            .map(|t| format!("sha256:{}", sha256_hex(t)))
            .collect();
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hello from the image"],
                "WorkingDir": "/opt",
                "Cmd": ["/bin/sh"],
            },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        let layers = vec![
            ImageLayer::oci_v1_gzip(gzip(&base)?, None),
            ImageLayer::oci_v1(top, None),
        ];
        let config = Config::oci_v1(serde_json::to_vec(&config)?, None);
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        let auth = match &self.auth {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        };
        client
            .push(&parsed, &layers, config, &auth, None)
            .await
            .with_context(|| format!("pushing {reference}"))?;
        Ok(reference)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

/// A tar header of `kind` and `mode`, owned by root.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    h
}

fn add_file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, path, data)?;
    Ok(())
}

fn add_dir(b: &mut tar::Builder<Vec<u8>>, path: &str) -> Result<()> {
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, path, std::io::empty())?;
    Ok(())
}

/// Layer one: busybox and its applets, a few files the next layer removes.
fn busybox_layer() -> Result<Vec<u8>> {
    let busybox = std::fs::read("/bin/busybox").context("reading /bin/busybox (busybox-static)")?;
    let list = Command::new("/bin/busybox").arg("--list").output()?;
    let applets = String::from_utf8(list.stdout)?;
    let mut b = tar::Builder::new(Vec::new());
    for dir in ["bin", "etc", "opt", "usr", "usr/bin"] {
        add_dir(&mut b, dir)?;
    }
    add_file(&mut b, "bin/busybox", &busybox, 0o755)?;
    for applet in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    add_file(
        &mut b,
        "etc/os-release",
        format!("{TEST_IMAGE_OS}\n").as_bytes(),
        0o644,
    )?;
    add_file(
        &mut b,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n",
        0o644,
    )?;
    add_file(&mut b, "etc/group", b"root:x:0:\n", 0o644)?;
    add_file(&mut b, "etc/gone", b"removed by layer two\n", 0o644)?;
    add_file(&mut b, "opt/old", b"hidden by layer two\n", 0o644)?;
    Ok(b.into_inner()?)
}

/// Layer two: a whiteout, an opaque directory and a new file in it.
fn top_layer() -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    add_file(&mut b, "etc/.wh.gone", b"", 0o644)?;
    add_file(&mut b, "opt/.wh..wh..opq", b"", 0o644)?;
    add_file(&mut b, "opt/new", b"new in layer two\n", 0o644)?;
    Ok(b.into_inner()?)
}
