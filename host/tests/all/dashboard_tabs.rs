//! Every tab of the dashboard in a real browser, on real data from a real host fed through the
//! embedded broker: a reading produced to Kafka reaches the real-time chart within seconds (and a
//! click on its line shows that sensor alone), the consumer lag is reported, the windows and
//! detection quality fill in (with the 2x2 confusion of two detectors' verdicts, the forest's
//! model generations and a correlation heatmap from the windows), a time
//! range on the analytics tab returns history written before the page opened (aggregated by the
//! host), and a quarantined plugin shows on the plugins tab; the filter bar's choices go into the
//! URL and apply across tabs. Each tab is photographed to `docs/screenshots/` for README. The
//! partitions panel shows a row per partition of the topic, with its owner host (this one marked).

use std::time::Duration;

use chrono::Utc;
use iotstream::reading::{SensorType, encode};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::dashboard::Browser;
use crate::support::{Host, plugin_path, put, reading, report, scratch_folder, test_plugin_path};

/// The names of the series an ECharts chart draws (`null` before it draws).
fn chart_series(id: &str) -> String {
    format!(
        "const e = document.getElementById('{id}'); const c = e && window.echarts && echarts.getInstanceByDom(e); \
         return c ? c.getOption().series.map(s => s.name) : null;"
    )
}

/// The rows of table `id`, each as its cells' text.
fn table(id: &str) -> String {
    format!(
        "return Array.from(document.querySelectorAll('#{id} tbody tr')).map(tr => Array.from(tr.children).map(td => td.textContent));"
    )
}

/// Writes 30 temperature readings at location `archive`, 20 to 5 minutes before now, values 10 to
/// 39 (mean 24.5), every tenth flagged (3 of 30: an anomaly rate of 10 %).
async fn write_history(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO sensor_readings (sensor_id, sensor_type, location, value, unit, timestamp, flagged, \
         kafka_partition, kafka_offset, source_id) \
         SELECT 'archive-1', 'temperature', 'archive', 10 + i, 'celsius', now() - interval '20 minutes' + i * interval '30 seconds', \
         i % 10 = 0, 0, i, 32000 FROM generate_series(0, 29) AS i",
    )
    .execute(pool)
    .await
    .expect("history written before the page opens");
    // Five 1-minute windows of three types at `archive`, 20 to 16 minutes before now: temperature
    // rises 20..24, humidity falls 50..42 (correlation -1 with it) and CO2 alternates 400/410/400/
    // 410/400 (centred -4, 6, -4, 6, -4: its products with either centred line sum to 0).
    sqlx::query(
        "INSERT INTO sensor_aggregates (stage, window_start, window_end, location, sensor_type, avg_value, min_value, \
         max_value, stddev_value, count_readings, anomaly_count) \
         SELECT 'tumbling-window', w, w + interval '1 minute', 'archive', t, v, v, v, 0, 6, 0 \
         FROM generate_series(0, 4) AS i, \
         LATERAL (SELECT date_trunc('minute', now()) - interval '20 minutes' + i * interval '1 minute' AS w) AS start, \
         LATERAL (VALUES ('temperature', 20.0 + i), ('humidity', 50.0 - 2 * i), ('co2', 400.0 + 10 * (i % 2))) AS kv(t, v)",
    )
    .execute(pool)
    .await
    .expect("windows written before the page opens");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
#[ignore = "a browser test: `cargo xtask test` runs it after the suite, alone"]
async fn every_tab_renders_real_data_and_is_photographed(pool: PgPool) {
    let _slot = crate::dashboard::one_browser_at_a_time().await;
    tokio::time::timeout(crate::dashboard::BROWSER_TEST_LIMIT, async move {
        write_history(&pool).await;
        let scratch = scratch_folder("dashboard-tabs-plugins");
        let plugins = scratch.path();
        for plugin in ["isolation-forest", "zscore", "tumbling-window"] {
            put(plugins, &format!("{plugin}.wasm"), &std::fs::read(plugin_path(plugin)).expect("built plugin"));
        }
        // A detector that traps on every call: five failures in a row (after 1+2+4+8 s of backoff)
        // quarantine it.
        put(plugins, "misbehaving.wasm", &std::fs::read(test_plugin_path("misbehaving")).expect("built test plugin"));
        put(plugins, "misbehaving.toml", b"name = \"misbehaving\"\n[config]\nmode = \"trap\"\nafter_calls = 0\n");
        let host = Host::start(pool.clone(), Some(plugins), &[]).await;
        host.joined().await;
        let stop = CancellationToken::new();
        let simulator = host.simulate(&["--rate", "300", "--sensors", "20"], &stop);
        let browser = Browser::start().await;
        let base = format!("http://{}", host.addr);

        // Real-time: a reading produced now, of a sensor of its own, is drawn on the temperature chart.
        browser.goto(&format!("{base}/")).await;
        browser
            .until("the page goes live", "return document.getElementById('connection')?.textContent;", |s| s == "live")
            .await;
        let probe = reading("probe-1", SensorType::Temperature, "probe_lab", Utc::now().timestamp_millis(), 21.5);
        host.produce(&[(probe.sensor_id.to_string(), encode(&probe))]).await;
        let series = browser
            .until("the probe's reading is on the live chart", &chart_series("live-temperature"), |s| {
                s.as_array().is_some_and(|names| names.iter().any(|n| n == "probe-1"))
            })
            .await;
        assert!(series.as_array().is_some_and(|s| s.len() >= 2), "the simulator's sensors too: {series}");
        // Clicking a sensor's line shows that sensor alone (ECharts' own click event, raised on the
        // instance as a click on the line raises it); "show all" brings the others back.
        browser.script("echarts.getInstanceByDom(document.getElementById('live-temperature')).trigger('click', { seriesName: 'probe-1' }); return null;").await;
        let alone = browser
            .until("only the probe is drawn", &chart_series("live-temperature"), |s| s == &serde_json::json!(["probe-1"]))
            .await;
        assert_eq!(alone, serde_json::json!(["probe-1"]));
        browser.click("#single-sensor button").await;
        browser
            .until("every sensor is back", &chart_series("live-temperature"), |s| {
                s.as_array().is_some_and(|n| n.len() >= 2)
            })
            .await;
        browser.until("anomalies by type are drawn", &chart_series("anomalies-by-type"), Value::is_array).await;
        // The consumer lag, once librdkafka has reported it: a count of messages, not a dash.
        browser
            .until("the consumer lag is reported", "return document.getElementById('kpi-lag')?.textContent ?? null;", |lag| {
                lag.as_str().is_some_and(|l| l.parse::<u64>().is_ok())
            })
            .await;
        // What a live redraw costs: the slowest of the temperature chart's redraws seen over 5 s.
        let mut slowest = 0.0_f64;
        let mut points = 0;
        for _ in 0..20 {
            let seen = browser
                .script(
                    "const e = document.getElementById('live-temperature'); const c = echarts.getInstanceByDom(e); \
                         return [Number(e.dataset.drawMs), c.getOption().series.reduce((n, s) => n + s.data.length, 0)];",
                )
                .await;
            slowest = slowest.max(seen[0].as_f64().unwrap_or_default());
            points = points.max(seen[1].as_u64().unwrap_or_default());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        report(&format!("DASHBOARD live temperature chart: slowest redraw {slowest:.1} ms with {points} points"));
        browser.screenshot("realtime").await;

        // Windows: the first 1-minute windows close once event time passes the minute and lateness.
        browser.click("nav.tabs a[href^='/windows']").await;
        // (The archive's windows, written before the page opened, are listed at once: wait for the
        // simulator's, closed while the page is open.)
        let windows = browser
            .until_within(Duration::from_secs(150), "closed windows are listed", &table("windows"), |rows| {
                rows.as_array().is_some_and(|r| r.iter().any(|row| row[1] != "archive"))
            })
            .await;
        assert_eq!(windows[0].as_array().map(Vec::len), Some(11), "{windows}");
        browser.until("the window trend is drawn", &chart_series("window-temperature"), Value::is_array).await;
        browser.screenshot("windows").await;

        // ML: detection quality against the simulator's labels, per detector and sensor type.
        browser.click("nav.tabs a[href^='/ml']").await;
        let quality = browser
            .until("quality is listed for both detectors", &table("quality"), |rows| {
                let detectors: std::collections::BTreeSet<_> =
                    rows.as_array().into_iter().flatten().filter_map(|r| r[0].as_str()).collect();
                detectors.contains("zscore") && detectors.contains("isolation-forest")
            })
            .await;
        assert!(quality.as_array().is_some_and(|r| r.len() >= 2), "{quality}");
        browser.until("scores are drawn", &chart_series("ml-scores"), Value::is_array).await;
        // The 2x2 confusion of the forest's and the z-score's verdicts on the same readings, counted
        // by PostgreSQL: its four cells add up to the readings its caption says both judged.
        let confusion = browser
            .until(
                "the confusion matrix is shown",
                "const t = document.getElementById('confusion-isolation-forest-zscore'); \
                 return t ? [t.querySelector('caption').textContent, Array.from(t.querySelectorAll('tbody td')).map(td => Number(td.textContent))] : null;",
                |c| c.is_array(),
            )
            .await;
        let judged: i64 = confusion[0]
            .as_str()
            .and_then(|c| c.split(": ").nth(1))
            .and_then(|c| c.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(-1);
        let cells: i64 = confusion[1].as_array().into_iter().flatten().filter_map(Value::as_i64).sum();
        assert!(judged > 0 && cells == judged, "{confusion}");
        // The forest's models: the lane (partition) that trained each, its generation, training
        // rows and when it was trained.
        let models = browser
            .until("the forest's models are listed", &table("models"), |rows| {
                rows.as_array().into_iter().flatten().any(|r| r[0] == "isolation-forest")
            })
            .await;
        let forest = models.as_array().into_iter().flatten().find(|r| r[0] == "isolation-forest").cloned().unwrap_or_default();
        assert!(forest[2].as_str().is_some_and(|p| p.parse::<u32>().is_ok()), "partition: {forest}");
        assert!(forest[3].as_str().is_some_and(|g| g.parse::<u32>().is_ok_and(|g| g >= 1)), "{forest}");
        assert!(forest[6].as_str().is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n > 0)), "training rows: {forest}");
        // Retrains: a step line per lane, named by detector and type. Each lane counts its own
        // generations, so along every line they rise strictly with the training time (lanes'
        // numbers joined into one line would repeat and fall back), and every line is its own lane.
        let lines = browser
            .until(
                "retrains are drawn",
                "const c = echarts.getInstanceByDom(document.getElementById('ml-retrains')); \
                 return c ? c.getOption().series.map(s => [s.name, s.id, s.data.map(d => d.value)]) : null;",
                |s| s.as_array().is_some_and(|s| !s.is_empty()),
            )
            .await;
        let mut lanes = std::collections::BTreeSet::new();
        for line in lines.as_array().into_iter().flatten() {
            let (name, id) = (line[0].as_str().unwrap_or_default(), line[1].as_str().unwrap_or_default());
            assert!(name.starts_with("isolation-forest ") && id.starts_with(&format!("{name} / partition ")), "{line}");
            assert!(lanes.insert(id.to_owned()), "one line a lane: {lines}");
            let points: Vec<(f64, f64)> = line[2]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| (p[0].as_f64().unwrap_or(f64::NAN), p[1].as_f64().unwrap_or(f64::NAN)))
                .collect();
            assert!(!points.is_empty() && points.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1), "{line}");
        }
        browser.screenshot("ml").await;

        // Analytics: the last hour from PostgreSQL holds the archive written before the page opened.
        browser.click("nav.tabs a[href^='/analytics']").await;
        let stats = browser
            .until("the archive's statistics", &table("location-stats"), |rows| {
                rows.as_array().is_some_and(|r| r.iter().any(|row| row[0] == "archive"))
            })
            .await;
        let archive = stats.as_array().into_iter().flatten().find(|row| row[0] == "archive").cloned().unwrap_or_default();
        // 10..=39: mean 24.5, sample standard deviation sqrt(30 * 31 / 12) = 8.80.
        assert_eq!(archive, serde_json::json!(["archive", "temperature", "30", "24.50", "8.80", "10.00 %"]));
        browser
            .until("history is drawn", &chart_series("history-temperature"), |s| {
                s.as_array().is_some_and(|names| names.iter().any(|n| n == "archive"))
            })
            .await;
        // The correlation heatmap of one location, from its 1-minute windows (PostgreSQL's corr()).
        browser.goto(&format!("{base}/analytics?location=archive")).await;
        let heat = browser
            .until(
                "the archive's correlation heatmap is drawn",
                "const e = document.getElementById('correlation'); const c = e && echarts.getInstanceByDom(e); \
                 return c ? [c.getOption().xAxis[0].data, c.getOption().series[0].data] : null;",
                |h| h[1].as_array().is_some_and(|cells| cells.len() == 9),
            )
            .await;
        assert_eq!(heat[0], serde_json::json!(["co2", "humidity", "temperature"]), "{heat}");
        // Cells are [column, row, r]: 1 on the diagonal, -1 between humidity and temperature, 0 for CO2.
        let expected = |i: u64, j: u64| match (i, j) {
            _ if i == j => 1.0,
            (1, 2) | (2, 1) => -1.0,
            _ => 0.0,
        };
        for cell in heat[1].as_array().into_iter().flatten() {
            let (j, i, r) = (cell[0].as_u64().unwrap_or(9), cell[1].as_u64().unwrap_or(9), cell[2].as_f64().unwrap_or(9.0));
            assert!((r - expected(i, j)).abs() < 1e-9, "cell {cell} of {heat}");
        }
        browser.screenshot("analytics").await;

        // Plugins: the trapping detector is quarantined, and the page says so.
        browser.click("nav.tabs a[href^='/plugins']").await;
        browser
            .until_within(Duration::from_secs(60), "the misbehaving plugin is quarantined", &table("plugins"), |rows| {
                rows.as_array().into_iter().flatten().any(|r| r[0] == "misbehaving" && r[4] == "quarantined")
            })
            .await;
        // Columns: name, kind, version, contract, state...: every plugin here is built against 0.2.0.
        let plugins = browser.script(&table("plugins")).await;
        let contracts: Vec<&Value> = plugins.as_array().into_iter().flatten().map(|r| &r[3]).collect();
        assert!(!contracts.is_empty() && contracts.iter().all(|c| *c == "0.2.0"), "{plugins}");
        browser.screenshot("plugins").await;

        // The filter bar lives in the URL and applies on every tab: humidity only, then one location.
        browser.goto(&format!("{base}/?type=humidity")).await;
        browser.until("the humidity chart is drawn", &chart_series("live-humidity"), Value::is_array).await;
        let others =
            browser.script("return ['temperature', 'co2'].map(t => !!document.getElementById('live-' + t));").await;
        assert_eq!(others, serde_json::json!([false, false]));
        browser.click("nav.tabs a[href^='/windows']").await;
        let picked = browser
            .script(
                "const s = document.getElementById('filter-location'); s.value = 'office_1'; \
                 s.dispatchEvent(new Event('change')); return location.pathname + location.search;",
            )
            .await;
        assert_eq!(picked, "/windows?type=humidity&location=office_1");
        let filtered = browser
            .until("only humidity windows of office_1", &table("windows"), |rows| {
                rows.as_array()
                    .is_some_and(|r| !r.is_empty() && r.iter().all(|row| row[1] == "office_1" && row[2] == "humidity"))
            })
            .await;
        assert!(filtered.as_array().is_some_and(|r| !r.is_empty()), "{filtered}");

        stop.cancel();
        let report = simulator.await.expect("simulator task").expect("simulator");
        assert_eq!(report.failed, 0);
        browser.quit().await;
        host.stop().await.expect("clean shutdown");
    })
    .await
    .expect("the browser test finishes within its time limit");
}

/// Whether `cell` is a count (digits only).
fn is_count(cell: &Value) -> bool {
    cell.as_str().is_some_and(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit()))
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
#[ignore = "a browser test: `cargo xtask test` runs it after the suite, alone"]
async fn the_partitions_panel_shows_a_row_per_partition_of_the_topic(pool: PgPool) {
    let _slot = crate::dashboard::one_browser_at_a_time().await;
    tokio::time::timeout(crate::dashboard::BROWSER_TEST_LIMIT, async move {
        // The demo's topic: 3 partitions, one host (the whole group).
        let host = Host::start(pool.clone(), None, &[]).await;
        let base = format!("http://{}", host.addr);
        // The API answers once the host has joined the group; its answer names the host.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let this_host = loop {
            let response = reqwest::get(format!("{base}/api/partitions")).await.expect("api");
            if response.status() == 200 {
                let view: Value = response.json().await.expect("json");
                break view["host"].as_str().expect("the host's name").to_owned();
            }
            assert!(std::time::Instant::now() < deadline, "/api/partitions: still {} after 60 s", response.status());
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let lineage: i16 = sqlx::query_scalar("SELECT id FROM kafka_sources WHERE topic = 'iot_sensors' AND epoch = 0")
            .fetch_one(&pool)
            .await
            .expect("the source");
        // The pipeline gives the group's only host every partition and records each owner; the
        // page is compared with those rows once all three are written (the assignment comes a few
        // seconds after the join).
        host.joined().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let owned: i64 =
                sqlx::query_scalar("SELECT count(*) FROM partition_owners WHERE source_id = $1 AND owner = $2")
                    .bind(lineage)
                    .bind(&this_host)
                    .fetch_one(&pool)
                    .await
                    .expect("owners");
            if owned == 3 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the pipeline recorded {owned} of 3 owners in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A rebalance of another host, gone since.
        sqlx::query(
            "INSERT INTO rebalances (source_id, host, at, assigned, revoked, pause_ms) \
             VALUES ($1, 'node-b-7', '2026-12-01T11:30:00Z', '{1}', '{}', 250)",
        )
        .bind(lineage)
        .execute(&pool)
        .await
        .expect("rebalance");
        let owners: Vec<(i32, String, chrono::DateTime<Utc>, i64)> = sqlx::query_as(
            "SELECT kafka_partition, owner, since, generation FROM partition_owners WHERE source_id = $1 ORDER BY 1",
        )
        .bind(lineage)
        .fetch_all(&pool)
        .await
        .expect("owners");
        assert_eq!(owners.iter().map(|o| o.0).collect::<Vec<_>>(), [0, 1, 2]);

        let browser = Browser::start().await;
        browser.goto(&format!("{base}/plugins")).await;
        let rows = browser
            .until("a row per partition", &table("partitions"), |rows| rows.as_array().is_some_and(|r| r.len() == 3))
            .await;
        for (row, (partition, owner, since, generation)) in rows.as_array().into_iter().flatten().zip(&owners) {
            assert_eq!(owner, &this_host, "{rows}");
            let fixed = serde_json::json!([
                partition.to_string(),
                format!("{this_host} (this host)"),
                since.format("%Y-%m-%d %H:%M:%S").to_string(),
                generation.to_string(),
            ]);
            assert_eq!(Value::from(row.as_array().map(|r| r[..4].to_vec()).unwrap_or_default()), fixed, "{rows}");
            // The stored position and the lag move with the stream: a count, or a dash before the
            // first; a lag comes with its report's age.
            assert!(is_count(&row[4]) || row[4] == "–", "next offset of {row}");
            if is_count(&row[5]) {
                assert!(row[6].as_str().is_some_and(|age| age == "just now" || age.ends_with(" s ago")), "{row}");
            } else {
                assert_eq!((&row[5], &row[6]), (&Value::from("–"), &Value::from("–")), "{row}");
            }
        }
        // This host's rows are marked.
        let marked = browser.script("return document.querySelectorAll('#partitions tbody tr.mine').length;").await;
        assert_eq!(marked, 3);
        browser
            .until("the other host's rebalance", &table("rebalances"), |rows| {
                rows.as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r == &serde_json::json!(["2026-12-01 11:30:00", "node-b-7", "1", "–", "250 ms"]))
            })
            .await;
        browser.quit().await;
        host.stop().await.expect("clean shutdown");
    })
    .await
    .expect("the browser test finishes within its time limit");
}
