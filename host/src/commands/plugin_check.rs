//! `iotstream plugin check FILE.wasm`: what a plugin author runs before dropping a plugin in. It
//! loads the component the way the host does (the WIT world and version, the configuration), runs
//! it on simulated readings, checks its output against the contract, and hands its state to a
//! fresh instance, which must accept it.

use std::path::PathBuf;

use chrono::{Duration, TimeZone, Utc};
use serde::Serialize;

use crate::plugins::bindings::{Reading as WitReading, Verdict};
use crate::plugins::{PluginError, PluginRuntime, SensorCatalog, StageKind};
use crate::reading::Reading;
use crate::simulate::Fleet;

/// `iotstream plugin check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckConfig {
    /// The component to check.
    pub file: PathBuf,
    /// Its configuration as JSON (default: the manifest `NAME.toml` beside it, which it is also
    /// checked against, else `NAME.json`, else `{}`).
    #[arg(long)]
    pub config: Option<String>,
    /// Simulated readings to run it on.
    #[arg(long, default_value_t = 5000)]
    pub readings: usize,
    /// Warn when a detector flags more than this share of the simulated readings. Default 0.05:
    /// the simulated fleet starts an episode at 1% of readings, so a detector that alarms once per
    /// episode flags about 1%, and one that flags every labelled reading about a fifth; past 5% an
    /// operator sees more alarms than events (the seed's forest flagged 25% here).
    #[arg(long, default_value_t = 0.05)]
    pub max_flagged_share: f64,
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    /// `detector` or `aggregator`.
    pub kind: String,
    /// The name the plugin reports.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its state version.
    pub state_version: u32,
    /// The version of the WIT contract it was built against.
    pub contract: String,
    /// Readings it processed.
    pub readings: usize,
    /// Detections that were anomalies (detectors).
    pub anomalies: usize,
    /// Detections still warming up (detectors).
    pub warming_up: usize,
    /// Windows emitted (aggregators).
    pub windows: usize,
    /// Bytes of exported state (accepted by a fresh instance).
    pub state_bytes: usize,
    /// Why the plugin passes the contract but an operator would not want it as it is.
    pub warnings: Vec<String>,
}

/// Runs the check; any breach of the contract is an error naming it.
pub fn check(config: &CheckConfig) -> Result<CheckReport, PluginError> {
    let runtime = PluginRuntime::new()?;
    let mut plugin = runtime.load_with_config(&config.file, config.config.clone())?;
    let start = Utc.timestamp_millis_opt(1_767_225_600_000).single().unwrap_or_default();
    let mut fleet = Fleet::new(10, 0.01, 1);
    // A reading every second, so windows close and models train as they would live.
    let readings: Vec<Reading> =
        (0..config.readings).map(|i| fleet.next_reading(start + Duration::seconds(i as i64))).collect();
    let mut catalog = SensorCatalog::default();
    let wit: Vec<WitReading> = readings.iter().map(|r| catalog.wit_reading(r)).collect();
    let mut report = CheckReport {
        kind: String::new(),
        name: plugin.info().name.clone(),
        version: plugin.info().version.clone(),
        state_version: plugin.info().state_version,
        contract: plugin.contract().number().to_owned(),
        readings: readings.len(),
        anomalies: 0,
        warming_up: 0,
        windows: 0,
        state_bytes: 0,
        warnings: Vec::new(),
    };
    for batch in wit.chunks(1000) {
        match plugin.kind() {
            StageKind::Detector => {
                // Plugin::detect already refuses wrong lengths and non-finite scores.
                for detection in plugin.detect(&catalog, batch)? {
                    report.anomalies += usize::from(detection.verdict == Verdict::Anomaly);
                    report.warming_up += usize::from(detection.verdict == Verdict::WarmingUp);
                }
            }
            StageKind::Aggregator => report.windows += plugin.aggregate(&catalog, batch)?.len(),
        }
    }
    report.kind = match plugin.kind() {
        StageKind::Detector => "detector".into(),
        StageKind::Aggregator => "aggregator".into(),
    };
    let share = report.anomalies as f64 / report.readings.max(1) as f64;
    if plugin.kind() == StageKind::Detector && share > config.max_flagged_share {
        report.warnings.push(format!(
            "flagged {:.1}% of the simulated readings, more than --max-flagged-share {:.1}%: an operator would see more alarms than events",
            100.0 * share,
            100.0 * config.max_flagged_share
        ));
    }
    let state = plugin.export_state(&catalog)?;
    report.state_bytes = state.len();
    let mut fresh = plugin.new_instance(None)?;
    fresh.import_state(&SensorCatalog::default(), &state)?;
    Ok(report)
}

/// Prints `report`: JSON on stdout, a summary on stderr.
pub fn print(report: &CheckReport) -> anyhow::Result<()> {
    super::print_json(report)?;
    eprintln!(
        "ok: {} {} {} (contract {}) handled {} readings ({} anomalies, {} warming up, {} windows); its {}-byte state loads into a fresh instance",
        report.kind,
        report.name,
        report.version,
        report.contract,
        report.readings,
        report.anomalies,
        report.warming_up,
        report.windows,
        report.state_bytes
    );
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(())
}
