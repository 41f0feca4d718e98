//! `forest-bench`: fits and scores the Isolation Forest on labelled CSVs (`f0,...,label`) and prints
//! one JSON line per file: rows, mean fit+score milliseconds over seeds 0-4, and mean ROC AUC. Built
//! natively and as a `wasm32-wasip2` command, so `iotstream bench-forest` can time the same code both
//! ways (the `.wasm` runs in the host's own engine, reading the files from a read-only preopen).

use isolation_forest::metrics::{parse_labelled_csv, time_fit_and_score};

fn main() {
    for path in std::env::args().skip(1) {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|err| {
            eprintln!("{path}: {err}");
            std::process::exit(1);
        });
        let (rows, labels) = parse_labelled_csv(&text);
        let (millis, auc) = time_fit_and_score(&rows, &labels, 0..5).unwrap_or_else(|err| {
            eprintln!("{path}: {err}");
            std::process::exit(1);
        });
        let name = path.rsplit('/').next().unwrap_or(&path).trim_end_matches(".csv");
        println!(r#"{{"data":"{name}","rows":{},"fit_score_ms":{millis:.3},"auc":{auc:.5}}}"#, rows.len());
    }
}
