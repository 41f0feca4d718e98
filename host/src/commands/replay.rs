//! `iotstream replay`: runs one detector plugin over a recorded series, deterministically, in event
//! time order: the way a plugin author tests a detector on recorded data, and the way it is scored
//! on labelled benchmarks.
//!
//! Input: a CSV of `timestamp,value` (a header row is allowed; timestamps as ISO 8601, `YYYY-MM-DD
//! HH:MM:SS` in UTC, or epoch milliseconds). Rows are sorted by timestamp (stable, so equal times
//! keep file order) and fed as one sensor's readings, in batches. Output: `timestamp,value,score,
//! is_anomaly`, one row per input row, timestamps as written in the input. Scores are normalised to
//! [0, 1]: a detector whose scores on the series all lie in [0, 1] (an Isolation Forest) is written
//! as is; otherwise every score `s` is written as `s / (1 + s)` (monotonic, so thresholds carry over:
//! |z| = 3 is 0.75).

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

use crate::config::PluginFolderArgs;
use crate::plugins::bindings::{Detection, Reading as WitReading, Verdict};
use crate::plugins::{Plugin, PluginError, PluginFolders, PluginRuntime, SensorCatalog, StageKind};
use crate::reading::{Reading, SensorType};

/// Readings per detector call: large enough that the boundary costs nothing.
const BATCH: usize = 4096;

/// `iotstream replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayConfig {
    /// The `timestamp,value` CSV to replay.
    #[arg(long)]
    pub input: PathBuf,
    /// The detector plugin: a name (in the drop-in folder, else among the built-ins), or a path to
    /// a `.wasm`.
    #[arg(long)]
    pub plugin: String,
    /// Where to write `timestamp,value,score,is_anomaly`.
    #[arg(long)]
    pub out: PathBuf,
    /// Where a plugin named without a path is found: the drop-in folder, then the built-ins.
    #[command(flatten)]
    pub plugin_folders: PluginFolderArgs,
    /// The plugin's configuration as JSON (default: `NAME.json` beside it, or `{}`).
    #[arg(long)]
    pub config: Option<String>,
    /// The sensor type the series is fed as (a per-type detector keeps one model per type).
    #[arg(long, default_value = "temperature", value_parser = parse_sensor_type)]
    pub sensor_type: SensorType,
}

fn parse_sensor_type(text: &str) -> Result<SensorType, String> {
    SensorType::from_name(text).ok_or_else(|| format!("unknown sensor type {text:?}"))
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The CSV could not be read or written.
    #[error("{path}: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// Why.
        source: csv::Error,
    },
    /// A row is not `timestamp,value`.
    #[error("{path}, row {row}: {message}")]
    BadRow {
        /// The file.
        path: PathBuf,
        /// 1-based row number.
        row: usize,
        /// What is wrong.
        message: String,
    },
    /// The plugin could not be loaded or failed.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The plugin is an aggregator.
    #[error("{0} is not a detector")]
    NotADetector(String),
    /// No plugins folder holds a plugin of that name.
    #[error("no plugin {plugin}.wasm in {folders}")]
    NoSuchPlugin {
        /// The name.
        plugin: String,
        /// The folders looked in.
        folders: String,
    },
}

/// What a replay produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplaySummary {
    /// Rows replayed.
    pub rows: usize,
    /// Rows judged anomalous.
    pub anomalies: usize,
    /// Whether scores were mapped through `s / (1 + s)`.
    pub rescaled: bool,
}

/// One input row.
pub struct Row {
    /// The timestamp as written.
    pub raw_timestamp: String,
    /// The timestamp, parsed.
    pub timestamp: DateTime<Utc>,
    /// The value.
    pub value: f64,
}

/// Replays the series through the plugin and writes the scores.
pub fn replay(config: &ReplayConfig) -> Result<ReplaySummary, ReplayError> {
    let mut rows = read_series(&config.input)?;
    rows.sort_by_key(|r| r.timestamp);
    // The runtime outlives the plugin's calls: its epoch thread is the CPU deadline's clock.
    let runtime = PluginRuntime::new()?;
    let mut plugin = open_detector(&runtime, &config.plugin_folders.folders(), &config.plugin, config.config.clone())?;
    let progress = super::progress::bar(rows.len() as u64, "rows").with_message("replaying");
    let detections = detect_series(&mut plugin, config.sensor_type, &rows, &progress)?;
    progress.finish_and_clear();
    let rescaled = detections.iter().any(|d| d.score > 1.0 || d.score < 0.0);
    let mut writer =
        csv::Writer::from_path(&config.out).map_err(|source| ReplayError::Csv { path: config.out.clone(), source })?;
    let csv_error = |source| ReplayError::Csv { path: config.out.clone(), source };
    writer.write_record(["timestamp", "value", "score", "is_anomaly"]).map_err(csv_error)?;
    let mut anomalies = 0;
    for (row, detection) in rows.iter().zip(&detections) {
        let score = if rescaled { normalise(detection.score) } else { detection.score };
        let anomaly = detection.verdict == Verdict::Anomaly;
        anomalies += usize::from(anomaly);
        writer
            .write_record([
                row.raw_timestamp.clone(),
                row.value.to_string(),
                format!("{score:.6}"),
                u8::from(anomaly).to_string(),
            ])
            .map_err(csv_error)?;
    }
    writer.flush().map_err(|err| csv_error(err.into()))?;
    Ok(ReplaySummary { rows: rows.len(), anomalies, rescaled })
}

/// Loads a detector plugin: `plugin` is a path to a `.wasm`, or a name, found in the drop-in folder
/// or else among the built-ins (as `iotstream run` would load it). Keep `runtime` alive while the
/// plugin runs: its epoch thread enforces the CPU deadline.
pub(crate) fn open_detector(
    runtime: &PluginRuntime,
    folders: &PluginFolders,
    plugin: &str,
    config: Option<String>,
) -> Result<Plugin, ReplayError> {
    let path = if plugin.ends_with(".wasm") {
        PathBuf::from(plugin)
    } else {
        folders.locate(plugin).map(|file| file.path).ok_or_else(|| {
            // In the order they are looked in: the drop-ins first.
            let mut looked: Vec<String> =
                folders.layers().map(|(layer, dir)| format!("{} ({layer})", dir.display())).collect();
            looked.reverse();
            ReplayError::NoSuchPlugin { plugin: plugin.to_owned(), folders: looked.join(", ") }
        })?
    };
    let plugin = runtime.load_with_config(&path, config)?;
    if plugin.kind() != StageKind::Detector {
        return Err(ReplayError::NotADetector(plugin.name().to_owned()));
    }
    Ok(plugin)
}

/// Feeds `rows` (in order) to the detector as one sensor of `sensor_type`, in batches; one
/// detection per row. `progress` counts the rows done.
pub(crate) fn detect_series(
    plugin: &mut Plugin,
    sensor_type: SensorType,
    rows: &[Row],
    progress: &indicatif::ProgressBar,
) -> Result<Vec<Detection>, ReplayError> {
    let mut catalog = SensorCatalog::default();
    let template = Reading {
        sensor_id: "replay".into(),
        sensor_type,
        location: "replay".into(),
        value: 0.0,
        timestamp: DateTime::<Utc>::UNIX_EPOCH,
        anomaly: false,
        unit: sensor_type.default_unit().into(),
    };
    let key = catalog.key_for(&template);
    let mut detections = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(BATCH) {
        let batch: Vec<WitReading> = chunk
            .iter()
            .map(|r| WitReading {
                sensor: key,
                timestamp_ms: r.timestamp.timestamp_millis(),
                value: r.value,
                flagged: false,
            })
            .collect();
        detections.extend(plugin.detect(&catalog, &batch)?);
        progress.inc(chunk.len() as u64);
    }
    Ok(detections)
}

/// Maps a non-negative unbounded score onto [0, 1), monotonically.
fn normalise(score: f64) -> f64 {
    let s = score.max(0.0);
    s / (1.0 + s)
}

pub(crate) fn read_series(path: &Path) -> Result<Vec<Row>, ReplayError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|source| ReplayError::Csv { path: path.to_owned(), source })?;
    let mut rows = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let record = record.map_err(|source| ReplayError::Csv { path: path.to_owned(), source })?;
        let bad = |message: String| ReplayError::BadRow { path: path.to_owned(), row: index + 1, message };
        let (Some(raw_timestamp), Some(raw_value)) = (record.get(0), record.get(1)) else {
            return Err(bad("expected two columns, timestamp and value".into()));
        };
        let Some(timestamp) = parse_timestamp(raw_timestamp) else {
            if index == 0 {
                continue; // a header row
            }
            return Err(bad(format!("{raw_timestamp:?} is not a timestamp")));
        };
        let value: f64 = raw_value.parse().map_err(|_| bad(format!("{raw_value:?} is not a number")))?;
        if !value.is_finite() {
            return Err(bad(format!("{raw_value:?} is not a finite number")));
        }
        rows.push(Row { raw_timestamp: raw_timestamp.to_owned(), timestamp, value });
    }
    Ok(rows)
}

pub(crate) fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").ok().map(|n| Utc.from_utc_datetime(&n)))
        .or_else(|| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|n| Utc.from_utc_datetime(&n)))
        .or_else(|| text.parse::<i64>().ok().and_then(|ms| Utc.timestamp_millis_opt(ms).single()))
}

/// Prints `summary` on stderr (the scores went to stdout or the output file).
pub fn print(summary: &ReplaySummary) -> anyhow::Result<()> {
    eprintln!(
        "replayed {} rows: {} anomalies{}",
        summary.rows,
        summary.anomalies,
        if summary.rescaled { " (scores mapped through s / (1 + s))" } else { "" }
    );
    Ok(())
}
