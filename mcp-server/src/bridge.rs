//! `platinum mcp` against a running server: stdio relayed to its `/mcp` endpoint.
//!
//! Stdio clients (Claude Code, Cursor, Windsurf) start `platinum mcp` as a child process. When a
//! Platinum server is already running, that process must not open the server's state itself, so
//! it relays JSON-RPC messages unchanged between stdin/stdout and the server's Streamable HTTP
//! endpoint (with the API key). Everything the server does over HTTP — protocol negotiation,
//! progress notifications, cancellation — reaches the stdio client as it is. Each direction keeps
//! its message order: sends are created in arrival order and awaited one at a time by a writer
//! task, so a slow POST never delays reading the other direction.

use futures::future::BoxFuture;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{IntoTransport, StreamableHttpClientTransport, Transport};
use rmcp::{RoleClient, RoleServer};
use tokio::sync::mpsc;

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The server closed the MCP connection or could not be reached.
    #[error(
        "the Platinum server at {0} closed the MCP connection (is it still running, and is the API key right?)"
    )]
    ServerClosed(String),
}

/// Sends handed to a writer task, awaited in order.
type Queued = BoxFuture<'static, Result<(), String>>;

fn writer(name: &'static str) -> (mpsc::UnboundedSender<Queued>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Queued>();
    let task = tokio::spawn(async move {
        while let Some(send) = rx.recv().await {
            if let Err(e) = send.await {
                tracing::warn!(direction = name, error = %e, "relaying an MCP message failed");
            }
        }
    });
    (tx, task)
}

/// Relays stdin/stdout to `{base_url}/mcp` until stdin closes (returns `Ok`) or the server
/// goes away.
pub async fn run(base_url: &str, api_key: &str) -> Result<(), BridgeError> {
    let endpoint = format!("{}/mcp", base_url.trim_end_matches('/'));
    let mut local = IntoTransport::<RoleServer, _, _>::into_transport(rmcp::transport::stdio());
    let mut remote = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(endpoint.clone()).auth_header(api_key),
    );
    let (to_remote, remote_writer) = writer("client to server");
    let (to_local, local_writer) = writer("server to client");
    tracing::info!(%endpoint, "relaying stdio to the running server");
    let outcome = loop {
        tokio::select! {
            msg = Transport::<RoleServer>::receive(&mut local) => match msg {
                Some(m) => {
                    let send = Transport::<RoleClient>::send(&mut remote, m);
                    let _ = to_remote.send(Box::pin(async move { send.await.map_err(|e| e.to_string()) }));
                }
                None => break Ok(()),
            },
            msg = Transport::<RoleClient>::receive(&mut remote) => match msg {
                Some(m) => {
                    let send = Transport::<RoleServer>::send(&mut local, m);
                    let _ = to_local.send(Box::pin(async move { send.await.map_err(|e| e.to_string()) }));
                }
                None => break Err(BridgeError::ServerClosed(base_url.to_string())),
            },
        }
    };
    // Let queued messages out, then end the HTTP session.
    drop(to_remote);
    let _ = remote_writer.await;
    if let Err(e) = Transport::<RoleClient>::close(&mut remote).await {
        tracing::debug!(error = %e, "closing the HTTP session");
    }
    drop(to_local);
    let _ = local_writer.await;
    outcome
}
