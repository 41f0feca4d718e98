//! The admin endpoints of a running host: each refused without the configured bearer token (401)
//! or when none is configured (403), while the read-only API stays open and CORS closed; with the
//! token, a quarantined plugin released, a shadow promoted or discarded through its files in the
//! drop-in folder (never the built-ins), every plugin reloaded, and what cannot be done answered by
//! a stable code.

use std::time::{Duration, Instant};

use iotstream::reading::SensorType;
use sqlx::PgPool;

use crate::support::{Host, plugin_path, put, reading, scratch_folder, test_plugin_path};

const TOKEN: &str = "admin-s3cret";
const ADMIN_PATHS: [&str; 4] = [
    "/api/admin/plugins/zscore/release",
    "/api/admin/shadows/zscore-next/discard",
    "/api/admin/shadows/zscore-next/promote",
    "/api/admin/reload",
];

/// `POST path` with `token` as the bearer (none: no header); the status and JSON body.
async fn post(host: &Host, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new().post(format!("http://{}{path}", host.addr));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("admin request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json body"))
}

async fn plugins(host: &Host) -> serde_json::Value {
    let url = format!("http://{}/api/plugins", host.addr);
    reqwest::get(url).await.expect("plugins").json().await.expect("json")
}

fn plugin<'a>(plugins: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    plugins["plugins"].as_array().expect("plugins").iter().find(|p| p["name"] == name)
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn admin_actions_are_refused_without_the_token(pool: PgPool) {
    let host = Host::start(pool, None, &["--admin-token", TOKEN]).await;
    for path in ADMIN_PATHS {
        for offered in [None, Some("wrong-token"), Some("")] {
            let mut request = reqwest::Client::new().post(format!("http://{}{path}", host.addr));
            if let Some(offered) = offered {
                request = request.bearer_auth(offered);
            }
            let response = request.send().await.expect("admin request");
            assert_eq!(response.status().as_u16(), 401, "{path} with {offered:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body: serde_json::Value = response.json().await.expect("json");
            assert_eq!(body["error"], "unauthorized", "{path}");
        }
    }
    // The read-only API needs no token; no origin is allowed to read it from a browser.
    let stats = reqwest::Client::new()
        .get(format!("http://{}/api/stats", host.addr))
        .header("Origin", "http://elsewhere.example")
        .send()
        .await
        .expect("stats");
    assert_eq!(stats.status().as_u16(), 200);
    assert!(stats.headers().get("access-control-allow-origin").is_none(), "{:?}", stats.headers());
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("http://{}{}", host.addr, ADMIN_PATHS[0]))
        .header("Origin", "http://elsewhere.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.headers().get("access-control-allow-origin").is_none(), "{:?}", preflight.headers());
    host.stop().await.expect("clean stop");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn admin_actions_are_off_without_a_configured_token(pool: PgPool) {
    let host = Host::start(pool, None, &[]).await;
    for path in ADMIN_PATHS {
        let (status, body) = post(&host, path, Some(TOKEN)).await;
        assert_eq!((status, body["error"].clone()), (403, "admin_disabled".into()), "{path}");
    }
    host.stop().await.expect("clean stop");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_shadow_is_discarded_with_its_files_and_the_folder_reloaded(pool: PgPool) {
    let folder = scratch_folder("admin-discard");
    let zscore = std::fs::read(plugin_path("zscore")).expect("zscore.wasm");
    put(folder.path(), "zscore.wasm", &zscore);
    put(folder.path(), "zscore-next.wasm", &zscore);
    put(folder.path(), "zscore-next.toml", b"shadow_of = \"zscore\"\n");
    let host = Host::start(pool, Some(folder.path()), &["--admin-token", TOKEN]).await;
    crate::probes::wait_for_status(&format!("http://{}/readyz", host.addr), 200).await;
    assert!(plugin(&plugins(&host).await, "zscore-next").is_some());

    // What cannot be done, by its code: nothing changes.
    let cases = [
        ("/api/admin/shadows/zscore/discard", 409, "not_a_shadow"),
        ("/api/admin/plugins/zscore/release", 409, "not_held"),
        ("/api/admin/plugins/absent/release", 404, "no_such_plugin"),
    ];
    for (path, status, code) in cases {
        let (answered, body) = post(&host, path, Some(TOKEN)).await;
        assert_eq!((answered, body["error"].clone()), (status, code.into()), "{path}: {body}");
    }

    let (status, body) = post(&host, "/api/admin/shadows/zscore-next/discard", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["done"], "shadow zscore-next discarded by an admin request; its files were deleted");
    assert_eq!(files(folder.path()), ["zscore.wasm"]);
    let after = plugins(&host).await;
    assert!(plugin(&after, "zscore-next").is_none() && plugin(&after, "zscore").is_some(), "{after}");

    // Reload: the one plugin left is loaded again and swapped with its state.
    let (status, body) = post(&host, "/api/admin/reload", Some(TOKEN)).await;
    assert_eq!(
        (status, body["done"].clone()),
        (200, "1 plugins reloading; each is installed at a batch boundary once loaded".into())
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = plugins(&host).await["events"].clone();
        let swapped =
            events.as_array().expect("events").iter().any(|e| e["plugin"] == "zscore" && e["action"] == "swapped");
        if swapped {
            break;
        }
        assert!(Instant::now() < deadline, "zscore never swapped: {events}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    host.stop().await.expect("clean stop");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_quarantined_plugin_is_released(pool: PgPool) {
    let folder = scratch_folder("admin-release");
    put(folder.path(), "misbehaving.wasm", &std::fs::read(test_plugin_path("misbehaving")).expect("misbehaving.wasm"));
    put(folder.path(), "misbehaving.json", br#"{"mode": "trap", "after_calls": 0}"#);
    let host = Host::start(pool, Some(folder.path()), &["--admin-token", TOKEN]).await;
    // Every call traps: backoffs of 1, 2, 4 and 8 s, then quarantine (docs/plugins.md).
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut ms = 1_764_064_800_000;
    loop {
        let r = reading("s1", SensorType::Co2, "lab_1", ms, 420.0);
        host.produce(&[("s1".to_owned(), iotstream::reading::encode(&r))]).await;
        ms += 1000;
        let state = plugin(&plugins(&host).await, "misbehaving").map(|p| p["state"].clone());
        if state == Some("quarantined".into()) {
            break;
        }
        assert!(Instant::now() < deadline, "never quarantined: {state:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, body) = post(&host, "/api/admin/plugins/misbehaving/release", Some(TOKEN)).await;
    assert_eq!((status, body["done"].clone()), (200, "plugin misbehaving released from quarantined".into()), "{body}");
    let released = plugins(&host).await;
    let released = plugin(&released, "misbehaving").expect("still running");
    assert_eq!((released["state"].clone(), released["consecutive_failures"].clone()), ("running".into(), 0.into()));
    host.stop().await.expect("clean stop");
}

#[test]
fn the_token_is_never_printed_and_the_server_binds_to_loopback_by_default() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_iotstream"))
        .args(["run", "--help"])
        .env("IOTSTREAM_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run iotstream");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && help.contains("--admin-token"), "{help}");
    assert!(!help.contains(TOKEN), "--help shows the admin token:\n{help}");
    let config = crate::support::run_config(&[]);
    assert!(config.listen.ip().is_loopback(), "{}", config.listen);
}

/// The plugins folder's file names, sorted.
fn files(folder: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .expect("folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_promoted_shadow_takes_the_live_detectors_place(pool: PgPool) {
    let folder = scratch_folder("admin-promote");
    let zscore = std::fs::read(plugin_path("zscore")).expect("zscore.wasm");
    put(folder.path(), "zscore.wasm", &zscore);
    put(folder.path(), "zscore-next.wasm", &zscore);
    put(folder.path(), "zscore-next.toml", b"shadow_of = \"zscore\"\n[config]\nthreshold = 2.0\n");
    let host = Host::start(pool, Some(folder.path()), &["--admin-token", TOKEN]).await;
    crate::probes::wait_for_status(&format!("http://{}/readyz", host.addr), 200).await;
    let (status, body) = post(&host, "/api/admin/shadows/zscore/promote", Some(TOKEN)).await;
    assert_eq!((status, body["error"].clone()), (409, "not_a_shadow".into()), "{body}");

    let (status, body) = post(&host, "/api/admin/shadows/zscore-next/promote", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    // The folder says what runs now, so a restart runs the same.
    assert_eq!(files(folder.path()), ["zscore.toml", "zscore.wasm"]);
    let manifest: toml::Table =
        std::fs::read_to_string(folder.path().join("zscore.toml")).expect("toml").parse().expect("toml");
    assert_eq!(manifest, "[config]\nthreshold = 2.0\n".parse::<toml::Table>().expect("toml"));
    // The watch swaps the live detector for the shadow's component and stops the shadow.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = plugins(&host).await;
        let events = now["events"].as_array().expect("events").clone();
        let swapped = events.iter().any(|e| e["plugin"] == "zscore" && e["action"] == "swapped");
        if swapped && plugin(&now, "zscore-next").is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "the promotion never took effect: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    host.stop().await.expect("clean stop");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn the_builtins_are_never_written_and_a_dropin_shadow_is_promoted_over_its_builtin(pool: PgPool) {
    let scratch = scratch_folder("admin-layers");
    let (builtin, dropin) = (scratch.path().join("builtin"), scratch.path().join("dropin"));
    std::fs::create_dir_all(&builtin).expect("builtin folder");
    std::fs::create_dir_all(&dropin).expect("dropin folder");
    let zscore = std::fs::read(plugin_path("zscore")).expect("zscore.wasm");
    put(&builtin, "zscore.wasm", &zscore);
    put(&builtin, "zscore-next.wasm", &zscore);
    put(&builtin, "zscore-next.toml", b"shadow_of = \"zscore\"\n");
    put(&dropin, "zscore-strict.wasm", &zscore);
    put(&dropin, "zscore-strict.toml", b"shadow_of = \"zscore\"\n[config]\nthreshold = 2.0\n");
    let (builtin_flag, dropin_flag) = (builtin.display().to_string(), dropin.display().to_string());
    let flags = ["--builtin-plugins", &builtin_flag, "--plugins", &dropin_flag, "--admin-token", TOKEN];
    let host = Host::start(pool, None, &flags).await;
    crate::probes::wait_for_status(&format!("http://{}/readyz", host.addr), 200).await;
    let before = plugins(&host).await;
    assert!(["zscore", "zscore-next", "zscore-strict"].iter().all(|name| plugin(&before, name).is_some()), "{before}");

    // A shadow among the built-ins is neither promoted nor discarded: the built-ins are not written.
    for action in ["promote", "discard"] {
        let (status, body) = post(&host, &format!("/api/admin/shadows/zscore-next/{action}"), Some(TOKEN)).await;
        assert_eq!((status, body["error"].clone()), (409, "built_in".into()), "{action}: {body}");
    }
    // The drop-in shadow of the built-in zscore becomes a drop-in zscore, which replaces it.
    let (status, body) = post(&host, "/api/admin/shadows/zscore-strict/promote", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(files(&dropin), ["zscore.toml", "zscore.wasm"]);
    assert_eq!(files(&builtin), ["zscore-next.toml", "zscore-next.wasm", "zscore.wasm"]);
    let promoted: toml::Table =
        std::fs::read_to_string(dropin.join("zscore.toml")).expect("manifest").parse().expect("toml");
    assert_eq!(promoted, "[config]\nthreshold = 2.0\n".parse::<toml::Table>().expect("toml"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let after = plugins(&host).await;
        let events = after["events"].as_array().cloned().unwrap_or_default();
        let swapped = events.iter().any(|e| {
            e["plugin"] == "zscore"
                && e["action"] == "swapped"
                && e["detail"].as_str().is_some_and(|d| d.contains("(drop_in): state handed over"))
        });
        if swapped && plugin(&after, "zscore-strict").is_none() {
            assert!(plugin(&after, "zscore-next").is_some(), "{after}");
            break;
        }
        assert!(Instant::now() < deadline, "the promotion never took effect: {after}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    host.stop().await.expect("clean stop");
}
