//! A real clock for TCG guests.
//!
//! Under KVM the guest reads kvm-clock. Under TCG a `microvm` guest has neither kvm-clock nor an
//! HPET or ACPI PM timer to calibrate its TSC against, and its PIT calibration fails on an
//! emulated CPU, so the kernel marks the TSC unstable and falls back to `refined-jiffies`: the
//! guest's clock then advances in 4 ms steps, every timer in it (sleeps, poll timeouts, the
//! agent's own) rounds up to a tick, and nothing measured inside the guest is finer than 4 ms.
//!
//! QEMU's TCG (without `icount`) hands the guest the host's own TSC, so the host can tell the
//! guest its frequency: `tsc_early_khz=` skips calibration, and `tsc=reliable` keeps the jiffies
//! watchdog (which lags whenever a busy host starves the vCPU) from marking it unstable again.
//! Only on x86_64 hosts with an invariant TSC (`constant_tsc` and `nonstop_tsc`); elsewhere the
//! guest keeps jiffies.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the host's TSC is compared against its monotonic clock.
const MEASURE_FOR: Duration = Duration::from_millis(20);

/// The kernel arguments that give a TCG guest the host's TSC as its clock, or nothing when the
/// host's TSC cannot serve (see the module docs). Measured once per process.
pub fn tcg_clock_args() -> Option<&'static str> {
    static ARGS: OnceLock<Option<String>> = OnceLock::new();
    ARGS.get_or_init(|| {
        let khz = host_tsc_khz()?;
        tracing::debug!(khz, "TCG guests get the host's TSC frequency");
        Some(format!("tsc_early_khz={khz} tsc=reliable"))
    })
    .as_deref()
}

/// The host TSC's frequency in kHz, when it is invariant.
fn host_tsc_khz() -> Option<u32> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    if !invariant_tsc(&cpuinfo) {
        return None;
    }
    measure_khz()
}

/// Whether `/proc/cpuinfo` lists an invariant TSC.
fn invariant_tsc(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|flags| {
            let has = |w: &str| flags.split_whitespace().any(|f| f == w);
            has("constant_tsc") && has("nonstop_tsc")
        })
}

#[cfg(target_arch = "x86_64")]
fn measure_khz() -> Option<u32> {
    // SAFETY: `rdtsc` has no preconditions on x86_64.
    let tsc = || unsafe { core::arch::x86_64::_rdtsc() };
    let (t0, c0) = (Instant::now(), tsc());
    std::thread::sleep(MEASURE_FOR);
    let (t1, c1) = (Instant::now(), tsc());
    let nanos = (t1 - t0).as_nanos();
    let khz = u128::from(c1.wrapping_sub(c0)) * 1_000_000 / nanos.max(1);
    u32::try_from(khz).ok().filter(|&k| k > 0)
}

#[cfg(not(target_arch = "x86_64"))]
fn measure_khz() -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invariant_tsc_needs_both_flags() {
        let both = "processor\t: 0\nflags\t\t: fpu tsc constant_tsc nonstop_tsc\n";
        assert!(invariant_tsc(both));
        assert!(!invariant_tsc("flags\t\t: fpu tsc constant_tsc\n"));
        assert!(!invariant_tsc("flags\t\t: fpu tsc nonstop_tsc\n"));
        assert!(!invariant_tsc("processor\t: 0\n"));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_measured_frequency_is_a_plausible_cpu_clock() {
        let khz = measure_khz().expect("a TSC frequency");
        // 100 MHz .. 10 GHz: any x86 CPU of this century.
        assert!((100_000..10_000_000).contains(&khz), "{khz} kHz");
    }
}
