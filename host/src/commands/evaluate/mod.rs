//! `iotstream evaluate`: how well detector plugins find what is labelled, on a corpus in NAB's
//! layout (NAB's standard, low-FP and low-FN scores, per category, and event-level precision and
//! recall of the detector's own verdicts) and on the simulator's labelled stream.
//!
//! Each series runs through a fresh instance of the `.wasm`, as `iotstream replay` runs it (one
//! sensor, in time order, in batches), so what is measured is what the pipeline would run.
//!
//! # Layout
//! * [`nab`]: NAB's scoring method; [`corpus`]: loading a corpus in NAB's layout;
//!   [`simulated`]: the simulator's stream and its event-level report.

pub mod corpus;
pub mod nab;
pub mod simulated;

use std::path::PathBuf;

use self::nab::{Events, Scored};
use self::simulated::{SimulatedReport, SimulatedStream};
use crate::commands::replay::{ReplayError, detect_series, open_detector};
use crate::config::PluginFolderArgs;
use crate::plugins::bindings::Verdict;
use crate::plugins::{PluginError, PluginRuntime};
use crate::reading::SensorType;

/// `iotstream evaluate`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvaluateConfig {
    /// A detector to evaluate: a plugin name (or `.wasm` path), optionally `=JSON` configuration,
    /// e.g. `zscore={"preset":"seed"}`. Repeat for several.
    #[arg(long = "plugin", required = true)]
    pub plugins: Vec<String>,
    /// A labelled corpus in NAB's layout (`data/`, `labels/combined_windows.json`, `profiles.json`).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Also evaluate on the simulator's labelled stream.
    #[arg(long)]
    pub simulated: bool,
    /// The simulated stream.
    #[command(flatten)]
    pub stream: SimulatedStream,
    /// Where a plugin named without a path is found: the drop-in folder, then the built-ins.
    #[command(flatten)]
    pub plugin_folders: PluginFolderArgs,
    /// The sensor type corpus series are fed as.
    #[arg(long, default_value = "temperature", value_parser = parse_sensor_type)]
    pub sensor_type: SensorType,
}

fn parse_sensor_type(text: &str) -> Result<SensorType, String> {
    SensorType::from_name(text).ok_or_else(|| format!("unknown sensor type {text:?}"))
}

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    /// Neither a corpus nor the simulated stream was asked for.
    #[error("nothing to evaluate on: give --corpus DIR, --simulated, or both")]
    NothingToEvaluate,
    /// The corpus could not be loaded.
    #[error(transparent)]
    Corpus(#[from] corpus::CorpusError),
    /// A plugin could not be loaded or failed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// A plugin failed on the simulated stream.
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// One detector's NAB score under one profile, over the corpus or one category.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NabReport {
    /// The detector as given.
    pub detector: String,
    /// The profile.
    pub profile: String,
    /// A category, or `all`.
    pub category: String,
    /// The score: the corpus's best threshold (a category is scored at its corpus's threshold).
    pub score: nab::NabScore,
    /// The detector's own verdicts against the windows.
    pub events: Events,
    /// Event-level precision of its verdicts.
    pub precision: f64,
    /// Event-level recall of its verdicts.
    pub recall: f64,
}

/// Everything an evaluation measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Evaluation {
    /// Per detector, profile and category.
    pub nab: Vec<NabReport>,
    /// Per detector and sensor type.
    pub simulated: Vec<SimulatedReport>,
}

/// Runs the evaluation.
pub fn evaluate(config: &EvaluateConfig) -> Result<Evaluation, EvaluateError> {
    if config.corpus.is_none() && !config.simulated {
        return Err(EvaluateError::NothingToEvaluate);
    }
    let corpus = config.corpus.as_deref().map(corpus::load).transpose()?;
    let stream = config.simulated.then(|| simulated::stream(&config.stream));
    // One runtime for every plugin, alive while they run: its epoch thread enforces the deadline.
    let runtime = PluginRuntime::new().map_err(ReplayError::from)?;
    let mut evaluation = Evaluation::default();
    for spec in &config.plugins {
        let (name, plugin_config) = match spec.split_once('=') {
            Some((name, json)) => (name, Some(json.to_owned())),
            None => (spec.as_str(), None),
        };
        let plugin = open_detector(&runtime, &config.plugin_folders.folders(), name, plugin_config.clone())?;
        if let Some(corpus) = &corpus {
            let mut scored = Vec::with_capacity(corpus.series.len());
            for series in &corpus.series {
                let mut instance = plugin.new_instance(plugin_config.clone())?;
                let detections =
                    detect_series(&mut instance, config.sensor_type, &series.rows, &indicatif::ProgressBar::hidden())?;
                let scores = detections
                    .iter()
                    .map(|d| if d.verdict == Verdict::WarmingUp { f64::NEG_INFINITY } else { d.score })
                    .collect();
                let flags = detections.iter().map(|d| d.verdict == Verdict::Anomaly).collect();
                scored.push(Scored { scores, flags, windows: series.windows.clone() });
            }
            evaluation.nab.extend(score_corpus(spec, corpus, &scored));
        }
        if let Some(stream) = &stream {
            let detections =
                simulated::detect_by_partition(&plugin, plugin_config.clone(), stream, config.stream.partitions)?;
            evaluation.simulated.extend(simulated::report(spec, stream, &detections));
        }
    }
    Ok(evaluation)
}

/// The reports of one detector's scores over `corpus`: per profile, the whole corpus, then each
/// category at the corpus's threshold.
fn score_corpus(detector: &str, corpus: &corpus::Corpus, scored: &[Scored]) -> Vec<NabReport> {
    let mut categories: Vec<&str> = corpus.series.iter().map(|s| s.category.as_str()).collect();
    categories.dedup();
    let mut reports = Vec::new();
    for (profile, costs) in &corpus.profiles {
        let all: Vec<&Scored> = scored.iter().collect();
        let best = nab::score_corpus(&all, *costs);
        let mut report = |category: &str, score, members: &[&Scored]| {
            let mut events = Events::default();
            for s in members {
                events.add(Events::count(&s.flags, &s.windows, nab::probation(s.scores.len())));
            }
            reports.push(NabReport {
                detector: detector.to_owned(),
                profile: profile.clone(),
                category: category.to_owned(),
                score,
                precision: events.precision(),
                recall: events.recall(),
                events,
            });
        };
        report("all", best, &all);
        for category in &categories {
            let members: Vec<&Scored> =
                corpus.series.iter().zip(scored).filter(|(s, _)| s.category == *category).map(|(_, sc)| sc).collect();
            report(category, nab::score_at(&members, *costs, best.threshold), &members);
        }
    }
    reports
}

/// Prints the reports as JSON lines on stdout and a table on stderr.
pub fn print(evaluation: &Evaluation) -> anyhow::Result<()> {
    for report in &evaluation.nab {
        crate::commands::print_json(report)?;
    }
    for report in &evaluation.simulated {
        crate::commands::print_json(report)?;
    }
    if !evaluation.nab.is_empty() {
        eprintln!(
            "{:<34} {:<20} {:<22} {:>6} {:>9} {:>9} {:>6}",
            "detector", "profile", "category", "score", "threshold", "precision", "recall"
        );
        for r in &evaluation.nab {
            eprintln!(
                "{:<34} {:<20} {:<22} {:>6.1} {:>9.3} {:>9.2} {:>6.2}",
                r.detector, r.profile, r.category, r.score.normalised, r.score.threshold, r.precision, r.recall
            );
        }
    }
    if !evaluation.simulated.is_empty() {
        eprintln!(
            "{:<34} {:<12} {:>8} {:>9} {:>8} {:>9} {:>6} {:>5}",
            "detector", "type", "readings", "labelled", "flagged", "precision", "recall", "F1"
        );
        for r in &evaluation.simulated {
            eprintln!(
                "{:<34} {:<12} {:>8} {:>8.2}% {:>7.2}% {:>9.2} {:>6.2} {:>5.2}",
                r.detector,
                r.sensor_type,
                r.readings,
                100.0 * r.labelled as f64 / r.readings.max(1) as f64,
                100.0 * r.flagged as f64 / r.readings.max(1) as f64,
                r.precision,
                r.recall,
                r.f1
            );
        }
    }
    Ok(())
}
