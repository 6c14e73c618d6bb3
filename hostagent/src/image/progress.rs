//! Progress of image builds, for people and for logs.
//!
//! A build is a handful of steps, some of them minutes long (bootstrapping a root filesystem), some
//! with a known size (a download, a decompression, hashing a disk image). Each step shows on stderr
//! as a spinner or a byte bar when stderr is a terminal, and every step always writes a
//! `tracing::info!` line when it starts and when it ends, so a server's log shows the same
//! progress as the CLI's terminal. Steps of builds that run at the same time (the kernel and the
//! root filesystem) share one [`MultiProgress`].

use std::borrow::Cow;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often spinners redraw.
const TICK: Duration = Duration::from_millis(120);

/// Where image builds report their progress. Cheap to clone; clones draw into the same display.
#[derive(Debug, Clone)]
pub struct Progress {
    multi: MultiProgress,
}

impl Progress {
    /// Draws on stderr when stderr is a terminal and stays hidden otherwise. Either way every
    /// step is logged with `tracing::info!`.
    pub fn new() -> Self {
        if std::io::stderr().is_terminal() {
            Self {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            }
        } else {
            Self::hidden()
        }
    }

    /// Draws nothing; steps are only logged (servers, tests).
    pub fn hidden() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
        }
    }

    /// Starts a step shown as a spinner, e.g. "bootstrapping Debian bookworm".
    pub(crate) fn step(&self, what: impl Into<String>) -> Step {
        let what = what.into();
        tracing::info!(step = %what, "image build step started");
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(spinner_style());
        bar.set_prefix(what.clone());
        bar.enable_steady_tick(TICK);
        Step {
            bar,
            what,
            started: Instant::now(),
            finished: false,
        }
    }

    /// Starts a step of `total` bytes shown as a byte bar, e.g. "hashing rootfs.ext4".
    pub(crate) fn bytes(&self, what: impl Into<String>, total: u64) -> Step {
        let what = what.into();
        tracing::info!(step = %what, bytes = total, "image build step started");
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(bytes_style());
        bar.set_prefix(what.clone());
        Step {
            bar,
            what,
            started: Instant::now(),
            finished: false,
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// One running step. Finish it with [`Step::done`]; a step dropped unfinished (its build failed)
/// is marked as such on the display and in the log.
#[derive(Debug)]
pub(crate) struct Step {
    bar: ProgressBar,
    what: String,
    started: Instant,
    finished: bool,
}

impl Step {
    /// Shows what the step is doing right now (the latest line of a long-running tool).
    pub(crate) fn set_message(&self, message: impl Into<Cow<'static, str>>) {
        self.bar.set_message(message);
    }

    /// Moves a byte bar to `bytes` done.
    pub(crate) fn set_position(&self, bytes: u64) {
        self.bar.set_position(bytes);
    }

    /// Ends the step successfully; `summary` (may be empty) says what it produced.
    pub(crate) fn done(mut self, summary: impl AsRef<str>) {
        self.finished = true;
        let summary = summary.as_ref();
        let secs = self.started.elapsed().as_secs_f64();
        tracing::info!(step = %self.what, seconds = format!("{secs:.1}"), summary, "image build step done");
        self.bar.set_style(done_style());
        self.bar
            .finish_with_message(format!("done in {secs:.1}s {summary}"));
    }

    /// Seconds since the step started.
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if !self.finished {
            tracing::warn!(step = %self.what, seconds = self.started.elapsed().as_secs(), "image build step failed");
            self.bar.set_style(done_style());
            self.bar.abandon_with_message("failed");
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.cyan} {prefix} [{elapsed}] {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner:.cyan} {prefix} [{elapsed}] [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

fn done_style() -> ProgressStyle {
    ProgressStyle::with_template("  {prefix}: {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}
