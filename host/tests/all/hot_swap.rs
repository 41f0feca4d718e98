//! The plugins folder while the host runs: a plugin replaced under load keeps its state and misses
//! no reading; a configuration change takes effect without a restart; a broken or half-written file
//! is refused while the running version goes on; a removed plugin stops; a shadow detector judges
//! the same readings, stored apart, and is compared with its live detector on the API; every plugin
//! swapped again and again leaves the host's memory where it levelled off.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use iotstream::reading::{Reading, SensorType, encode};
use iotstream_plugin_sdk::detector::Judgement;
use sqlx::PgPool;

use crate::metrics::Scrape;
use crate::support::{
    Host, HostProcess, count_rows, database_url, plugin_path, put, reading, scratch_folder, wait_for, zscore_reference,
    zscore_verdicts,
};

/// 20 sensors, one reading each per second of event time, a spike now and then.
fn stream(rounds: usize, first_round: usize) -> Vec<Reading> {
    let start = 1_767_225_600_000;
    (first_round..first_round + rounds)
        .flat_map(|round| {
            (0..20).map(move |sensor| {
                let noise = ((round * 7 + sensor * 13) % 11) as f64 / 10.0;
                // Now and then a spike (far out) or a bump (about 1 to 4 standard deviations).
                let spike = if (round * 31 + sensor) % 97 == 0 { 30.0 } else { 0.0 };
                let bump = if (round * 17 + sensor * 5) % 23 == 0 { 0.8 } else { 0.0 };
                reading(
                    &format!("t{sensor:02}"),
                    SensorType::Temperature,
                    &format!("hall_{}", sensor / 5),
                    start + round as i64 * 1000,
                    20.0 + noise + spike + bump,
                )
            })
        })
        .collect()
}

async fn plugins_api(addr: SocketAddr) -> serde_json::Value {
    reqwest::get(format!("http://{addr}/api/plugins")).await.expect("api").json().await.expect("json")
}

/// Polls `/api/plugins` of the host at `addr` until `check` holds (or fails after 30 s).
async fn wait_for_plugins_at(
    addr: SocketAddr,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let api = plugins_api(addr).await;
        if check(&api) {
            return api;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {api:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`wait_for_plugins_at`] the in-process `host`.
async fn wait_for_plugins(host: &Host, what: &str, check: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    wait_for_plugins_at(host.addr, what, check).await
}

fn has_event(api: &serde_json::Value, plugin: &str, action: &str) -> bool {
    api["events"].as_array().is_some_and(|e| e.iter().any(|e| e["plugin"] == plugin && e["action"] == action))
}

fn names(api: &serde_json::Value) -> Vec<String> {
    api["plugins"]
        .as_array()
        .map_or_else(Vec::new, |p| p.iter().filter_map(|p| p["name"].as_str().map(str::to_owned)).collect())
}

async fn produce(host: &Host, readings: &[Reading]) {
    let payloads: Vec<(String, Vec<u8>)> = readings.iter().map(|r| (r.sensor_id.to_string(), encode(r))).collect();
    host.produce(&payloads).await;
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_replaced_plugin_keeps_its_state_and_misses_no_reading(pool: PgPool) {
    let scratch = scratch_folder("swap-replace");
    let dir = scratch.path();
    put(dir, "zscore.wasm", &std::fs::read(plugin_path("zscore")).expect("zscore"));
    put(dir, "tumbling-window.wasm", &std::fs::read(plugin_path("tumbling-window")).expect("window"));
    let host = Host::start(pool.clone(), Some(dir), &[]).await;
    let first = stream(60, 0);
    produce(&host, &first).await;
    wait_for("readings before the swap", first.len() as i64, || count_rows(&pool, "sensor_readings")).await;

    // A new version of the configuration: a stricter threshold, the same state format. The
    // manifest names what it expects, so a wrong file would be refused.
    let manifest = "name = \"zscore\"\nkind = \"detector\"\n[config]\nthreshold = 2.0\n";
    put(dir, "zscore.toml", manifest.as_bytes());
    let api = wait_for_plugins(&host, "zscore swapped", |api| has_event(api, "zscore", "swapped")).await;
    let event = api["events"].as_array().and_then(|e| e.iter().find(|e| e["action"] == "swapped")).cloned();
    let detail = event.map(|e| e["detail"].to_string()).unwrap_or_default();
    assert!(detail.contains("state handed over"), "{detail}");
    crate::support::report(&format!("HOT SWAP zscore: {detail}"));

    // A broken file and a half-written one are refused; the running versions keep running.
    put(dir, "broken.wasm", b"\0asm not really");
    let window = std::fs::read(plugin_path("tumbling-window")).expect("window");
    put(dir, "tumbling-window.wasm", &window[..window.len() / 2]);
    let api = wait_for_plugins(&host, "refusals", |api| api["failures"].as_array().is_some_and(|f| f.len() == 2)).await;
    let failures = api["failures"].to_string();
    assert!(failures.contains("broken") && failures.contains("is not a valid component"), "{failures}");
    assert!(failures.contains("the running version keeps running"), "{failures}");
    assert_eq!(names(&api), ["zscore", "tumbling-window"]);
    // The dashboard shows them from the stats every live event carries.
    let stats: serde_json::Value =
        reqwest::get(format!("http://{}/api/stats", host.addr)).await.expect("api").json().await.expect("json");
    assert_eq!(stats["plugin_failures"], api["failures"]);

    let second = stream(60, 60);
    produce(&host, &second).await;
    let all: Vec<Reading> = first.iter().chain(&second).cloned().collect();
    wait_for("readings after the swap", all.len() as i64, || count_rows(&pool, "sensor_readings")).await;
    wait_for("one z-score verdict per reading", all.len() as i64, || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM ml_anomaly_predictions WHERE detector = 'zscore'")
            .fetch_one(&pool)
            .await
            .expect("count")
    })
    .await;

    // The scores are those of one detector that saw every reading once: the swap carried the
    // history over (a fresh detector would warm up again, and its scores would differ).
    let expected = zscore_reference(&all);
    let stored = zscore_verdicts(&pool).await;
    let mut strict = 0;
    for (sensor, at, verdict, score) in &stored {
        let key = (sensor.clone(), *at);
        match expected.get(&key) {
            Some(Judgement::WarmingUp) => assert_eq!(verdict, "warming_up", "{key:?}"),
            Some(Judgement::Scored { score: reference, .. }) => {
                // Equal to the last bits or so (the reference runs natively); a detector that lost
                // its history would warm up again or score from a different history entirely.
                assert!(
                    (score - reference).abs() <= 1e-12 * (1.0 + reference.abs()),
                    "{key:?}: {score} vs {reference}"
                );
                strict += usize::from(verdict == "anomaly" && *score <= 3.0);
            }
            None => panic!("a verdict for a reading never produced: {key:?}"),
        }
    }
    assert!(strict > 0, "the new threshold (2.0) flagged readings the old one (3.0) did not");

    // Removing a plugin stops it; fixing the broken file clears its failure.
    std::fs::remove_file(dir.join("broken.wasm")).expect("remove");
    std::fs::remove_file(dir.join("tumbling-window.wasm")).expect("remove");
    let api = wait_for_plugins(&host, "removal", |api| has_event(api, "tumbling-window", "removed")).await;
    assert_eq!(names(&api), ["zscore"]);
    assert_eq!(api["failures"].as_array().map(Vec::len), Some(0), "{api:#}");
    host.stop().await.expect("clean stop");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_shadow_detector_judges_the_same_readings_apart_and_is_compared_with_the_live_one(pool: PgPool) {
    let scratch = scratch_folder("swap-shadow");
    let dir = scratch.path();
    let zscore = std::fs::read(plugin_path("zscore")).expect("zscore");
    put(dir, "zscore.wasm", &zscore);
    let host = Host::start(pool.clone(), Some(dir), &[]).await;
    wait_for_plugins(&host, "host started", |api| has_event(api, "zscore", "loaded")).await;
    // The shadow arrives while the host runs: the same detector with a stricter threshold.
    put(dir, "zscore-strict.toml", b"shadow_of = \"zscore\"\n[config]\nthreshold = 2.0\n");
    put(dir, "zscore-strict.wasm", &zscore);
    let api = wait_for_plugins(&host, "shadow loaded", |api| has_event(api, "zscore-strict", "loaded")).await;
    assert_eq!(names(&api), ["zscore", "zscore-strict"]);
    let readings = stream(80, 0);
    produce(&host, &readings).await;
    wait_for("shadow verdicts", readings.len() as i64, || count_rows(&pool, "shadow_predictions")).await;
    wait_for("live verdicts", readings.len() as i64, || count_rows(&pool, "ml_anomaly_predictions")).await;

    // Stored apart: the live table holds only the live detector, and `flagged` is the live one's.
    let detectors: Vec<String> = sqlx::query_scalar("SELECT DISTINCT detector FROM ml_anomaly_predictions")
        .fetch_all(&pool)
        .await
        .expect("detectors");
    assert_eq!(detectors, ["zscore"]);
    let (flagged, live_anomalies): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM sensor_readings WHERE flagged), \
         (SELECT count(*) FROM ml_anomaly_predictions WHERE is_anomaly)",
    )
    .fetch_one(&pool)
    .await
    .expect("flags");
    assert_eq!(flagged, live_anomalies);

    // The comparison, against counts made here from both tables.
    let (judged, agreed, shadow_anomalies): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.is_anomaly = p.is_anomaly), count(*) FILTER (WHERE s.is_anomaly) \
         FROM shadow_predictions s JOIN ml_anomaly_predictions p USING (kafka_partition, kafka_offset) \
         WHERE s.verdict <> 'warming_up'",
    )
    .fetch_one(&pool)
    .await
    .expect("counts");
    // Same history, same scores: a verdict differs exactly where 2 < score <= 3.
    let between: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ml_anomaly_predictions WHERE verdict <> 'warming_up' AND anomaly_score > 2 AND anomaly_score <= 3",
    )
    .fetch_one(&pool)
    .await
    .expect("between");
    assert_eq!(judged - agreed, between);
    assert!(shadow_anomalies > live_anomalies && between > 0);
    let shadows: serde_json::Value =
        reqwest::get(format!("http://{}/api/shadows", host.addr)).await.expect("api").json().await.expect("json");
    let comparison = &shadows[0];
    assert_eq!(comparison["shadow"], "zscore-strict");
    assert_eq!(comparison["live_detector"], "zscore");
    assert_eq!(comparison["judged_by_both"], judged);
    assert_eq!(comparison["agreed"], agreed);
    assert_eq!(comparison["shadow_anomalies"], shadow_anomalies);
    assert_eq!(comparison["live_anomalies"], live_anomalies);
    assert_eq!(comparison["shadow_score_p50_p90_p99"], comparison["live_score_p50_p90_p99"], "same scores");
    assert!(comparison["shadow_call_micros_p50"].as_f64().is_some_and(|m| m > 0.0), "{comparison}");
    crate::support::report(&format!("SHADOW {comparison}"));
    host.stop().await.expect("clean stop");
}

/// The plugins `iotstream run` loads by default.
const EVERY_PLUGIN: [&str; 4] = ["isolation-forest", "novelty", "tumbling-window", "zscore"];

/// `VmRSS` of process `pid`, MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kib / 1024.0
}

/// The median of three.
fn median3(mut three: [f64; 3]) -> f64 {
    three.sort_by(f64::total_cmp);
    three[1]
}

/// The demo's set-up (`iotstream run`: the embedded broker's 12 partitions, a lane and an instance
/// of every plugin each, the simulator) in a process of its own, its stream stopped so the
/// plugins' states stay put (but for the windows' ticks, which can only close windows); then every
/// plugin's file rewritten, round after round, each round swapping all four with their states
/// handed over. A swapped instance holds the same state or less, so it must take no more linear
/// memory than the one it replaced; and what a swap leaves behind (the old
/// instances, their compiled code, the load's own allocations) must not pile up in the process:
/// after a warm-up its resident memory stays level. A host that kept one compiled module a swap
/// would grow by megabytes a round; one that kept the old instances, by the plugins' whole memory.
#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn swapping_every_plugin_again_and_again_leaves_the_host_s_memory_level(pool: PgPool) {
    /// Readings the simulator sends before the swaps begin (at 4,000 a second).
    const READINGS: i64 = 20_000;
    /// Rounds of four swaps, the first `WARM_UP` of them the warm-up.
    const ROUNDS: usize = 20;
    const WARM_UP: usize = 8;
    /// How much the resident memory may grow over the rounds after the warm-up, MiB.
    const MOST_GROWTH_MIB: f64 = 8.0;
    let scratch = scratch_folder("swap-memory");
    let dir = scratch.path();
    let files: Vec<(String, Vec<u8>)> = EVERY_PLUGIN
        .iter()
        .map(|name| (format!("{name}.wasm"), std::fs::read(plugin_path(name)).expect("plugin")))
        .collect();
    for (file, bytes) in &files {
        put(dir, file, bytes);
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_iotstream"));
    command
        .args(["run", "--listen", "127.0.0.1:0", "--database-url", &database_url(&pool)])
        .args(["--builtin-plugins", &dir.display().to_string(), "--log-format", "json"])
        .args(["--rate", "4000", "--count", &READINGS.to_string()])
        .env_remove("IOTSTREAM_BROKERS")
        .env("IOTSTREAM_LOG", "warn,iotstream::app=info");
    let host = HostProcess::spawn(command);
    let served: serde_json::Value =
        serde_json::from_str(&host.wait_for_line("dashboard served")).expect("a JSON log line");
    let addr: SocketAddr = served["fields"]["url"]
        .as_str()
        .and_then(|url| url.strip_prefix("http://")?.strip_suffix('/')?.parse().ok())
        .unwrap_or_else(|| panic!("the dashboard's address in {served}"));
    wait_for("the simulator's readings", READINGS, || count_rows(&pool, "sensor_readings")).await;

    let plugin_memory = |scrape: &Scrape| -> Vec<f64> {
        EVERY_PLUGIN
            .iter()
            .map(|name| {
                let kind = if *name == "tumbling-window" { "aggregator" } else { "detector" };
                scrape.value(&format!(r#"iotstream_plugin_memory_bytes{{plugin="{name}",kind="{kind}"}}"#))
            })
            .collect()
    };
    let every: std::collections::BTreeSet<String> = EVERY_PLUGIN.iter().map(|&name| name.to_owned()).collect();
    let (mut rss, mut memories) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let since = chrono::Utc::now();
        for (file, bytes) in &files {
            put(dir, file, bytes);
        }
        let swapped_since = |api: &serde_json::Value| -> Vec<serde_json::Value> {
            api["events"].as_array().map_or_else(Vec::new, |events| {
                events
                    .iter()
                    .filter(|e| {
                        e["action"] == "swapped"
                            && e["at"]
                                .as_str()
                                .and_then(|at| at.parse::<chrono::DateTime<chrono::Utc>>().ok())
                                .is_some_and(|at| at >= since)
                    })
                    .cloned()
                    .collect()
            })
        };
        // Each plugin swapped once this round (a plugin swapped twice would never make four names).
        let swapped_names = |api: &serde_json::Value| -> std::collections::BTreeSet<String> {
            swapped_since(api).iter().filter_map(|e| e["plugin"].as_str().map(str::to_owned)).collect()
        };
        let api = wait_for_plugins_at(addr, &format!("round {round}'s swaps"), |api| swapped_names(api) == every).await;
        for event in swapped_since(&api) {
            assert!(event["detail"].as_str().is_some_and(|d| d.contains("state handed over")), "{event}");
        }
        rss.push(rss_mib(host.id()));
        memories.push(plugin_memory(&Scrape::at(addr).await));
    }
    crate::support::report(&format!(
        "SWAP MEMORY: RSS by round (MiB) {:?}; plugins' memories (MiB) first {:?} last {:?}",
        rss.iter().map(|mib| mib.round() as i64).collect::<Vec<_>>(),
        memories[0].iter().map(|bytes| bytes / 1048576.0).collect::<Vec<_>>(),
        memories[ROUNDS - 1].iter().map(|bytes| bytes / 1048576.0).collect::<Vec<_>>(),
    ));
    // The same states in fresh instances: never more memory than the first swap's instances took.
    for (round, memory) in memories.iter().enumerate() {
        for ((name, bytes), first) in EVERY_PLUGIN.iter().zip(memory).zip(&memories[0]) {
            assert!(
                bytes <= first,
                "round {}: {name}'s instances took {bytes} bytes, {first} after the first swap",
                round + 1
            );
        }
    }
    let level = median3([rss[WARM_UP - 3], rss[WARM_UP - 2], rss[WARM_UP - 1]]);
    let last = median3([rss[ROUNDS - 3], rss[ROUNDS - 2], rss[ROUNDS - 1]]);
    assert!(
        last - level < MOST_GROWTH_MIB,
        "the host's memory grew {:.1} MiB over {} rounds of swaps after the warm-up: {rss:?}",
        last - level,
        ROUNDS - WARM_UP
    );
}
