//! `iotstream plugin new NAME`: scaffolds a detector (or, with `--kind aggregator`, an aggregator)
//! plugin crate that builds and passes `iotstream plugin check` as it is, for an author to replace
//! its algorithm, in any folder, with no iotstream checkout: the binary writes its own copy of the
//! SDK and the WIT contract into the crate, so the plugin is built against the contract of the
//! host that scaffolded it.
//!
//! The crate is a workspace of its own (it can live anywhere) with:
//! * `Cargo.toml`: `cdylib` + `rlib`, the plugin SDK by path, wit-bindgen;
//! * `rust-toolchain.toml`: the toolchain and the `wasm32-wasip2` target (rustup installs both);
//! * `src/lib.rs` (`export_detector!` or `export_aggregator!`) and the algorithm: a documented
//!   detector (`src/moving_average.rs`, an exponentially weighted moving average per sensor) or
//!   aggregator (`src/fixed_windows.rs`, event-time windows per location and sensor type), with a
//!   native unit test;
//! * `vendor/iotstream-plugin-sdk/`: the SDK's sources, compiled into this binary (`--sdk-path`
//!   depends on another SDK folder instead);
//! * `wit/pipeline.wit`: the contract the SDK's bindings are generated from;
//! * `NAME.toml`, its manifest (configuration, limits, grants), and `README.md`: how to test,
//!   build, check and install it into a running host (copy under a hidden name, then rename).
//!
//! Nothing is overwritten: when any of these files exists, nothing is written.
//!
//! Layout: this module; the templates beside it (`*.in`, `{name}` `{lib}` `{kind}` `{sdk}` … filled
//! in).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// `iotstream plugin new`.
#[derive(Debug, Clone, clap::Args)]
pub struct NewConfig {
    /// The plugin's name: lowercase letters, digits and dashes, starting with a letter. It names the
    /// crate, the `.wasm` file and its `.json` configuration.
    pub name: String,
    /// The crate's folder (default: `./NAME`).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The stage it is: a detector judges each reading, an aggregator summarises windows.
    #[arg(long, value_enum, default_value_t = PluginKind::Detector)]
    pub kind: PluginKind,
    /// Depend on the `iotstream-plugin-sdk` crate in this folder instead of writing the SDK this
    /// binary carries into `vendor/` (for a plugin developed beside an iotstream checkout).
    #[arg(long)]
    pub sdk_path: Option<PathBuf>,
}

/// The interface a scaffolded plugin exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PluginKind {
    /// The WIT `detector` interface.
    Detector,
    /// The WIT `aggregator` interface.
    Aggregator,
}

impl PluginKind {
    /// Its name in manifests and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Detector => "detector",
            PluginKind::Aggregator => "aggregator",
        }
    }
}

/// Why no crate was scaffolded.
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    /// The name cannot be a crate and file name.
    #[error(
        "plugin name {0:?} must be lowercase letters, digits and dashes, start with a letter and not end with a dash"
    )]
    InvalidName(String),
    /// No SDK at the given path.
    #[error("no iotstream-plugin-sdk at {0} (--sdk-path names the folder of its Cargo.toml)")]
    NoSdk(PathBuf),
    /// A file the scaffold would write already exists.
    #[error("{0} already exists; nothing was written (choose another --dir or remove it)")]
    Exists(PathBuf),
    /// A folder or file could not be created or read.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The contract every scaffold carries a copy of.
const WIT: &str = include_str!("../../../../wit/pipeline.wit");

/// The SDK's sources, written into `vendor/iotstream-plugin-sdk/src/` of a scaffold (a test checks
/// the list against `plugins/sdk/src`).
pub const SDK_SOURCES: [(&str, &str); 11] = [
    ("aggregator.rs", include_str!("../../../../plugins/sdk/src/aggregator.rs")),
    ("batch.rs", include_str!("../../../../plugins/sdk/src/batch.rs")),
    ("catalog.rs", include_str!("../../../../plugins/sdk/src/catalog.rs")),
    ("config.rs", include_str!("../../../../plugins/sdk/src/config.rs")),
    ("contract.rs", include_str!("../../../../plugins/sdk/src/contract.rs")),
    ("detector.rs", include_str!("../../../../plugins/sdk/src/detector.rs")),
    ("float.rs", include_str!("../../../../plugins/sdk/src/float.rs")),
    ("lib.rs", include_str!("../../../../plugins/sdk/src/lib.rs")),
    ("state.rs", include_str!("../../../../plugins/sdk/src/state.rs")),
    ("window.rs", include_str!("../../../../plugins/sdk/src/window.rs")),
    ("wit.rs", include_str!("../../../../plugins/sdk/src/wit.rs")),
];

/// Where the SDK goes in a scaffold: two folders down, so the SDK's own `../../wit` is the
/// crate's `wit/`.
const VENDORED_SDK: &str = "vendor/iotstream-plugin-sdk";

/// The toolchain the workspace pins (`rust-toolchain.toml`), for the scaffold's own.
fn toolchain_channel() -> &'static str {
    include_str!("../../../../rust-toolchain.toml")
        .lines()
        .find_map(|line| line.strip_prefix("channel = \"")?.strip_suffix('"'))
        .unwrap_or("stable")
}

/// Writes the crate; returns its folder and the files written, in order.
pub fn scaffold(config: &NewConfig) -> Result<(PathBuf, Vec<PathBuf>), NewError> {
    let name = config.name.as_str();
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(NewError::InvalidName(name.to_owned()));
    }
    let sdk = match &config.sdk_path {
        Some(sdk) => Some(
            sdk.canonicalize()
                .ok()
                .filter(|sdk| sdk.join("Cargo.toml").is_file())
                .ok_or(NewError::NoSdk(sdk.clone()))?,
        ),
        None => None,
    };
    let dir = config.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    let (lib, module, algorithm, what, config_text, config_keys) = match config.kind {
        PluginKind::Detector => (
            include_str!("lib.rs.in"),
            "moving_average",
            include_str!("moving_average.rs.in"),
            "an exponentially weighted moving average per sensor",
            "alpha = 0.1\nthreshold = 5.0\nmin_readings = 10\n",
            "alpha`, `threshold`, `min_readings",
        ),
        PluginKind::Aggregator => (
            include_str!("aggregator_lib.rs.in"),
            "fixed_windows",
            include_str!("fixed_windows.rs.in"),
            "fixed event-time windows per location and sensor type",
            "window_ms = 60000\nlateness_ms = 5000\nidle_close_ms = 120000\n",
            "window_ms`, `lateness_ms`, `idle_close_ms",
        ),
    };
    let shadow = match config.kind {
        PluginKind::Detector => {
            "# shadow_of = \"zscore\"     # run beside this live detector, compared, flagging nothing\n"
        }
        PluginKind::Aggregator => "",
    };
    let mut files: Vec<(String, String)> = vec![
        ("Cargo.toml".into(), include_str!("Cargo.toml.in").into()),
        ("rust-toolchain.toml".into(), include_str!("rust-toolchain.toml.in").into()),
        ("src/lib.rs".into(), lib.into()),
        (format!("src/{module}.rs"), algorithm.into()),
        ("wit/pipeline.wit".into(), WIT.into()),
    ];
    if sdk.is_none() {
        files.push((format!("{VENDORED_SDK}/Cargo.toml"), include_str!("sdk.Cargo.toml.in").into()));
        for (file, source) in SDK_SOURCES {
            files.push((format!("{VENDORED_SDK}/src/{file}"), source.into()));
        }
    }
    files.push((format!("{name}.toml"), include_str!("manifest.toml.in").into()));
    files.push(("README.md".into(), include_str!("README.md.in").into()));
    let files: Vec<(PathBuf, String)> = files.into_iter().map(|(file, text)| (dir.join(file), text)).collect();
    if let Some((existing, _)) = files.iter().find(|(path, _)| path.exists()) {
        return Err(NewError::Exists(existing.clone()));
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| NewError::Io { path, source }
    };
    for (path, _) in &files {
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).map_err(io(folder))?;
        }
    }
    let crate_dir = dir.canonicalize().map_err(io(&dir))?;
    let sdk_path = match sdk {
        Some(sdk) => relative(&crate_dir, &sdk).unwrap_or(sdk),
        None => PathBuf::from(VENDORED_SDK),
    };
    let mut written = Vec::new();
    for (path, template) in files {
        // The SDK's sources are written as they are; only the templates are filled in.
        let text = if path.extension().is_some_and(|e| e == "rs") && path.starts_with(dir.join(VENDORED_SDK)) {
            template
        } else {
            template
                .replace("{name}", name)
                .replace("{lib}", &name.replace('-', "_"))
                .replace("{kind}", config.kind.as_str())
                .replace("{module}", module)
                .replace("{what}", what)
                .replace("{config_keys}", config_keys)
                .replace("{config}", config_text)
                .replace("{shadow}", shadow)
                .replace("{channel}", toolchain_channel())
                .replace("{version}", env!("CARGO_PKG_VERSION"))
                .replace("{sdk}", &sdk_path.to_string_lossy())
        };
        // create_new: a file that appeared since the check above is still not overwritten.
        let mut file = OpenOptions::new().write(true).create_new(true).open(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                NewError::Exists(path.clone())
            } else {
                NewError::Io { path: path.clone(), source }
            }
        })?;
        file.write_all(text.as_bytes()).map_err(io(&path))?;
        written.push(path);
    }
    Ok((dir, written))
}

/// `to` as a path relative to `from` (both absolute and canonical); none across Windows drives.
fn relative(from: &Path, to: &Path) -> Option<PathBuf> {
    let (from, to): (Vec<Component>, Vec<Component>) = (from.components().collect(), to.components().collect());
    if from.first() != to.first() {
        return None;
    }
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path: PathBuf = from[common..].iter().map(|_| Component::ParentDir).collect();
    path.extend(&to[common..]);
    Some(path)
}

/// Prints the files [`scaffold`] wrote (stdout) and what to do next (stderr).
pub fn print(config: &NewConfig, (dir, files): (PathBuf, Vec<PathBuf>)) -> anyhow::Result<()> {
    for file in &files {
        println!("{}", file.display());
    }
    eprintln!(
        "created {} plugin {} in {}: `cargo test` there runs its unit test, \
         `cargo build --target wasm32-wasip2 --release` builds it (see its README.md)",
        config.kind.as_str(),
        config.name,
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_to_the_common_folder() {
        let rel = |a: &str, b: &str| relative(Path::new(a), Path::new(b)).map(|p| p.display().to_string());
        assert_eq!(rel("/work/repo/plugins/new", "/work/repo/plugins/sdk").as_deref(), Some("../sdk"));
        assert_eq!(rel("/tmp/x/new", "/work/repo/plugins/sdk").as_deref(), Some("../../../work/repo/plugins/sdk"));
        assert_eq!(rel("/work/repo", "/work/repo/plugins/sdk").as_deref(), Some("plugins/sdk"));
    }

    #[test]
    fn the_scaffold_carries_every_sdk_source() {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk/src");
        let mut on_disk: Vec<String> = std::fs::read_dir(&sdk)
            .expect("the SDK's sources")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        assert_eq!(on_disk, SDK_SOURCES.map(|(file, _)| file.to_owned()));
    }

    /// The vendored SDK's manifest asks for what the workspace gives the SDK, so a scaffold builds
    /// against the same dependencies.
    #[test]
    fn the_vendored_sdk_asks_for_the_workspaces_dependencies() {
        let workspace: toml::Table =
            include_str!("../../../../Cargo.toml").parse().expect("the workspace's Cargo.toml");
        let sdk: toml::Table =
            include_str!("../../../../plugins/sdk/Cargo.toml").parse().expect("the SDK's Cargo.toml");
        let vendored: toml::Table = include_str!("sdk.Cargo.toml.in").parse().expect("the template");
        let shared = &workspace["workspace"]["dependencies"];
        let table = |t: &toml::Table, path: &[&str]| -> toml::Table {
            path.iter()
                .fold(toml::Value::Table(t.clone()), |v, key| v[*key].clone())
                .as_table()
                .cloned()
                .expect("table")
        };
        for section in [&["dependencies"][..], &["target", "cfg(target_os = \"wasi\")", "dependencies"]] {
            let (sdk, vendored) = (table(&sdk, section), table(&vendored, section));
            assert_eq!(sdk.keys().collect::<Vec<_>>(), vendored.keys().collect::<Vec<_>>(), "{section:?}");
            for (dependency, spec) in &vendored {
                let expected = &shared[dependency.as_str()];
                let normalise = |v: &toml::Value| match v {
                    toml::Value::String(version) => toml::Value::Table(toml::Table::from_iter([(
                        "version".to_owned(),
                        toml::Value::String(version.clone()),
                    )])),
                    other => other.clone(),
                };
                assert_eq!(normalise(spec), normalise(expected), "{dependency}");
            }
        }
        assert_ne!(toolchain_channel(), "stable", "the channel is read from rust-toolchain.toml");
    }
}
