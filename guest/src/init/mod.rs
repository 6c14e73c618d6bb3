//! Boot as PID 1, then serve the VM's transports forever.
//!
//! 1. Mount devtmpfs on `/dev`, proc and sysfs; read the `platinum.*` boot parameters.
//! 2. Load the initramfs's kernel modules (virtio, block, net, console, vsock, fs, ...).
//! 3. Wait (bounded) for the root block device, mount it read-write at `/rootfs`, and switch root
//!    into it, freeing the initramfs.
//! 4. Mount `/dev/pts`, `/dev/shm`, `/run`, `/tmp` and the cgroup2 hierarchy; set the hostname;
//!    bring up `lo`.
//! 5. Serve vsock and the virtio-serial port, whichever appear, with one shared agent.
//!
//! PID 1 must never exit: the kernel panics when it does. Every step logs its failure and the boot
//! goes on with whatever works (without a root filesystem the agent serves from the initramfs, so
//! the host can still reach it and read the console). A panic on the serving runtime is logged and
//! the transports restart.

pub mod cmdline;
mod modules;
mod mounts;
pub(crate) mod net;
pub mod power;
mod switch_root;

use crate::agent::{Agent, AgentConfig, Mode};
use crate::logging;
use crate::transport::{serial, vsock};
use nix::mount::{MsFlags, mount};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// Where the root filesystem is mounted before the switch.
const NEW_ROOT: &str = "/rootfs";

/// How long to wait for the root block device to appear after its driver loaded.
const ROOT_DEVICE_WAIT: Duration = Duration::from_secs(5);

/// How often to look for it meanwhile.
const ROOT_DEVICE_POLL: Duration = Duration::from_millis(10);

/// Pause before starting the transports again after all of them stopped.
const RESTART_DELAY: Duration = Duration::from_secs(5);

/// Boots the VM and serves it. Never returns.
pub fn run() -> ! {
    let early_mounts = mounts::mount_early();
    let params = cmdline::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    logging::init(if params.debug { "debug" } else { "info" });
    std::panic::set_hook(Box::new(|panic| error!(%panic, "panic")));
    info!(
        version = crate::system::AGENT_VERSION,
        ?params,
        "platinum guest agent starting as PID 1"
    );
    for e in early_mounts {
        warn!(error = %crate::error_chain(&e), "early mount failed");
    }
    modules::load_all();
    match &params.root {
        Some(root) => match mount_root(root, &params.rootfstype) {
            Ok(()) => match switch_root::switch_root(Path::new(NEW_ROOT)) {
                Ok(()) => info!(root, "switched to the root filesystem"),
                Err(e) => {
                    error!(error = %crate::error_chain(&e), "switch_root failed; serving from the initramfs")
                }
            },
            Err(e) => error!(root, error = %e, "no root filesystem; serving from the initramfs"),
        },
        None => info!("no root device requested; serving from the initramfs"),
    }
    for e in mounts::mount_late() {
        warn!(error = %crate::error_chain(&e), "mount failed");
    }
    if let Some(tag) = &params.share {
        match mounts::mount_share(tag) {
            Ok(()) => info!(tag, path = mounts::SHARE_MOUNT, "host share mounted"),
            Err(e) => warn!(error = %crate::error_chain(&e), "cannot mount the host share"),
        }
    }
    if let Err(e) = nix::unistd::sethostname(&params.hostname) {
        warn!(hostname = params.hostname, error = %e, "cannot set the hostname");
    }
    if let Err(e) = net::loopback_up() {
        warn!(error = %e, "cannot bring up lo");
    }
    if let Some(net_params) = &params.net {
        match net::configure(net_params) {
            Ok(iface) => info!(iface, addr = %net_params.addr, "network configured"),
            Err(e) => warn!(error = %e, "cannot configure the network"),
        }
    }
    serve_forever(Agent::new(AgentConfig::new(Mode::Init)))
}

fn mount_root(device: &str, fstype: &str) -> Result<(), String> {
    let deadline = Instant::now() + ROOT_DEVICE_WAIT;
    while !Path::new(device).exists() {
        if Instant::now() >= deadline {
            return Err(format!(
                "{device} did not appear within {ROOT_DEVICE_WAIT:?}"
            ));
        }
        std::thread::sleep(ROOT_DEVICE_POLL);
    }
    if let Err(e) = std::fs::create_dir_all(NEW_ROOT) {
        warn!(error = %e, "cannot create {NEW_ROOT}");
    }
    mount(
        Some(device),
        NEW_ROOT,
        Some(fstype),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| format!("mount {device} ({fstype}) on {NEW_ROOT}: {e}"))
}

fn serve_forever(agent: Arc<Agent>) -> ! {
    let runtime = loop {
        match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => break runtime,
            Err(e) => {
                error!(error = %e, "cannot start the async runtime");
                std::thread::sleep(RESTART_DELAY);
            }
        }
    };
    loop {
        // The runtime stays: it also runs the pumps and waiters of every process started so far.
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(serve_transports(agent.clone()))
        }));
        if served.is_err() {
            error!("serving panicked; starting over");
        }
    }
}

async fn serve_transports(agent: Arc<Agent>) {
    loop {
        let vsock = tokio::spawn(vsock::serve_when_available(agent.clone()));
        let serial = tokio::spawn(serial::serve_when_available(agent.clone()));
        let (vsock, serial) = tokio::join!(vsock, serial);
        warn!(
            ?vsock,
            ?serial,
            "every transport has stopped; starting them again in {RESTART_DELAY:?}"
        );
        tokio::time::sleep(RESTART_DELAY).await;
    }
}
