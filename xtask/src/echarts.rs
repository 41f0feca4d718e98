//! The dashboard's chart library, Apache ECharts, served by the host itself so the page works
//! offline: its release tarball comes from the npm registry (through `npm pack`, npm's own
//! client), pinned by version and checked against the integrity hash written here before a byte of
//! it is used. A tarball that does not match is deleted and the build fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use base64::Engine;
use sha2::{Digest, Sha512};

/// The ECharts release: 6.0.0, the current major (dark theme built in, tree of chart types the
/// dashboard uses all present in the prebuilt `dist/echarts.min.js`).
const VERSION: &str = "6.0.0";
/// The registry's `dist.integrity` of that release (`npm view echarts@6.0.0 dist.integrity`):
/// SHA-512 of the tarball, base64. Pinned here, so a changed tarball cannot slip in.
const INTEGRITY: &str =
    "sha512-Tte/grDQRiETQP4xz3iZWSvoHrkCQtwqd6hs+mifXcjrCuo2iKWbajFObuLJVBlDIJlOzgQPd1hsaKt/3+OMkQ==";
/// The files of the tarball the dashboard ships: the minified library and its licence and notice
/// (Apache-2.0 asks that both travel with it).
const FILES: [(&str, &str); 3] = [
    ("package/dist/echarts.min.js", "echarts.min.js"),
    ("package/LICENSE", "echarts.LICENSE"),
    ("package/NOTICE", "echarts.NOTICE"),
];

/// The `sha512-…` integrity string of `bytes`, as npm writes it.
fn integrity(bytes: &[u8]) -> String {
    format!("sha512-{}", base64::engine::general_purpose::STANDARD.encode(Sha512::digest(bytes)))
}

/// The verified tarball in `cache`, downloaded first when missing or not matching.
fn tarball(cache: &Path) -> Result<PathBuf> {
    let file = cache.join(format!("echarts-{VERSION}.tgz"));
    let matches = |file: &Path| std::fs::read(file).is_ok_and(|bytes| integrity(&bytes) == INTEGRITY);
    if matches(&file) {
        return Ok(file);
    }
    std::fs::create_dir_all(cache).with_context(|| format!("create {}", cache.display()))?;
    if !Command::new("npm").arg("--version").output().is_ok_and(|o| o.status.success()) {
        // npm only as the registry's client; Debian's package is enough.
        crate::ensure_apt_packages(&["npm"])?;
    }
    eprintln!("xtask: fetching echarts@{VERSION} from the npm registry");
    crate::status(
        Command::new("npm").args(["pack", &format!("echarts@{VERSION}"), "--silent", "--pack-destination"]).arg(cache),
    )
    .context("npm pack echarts (is npm installed and the npm registry reachable?)")?;
    if !matches(&file) {
        let _ = std::fs::remove_file(&file);
        bail!("echarts-{VERSION}.tgz does not match its pinned integrity {INTEGRITY}: removed");
    }
    Ok(file)
}

/// Puts ECharts' script, licence and notice into `out` (the dashboard's folder).
pub fn install(cache: &Path, out: &Path) -> Result<()> {
    let tarball = tarball(cache)?;
    let unpacked = cache.join(format!("echarts-{VERSION}"));
    std::fs::create_dir_all(&unpacked)?;
    let mut tar = Command::new("tar");
    tar.arg("-xzf").arg(&tarball).arg("-C").arg(&unpacked);
    crate::status(tar.args(FILES.map(|(from, _)| from)))?;
    for (from, to) in FILES {
        std::fs::copy(unpacked.join(from), out.join(to)).with_context(|| format!("copy echarts {from}"))?;
    }
    Ok(())
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
