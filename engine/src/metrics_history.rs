//! A bounded history of each sandbox's metrics, for callers that ask for a time range (E2B's
//! `get_metrics(start, end)`).
//!
//! A sampler takes one sample of every running sandbox every [`SAMPLE_EVERY`] (the guest's
//! `metrics`; CPU busy since the previous sample) and keeps the newest [`KEEP_SAMPLES`] per
//! sandbox (an hour). Sampling is not activity: it never postpones an idle sandbox's auto-stop. A
//! sandbox's history goes once it is neither running nor paused. Samples live in memory only: a
//! server restart starts them afresh.

use futures::StreamExt;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{MetricsSample, SandboxState};

/// How often every running sandbox is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Samples kept per sandbox (an hour at [`SAMPLE_EVERY`]).
pub const KEEP_SAMPLES: usize = 720;

/// Sandboxes sampled at the same time.
const CONCURRENT_SAMPLES: usize = 8;

/// The samples of every live sandbox, newest last.
#[derive(Default)]
pub struct MetricsHistory {
    samples: Mutex<HashMap<String, VecDeque<MetricsSample>>>,
}

impl MetricsHistory {
    fn record(&self, id: &str, sample: MetricsSample) {
        let mut all = self.samples.lock().expect("metrics history");
        let kept = all.entry(id.to_string()).or_default();
        kept.push_back(sample);
        while kept.len() > KEEP_SAMPLES {
            kept.pop_front();
        }
    }

    /// Forgets every sandbox not in `live`.
    fn retain(&self, live: &HashSet<String>) {
        self.samples
            .lock()
            .expect("metrics history")
            .retain(|id, _| live.contains(id));
    }

    /// The samples of `id` taken within `[start, end]`.
    fn range(
        &self,
        id: &str,
        start: Option<OffsetDateTime>,
        end: Option<OffsetDateTime>,
    ) -> Vec<MetricsSample> {
        let all = self.samples.lock().expect("metrics history");
        all.get(id)
            .map(|kept| {
                kept.iter()
                    .filter(|s| start.is_none_or(|t| s.at >= t) && end.is_none_or(|t| s.at <= t))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn is_empty_for(&self, id: &str) -> bool {
        self.samples
            .lock()
            .expect("metrics history")
            .get(id)
            .is_none_or(VecDeque::is_empty)
    }
}

impl Engine {
    /// The sandbox's metrics samples taken within `[start, end]` (either bound open), oldest
    /// first. A running sandbox that has none yet is sampled now, so it always has one.
    pub async fn metrics_history(
        &self,
        id: &str,
        start: Option<OffsetDateTime>,
        end: Option<OffsetDateTime>,
    ) -> Result<Vec<MetricsSample>> {
        if let (Some(start), Some(end)) = (start, end)
            && start > end
        {
            return Err(Error::InvalidRequest(
                "the metrics range starts after it ends".into(),
            ));
        }
        let sandbox = self.load(id).await?;
        if sandbox.state == SandboxState::Running && self.metrics.is_empty_for(id) {
            self.sample_metrics(id).await?;
        }
        Ok(self.metrics.range(id, start, end))
    }

    /// Takes and records one sample (without counting as activity).
    async fn sample_metrics(&self, id: &str) -> Result<()> {
        let guest = self.host.guest(id).await?;
        let metrics = guest.metrics().await?.into();
        self.metrics.record(
            id,
            MetricsSample {
                at: OffsetDateTime::now_utc(),
                metrics,
            },
        );
        Ok(())
    }
}

/// Starts the sampler; it ends when the engine's background work is stopped.
pub fn spawn(engine: Arc<Engine>) {
    engine.every(SAMPLE_EVERY, "metrics sampling", |engine| async move {
        sample_all(&engine).await
    });
}

/// One pass: a sample of every running sandbox, then the histories of the ones gone pruned.
async fn sample_all(engine: &Engine) -> Result<()> {
    let live = engine
        .store
        .sandboxes_in_states(&[SandboxState::Running, SandboxState::Paused])
        .await?;
    futures::stream::iter(
        live.iter()
            .filter(|s| s.state == SandboxState::Running)
            .map(|s| s.id.as_str()),
    )
    .for_each_concurrent(CONCURRENT_SAMPLES, |id| async move {
        if let Err(e) = engine.sample_metrics(id).await {
            tracing::debug!(sandbox = %id, error = %e, "no metrics sample");
        }
    })
    .await;
    engine
        .metrics
        .retain(&live.into_iter().map(|s| s.id).collect());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SandboxMetrics;

    fn sample(at_secs: i64) -> MetricsSample {
        MetricsSample {
            at: OffsetDateTime::from_unix_timestamp(at_secs).expect("time"),
            metrics: SandboxMetrics {
                cpu_count: 1,
                cpu_used_pct: 0.0,
                mem_total: 1,
                mem_used: 1,
                mem_cache: 0,
                disk_total: 1,
                disk_used: 1,
            },
        }
    }

    fn at(secs: i64) -> Option<OffsetDateTime> {
        Some(OffsetDateTime::from_unix_timestamp(secs).expect("time"))
    }

    #[test]
    fn keeps_the_newest_samples_and_answers_ranges() {
        let h = MetricsHistory::default();
        for t in 0..(KEEP_SAMPLES as i64 + 10) {
            h.record("a", sample(t));
        }
        let all = h.range("a", None, None);
        assert_eq!(all.len(), KEEP_SAMPLES);
        assert_eq!(all[0].at, at(10).unwrap(), "the oldest went first");
        let some = h.range("a", at(100), at(102));
        assert_eq!(
            some.iter()
                .map(|s| s.at.unix_timestamp())
                .collect::<Vec<_>>(),
            [100, 101, 102]
        );
        assert!(h.range("a", at(10_000), None).is_empty());
        assert!(h.range("nobody", None, None).is_empty());

        h.record("b", sample(1));
        h.retain(&HashSet::from(["b".to_string()]));
        assert!(h.is_empty_for("a") && !h.is_empty_for("b"));
    }
}
