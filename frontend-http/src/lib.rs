//! HTTP pieces shared by the HTTP front ends (native REST, E2B, Daytona), which never depend on
//! each other:
//!
//! - [`relay`]: forwarding HTTP and WebSocket requests to a port inside a sandbox, with every
//!   Platinum credential stripped and sandbox content kept out of the API's origin.
//! - [`edge`]: the product's edge proxy (Host and path forms, tokens and cookies, waking).
//! - [`ndjson`]: streaming responses of newline-delimited JSON.
//! - [`origin`]: the URL a request reached the server at, for links handed back to clients.

pub mod edge;
pub mod ndjson;
pub mod origin;
pub mod relay;
