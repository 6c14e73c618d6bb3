//! Keeping the guest's wall clock on the host's.
//!
//! The agent sets the clock from `hello` at boot, but a guest clock drifts (under TCG without a
//! usable TSC it loses whole ticks whenever the host is busy) and stands still while the VM is
//! paused. The host measures the offset NTP-style, one `read_clock` round trip bracketed by two
//! host readings (the guest read it somewhere in between, so the error is at most half the round
//! trip), and when it exceeds [`CLOCK_TOLERANCE`] sets the guest clock to the host's time plus
//! half a round trip (the time the `set_clock` takes to arrive). The host agent does this after
//! resume and on every health check.

use platinum_protocol::{ClockReply, Request};
use std::time::{Duration, Instant};

use super::client::{GuestClient, unix_now_ns};
use crate::error::Result;

/// Offsets up to this are left alone.
pub const CLOCK_TOLERANCE: Duration = Duration::from_millis(20);

/// How far the guest's wall clock is from the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockOffset {
    /// Guest time minus host time, nanoseconds (negative: the guest is behind).
    pub guest_ahead_ns: i64,
    /// The round trip of the measurement; the offset is known to within half of it.
    pub round_trip: Duration,
}

impl ClockOffset {
    /// The offset's size.
    pub fn magnitude(&self) -> Duration {
        Duration::from_nanos(self.guest_ahead_ns.unsigned_abs())
    }

    /// Half the round trip: the offset's uncertainty, and how long a message takes one way.
    pub fn half_trip(&self) -> Duration {
        self.round_trip / 2
    }
}

/// `d` in nanoseconds, as a clock offset (saturating).
fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl GuestClient {
    /// Measures how far the guest's clock is from the host's.
    pub async fn clock_offset(&self) -> Result<ClockOffset> {
        let (sent_ns, sent) = (unix_now_ns(), Instant::now());
        let reply: ClockReply = self.call_timed(&Request::ReadClock).await?;
        let mut offset = ClockOffset {
            guest_ahead_ns: 0,
            round_trip: sent.elapsed(),
        };
        let midpoint_ns = sent_ns.saturating_add(nanos(offset.half_trip()));
        offset.guest_ahead_ns = reply.unix_ns.saturating_sub(midpoint_ns);
        Ok(offset)
    }

    /// Measures the offset and, past [`CLOCK_TOLERANCE`], sets the guest clock. Returns the
    /// offset found (before the correction).
    pub async fn keep_clock(&self) -> Result<ClockOffset> {
        let offset = self.clock_offset().await?;
        if offset.magnitude() > CLOCK_TOLERANCE {
            self.call_timed::<serde_json::Value>(&Request::SetClock {
                unix_ns: unix_now_ns().saturating_add(nanos(offset.half_trip())),
            })
            .await?;
            tracing::debug!(
                guest_ahead_ns = offset.guest_ahead_ns,
                "guest clock corrected"
            );
        }
        Ok(offset)
    }
}
