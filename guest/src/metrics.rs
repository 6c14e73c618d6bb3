//! `metrics`: CPU busy share since the previous call (from `/proc/stat`), memory (from
//! `/proc/meminfo`) and the root filesystem's usage (`statvfs("/")`).

use platinum_protocol::{GuestError, GuestErrorCode, MetricsReply};
use std::sync::{Mutex, PoisonError};

/// Aggregate CPU jiffies from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

/// Remembers the previous CPU sample, so each call reports usage since the one before.
#[derive(Default)]
pub struct CpuTracker {
    last: Mutex<CpuTimes>,
}

impl CpuTracker {
    /// Busy percentage between the previous sample (boot, on the first call) and `now`.
    fn usage_since_last(&self, now: CpuTimes) -> f32 {
        let prev = std::mem::replace(
            &mut *self.last.lock().unwrap_or_else(PoisonError::into_inner),
            now,
        );
        let total = now.total.saturating_sub(prev.total);
        if total == 0 {
            return 0.0;
        }
        (now.busy.saturating_sub(prev.busy) as f64 * 100.0 / total as f64) as f32
    }
}

/// Collects the current figures.
pub fn collect(cpu: &CpuTracker) -> Result<MetricsReply, GuestError> {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map_err(|e| GuestError::from_io(&e, format_args!("read {path}")))
    };
    let times = parse_cpu_times(&read("/proc/stat")?)
        .ok_or_else(|| GuestError::new(GuestErrorCode::Io, "no cpu line in /proc/stat"))?;
    let mem = parse_meminfo(&read("/proc/meminfo")?);
    let fs =
        nix::sys::statvfs::statvfs("/").map_err(|e| GuestError::from_io(&e.into(), "statvfs /"))?;
    let frag = fs.fragment_size();
    let cpu_count = nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .unwrap_or(1);
    Ok(MetricsReply {
        cpu_count: cpu_count.max(1) as u32,
        cpu_used_pct: cpu.usage_since_last(times),
        mem_total: mem.total,
        mem_used: mem.total.saturating_sub(mem.available),
        mem_cache: mem.cached,
        disk_total: fs.blocks() * frag,
        disk_used: fs.blocks().saturating_sub(fs.blocks_free()) * frag,
    })
}

fn parse_cpu_times(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest time is already in user/nice)
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

#[derive(Debug, Default, PartialEq, Eq)]
struct MemInfo {
    total: u64,
    available: u64,
    cached: u64,
}

fn parse_meminfo(text: &str) -> MemInfo {
    let mut info = MemInfo::default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(kib)) = (
            parts.next(),
            parts.next().and_then(|v| v.parse::<u64>().ok()),
        ) else {
            continue;
        };
        let bytes = kib * 1024;
        match key {
            "MemTotal:" => info.total = bytes,
            "MemAvailable:" => info.available = bytes,
            "Cached:" => info.cached = bytes,
            _ => {}
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_usage_is_the_busy_share_between_samples() {
        let first =
            parse_cpu_times("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").expect("cpu line");
        assert_eq!(
            first,
            CpuTimes {
                busy: 200,
                total: 1000
            }
        );
        let tracker = CpuTracker::default();
        assert_eq!(tracker.usage_since_last(first), 20.0);
        let second = CpuTimes {
            busy: 250,
            total: 1100,
        };
        assert_eq!(tracker.usage_since_last(second), 50.0);
        assert_eq!(tracker.usage_since_last(second), 0.0, "no time passed");
        assert_eq!(parse_cpu_times("intr 1 2 3"), None);
    }

    #[test]
    fn meminfo_is_read_in_bytes() {
        let info = parse_meminfo(
            "MemTotal:       2048 kB\nMemFree: 10 kB\nMemAvailable:   1024 kB\nCached:  512 kB\n",
        );
        assert_eq!(
            info,
            MemInfo {
                total: 2048 * 1024,
                available: 1024 * 1024,
                cached: 512 * 1024
            }
        );
    }
}
