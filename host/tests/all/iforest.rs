//! `iotstream iforest` on tabular CSVs: labelled (AUC reported) and unlabelled, and a bad cell.

use iotstream::commands::iforest::{IforestConfig, iforest};

use crate::support::scratch_folder;

fn config(input: &std::path::Path, out: &std::path::Path) -> IforestConfig {
    IforestConfig {
        input: input.to_owned(),
        label_column: "label".into(),
        seed: 3,
        trees: 100,
        max_samples: 256,
        out: out.to_owned(),
    }
}

#[test]
fn scores_every_row_reports_auc_and_refuses_bad_cells() {
    let scratch = scratch_folder("iforest");
    let dir = scratch.path();
    // A 20 x 20 grid and two far points, labelled: they isolate first, so the AUC is exactly 1.
    let mut csv = String::from("x,label,y\n");
    for i in 0..400 {
        csv.push_str(&format!("{},0,{}\n", i % 20, i / 20));
    }
    csv.push_str("90,1,90\n-70,1,5\n");
    let input = dir.join("grid.csv");
    std::fs::write(&input, &csv).expect("write");
    let out = dir.join("scores.csv");
    let summary = iforest(&config(&input, &out)).expect("scores");
    assert_eq!((summary.rows, summary.features, summary.auc), (402, 2, Some(1.0)));
    assert!(summary.fit_score_ms > 0.0);
    let written = std::fs::read_to_string(&out).expect("read");
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!((lines.len(), lines[0], lines[401].ends_with(",1")), (403, "score,label", true));

    // Without a label column every column is a feature and no AUC is reported.
    let unlabelled = dir.join("unlabelled.csv");
    std::fs::write(&unlabelled, "a,b\n1,2\n2,3\n3,4\n").expect("write");
    let summary = iforest(&config(&unlabelled, &out)).expect("scores");
    assert_eq!((summary.rows, summary.features, summary.auc), (3, 2, None));
    assert_eq!(std::fs::read_to_string(&out).expect("read").lines().next(), Some("score"));

    std::fs::write(&unlabelled, "a,b\n1,2\n2,x\n").expect("write");
    let err = iforest(&config(&unlabelled, &out)).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.ends_with("row 2, column b: \"x\" is not a finite number"), "{err}");
}

#[test]
fn the_forest_runs_the_same_natively_and_as_a_wasi_command() {
    use iotstream::commands::bench_forest::{BenchForestConfig, bench_forest};
    let scratch = scratch_folder("forest-bench");
    let dir = scratch.path();
    let mut csv = String::from("f0,f1,label\n");
    for i in 0..400 {
        csv.push_str(&format!("{},{},0\n", i % 20, i / 20));
    }
    csv.push_str("90,90,1\n");
    std::fs::write(dir.join("grid.csv"), csv).expect("write");
    let wasm = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist/tools/forest-bench.wasm");
    assert!(wasm.exists(), "{} is missing: run `cargo xtask build` first", wasm.display());
    let timings = bench_forest(&BenchForestConfig { data: dir.to_path_buf(), wasm }).expect("runs");
    assert_eq!(timings.len(), 1);
    let t = &timings[0];
    assert_eq!((t.data.as_str(), t.rows, t.auc), ("grid", 401, 1.0));
    assert!(t.native_ms > 0.0 && t.wasm_ms.is_finite() && t.wasm_ms > 0.0, "{t:?}");
}
