//! Plugins as the API shows them: status and metrics, refused files, and what happened to them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::vocabulary::{PluginAction, PluginLayer, PluginState, StageKind};

/// The state of one plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginStatus {
    /// File name without `.wasm`.
    pub name: String,
    /// Detector or aggregator.
    pub kind: StageKind,
    /// The version the plugin reports.
    pub version: String,
    /// The version of the WIT contract it was built against (`0.2.0`, or `0.1.0` for a plugin
    /// built before batches were columns).
    #[serde(default)]
    pub contract: String,
    /// The folder its file is in: `built_in`, or `drop_in` (added to the built-ins, or replacing
    /// the built-in of its name). None for a plugin not loaded from the folders.
    #[serde(default)]
    pub layer: Option<PluginLayer>,
    /// Calls made.
    pub calls: u64,
    /// Readings passed in.
    pub readings_in: u64,
    /// Outputs returned.
    pub outputs: u64,
    /// Failed calls.
    pub errors: u64,
    /// Re-instantiations after a trap.
    pub restarts: u64,
    /// Times a checkpoint replaced its instance, whose memory had grown past its ceiling, with a
    /// fresh one holding its state (docs/plugins.md, "Memory").
    #[serde(default)]
    pub memory_replacements: u64,
    /// Mean time per call, microseconds.
    pub mean_call_micros: f64,
    /// The last failure.
    pub last_error: Option<String>,
    /// `running`; `backoff` (it failed lately and its calls are skipped until the backoff ends); or
    /// `quarantined` (it failed too often in a row and is not called until it is reloaded).
    pub state: PluginState,
    /// Failed calls in a row (0 after a successful call).
    pub consecutive_failures: u32,
    /// Readings not passed to it because it was in backoff or quarantined.
    pub skipped_readings: u64,
    /// Linear memory of its live instance, bytes (0 while it has none).
    pub memory_bytes: u64,
    /// Size of its last exported state, the point it restarts from after a failure, bytes.
    pub state_bytes: u64,
    /// Median time per call, microseconds, estimated from `call_micros_buckets`.
    pub p50_call_micros: f64,
    /// 99th percentile time per call, microseconds, estimated from `call_micros_buckets`.
    pub p99_call_micros: f64,
    /// Total time in calls, microseconds.
    pub busy_micros: u64,
    /// Per bound of [`CALL_MICROS_BUCKETS`], the calls that took at most that long (cumulative; the
    /// calls above the last bound are `calls` minus the last count).
    pub call_micros_buckets: Vec<u64>,
}

/// Upper bounds of the call-time histogram, microseconds: 1-2-5 steps from 10 µs to 10 s (a call
/// is stopped at its 5 s deadline), so any percentile is known within its bucket at every scale.
pub const CALL_MICROS_BUCKETS: [u64; 19] = [
    10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000,
    2_000_000, 5_000_000, 10_000_000,
];

/// The `q` quantile (0 to 1) of a histogram of `count` observations with `cumulative` counts per
/// bound of [`CALL_MICROS_BUCKETS`], interpolated linearly within its bucket (as Prometheus's
/// `histogram_quantile` does); 0 without observations.
pub fn call_micros_quantile(cumulative: &[u64], count: u64, q: f64) -> f64 {
    if count == 0 {
        return 0.0;
    }
    let rank = q.clamp(0.0, 1.0) * count as f64;
    let (mut lower, mut below) = (0.0, 0);
    for (&bound, &at_most) in CALL_MICROS_BUCKETS.iter().zip(cumulative) {
        if at_most as f64 >= rank && at_most > below {
            let within = (rank - below as f64) / (at_most - below) as f64;
            return lower + (bound as f64 - lower) * within;
        }
        (lower, below) = (bound as f64, at_most);
    }
    // Above the last bound: report the bound, as Prometheus does for its +Inf bucket.
    lower
}

/// A plugin file that could not be loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginFailure {
    /// The plugin (its file name without `.wasm`).
    #[serde(default)]
    pub plugin: String,
    /// The error.
    pub error: String,
}

/// Something that happened to a plugin while the host ran: loaded, swapped, removed, refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginEvent {
    /// When.
    pub at: DateTime<Utc>,
    /// The plugin.
    pub plugin: String,
    /// What happened.
    pub action: PluginAction,
    /// Details: the version, whether its state was handed over, how long the swap paused the
    /// pipeline, or why the file was refused.
    pub detail: String,
}
