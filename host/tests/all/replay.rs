//! `iotstream replay` over a recorded series: event-time order, the plugin's verdicts, and scores
//! normalised to [0, 1], against values computed by hand.

use iotstream::commands::replay::{ReplayConfig, replay};
use iotstream::reading::SensorType;

use crate::support::{plugin_path, scratch_folder};

fn config(input: &std::path::Path, out: &std::path::Path, plugin: &str, json: &str) -> ReplayConfig {
    ReplayConfig {
        input: input.to_owned(),
        plugin: plugin_path(plugin).display().to_string(),
        out: out.to_owned(),
        plugin_folders: iotstream::config::PluginFolderArgs {
            builtin_plugins: "unused".into(),
            no_builtin_plugins: true,
            dropin_plugins: None,
        },
        config: Some(json.to_owned()),
        sensor_type: SensorType::Temperature,
    }
}

#[test]
fn zscore_replay_sorts_by_event_time_and_normalises_scores() {
    let scratch = scratch_folder("replay");
    let dir = scratch.path();
    let input = dir.join("series.csv");
    // NAB's format, rows out of order: the replay must sort them.
    std::fs::write(
        &input,
        "timestamp,value\n2014-04-01 00:20:00,14\n2014-04-01 00:00:00,10\n2014-04-01 00:10:00,10\n\
         2014-04-01 00:05:00,12\n2014-04-01 00:25:00,17\n2014-04-01 00:15:00,12\n",
    )
    .expect("write csv");
    let out = dir.join("scores.csv");
    let summary = replay(&config(&input, &out, "zscore", r#"{"history": 4, "min_history": 4}"#)).expect("replays");
    assert_eq!((summary.rows, summary.anomalies, summary.rescaled), (6, 1, true));
    let written = std::fs::read_to_string(&out).expect("read scores");
    // Values in time order 10, 12, 10, 12, 14, 17: four warm-ups, then |z| = 3 (3/4 = 0.75 after
    // s / (1 + s)) and |z| = 5/sqrt(2) = 3.535534 (0.779512), the only one above 3.
    let z = 5.0 / 2f64.sqrt();
    let expected = format!(
        "timestamp,value,score,is_anomaly\n2014-04-01 00:00:00,10,0.000000,0\n2014-04-01 00:05:00,12,0.000000,0\n\
         2014-04-01 00:10:00,10,0.000000,0\n2014-04-01 00:15:00,12,0.000000,0\n2014-04-01 00:20:00,14,0.750000,0\n\
         2014-04-01 00:25:00,17,{:.6},1\n",
        z / (1.0 + z)
    );
    assert_eq!(written, expected);
}

#[test]
fn a_plugin_named_is_the_dropin_of_that_name_else_the_builtin() {
    let scratch = scratch_folder("replay-folders");
    let dropin = scratch.path().join("dropin");
    std::fs::create_dir_all(&dropin).expect("drop-in folder");
    let input = scratch.path().join("series.csv");
    std::fs::write(&input, "timestamp,value\n1000,10\n2000,11\n").expect("write csv");
    let out = scratch.path().join("scores.csv");
    let named = |plugin: &str| ReplayConfig {
        plugin: plugin.to_owned(),
        plugin_folders: iotstream::config::PluginFolderArgs {
            builtin_plugins: crate::support::built_plugins(),
            no_builtin_plugins: false,
            dropin_plugins: Some(dropin.clone()),
        },
        config: None,
        ..config(&input, &out, "zscore", "{}")
    };
    // The built-in zscore, by name.
    assert_eq!(replay(&named("zscore")).expect("replays").rows, 2);
    // A drop-in of its name comes first: here an aggregator, which replay refuses by name.
    crate::support::put(&dropin, "zscore.wasm", &std::fs::read(plugin_path("tumbling-window")).expect("window"));
    let refused = replay(&named("zscore")).map(|_| ()).expect_err("an aggregator");
    assert_eq!(refused.to_string(), "zscore is not a detector");
    // Neither folder holds it: both are named, the drop-ins first.
    let missing = replay(&named("nope")).map(|_| ()).expect_err("no such plugin");
    let expected = format!(
        "no plugin nope.wasm in {} (drop_in), {} (built_in)",
        dropin.display(),
        crate::support::built_plugins().display()
    );
    assert_eq!(missing.to_string(), expected);
}

#[test]
fn forest_replay_is_deterministic_keeps_scores_and_refuses_bad_rows() {
    let scratch = scratch_folder("replay-forest");
    let dir = scratch.path();
    let input = dir.join("series.csv");
    let mut csv = String::from("timestamp,value\n");
    for i in 0..400 {
        csv.push_str(&format!("{},{}\n", 1_700_000_000_000_i64 + i * 60_000, 20.0 + f64::from(i as i32 % 7) * 0.1));
    }
    csv.push_str(&format!("{},{}\n", 1_700_000_000_000_i64 + 400 * 60_000, 95.0));
    std::fs::write(&input, csv).expect("write csv");
    let out = dir.join("scores.csv");
    let summary = replay(&config(&input, &out, "isolation-forest", r#"{"min_train": 64}"#)).expect("replays");
    assert_eq!((summary.rows, summary.rescaled), (401, false));
    let written = std::fs::read_to_string(&out).expect("read");
    let scores: Vec<f64> =
        written.lines().skip(1).map(|l| l.split(',').nth(2).and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)).collect();
    assert_eq!(scores.len(), 401);
    // 9 rows warm the sensor's history and 64 fill the first training set: the 73rd trains the first
    // model (a scope's first is fitted at once) and is the first scored.
    assert!(scores[..72].iter().all(|s| *s == 0.0), "warming up scores 0");
    assert!(scores[72..].iter().all(|s| *s > 0.0 && *s <= 1.0), "forest scores lie in (0, 1]");
    // Deterministic: the same series and configuration give the same file, byte for byte.
    let again = dir.join("again.csv");
    replay(&config(&input, &again, "isolation-forest", r#"{"min_train": 64}"#)).expect("replays");
    assert_eq!(std::fs::read_to_string(&again).expect("read"), written);

    std::fs::write(&input, "timestamp,value\n2014-04-01 00:00:00,10\n2014-04-01 00:05:00,warm\n").expect("write csv");
    let err = replay(&config(&input, &out, "zscore", "{}")).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.ends_with("row 3: \"warm\" is not a number"), "{err}");
}

#[test]
fn the_forest_replays_weeks_of_history_in_one_batch_within_its_deadline() {
    // 4000 rows 5 minutes apart: a batch of 4096 spans two weeks of event time, so the 5-minute
    // retraining interval passes at every reading. Fits are bounded by rows (the first at 256
    // rows, doublings at 512, 1024 and 2048, then every 1024 rows: 5), where the seed's rule fitted
    // at every reading from the 256th and ran past the 5 s CPU deadline.
    let scratch = scratch_folder("replay-backfill");
    let dir = scratch.path();
    let input = dir.join("series.csv");
    let mut csv = String::from("timestamp,value\n");
    for i in 0..4000_i64 {
        csv.push_str(&format!("{},{}\n", 1_400_000_000_000 + i * 300_000, 20.0 + (i * 37 % 11) as f64 * 0.1));
    }
    std::fs::write(&input, csv).expect("write csv");
    let out = dir.join("scores.csv");
    let summary = replay(&config(&input, &out, "isolation-forest", "{}")).expect("replays within the deadline");
    assert_eq!(summary.rows, 4000);
}
