//! The binary as `cargo xtask install` lays it out (`PREFIX/bin/iotstream`, its built-in plugins
//! and dashboard in `PREFIX/share/iotstream/`), run from a folder that is not a checkout with no
//! `--plugins` or `--dashboard`: it loads every built-in plugin and serves the dashboard at `/`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::support::{database_url, scratch_folder};

/// Copies every file of `from` into `to` (created).
fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create");
    for entry in std::fs::read_dir(from).expect("read") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn an_installed_binary_runs_anywhere_with_its_plugins_and_dashboard(pool: PgPool) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let prefix = scratch_folder("installed");
    let bin = prefix.path().join("bin/iotstream");
    std::fs::create_dir_all(bin.parent().expect("bin")).expect("bin folder");
    // A hard link where it can be (the binary is large), a copy where it cannot.
    if std::fs::hard_link(env!("CARGO_BIN_EXE_iotstream"), &bin).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_iotstream"), &bin).expect("copy the binary");
    }
    let share = prefix.path().join("share/iotstream");
    copy_files(&workspace.join("dist/plugins"), &share.join("plugins"));
    copy_files(&workspace.join("dist/dashboard"), &share.join("dashboard"));
    let built_in: BTreeSet<String> = std::fs::read_dir(share.join("plugins"))
        .expect("plugins")
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".wasm").map(str::to_owned))
        .collect();
    assert!(built_in.len() >= 4, "{built_in:?}");

    let elsewhere = scratch_folder("elsewhere");
    let mut child = Command::new(&bin)
        .args(["run", "--listen", "127.0.0.1:0", "--no-simulator", "--log-format", "json"])
        .args(["--database-url", &database_url(&pool)])
        .current_dir(elsewhere.path())
        .env_remove("IOTSTREAM_PLUGINS")
        .env_remove("IOTSTREAM_DASHBOARD")
        .env_remove("IOTSTREAM_BROKERS")
        .env("IOTSTREAM_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the installed iotstream");
    let rx = crate::support::json_log_lines(child.stderr.take().expect("stderr"));
    let (mut loaded, mut dashboard) = (BTreeSet::new(), None);
    let deadline = Instant::now() + Duration::from_secs(90);
    while dashboard.is_none() {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("the host starts");
        match line["fields"]["message"].as_str() {
            Some("plugin loaded") => {
                loaded.insert(line["fields"]["plugin"].as_str().unwrap_or_default().to_owned());
            }
            Some("plugin not loaded") => panic!("a built-in plugin failed: {line}"),
            Some("dashboard served") => dashboard = line["fields"]["url"].as_str().map(str::to_owned),
            _ => {}
        }
    }
    assert_eq!(loaded, built_in, "every built-in plugin loads");
    let dashboard = dashboard.unwrap_or_default();
    let page = reqwest::get(&dashboard).await.expect("GET /");
    assert_eq!(page.status(), 200);
    let index = std::fs::read_to_string(share.join("dashboard/index.html")).expect("index.html");
    assert_eq!(page.text().await.expect("body"), index, "/ serves the installed dashboard");
    assert!(!elsewhere.path().join("dist").exists(), "nothing was created in the working folder");

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill").success());
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(stopped.elapsed() < Duration::from_secs(15), "still running 15 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
}
