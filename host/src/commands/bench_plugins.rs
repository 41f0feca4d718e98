//! `iotstream bench-plugins`: each plugin alone, over the same simulated readings in one run: its
//! algorithm natively, its SDK stage natively (the batch path its `.wasm` runs, less the boundary)
//! and its `.wasm` through the host: readings/s, and what the component boundary and the sandbox
//! cost.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use iotstream_plugin_sdk::SensorIdentity;
use iotstream_plugin_sdk::detector::Detector;
use serde::Serialize;

use crate::plugins::bindings::Reading as WitReading;
use crate::plugins::{Plugin, PluginError, PluginLimits, PluginRuntime, READINGS_PER_CALL, SensorCatalog};
use crate::reading::Reading;
use crate::simulate::Fleet;

/// Readings per plugin call, as the pipeline's default batch.
const BATCH: usize = 5000;

/// Readings per plugin call for the call-time percentiles: a lane's batch at 10,000 readings/s over
/// 4 lanes with the default 50 ms linger (~125), where one slow call holds the live stream.
const LIVE_BATCH: usize = 100;

/// `iotstream bench-plugins`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchPluginsConfig {
    /// Readings through each plugin.
    #[arg(long, default_value_t = 500_000)]
    pub readings: usize,
    /// Simulated sensors.
    #[arg(long, default_value_t = 50)]
    pub sensors: usize,
    /// Where the plugins' `.wasm` files are.
    #[command(flatten)]
    pub builtin_plugins: BuiltinPluginsDir,
    /// Measure only these plugins (comma-separated; default: every one), for example to profile one.
    #[arg(long, value_delimiter = ',', value_name = "PLUGIN")]
    pub only: Vec<Shipped>,
    /// The most readings one call of a `.wasm` carries (`iotstream run --plugin-readings-per-call`):
    /// its batches of 5000 are passed in calls of at most this many, as the pipeline passes them.
    #[arg(long, default_value_t = READINGS_PER_CALL)]
    pub readings_per_call: NonZeroUsize,
}

/// The folder whose shipped plugins a bench measures.
#[derive(Debug, Clone, clap::Args)]
pub struct BuiltinPluginsDir {
    /// Folder of the built-in plugins whose `.wasm` files are measured (by `bench-plugins`,
    /// against the same algorithms compiled into this binary: a drop-in of the same name may be
    /// another algorithm). Default: as `iotstream run`'s.
    #[arg(
        long = "builtin-plugins",
        env = "IOTSTREAM_BUILTIN_PLUGINS",
        value_name = "DIR",
        default_value_os_t = crate::config::default_dist_folder("plugins")
    )]
    pub dir: PathBuf,
}

impl BuiltinPluginsDir {
    /// The `.wasm` file of `shipped` in this folder.
    pub fn wasm(&self, shipped: Shipped) -> PathBuf {
        self.dir.join(format!("{}.wasm", shipped.name()))
    }
}

/// One plugin's throughput, both ways.
#[derive(Debug, Clone, Serialize)]
pub struct PluginThroughput {
    /// The plugin.
    pub plugin: String,
    /// Its algorithm compiled natively into this binary.
    pub native_readings_per_s: f64,
    /// The whole plugin compiled natively into this binary: its SDK stage over the same calls as
    /// its `.wasm` gets, each a batch of columns, answered in columns (the code its `.wasm` runs,
    /// less the boundary). The `.wasm` against it is what the boundary and the compiler cost.
    pub native_stage_readings_per_s: f64,
    /// Its `.wasm` through the host, in batches of 5000 (in calls of at most `--readings-per-call`).
    pub wasm_readings_per_s: f64,
    /// The forest's longest single reading natively, milliseconds: its longest retraining pause
    /// (not timed for the other plugins, whose per-reading cost the timer itself would distort).
    pub longest_native_call_ms: f64,
    /// Loading the `.wasm` (compile, instantiate, `create`), milliseconds.
    pub load_ms: f64,
    /// Another instance of the compiled component (instantiate and `create`), milliseconds: what a
    /// restart from the last good state costs before the state import.
    pub instantiate_ms: f64,
    /// Median time of a call with one reading, microseconds: the fixed cost of a call (deadline,
    /// crossing into the sandbox, metrics), paid once per call.
    pub call_overhead_us: f64,
    /// The `.wasm`'s calls of 100 readings (a live lane's batch), milliseconds: p50, p99 and the
    /// longest, over every reading in a fresh instance. A stage's slowest calls (a forest's fits)
    /// are what the live stream's latency tail waits on.
    pub live_call_ms: CallPercentiles,
}

/// Percentiles of call times, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CallPercentiles {
    /// The median call.
    pub p50: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The longest call.
    pub max: f64,
}

impl CallPercentiles {
    /// The percentiles of `times` (any order), interpolated as `iotstream bench`'s latencies are
    /// ([`super::bench_stream::percentile_cont`]); all 0 for no times.
    fn of(times: &[f64]) -> Self {
        let at = |p| super::bench_stream::percentile_cont(times, p).unwrap_or_default();
        CallPercentiles { p50: at(0.5), p99: at(0.99), max: at(1.0) }
    }
}

/// The shipped plugins this command measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shipped {
    /// The z-score detector.
    #[value(name = "zscore")]
    ZScore,
    /// The Isolation Forest detector.
    IsolationForest,
    /// The novelty detector.
    Novelty,
    /// The 1-minute tumbling windows.
    TumblingWindow,
}

/// The plugin SDK's catalog of the keys the host's catalog gave `wit`'s readings, each with its
/// reading's identity: what a detector's `.wasm` is declared, for its native side.
fn sdk_catalog(wit: &[WitReading], identities: &[SensorIdentity]) -> iotstream_plugin_sdk::Catalog {
    let mut catalog = iotstream_plugin_sdk::Catalog::default();
    for (key, identity) in declarations(wit, identities) {
        catalog.declare(key, identity);
    }
    catalog
}

/// Each sensor key of `wit` with the identity of its first reading: what the host declares to a
/// stage, for a native stage (made before its timing starts).
fn declarations(wit: &[WitReading], identities: &[SensorIdentity]) -> Vec<(u32, SensorIdentity)> {
    let mut declared = std::collections::BTreeMap::new();
    for (reading, identity) in wit.iter().zip(identities) {
        declared.entry(reading.sensor).or_insert_with(|| identity.clone());
    }
    declared.into_iter().collect()
}

impl Shipped {
    const ALL: [Shipped; 4] = [Shipped::ZScore, Shipped::IsolationForest, Shipped::Novelty, Shipped::TumblingWindow];

    /// Its plugin name (its `.wasm` file's stem).
    fn name(self) -> &'static str {
        match self {
            Shipped::ZScore => "zscore",
            Shipped::IsolationForest => "isolation-forest",
            Shipped::Novelty => "novelty",
            Shipped::TumblingWindow => "tumbling-window",
        }
    }

    /// Runs the algorithm natively over `readings`; returns the longest single call, ms (measured
    /// for the forest, whose retraining makes some calls long; 0 for the others). The windows close
    /// their ready windows after every `per_call` readings, as their `.wasm` does after each call.
    fn run_native(
        self,
        readings: &[Reading],
        identities: &[SensorIdentity],
        wit: &[WitReading],
        per_call: NonZeroUsize,
    ) -> f64 {
        let mut longest = 0.0_f64;
        match self {
            Shipped::ZScore => {
                let mut d = zscore::zscore::ZScore::create(Default::default())
                    .unwrap_or_else(|_| unreachable!("defaults are valid"));
                for (r, id) in readings.iter().zip(identities) {
                    std::hint::black_box(d.judge(id, r.timestamp.timestamp_millis(), r.value));
                }
            }
            Shipped::IsolationForest => {
                // In calls of `per_call` readings through `judge_batch`, as its `.wasm` is called:
                // the forest scores a call's readings of a type together.
                let mut d = isolation_forest::detector::OnlineForest::create(Default::default())
                    .unwrap_or_else(|_| unreachable!("defaults are valid"));
                let catalog = sdk_catalog(wit, identities);
                for chunk in wit.chunks(per_call.get()) {
                    let batch: iotstream_plugin_sdk::Batch =
                        chunk.iter().map(|r| (r.sensor, r.timestamp_ms, r.value)).collect();
                    let call = Instant::now();
                    let Ok(resolved) = iotstream_plugin_sdk::ResolvedBatch::new(&catalog, &batch) else {
                        unreachable!("every key is declared")
                    };
                    let mut out = iotstream_plugin_sdk::DetectionColumns::with_capacity(batch.len());
                    if d.judge_batch(resolved, &mut out).is_err() {
                        unreachable!("the forest refuses no batch");
                    }
                    std::hint::black_box(out);
                    longest = longest.max(call.elapsed().as_secs_f64() * 1000.0);
                }
            }
            Shipped::Novelty => {
                let mut d = novelty::novelty::Novelty::create(Default::default())
                    .unwrap_or_else(|_| unreachable!("defaults are valid"));
                for (r, id) in readings.iter().zip(identities) {
                    std::hint::black_box(d.judge(id, r.timestamp.timestamp_millis(), r.value));
                }
            }
            Shipped::TumblingWindow => {
                let mut w = tumbling_window::window::TumblingWindows::new(Default::default());
                for chunk in readings.chunks(per_call.get()).zip(identities.chunks(per_call.get())) {
                    for (r, id) in chunk.0.iter().zip(chunk.1) {
                        w.add(&id.location, id.sensor_type, r.timestamp.timestamp_millis(), r.value, false);
                    }
                    std::hint::black_box(w.close_ready());
                }
            }
        }
        longest
    }

    /// Runs the whole plugin natively, as its `.wasm` is run: its SDK stage created from `{}`,
    /// `declared` declared, then `wit` in the `.wasm`'s calls (batches of [`BATCH`], each in calls of
    /// at most `per_call`), each call's readings as the columns its bindings receive.
    fn run_native_stage(self, wit: &[WitReading], declared: Vec<(u32, SensorIdentity)>, per_call: NonZeroUsize) {
        let calls = || wit.chunks(BATCH).flat_map(|batch| batch.chunks(per_call.get()));
        match self {
            Shipped::ZScore => detect_natively::<zscore::zscore::ZScore>(declared, calls()),
            Shipped::IsolationForest => {
                detect_natively::<isolation_forest::detector::OnlineForest>(declared, calls());
            }
            Shipped::Novelty => detect_natively::<novelty::novelty::Novelty>(declared, calls()),
            Shipped::TumblingWindow => {
                use iotstream_plugin_sdk::aggregator::AggregatorStage;
                let Ok(stage) = AggregatorStage::<tumbling_window::window::TumblingWindows>::create("{}") else {
                    unreachable!("defaults are valid")
                };
                stage.declare(declared);
                for call in calls() {
                    let Ok(windows) = stage.aggregate(&columns(call)) else { unreachable!("every key is declared") };
                    std::hint::black_box(windows);
                }
            }
        }
    }

    /// One call of the plugin's stage over `readings` (its outputs dropped).
    pub(super) fn call(
        self,
        plugin: &mut Plugin,
        catalog: &SensorCatalog,
        readings: &[WitReading],
    ) -> Result<(), PluginError> {
        match self {
            Shipped::TumblingWindow => std::hint::black_box(plugin.aggregate(catalog, readings)).map(|_| ()),
            Shipped::ZScore | Shipped::IsolationForest | Shipped::Novelty => {
                std::hint::black_box(plugin.detect(catalog, readings)).map(|_| ())
            }
        }
    }
}

/// A detector's SDK stage, natively: `declared`, then each of `calls` (see
/// [`Shipped::run_native_stage`]).
fn detect_natively<'a, D: Detector>(
    declared: Vec<(u32, SensorIdentity)>,
    calls: impl Iterator<Item = &'a [WitReading]>,
) {
    use iotstream_plugin_sdk::detector::DetectorStage;
    let Ok(stage) = DetectorStage::<D>::create("{}") else { unreachable!("defaults are valid") };
    stage.declare(declared);
    for call in calls {
        let Ok(detections) = stage.detect(&columns(call)) else { unreachable!("every key is declared") };
        std::hint::black_box(detections);
    }
}

/// `call` as the columns a stage's bindings receive: the columns the host lowers into a `.wasm`.
fn columns(call: &[WitReading]) -> iotstream_plugin_sdk::Batch {
    crate::plugins::bindings::columnar::readings(call).into()
}

/// The readings every plugin is measured on, with their sensors' identities.
fn simulated(config: &BenchPluginsConfig) -> (Vec<Reading>, Vec<SensorIdentity>) {
    // One reading every 20 ms of event time: 500 000 readings span ~3 hours, so windows close and
    // forests retrain as they would live.
    let start: DateTime<Utc> = Utc.timestamp_millis_opt(1_767_225_600_000).single().unwrap_or_default();
    let mut fleet = Fleet::new(config.sensors, 0.002, 7);
    let readings: Vec<Reading> =
        (0..config.readings).map(|i| fleet.next_reading(start + Duration::milliseconds(i as i64 * 20))).collect();
    // Each name one shared string, as a plugin's catalog keeps them (its pool of names): the
    // native algorithms then find a sensor's or a location's state by pointer, as their `.wasm` does.
    let mut names: HashMap<String, Arc<str>> = HashMap::new();
    let mut shared =
        |name: &str| -> Arc<str> { Arc::clone(names.entry(name.to_owned()).or_insert_with(|| Arc::from(name))) };
    let identities = readings
        .iter()
        .map(|r| SensorIdentity {
            sensor_id: shared(r.sensor_id.as_str()),
            sensor_type: r.sensor_type,
            location: shared(r.location.as_str()),
        })
        .collect();
    (readings, identities)
}

/// Readings per second of `n` readings handled since `started`.
fn per_second(n: usize, started: Instant) -> f64 {
    n as f64 / started.elapsed().as_secs_f64()
}

/// Runs every plugin both ways over the same readings.
pub fn bench_plugins(config: &BenchPluginsConfig) -> Result<Vec<PluginThroughput>, PluginError> {
    let (readings, identities) = simulated(config);
    let runtime = PluginRuntime::with_limits(PluginLimits {
        readings_per_call: config.readings_per_call,
        ..PluginLimits::default()
    })?;
    let mut catalog = SensorCatalog::default();
    let wit: Vec<WitReading> = readings.iter().map(|r| catalog.wit_reading(r)).collect();
    let mut results = Vec::new();
    for shipped in Shipped::ALL.into_iter().filter(|s| config.only.is_empty() || config.only.contains(s)) {
        let started = Instant::now();
        let longest_native_call_ms = shipped.run_native(&readings, &identities, &wit, config.readings_per_call);
        let native_readings_per_s = per_second(readings.len(), started);
        let declared = declarations(&wit, &identities);
        let started = Instant::now();
        shipped.run_native_stage(&wit, declared, config.readings_per_call);
        let native_stage_readings_per_s = per_second(wit.len(), started);
        let mut measured = measure_wasm(config, &runtime, shipped, &catalog, &wit)?;
        measured.native_readings_per_s = native_readings_per_s;
        measured.native_stage_readings_per_s = native_stage_readings_per_s;
        measured.longest_native_call_ms = longest_native_call_ms;
        results.push(measured);
    }
    Ok(results)
}

/// The plugin's `.wasm` through the host: load and instantiation times, the median cost of a
/// one-reading call (the boundary's fixed cost), and readings/s over `wit` in batches.
fn measure_wasm(
    config: &BenchPluginsConfig,
    runtime: &PluginRuntime,
    shipped: Shipped,
    catalog: &SensorCatalog,
    wit: &[WitReading],
) -> Result<PluginThroughput, PluginError> {
    let loading = Instant::now();
    let path = config.builtin_plugins.wasm(shipped);
    let mut plugin = runtime.load_with_config(&path, Some("{}".into()))?;
    let load_ms = loading.elapsed().as_secs_f64() * 1000.0;
    let instantiating = Instant::now();
    let mut fresh = plugin.new_instance(None)?;
    let instantiate_ms = instantiating.elapsed().as_secs_f64() * 1000.0;
    let mut calls: Vec<f64> = wit[..wit.len().min(2000)]
        .chunks(1)
        .map(|one| {
            let call = Instant::now();
            shipped.call(&mut fresh, catalog, one).map(|()| call.elapsed().as_secs_f64() * 1e6)
        })
        .collect::<Result<_, _>>()?;
    calls.sort_by(f64::total_cmp);
    let call_overhead_us = calls.get(calls.len() / 2).copied().unwrap_or_default();
    let started = Instant::now();
    for chunk in wit.chunks(BATCH) {
        shipped.call(&mut plugin, catalog, chunk)?;
    }
    let wasm_readings_per_s = per_second(wit.len(), started);
    let mut live = plugin.new_instance(None)?;
    let live_calls = wit
        .chunks(LIVE_BATCH)
        .map(|chunk| {
            let call = Instant::now();
            shipped.call(&mut live, catalog, chunk).map(|()| call.elapsed().as_secs_f64() * 1000.0)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PluginThroughput {
        plugin: shipped.name().to_owned(),
        native_readings_per_s: 0.0,
        native_stage_readings_per_s: 0.0,
        wasm_readings_per_s,
        longest_native_call_ms: 0.0,
        load_ms,
        instantiate_ms,
        call_overhead_us,
        live_call_ms: CallPercentiles::of(&live_calls),
    })
}

/// Prints `results`: one JSON line each on stdout, a table on stderr.
pub fn print(results: &[PluginThroughput]) -> anyhow::Result<()> {
    for r in results {
        super::print_json(r)?;
        eprintln!(
            "{:<17} native {:>12.0} readings/s   wasm {:>12.0} readings/s   ({:.2}x)   \
             native stage {:>12.0} readings/s ({:.2}x; the boundary and the compiler {:.0} ns a reading)   \
             longest call {:.2} ms   load {:.0} ms   new instance {:.2} ms   call overhead {:.1} us   \
             calls of {LIVE_BATCH}: p50 {:.3} p99 {:.3} max {:.3} ms",
            r.plugin,
            r.native_readings_per_s,
            r.wasm_readings_per_s,
            r.native_readings_per_s / r.wasm_readings_per_s,
            r.native_stage_readings_per_s,
            r.native_stage_readings_per_s / r.wasm_readings_per_s,
            1e9 / r.wasm_readings_per_s - 1e9 / r.native_stage_readings_per_s,
            r.longest_native_call_ms,
            r.load_ms,
            r.instantiate_ms,
            r.call_overhead_us,
            r.live_call_ms.p50,
            r.live_call_ms.p99,
            r.live_call_ms.max
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{Parser, ValueEnum};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: BenchPluginsConfig,
    }

    #[test]
    fn call_percentiles_interpolate_as_the_latencies_do() {
        // 0..=100 ms in reverse: ranks 50, 99 and 100 fall on values; 0..=3 puts the median
        // halfway between 1 and 2.
        let times: Vec<f64> = (0..=100).rev().map(f64::from).collect();
        assert_eq!(CallPercentiles::of(&times), CallPercentiles { p50: 50.0, p99: 99.0, max: 100.0 });
        assert_eq!(CallPercentiles::of(&[3.0, 0.0, 2.0, 1.0]).p50, 1.5);
        assert_eq!(CallPercentiles::of(&[]), CallPercentiles::default());
    }

    #[test]
    fn only_names_plugins_as_their_files_are_named() {
        for shipped in Shipped::ALL {
            assert_eq!(Shipped::from_str(shipped.name(), false), Ok(shipped));
        }
        let cli = Cli::try_parse_from(["bench-plugins", "--only", "zscore,tumbling-window"]).map(|c| c.config.only);
        assert_eq!(cli.ok(), Some(vec![Shipped::ZScore, Shipped::TumblingWindow]));
        assert!(Cli::try_parse_from(["bench-plugins", "--only", "z-score"]).is_err());
    }
}
