//! Each built plugin, loaded by the host and checked through the WIT boundary against values
//! computed by hand.

use std::num::NonZeroUsize;
use std::path::Path;

use iotstream::plugins::bindings::{
    ContractVersion, ModelInfo, Reading as WitReading, SensorType as WitSensorType, Verdict,
};
use iotstream::plugins::{Plugin, PluginError, PluginLimits, PluginRuntime, SensorCatalog, StageKind};
use iotstream::reading::{Reading, SensorType};
use iotstream_plugin_sdk::CONTRACT_VERSION;

use crate::support::{plugin_path, reading, scratch_folder, test_plugin_path};

/// Copies plugin `name` into a fresh folder with `config` beside it, and loads it.
fn load_with_config(runtime: &PluginRuntime, name: &str, config: &str) -> Plugin {
    let scratch = scratch_folder("plugins");
    let dir = scratch.path();
    let wasm = dir.join(format!("{name}.wasm"));
    std::fs::copy(plugin_path(name), &wasm).expect("copy plugin");
    std::fs::write(dir.join(format!("{name}.json")), config).expect("write config");
    runtime.load(&wasm).expect("plugin loads")
}

fn to_wit(catalog: &mut SensorCatalog, readings: &[Reading]) -> Vec<WitReading> {
    readings.iter().map(|r| catalog.wit_reading(r)).collect()
}

#[test]
fn zscore_scores_match_hand_computation() {
    let runtime = PluginRuntime::new().expect("runtime");
    let mut plugin = load_with_config(&runtime, "zscore", r#"{"history": 4, "min_history": 4}"#);
    assert_eq!(plugin.kind(), StageKind::Detector);
    assert_eq!((plugin.info().name.as_str(), plugin.info().state_version), ("zscore", 2));
    let mut catalog = SensorCatalog::default();
    let values = [10.0, 12.0, 10.0, 12.0, 14.0, 17.0];
    let readings: Vec<Reading> = values
        .iter()
        .enumerate()
        .map(|(i, v)| reading("t1", SensorType::Temperature, "lab_1", i as i64 * 1000, *v))
        .collect();
    let wit = to_wit(&mut catalog, &readings);
    let detections = plugin.detect(&catalog, &wit).expect("detects");
    let verdicts: Vec<Verdict> = detections.iter().map(|d| d.verdict).collect();
    use Verdict::{Anomaly, Normal, WarmingUp};
    assert_eq!(verdicts, [WarmingUp, WarmingUp, WarmingUp, WarmingUp, Normal, Anomaly]);
    assert!(detections.iter().all(|d| d.model.is_none()), "the z-score trains no model");
    // History 10, 12, 10, 12: mean 11, std 1, so 14 scores 3. Then 12, 10, 12, 14: mean 12, std sqrt 2.
    assert_eq!(detections[4].score, 3.0);
    assert!((detections[5].score - 5.0 / 2f64.sqrt()).abs() < 1e-12);
}

#[test]
fn tumbling_window_aggregate_matches_hand_computation() {
    let runtime = PluginRuntime::new().expect("runtime");
    let mut plugin = runtime.load(&plugin_path("tumbling-window")).expect("loads");
    assert_eq!(plugin.kind(), StageKind::Aggregator);
    let mut catalog = SensorCatalog::default();
    let mut readings: Vec<Reading> = [20.0, 22.0, 24.0, 26.0]
        .iter()
        .enumerate()
        .map(|(i, v)| reading("t1", SensorType::Temperature, "office_1", i as i64 * 1000, *v))
        .collect();
    readings.push(reading("h1", SensorType::Humidity, "office_1", 2000, 40.0));
    let mut wit = to_wit(&mut catalog, &readings);
    wit[3].flagged = true;
    assert!(plugin.aggregate(&catalog, &wit).expect("aggregates").is_empty());
    // 1:10 moves the watermark (10 s lateness) to 1:00: minute 0 closes for both groups.
    let later = to_wit(&mut catalog, &[reading("t1", SensorType::Temperature, "office_1", 70_000, 30.0)]);
    let out = plugin.aggregate(&catalog, &later).expect("aggregates");
    assert_eq!(out.len(), 2);
    let t = &out[0];
    assert_eq!(
        (t.sensor_type, t.location.as_str(), t.window_start_ms, t.window_end_ms),
        (WitSensorType::Temperature, "office_1", 0, 60_000)
    );
    assert_eq!((t.count, t.avg, t.min, t.max, t.anomaly_count), (4, 23.0, 20.0, 26.0, 1));
    assert!((t.stddev - 5f64.sqrt()).abs() < 1e-12);
    let h = &out[1];
    assert_eq!((h.sensor_type, h.count, h.avg, h.stddev), (WitSensorType::Humidity, 1, 40.0, 0.0));
    assert_eq!((t.revision, t.late_count, h.revision, h.late_count), (0, 0, 0, 0));
    // A late reading (minute 0 ended before the watermark) comes back as revision 1 of its window.
    let late = to_wit(&mut catalog, &[reading("t1", SensorType::Temperature, "office_1", 59_000, 33.0)]);
    let revised = plugin.aggregate(&catalog, &late).expect("aggregates");
    assert_eq!(revised.len(), 1);
    let r = &revised[0];
    assert_eq!((r.window_start_ms, r.count, r.revision, r.late_count, r.max), (0, 5, 1, 1, 33.0));
    assert!((r.avg - 125.0 / 5.0).abs() < 1e-12);
}

#[test]
fn an_aggregator_of_contract_0_1_0_runs_through_that_version_s_bindings() {
    let path = test_plugin_path("records-minutes");
    let bytes = std::fs::read(&path).expect("reads");
    let export = b"iotstream:pipeline/aggregator@0.1.0";
    assert!(bytes.windows(export.len()).any(|w| w == export), "built against 0.1.0");
    let runtime = PluginRuntime::new().expect("runtime");
    let mut plugin = runtime.load(&path).expect("loads");
    assert_eq!((plugin.kind(), plugin.contract()), (StageKind::Aggregator, ContractVersion::Records));
    let mut catalog = SensorCatalog::default();
    let readings = [
        reading("t1", SensorType::Temperature, "lab_1", 1_000, 20.0),
        reading("t1", SensorType::Temperature, "lab_1", 59_999, 22.0),
        reading("c1", SensorType::Co2, "office_1", 5_000, 400.0),
        reading("t1", SensorType::Temperature, "lab_1", 30_000, 27.0),
        reading("t1", SensorType::Temperature, "lab_1", 60_000, 30.0),
    ];
    let mut wit = to_wit(&mut catalog, &readings);
    wit[1].flagged = true;
    assert_eq!(plugin.aggregate(&catalog, &wit).expect("aggregates"), []);
    // The tick at 1:00 closes minute 0 of both groups, in (location, type) order.
    let closed = plugin.tick(&catalog, 60_000).expect("ticks");
    let summary: Vec<_> = closed
        .iter()
        .map(|w| (w.location.as_str(), w.sensor_type, w.window_start_ms, w.window_end_ms, w.count, w.anomaly_count))
        .collect();
    assert_eq!(
        summary,
        [("lab_1", WitSensorType::Temperature, 0, 60_000, 3, 1), ("office_1", WitSensorType::Co2, 0, 60_000, 1, 0)]
    );
    // 20, 22, 27: mean 23, squared deviations 9 + 1 + 16 = 26 over 3.
    let t = &closed[0];
    assert_eq!((t.avg, t.min, t.max, t.stddev), (23.0, 20.0, 27.0, (26.0_f64 / 3.0).sqrt()));
    assert_eq!((closed[1].avg, closed[1].stddev), (400.0, 0.0));
    // Its state goes to a new instance through 0.1.0's export and import; minute 1 closes there.
    let state = plugin.export_state(&catalog).expect("exports");
    let mut next = plugin.new_instance(None).expect("a new instance");
    next.import_state(&catalog, &state).expect("imports");
    let rest = next.tick(&catalog, 120_000).expect("ticks");
    assert_eq!(rest.iter().map(|w| (w.window_start_ms, w.count, w.avg)).collect::<Vec<_>>(), [(60_000, 1, 30.0)]);
}

#[test]
fn isolation_forest_warms_up_then_flags_a_spike() {
    let runtime = PluginRuntime::new().expect("runtime");
    let mut plugin = load_with_config(
        &runtime,
        "isolation-forest",
        r#"{"trees": 50, "min_train": 64, "train_rows": 256, "fit_spread_rows": 16}"#,
    );
    let mut catalog = SensorCatalog::default();
    let mut readings: Vec<Reading> = (0..200)
        .map(|i| reading("p1", SensorType::Pressure, "lab_1", i * 1000, 1013.0 + ((i * 37) % 11) as f64 * 0.1))
        .collect();
    readings.push(reading("p1", SensorType::Pressure, "lab_1", 200_000, 1080.0));
    let wit = to_wit(&mut catalog, &readings);
    let detections = plugin.detect(&catalog, &wit).expect("detects");
    // Readings 1-9 of the sensor warm its history (min_history 10); readings 10-73 fill min_train 64,
    // and the 73rd trains the first model (a scope's first is fitted at once; retrainings are
    // grown over the next fit_spread_rows readings) and is the first one scored.
    assert!(detections[..72].iter().all(|d| d.verdict == Verdict::WarmingUp && d.score == 0.0));
    assert!(detections[72..].iter().all(|d| d.verdict != Verdict::WarmingUp && d.score > 0.0 && d.score <= 1.0));
    // Lineage: the first model (generation 1) was trained at the 73rd reading (72 s) on the older 48
    // of its 64 rows (the newest 16, a quarter, are held out to set its threshold).
    let first_model = ModelInfo { generation: 1, trained_at_ms: 72_000, training_rows: 48 };
    assert_eq!(detections[72].model, Some(first_model));
    assert!(detections[..72].iter().all(|d| d.model.is_none()));
    // The buffer doubles at the 137th reading (128 rows): generation 2 falls due there and is grown
    // over 16 readings while generation 1 judges; the 152nd is the first it judges.
    assert!(detections[72..151].iter().all(|d| d.model.is_some_and(|m| m.generation == 1)));
    assert_eq!(detections[151].model.map(|m| (m.generation, m.trained_at_ms)), Some((2, 136_000)));
    let spike = &detections[200];
    assert_eq!(spike.verdict, Verdict::Anomaly, "spike score {}", spike.score);
    let normal = detections[72..200].iter().filter(|d| d.verdict == Verdict::Normal).count();
    assert!(normal >= 120, "only {normal} of 128 ordinary readings judged normal");
}

/// A batch longer than the limits' readings per call reaches the plugin in calls of at most that
/// many, in order, and comes back as if it had been one call: every detection the same (scores to
/// the bit, the forest's models trained inside the batch and their lineage), every window the same.
#[test]
fn a_batch_passed_in_calls_of_64_readings_is_judged_and_aggregated_as_in_one_call() {
    let runtime = |per_call: usize| {
        let readings_per_call = NonZeroUsize::new(per_call).expect("not zero");
        PluginRuntime::with_limits(PluginLimits { readings_per_call, ..PluginLimits::default() }).expect("runtime")
    };
    let (whole, split) = (runtime(100_000), runtime(64));
    // 1,000 readings of three pressure sensors a second apart (16 minutes and 40 seconds), one spike.
    let readings: Vec<Reading> = (0..1000)
        .map(|i| {
            let value = 1013.0 + ((i * 37) % 11) as f64 * 0.1 + if i == 900 { 60.0 } else { 0.0 };
            reading(["p1", "p2", "p3"][i % 3], SensorType::Pressure, "lab_1", i as i64 * 1000, value)
        })
        .collect();
    let mut catalog = SensorCatalog::default();
    let wit = to_wit(&mut catalog, &readings);
    let forest = r#"{"trees": 50, "min_train": 64, "train_rows": 256, "fit_spread_rows": 16}"#;
    for (name, config) in [("zscore", "{}"), ("isolation-forest", forest)] {
        let (mut one, mut calls) = (load_with_config(&whole, name, config), load_with_config(&split, name, config));
        let expected = one.detect(&catalog, &wit).expect("one call");
        assert_eq!(calls.detect(&catalog, &wit).expect("16 calls"), expected, "{name}");
        // 1,000 readings in calls of 64: 15 full calls and one of 40.
        assert_eq!((one.metrics().calls, calls.metrics().calls), (1, 16), "{name}");
        assert_eq!((one.metrics().readings_in, calls.metrics().readings_in), (1000, 1000), "{name}");
        if name == "zscore" {
            assert_eq!(expected[900].verdict, Verdict::Anomaly, "the z-score flags the spike");
        } else {
            let generations = expected.iter().filter_map(|d| d.model.map(|m| m.generation)).max();
            assert!(generations >= Some(3), "models retrained inside the batch: {generations:?}");
        }
    }
    let mut flagged = wit.clone();
    flagged[900].flagged = true;
    let (mut one, mut calls) =
        (whole.load(&plugin_path("tumbling-window")), split.load(&plugin_path("tumbling-window")));
    let (one, calls) = (one.as_mut().expect("loads"), calls.as_mut().expect("loads"));
    let expected = one.aggregate(&catalog, &flagged).expect("one call");
    assert_eq!(calls.aggregate(&catalog, &flagged).expect("16 calls"), expected);
    assert_eq!(calls.metrics().calls, 16);
    // Sixteen whole minutes of 60 readings each, closed as the watermark passed them; minute 15
    // holds the spike.
    assert_eq!(expected.iter().map(|w| w.count).collect::<Vec<_>>(), [60; 16]);
    assert_eq!(expected.iter().map(|w| w.anomaly_count).sum::<u32>(), 1);
    assert_eq!(expected[15].anomaly_count, 1);
}

#[test]
fn plugin_check_warns_when_a_detector_flags_more_than_its_share() {
    use iotstream::commands::plugin_check::{CheckConfig, check};
    let check_with = |config: &str| {
        check(&CheckConfig {
            file: plugin_path("isolation-forest"),
            config: Some(config.into()),
            readings: 5000,
            max_flagged_share: 0.1,
        })
        .expect("checks")
    };
    // The seed's forest flags a quarter of the check's simulated readings (its hour features see a
    // new time of day every reading); the fixed one stays within the share.
    let seed = check_with(r#"{"preset": "seed"}"#);
    eprintln!("CHECK seed forest: {} of 5000 flagged, warnings {:?}", seed.anomalies, seed.warnings);
    assert_eq!(seed.warnings.len(), 1);
    let expected = format!(
        "flagged {:.1}% of the simulated readings, more than --max-flagged-share 10.0%: an operator would see more alarms than events",
        100.0 * seed.anomalies as f64 / 5000.0
    );
    assert_eq!(seed.warnings[0], expected);
    let fixed = check_with("{}");
    eprintln!("CHECK forest: {} of 5000 flagged", fixed.anomalies);
    assert!(fixed.anomalies <= 500 && fixed.warnings.is_empty(), "{fixed:?}");
}

#[test]
fn state_exported_from_one_instance_continues_in_another() {
    let runtime = PluginRuntime::new().expect("runtime");
    let readings: Vec<Reading> = (0..300)
        .map(|i| reading(&format!("s{}", i % 3), SensorType::Co2, "lab_1", i * 500, 400.0 + ((i * 13) % 29) as f64))
        .collect();
    let (first, second) = readings.split_at(170);
    for name in ["zscore", "isolation-forest"] {
        let config = r#"{"min_train": 64, "train_rows": 128}"#;
        let config = if name == "zscore" { "{}" } else { config };
        let mut whole = load_with_config(&runtime, name, config);
        let mut catalog = SensorCatalog::default();
        let wit = to_wit(&mut catalog, &readings);
        let expected = whole.detect(&catalog, &wit).expect("detects");

        let mut before = load_with_config(&runtime, name, config);
        let mut catalog = SensorCatalog::default();
        let wit = to_wit(&mut catalog, first);
        before.detect(&catalog, &wit).expect("detects");
        let state = before.export_state(&catalog).expect("exports");
        // The state a checkpoint carries is the plugin's last good state itself, not a copy.
        assert_eq!(before.last_good_state().map(<[u8]>::as_ptr), Some(state.as_ptr()), "{name}");
        let mut after = load_with_config(&runtime, name, config);
        // A new process: keys are assigned afresh, in another order.
        let mut catalog = SensorCatalog::default();
        let rest = to_wit(&mut catalog, second);
        after.import_state(&catalog, &state).expect("imports");
        let resumed = after.detect(&catalog, &rest).expect("detects");
        assert_eq!(resumed, expected[170..], "{name} diverged after a state hand-off");
    }
}

#[test]
fn aggregator_state_hand_off_gives_the_same_windows() {
    let runtime = PluginRuntime::new().expect("runtime");
    // Out of order across three locations: windows close by watermark and late readings revise them.
    let readings: Vec<Reading> = (0..600)
        .map(|i| {
            let location = ["office_1", "lab_1", "warehouse_1"][i % 3];
            reading(
                &format!("h-{location}"),
                SensorType::Humidity,
                location,
                ((i * 7919) % 400_000) as i64 + i as i64 * 500,
                (i % 13) as f64,
            )
        })
        .collect();
    let run = |split: Option<usize>| {
        let mut plugin = runtime.load(&plugin_path("tumbling-window")).expect("loads");
        let mut catalog = SensorCatalog::default();
        let mut out = Vec::new();
        for (i, chunk) in readings.chunks(50).enumerate() {
            if split == Some(i) {
                let state = plugin.export_state(&catalog).expect("exports");
                plugin = runtime.load(&plugin_path("tumbling-window")).expect("loads");
                catalog = SensorCatalog::default();
                plugin.import_state(&catalog, &state).expect("imports");
            }
            let wit = to_wit(&mut catalog, chunk);
            out.extend(plugin.aggregate(&catalog, &wit).expect("aggregates"));
        }
        out
    };
    let uninterrupted = run(None);
    assert!(uninterrupted.iter().any(|a| a.revision > 0), "the stream revises windows");
    assert_eq!(run(Some(5)), uninterrupted);
}

#[test]
fn files_that_are_not_stage_components_are_refused_with_a_reason() {
    let runtime = PluginRuntime::new().expect("runtime");
    let scratch = scratch_folder("plugins");
    let dir = scratch.path();
    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x01\0\0\0 truncated").expect("write");
    assert!(matches!(runtime.load(&garbage), Err(PluginError::Compile { .. })));
    let zscore = dir.join("zscore.wasm");
    std::fs::copy(plugin_path("zscore"), &zscore).expect("copy");
    std::fs::write(dir.join("zscore.json"), r#"{"history": 1}"#).expect("write config");
    let err = runtime.load(&zscore).err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("plugin zscore refused the call: invalid configuration: history must be at least 2, got 1")
    );
    let (loaded, failed) = runtime.load_dir(Path::new(&dir)).expect("reads dir");
    assert!(loaded.is_empty());
    assert_eq!(failed.len(), 2);
}

#[test]
fn plugin_check_runs_each_built_plugin_and_refuses_a_broken_config() {
    use iotstream::commands::plugin_check::{CheckConfig, check};
    for (name, kind) in [("zscore", "detector"), ("isolation-forest", "detector"), ("tumbling-window", "aggregator")] {
        let report = check(&CheckConfig {
            file: plugin_path(name),
            config: Some("{}".into()),
            readings: 2000,
            max_flagged_share: 0.1,
        })
        .unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!((report.kind.as_str(), report.name.as_str(), report.readings), (kind, name, 2000));
        assert!(report.state_bytes > 4, "{name} exported only its header");
    }
    // The check simulates 10 sensors: the z-score warms up on the first 30 readings of each.
    let zscore = check(&CheckConfig {
        file: plugin_path("zscore"),
        config: Some("{}".into()),
        readings: 2000,
        max_flagged_share: 0.1,
    })
    .expect("checks");
    assert_eq!(zscore.warming_up, 300);
    let broken = check(&CheckConfig {
        file: plugin_path("zscore"),
        config: Some(r#"{"treshold": 2}"#.into()),
        readings: 10,
        max_flagged_share: 0.1,
    });
    assert!(matches!(broken, Err(PluginError::Refused { .. })), "{broken:?}");
}

#[test]
fn a_component_built_against_another_contract_version_is_refused_by_name() {
    // The built z-score with every `iotstream:pipeline/...@VERSION` name (VERSION the contract's)
    // turned into another version of the same length (each digit one up, so 0.1.0 becomes 1.2.1):
    // still a valid component, built (as far as the host can tell) against a contract version this
    // host does not run.
    let version = format!("@{CONTRACT_VERSION}");
    let other: String =
        version.chars().map(|c| c.to_digit(10).and_then(|d| char::from_digit((d + 1) % 10, 10)).unwrap_or(c)).collect();
    let bytes = std::fs::read(plugin_path("zscore")).expect("zscore");
    let (from, to) = (b"iotstream:pipeline/".as_slice(), version.as_bytes());
    let mut renamed = bytes.clone();
    let mut renames = 0;
    let mut i = 0;
    while let Some(at) = renamed[i..].windows(from.len()).position(|w| w == from) {
        let start = i + at + from.len();
        if let Some(end) = renamed[start..].iter().take(40).position(|&b| b == b'@').map(|p| start + p)
            && renamed[end..].starts_with(to)
        {
            renamed[end..end + to.len()].copy_from_slice(other.as_bytes());
            renames += 1;
        }
        i = start;
    }
    assert!(renames > 0, "the component names its contract");
    let scratch = scratch_folder("plugins");
    let dir = scratch.path();
    let path = dir.join("zscore-next.wasm");
    std::fs::write(&path, &renamed).expect("write");
    let err = PluginRuntime::new().expect("runtime").load(&path).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        err,
        format!(
            "{} was built against iotstream:pipeline/detector{other}; this host runs contract versions 0.1.0 and 0.2.0",
            path.display()
        )
    );
}
