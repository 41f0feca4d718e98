//! `forest-bench`: fits and scores the Isolation Forest on labelled CSVs (`f0,...,label`) and prints
//! one JSON line per file: rows, mean fit+score milliseconds over seeds 0-4, and mean ROC AUC. Built
//! natively and as a `wasm32-wasip2` command, so `iotstream bench-forest` can time the same code both
//! ways (the `.wasm` runs in the host's own engine, reading the files from a read-only preopen).

use std::time::Instant;

use isolation_forest::forest::ForestParams;
use isolation_forest::metrics::roc_auc;

fn main() {
    for path in std::env::args().skip(1) {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) => {
                eprintln!("{path}: {err}");
                std::process::exit(1);
            }
        };
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let mut fields: Vec<f64> = line.split(',').filter_map(|f| f.trim().parse().ok()).collect();
            labels.push(fields.pop() == Some(1.0));
            rows.push(fields);
        }
        let (mut millis, mut aucs) = (0.0, 0.0);
        for seed in 0..5 {
            let started = Instant::now();
            let Ok(forest) = (ForestParams { n_estimators: 100, max_samples: 256, seed }).fit_rows(&rows) else {
                eprintln!("{path}: cannot fit");
                std::process::exit(1);
            };
            let scores: Vec<f64> = rows.iter().map(|r| forest.score(r)).collect();
            millis += started.elapsed().as_secs_f64() * 1000.0;
            aucs += roc_auc(&scores, &labels).unwrap_or(f64::NAN);
        }
        let name = path.rsplit('/').next().unwrap_or(&path).trim_end_matches(".csv");
        println!(
            r#"{{"data":"{name}","rows":{},"fit_score_ms":{:.3},"auc":{:.5}}}"#,
            rows.len(),
            millis / 5.0,
            aucs / 5.0
        );
    }
}
