//! Parity with scikit-learn: on six labelled ODDS data sets (`tests/data/odds`, with scikit-learn
//! 1.9.1's ROC AUC in `reference.json`), our forest, fitted on all rows and scoring all rows with
//! scikit-learn's defaults, must come within the stated tolerance of scikit-learn's mean AUC over
//! random states 0-4 (ours: the mean over seeds 0-4).

use std::path::PathBuf;

use isolation_forest::forest::ForestParams;
use isolation_forest::metrics::roc_auc;
use linfa::prelude::{Dataset, Fit, Predict};
use ndarray::Array2;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/odds")
}

/// Rows of features and their labels from a `f0,...,label` CSV.
fn read(file: &str) -> (Vec<Vec<f64>>, Vec<bool>) {
    let text = std::fs::read_to_string(data_dir().join(file)).expect("data set");
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut fields: Vec<f64> = line.split(',').map(|f| f.trim().parse().expect("number")).collect();
        let label = fields.pop().expect("label column");
        labels.push(label == 1.0);
        rows.push(fields);
    }
    (rows, labels)
}

#[test]
fn auc_is_within_tolerance_of_scikit_learn_on_every_data_set() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir().join("reference.json")).expect("reference"))
            .expect("json");
    let datasets = reference["datasets"].as_object().expect("datasets");
    assert_eq!(datasets.len(), 6);
    let mut report = Vec::new();
    for (name, expected) in datasets {
        let (rows, labels) = read(expected["file"].as_str().expect("file"));
        let width = rows[0].len();
        let records =
            Array2::from_shape_vec((rows.len(), width), rows.iter().flatten().copied().collect()).expect("rectangular");
        assert_eq!(rows.len() as u64, expected["rows"].as_u64().expect("rows"), "{name}");
        assert_eq!(labels.iter().filter(|l| **l).count() as u64, expected["anomalies"].as_u64().expect("anomalies"));
        let aucs: Vec<f64> = (0..5)
            .map(|seed| {
                // Through linfa: Fit on a Dataset, Predict one score per record.
                let params = ForestParams { n_estimators: 100, max_samples: 256, seed };
                let forest = params.fit(&Dataset::from(records.clone())).expect("fits");
                let scores = forest.predict(&records).to_vec();
                roc_auc(&scores, &labels).expect("both classes")
            })
            .collect();
        let ours = aucs.iter().sum::<f64>() / 5.0;
        let theirs = expected["sklearn_auc_mean"].as_f64().expect("mean");
        let tolerance = expected["tolerance"].as_f64().expect("tolerance");
        report.push(format!("{name:<12} ours {ours:.4}  scikit-learn {theirs:.4}  tolerance {tolerance}"));
        assert!(
            (ours - theirs).abs() <= tolerance,
            "{name}: ours {ours:.4} vs scikit-learn {theirs:.4} (tolerance {tolerance}); {aucs:?}"
        );
    }
    println!("{}", report.join("\n"));
}
