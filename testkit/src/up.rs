//! `platinum up` as a separate process, as a user runs it: for tests that signal or kill the
//! server itself (a crash is a `SIGKILL`, which an in-process server cannot take).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use platinum_hostagent::net::NetworkConfig;

use crate::{platinum_bin, processes_mentioning};

/// A running `platinum up --no-install --no-demo` on a free loopback port. Dropping it kills
/// the server and whatever it left running for its data directory.
pub struct UpProcess {
    /// The server process.
    pub child: Child,
    /// Its data directory.
    pub data: PathBuf,
    /// Its base URL (`http://127.0.0.1:<port>`).
    pub url: String,
    /// Its own sandbox network, removed on drop (`None`: the default one).
    network: Option<NetworkConfig>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl UpProcess {
    /// Starts the server on `data` with API key `key`, on sandbox network `network` (its
    /// bridge and subnet; `None`: the default one), and waits until `GET /health` answers.
    pub async fn start(
        data: &Path,
        key: &str,
        network: Option<NetworkConfig>,
    ) -> Result<UpProcess> {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(platinum_bin());
        command
            .args(["up", "--no-install", "--no-demo", "--listen", &listen])
            .arg("--data-dir")
            .arg(data);
        if let Some(net) = &network {
            command
                .args(["--bridge", &net.bridge, "--subnet"])
                .arg(format!("{}/{}", net.subnet, net.prefix));
        }
        let child = command
            .env("PLATINUM_API_KEY", key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let up = UpProcess {
            child,
            data: data.to_path_buf(),
            url: format!("http://{listen}"),
            network,
        };
        let until = Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/health", up.url)).await
                && r.status() == 200
            {
                return Ok(up);
            }
            if Instant::now() >= until {
                bail!("platinum up did not come up on {}", up.url);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Kills the server with `SIGKILL`, as a crash would, and reaps it. What it started (VMs,
    /// helper daemons) keeps running, as after a real crash.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for UpProcess {
    fn drop(&mut self) {
        self.crash();
        for pid in processes_mentioning(&self.data) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        crate::unmount_beneath(&self.data);
        if let Some(net) = &self.network {
            crate::remove_network(net);
        }
    }
}
