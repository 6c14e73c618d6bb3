//! A small typed client for Cloud Hypervisor's REST API on its Unix socket (hyper, HTTP/1.1).
//!
//! The protocol as this client uses it:
//! 1. every request opens its own connection to the API socket (`--api-socket path=…`), so a
//!    request whose caller gave up can never hand its late reply to the next caller;
//! 2. it sends `GET` or `PUT http://localhost/api/v1/<endpoint>`, with a JSON body (and a
//!    `Content-Length`: CH's HTTP server does not take chunked bodies) where the endpoint takes one;
//! 3. `204 No Content` means done, `200 OK` means done with a JSON body (`vmm.ping`, `vm.info`, a
//!    hot-plug's `PciDeviceInfo`);
//! 4. any other status is a failure. CH puts its error chain in the body as a JSON list of
//!    strings, outermost first (`["Error from API", "The VM could not boot", …]`); the client
//!    joins it into [`Error::VmmControl`]`{request: "<endpoint>", message}` so the cause reaches
//!    the caller verbatim.
//!
//! A connection that cannot be made is also a [`Error::VmmControl`] (the VMM is starting, gone, or
//! not a VMM); a request that outlives its deadline is an [`Error::Timeout`].
//!
//! Every endpoint the driver uses is an [`Endpoint`]; [`Endpoint::ALL`] is the complete list.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;
use tracing::debug;

use crate::error::{Error, Result};

use super::config::{DiskConfig, FsConfig, RestoreConfig, VmConfig, VmSnapshotConfig};

/// Path prefix of every endpoint.
pub const API_ROOT: &str = "/api/v1";

/// Longest error body quoted in an error message.
const MAX_ERROR_BODY: usize = 4096;

/// The CH API endpoints this driver calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET vmm.ping`: the VMM answers with its version.
    VmmPing,
    /// `PUT vmm.shutdown`: the VMM process exits.
    VmmShutdown,
    /// `PUT vm.create` with a `VmConfig`: the VM exists, not booted.
    VmCreate,
    /// `PUT vm.boot`.
    VmBoot,
    /// `GET vm.info`: state and current config.
    VmInfo,
    /// `PUT vm.pause`.
    VmPause,
    /// `PUT vm.resume`.
    VmResume,
    /// `PUT vm.power-button`: ACPI power button, the guest decides.
    VmPowerButton,
    /// `PUT vm.shutdown`: stops the VM, the VMM keeps running.
    VmShutdown,
    /// `PUT vm.snapshot` with a `VmSnapshotConfig`.
    VmSnapshot,
    /// `PUT vm.restore` with a `RestoreConfig`.
    VmRestore,
    /// `PUT vm.add-disk` with a `DiskConfig`.
    VmAddDisk,
    /// `PUT vm.add-fs` with an `FsConfig`.
    VmAddFs,
    /// `PUT vm.remove-device` with a `VmRemoveDevice` (the device's id).
    VmRemoveDevice,
}

impl Endpoint {
    /// Every endpoint the driver uses.
    pub const ALL: [Endpoint; 14] = [
        Endpoint::VmmPing,
        Endpoint::VmmShutdown,
        Endpoint::VmCreate,
        Endpoint::VmBoot,
        Endpoint::VmInfo,
        Endpoint::VmPause,
        Endpoint::VmResume,
        Endpoint::VmPowerButton,
        Endpoint::VmShutdown,
        Endpoint::VmSnapshot,
        Endpoint::VmRestore,
        Endpoint::VmAddDisk,
        Endpoint::VmAddFs,
        Endpoint::VmRemoveDevice,
    ];

    /// The endpoint's name, as in the OpenAPI paths (`vm.boot`).
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::VmmPing => "vmm.ping",
            Endpoint::VmmShutdown => "vmm.shutdown",
            Endpoint::VmCreate => "vm.create",
            Endpoint::VmBoot => "vm.boot",
            Endpoint::VmInfo => "vm.info",
            Endpoint::VmPause => "vm.pause",
            Endpoint::VmResume => "vm.resume",
            Endpoint::VmPowerButton => "vm.power-button",
            Endpoint::VmShutdown => "vm.shutdown",
            Endpoint::VmSnapshot => "vm.snapshot",
            Endpoint::VmRestore => "vm.restore",
            Endpoint::VmAddDisk => "vm.add-disk",
            Endpoint::VmAddFs => "vm.add-fs",
            Endpoint::VmRemoveDevice => "vm.remove-device",
        }
    }

    /// The HTTP method CH routes it under.
    pub fn method(self) -> Method {
        match self {
            Endpoint::VmmPing | Endpoint::VmInfo => Method::GET,
            _ => Method::PUT,
        }
    }

    /// The request path (`/api/v1/vm.boot`).
    pub fn path(self) -> String {
        format!("{API_ROOT}/{}", self.name())
    }
}

/// The body of `vm.remove-device` (`VmRemoveDevice`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveDevice {
    /// The device's id.
    pub id: String,
}

/// `vmm.ping`'s reply (`VmmPingResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmPing {
    /// `53.0.0`.
    pub version: String,
    /// `v53.0.0` (or a git describe string for development builds).
    #[serde(default)]
    pub build_version: Option<String>,
    /// The VMM's pid.
    #[serde(default)]
    pub pid: Option<i64>,
    /// Compiled-in features (`kvm`, `io_uring`, …).
    #[serde(default)]
    pub features: Vec<String>,
}

/// A VM's state as `vm.info` reports it (`VmState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChVmState {
    /// Created, not booted.
    Created,
    /// vCPUs running.
    Running,
    /// Shut down; the VMM still runs.
    Shutdown,
    /// vCPUs paused.
    Paused,
    /// Stopped at a debugger breakpoint (`guest_debug` builds).
    BreakPoint,
}

/// `vm.info`'s reply (`VmInfo`); the config stays JSON because the driver only reads it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmInfoReply {
    /// Run state.
    pub state: ChVmState,
    /// The VM's current configuration (hot-plugged devices included).
    pub config: serde_json::Value,
    /// Guest RAM in bytes, balloon taken into account.
    #[serde(default)]
    pub memory_actual_size: Option<i64>,
}

/// A hot-plugged device's PCI address (`PciDeviceInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciDeviceInfo {
    /// Device id.
    pub id: String,
    /// PCI address, `0000:00:05.0`.
    pub bdf: String,
}

/// A client for one VMM's API socket.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
}

impl ApiClient {
    /// A client for `socket`; `timeout` bounds every request except snapshot and restore, which
    /// take their own.
    pub fn new(socket: &Path, timeout: Duration) -> ApiClient {
        ApiClient {
            socket: socket.to_path_buf(),
            timeout,
        }
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET vmm.ping`.
    pub async fn ping(&self) -> Result<VmmPing> {
        self.call_json(Endpoint::VmmPing, None, self.timeout).await
    }

    /// `PUT vm.create`.
    pub async fn create(&self, config: &VmConfig) -> Result<()> {
        self.call_empty(Endpoint::VmCreate, Some(encode(config)?), self.timeout)
            .await
    }

    /// `PUT vm.boot`.
    pub async fn boot(&self) -> Result<()> {
        self.call_empty(Endpoint::VmBoot, None, self.timeout).await
    }

    /// `GET vm.info`.
    pub async fn info(&self) -> Result<VmInfoReply> {
        self.call_json(Endpoint::VmInfo, None, self.timeout).await
    }

    /// `PUT vm.pause`.
    pub async fn pause(&self) -> Result<()> {
        self.call_empty(Endpoint::VmPause, None, self.timeout).await
    }

    /// `PUT vm.resume`.
    pub async fn resume(&self) -> Result<()> {
        self.call_empty(Endpoint::VmResume, None, self.timeout)
            .await
    }

    /// `PUT vm.power-button`.
    pub async fn power_button(&self) -> Result<()> {
        self.call_empty(Endpoint::VmPowerButton, None, self.timeout)
            .await
    }

    /// `PUT vm.shutdown`.
    pub async fn shutdown_vm(&self) -> Result<()> {
        self.call_empty(Endpoint::VmShutdown, None, self.timeout)
            .await
    }

    /// `PUT vmm.shutdown`.
    pub async fn shutdown_vmm(&self) -> Result<()> {
        self.call_empty(Endpoint::VmmShutdown, None, self.timeout)
            .await
    }

    /// `PUT vm.snapshot`, bounded by `timeout` (it writes all of guest RAM).
    pub async fn snapshot(&self, body: &VmSnapshotConfig, timeout: Duration) -> Result<()> {
        self.call_empty(Endpoint::VmSnapshot, Some(encode(body)?), timeout)
            .await
    }

    /// `PUT vm.restore`, bounded by `timeout` (a `copy` restore reads all of guest RAM).
    pub async fn restore(&self, body: &RestoreConfig, timeout: Duration) -> Result<()> {
        self.call_empty(Endpoint::VmRestore, Some(encode(body)?), timeout)
            .await
    }

    /// `PUT vm.add-disk`; the PCI address when the VM runs (hot-plug), `None` for a cold add.
    pub async fn add_disk(&self, disk: &DiskConfig) -> Result<Option<PciDeviceInfo>> {
        self.call_optional(Endpoint::VmAddDisk, encode(disk)?).await
    }

    /// `PUT vm.add-fs`; the PCI address when the VM runs (hot-plug), `None` for a cold add.
    pub async fn add_fs(&self, fs: &FsConfig) -> Result<Option<PciDeviceInfo>> {
        self.call_optional(Endpoint::VmAddFs, encode(fs)?).await
    }

    /// `PUT vm.remove-device`: hot-unplugs the device with this id.
    pub async fn remove_device(&self, id: &str) -> Result<()> {
        let body = encode(&RemoveDevice { id: id.to_string() })?;
        self.call_empty(Endpoint::VmRemoveDevice, Some(body), self.timeout)
            .await
    }

    async fn call_empty(
        &self,
        endpoint: Endpoint,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<()> {
        let (status, bytes) = self.call(endpoint, body, timeout).await?;
        if status != StatusCode::NO_CONTENT && !bytes.is_empty() {
            debug!(endpoint = endpoint.name(), %status, "ignoring a reply body");
        }
        Ok(())
    }

    async fn call_json<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<T> {
        let (_, bytes) = self.call(endpoint, body, timeout).await?;
        decode(endpoint, &bytes)
    }

    async fn call_optional<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        body: Bytes,
    ) -> Result<Option<T>> {
        let (status, bytes) = self.call(endpoint, Some(body), self.timeout).await?;
        if status == StatusCode::NO_CONTENT || bytes.is_empty() {
            return Ok(None);
        }
        decode(endpoint, &bytes).map(Some)
    }

    /// One request on a fresh connection; a 2xx status with the body, else the error.
    async fn call(
        &self,
        endpoint: Endpoint,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes)> {
        let exchange = self.exchange(endpoint, body);
        let (status, bytes) = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(Error::Timeout {
                    what: format!("cloud-hypervisor {}", endpoint.name()),
                    seconds: timeout.as_secs().max(1),
                });
            }
        };
        debug!(endpoint = endpoint.name(), %status, bytes = bytes.len(), "cloud-hypervisor API");
        if status.is_success() {
            Ok((status, bytes))
        } else {
            Err(Error::VmmControl {
                request: endpoint.name().to_string(),
                message: format!("HTTP {status}: {}", error_message(&bytes)),
            })
        }
    }

    async fn exchange(
        &self,
        endpoint: Endpoint,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes)> {
        let failed = |what: &str, e: &dyn std::fmt::Display| Error::VmmControl {
            request: endpoint.name().to_string(),
            message: format!("{what} on API socket {}: {e}", self.socket.display()),
        };
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| failed("cannot connect", &e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed("HTTP handshake failed", &e))?;
        // The connection future drives the socket; the guard aborts it if this request is
        // cancelled (timeout) or finishes, so nothing outlives the call.
        let driver = AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "cloud-hypervisor API connection ended with an error");
            }
        }));
        let has_body = body.is_some();
        let mut request = Request::builder()
            .method(endpoint.method())
            .uri(format!("http://localhost{}", endpoint.path()))
            .header(HOST, "localhost")
            .header(ACCEPT, "application/json");
        if has_body {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| failed("building the request failed", &e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| failed("request failed", &e))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| failed("reading the reply failed", &e))?
            .to_bytes();
        drop(driver);
        Ok((status, bytes))
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn encode<T: Serialize>(body: &T) -> Result<Bytes> {
    serde_json::to_vec(body)
        .map(Bytes::from)
        .map_err(|e| Error::Invalid(format!("encoding a cloud-hypervisor request body: {e}")))
}

fn decode<T: DeserializeOwned>(endpoint: Endpoint, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::VmmControl {
        request: endpoint.name().to_string(),
        message: format!(
            "unexpected reply ({e}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_ERROR_BODY)])
        ),
    })
}

/// CH's error body: a JSON list of messages (joined with `: `), a JSON string, or plain text.
pub fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(": "),
        Ok(serde_json::Value::String(s)) if !s.is_empty() => s,
        _ if body.iter().all(u8::is_ascii_whitespace) => "(no message)".to_string(),
        _ => {
            let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)]);
            text.trim().to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_have_paths_and_methods() {
        assert_eq!(Endpoint::VmBoot.path(), "/api/v1/vm.boot");
        assert_eq!(Endpoint::VmInfo.method(), Method::GET);
        assert_eq!(Endpoint::VmmPing.method(), Method::GET);
        assert_eq!(Endpoint::VmAddFs.method(), Method::PUT);
        let names: std::collections::HashSet<_> = Endpoint::ALL.iter().map(|e| e.name()).collect();
        assert_eq!(names.len(), Endpoint::ALL.len());
    }

    #[test]
    fn error_bodies_become_messages() {
        assert_eq!(
            error_message(br#"["Error from API","The VM could not boot","Cannot open disk"]"#),
            "Error from API: The VM could not boot: Cannot open disk"
        );
        assert_eq!(
            error_message(br#""plain json string""#),
            "plain json string"
        );
        assert_eq!(error_message(b"  oops \n"), "oops");
        assert_eq!(error_message(b""), "(no message)");
        assert_eq!(error_message(b"[]"), "[]");
    }

    #[tokio::test]
    async fn an_absent_socket_is_a_control_error_naming_the_endpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = ApiClient::new(&dir.path().join("absent.sock"), Duration::from_secs(1));
        match api.ping().await {
            Err(Error::VmmControl { request, message }) => {
                assert_eq!(request, "vmm.ping");
                assert!(message.contains("cannot connect"), "{message}");
            }
            other => panic!("expected VmmControl, got {other:?}"),
        }
    }
}
