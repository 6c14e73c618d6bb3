//! A strict stand-in for Cloud Hypervisor's API socket, for the machines where CH cannot run.
//!
//! It serves HTTP/1.1 on a Unix socket and checks every request against the CH v53 OpenAPI
//! document (see `schema.rs`):
//! 1. the path must be a documented endpoint under `/api/v1` (else 404, as CH answers unknown
//!    routes) and the method one it documents (else 400, as CH does);
//! 2. an endpoint with a request body gets `Content-Type: application/json` and a body that
//!    validates against its component, tightened (else 400 with the violations); an endpoint
//!    without one gets no body (else 400);
//! 3. it answers from a VM state machine with the statuses the document lists for that
//!    operation (404 not created, 405 wrong state, 200/204 success), or 500 with a JSON list of
//!    messages for failures, which is how CH reports errors; it panics if it would answer a
//!    status the document does not list (400 and 500 excepted) or a 200 body that does not
//!    validate, so the stand-in cannot drift from the contract.
//!
//! It emulates the side effects the driver relies on: `vm.boot`/`vm.restore` bind the hybrid
//! vsock socket named in the config without unlinking a stale one (CH's behaviour) and answer
//! `CONNECT 18047` with `OK <port>` and an echo; `vm.snapshot` writes `config.json`,
//! `state.json` and `memory-ranges` into an existing directory; `vm.restore` reads them back and
//! validates the (rewritten) `config.json`; a guest power-off and `vmm.shutdown` end the VMM
//! process (the fake `cloud-hypervisor` whose pid the driver wrote to `vmm.pid`). Tests can
//! inject failures per endpoint and make an endpoint a no-op (a guest ignoring the power button).

#![allow(dead_code)] // each test uses a different part of the stand-in

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use super::schema::ChSchema;

/// The hybrid vsock port the guest agent listens on.
const AGENT_PORT: u32 = 18047;

/// Statuses CH v53 answers that its OpenAPI document does not list (from the VMM mechanics
/// notes): `vm.info` before `vm.create` is a 404 since v53 (#8320).
const UNDOCUMENTED: &[(&str, u16)] = &[("vm.info", 404)];

/// VM phases, as `vm.info` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `vm.create` done.
    Created,
    /// Booted or resumed.
    Running,
    /// Paused (or restored, before `vm.resume`).
    Paused,
    /// Shut down, VMM still up.
    Shutdown,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Created => "Created",
            Phase::Running => "Running",
            Phase::Paused => "Paused",
            Phase::Shutdown => "Shutdown",
        }
    }
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `vm.boot`.
    pub endpoint: String,
    /// The JSON body, if any.
    pub body: Option<Value>,
    /// The status answered.
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    phase: Option<Phase>,
    config: Option<Value>,
    restored_config: Option<Value>,
    requests: Vec<Recorded>,
    faults: HashMap<String, (u16, Vec<String>)>,
    ignored: HashSet<String>,
    vsock: Option<JoinHandle<()>>,
    next_slot: u8,
}

struct Shared {
    schema: Arc<ChSchema>,
    vm_dir: Option<PathBuf>,
    inner: Mutex<Inner>,
}

/// A running stand-in; stops serving when dropped.
pub struct StandIn {
    /// The socket it listens on.
    pub socket: PathBuf,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
        if let Some(vsock) = self.shared.inner.lock().expect("stand-in").vsock.take() {
            vsock.abort();
        }
    }
}

type Reply = (u16, Option<Value>);

fn failure(status: u16, messages: &[&str]) -> Reply {
    (status, Some(json!(messages)))
}

impl StandIn {
    /// Serves on `socket`. `vm_dir` is the VM directory of the fake VMM process whose end this
    /// stand-in simulates (`None`: there is no process, as in client-only tests).
    pub fn start(schema: Arc<ChSchema>, socket: &Path, vm_dir: Option<&Path>) -> StandIn {
        let listener = UnixListener::bind(socket).expect("bind the stand-in socket");
        let shared = Arc::new(Shared {
            schema,
            vm_dir: vm_dir.map(Path::to_path_buf),
            inner: Mutex::new(Inner::default()),
        });
        let serving = shared.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(shared.handle(req).await) }
                    });
                    // A client that hangs up early is not the stand-in's failure.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        StandIn {
            socket: socket.to_path_buf(),
            shared,
            server,
        }
    }

    /// Makes `endpoint` fail with `status` and CH's error list.
    pub fn fail(&self, endpoint: &str, status: u16, messages: &[&str]) {
        self.inner().faults.insert(
            endpoint.to_string(),
            (status, messages.iter().map(|m| m.to_string()).collect()),
        );
    }

    /// Makes `endpoint` succeed without effect (a guest ignoring the power button, a VMM that
    /// hangs in shutdown).
    pub fn ignore(&self, endpoint: &str) {
        self.inner().ignored.insert(endpoint.to_string());
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner().requests.clone()
    }

    /// The endpoints called so far, in order, without the `vmm.ping` polls.
    pub fn calls(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .map(|r| r.endpoint)
            .filter(|e| e != "vmm.ping")
            .collect()
    }

    /// The last body sent to `endpoint`.
    pub fn last_body(&self, endpoint: &str) -> Option<Value> {
        self.requests()
            .into_iter()
            .rev()
            .find(|r| r.endpoint == endpoint)
            .and_then(|r| r.body)
    }

    /// The config `vm.restore` read from its source directory.
    pub fn restored_config(&self) -> Option<Value> {
        self.inner().restored_config.clone()
    }

    /// The VM's current config.
    pub fn config(&self) -> Option<Value> {
        self.inner().config.clone()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().expect("stand-in state")
    }
}

impl Shared {
    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let method = req.method().as_str().to_ascii_lowercase();
        let path = req.uri().path().to_string();
        let json_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let body = match req.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let (status, reply) = self.dispatch(&method, &path, json_type, &body);
        let mut response = Response::builder().status(status);
        let payload = match reply {
            Some(value) => {
                response = response.header(CONTENT_TYPE, "application/json");
                Bytes::from(value.to_string())
            }
            None => Bytes::new(),
        };
        response
            .body(Full::new(payload))
            .expect("stand-in response")
    }

    fn dispatch(&self, method: &str, path: &str, json_type: bool, body: &[u8]) -> Reply {
        let Some(endpoint) = path.strip_prefix("/api/v1/") else {
            return failure(404, &["Not found"]);
        };
        if self.schema.document["paths"]
            .get(format!("/{endpoint}"))
            .is_none()
        {
            return failure(404, &["Not found"]);
        }
        let Some(op) = self.schema.operation(method, endpoint) else {
            return failure(400, &["Bad request: method not allowed on this endpoint"]);
        };
        let parsed = match (&op.request, body.is_empty()) {
            (Some(component), false) => {
                if !json_type {
                    return self.record(endpoint, None, failure(400, &["Bad request: not JSON"]));
                }
                let value: Value = match serde_json::from_slice(body) {
                    Ok(value) => value,
                    Err(e) => {
                        let message = format!("Error deserializing JSON: {e}");
                        return self.record(endpoint, None, failure(400, &[&message]));
                    }
                };
                if let Err(errors) = self.schema.check(component, &value) {
                    let message = format!("{component} violates the schema: {errors}");
                    return self.record(endpoint, Some(value), failure(400, &[&message]));
                }
                Some(value)
            }
            (Some(_), true) if op.body_required => {
                return self.record(
                    endpoint,
                    None,
                    failure(400, &["Bad request: body required"]),
                );
            }
            (Some(_), true) => None,
            (None, false) => {
                return self.record(
                    endpoint,
                    None,
                    failure(400, &["Bad request: unexpected body"]),
                );
            }
            (None, true) => None,
        };

        let fault = self.state().faults.get(endpoint).cloned();
        let reply = match fault {
            Some((status, messages)) => (status, Some(json!(messages))),
            None => self.act(endpoint, parsed.as_ref()),
        };
        let (status, reply_body) = &reply;
        assert!(
            op.responses.contains_key(status)
                || *status == 400
                || *status == 500
                || UNDOCUMENTED.contains(&(endpoint, *status)),
            "the stand-in answered {endpoint} with undocumented status {status}"
        );
        if *status == 200 {
            let component = op.responses[&200]
                .as_deref()
                .unwrap_or_else(|| panic!("{endpoint} documents no 200 body"));
            self.schema.assert_valid(
                component,
                reply_body.as_ref().expect("a 200 reply has a body"),
            );
        }
        self.record(endpoint, parsed, reply)
    }

    fn record(&self, endpoint: &str, body: Option<Value>, reply: Reply) -> Reply {
        self.state().requests.push(Recorded {
            endpoint: endpoint.to_string(),
            body,
            status: reply.0,
        });
        reply
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("stand-in state")
    }

    /// The state machine; `body` has been validated against the endpoint's component.
    fn act(&self, endpoint: &str, body: Option<&Value>) -> Reply {
        let ignored = self.state().ignored.contains(endpoint);
        let phase = self.state().phase;
        match endpoint {
            "vmm.ping" => (
                200,
                Some(json!({
                    "build_version": "v53.0.0",
                    "version": "53.0.0",
                    "pid": std::process::id(),
                    "features": ["kvm", "io_uring"]
                })),
            ),
            "vmm.shutdown" => {
                if !ignored {
                    self.end_vmm();
                }
                (204, None)
            }
            "vm.create" => {
                if phase.is_some() {
                    return failure(
                        500,
                        &[
                            "Error from API",
                            "The VM could not be created",
                            "VM is already created",
                        ],
                    );
                }
                let config = body.expect("validated body").clone();
                let shared = config["memory"]["shared"].as_bool().unwrap_or(false);
                if config["fs"].as_array().is_some_and(|fs| !fs.is_empty()) && !shared {
                    return failure(
                        500,
                        &[
                            "Error from API",
                            "The VM could not be created",
                            "Using vhost-user requires shared memory",
                        ],
                    );
                }
                let mut state = self.state();
                state.config = Some(config);
                state.phase = Some(Phase::Created);
                (204, None)
            }
            "vm.boot" => match phase {
                None => failure(
                    404,
                    &[
                        "Error from API",
                        "The VM could not boot",
                        "VM is not created",
                    ],
                ),
                Some(Phase::Created) => {
                    let config = self
                        .state()
                        .config
                        .clone()
                        .expect("created VM has a config");
                    if let Err(message) = check_files(&config) {
                        return failure(
                            500,
                            &["Error from API", "The VM could not boot", &message],
                        );
                    }
                    if let Err(message) = self.bind_vsock(&config) {
                        return failure(
                            500,
                            &["Error from API", "The VM could not boot", &message],
                        );
                    }
                    self.state().phase = Some(Phase::Running);
                    (204, None)
                }
                Some(_) => failure(
                    500,
                    &[
                        "Error from API",
                        "The VM could not boot",
                        "VM is already booted",
                    ],
                ),
            },
            "vm.info" => {
                let state = self.state();
                match (state.phase, &state.config) {
                    (Some(phase), Some(config)) => (
                        200,
                        Some(json!({
                            "config": config,
                            "state": phase.name(),
                            "memory_actual_size": config["memory"]["size"],
                        })),
                    ),
                    _ => failure(
                        404,
                        &[
                            "Error from API",
                            "The VM info is not available",
                            "VM is not created",
                        ],
                    ),
                }
            }
            "vm.pause" => self.transition(phase, Phase::Running, Phase::Paused, "paused"),
            "vm.resume" => self.transition(phase, Phase::Paused, Phase::Running, "resumed"),
            "vm.power-button" => match phase {
                None => failure(404, &["Error from API", "VM is not created"]),
                Some(Phase::Running) => {
                    if !ignored {
                        // The guest powers off; CH then exits (no --no-shutdown).
                        self.state().phase = Some(Phase::Shutdown);
                        self.end_vmm();
                    }
                    (204, None)
                }
                Some(_) => (405, None),
            },
            "vm.shutdown" => match phase {
                None => failure(404, &["Error from API", "VM is not created"]),
                Some(Phase::Created) => (405, None),
                Some(_) => {
                    if !ignored {
                        self.state().phase = Some(Phase::Shutdown);
                    }
                    (204, None)
                }
            },
            "vm.snapshot" => self.snapshot(phase, body.expect("validated body")),
            "vm.restore" => self.restore(phase, body.expect("validated body")),
            "vm.add-disk" => self.add_device(phase, "disks", body.expect("validated body")),
            "vm.add-fs" => self.add_device(phase, "fs", body.expect("validated body")),
            other => failure(
                500,
                &[&format!("{other} is not implemented by the stand-in")],
            ),
        }
    }

    fn transition(&self, phase: Option<Phase>, from: Phase, to: Phase, verb: &str) -> Reply {
        match phase {
            None => failure(404, &["Error from API", "VM is not created"]),
            Some(p) if p == from => {
                self.state().phase = Some(to);
                (204, None)
            }
            Some(p) => failure(
                405,
                &[
                    "Error from API",
                    &format!("The VM could not be {verb}"),
                    &format!("Invalid VM state transition: {p:?} to {to:?}"),
                ],
            ),
        }
    }

    fn snapshot(&self, phase: Option<Phase>, body: &Value) -> Reply {
        match phase {
            None => return failure(404, &["Error from API", "VM is not created"]),
            Some(Phase::Created) => return failure(405, &["Error from API", "VM is not booted"]),
            Some(Phase::Paused) => {}
            Some(_) => {
                return failure(
                    500,
                    &[
                        "Error from API",
                        "The VM could not be snapshotted",
                        "Failed to snapshot the VM: VM is not paused",
                    ],
                );
            }
        }
        let Some(dir) = file_url(body["destination_url"].as_str().unwrap_or_default()) else {
            return failure(
                500,
                &[
                    "Error from API",
                    "The VM could not be snapshotted",
                    "Unsupported URL scheme",
                ],
            );
        };
        if !dir.is_dir() {
            return failure(
                500,
                &[
                    "Error from API",
                    "The VM could not be snapshotted",
                    "Destination is not a directory",
                ],
            );
        }
        let config = self.state().config.clone().expect("booted VM has a config");
        let written = std::fs::write(
            dir.join("config.json"),
            serde_json::to_vec_pretty(&config).expect("json"),
        )
        .and_then(|()| std::fs::write(dir.join("state.json"), br#"{"snapshots":{}}"#))
        .and_then(|()| std::fs::write(dir.join("memory-ranges"), vec![0x5a; 4096]));
        match written {
            Ok(()) => (204, None),
            Err(e) => failure(
                500,
                &[
                    "Error from API",
                    "The VM could not be snapshotted",
                    &e.to_string(),
                ],
            ),
        }
    }

    fn restore(&self, phase: Option<Phase>, body: &Value) -> Reply {
        if phase.is_some() {
            return failure(
                404,
                &[
                    "Error from API",
                    "The VM could not be restored",
                    "VM is already created",
                ],
            );
        }
        let Some(dir) = file_url(body["source_url"].as_str().unwrap_or_default()) else {
            return failure(
                500,
                &[
                    "Error from API",
                    "The VM could not be restored",
                    "Unsupported URL scheme",
                ],
            );
        };
        let config: Value = match std::fs::read(dir.join("config.json"))
            .map_err(|e| e.to_string())
            .and_then(|raw| serde_json::from_slice(&raw).map_err(|e| e.to_string()))
        {
            Ok(config) => config,
            Err(e) => {
                return failure(
                    500,
                    &[
                        "Error from API",
                        "The VM could not be restored",
                        &format!("config.json: {e}"),
                    ],
                );
            }
        };
        if let Err(errors) = self.schema.check("VmConfig", &config) {
            return failure(
                500,
                &[
                    "Error from API",
                    "The VM could not be restored",
                    &format!("config.json: {errors}"),
                ],
            );
        }
        for file in ["state.json", "memory-ranges"] {
            if let Err(e) = std::fs::read(dir.join(file)) {
                return failure(
                    500,
                    &[
                        "Error from API",
                        "The VM could not be restored",
                        &format!("{file}: {e}"),
                    ],
                );
            }
        }
        if let Err(message) = check_files(&config) {
            return failure(
                500,
                &["Error from API", "The VM could not be restored", &message],
            );
        }
        if let Err(message) = self.bind_vsock(&config) {
            return failure(
                500,
                &["Error from API", "The VM could not be restored", &message],
            );
        }
        let mut state = self.state();
        state.restored_config = Some(config.clone());
        state.config = Some(config);
        state.phase = Some(if body["resume"].as_bool() == Some(true) {
            Phase::Running
        } else {
            Phase::Paused
        });
        (204, None)
    }

    fn add_device(&self, phase: Option<Phase>, section: &str, device: &Value) -> Reply {
        let what = if section == "disks" {
            "disk"
        } else {
            "virtio-fs device"
        };
        let Some(phase) = phase else {
            return failure(
                500,
                &[
                    "Error from API",
                    &format!("The {what} could not be added to the VM"),
                    "VM is not created",
                ],
            );
        };
        let mut state = self.state();
        let config = state.config.as_mut().expect("created VM has a config");
        let id = device["id"].as_str().unwrap_or_default().to_string();
        let taken = ["disks", "fs", "net"].iter().any(|s| {
            config[*s]
                .as_array()
                .is_some_and(|items| items.iter().any(|d| d["id"] == json!(id)))
        }) || config["vsock"]["id"] == json!(id);
        if taken {
            return failure(
                500,
                &[
                    "Error from API",
                    &format!("The {what} could not be added to the VM"),
                    &format!("Identifier {id} is not unique"),
                ],
            );
        }
        let file = if section == "disks" {
            &device["path"]
        } else {
            &device["socket"]
        };
        if !Path::new(file.as_str().unwrap_or_default()).exists() {
            return failure(
                500,
                &[
                    "Error from API",
                    &format!("The {what} could not be added to the VM"),
                    &format!("{file} does not exist"),
                ],
            );
        }
        if section == "fs" && config["memory"]["shared"] != json!(true) {
            return failure(
                500,
                &[
                    "Error from API",
                    "The virtio-fs device could not be added to the VM",
                    "Using vhost-user requires shared memory",
                ],
            );
        }
        match config.get_mut(section).and_then(Value::as_array_mut) {
            Some(items) => items.push(device.clone()),
            None => config[section] = json!([device]),
        }
        if phase == Phase::Created {
            return (204, None);
        }
        state.next_slot += 1;
        let bdf = format!("0000:00:{:02x}.0", 5 + state.next_slot);
        (200, Some(json!({"id": id, "bdf": bdf})))
    }

    /// Binds the config's vsock socket like CH: no unlink first, so a stale file is an error.
    fn bind_vsock(&self, config: &Value) -> Result<(), String> {
        let path = PathBuf::from(config["vsock"]["socket"].as_str().unwrap_or_default());
        let listener = std::os::unix::net::UnixListener::bind(&path).map_err(|e| {
            format!("Cannot create virtio-vsock device: CreateVsockBackend(UnixBind({e}))")
        })?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let listener = UnixListener::from_std(listener).map_err(|e| e.to_string())?;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_vsock(stream));
            }
        });
        if let Some(old) = self.state().vsock.replace(task) {
            old.abort();
        }
        Ok(())
    }

    /// The VMM process ends (guest power-off or `vmm.shutdown`).
    fn end_vmm(&self) {
        let Some(dir) = &self.vm_dir else {
            return;
        };
        let pid = std::fs::read_to_string(dir.join("vmm.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// The guest side of the hybrid vsock: `CONNECT 18047` gets `OK` and an echo, any other port
/// is reset (nobody listens there).
async fn serve_vsock(mut stream: UnixStream) {
    let mut line = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte).await {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) if line.len() < 32 => line.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
    let port = text
        .strip_prefix("connect ")
        .and_then(|p| p.trim().parse::<u32>().ok());
    if port != Some(AGENT_PORT) {
        return;
    }
    if stream.write_all(b"OK 1073741824\n").await.is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Every file CH opens at boot or restore must exist.
fn check_files(config: &Value) -> Result<(), String> {
    let mut files = Vec::new();
    for key in ["kernel", "initramfs"] {
        if let Some(path) = config["payload"][key].as_str() {
            files.push(path.to_string());
        }
    }
    for disk in config["disks"].as_array().into_iter().flatten() {
        files.push(disk["path"].as_str().unwrap_or_default().to_string());
    }
    for share in config["fs"].as_array().into_iter().flatten() {
        files.push(share["socket"].as_str().unwrap_or_default().to_string());
    }
    match files.iter().find(|f| !Path::new(f).exists()) {
        Some(missing) => Err(format!(
            "Cannot open {missing}: No such file or directory (os error 2)"
        )),
        None => Ok(()),
    }
}

fn file_url(url: &str) -> Option<PathBuf> {
    url.strip_prefix("file://").map(PathBuf::from)
}
