//! The processing loop: Kafka batch → decode → detector plugins → aggregator plugins → one
//! PostgreSQL transaction → offsets marked → live view.
//!
//! Invariants:
//! * A message's offset is marked processed only after everything it produced is committed to
//!   PostgreSQL; a crash replays, never skips.
//! * A message that does not decode goes to `dead_letters` with its reason, in the same transaction
//!   as the readings around it.
//! * A failing plugin costs only its own output for the batch: the raw readings, the other plugins
//!   and the stream go on.
//! * While PostgreSQL is unreachable the loop retries the same batch with backoff and consumes
//!   nothing more (librdkafka's prefetch queue is bounded), so memory stays bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, TimeZone, Utc};
use iotstream_api::{AggregateRow, PluginStatus, PredictionRow, ReadingRow};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::kafka::{KafkaError, RawMessage, Source};
use crate::live::{BatchSummary, EVENT_ROWS, Live};
use crate::plugins::bindings::{Reading as WitReading, Verdict, WindowAggregate};
use crate::plugins::{Plugin, SensorCatalog, StageKind};
use crate::reading::{SensorType, decode};
use crate::store::{BatchRows, DEAD_LETTER_PAYLOAD_LIMIT, DeadLetter, Prediction, Store, StoredReading};

/// How the loop batches and ticks.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Most messages in one batch.
    pub batch_max: usize,
    /// How long a batch waits for more messages after its first.
    pub batch_linger: Duration,
    /// How often aggregators are told the processing time.
    pub tick_interval: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_max: 5000,
            batch_linger: Duration::from_millis(50),
            tick_interval: Duration::from_secs(1),
        }
    }
}

/// The plugins and the sensor keys they share. Plugin calls are blocking CPU work, so the stages
/// move onto a blocking thread for each batch and come back with its results.
#[derive(Default)]
struct Stages {
    detectors: Vec<Plugin>,
    aggregators: Vec<Plugin>,
    catalog: SensorCatalog,
}

/// The loop's parts.
pub struct Pipeline {
    config: PipelineConfig,
    source: Source,
    stages: Stages,
    store: Store,
    live: Arc<Live>,
}

impl Pipeline {
    /// Assembles a pipeline; `plugins` may be of both kinds, in any order.
    pub fn new(config: PipelineConfig, source: Source, plugins: Vec<Plugin>, store: Store, live: Arc<Live>) -> Self {
        let (detectors, aggregators) = plugins.into_iter().partition(|p| p.kind() == StageKind::Detector);
        let stages = Stages { detectors, aggregators, catalog: SensorCatalog::default() };
        let pipeline = Pipeline { config, source, stages, store, live };
        pipeline.live.set_plugins(pipeline.plugin_statuses());
        pipeline
    }

    /// Runs until `shutdown`, then commits the processed offsets.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), KafkaError> {
        let mut last_tick = Instant::now();
        loop {
            let batch = tokio::select! {
                batch = self.source.next_batch(self.config.batch_max, self.config.batch_linger, self.config.tick_interval) => batch,
                _ = shutdown.cancelled() => break,
            };
            if !batch.is_empty() && !self.process(&batch, &shutdown).await {
                break;
            }
            if last_tick.elapsed() >= self.config.tick_interval {
                last_tick = Instant::now();
                if !self.tick(&shutdown).await {
                    break;
                }
            }
        }
        info!("pipeline stopping: committing processed offsets");
        self.source.commit_now()
    }

    /// Processes one batch; false if shutdown interrupted the database retries (the batch is then
    /// left unmarked, to be replayed).
    async fn process(&mut self, batch: &[RawMessage], shutdown: &CancellationToken) -> bool {
        let mut rows = BatchRows::default();
        let mut wit = Vec::with_capacity(batch.len());
        for message in batch {
            match decode(message.payload.as_deref()) {
                Ok(reading) => {
                    wit.push(self.stages.catalog.wit_reading(&reading));
                    rows.readings.push(StoredReading {
                        reading,
                        flagged: false,
                        partition: message.partition,
                        offset: message.offset,
                    });
                }
                Err(err) => {
                    debug!(partition = message.partition, offset = message.offset, error = %err, "dead-lettering a message");
                    rows.dead_letters.push(DeadLetter {
                        topic: self.source.topic().to_owned(),
                        partition: message.partition,
                        offset: message.offset,
                        key: message.key.clone(),
                        payload: message.payload.as_ref().map(|p| p[..p.len().min(DEAD_LETTER_PAYLOAD_LIMIT)].to_vec()),
                        error: err.to_string(),
                    });
                }
            }
        }
        if !wit.is_empty() {
            let mut stages = std::mem::take(&mut self.stages);
            match tokio::task::spawn_blocking(move || {
                stages.run(&mut wit, &mut rows);
                (stages, rows)
            })
            .await
            {
                Ok((stages, processed)) => {
                    self.stages = stages;
                    rows = processed;
                }
                Err(panic) => {
                    error!(error = %panic, "plugin stages panicked; stopping the pipeline (the batch will be replayed)");
                    return false;
                }
            }
        }
        if !Self::commit(&self.store, &self.live, &rows, shutdown).await {
            return false;
        }
        if let Err(err) = self.source.mark_processed(batch) {
            // Only a rebalance that revoked the partition does this; its new owner replays.
            warn!(error = %err, "could not mark offsets processed");
        }
        let now_ms = Utc::now().timestamp_millis();
        let latencies_ms = batch.iter().filter_map(|m| m.timestamp_ms).map(|t| (now_ms - t).max(0) as f64).collect();
        self.publish(&rows, latencies_ms);
        true
    }

    /// Tells aggregators the time and stores the windows they close for idleness.
    async fn tick(&mut self, shutdown: &CancellationToken) -> bool {
        let now_ms = Utc::now().timestamp_millis();
        // A tick is a few microseconds per aggregator: not worth a thread hop.
        let rows = BatchRows { aggregates: self.stages.tick(now_ms), ..BatchRows::default() };
        if rows.aggregates.is_empty() {
            self.live.set_plugins(self.plugin_statuses());
            return true;
        }
        if !Self::commit(&self.store, &self.live, &rows, shutdown).await {
            return false;
        }
        self.publish(&rows, Vec::new());
        true
    }

    /// Writes `rows`, retrying with exponential backoff (0.1 s doubling to 10 s) until it succeeds
    /// or shutdown is requested.
    /// (A free function of the store and live view: the plugin stores are not `Sync`, so no `&self`
    /// may live across an await.)
    async fn commit(store: &Store, live: &Live, rows: &BatchRows, shutdown: &CancellationToken) -> bool {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .without_max_times();
        let write = || store.write(rows);
        let retried = write.retry(backoff).notify(|err, delay| {
            live.set_database_ok(false);
            warn!(error = %err, retry_in = ?delay, "batch not stored; retrying");
        });
        tokio::select! {
            result = retried => {
                if result.is_ok() {
                    live.set_database_ok(true);
                }
                result.is_ok()
            }
            _ = shutdown.cancelled() => false,
        }
    }

    fn publish(&self, rows: &BatchRows, latencies_ms: Vec<f64>) {
        let detections = rows
            .predictions
            .iter()
            .rev()
            .filter(|p| p.verdict == "anomaly")
            .take(EVENT_ROWS)
            .map(|p| {
                let stored = &rows.readings[p.reading];
                PredictionRow {
                    detector: p.detector.clone(),
                    sensor_id: stored.reading.sensor_id.clone(),
                    sensor_type: stored.reading.sensor_type.as_str().to_owned(),
                    value: stored.reading.value,
                    timestamp: stored.reading.timestamp,
                    verdict: p.verdict.to_owned(),
                    is_anomaly: true,
                    anomaly_score: p.score,
                    rule_based_anomaly: stored.reading.anomaly,
                    detector_version: p.detector_version.clone(),
                    model_generation: p.model.as_ref().map(|m| i32::try_from(m.generation).unwrap_or(i32::MAX)),
                }
            })
            .collect();
        let summary = BatchSummary {
            sensor_ids: rows.readings.iter().map(|r| r.reading.sensor_id.as_str()).collect(),
            stored: rows.readings.len() as u64,
            flagged: rows.readings.iter().filter(|r| r.flagged).count() as u64,
            newest_readings: rows.readings.iter().rev().take(EVENT_ROWS).map(reading_row).collect(),
            detections,
            aggregates: rows.aggregates.clone(),
            dead_letters: rows.dead_letters.len() as u64,
            latencies_ms,
        };
        self.live.record_batch(summary, self.plugin_statuses());
    }

    fn plugin_statuses(&self) -> Vec<PluginStatus> {
        self.stages.statuses()
    }
}

impl Stages {
    /// Runs every detector, then every aggregator, over the batch, filling `rows`.
    fn run(&mut self, wit: &mut [WitReading], rows: &mut BatchRows) {
        for detector in &mut self.detectors {
            match detector.detect(&self.catalog, wit) {
                Ok(detections) => {
                    for (index, detection) in detections.iter().enumerate() {
                        let flagged = detection.verdict == Verdict::Anomaly;
                        rows.readings[index].flagged |= flagged;
                        rows.predictions.push(Prediction {
                            detector: detector.name().to_owned(),
                            reading: index,
                            verdict: verdict_name(detection.verdict),
                            score: detection.score,
                            detector_version: detector.info().version.clone(),
                            model: detection.model,
                        });
                    }
                }
                Err(err) => {
                    error!(plugin = detector.name(), error = %err, "detector failed; its verdicts for this batch are lost")
                }
            }
        }
        for (reading, stored) in wit.iter_mut().zip(&rows.readings) {
            reading.flagged = stored.flagged;
        }
        for aggregator in &mut self.aggregators {
            match aggregator.aggregate(&self.catalog, wit) {
                Ok(aggregates) => {
                    rows.aggregates.extend(aggregates.into_iter().map(|a| aggregate_row(aggregator.name(), a)))
                }
                Err(err) => error!(plugin = aggregator.name(), error = %err, "aggregator failed on a batch"),
            }
        }
    }

    /// Tells every aggregator the processing time; returns the windows closed for idleness.
    fn tick(&mut self, now_ms: i64) -> Vec<AggregateRow> {
        let mut closed = Vec::new();
        for aggregator in &mut self.aggregators {
            match aggregator.tick(&self.catalog, now_ms) {
                Ok(aggregates) => closed.extend(aggregates.into_iter().map(|a| aggregate_row(aggregator.name(), a))),
                Err(err) => error!(plugin = aggregator.name(), error = %err, "aggregator failed on a tick"),
            }
        }
        closed
    }

    fn statuses(&self) -> Vec<PluginStatus> {
        self.detectors.iter().chain(&self.aggregators).map(plugin_status).collect()
    }
}

/// The API's view of a plugin.
pub fn plugin_status(plugin: &Plugin) -> PluginStatus {
    let m = plugin.metrics();
    PluginStatus {
        name: plugin.name().to_owned(),
        kind: match plugin.kind() {
            StageKind::Detector => "detector".into(),
            StageKind::Aggregator => "aggregator".into(),
        },
        version: plugin.info().version.clone(),
        calls: m.calls,
        readings_in: m.readings_in,
        outputs: m.outputs,
        errors: m.errors,
        restarts: m.restarts,
        mean_call_micros: if m.calls == 0 { 0.0 } else { m.busy_micros as f64 / m.calls as f64 },
        last_error: m.last_error.clone(),
        state: m.state.as_str().into(),
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

fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::WarmingUp => "warming_up",
        Verdict::Normal => "normal",
        Verdict::Anomaly => "anomaly",
    }
}

fn millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn aggregate_row(stage: &str, a: WindowAggregate) -> AggregateRow {
    AggregateRow {
        stage: stage.to_owned(),
        window_start: millis(a.window_start_ms),
        window_end: millis(a.window_end_ms),
        location: a.location,
        sensor_type: SensorType::from(a.sensor_type).as_str().to_owned(),
        avg_value: a.avg,
        min_value: a.min,
        max_value: a.max,
        stddev_value: a.stddev,
        count_readings: i32::try_from(a.count).unwrap_or(i32::MAX),
        anomaly_count: i32::try_from(a.anomaly_count).unwrap_or(i32::MAX),
        revision: i32::try_from(a.revision).unwrap_or(i32::MAX),
        late_count: i32::try_from(a.late_count).unwrap_or(i32::MAX),
    }
}

fn reading_row(stored: &StoredReading) -> ReadingRow {
    let r = &stored.reading;
    ReadingRow {
        sensor_id: r.sensor_id.clone(),
        sensor_type: r.sensor_type.as_str().to_owned(),
        location: r.location.clone(),
        value: r.value,
        unit: r.unit.clone(),
        timestamp: r.timestamp,
        anomaly: r.anomaly,
        flagged: stored.flagged,
    }
}
