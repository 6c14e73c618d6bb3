//! `platinum up` as an operator runs it, stopped by a signal at every stage: before the server
//! is up, while the demo sandbox boots, and after a crash (SIGKILL) followed by a restart on the
//! same data directory. Every path must end with no VMM, helper process or TAP left running.
//! Needs root (the server creates its own bridge, TAPs and nftables tables).

use platinum_testkit::{platinum_bin, processes_mentioning, taps_on, temp_root, test_network};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// One `platinum up` data directory, bridge and port; removes the network it leaves on drop.
struct Up {
    dir: tempfile::TempDir,
    bridge: String,
    subnet: String,
    port: u16,
}

impl Up {
    fn new() -> Up {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root: `platinum up` creates a bridge, TAPs and nftables rules"
        );
        let net = test_network();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        Up {
            dir: tempfile::Builder::new()
                .prefix("platinum-up-")
                .tempdir_in(temp_root())
                .unwrap(),
            bridge: net.bridge,
            subnet: format!("{}/{}", net.subnet, net.prefix),
            port,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn sandboxes(&self) -> PathBuf {
        self.data().join("sandboxes")
    }

    fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("up.log"))
            .unwrap();
        Command::new(platinum_bin())
            .args(["--data-dir", &self.data().display().to_string()])
            .args(["up", "--no-install", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["--bridge", &self.bridge, "--subnet", &self.subnet])
            .env_remove("PLATINUM_API_KEY")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    fn taps(&self) -> Vec<String> {
        taps_on(&self.bridge)
    }

    /// Waits until a VMM process runs for this data directory.
    fn wait_for_vmm(&self, child: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while processes_mentioning(&self.sandboxes()).is_empty() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "platinum up exited early:\n{}",
                self.log()
            );
            assert!(Instant::now() < deadline, "no VMM started:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn assert_nothing_left(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let procs = processes_mentioning(&self.sandboxes());
            let taps = self.taps();
            if procs.is_empty() && taps.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "left behind: processes {procs:?}, TAPs {taps:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        platinum_hostagent::process::kill_processes_mentioning(&self.data());
        for tap in self.taps() {
            let _ = Command::new("ip").args(["link", "del", &tap]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        let table = format!("platinum_{}", self.bridge.replace('-', "_"));
        for family in ["inet", "bridge"] {
            let _ = Command::new("nft")
                .args(["delete", "table", family, &table])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

fn wait_exit(child: &mut Child, within: Duration, up: &Up) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("platinum up did not exit within {within:?}:\n{}", up.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sandbox_dirs(sandboxes: &Path) -> usize {
    std::fs::read_dir(sandboxes).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn sigterm_while_starting_or_booting_the_demo_leaves_nothing_running() {
    let up = Up::new();

    // Before the server is up (dependency checks, image cache): nothing starts, clean exit.
    let mut child = up.spawn();
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(60), &up);
    assert!(status.success(), "exit {status:?}:\n{}", up.log());
    up.assert_nothing_left();

    // While the demo sandbox boots: the boot is cut short and its VM and TAP removed.
    let mut child = up.spawn();
    up.wait_for_vmm(&mut child);
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(120), &up);
    assert!(status.success(), "exit {status:?}:\n{}", up.log());
    up.assert_nothing_left();
    assert!(up.log().contains("SIGTERM"), "{}", up.log());
}

#[test]
fn a_crashed_server_leaves_nothing_running_after_the_next_start() {
    let up = Up::new();
    let mut child = up.spawn();
    up.wait_for_vmm(&mut child);
    // Let the demo finish booting (its TAP exists), then crash the server.
    let deadline = Instant::now() + Duration::from_secs(300);
    while !up.log().contains("Demo sandbox") {
        assert!(Instant::now() < deadline, "demo never ran:\n{}", up.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    signal(&child, nix::sys::signal::Signal::SIGKILL);
    wait_exit(&mut child, Duration::from_secs(30), &up);
    assert!(sandbox_dirs(&up.sandboxes()) >= 1);

    // The next start on the same data directory removes the dead server's VMs and TAPs.
    let mut child = up.spawn();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !up.log().contains("Platinum is serving")
        || up.log().matches("Platinum is serving").count() < 2
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "restart failed:\n{}",
            up.log()
        );
        assert!(
            Instant::now() < deadline,
            "restart never served:\n{}",
            up.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    signal(&child, nix::sys::signal::Signal::SIGINT);
    let status = wait_exit(&mut child, Duration::from_secs(120), &up);
    assert!(status.success(), "exit {status:?}:\n{}", up.log());
    up.assert_nothing_left();
}
