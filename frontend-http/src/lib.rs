//! HTTP pieces shared by the HTTP front ends (native REST, E2B, Daytona), which never depend on
//! each other:
//!
//! - [`relay`]: forwarding HTTP and WebSocket requests to a port inside a sandbox, with every
//!   Platinum credential stripped and sandbox content kept out of the API's origin.
//! - [`ndjson`]: streaming responses of newline-delimited JSON.

pub mod ndjson;
pub mod relay;
