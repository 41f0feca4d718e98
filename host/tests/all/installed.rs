//! The binary as `cargo xtask install` lays it out (`PREFIX/bin/iotstream`, its built-in plugins
//! and dashboard in `PREFIX/share/iotstream/`), run from a folder that is not a checkout with no
//! `--builtin-plugins` or `--dashboard`, and a drop-in folder (`--plugins`) on top: it loads every
//! built-in plugin, each drop-in (one of a new name added, one of a built-in's name in its place)
//! and serves the dashboard at `/`.

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
    // The operator's drop-ins: a plugin of a new name, and one of a built-in's name.
    let dropin = elsewhere.path().join("my-plugins");
    std::fs::create_dir_all(&dropin).expect("drop-in folder");
    let zscore = share.join("plugins/zscore.wasm");
    std::fs::copy(&zscore, dropin.join("mine.wasm")).expect("copy");
    std::fs::copy(&zscore, dropin.join("zscore.wasm")).expect("copy");
    let mut child = Command::new(&bin)
        .args(["run", "--listen", "127.0.0.1:0", "--no-simulator", "--log-format", "json"])
        .args(["--database-url", &database_url(&pool), "--plugins", "my-plugins"])
        .current_dir(elsewhere.path())
        .env_remove("IOTSTREAM_BUILTIN_PLUGINS")
        .env_remove("IOTSTREAM_NO_BUILTIN_PLUGINS")
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
                let field = |key: &str| line["fields"][key].to_string();
                loaded.insert((field("plugin"), field("layer"), field("overrides_builtin")));
            }
            Some("plugin not loaded") => panic!("a built-in plugin failed: {line}"),
            Some("dashboard served") => dashboard = line["fields"]["url"].as_str().map(str::to_owned),
            _ => {}
        }
    }
    // Every built-in loads but the one a drop-in replaces, and both drop-ins load.
    let quoted = |text: &str| format!("{text:?}");
    let mut expected: BTreeSet<(String, String, String)> = built_in
        .iter()
        .filter(|name| *name != "zscore")
        .map(|name| (quoted(name), quoted("built_in"), "false".to_owned()))
        .collect();
    expected.insert((quoted("mine"), quoted("drop_in"), "false".to_owned()));
    expected.insert((quoted("zscore"), quoted("drop_in"), "true".to_owned()));
    assert_eq!(loaded, expected, "the built-ins, with the drop-ins on top");
    let dashboard = dashboard.unwrap_or_default();
    let page = reqwest::get(&dashboard).await.expect("GET /");
    assert_eq!(page.status(), 200);
    let index = std::fs::read_to_string(share.join("dashboard/index.html")).expect("index.html");
    assert_eq!(page.text().await.expect("body"), index, "/ serves the installed dashboard");
    let created: BTreeSet<String> = std::fs::read_dir(elsewhere.path())
        .expect("working folder")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert_eq!(created, BTreeSet::from(["my-plugins".to_owned()]), "nothing was created in the working folder");

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
