//! `iotstream plugin new NAME`: scaffolds a detector plugin crate that builds and passes
//! `iotstream plugin check` as it is, for an author to replace its algorithm.
//!
//! The crate is a workspace of its own (it can live anywhere) with:
//! * `Cargo.toml`: `cdylib` + `rlib`, the plugin SDK by path (relative when it can be), wit-bindgen;
//! * `src/lib.rs` (`export_detector!`) and `src/moving_average.rs`, a documented detector (an
//!   exponentially weighted moving average per sensor) with a native unit test;
//! * `wit/pipeline.wit`: a copy of the released contract the SDK's bindings are generated from;
//! * `NAME.json`, its example configuration, and `README.md`, how to test, build, check and install.
//!
//! Nothing is overwritten: when any of these files exists, nothing is written.
//!
//! Layout: this module; the templates beside it (`*.in`, `{name}` `{lib}` and `{sdk}` filled in).

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
    /// The `iotstream-plugin-sdk` crate's folder (default: the SDK of the source tree this binary was
    /// built from, `plugins/sdk`).
    #[arg(long)]
    pub sdk_path: Option<PathBuf>,
}

/// Why no crate was scaffolded.
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    /// The name cannot be a crate and file name.
    #[error(
        "plugin name {0:?} must be lowercase letters, digits and dashes, start with a letter and not end with a dash"
    )]
    InvalidName(String),
    /// No SDK at the given or default path.
    #[error("no iotstream-plugin-sdk at {0} (give its folder with --sdk-path)")]
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

/// Writes the crate; returns its folder and the files written, in order.
pub fn scaffold(config: &NewConfig) -> Result<(PathBuf, Vec<PathBuf>), NewError> {
    let name = config.name.as_str();
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(NewError::InvalidName(name.to_owned()));
    }
    let sdk = config.sdk_path.clone().unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk"));
    let sdk = sdk.canonicalize().ok().filter(|sdk| sdk.join("Cargo.toml").is_file()).ok_or(NewError::NoSdk(sdk))?;
    let dir = config.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    let files: Vec<(PathBuf, String)> = [
        ("Cargo.toml", include_str!("Cargo.toml.in")),
        ("src/lib.rs", include_str!("lib.rs.in")),
        ("src/moving_average.rs", include_str!("moving_average.rs.in")),
        ("wit/pipeline.wit", WIT),
        (format!("{name}.json").as_str(), include_str!("config.json.in")),
        ("README.md", include_str!("README.md.in")),
    ]
    .into_iter()
    .map(|(file, template)| (dir.join(file), template.to_owned()))
    .collect();
    if let Some((existing, _)) = files.iter().find(|(path, _)| path.exists()) {
        return Err(NewError::Exists(existing.clone()));
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| NewError::Io { path, source }
    };
    for folder in ["src", "wit"] {
        std::fs::create_dir_all(dir.join(folder)).map_err(io(&dir.join(folder)))?;
    }
    let crate_dir = dir.canonicalize().map_err(io(&dir))?;
    let sdk_path = relative(&crate_dir, &sdk).unwrap_or(sdk);
    let mut written = Vec::new();
    for (path, template) in files {
        let text = template
            .replace("{name}", name)
            .replace("{lib}", &name.replace('-', "_"))
            .replace("{sdk}", &sdk_path.to_string_lossy());
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
        "created plugin {} in {}: `cargo test` there runs its unit test, \
         `cargo build --target wasm32-wasip2 --release` builds it (see its README.md)",
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
}
