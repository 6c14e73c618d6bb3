//! Secrets brokered at egress: the guest holds only a placeholder; the host puts the secret in.
//!
//! - [`ca`]: this host's CA (one per host, key 0600 in the data directory, never leaves it),
//!   which every sandbox trusts and which signs the leaf certificates the broker presents.
//! - [`registry`]: which sandbox has which placeholders, for which hosts, and which headers its
//!   requests to given hosts get (values in memory only, wiped on drop).
//! - [`forward`]: [`forward::Broker::broker`], one intercepted TLS connection: terminated with a leaf
//!   for its SNI, forwarded as HTTP/1.1 to the real server (verified against the host's trust
//!   store) with placeholders in request header values replaced by the secrets bound to that
//!   host, and the sandbox's header rules for that host applied.
//! - [`replay`]: a stream that first gives back bytes already read from it (the ClientHello the
//!   egress proxy peeked at).
//!
//! A placeholder sent to a host its secret is not bound to goes out unreplaced: the server sees
//! a random string that means nothing anywhere else.

pub mod ca;
pub mod forward;
pub mod registry;
pub mod replay;

pub use ca::HostCa;
pub use forward::{Broker, BrokerOptions};
pub use registry::{
    BrokerPlan, BrokeredEgress, BrokeredSecret, HeaderRule, Replacements, SecretRegistry,
    host_matches,
};
