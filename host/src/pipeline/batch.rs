//! One batch through the loop: validate every message (a reading, or a dead letter with its
//! reason), run the stages over the readings on a blocking thread (with a checkpoint when one is
//! due), and start the batch's transaction once the previous one has committed; the committed batch
//! is published to the live view.

use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, TimeZone, Utc};
use iotstream_api::{PluginStatus, PredictionRow, Verdict};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::stages::Stages;
use super::{Committed, Pipeline, PipelineError, SHUTDOWN_WRITE_GRACE};
use crate::http::live::{BatchSummary, EVENT_ROWS, Live};
use crate::kafka::RawMessage;
use crate::plugins::bindings::Reading as WitReading;
use crate::reading::DecodeError;
use crate::store::rows::{DEAD_LETTER_KEY_LIMIT, DEAD_LETTER_PAYLOAD_LIMIT};
use crate::store::{BatchRows, CheckpointReason, DeadLetter, Prediction, Store, StoreError, StoredReading, Written};

impl Pipeline {
    /// Processes one batch and starts its transaction once the previous batch's has committed;
    /// false if shutdown interrupted the database retries (what is not stored is replayed).
    pub(super) async fn process(
        &mut self,
        batch: &[RawMessage],
        shutdown: &CancellationToken,
    ) -> Result<(), PipelineError> {
        // The logged batches a given-up replay did not form again are forgotten with this batch, so
        // that a later restart does not form batches this run never processed.
        let forget_batches = self.source.take_replay_given_up().then_some((self.batch_seq, self.logged_until));
        // A batch formed again keeps its logged number; one read on is numbered past the log.
        self.batch_seq = self.source.take_replayed().unwrap_or(self.batch_seq.max(self.logged_until) + 1);
        let batch_seq = self.batch_seq;
        let topic = self.source.topic().to_owned();
        let mut rows = BatchRows { source: self.source_id, topic, batch_seq, forget_batches, ..BatchRows::default() };
        let (wit, faults) = self.validate(batch, &mut rows);
        let checkpoint_due = match (self.last_checkpoint, self.config.checkpoint_interval) {
            (None, _) => true,
            (Some(last), Some(every)) => last.elapsed() >= every,
            (Some(_), None) => false,
        };
        if !wit.is_empty() || checkpoint_due {
            let positions = checkpoint_due.then(|| self.positions.clone());
            let Some(processed) = self.run_stages(wit, rows, positions).await else {
                return Err(PipelineError::StagesPanicked);
            };
            rows = processed;
        }
        add_sensor_faults(&mut rows, faults);
        if rows.checkpoint.is_some() {
            self.last_checkpoint = Some(Instant::now());
        }
        // One transaction at a time, in batch order: this batch's starts when the previous one's
        // has committed, and runs while the next batch is computed.
        self.finish_in_flight().await?;
        self.in_flight = Some(self.start_commit(batch, rows, shutdown));
        Ok(())
    }

    /// Validates each message of `batch` into `rows` (a reading, or a dead letter with its reason)
    /// and advances the positions; returns the readings as they cross the WIT boundary, and the
    /// sensor faults (readings outside their type's physical range), which no plugin sees.
    fn validate(&mut self, batch: &[RawMessage], rows: &mut BatchRows) -> (Vec<WitReading>, Vec<StoredReading>) {
        let mut wit = Vec::with_capacity(batch.len());
        let mut faults = Vec::new();
        let now = Utc::now();
        for message in batch {
            match self.config.limits.check(message.payload.as_deref(), judged_at(message, now)) {
                Ok(reading) if !reading.is_plausible() => faults.push(StoredReading {
                    reading,
                    flagged: true,
                    partition: message.partition,
                    offset: message.offset,
                }),
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
                    rows.dead_letters.push(dead_letter(self.source.topic(), message, &err));
                }
            }
            let next = self.positions.entry(message.partition).or_insert(message.offset + 1);
            *next = (*next).max(message.offset + 1);
            rows.positions.insert(message.partition, *next);
        }
        (wit, faults)
    }

    /// Runs the stages over `wit` on a blocking thread, filling `rows`, and checkpoints them with
    /// `positions` when given; `None` if the stages panicked (the batch will be replayed).
    async fn run_stages(
        &mut self,
        mut wit: Vec<WitReading>,
        mut rows: BatchRows,
        positions: Option<std::collections::BTreeMap<i32, i64>>,
    ) -> Option<BatchRows> {
        let mut stages: Stages = std::mem::take(&mut self.stages);
        let batch_seq = rows.batch_seq;
        let ran = tokio::task::spawn_blocking(move || {
            if !wit.is_empty() {
                stages.run(&mut wit, &mut rows);
            }
            if let Some(positions) = positions {
                rows.checkpoint = Some(stages.checkpoint(CheckpointReason::Interval, positions, batch_seq));
            }
            (stages, rows)
        })
        .await;
        match ran {
            Ok((stages, processed)) => {
                self.stages = stages;
                Some(processed)
            }
            Err(panic) => {
                error!(error = %panic, "plugin stages panicked; stopping the pipeline (the batch will be replayed)");
                None
            }
        }
    }

    /// Starts `rows`' transaction: it commits (retrying), then publishes the batch to the live view.
    fn start_commit(&self, batch: &[RawMessage], rows: BatchRows, shutdown: &CancellationToken) -> super::InFlight {
        let sent_ms: Vec<i64> = batch.iter().filter_map(|m| m.timestamp_ms).collect();
        let (store, live, shutdown, plugins) =
            (self.store.clone(), self.live.clone(), shutdown.clone(), self.plugin_statuses());
        tokio::spawn(async move {
            let written = Self::commit(&store, &live, &rows, &shutdown).await?;
            // Published as soon as it is durable, not when the next batch comes.
            let now_ms = Utc::now().timestamp_millis();
            let latencies_ms = sent_ms.iter().map(|t| (now_ms - t).max(0) as f64).collect();
            publish(&live, &rows, written, latencies_ms, plugins);
            Some(Committed { positions: rows.positions, checkpoint: rows.checkpoint.is_some() })
        })
    }

    /// Writes `rows`, retrying with exponential backoff (0.1 s doubling to 10 s) until it succeeds,
    /// or (`None`) until [`SHUTDOWN_WRITE_GRACE`] after shutdown was requested: a write in
    /// progress at shutdown finishes, an outage does not hold the shutdown.
    /// A lost source ([`StoreError::NotOwner`]) is not retried: it stops the host (`None`, ERROR
    /// logged).
    /// (A free function of the store and live view: the plugin stores are not `Sync`, so no `&self`
    /// may live across an await.)
    pub(super) async fn commit(
        store: &Store,
        live: &Live,
        rows: &BatchRows,
        shutdown: &CancellationToken,
    ) -> Option<Written> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .without_max_times();
        let started = std::time::Instant::now();
        let write = || store.write(rows);
        let retried =
            write.retry(backoff).when(|err| !matches!(err, StoreError::NotOwner { .. })).notify(|err, delay| {
                live.set_database(Some(err.outage()));
                warn!(error = %err, retry_in = ?delay, "batch not stored; retrying");
            });
        tokio::select! {
            result = retried => match result {
                Ok(written) => {
                    live.set_database(None);
                    live.metrics().record_write(started.elapsed());
                    Some(written)
                }
                Err(err) => {
                    // Another host may own the source now: writing on would overwrite its batch
                    // log and checkpoints. Stop; a restart waits for the source again.
                    error!(error = %err, "batch not stored: this host lost its source; stopping (restart it to wait for the source again)");
                    shutdown.cancel();
                    None
                }
            },
            _ = async {
                shutdown.cancelled().await;
                tokio::time::sleep(SHUTDOWN_WRITE_GRACE).await;
            } => None,
        }
    }
}

/// The time a message's event time is judged against: its Kafka timestamp (when it was produced or
/// appended), the same however late it is processed, so a replay long after a crash judges it as
/// the first run did; the host's clock `now` only for a message without one.
fn judged_at(message: &RawMessage, now: DateTime<Utc>) -> DateTime<Utc> {
    message.timestamp_ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single()).unwrap_or(now)
}

/// Pushes a committed batch (what it `written`, its newest rows) to the live view.
pub(super) fn publish(
    live: &Live,
    rows: &BatchRows,
    written: Written,
    latencies_ms: Vec<f64>,
    plugins: Vec<PluginStatus>,
) {
    for refused in &written.refused {
        live.record_refused(refused);
    }
    let Written { totals: written, windows, .. } = written;
    let messages = rows.readings.len() + rows.dead_letters.len();
    live.metrics().record_batch(messages, written.readings, rows.dead_letters.iter().map(|d| d.reason));
    let detections = rows
        .predictions
        .iter()
        .rev()
        .filter(|p| p.verdict.is_anomaly())
        .take(EVENT_ROWS)
        .map(|p| {
            let stored = &rows.readings[p.reading];
            PredictionRow {
                detector: p.detector.clone(),
                sensor_id: stored.reading.sensor_id.clone(),
                sensor_type: stored.reading.sensor_type,
                value: stored.reading.value,
                timestamp: stored.reading.timestamp,
                verdict: p.verdict,
                is_anomaly: true,
                anomaly_score: p.score,
                rule_based_anomaly: stored.reading.anomaly,
                detector_version: p.detector_version.clone(),
                model_generation: p.model.map(|m| m.generation),
            }
        })
        .collect();
    let summary = BatchSummary {
        sensor_ids: rows.readings.iter().map(|r| r.reading.sensor_id.as_str()).collect(),
        stored: written.readings,
        flagged: written.flagged,
        newest_readings: rows.readings.iter().rev().take(EVENT_ROWS).map(StoredReading::api_row).collect(),
        detections,
        aggregates: windows,
        new_aggregates: written.aggregates,
        dead_letters: written.dead_letters,
        latencies_ms,
    };
    live.record_batch(summary, plugins);
}

/// A message that did not decode or validate, as its dead letter: the payload up to
/// [`DEAD_LETTER_PAYLOAD_LIMIT`] and the key up to [`DEAD_LETTER_KEY_LIMIT`] bytes (a cut is said
/// in the error).
fn dead_letter(topic: &str, message: &RawMessage, err: &DecodeError) -> DeadLetter {
    let key_len = message.key.as_ref().map_or(0, Vec::len);
    let mut error = err.to_string();
    if key_len > DEAD_LETTER_KEY_LIMIT {
        error.push_str(&format!(" (key cut from {key_len} to {DEAD_LETTER_KEY_LIMIT} bytes)"));
    }
    DeadLetter {
        topic: topic.to_owned(),
        partition: message.partition,
        offset: message.offset,
        key: message.key.as_ref().map(|k| k[..k.len().min(DEAD_LETTER_KEY_LIMIT)].to_vec()),
        payload: message.payload.as_ref().map(|p| p[..p.len().min(DEAD_LETTER_PAYLOAD_LIMIT)].to_vec()),
        error,
        reason: err.kind(),
    }
}

/// The rule-based detector that judges every reading outside its type's physical range: a sensor
/// fault, an alarm the operator sees beside the plugins' (docs/detectors.md).
pub const SENSOR_FAULT_DETECTOR: &str = "sensor-fault";

/// Adds the batch's sensor faults to `rows` after the plugins' readings (whose verdicts index
/// them by position): each stored flagged, with an `anomaly` verdict of [`SENSOR_FAULT_DETECTOR`]
/// (score 1). No plugin judges them: a broken sensor's values would skew every statistic.
fn add_sensor_faults(rows: &mut BatchRows, faults: Vec<StoredReading>) {
    for fault in faults {
        rows.predictions.push(Prediction {
            detector: SENSOR_FAULT_DETECTOR.to_owned(),
            reading: rows.readings.len(),
            verdict: Verdict::Anomaly,
            score: 1.0,
            detector_version: env!("CARGO_PKG_VERSION").to_owned(),
            model: None,
        });
        rows.readings.push(fault);
    }
}
