//! The plugins of a running pipeline and the sensor keys they share: running a batch through
//! them (detectors, their shadows, then aggregators), ticks, checkpoints, and installing or
//! removing a plugin at a batch boundary (hot swap with state hand-off).

use chrono::{DateTime, TimeZone, Utc};
use iotstream_api::{AggregateRow, PluginStatus, Verdict};
use tracing::{debug, error, info, warn};

use crate::plugins::bindings::{ModelInfo, Reading as WitReading, Verdict as WitVerdict, WindowAggregate};
use crate::plugins::output::{display_detail, display_text};
use crate::plugins::{Plugin, PluginError, PluginState, SensorCatalog, StageKind};
use crate::reading::SensorType;
use crate::store::{
    BatchRows, Checkpoint, CheckpointReason, ModelLineage, Prediction, ShadowPrediction, StageState, StoredWindow,
};

/// The plugins and the sensor keys they share. Plugin calls are blocking CPU work, so the stages
/// move onto a blocking thread for each batch and come back with its results.
#[derive(Default)]
pub(super) struct Stages {
    pub(super) detectors: Vec<Plugin>,
    /// Detectors that judge the same readings as a live one, stored apart, flagging nothing.
    pub(super) shadows: Vec<Plugin>,
    pub(super) aggregators: Vec<Plugin>,
    pub(super) catalog: SensorCatalog,
    /// The Kafka partition whose readings these stages see (their lane's): their windows are
    /// partials of it.
    pub(super) partition: i32,
}

/// What installing a plugin did, for the log and the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Installed {
    /// A plugin of a new name.
    New,
    /// It replaced the running plugin of its name, whose state it continues.
    StateHandedOver {
        /// Bytes handed over.
        bytes: usize,
    },
    /// It replaced the running plugin of its name and starts fresh, and why.
    Fresh(String),
}

impl Stages {
    /// The stages of `plugins` (any kinds, any order; a detector whose manifest names a live
    /// detector is its shadow).
    pub(super) fn new(plugins: Vec<Plugin>) -> Self {
        let mut stages = Stages::default();
        for plugin in plugins {
            stages.slot_for(&plugin).push(plugin);
        }
        stages
    }

    /// Adds `plugin` to its kind's stages.
    pub(super) fn push(&mut self, plugin: Plugin) {
        self.slot_for(&plugin).push(plugin);
    }

    /// Every plugin: detectors, shadows, aggregators.
    pub(super) fn all(&self) -> impl Iterator<Item = &Plugin> {
        self.detectors.iter().chain(&self.shadows).chain(&self.aggregators)
    }

    fn slot_for(&mut self, plugin: &Plugin) -> &mut Vec<Plugin> {
        match (plugin.kind(), plugin.shadow_of()) {
            (StageKind::Detector, Some(_)) => &mut self.shadows,
            (StageKind::Detector, None) => &mut self.detectors,
            (StageKind::Aggregator, _) => &mut self.aggregators,
        }
    }

    /// Takes the plugin named `name` out, with its place.
    fn take(&mut self, name: &str) -> Option<(Plugin, usize)> {
        for list in [&mut self.detectors, &mut self.shadows, &mut self.aggregators] {
            if let Some(index) = list.iter().position(|p| p.name() == name) {
                return Some((list.remove(index), index));
            }
        }
        None
    }

    /// The running plugin named `name`.
    pub(super) fn get_mut(&mut self, name: &str) -> Option<&mut Plugin> {
        self.detectors.iter_mut().chain(&mut self.shadows).chain(&mut self.aggregators).find(|p| p.name() == name)
    }

    /// Whether a plugin named `name` runs.
    pub(super) fn contains(&self, name: &str) -> bool {
        self.detectors.iter().chain(&self.shadows).chain(&self.aggregators).any(|p| p.name() == name)
    }

    /// Removes the plugin named `name`; whether there was one.
    pub(super) fn remove(&mut self, name: &str) -> bool {
        self.take(name).is_some()
    }

    /// Installs `plugin` (at a batch boundary). A plugin of the same name is replaced: the old
    /// instance exports its state and the new one imports it when both declare the same kind and
    /// state format; otherwise the new one starts fresh.
    pub(super) fn install(&mut self, mut plugin: Plugin) -> Installed {
        let Some((mut old, index)) = self.take(plugin.name()) else {
            self.slot_for(&plugin).push(plugin);
            return Installed::New;
        };
        let outcome = if old.kind() != plugin.kind() {
            Installed::Fresh(format!("it was a {:?} and is now a {:?}", old.kind(), plugin.kind()))
        } else if old.info().state_version != plugin.info().state_version {
            Installed::Fresh(format!(
                "its state format changed from version {} to {}",
                old.info().state_version,
                plugin.info().state_version
            ))
        } else {
            match old.state_to_carry(&self.catalog) {
                Ok(state) => match plugin.import_shared(&self.catalog, state.clone()) {
                    Ok(()) => Installed::StateHandedOver { bytes: state.len() },
                    Err(err) => Installed::Fresh(format!("it refused the old state: {err}")),
                },
                Err(err) => Installed::Fresh(format!("the old instance had no state to hand over ({err})")),
            }
        };
        let slot = self.slot_for(&plugin);
        let index = index.min(slot.len());
        slot.insert(index, plugin);
        outcome
    }

    /// Runs every detector, then every aggregator, over the batch, filling `rows`.
    pub(super) fn run(&mut self, wit: &mut [WitReading], rows: &mut BatchRows) {
        for detector in &mut self.detectors {
            match detector.detect(&self.catalog, wit) {
                Ok(detections) => {
                    for (index, detection) in detections.iter().enumerate() {
                        let flagged = detection.verdict == WitVerdict::Anomaly;
                        rows.readings[index].flagged |= flagged;
                        rows.predictions.push(Prediction {
                            detector: detector.name().into(),
                            reading: index,
                            verdict: verdict(detection.verdict),
                            score: detection.score,
                            detector_version: detector.info().version.as_str().into(),
                            model: detection.model.map(model_lineage),
                        });
                    }
                }
                Err(err) => report_failure(detector, &err, "its verdicts for this batch are lost"),
            }
        }
        for shadow in &mut self.shadows {
            let live = shadow.shadow_of().unwrap_or_default().to_owned();
            match shadow.detect(&self.catalog, wit) {
                Ok(detections) => {
                    rows.shadow_predictions.extend(detections.iter().enumerate().map(|(index, d)| ShadowPrediction {
                        shadow: shadow.name().to_owned(),
                        live_detector: live.clone(),
                        shadow_version: shadow.info().version.clone(),
                        reading: index,
                        verdict: verdict(d.verdict),
                        score: d.score,
                    }))
                }
                Err(err) => report_failure(shadow, &err, "its shadow verdicts for this batch are lost"),
            }
        }
        for (reading, stored) in wit.iter_mut().zip(&rows.readings) {
            reading.flagged = stored.flagged;
        }
        for aggregator in &mut self.aggregators {
            match aggregator.aggregate(&self.catalog, wit) {
                Ok(aggregates) => rows
                    .aggregates
                    .extend(aggregates.into_iter().map(|a| window_row(aggregator.name(), self.partition, a))),
                Err(err) => report_failure(aggregator, &err, "the batch's readings are missing from its windows"),
            }
        }
    }

    /// Tells every aggregator the processing time; returns the windows closed for idleness.
    pub(super) fn tick(&mut self, now_ms: i64) -> Vec<StoredWindow> {
        let mut closed = Vec::new();
        for aggregator in &mut self.aggregators {
            match aggregator.tick(&self.catalog, now_ms) {
                Ok(aggregates) => {
                    closed.extend(aggregates.into_iter().map(|a| window_row(aggregator.name(), self.partition, a)))
                }
                Err(err) => report_failure(aggregator, &err, "its idle windows stay open"),
            }
        }
        closed
    }

    /// Restores the catalog and every stage whose state is in `checkpoint` with the state format it
    /// declares now; a stage with no state there, or another format, starts fresh.
    pub(super) fn restore(&mut self, checkpoint: &Checkpoint) {
        self.catalog = SensorCatalog::restore(&checkpoint.catalog);
        let catalog = &self.catalog;
        for plugin in self.detectors.iter_mut().chain(&mut self.shadows).chain(&mut self.aggregators) {
            let Some(saved) = checkpoint.states.iter().find(|s| s.stage == plugin.name()) else {
                info!(plugin = plugin.name(), "no checkpointed state: the stage starts fresh");
                continue;
            };
            if saved.state_version != plugin.info().state_version {
                warn!(
                    plugin = plugin.name(),
                    checkpointed = saved.state_version,
                    declared = plugin.info().state_version,
                    "the stage's state format changed since its checkpoint: it starts fresh"
                );
                continue;
            }
            match plugin.import_shared(catalog, saved.state.clone()) {
                Ok(()) => info!(plugin = plugin.name(), bytes = saved.state.len(), "stage state restored"),
                Err(err) => {
                    error!(plugin = plugin.name(), error = %err, "checkpointed state refused: the stage starts fresh")
                }
            }
        }
    }

    /// Every stage's exported state with the lane's `next_offset` and the catalog, following the
    /// lane's batch `after_batch`. A stage whose export fails is left out (it would restore fresh)
    /// and logged.
    pub(super) fn checkpoint(&mut self, reason: CheckpointReason, next_offset: i64, after_batch: i64) -> Checkpoint {
        if self.catalog.needs_compaction() {
            self.compact_catalog();
        }
        let catalog = &self.catalog;
        let mut states = Vec::new();
        for plugin in self.detectors.iter_mut().chain(&mut self.shadows).chain(&mut self.aggregators) {
            match plugin.checkpoint_state(catalog) {
                Ok(state) => states.push(StageState {
                    stage: plugin.name().to_owned(),
                    stage_version: plugin.info().version.clone(),
                    state_version: plugin.info().state_version,
                    state,
                }),
                Err(err) => {
                    warn!(plugin = plugin.name(), error = %err, "stage state not exported: left out of the checkpoint")
                }
            }
        }
        Checkpoint {
            reason,
            partition: self.partition,
            after_batch: Some(after_batch),
            next_offset,
            catalog: self.catalog.entries(),
            states,
        }
    }

    /// Replaces the catalog with its compaction and hands every plugin its state under the new
    /// keys (at a checkpoint, so the checkpoint records the compacted catalog).
    fn compact_catalog(&mut self) {
        let compacted = self.catalog.compacted();
        for plugin in self.detectors.iter_mut().chain(&mut self.shadows).chain(&mut self.aggregators) {
            if let Err(err) = plugin.renumber(&self.catalog, &compacted) {
                warn!(plugin = plugin.name(), error = %err, "state not handed to the compacted catalog now; the plugin restarts from it");
            }
        }
        info!(keys_before = self.catalog.len(), keys_after = compacted.len(), "sensor catalog compacted");
        self.catalog = compacted;
    }

    pub(super) fn statuses(&self) -> Vec<PluginStatus> {
        self.detectors.iter().chain(&self.shadows).chain(&self.aggregators).map(plugin_status).collect()
    }
}

/// The API's view of a plugin, its texts shown fit ([`display_text`]: the name and version were
/// checked at load, errors may quote the plugin).
pub fn plugin_status(plugin: &Plugin) -> PluginStatus {
    let m = plugin.metrics();
    PluginStatus {
        name: display_text(plugin.name()),
        kind: plugin.kind(),
        version: display_text(&plugin.info().version),
        contract: plugin.contract().number().to_owned(),
        layer: plugin.layer(),
        calls: m.calls,
        readings_in: m.readings_in,
        outputs: m.outputs,
        errors: m.errors,
        restarts: m.restarts,
        memory_replacements: m.memory_replacements,
        mean_call_micros: if m.calls == 0 { 0.0 } else { m.busy_micros as f64 / m.calls as f64 },
        last_error: m.last_error.as_deref().map(display_detail),
        state: m.state,
        consecutive_failures: m.consecutive_failures,
        skipped_readings: m.skipped_readings,
        memory_bytes: m.memory_bytes,
        state_bytes: m.state_bytes,
        p50_call_micros: m.call_times.quantile_micros(0.5),
        p99_call_micros: m.call_times.quantile_micros(0.99),
        busy_micros: m.busy_micros,
        call_micros_buckets: m.call_times.cumulative(),
    }
}

/// Logs a plugin call's failure once, not once per batch: a skipped call (backoff, quarantine) is
/// counted in the plugin's metrics only; the failure that quarantines a plugin is an ERROR (an
/// operator must act), others a WARN (the plugin restarts from its last good state by itself).
fn report_failure(plugin: &Plugin, err: &PluginError, consequence: &str) {
    if err.is_skip() {
        debug!(plugin = plugin.name(), error = %err, "plugin call skipped");
    } else if plugin.state() == PluginState::Quarantined {
        error!(plugin = plugin.name(), error = %err, "plugin quarantined after repeated failures: {consequence} until it is replaced");
    } else {
        warn!(plugin = plugin.name(), error = %err, "plugin call failed: {consequence}; it restarts from its last good state after a backoff");
    }
}

/// A verdict as it crossed the WIT boundary, as the host's rows carry it.
fn verdict(verdict: WitVerdict) -> Verdict {
    match verdict {
        WitVerdict::WarmingUp => Verdict::WarmingUp,
        WitVerdict::Normal => Verdict::Normal,
        WitVerdict::Anomaly => Verdict::Anomaly,
    }
}

/// A detector's model, as the store keeps it (counts past `i32::MAX` are clamped; a training time
/// outside chrono's range is unknown).
fn model_lineage(model: ModelInfo) -> ModelLineage {
    ModelLineage {
        generation: i32::try_from(model.generation).unwrap_or(i32::MAX),
        trained_at: Utc.timestamp_millis_opt(model.trained_at_ms).single(),
        training_rows: i32::try_from(model.training_rows).unwrap_or(i32::MAX),
    }
}

fn millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// An aggregator's window as the store keeps it: a partial of `partition`'s readings.
fn window_row(stage: &str, partition: i32, a: WindowAggregate) -> StoredWindow {
    let window = AggregateRow {
        stage: stage.to_owned(),
        window_start: millis(a.window_start_ms),
        window_end: millis(a.window_end_ms),
        location: a.location,
        sensor_type: SensorType::from(a.sensor_type),
        avg_value: a.avg,
        min_value: a.min,
        max_value: a.max,
        stddev_value: a.stddev,
        count_readings: i32::try_from(a.count).unwrap_or(i32::MAX),
        anomaly_count: i32::try_from(a.anomaly_count).unwrap_or(i32::MAX),
        revision: i32::try_from(a.revision).unwrap_or(i32::MAX),
        late_count: i32::try_from(a.late_count).unwrap_or(i32::MAX),
    };
    StoredWindow { partition, window }
}
