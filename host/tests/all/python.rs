//! The Python detector (`plugins/python-deviation`, built by componentize-py into
//! `dist/test-plugins/`), loaded through the same `PluginRuntime` as the Rust plugins: the WIT
//! contract does not depend on the language a plugin is written in.
//!
//! The component embeds CPython (~18 MB) and takes seconds to compile, so the tests share one
//! compiled plugin and take fresh instances of it (`Plugin::new_instance`).

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use iotstream::plugins::bindings::{Reading as WitReading, Verdict};
use iotstream::plugins::{Plugin, PluginError, PluginRuntime, SensorCatalog, StageKind};
use iotstream::reading::{Reading, SensorType};

use crate::support::{reading, test_plugin_path};

/// The runtime (kept alive: its thread advances the epoch the CPU deadline counts) and the plugin
/// loaded once, as a template for the tests' instances.
fn compiled() -> &'static Mutex<(PluginRuntime, Plugin)> {
    static COMPILED: OnceLock<Mutex<(PluginRuntime, Plugin)>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let runtime = PluginRuntime::new().expect("runtime");
        let started = Instant::now();
        let plugin = runtime.load(&test_plugin_path("python-deviation")).expect("the Python plugin loads");
        crate::support::report(&format!(
            "python-deviation: load (compile + instantiate + create) {:.2?}",
            started.elapsed()
        ));
        Mutex::new((runtime, plugin))
    })
}

/// A fresh instance of the Python detector with `config`.
fn python_detector(config: &str) -> Result<Plugin, PluginError> {
    let compiled = compiled().lock().expect("no test panicked while holding the plugin");
    let started = Instant::now();
    let plugin = compiled.1.new_instance(Some(config.to_owned()));
    crate::support::report(&format!("python-deviation: new instance {:.2?}", started.elapsed()));
    plugin
}

fn to_wit(catalog: &mut SensorCatalog, readings: &[Reading]) -> Vec<WitReading> {
    readings.iter().map(|r| catalog.wit_reading(r)).collect()
}

#[test]
fn python_detector_scores_match_hand_computation() {
    let mut plugin = python_detector(r#"{"window": 4, "min_history": 4, "thresholds": {"co2": 10}}"#).expect("creates");
    assert_eq!(plugin.kind(), StageKind::Detector);
    assert_eq!(plugin.contract().number(), "0.1.0", "built against the records' contract");
    let info = plugin.info();
    assert_eq!((info.name.as_str(), info.version.as_str(), info.state_version), ("python-deviation", "0.1.0", 1));
    let temperature = [10.0, 12.0, 10.0, 12.0, 15.0, 18.0];
    let co2 = [400.0, 402.0, 400.0, 402.0, 410.0, 400.0];
    // Interleaved, one sensor of each type: histories are per sensor, thresholds per type.
    let readings: Vec<Reading> = (0..6)
        .flat_map(|i| {
            let ms = i as i64 * 1000;
            [
                reading("t1", SensorType::Temperature, "lab_1", ms, temperature[i]),
                reading("c1", SensorType::Co2, "lab_1", ms, co2[i]),
            ]
        })
        .collect();
    let mut catalog = SensorCatalog::default();
    let wit = to_wit(&mut catalog, &readings);
    let detections = plugin.detect(&catalog, &wit).expect("detects");
    // Readings alternate t1, c1.
    let judged =
        |skip: usize| detections.iter().skip(skip).step_by(2).map(|d| (d.verdict, d.score)).collect::<Vec<_>>();
    let (t1, c1) = (judged(0), judged(1));
    use Verdict::{Anomaly, Normal, WarmingUp};
    let warming = [(WarmingUp, 0.0); 4];
    // t1: history 10 12 10 12 has mean 11 and mean absolute deviation 1: 15 scores 4, not above the
    // default threshold 4. Then 12 10 12 15: mean 12.25, deviations .25 2.25 .25 2.75, MAD 1.375:
    // 18 scores 5.75 / 1.375 (4.18), an anomaly.
    assert_eq!(t1, [&warming[..], &[(Normal, 4.0), (Anomaly, 5.75 / 1.375)]].concat());
    // c1: 400 402 400 402 (mean 401, MAD 1): 410 scores 9, normal under co2's threshold 10. Then
    // 402 400 402 410: mean 403.5, deviations 1.5 3.5 1.5 6.5, MAD 3.25: 400 scores 3.5 / 3.25.
    assert_eq!(c1, [&warming[..], &[(Normal, 9.0), (Normal, 3.5 / 3.25)]].concat());
    assert!(detections.iter().all(|d| d.model.is_none()), "the detector trains no model");
}

#[test]
fn python_detector_state_hand_off_continues_identically() {
    let readings: Vec<Reading> = (0..300)
        .map(|i| {
            // Values 40..68, and a spike to 95 every 41st reading.
            let value = if i % 41 == 40 { 95.0 } else { 40.0 + ((i * 13) % 29) as f64 };
            reading(&format!("s{}", i % 3), SensorType::Humidity, "lab_1", i * 500, value)
        })
        .collect();
    let (first, second) = readings.split_at(170);
    let mut whole = python_detector("{}").expect("creates");
    let mut catalog = SensorCatalog::default();
    let wit = to_wit(&mut catalog, &readings);
    let expected = whole.detect(&catalog, &wit).expect("detects");
    assert!(expected.iter().any(|d| d.verdict == Verdict::Anomaly), "the series has anomalies");

    let mut before = python_detector("{}").expect("creates");
    let mut catalog = SensorCatalog::default();
    let wit = to_wit(&mut catalog, first);
    before.detect(&catalog, &wit).expect("detects");
    let state = before.export_state(&catalog).expect("exports");
    let text = std::str::from_utf8(&state).expect("JSON state");
    assert!(text.starts_with(r#"{"version":1,"sensors":{"s0":["#), "{text}");

    let mut after = python_detector("{}").expect("creates");
    // A new process: keys are assigned afresh, in another order (s2 comes first in `second`).
    let mut catalog = SensorCatalog::default();
    let rest = to_wit(&mut catalog, second);
    // A state of an unknown version is refused and changes nothing.
    let refused = after.import_state(&catalog, br#"{"version":2,"sensors":{}}"#);
    let Err(PluginError::Refused { message, .. }) = refused else { panic!("accepted version 2: {refused:?}") };
    assert_eq!(message, "invalid state: state version 2 is not 1");
    // The refusal put the plugin in backoff (see isolation.rs); the operator's retry lifts it.
    after.release_quarantine();
    after.import_state(&catalog, &state).expect("imports");
    let resumed = after.detect(&catalog, &rest).expect("detects");
    assert_eq!(resumed, expected[170..], "the Python detector diverged after a state hand-off");
}

#[test]
fn python_detector_refuses_bad_config_and_undeclared_keys() {
    for (config, reason) in [
        (r#"{"window": 1}"#, "invalid configuration: window must be at least 2, got 1"),
        (r#"{"treshold": 3}"#, "invalid configuration: unknown key 'treshold'"),
        (r#"{"thresholds": {"co3": 3}}"#, "invalid configuration: thresholds: unknown sensor type 'co3'"),
    ] {
        let Err(PluginError::Refused { message, .. }) = python_detector(config) else {
            panic!("{config} was accepted")
        };
        assert_eq!(message, reason);
    }
    let mut plugin = python_detector("{}").expect("creates");
    let catalog = SensorCatalog::default();
    let stray = WitReading { sensor: 7, timestamp_ms: 0, value: 1.0, flagged: false };
    let Err(PluginError::Refused { message, .. }) = plugin.detect(&catalog, &[stray]) else {
        panic!("an undeclared key was accepted")
    };
    assert_eq!(message, "invalid input: reading 0 names undeclared sensor key 7");
    // A refusal is not a trap: the instance lives on (in backoff, which a release lifts).
    assert_eq!(plugin.metrics().restarts, 0);
    assert!(matches!(plugin.export_state(&catalog), Err(PluginError::BackingOff { .. })));
    plugin.release_quarantine();
    assert!(plugin.export_state(&catalog).is_ok());
}

#[test]
fn python_detector_timing() {
    // Printed, never asserted: 10 sensors, batches of 1000 readings, default configuration.
    let mut plugin = python_detector("{}").expect("creates");
    let mut catalog = SensorCatalog::default();
    let readings: Vec<Reading> = (0..5000)
        .map(|i| {
            reading(&format!("p{}", i % 10), SensorType::Pressure, "hall", i * 100, 1013.0 + ((i * 7) % 11) as f64)
        })
        .collect();
    for (n, batch) in readings.chunks(1000).enumerate() {
        let wit = to_wit(&mut catalog, batch);
        let started = Instant::now();
        let detections = plugin.detect(&catalog, &wit).expect("detects");
        let elapsed = started.elapsed();
        assert_eq!(detections.len(), batch.len());
        crate::support::report(&format!(
            "python-deviation: batch {n} of {} readings {elapsed:.2?} ({:.1} µs a reading)",
            batch.len(),
            elapsed.as_secs_f64() * 1e6 / batch.len() as f64
        ));
    }
}
