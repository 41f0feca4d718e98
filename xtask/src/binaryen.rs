//! `wasm-opt`, binaryen's optimiser, for the release build of the dashboard: it shrinks the
//! wasm-bindgen output before it is served. It comes from the npm registry (binaryen.js: the
//! optimiser compiled to WebAssembly, run by Node), pinned and integrity-checked ([`crate::npm`]).
//! Not Debian's: its `wasm-opt` (binaryen 108) silently breaks Leptos output (a blank page, with
//! "WebAssembly.Table.set(): Argument 1 is invalid" on the console).

use std::path::Path;
use std::process::Command;

use anyhow::Result;

/// binaryen 132, which optimises the dashboard's module correctly.
const VERSION: &str = "132.0.0";
/// The registry's `dist.integrity` of that release (`npm view binaryen@132.0.0 dist.integrity`).
const INTEGRITY: &str =
    "sha512-4Usg7yEvwO3FMso3Oov6qkOOHSod1IEv+boKkh77kTljM+eNBouqCTbqWswGzbG+vDNO/b/v2C4gfEh1WgB9Lg==";
/// The optimiser (one self-contained script, its wasm inlined) and the `package.json` beside it that
/// makes Node read it as CommonJS.
const FILES: [&str; 2] = ["package/bin/wasm-opt", "package/bin/package.json"];
/// The WebAssembly features rustc's `wasm32-unknown-unknown` target enables by default, which the
/// module therefore already uses: `wasm-opt` must accept them, and adds no others.
const FEATURES: [&str; 6] = [
    "--enable-bulk-memory",
    "--enable-mutable-globals",
    "--enable-nontrapping-float-to-int",
    "--enable-reference-types",
    "--enable-sign-ext",
    "--enable-multivalue",
];

/// Optimises the module `wasm` in place for size (`-Oz`), keeping no debug names.
pub fn optimize(cache: &Path, wasm: &Path) -> Result<()> {
    let tarball = crate::npm::verified_tarball("binaryen", VERSION, INTEGRITY, cache)?;
    let unpacked = cache.join(format!("binaryen-{VERSION}"));
    std::fs::create_dir_all(&unpacked)?;
    let mut tar = Command::new("tar");
    tar.arg("-xzf").arg(&tarball).arg("-C").arg(&unpacked);
    crate::status(tar.args(FILES))?;
    ensure_node()?;
    let optimized = wasm.with_extension("opt.wasm");
    crate::status(
        Command::new("node")
            .arg(unpacked.join("package/bin/wasm-opt"))
            .arg(wasm)
            .args(["-Oz", "--strip-debug"])
            .args(FEATURES)
            .arg("-o")
            .arg(&optimized),
    )?;
    std::fs::rename(&optimized, wasm)?;
    Ok(())
}

/// Node, to run the optimiser: Debian's `nodejs` (npm, which fetched it, depends on it).
fn ensure_node() -> Result<()> {
    if Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    crate::ensure_apt_packages(&["nodejs"])
}
