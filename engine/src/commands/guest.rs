//! Probes of a sandbox's guest agent: the raw transport's round trip and the guest clock's
//! distance from the host's (the benchmarks' baselines, and checks an operator can run).

use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::ClockSkew;

impl Engine {
    /// Round-trips a payload through the guest agent (measures the raw transport).
    pub async fn ping_guest(&self, id: &str, payload: String) -> Result<Duration> {
        let (_, guest) = self.running_guest(id).await?;
        let t = Instant::now();
        let reply = guest.ping(payload.clone()).await?;
        if reply.payload != payload {
            return Err(Error::GuestUnreachable(
                "ping payload came back altered".into(),
            ));
        }
        Ok(t.elapsed())
    }

    /// How far the sandbox's wall clock is from the host's, measured now (the host agent keeps
    /// it within [`platinum_hostagent::guest::CLOCK_TOLERANCE`] on every health check).
    pub async fn clock_skew(&self, id: &str) -> Result<ClockSkew> {
        let (_, guest) = self.running_guest(id).await?;
        let offset = guest.clock_offset().await?;
        Ok(ClockSkew {
            guest_ahead: offset.guest_ahead_ns as f64 / 1e6,
            within: offset.half_trip().as_secs_f64() * 1e3,
        })
    }
}
