//! `iotstream plugin new`: the scaffold is complete, refuses to overwrite, and builds into a
//! component that passes `iotstream plugin check` (and its own unit test) as it is.

use std::path::{Path, PathBuf};
use std::process::Command;

use iotstream::commands::plugin_check::{CheckConfig, check};
use iotstream::commands::plugin_new::{NewConfig, NewError, scaffold};

use crate::support::scratch_folder;

fn new_config(name: &str, dir: &Path) -> NewConfig {
    NewConfig { name: name.into(), dir: Some(dir.to_owned()), sdk_path: None }
}

/// Runs cargo in `dir` with the workspace's target folder, so the dependencies built for the
/// workspace are reused.
fn cargo(dir: &Path, args: &[&str]) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from);
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo {args:?} failed in {}", dir.display());
}

#[test]
fn a_scaffolded_plugin_builds_and_passes_the_check() {
    let parent = scratch_folder("plugin-new");
    let dir = parent.path().join("my-detector");
    let (root, files) = scaffold(&new_config("my-detector", &dir)).expect("scaffolds");
    assert_eq!(root, dir);
    let names: Vec<String> =
        files.iter().map(|f| f.strip_prefix(&dir).expect("inside").display().to_string()).collect();
    assert_eq!(
        names,
        ["Cargo.toml", "src/lib.rs", "src/moving_average.rs", "wit/pipeline.wit", "my-detector.json", "README.md"]
    );
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("manifest");
    assert!(manifest.contains(r#"name = "my-detector""#) && manifest.contains(r#"crate-type = ["cdylib", "rlib"]"#));
    let sdk = manifest.lines().find_map(|l| l.strip_prefix(r#"iotstream-plugin-sdk = { path = ""#)).expect("sdk dep");
    let sdk = dir.join(sdk.trim_end_matches("\" }"));
    assert!(sdk.join("src/detector.rs").is_file(), "the SDK path {} resolves", sdk.display());
    assert!(std::fs::read_to_string(dir.join("README.md")).expect("readme").contains("release/my_detector.wasm"));

    // Nothing is overwritten, not even partly.
    std::fs::write(dir.join("README.md"), "mine").expect("edit");
    std::fs::remove_file(dir.join("src/lib.rs")).expect("remove");
    let again = scaffold(&new_config("my-detector", &dir));
    assert!(matches!(&again, Err(NewError::Exists(path)) if path.ends_with("Cargo.toml")), "{again:?}");
    assert!(!dir.join("src/lib.rs").exists());
    assert_eq!(std::fs::read_to_string(dir.join("README.md")).expect("readme"), "mine");
    std::fs::remove_dir_all(&dir).expect("clean");
    scaffold(&new_config("my-detector", &dir)).expect("scaffolds again");
    for bad in ["My", "9lives", "x_y", "trailing-", ""] {
        assert!(
            matches!(scaffold(&new_config(bad, &parent.path().join("bad"))), Err(NewError::InvalidName(_))),
            "{bad}"
        );
    }

    // The workspace's lock file pins the versions already built; offline, nothing is fetched.
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"), dir.join("Cargo.lock")).expect("lock");
    cargo(&dir, &["test", "--offline", "--quiet"]);
    cargo(&dir, &["build", "--offline", "--quiet", "--release", "--target", "wasm32-wasip2"]);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"), PathBuf::from);
    let config = std::fs::read_to_string(dir.join("my-detector.json")).expect("config");
    let report = check(&CheckConfig {
        file: target.join("wasm32-wasip2/release/my_detector.wasm"),
        config: Some(config),
        readings: 2000,
        max_flagged_share: 0.1,
    })
    .expect("the scaffold passes the check");
    assert_eq!((report.kind.as_str(), report.name.as_str(), report.readings), ("detector", "my-detector", 2000));
    // 10 simulated sensors, each warming up on its first 10 readings (min_readings).
    assert_eq!(report.warming_up, 100);
}
