//! The dashboard's live behaviour in a real browser: the header says "reconnecting" while the host
//! is gone and "live" again once it is back (and batches flow again without a reload); the dark
//! theme follows the browser's `prefers-color-scheme` (emulated through the DevTools protocol),
//! photographed to `docs/screenshots/dark.png`. `measure_dashboard_under_load` takes the figures
//! docs/dashboard.md reports (run on demand, not part of the suite's assertions).

use std::time::{Duration, Instant};

use chrono::Utc;
use iotstream::reading::{SensorType, encode};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::dashboard::Browser;
use crate::support::{Host, reading, report};

/// The header's connection badge.
const CONNECTION: &str = "return document.getElementById('connection')?.textContent ?? null;";

/// The sensors in the newest-readings table.
const SENSORS_SHOWN: &str =
    "return Array.from(document.querySelectorAll('#readings tbody tr td:nth-child(2)')).map(td => td.textContent);";

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
#[ignore = "a browser test: `cargo xtask test` runs it after the suite, alone"]
async fn the_header_shows_reconnecting_while_the_host_is_gone_then_live(pool: PgPool) {
    let _slot = crate::dashboard::one_browser_at_a_time().await;
    tokio::time::timeout(crate::dashboard::BROWSER_TEST_LIMIT, async move {
        let host = Host::start(pool.clone(), None, &[]).await;
        let addr = host.addr;
        let browser = Browser::start().await;
        browser.goto(&format!("http://{addr}/")).await;
        browser.until("the page goes live", CONNECTION, |c| c == "live").await;
        // The host stops: its live stream ends and the browser's reconnects fail.
        let (stopped, broker) = host.stop_keeping_broker().await;
        stopped.expect("clean shutdown");
        browser.until("the header says reconnecting", CONNECTION, |c| c == "reconnecting").await;
        // (The header keeps what the host last said: a host stopping may have reported its brokers
        // going away in its last batch, folded in after the stream ended.)
        // The same host comes back where the page expects it: the browser reconnects by itself.
        let listen = addr.to_string();
        let host = Host::start_on(broker, pool, None, &["--listen", listen.as_str()]).await;
        browser.until_within(Duration::from_secs(60), "the page is live again", CONNECTION, |c| c == "live").await;
        // And batches reach it again, without a reload.
        let probe = reading("after-restart-1", SensorType::Humidity, "probe_lab", Utc::now().timestamp_millis(), 40.0);
        host.produce(&[(probe.sensor_id.to_string(), encode(&probe))]).await;
        browser
            .until("a reading produced after the restart shows", SENSORS_SHOWN, |ids| {
                ids.as_array().is_some_and(|ids| ids.iter().any(|id| id == "after-restart-1"))
            })
            .await;
        browser.quit().await;
        host.stop().await.expect("clean shutdown");
    })
    .await
    .expect("the browser test finishes within its time limit");
}

/// What the page looks like: whether it sees a dark preference, and the colours it painted.
const LOOK: &str = "return {
    dark: matchMedia('(prefers-color-scheme: dark)').matches,
    body: getComputedStyle(document.body).backgroundColor,
    text: getComputedStyle(document.body).color,
    panel: getComputedStyle(document.querySelector('.panel') ?? document.body).backgroundColor,
    drawn: !!(window.echarts && document.getElementById('live-temperature')
        && echarts.getInstanceByDom(document.getElementById('live-temperature'))),
};";

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
#[ignore = "a browser test: `cargo xtask test` runs it after the suite, alone"]
async fn the_dark_theme_follows_the_browsers_preference(pool: PgPool) {
    let _slot = crate::dashboard::one_browser_at_a_time().await;
    tokio::time::timeout(crate::dashboard::BROWSER_TEST_LIMIT, async move {
        let host = Host::start(pool, None, &[]).await;
        let stop = CancellationToken::new();
        let simulator = host.simulate(&["--rate", "100", "--sensors", "10"], &stop);
        let browser = Browser::start().await;
        // The operating system's dark preference, as Chromium would pass it on to the page.
        browser
            .cdp(
                "Emulation.setEmulatedMedia",
                json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] }),
            )
            .await;
        browser.goto(&format!("http://{}/", host.addr)).await;
        let look = browser.until("the live chart is drawn", LOOK, |l| l["drawn"] == true).await;
        // style.css's dark palette: --bg #0f1419, --text #dfe6ee, --panel #182028.
        assert_eq!(
            (&look["dark"], &look["body"], &look["text"], &look["panel"]),
            (&json!(true), &json!("rgb(15, 20, 25)"), &json!("rgb(223, 230, 238)"), &json!("rgb(24, 32, 40)")),
            "{look}"
        );
        // Let a few batches draw before the photograph.
        tokio::time::sleep(Duration::from_secs(3)).await;
        browser.screenshot("dark").await;
        stop.cancel();
        let report = simulator.await.expect("simulator task").expect("simulator");
        assert_eq!(report.failed, 0);
        browser.quit().await;
        host.stop().await.expect("clean shutdown");
    })
    .await
    .expect("the browser test finishes within its time limit");
}

/// Sums of Chromium's performance metrics (`Performance.getMetrics`): `(Timestamp, TaskDuration,
/// ScriptDuration, LayoutDuration)`, seconds.
async fn metrics(browser: &Browser) -> (f64, f64, f64, f64) {
    let answer = browser.cdp("Performance.getMetrics", json!({})).await;
    let metric = |name: &str| {
        answer["metrics"]
            .as_array()
            .and_then(|all| all.iter().find(|m| m["name"] == name))
            .and_then(|m| m["value"].as_f64())
            .unwrap_or(f64::NAN)
    };
    (metric("Timestamp"), metric("TaskDuration"), metric("ScriptDuration"), metric("LayoutDuration"))
}

/// The page's transfer as the browser saw it: bytes over the wire (after gzip) and decoded, for
/// the document and every resource it loaded.
const TRANSFER: &str =
    "const all = [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]
    .filter(e => !e.name.includes('/api/'));
return { transfer: all.reduce((n, e) => n + e.transferSize, 0), decoded: all.reduce((n, e) => n + e.decodedBodySize, 0),
    files: all.map(e => [e.name.split('/').pop(), e.transferSize, e.decodedBodySize]) };";

/// The figures docs/dashboard.md reports: the page's transfer, its first render with data on
/// loopback, and the real-time tab's main-thread busy share with 5,000 sensors streaming 5,000
/// readings/s. A measurement, not a check: it runs only with `IOTSTREAM_MEASURE_DASHBOARD` set
/// and asserts nothing about the numbers. Set to `1`, it starts a host in the test (debug build)
/// and its own simulator; set to a URL (`http://127.0.0.1:8099`), it measures that host instead,
/// e.g. a release `iotstream run --rate 5000 --sensors 5000` already streaming.
#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
#[ignore = "a measurement: run on demand with IOTSTREAM_MEASURE_DASHBOARD=1 or =URL"]
async fn measure_dashboard_under_load(pool: PgPool) {
    let Some(target) = std::env::var("IOTSTREAM_MEASURE_DASHBOARD").ok().filter(|t| !t.is_empty()) else {
        report("DASHBOARD measurement skipped: set IOTSTREAM_MEASURE_DASHBOARD=1 (or a host's URL) to take it");
        return;
    };
    let _slot = crate::dashboard::one_browser_at_a_time().await;
    let host = if target.starts_with("http") { None } else { Some(Host::start(pool.clone(), None, &[]).await) };
    let base = host.as_ref().map_or_else(|| target.trim_end_matches('/').to_owned(), |h| format!("http://{}", h.addr));
    if let Some(host) = &host {
        // First render on an idle host with data: one reading stored, then a fresh page.
        let first = reading("first-1", SensorType::Temperature, "probe_lab", Utc::now().timestamp_millis(), 21.0);
        host.produce(&[(first.sensor_id.to_string(), encode(&first))]).await;
        crate::support::wait_for("the first reading stored", 1, || {
            crate::support::count_rows(&pool, "sensor_readings")
        })
        .await;
    }
    let browser = Browser::start().await;
    browser.goto(&format!("{base}/")).await;
    let first_draw = browser
        .until(
            "the live chart draws",
            "return document.getElementById('live-temperature')?.dataset.firstDrawAt ?? null;",
            |v| v.is_string(),
        )
        .await;
    let transfer = browser.script(TRANSFER).await;
    report(&format!(
        "DASHBOARD page at {base}: {} bytes transferred ({} decoded); first live chart drawn {} ms after navigation \
         start; files {}",
        transfer["transfer"],
        transfer["decoded"],
        first_draw.as_str().unwrap_or("?"),
        transfer["files"]
    ));
    // Load: 5,000 sensors at 5,000 readings/s (the external host's own simulator), the real-time tab open.
    let stop = CancellationToken::new();
    let simulator = host.as_ref().map(|host| host.simulate(&["--rate", "5000", "--sensors", "5000"], &stop));
    browser.cdp("Performance.enable", json!({ "timeDomain": "timeTicks" })).await;
    // Let the stream and the charts reach their steady state (the live points fill up) first.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let started = Instant::now();
    let before = metrics(&browser).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = metrics(&browser).await;
    let wall = after.0 - before.0;
    let rate = browser.script("return document.getElementById('kpi-rate')?.textContent ?? null;").await;
    let points = browser
        .script(
            "const c = echarts.getInstanceByDom(document.getElementById('live-temperature')); \
             return c ? c.getOption().series.reduce((n, s) => n + s.data.length, 0) : null;",
        )
        .await;
    let redraw = browser.script("return document.getElementById('live-temperature')?.dataset.drawMs ?? null;").await;
    report(&format!(
        "DASHBOARD under 5000 sensors at 5000 readings/s (host rate KPI {rate}): main thread busy {:.1} % \
         (tasks {:.2} s, script {:.2} s, layout {:.2} s of {wall:.1} s, measured over {:.0} s); temperature chart \
         {points} points, last redraw {redraw} ms",
        100.0 * (after.1 - before.1) / wall,
        after.1 - before.1,
        after.2 - before.2,
        after.3 - before.3,
        started.elapsed().as_secs_f64()
    ));
    stop.cancel();
    if let Some(simulator) = simulator {
        let simulated = simulator.await.expect("simulator task").expect("simulator");
        report(&format!("DASHBOARD simulator: {} delivered, {} failed", simulated.delivered, simulated.failed));
    }
    browser.quit().await;
    if let Some(host) = host {
        host.stop().await.expect("clean shutdown");
    }
}
