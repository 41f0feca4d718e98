//! `iotstream iforest`: the plugin's Isolation Forest on any tabular CSV: fit on all rows, write one
//! score per row, and the ROC AUC when the CSV has labels. How users (and checks) compare it with
//! scikit-learn's `IsolationForest` on their own data.

use std::path::PathBuf;

use isolation_forest::forest::ForestParams;
use isolation_forest::metrics::roc_auc;

/// `iotstream iforest`.
#[derive(Debug, Clone, clap::Args)]
pub struct IforestConfig {
    /// A CSV with a header row: numeric feature columns, and optionally a label column.
    #[arg(long)]
    pub input: PathBuf,
    /// The label column (1 = anomaly); when present it is not a feature and the AUC is reported.
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// Seed of the forest.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of trees.
    #[arg(long, default_value_t = 100)]
    pub trees: usize,
    /// Rows per tree (capped at the number of rows).
    #[arg(long, default_value_t = 256)]
    pub max_samples: usize,
    /// Where to write one `score` per row (and its `label`, when labelled).
    #[arg(long)]
    pub out: PathBuf,
}

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
pub enum IforestError {
    /// The CSV could not be read or written.
    #[error("{path}: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// Why.
        source: csv::Error,
    },
    /// A cell is not a number.
    #[error("{path}, row {row}, column {column}: {value:?} is not a finite number")]
    NotANumber {
        /// The file.
        path: PathBuf,
        /// 1-based data row.
        row: usize,
        /// Column name.
        column: String,
        /// The cell.
        value: String,
    },
    /// The forest refused the data.
    #[error("cannot fit: {0}")]
    Fit(String),
}

/// What the command computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IforestSummary {
    /// Rows scored.
    pub rows: usize,
    /// Feature columns used.
    pub features: usize,
    /// ROC AUC against the labels, when labelled.
    pub auc: Option<f64>,
    /// Milliseconds to fit the forest and score every row (reading and writing CSV excluded).
    pub fit_score_ms: f64,
}

fn csv_error(path: &std::path::Path) -> impl Fn(csv::Error) -> IforestError + '_ {
    move |source| IforestError::Csv { path: path.to_owned(), source }
}

/// Fits, scores and writes.
pub fn iforest(config: &IforestConfig) -> Result<IforestSummary, IforestError> {
    let input = &config.input;
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_path(input).map_err(csv_error(input))?;
    let headers = reader.headers().map_err(csv_error(input))?.clone();
    let label_index = headers.iter().position(|h| h == config.label_column);
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let record = record.map_err(csv_error(input))?;
        let mut features = Vec::with_capacity(record.len());
        for (column, cell) in record.iter().enumerate() {
            let value: f64 =
                cell.parse().ok().filter(|v: &f64| v.is_finite()).ok_or_else(|| IforestError::NotANumber {
                    path: input.clone(),
                    row: index + 1,
                    column: headers.get(column).unwrap_or_default().to_owned(),
                    value: cell.to_owned(),
                })?;
            if Some(column) == label_index {
                labels.push(value == 1.0);
            } else {
                features.push(value);
            }
        }
        rows.push(features);
    }
    let started = std::time::Instant::now();
    let params = ForestParams { n_estimators: config.trees, max_samples: config.max_samples, seed: config.seed };
    let fitting = super::progress::counter("rows").with_message(format!("fitting {} trees on", config.trees));
    fitting.set_position(rows.len() as u64);
    let forest = params.fit_rows(&rows).map_err(|err| IforestError::Fit(err.to_string()))?;
    fitting.finish_and_clear();
    let scoring = super::progress::bar(rows.len() as u64, "rows").with_message("scoring");
    let scores: Vec<f64> = rows.iter().map(|r| forest.score(r)).inspect(|_| scoring.inc(1)).collect();
    scoring.finish_and_clear();
    let fit_score_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut writer = csv::Writer::from_path(&config.out).map_err(csv_error(&config.out))?;
    let labelled = label_index.is_some();
    let header: &[&str] = if labelled { &["score", "label"] } else { &["score"] };
    writer.write_record(header).map_err(csv_error(&config.out))?;
    for (i, score) in scores.iter().enumerate() {
        let mut record = vec![format!("{score:.6}")];
        if labelled {
            record.push(u8::from(labels[i]).to_string());
        }
        writer.write_record(&record).map_err(csv_error(&config.out))?;
    }
    writer.flush().map_err(|err| csv_error(&config.out)(err.into()))?;
    let auc = if labelled { roc_auc(&scores, &labels) } else { None };
    Ok(IforestSummary { rows: rows.len(), features: forest.n_features(), auc, fit_score_ms })
}

/// Prints `summary` on stdout (the scores went to the output file).
pub fn print(summary: &IforestSummary) -> anyhow::Result<()> {
    let auc = summary.auc.map(|auc| format!(" auc={auc:.5}")).unwrap_or_default();
    println!("rows={} features={} fit_score_ms={:.2}{auc}", summary.rows, summary.features, summary.fit_score_ms);
    Ok(())
}
