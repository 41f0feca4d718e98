//! A labelled corpus in NAB's layout: `data/CATEGORY/NAME.csv` (`timestamp,value`),
//! `labels/combined_windows.json` (series path → `[[start, end], ...]`) and `profiles.json`
//! (profile → `CostMatrix`). Loading checks everything up front, so a scoring run never stops
//! half-way on a bad file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::nab::Costs;
use crate::commands::replay::{ReplayError, Row, parse_timestamp, read_series};

/// Why a corpus could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A JSON file is not what NAB writes.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// A series could not be read.
    #[error(transparent)]
    Series(#[from] ReplayError),
    /// A window is not a pair of timestamps within its series.
    #[error("{series}: window {start:?} - {end:?} is not a pair of timestamps over its rows")]
    BadWindow {
        /// The series.
        series: String,
        /// The window's start as written.
        start: String,
        /// Its end.
        end: String,
    },
}

/// One labelled series.
pub struct Series {
    /// Its path under `data/`, e.g. `realKnownCause/nyc_taxi.csv`.
    pub name: String,
    /// Its category: the folder.
    pub category: String,
    /// Its rows, in time order.
    pub rows: Vec<Row>,
    /// Its label windows, first and last row (inclusive).
    pub windows: Vec<(usize, usize)>,
}

/// A loaded corpus.
pub struct Corpus {
    /// Every series, by name.
    pub series: Vec<Series>,
    /// The scoring profiles, by name.
    pub profiles: BTreeMap<String, Costs>,
}

#[derive(serde::Deserialize)]
struct Profile {
    #[serde(rename = "CostMatrix")]
    costs: Costs,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CorpusError> {
    let text = std::fs::read_to_string(path).map_err(|source| CorpusError::Read { path: path.to_owned(), source })?;
    serde_json::from_str(&text).map_err(|source| CorpusError::Json { path: path.to_owned(), source })
}

/// Loads the corpus at `root`.
pub fn load(root: &Path) -> Result<Corpus, CorpusError> {
    let profiles: BTreeMap<String, Profile> = read_json(&root.join("profiles.json"))?;
    let labels: BTreeMap<String, Vec<(String, String)>> = read_json(&root.join("labels/combined_windows.json"))?;
    let mut series = Vec::with_capacity(labels.len());
    for (name, windows) in labels {
        let mut rows = read_series(&root.join("data").join(&name))?;
        rows.sort_by_key(|r| r.timestamp);
        let windows = windows
            .into_iter()
            .map(|(start, end)| {
                window_rows(&rows, &start, &end).ok_or(CorpusError::BadWindow { series: name.clone(), start, end })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let category = name.split_once('/').map_or(name.as_str(), |(folder, _)| folder).to_owned();
        series.push(Series { name, category, rows, windows });
    }
    Ok(Corpus { series, profiles: profiles.into_iter().map(|(name, p)| (name, p.costs)).collect() })
}

/// The first row at or after `start` and the last at or before `end`.
fn window_rows(rows: &[Row], start: &str, end: &str) -> Option<(usize, usize)> {
    let (start, end) = (parse_timestamp(start)?, parse_timestamp(end)?);
    let first = rows.partition_point(|r| r.timestamp < start);
    let last = rows.partition_point(|r| r.timestamp <= end).checked_sub(1)?;
    (first <= last).then_some((first, last))
}
