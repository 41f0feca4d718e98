//! `iotstream plugin new`: run as the real binary in a folder outside the workspace (as an
//! installed binary would be), the scaffold is complete, needs no checkout (its SDK and WIT are the
//! binary's own), refuses to overwrite, and builds into a component that passes
//! `iotstream plugin check` (and its own unit test) as it is, for both kinds.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{Duration, TimeZone, Utc};
use iotstream::commands::plugin_new::{NewConfig, NewError, PluginKind, scaffold};
use iotstream::simulate::Fleet;

use crate::support::scratch_folder;

fn new_config(name: &str, dir: &Path) -> NewConfig {
    NewConfig { name: name.into(), dir: Some(dir.to_owned()), kind: PluginKind::Detector, sdk_path: None }
}

/// The workspace's target folder: the scaffold builds there, so the dependencies built for the
/// workspace (and for earlier runs of this test) are reused.
fn workspace_target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"), PathBuf::from)
}

/// One scaffold's cargo at a time: the scaffolds of the tests share the workspace's target folder,
/// and one's `cargo test` running its doctests (after cargo's build lock is released) found the
/// other's build had replaced the SDK library it links.
static CARGO_RUNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs cargo in `dir` with the workspace's target folder.
fn cargo(dir: &Path, args: &[&str]) {
    let _one_at_a_time = CARGO_RUNS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", workspace_target())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo {args:?} failed in {}", dir.display());
}

/// The real `iotstream` binary with `args`, in `dir`.
fn iotstream(dir: &Path, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_iotstream"))
        .args(args)
        .current_dir(dir)
        .env_remove("IOTSTREAM_PLUGINS")
        .output()
        .expect("iotstream runs");
    assert!(output.status.success(), "iotstream {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    output
}

/// Scaffolds `name` of `kind` with the binary in a scratch folder outside the workspace, builds it
/// offline (the workspace's lock file pins the versions already built), and checks it with the
/// binary as the README says; returns the check's JSON report.
fn scaffold_build_and_check(name: &str, kind: &str, readings: usize) -> serde_json::Value {
    let parent = scratch_folder("plugin-new");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("workspace");
    assert!(!parent.path().starts_with(&workspace), "the scratch folder is outside the workspace");
    let created = iotstream(parent.path(), &["plugin", "new", name, "--kind", kind]);
    let dir = parent.path().join(name);
    let written: Vec<String> = String::from_utf8_lossy(&created.stdout).lines().map(str::to_owned).collect();
    assert!(written.iter().any(|f| f.ends_with("vendor/iotstream-plugin-sdk/src/lib.rs")), "{written:?}");
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("manifest");
    assert!(manifest.contains(r#"iotstream-plugin-sdk = { path = "vendor/iotstream-plugin-sdk" }"#), "{manifest}");
    let toolchain = std::fs::read_to_string(dir.join("rust-toolchain.toml")).expect("toolchain");
    assert!(toolchain.contains(r#"targets = ["wasm32-wasip2"]"#), "{toolchain}");
    let plugin_manifest = std::fs::read_to_string(dir.join(format!("{name}.toml"))).expect("plugin manifest");
    assert!(plugin_manifest.contains(&format!("kind = \"{kind}\"")), "{plugin_manifest}");
    // The SDK and the contract are this binary's own, byte for byte.
    let sdk_lib = std::fs::read_to_string(dir.join("vendor/iotstream-plugin-sdk/src/lib.rs")).expect("sdk");
    assert_eq!(sdk_lib, std::fs::read_to_string(workspace.join("plugins/sdk/src/lib.rs")).expect("sdk source"));
    let wit = std::fs::read_to_string(dir.join("wit/pipeline.wit")).expect("wit");
    assert_eq!(wit, std::fs::read_to_string(workspace.join("wit/pipeline.wit")).expect("wit source"));

    std::fs::copy(workspace.join("Cargo.lock"), dir.join("Cargo.lock")).expect("lock");
    cargo(&dir, &["test", "--offline", "--quiet"]);
    cargo(&dir, &["build", "--offline", "--quiet", "--release", "--target", "wasm32-wasip2"]);
    // The README's steps: the component beside its manifest, checked by the binary.
    let lib = name.replace('-', "_");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).expect("out");
    std::fs::copy(
        workspace_target().join(format!("wasm32-wasip2/release/{lib}.wasm")),
        out.join(format!("{name}.wasm")),
    )
    .expect("component");
    std::fs::copy(dir.join(format!("{name}.toml")), out.join(format!("{name}.toml"))).expect("manifest copy");
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("readme");
    assert!(readme.contains(&format!("iotstream plugin check out/{name}.wasm")), "{readme}");
    assert!(readme.contains(&format!("mv \"$PLUGINS/.{name}.wasm.partial\" \"$PLUGINS/{name}.wasm\"")), "{readme}");
    let report =
        iotstream(&dir, &["plugin", "check", &format!("out/{name}.wasm"), "--readings", &readings.to_string()]);
    serde_json::from_slice(&report.stdout).expect("the check's JSON report")
}

#[test]
fn a_scaffolded_detector_builds_and_passes_the_check_outside_the_workspace() {
    let report = scaffold_build_and_check("my-detector", "detector", 2000);
    assert_eq!((report["kind"].as_str(), report["name"].as_str()), (Some("detector"), Some("my-detector")));
    assert_eq!(report["readings"], 2000);
    // 10 simulated sensors, each warming up on its first 10 readings (min_readings in the manifest).
    assert_eq!(report["warming_up"], 100);
}

#[test]
fn a_scaffolded_aggregator_builds_and_passes_the_check_outside_the_workspace() {
    let readings = 2000;
    let report = scaffold_build_and_check("my-windows", "aggregator", readings);
    assert_eq!((report["kind"].as_str(), report["name"].as_str()), (Some("aggregator"), Some("my-windows")));
    // The check's readings, formed again: 10 sensors (seed 1), one reading a second from a
    // minute boundary, in order. A location and type's minute closes once one of its readings is
    // 5 s (lateness_ms) past the minute's end.
    let start = Utc.timestamp_millis_opt(1_767_225_600_000).single().expect("start");
    let mut fleet = Fleet::new(10, 0.01, 1);
    let mut minutes: std::collections::BTreeMap<(String, String), (BTreeSet<i64>, i64)> = Default::default();
    for i in 0..readings {
        let reading = fleet.next_reading(start + Duration::seconds(i as i64));
        let at = reading.timestamp.timestamp_millis();
        let group = minutes.entry((reading.location.to_string(), format!("{:?}", reading.sensor_type))).or_default();
        group.0.insert(at.div_euclid(60_000));
        group.1 = group.1.max(at);
    }
    let expected: usize = minutes
        .values()
        .map(|(starts, newest)| starts.iter().filter(|minute| (*minute + 1) * 60_000 <= newest - 5_000).count())
        .sum();
    assert!(expected > 0);
    assert_eq!(report["windows"], expected);
}

#[test]
fn the_scaffold_refuses_to_overwrite_and_bad_names() {
    let parent = scratch_folder("plugin-new-refusals");
    let dir = parent.path().join("my-detector");
    let (root, files) = scaffold(&new_config("my-detector", &dir)).expect("scaffolds");
    assert_eq!(root, dir);
    let names: Vec<String> =
        files.iter().map(|f| f.strip_prefix(&dir).expect("inside").display().to_string()).collect();
    assert_eq!(
        names[..5],
        ["Cargo.toml", "rust-toolchain.toml", "src/lib.rs", "src/moving_average.rs", "wit/pipeline.wit"]
    );
    assert_eq!(names[names.len() - 2..], ["my-detector.toml", "README.md"]);
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
    // --sdk-path depends on an SDK folder instead of writing one.
    let linked = parent.path().join("linked");
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk");
    let config = NewConfig { sdk_path: Some(sdk.clone()), ..new_config("linked", &linked) };
    scaffold(&config).expect("scaffolds against the checkout's SDK");
    assert!(!linked.join("vendor").exists());
    let manifest = std::fs::read_to_string(linked.join("Cargo.toml")).expect("manifest");
    let path = manifest.lines().find_map(|l| l.strip_prefix(r#"iotstream-plugin-sdk = { path = ""#)).expect("sdk dep");
    assert!(linked.join(path.trim_end_matches("\" }")).join("src/detector.rs").is_file());
    let missing =
        NewConfig { sdk_path: Some(parent.path().join("nowhere")), ..new_config("other", &parent.path().join("o")) };
    assert!(matches!(scaffold(&missing), Err(NewError::NoSdk(_))));
}
