//! `iotstream bench-forest`: the Isolation Forest's fit and score on labelled CSVs, natively (in
//! this process) and as `.wasm` (the `forest-bench` command component, run by this host's engine),
//! in one run: milliseconds, samples/s and ROC AUC per data set. `bench/iforest_vs_sklearn.py`
//! prints these beside scikit-learn's.

use std::path::PathBuf;

use isolation_forest::metrics::{parse_labelled_csv, time_fit_and_score};
use serde::{Deserialize, Serialize};

use crate::plugins::{PluginError, PluginRuntime};

/// `iotstream bench-forest`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchForestConfig {
    /// Folder of labelled `f0,...,label` CSVs.
    #[arg(long, default_value = "plugins/isolation-forest/tests/data/odds")]
    pub data: PathBuf,
    /// The `forest-bench` command component (`cargo xtask build` writes it).
    #[arg(long, default_value = "dist/tools/forest-bench.wasm")]
    pub wasm: PathBuf,
}

/// One data set, both ways.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForestTiming {
    /// The data set.
    pub data: String,
    /// Its rows.
    pub rows: usize,
    /// Native: mean milliseconds to fit and score every row, seeds 0-4.
    pub native_ms: f64,
    /// As `.wasm`: the same.
    pub wasm_ms: f64,
    /// Native samples (rows fitted and scored) per second.
    pub native_samples_per_s: f64,
    /// `.wasm` samples per second.
    pub wasm_samples_per_s: f64,
    /// Mean ROC AUC (the same both ways: the same code and seeds).
    pub auc: f64,
}

/// What `forest-bench` prints per file.
#[derive(Deserialize)]
struct WasmLine {
    data: String,
    fit_score_ms: f64,
}

/// Times every CSV in the folder both ways.
pub fn bench_forest(config: &BenchForestConfig) -> Result<Vec<ForestTiming>, PluginError> {
    let read_error = |source| PluginError::Read { path: config.data.clone(), source };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&config.data)
        .map_err(read_error)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    files.sort();
    let runtime = PluginRuntime::new()?;
    let mut args = vec!["forest-bench".to_owned()];
    args.extend(files.iter().filter_map(|f| f.file_name()).map(|name| format!("/data/{}", name.to_string_lossy())));
    let printed = runtime.run_command(&config.wasm, &args, &config.data)?;
    let wasm: Vec<WasmLine> = printed.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    let mut timings = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|source| PluginError::Read { path: file.clone(), source })?;
        let (rows, labels) = parse_labelled_csv(&text);
        let (native_ms, auc) = time_fit_and_score(&rows, &labels, 0..5)
            .map_err(|err| PluginError::Trap { plugin: "forest".into(), message: err.to_string() })?;
        let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let wasm_ms = wasm.iter().find(|w| w.data == name).map_or(f64::NAN, |w| w.fit_score_ms);
        timings.push(ForestTiming {
            rows: rows.len(),
            native_samples_per_s: rows.len() as f64 / native_ms * 1000.0,
            wasm_samples_per_s: rows.len() as f64 / wasm_ms * 1000.0,
            native_ms,
            wasm_ms,
            auc,
            data: name,
        });
    }
    Ok(timings)
}
