//! Each shipped plugin's `.wasm`, called through the host, answers exactly as the same plugin
//! compiled natively and called through its SDK stage, over the same simulated readings in the same
//! calls. `iotstream bench-plugins` times the two sides against each other ("native stage"): this
//! says they do the same work, and attacks the boundary between them (the columns lowered into the
//! guest, the answers lifted back, a batch split into calls, model runs made per-reading verdicts).

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use iotstream::plugins::bindings::{Reading as WitReading, SensorType as WitSensorType, Verdict, WindowAggregate};
use iotstream::plugins::output::detections_of_columns;
use iotstream::plugins::{Plugin, PluginLimits, PluginRuntime, SensorCatalog};
use iotstream::simulate::Fleet;
use iotstream_plugin_sdk::aggregator::{Aggregator, AggregatorStage};
use iotstream_plugin_sdk::detector::{Detector, DetectorStage};
use iotstream_plugin_sdk::{Batch, SensorIdentity, decode_state};

use crate::support::plugin_path;

/// Readings a call carries, on both sides (the host splits each batch into calls of this many).
const PER_CALL: usize = 256;
/// Readings a batch holds, as the pipeline passes them to a plugin.
const BATCH: usize = 1000;

/// `n` simulated readings of 20 sensors, one every 20 ms of event time from the first of January
/// 2026 (so windows close, and forests train and retrain), as the host passes them and with each
/// sensor's identity for the native side.
fn simulated(n: usize) -> (SensorCatalog, Vec<WitReading>, Vec<(u32, SensorIdentity)>) {
    let start = Utc.timestamp_millis_opt(1_767_225_600_000).single().expect("a time");
    let mut fleet = Fleet::new(20, 0.01, 11);
    let mut catalog = SensorCatalog::default();
    let mut declared: BTreeMap<u32, SensorIdentity> = BTreeMap::new();
    let mut wit = Vec::with_capacity(n);
    for i in 0..n {
        let reading = fleet.next_reading(start + Duration::milliseconds(i as i64 * 20));
        let mut one = catalog.wit_reading(&reading);
        // Every 7th reading flagged, as a detector earlier in the batch would: the windows count them.
        one.flagged = i % 7 == 3;
        declared.entry(one.sensor).or_insert_with(|| SensorIdentity {
            sensor_id: Arc::from(reading.sensor_id.as_str()),
            sensor_type: reading.sensor_type,
            location: Arc::from(reading.location.as_str()),
        });
        wit.push(one);
    }
    (catalog, wit, declared.into_iter().collect())
}

/// The host's built plugin `name`, loaded by `runtime`.
fn load(runtime: &PluginRuntime, name: &str) -> Plugin {
    runtime.load(&plugin_path(name)).unwrap_or_else(|err| panic!("{name} loads: {err}"))
}

/// A runtime that passes a plugin a batch in calls of at most [`PER_CALL`] readings.
fn runtime() -> PluginRuntime {
    let per_call = NonZeroUsize::new(PER_CALL).expect("not zero");
    PluginRuntime::with_limits(PluginLimits { readings_per_call: per_call, ..PluginLimits::default() })
        .expect("runtime")
}

/// `call` as the columns the host lowers into a `.wasm`, for the native stage.
fn columns(call: &[WitReading]) -> Batch {
    iotstream::plugins::bindings::columnar::readings(call).into()
}

/// The `.wasm`'s exported state, read back as its native stage's state type: the two must hold the
/// same histories, models and windows (compared as values: a map's encoding follows its seeded
/// hash order, which differs between any two instances).
fn wasm_state<S: serde::de::DeserializeOwned>(plugin: &mut Plugin, catalog: &SensorCatalog, version: u32) -> S {
    let bytes = plugin.export_state(catalog).expect("the .wasm exports its state");
    decode_state(version, &bytes).expect("the .wasm's state reads as its native stage's")
}

/// Detector `name` over `n` readings both ways: every reading's verdict and model must match, and
/// its score to within `ulps` units in the last place (scores are finite and not negative, so
/// their bit patterns order as they do). Returns how many readings were anomalies, warming up, and
/// judged by a model, so a caller can check the comparison covered each kind.
fn detector_parity<D: Detector<State: PartialEq>>(name: &str, n: usize, ulps: u64) -> (usize, usize, usize) {
    let (catalog, wit, declared) = simulated(n);
    let mut plugin = load(&runtime(), name);
    let native = DetectorStage::<D>::create("{}").expect("defaults are valid");
    native.declare(declared);
    let (mut anomalies, mut warming, mut modelled) = (0, 0, 0);
    for (b, batch) in wit.chunks(BATCH).enumerate() {
        let wasm = plugin.detect(&catalog, batch).unwrap_or_else(|err| panic!("{name}: batch {b}: {err}"));
        let mut expected = Vec::with_capacity(batch.len());
        for call in batch.chunks(PER_CALL) {
            let answer = native.detect(&columns(call)).expect("every key is declared");
            // Read as the host reads a `.wasm`'s answer, its shape checked the same way.
            expected.extend(detections_of_columns(answer.into(), call.len()).expect("a well-formed answer"));
        }
        assert_eq!(wasm.len(), expected.len(), "{name}: batch {b}");
        for (i, (got, want)) in wasm.iter().zip(&expected).enumerate() {
            assert!(
                got.score.to_bits().abs_diff(want.score.to_bits()) <= ulps
                    && got.verdict == want.verdict
                    && got.model == want.model,
                "{name}: reading {} of batch {b}: the .wasm answered {got:?}, natively {want:?}",
                i
            );
        }
        anomalies += expected.iter().filter(|d| d.verdict == Verdict::Anomaly).count();
        warming += expected.iter().filter(|d| d.verdict == Verdict::WarmingUp).count();
        modelled += expected.iter().filter(|d| d.model.is_some()).count();
    }
    if ulps == 0 {
        // A state that holds scores (the forest's thresholds are quantiles of its training scores)
        // may differ in their last places as the scores do; the others must be the same.
        let native_state: D::State = decode_state(D::STATE_VERSION, &native.export_state()).expect("its own state");
        let wasm_state = wasm_state::<D::State>(&mut plugin, &catalog, D::STATE_VERSION);
        assert!(wasm_state == native_state, "{name}: the .wasm's state is not its native stage's");
    }
    (anomalies, warming, modelled)
}

#[test]
fn the_zscore_wasm_answers_as_its_native_stage_to_the_bit() {
    let (anomalies, warming, modelled) = detector_parity::<zscore::zscore::ZScore>("zscore", 20_000, 0);
    // 20 sensors warm up for their first 30 readings each; the fleet's 1% anomalies are flagged.
    assert_eq!((warming, modelled), (20 * 30, 0));
    assert!(anomalies > 0, "no anomaly was compared");
}

/// Novelty takes logarithms too (glibc's natively, wasi-libc's in a `.wasm`: the same algorithm,
/// but glibc may run a build of it with fused multiply-adds), so its scores may differ in their
/// last places on another machine; here they match to the bit.
#[test]
fn the_novelty_wasm_answers_as_its_native_stage_to_the_last_place() {
    let (anomalies, warming, _) = detector_parity::<novelty::novelty::Novelty>("novelty", 20_000, 4);
    assert!(anomalies > 0 && warming > 0, "{anomalies} anomalies and {warming} warming up compared");
}

/// The forest's score is `2^(-E[h] / c(n))`, with `c` of a logarithm: the standard library's `powf`
/// and `ln` are the C library's natively (glibc) and wasi-libc's in a `.wasm`, each within an ulp
/// of the true value, so a score may differ in its last place (seen: 1 ulp). Its trees, verdicts
/// and models may not.
#[test]
fn the_forest_wasm_answers_as_its_native_stage_to_the_last_place() {
    let (anomalies, warming, modelled) =
        detector_parity::<isolation_forest::detector::OnlineForest>("isolation-forest", 20_000, 2);
    assert!(anomalies > 0 && warming > 0, "{anomalies} anomalies and {warming} warming up compared");
    // Models: one generation or more per sensor type, each judging the readings after it.
    assert!(modelled > 10_000, "only {modelled} readings judged by a model");
}

#[test]
fn the_windows_wasm_closes_the_windows_its_native_stage_closes_to_the_bit() {
    let (catalog, wit, declared) = simulated(20_000);
    let mut plugin = load(&runtime(), "tumbling-window");
    let native = AggregatorStage::<tumbling_window::window::TumblingWindows>::create("{}").expect("valid");
    native.declare(declared);
    let mut closed = 0;
    let mut flagged = 0;
    for (b, batch) in wit.chunks(BATCH).enumerate() {
        let wasm = plugin.aggregate(&catalog, batch).unwrap_or_else(|err| panic!("batch {b}: {err}"));
        let mut expected = Vec::new();
        for call in batch.chunks(PER_CALL) {
            expected.extend(native.aggregate(&columns(call)).expect("every key is declared"));
        }
        let expected: Vec<WindowAggregate> = expected
            .into_iter()
            .map(|w| WindowAggregate {
                window_start_ms: w.window_start_ms,
                window_end_ms: w.window_end_ms,
                location: w.location.to_string(),
                sensor_type: WitSensorType::from(w.sensor_type),
                count: w.count,
                avg: w.avg,
                min: w.min,
                max: w.max,
                stddev: w.stddev,
                anomaly_count: w.anomaly_count,
                revision: w.revision,
                late_count: w.late_count,
            })
            .collect();
        // Floats to the bit: `PartialEq` would let -0.0 pass for 0.0.
        let bits = |w: &WindowAggregate| (w.avg.to_bits(), w.min.to_bits(), w.max.to_bits(), w.stddev.to_bits());
        assert_eq!(wasm, expected, "batch {b}");
        assert!(wasm.iter().zip(&expected).all(|(got, want)| bits(got) == bits(want)), "batch {b}");
        closed += expected.len();
        flagged += expected.iter().map(|w| w.anomaly_count).sum::<u32>();
    }
    type Windows = tumbling_window::window::TumblingWindows;
    let native_state: <Windows as Aggregator>::State =
        decode_state(Windows::STATE_VERSION, &native.export_state()).expect("its own state");
    assert!(
        wasm_state::<<Windows as Aggregator>::State>(&mut plugin, &catalog, Windows::STATE_VERSION) == native_state
    );
    // 400 s of event time (20,000 readings 20 ms apart), each of the 20 sensors its own location
    // and type: with 10 s of allowed lateness, minutes 0-5 close, 6 windows a group, 120 in all.
    // They hold the readings of their first 360 s (indices 0-17999), every 7th from index 3
    // flagged: 3, 10, ..., 17993, 2,571 of them.
    assert_eq!((closed, flagged), (120, 2571));
}
