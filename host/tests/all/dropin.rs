//! The two plugins folders of a host: the built-ins (`--builtin-plugins`) under the operator's
//! drop-in folder (`--plugins`). An empty or missing drop-in folder hides no built-in (a missing one
//! is created); a drop-in with a new name is added; one with a built-in's name replaces it, with the
//! state handed over, and its removal brings the built-in back, the state handed over again; a
//! drop-in refused at start leaves the built-in of its name running; `--no-builtin-plugins` loads the
//! drop-ins alone; a missing built-in folder stops the host with an error naming it.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use iotstream::app::RunError;
use iotstream::reading::{Reading, SensorType, encode};
use iotstream_plugin_sdk::detector::Judgement;
use sqlx::PgPool;

use crate::support::{
    Host, built_plugins, plugin_path, put, reading, scratch_folder, wait_for, zscore_reference, zscore_verdicts,
};

/// 10 sensors, one reading each per second of event time from `first_round`, a spike now and then
/// and small bumps (about 1 to 4 standard deviations) that thresholds of 1 and 3 judge apart.
fn stream(rounds: usize, first_round: usize) -> Vec<Reading> {
    let start = 1_767_225_600_000;
    (first_round..first_round + rounds)
        .flat_map(|round| {
            (0..10).map(move |sensor| {
                let noise = ((round * 7 + sensor * 13) % 11) as f64 / 10.0;
                let spike = if (round * 31 + sensor) % 97 == 0 { 30.0 } else { 0.0 };
                let bump = if (round * 17 + sensor * 5) % 23 == 0 { 0.8 } else { 0.0 };
                reading(
                    &format!("d{sensor:02}"),
                    SensorType::Temperature,
                    "hall_1",
                    start + round as i64 * 1000,
                    20.0 + noise + spike + bump,
                )
            })
        })
        .collect()
}

async fn produce(host: &Host, readings: &[Reading]) {
    let payloads: Vec<(String, Vec<u8>)> = readings.iter().map(|r| (r.sensor_id.to_string(), encode(r))).collect();
    host.produce(&payloads).await;
}

/// Polls `/api/plugins` until `check` holds (or fails after 30 s, showing the last answer).
async fn wait_for_plugins(host: &Host, what: &str, check: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let api: serde_json::Value =
            reqwest::get(format!("http://{}/api/plugins", host.addr)).await.expect("api").json().await.expect("json");
        if check(&api) {
            return api;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {api:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The running plugins' names.
fn names(api: &serde_json::Value) -> BTreeSet<String> {
    let plugins = api["plugins"].as_array().cloned().unwrap_or_default();
    plugins.iter().filter_map(|p| p["name"].as_str().map(str::to_owned)).collect()
}

/// The text field `key` of `plugin` on `/api/plugins`.
fn plugin_field(api: &serde_json::Value, plugin: &str, key: &str) -> String {
    let plugins = api["plugins"].as_array().cloned().unwrap_or_default();
    let found = plugins.iter().find(|p| p["name"] == plugin).unwrap_or_else(|| panic!("no {plugin}: {api:#}"));
    found[key].as_str().unwrap_or_default().to_owned()
}

/// The folder `plugin` runs from, as `/api/plugins` says.
fn layer(api: &serde_json::Value, plugin: &str) -> String {
    plugin_field(api, plugin, "layer")
}

/// The details of `plugin`'s events of `action`, oldest first.
fn details(api: &serde_json::Value, plugin: &str, action: &str) -> Vec<String> {
    let events = api["events"].as_array().cloned().unwrap_or_default();
    let at = |e: &serde_json::Value| e["at"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let mut found: Vec<_> = events
        .iter()
        .filter(|e| e["plugin"] == plugin && e["action"] == action)
        .map(|e| (at(e), e["detail"].as_str().unwrap_or_default().to_owned()))
        .collect();
    found.sort();
    found.into_iter().map(|(_, detail)| detail).collect()
}

/// The plugin names of `dir` (its `*.wasm` files), read here, not by the host.
fn wasm_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("read folder")
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".wasm").map(str::to_owned))
        .collect()
}

async fn zscore_verdict_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ml_anomaly_predictions WHERE detector = 'zscore'")
        .fetch_one(pool)
        .await
        .expect("count")
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_missing_dropin_folder_is_created_hides_no_builtin_and_takes_new_plugins(pool: PgPool) {
    let scratch = scratch_folder("dropin-new");
    let dropin = scratch.path().join("plugins.d");
    let builtin = built_plugins();
    let expected = wasm_names(&builtin);
    assert!(expected.len() >= 4, "{expected:?}");
    let dropin_flag = dropin.display().to_string();
    let host = Host::start(pool.clone(), None, &["--plugins", &dropin_flag]).await;
    let api = wait_for_plugins(&host, "every built-in loaded", |api| names(api) == expected).await;
    assert!(dropin.is_dir(), "the drop-in folder was created");
    for name in &expected {
        let loaded = details(&api, name, "loaded");
        assert_eq!(loaded.len(), 1, "{name}: {api:#}");
        assert!(loaded[0].ends_with("(built_in) at start"), "{name}: {}", loaded[0]);
        assert_eq!(layer(&api, name), "built_in");
        // Every shipped plugin is built against the current contract.
        assert_eq!(plugin_field(&api, name, "contract"), "0.2.0", "{name}");
    }

    // A plugin of a new name dropped into the (created, watched) folder is added to the built-ins.
    put(&dropin, "zscore-mine.wasm", &std::fs::read(plugin_path("zscore")).expect("zscore"));
    let api = wait_for_plugins(&host, "the drop-in added", |api| names(api).contains("zscore-mine")).await;
    let mut with_mine = expected.clone();
    with_mine.insert("zscore-mine".to_owned());
    assert_eq!(names(&api), with_mine);
    let added = details(&api, "zscore-mine", "loaded");
    assert!(added.len() == 1 && added[0].contains("(drop_in), loaded in"), "{added:?}");
    assert_eq!(layer(&api, "zscore-mine"), "drop_in");
    let readings = stream(40, 0);
    produce(&host, &readings).await;
    wait_for("the drop-in's verdicts", readings.len() as i64, || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM ml_anomaly_predictions WHERE detector = 'zscore-mine'")
            .fetch_one(&pool)
            .await
            .expect("count")
    })
    .await;
    host.stop().await.expect("clean stop");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_dropin_overrides_its_builtin_and_its_removal_brings_the_builtin_back(pool: PgPool) {
    let scratch = scratch_folder("dropin-override");
    let (builtin, dropin) = (scratch.path().join("builtin"), scratch.path().join("dropin"));
    std::fs::create_dir_all(&builtin).expect("builtin folder");
    std::fs::create_dir_all(&dropin).expect("dropin folder");
    let zscore = std::fs::read(plugin_path("zscore")).expect("zscore");
    put(&builtin, "zscore.wasm", &zscore);
    let (builtin_flag, dropin_flag) = (builtin.display().to_string(), dropin.display().to_string());
    let host = Host::start(pool.clone(), None, &["--builtin-plugins", &builtin_flag, "--plugins", &dropin_flag]).await;
    wait_for_plugins(&host, "the built-in zscore", |api| names(api).contains("zscore")).await;
    let before = stream(60, 0);
    produce(&host, &before).await;
    wait_for("verdicts of the built-in", before.len() as i64, || zscore_verdict_count(&pool)).await;

    // The drop-in zscore: the same component with a threshold of 1 (the built-in's is 3), its
    // manifest first, then its file.
    put(&dropin, "zscore.toml", b"name = \"zscore\"\nkind = \"detector\"\n[config]\nthreshold = 1.0\n");
    put(&dropin, "zscore.wasm", &zscore);
    let api =
        wait_for_plugins(&host, "the drop-in swapped in", |api| !details(api, "zscore", "swapped").is_empty()).await;
    let swapped = details(&api, "zscore", "swapped");
    assert!(swapped[0].contains("(drop_in): state handed over"), "{swapped:?}");
    assert_eq!(names(&api), BTreeSet::from(["zscore".to_owned()]));
    assert_eq!(layer(&api, "zscore"), "drop_in");
    let during = stream(60, 60);
    produce(&host, &during).await;
    let total = (before.len() + during.len()) as i64;
    wait_for("verdicts of the drop-in", total, || zscore_verdict_count(&pool)).await;

    // Removed (both files at once): the built-in is back, with the drop-in's state.
    std::fs::remove_file(dropin.join("zscore.wasm")).expect("remove");
    std::fs::remove_file(dropin.join("zscore.toml")).expect("remove");
    let api = wait_for_plugins(&host, "the built-in swapped back", |api| {
        details(api, "zscore", "swapped").iter().any(|d| d.contains("(built_in): state handed over"))
    })
    .await;
    assert_eq!(names(&api), BTreeSet::from(["zscore".to_owned()]));
    assert_eq!(layer(&api, "zscore"), "built_in");
    let after = stream(60, 120);
    produce(&host, &after).await;
    let all: Vec<Reading> = before.iter().chain(&during).chain(&after).cloned().collect();
    wait_for("verdicts of the built-in again", all.len() as i64, || zscore_verdict_count(&pool)).await;

    // One history across both swaps: every score is the reference's, computed natively over every
    // reading in order; the threshold is the drop-in's exactly for the readings produced while it
    // ran, and the built-in's before and after.
    let reference = zscore_reference(&all);
    let during_times: BTreeSet<i64> = during.iter().map(|r| r.timestamp.timestamp_millis()).collect();
    let (mut scored, mut judged_apart) = (0, 0);
    for (sensor, at, verdict, score) in zscore_verdicts(&pool).await {
        let key = (sensor, at);
        let threshold = if during_times.contains(&at) { 1.0 } else { 3.0 };
        match reference.get(&key) {
            Some(Judgement::WarmingUp) => assert_eq!(verdict, "warming_up", "{key:?}"),
            Some(Judgement::Scored { score: expected, .. }) => {
                assert!((score - expected).abs() <= 1e-12 * (1.0 + expected.abs()), "{key:?}: {score} vs {expected}");
                let anomaly = *expected > threshold;
                assert_eq!(verdict == "anomaly", anomaly, "{key:?}: score {expected}, threshold {threshold}");
                scored += 1;
                judged_apart += usize::from(*expected > 1.0 && *expected <= 3.0);
            }
            None => panic!("a verdict for a reading never produced: {key:?}"),
        }
    }
    assert!(scored > 0 && judged_apart > 0, "scored {scored}, between the thresholds {judged_apart}");
    host.stop().await.expect("clean stop");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_dropin_refused_at_start_leaves_its_builtin_running(pool: PgPool) {
    let scratch = scratch_folder("dropin-refused");
    let dropin = scratch.path();
    put(dropin, "zscore.wasm", b"\0asm not really");
    let dropin_flag = dropin.display().to_string();
    let host = Host::start(pool, None, &["--plugins", &dropin_flag]).await;
    let api = wait_for_plugins(&host, "the refusal, the plugins running", |api| {
        !details(api, "zscore", "refused").is_empty() && !names(api).is_empty()
    })
    .await;
    assert_eq!(names(&api), wasm_names(&built_plugins()));
    let refused = details(&api, "zscore", "refused");
    assert!(refused[0].contains("zscore.wasm is not a valid component"), "{refused:?}");
    assert!(refused[0].ends_with("; the built-in version runs instead"), "{refused:?}");
    assert_eq!(details(&api, "zscore", "loaded"), [format!("version {} (built_in) at start", version(&api, "zscore"))]);
    host.stop().await.expect("clean stop");
}

/// The version `plugin` reports on the API.
fn version(api: &serde_json::Value, plugin: &str) -> String {
    plugin_field(api, plugin, "version")
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn without_builtins_only_the_dropins_load(pool: PgPool) {
    let scratch = scratch_folder("dropin-only");
    let dropin = scratch.path();
    put(dropin, "zscore.wasm", &std::fs::read(plugin_path("zscore")).expect("zscore"));
    let (builtin, dropin_flag) = (built_plugins().display().to_string(), dropin.display().to_string());
    let flags = ["--builtin-plugins", &builtin, "--no-builtin-plugins", "--plugins", &dropin_flag];
    let host = Host::start(pool, None, &flags).await;
    let api = wait_for_plugins(&host, "the drop-in loaded", |api| !names(api).is_empty()).await;
    assert_eq!(names(&api), BTreeSet::from(["zscore".to_owned()]));
    assert!(details(&api, "zscore", "loaded")[0].ends_with("(drop_in) at start"), "{api:#}");
    host.stop().await.expect("clean stop");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_missing_builtin_folder_stops_the_host_naming_it(pool: PgPool) {
    let scratch = scratch_folder("dropin-no-builtins");
    let missing = scratch.path().join("not-installed");
    let flag = missing.display().to_string();
    let host = Host::start(pool, None, &["--builtin-plugins", &flag]).await;
    let (ended, _broker) = host.ended().await;
    match ended {
        Err(err @ RunError::NoBuiltinPlugins(_)) => {
            let message = err.to_string();
            assert!(message.starts_with(&format!("no built-in plugins folder {flag}: ")), "{message}");
            assert!(message.contains("--no-builtin-plugins"), "{message}");
        }
        other => panic!("expected NoBuiltinPlugins, got {other:?}"),
    }
    // The host creates a missing drop-in folder, never a built-in one.
    assert!(!missing.exists(), "{} was created", missing.display());
}
