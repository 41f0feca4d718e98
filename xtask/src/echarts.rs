//! The dashboard's chart library, Apache ECharts, served by the host itself so the page works
//! offline: its release tarball comes from the npm registry (through `npm pack`, npm's own
//! client), pinned by version and checked against the integrity hash written here before a byte of
//! it is used. A tarball that does not match is deleted and the build fails.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

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

/// Puts ECharts' script, licence and notice into `out` (the dashboard's folder).
pub fn install(cache: &Path, out: &Path) -> Result<()> {
    let tarball = crate::npm::verified_tarball("echarts", VERSION, INTEGRITY, cache)?;
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
