//! What a plugin has done since it was loaded: [`PluginMetrics`], with the distribution of its call
//! times in [`CallTimes`].

use std::time::Duration;

use iotstream_api::{CALL_MICROS_BUCKETS, call_micros_quantile};

use super::health::PluginState;

/// Counters and gauges of one plugin, since it was loaded.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PluginMetrics {
    /// Calls made (declare, detect, aggregate, tick, export, import).
    pub calls: u64,
    /// Readings passed in.
    pub readings_in: u64,
    /// Detections or aggregates returned.
    pub outputs: u64,
    /// Calls that failed (skipped calls are not failures).
    pub errors: u64,
    /// Times the instance was re-created after a trap or malformed output.
    pub restarts: u64,
    /// Times a checkpoint replaced the instance, its memory grown past its ceiling, with a fresh
    /// one holding its state (`Plugin::checkpoint_state`).
    pub memory_replacements: u64,
    /// Total time in calls, microseconds.
    pub busy_micros: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Readings not passed in because the plugin was in backoff or quarantined.
    pub skipped_readings: u64,
    /// Failed calls in a row.
    pub consecutive_failures: u32,
    /// Running, in backoff or quarantined.
    pub state: PluginState,
    /// Linear memory of the live instance, bytes (0 while there is none).
    pub memory_bytes: u64,
    /// Size of the last exported (or imported) state, the restart point, bytes.
    pub state_bytes: u64,
    /// How long calls took.
    pub call_times: CallTimes,
}

/// A histogram of call times over the fixed bounds of [`CALL_MICROS_BUCKETS`]: constant memory, and
/// the same buckets the Prometheus histogram of `GET /metrics` has.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CallTimes {
    /// Calls per bucket: `counts[i]` took at most `CALL_MICROS_BUCKETS[i]` and more than the bound
    /// before; the last counts the calls above every bound.
    counts: [u64; CALL_MICROS_BUCKETS.len() + 1],
}

impl CallTimes {
    /// Counts one call.
    pub fn record(&mut self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = CALL_MICROS_BUCKETS.partition_point(|&bound| bound < micros);
        self.counts[bucket] += 1;
    }

    /// Calls counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Per bound of [`CALL_MICROS_BUCKETS`], the calls that took at most that long.
    pub fn cumulative(&self) -> Vec<u64> {
        self.counts[..CALL_MICROS_BUCKETS.len()]
            .iter()
            .scan(0, |total, count| {
                *total += count;
                Some(*total)
            })
            .collect()
    }

    /// The `q` quantile (0 to 1) in microseconds, interpolated within its bucket.
    pub fn quantile_micros(&self, q: f64) -> f64 {
        call_micros_quantile(&self.cumulative(), self.count(), q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_land_in_the_bucket_of_their_upper_bound() {
        let mut times = CallTimes::default();
        for micros in [0, 10, 11, 20, 15_000, 99_000_000] {
            times.record(Duration::from_micros(micros));
        }
        let cumulative = times.cumulative();
        // 0 and 10 µs are at most 10; 11 and 20 at most 20; 15 ms at most 20 ms; 99 s above all.
        assert_eq!(&cumulative[..3], [2, 4, 4]);
        assert_eq!((CALL_MICROS_BUCKETS[10], cumulative[10]), (20_000, 5));
        assert_eq!((cumulative[18], times.count()), (5, 6));
        assert_eq!(times.quantile_micros(0.5), 15.0);
    }
}
