//! `iotstream iforest` on tabular CSVs: labelled (AUC reported) and unlabelled, and a bad cell.

use iotstream::iforest::{IforestConfig, iforest};

fn config(input: &std::path::Path, out: &std::path::Path) -> IforestConfig {
    IforestConfig { input: input.to_owned(), label_column: "label".into(), seed: 3, trees: 100, max_samples: 256, out: out.to_owned() }
}

#[test]
fn scores_every_row_reports_auc_and_refuses_bad_cells() {
    let dir = std::env::temp_dir().join(format!("iotstream-iforest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
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
