//! The dashboard in a real browser (headless Chromium driven over WebDriver by chromedriver): it
//! connects to the live stream, shows the KPIs and the newest readings, updates without a reload,
//! and shows, on the plugins tab reached without a reload, a plugin swapped and a file refused as
//! they happen. `dashboard_tabs.rs` visits every tab.
//! Its admin actions need the token: reload, and promote or discard a shadow detector.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::support::{Host, plugin_path, put, scratch_folder};

/// A chromedriver process with one headless Chromium session.
pub(crate) struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::Client,
    /// Chromium's profile, deleted with the browser.
    _profile: tempfile::TempDir,
}

impl Browser {
    pub(crate) async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (cargo xtask test installs it)");
        let base = format!("http://127.0.0.1:{port}");
        // A WebDriver command that never answers fails the test instead of hanging it.
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("http client");
        let deadline = Instant::now() + Duration::from_secs(20);
        while client.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = scratch_folder("chromium");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            // A laptop-sized window: the screenshots show what a user sees.
            "--window-size=1366,1700",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
        }}});
        let created: Value = client
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session json");
        let session =
            created["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}")).to_owned();
        Browser { driver, base, session, client, _profile: profile }
    }

    /// Ends the session (closing Chromium), then chromedriver.
    pub(crate) async fn quit(self) {
        let _ = self.client.delete(format!("{}/session/{}", self.base, self.session)).send().await;
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.client
            .post(format!("{}/session/{}/url", self.base, self.session))
            .json(&json!({ "url": url }))
            .send()
            .await
            .expect("navigate");
    }

    pub(crate) async fn script(&self, script: &str) -> Value {
        let answer: Value = self
            .client
            .post(format!("{}/session/{}/execute/sync", self.base, self.session))
            .json(&json!({ "script": script, "args": [] }))
            .send()
            .await
            .expect("execute")
            .json()
            .await
            .expect("execute json");
        answer["value"].clone()
    }

    /// Polls `script` until `done` accepts its value; fails after 30 s with the last value.
    pub(crate) async fn until(&self, what: &str, script: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.until_within(Duration::from_secs(30), what, script, done).await
    }

    /// [`Browser::until`] with its own time limit.
    pub(crate) async fn until_within(
        &self,
        limit: Duration,
        what: &str,
        script: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.script(script).await;
            if done(&value) {
                return value;
            }
            assert!(Instant::now() < deadline, "{what}: last seen {value}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Browser {
    /// Clicks the first element matching `selector` (a tab link: the router handles it in place).
    pub(crate) async fn click(&self, selector: &str) {
        let clicked = self
            .script(&format!("const e = document.querySelector({selector:?}); if (e) {{ e.click(); }} return !!e;"))
            .await;
        assert_eq!(clicked, Value::Bool(true), "nothing matches {selector}");
    }

    /// Sends a Chrome DevTools Protocol command through chromedriver (`goog/cdp/execute`) and
    /// returns its result: media emulation, performance metrics.
    pub(crate) async fn cdp(&self, command: &str, params: Value) -> Value {
        let answer: Value = self
            .client
            .post(format!("{}/session/{}/goog/cdp/execute", self.base, self.session))
            .json(&json!({ "cmd": command, "params": params }))
            .send()
            .await
            .expect("cdp command")
            .json()
            .await
            .expect("cdp json");
        answer["value"].clone()
    }

    /// Writes a PNG of the window to `docs/screenshots/NAME.png` (shown in README).
    pub(crate) async fn screenshot(&self, name: &str) {
        use base64::Engine;
        let answer: Value = self
            .client
            .get(format!("{}/session/{}/screenshot", self.base, self.session))
            .send()
            .await
            .expect("screenshot")
            .json()
            .await
            .expect("screenshot json");
        let png = base64::engine::general_purpose::STANDARD
            .decode(answer["value"].as_str().unwrap_or_default())
            .expect("screenshot is base64");
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
        std::fs::create_dir_all(&folder).expect("screenshots folder");
        std::fs::write(folder.join(format!("{name}.png")), png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

const PAGE_STATE: &str = "return {
    connection: document.getElementById('connection')?.textContent ?? null,
    readings: Number(document.getElementById('kpi-readings')?.textContent ?? 'NaN'),
    sensors: document.getElementById('kpi-sensors')?.textContent ?? null,
    rows: document.querySelectorAll('#readings tbody tr').length,
    first_sensor: document.querySelector('#readings tbody tr td:nth-child(2)')?.textContent ?? null,
    plugins: Array.from(document.querySelectorAll('#plugins tbody tr td:first-child')).map(td => td.textContent),
    plugin_events: Array.from(document.querySelectorAll('#plugin-events tbody tr'))
        .map(tr => tr.children[1].textContent + ' ' + tr.children[2].textContent),
};";

/// The longest a browser test may take before it fails instead of holding the suite (a WebDriver
/// call has its own 60 s limit; this bounds everything else: the host, the simulator, Chromium).
pub(crate) const BROWSER_TEST_LIMIT: Duration = Duration::from_secs(300);

/// One browser test at a time: each runs Chromium, a host and a simulator, which two cores cannot
/// carry twice over beside the rest of the suite (run together, a page's main thread starved and
/// WebDriver calls timed out).
pub(crate) async fn one_browser_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static SLOT: std::sync::OnceLock<tokio::sync::Mutex<()>> = std::sync::OnceLock::new();
    SLOT.get_or_init(|| tokio::sync::Mutex::new(())).lock().await
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
#[ignore = "a browser test: `cargo xtask test` runs it after the suite, alone"]
async fn dashboard_shows_live_kpis_and_readings_and_updates_itself(pool: PgPool) {
    let _slot = crate::dashboard::one_browser_at_a_time().await;
    tokio::time::timeout(crate::dashboard::BROWSER_TEST_LIMIT, async move {
        let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/dashboard/index.html");
        assert!(built.exists(), "{} is missing: run `cargo xtask build` first", built.display());
        let scratch = scratch_folder("dashboard-plugins");
        let plugins = scratch.path();
        for plugin in ["isolation-forest", "zscore", "tumbling-window"] {
            put(plugins, &format!("{plugin}.wasm"), &std::fs::read(plugin_path(plugin)).expect("built plugin"));
        }
        let host = Host::start(pool.clone(), Some(plugins), &[]).await;
        let simulator = {
            let stop = CancellationToken::new();
            (host.simulate(&["--rate", "300", "--sensors", "20"], &stop), stop)
        };
        let browser = Browser::start().await;
        browser.goto(&format!("http://{}/", host.addr)).await;
        let first = browser
            .until("the page goes live with readings", PAGE_STATE, |s| {
                s["connection"] == "live"
                    && s["readings"].as_f64().is_some_and(|n| n > 0.0)
                    && s["rows"].as_u64().is_some_and(|n| n > 0)
            })
            .await;
        assert!(first["first_sensor"].as_str().is_some_and(|id| id.contains('_')), "{first}");
        // Without a reload, the numbers move on as batches arrive, and all 20 sensors become active.
        let seen = first["readings"].as_f64().unwrap_or_default();
        let later = browser
            .until("the readings KPI grows and all sensors are active", PAGE_STATE, |s| {
                s["readings"].as_f64().is_some_and(|n| n > seen) && s["sensors"] == "20"
            })
            .await;
        assert!(later["rows"].as_u64().is_some_and(|n| n <= 50), "{later}");
        // The page never shows more readings than the database holds.
        let stored: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sensor_readings").fetch_one(&pool).await.expect("count");
        assert!(later["readings"].as_f64().is_some_and(|n| n <= stored as f64), "{later} vs {stored} stored");
        // The plugins are on their own tab, reached without a reload (the stream stays open).
        browser.click("nav.tabs a[href^='/plugins']").await;
        let tab = browser
            .until("the plugins tab shows the plugins", PAGE_STATE, |s| {
                s["plugins"].as_array().is_some_and(|p| p.len() == 3)
            })
            .await;
        assert_eq!(tab["plugins"], json!(["isolation-forest", "zscore", "tumbling-window"]));
        assert_eq!(tab["connection"], "live", "{tab}");
        let mut loaded: Vec<String> =
            serde_json::from_value(tab["plugin_events"].clone()).expect("plugin events are strings");
        loaded.sort();
        assert_eq!(loaded, ["isolation-forest loaded", "tumbling-window loaded", "zscore loaded"]);
        // A new configuration swaps the z-score; a broken file is refused. Both appear, newest first,
        // pushed to the page as they happen.
        put(plugins, "zscore.toml", b"name = \"zscore\"\n[config]\nthreshold = 2.5\n");
        browser.until("the swap shows", PAGE_STATE, |s| s["plugin_events"][0] == "zscore swapped").await;
        put(plugins, "broken.wasm", b"\0asm not really");
        let after = browser.until("the refusal shows", PAGE_STATE, |s| s["plugin_events"][0] == "broken refused").await;
        assert_eq!(after["plugin_events"][1], "zscore swapped", "{after}");
        assert_eq!(after["plugin_events"].as_array().map(Vec::len), Some(5), "{after}");
        simulator.1.cancel();
        let report = simulator.0.await.expect("simulator task").expect("simulator");
        assert_eq!(report.failed, 0);
        browser.quit().await;
        host.stop().await.expect("clean shutdown");
    })
    .await
    .expect("the browser test finishes within its time limit");
}

/// Types `text` into the input `id` as a person would (the page listens for `input` events).
fn type_into(id: &str, text: &str) -> String {
    format!(
        "const input = document.getElementById('{id}'); input.value = '{text}'; \
         input.dispatchEvent(new Event('input', {{ bubbles: true }})); return input.value;"
    )
}

const ADMIN_STATE: &str = "return {
    connection: document.getElementById('connection')?.textContent ?? null,
    reload_disabled: document.getElementById('admin-reload')?.disabled ?? null,
    answer: document.getElementById('admin-answer')?.textContent ?? null,
    release_buttons: document.querySelectorAll('#plugins button').length,
    shadow_buttons: Array.from(document.querySelectorAll('#shadow-actions button')).map(b => b.id),
    first_event: document.querySelector('#plugin-events tbody tr')?.children[1].textContent + ' '
        + document.querySelector('#plugin-events tbody tr')?.children[2].textContent,
};";

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
#[ignore = "a browser test: `cargo xtask test` runs it after the suite, alone"]
async fn dashboard_admin_actions_need_the_token(pool: PgPool) {
    let _slot = crate::dashboard::one_browser_at_a_time().await;
    tokio::time::timeout(crate::dashboard::BROWSER_TEST_LIMIT, async move {
        let scratch = scratch_folder("dashboard-admin");
        let zscore = std::fs::read(plugin_path("zscore")).expect("built plugin");
        put(scratch.path(), "zscore.wasm", &zscore);
        // A shadow of the z-score, stricter, for the promote and discard buttons.
        put(scratch.path(), "zscore-next.wasm", &zscore);
        put(scratch.path(), "zscore-next.toml", b"shadow_of = \"zscore\"\n[config]\nthreshold = 2.0\n");
        let host = Host::start(pool, Some(scratch.path()), &["--admin-token", "dash-s3cret"]).await;
        crate::probes::wait_for_status(&format!("http://{}/readyz", host.addr), 200).await;
        // Readings, so that the shadow judges beside the live detector and is listed with it.
        let stop = CancellationToken::new();
        let simulator = host.simulate(&["--rate", "200", "--sensors", "10"], &stop);
        let browser = Browser::start().await;
        // The admin actions are on the plugins tab.
        browser.goto(&format!("http://{}/plugins", host.addr)).await;
        let start = browser.until("the page goes live", ADMIN_STATE, |s| s["connection"] == "live").await;
        // No token typed: nothing to click; a running plugin has no release button.
        assert_eq!((start["reload_disabled"].clone(), start["release_buttons"].clone()), (json!(true), json!(0)));
        assert_eq!(browser.script(&type_into("admin-token", "wrong")).await, "wrong");
        browser.script("document.getElementById('admin-reload').click(); return null;").await;
        browser.until("the refusal shows", ADMIN_STATE, |s| s["answer"] == "a valid bearer token is required").await;
        browser.script(&type_into("admin-token", "dash-s3cret")).await;
        // With the token, the shadow gets its buttons once it has judged readings beside the live
        // detector; discarding it stops it and deletes its files.
        browser
            .until_within(Duration::from_secs(60), "the shadow's buttons show", ADMIN_STATE, |s| {
                s["shadow_buttons"] == json!(["promote-zscore-next", "discard-zscore-next"])
            })
            .await;
        browser.script("document.getElementById('discard-zscore-next').click(); return null;").await;
        browser.until("the discard shows", ADMIN_STATE, |s| s["first_event"] == "zscore-next removed").await;
        assert!(!scratch.path().join("zscore-next.wasm").exists(), "the shadow's files are deleted");
        browser.script("document.getElementById('admin-reload').click(); return null;").await;
        let reloading = "1 plugins reloading; each is installed at a batch boundary once loaded";
        browser.until("the host's answer shows", ADMIN_STATE, |s| s["answer"] == reloading).await;
        browser.until("the swap shows", ADMIN_STATE, |s| s["first_event"] == "zscore swapped").await;
        stop.cancel();
        let report = simulator.await.expect("simulator task").expect("simulator");
        assert_eq!(report.failed, 0);
        browser.quit().await;
        host.stop().await.expect("clean shutdown");
    })
    .await
    .expect("the browser test finishes within its time limit");
}
