//! One batch through the loop: each partition's messages through its lane, on a blocking thread
//! (lanes side by side): validated (a reading, or a dead letter with its reason), then run through
//! the lane's stages, with a checkpoint when one is due; then the batch's transaction starts once
//! the previous one has committed, and the committed batch is published to the live view. Only
//! the offsets are read on the loop's own task, so decoding, like the plugins, uses every core.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, TimeZone, Utc};
use iotstream_api::{PluginStatus, PredictionRow, Verdict};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::lanes::checkpoint_phase;
use super::stages::Stages;
use super::{Committed, Pipeline, PipelineError, SHUTDOWN_WRITE_GRACE};
use crate::http::live::{BatchSummary, EVENT_ROWS, Live};
use crate::http::metrics::LoopPhase;
use crate::kafka::RawMessage;
use crate::plugins::bindings::Reading as WitReading;
use crate::reading::{DecodeError, ReadingLimits};
use crate::store::order::{BatchProgress, EarlierBatch, Order};
use crate::store::rows::{DEAD_LETTER_KEY_LIMIT, DEAD_LETTER_PAYLOAD_LIMIT};
use crate::store::{
    BatchRows, CheckpointReason, DeadLetter, LaneBatch, Prediction, Store, StoreError, StoredReading, StoredWindow,
    Written,
};

impl Pipeline {
    /// Processes one batch (each partition's messages through its lane) and starts its transaction
    /// once the previous batch's has committed.
    pub(super) async fn process(
        &mut self,
        batch: Vec<RawMessage>,
        shutdown: &CancellationToken,
    ) -> Result<(), PipelineError> {
        // The logged batches a given-up replay did not form again are forgotten with this batch, so
        // that a later owner does not form batches this run never processed.
        let started = Instant::now();
        let given_up = self.source.take_replay_given_up();
        let replayed = self.source.take_replayed();
        let sent_ms: Vec<i64> = batch.iter().filter_map(|m| m.timestamp_ms).collect();
        let mut by_lane: BTreeMap<i32, Vec<RawMessage>> = BTreeMap::new();
        for message in batch {
            by_lane.entry(message.partition).or_default().push(message);
        }
        let mut work = Vec::with_capacity(by_lane.len());
        let validation = Validation { limits: self.config.limits, topic: self.source.topic().into(), now: Utc::now() };
        let mut fresh = true;
        let owned = self.lanes.owned.len();
        for (partition, messages) in by_lane {
            let rank = self.lanes.owned.range(..partition).count();
            let Some(lane) = self.lanes.owned.get_mut(&partition) else {
                // Not this host's (any more): what the source held of it was dropped at the revocation.
                debug!(partition, messages = messages.len(), "messages of a partition this host does not own: skipped");
                continue;
            };
            fresh &= messages.iter().all(|m| m.offset >= lane.fresh_from);
            let forget = given_up.contains(&partition).then_some((lane.batch_seq, lane.logged_until));
            // A batch formed again keeps its logged number; one read on is numbered past the log.
            lane.batch_seq = replayed.get(&partition).copied().unwrap_or(lane.batch_seq.max(lane.logged_until) + 1);
            let checkpoint_due = match (lane.last_checkpoint, self.config.checkpoint_interval) {
                (None, _) => true,
                (Some(last), Some(every)) => last.elapsed() >= every,
                (Some(_), None) => false,
            };
            let mut rows = BatchRows { source: self.ids.current, ..BatchRows::default() };
            // The lane's position after its share: known from the offsets alone, so the messages
            // are decoded and validated on the lane's own thread (`run_lane`), lanes side by side.
            if let Some(last) = messages.iter().map(|m| m.offset).max() {
                lane.next_offset = lane.next_offset.max(last + 1);
                rows.positions.insert(partition, lane.next_offset);
            }
            rows.lanes.push(LaneBatch { partition, batch_seq: lane.batch_seq, next_offset: lane.next_offset, forget });
            if checkpoint_due {
                // A lane's first checkpoint sets its phase: the lanes' checkpoints come due spread
                // over the interval instead of all in one batch's transaction.
                let phase = match (lane.last_checkpoint, self.config.checkpoint_interval) {
                    (None, Some(every)) => checkpoint_phase(rank, owned, every),
                    _ => Duration::ZERO,
                };
                let now = Instant::now();
                lane.last_checkpoint = Some(now.checked_sub(phase).unwrap_or(now));
            }
            work.push(LaneWork {
                partition,
                stages: std::mem::take(&mut lane.stages),
                messages,
                validation: validation.clone(),
                rows,
                checkpoint: checkpoint_due.then_some((lane.next_offset, lane.batch_seq)),
            });
        }
        let fence = Some(self.lanes.fence(self.ids.lineage, work.iter().map(|w| w.partition)));
        let header = BatchRows {
            source: self.ids.current,
            topic: self.source.topic().to_owned(),
            fence,
            fresh,
            ..BatchRows::default()
        };
        // A fresh batch's readings are copied: each lane encodes its own for the `COPY` on its
        // thread, so the transaction only sends them.
        let mut lanes_rows = Vec::with_capacity(work.len());
        for done in run_lanes(work, fresh).await? {
            if let Some(lane) = self.lanes.owned.get_mut(&done.partition) {
                lane.stages = done.stages;
            }
            lanes_rows.push(done.rows);
        }
        // The lanes' rows go to the transactions as they are, a part's lanes copied together once.
        let parts = BatchRows::parts_of(&header, lanes_rows, self.config.writers);
        self.live.metrics().record_loop(LoopPhase::Stages, started.elapsed());
        // Up to `batches_in_flight` batches' transactions at once, committing in batch order
        // (`store::order`): this batch's starts now, beside the ones before it, once the oldest
        // has committed if that many are in flight, and runs while the next batch is computed.
        while self.in_flight.len() >= self.config.batches_in_flight {
            self.finish_oldest().await?;
        }
        let (progress, earlier) = BatchProgress::start();
        let after = std::mem::replace(&mut self.last_started, earlier);
        let task = self.start_commit(sent_ms, parts, shutdown, progress, after);
        self.in_flight.push_back(task);
        Ok(())
    }

    /// Starts the transactions of a batch's `parts` ([`BatchRows::parts_of`], side by side, each
    /// with whole partitions): they commit (retrying) once the batch before, `after`, is stored,
    /// then the batch is published to the live view and `progress` says it is stored.
    fn start_commit(
        &self,
        sent_ms: Vec<i64>,
        parts: Vec<BatchRows>,
        shutdown: &CancellationToken,
        progress: BatchProgress,
        after: EarlierBatch,
    ) -> super::InFlight {
        let (store, live, shutdown, plugins) =
            (self.store.clone(), self.live.clone(), shutdown.clone(), self.plugin_statuses());
        tokio::spawn(async move {
            let order = Order { progress: &progress, after: &after };
            let writes = parts.iter().map(|part| Self::commit(&store, &live, part, &shutdown, order));
            let mut written = Written::default();
            let mut windows_in = 0;
            // Not stored (`None`): `progress` is dropped, and the batch after this one is not
            // stored either.
            for part in futures::future::join_all(writes).await {
                let part = part?;
                windows_in += usize::from(!part.windows.is_empty());
                written.absorb(part);
            }
            if windows_in > 1 {
                // Each transaction merged its windows without the partials the others were writing
                // beside it: merge them again now that all are stored.
                let partials: Vec<StoredWindow> = parts.iter().flat_map(|p| p.aggregates.iter().cloned()).collect();
                match store.merged_windows(&partials).await {
                    Ok(windows) => written.windows = windows,
                    Err(err) => {
                        warn!(error = %err, "windows not merged again after the batch; the live view shows them at their next emission")
                    }
                }
            }
            // Published as soon as it is durable, not when the next batch comes, and before the
            // batch after it is.
            let now_ms = Utc::now().timestamp_millis();
            let latencies_ms = sent_ms.iter().map(|t| (now_ms - t).max(0) as f64).collect();
            publish(&live, &parts, written, latencies_ms, plugins);
            progress.stored();
            let positions = parts.iter().flat_map(|p| p.positions.iter().map(|(&k, &v)| (k, v))).collect();
            Some(Committed { positions, checkpoint: parts.iter().any(|p| !p.checkpoints.is_empty()) })
        })
    }

    /// Writes `rows`, committing once the batch before it is stored ([`Order::after`]), retrying with
    /// exponential backoff (0.1 s doubling to 10 s) until it succeeds, or (`None`) until
    /// [`SHUTDOWN_WRITE_GRACE`] after shutdown was requested: a write in progress at shutdown
    /// finishes, an outage does not hold the shutdown. A failed attempt tells the batch after it
    /// ([`Order::progress`]), which gives way until this one is stored.
    /// A lost partition ([`StoreError::NotOwner`]) is not retried: it stops the host (`None`, ERROR
    /// logged; its restart joins the group again); nor is a batch whose earlier batch was not
    /// stored (`None`: that one's failure stops the host).
    /// (A free function of the store and live view: the plugin stores are not `Sync`, so no `&self`
    /// may live across an await.)
    pub(super) async fn commit(
        store: &Store,
        live: &Live,
        rows: &BatchRows,
        shutdown: &CancellationToken,
        order: Order<'_>,
    ) -> Option<Written> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .without_max_times();
        let started = std::time::Instant::now();
        let write = || store.write_in_order(rows, order);
        let retried = write
            .retry(backoff)
            .when(|err| !matches!(err, StoreError::NotOwner { .. } | StoreError::EarlierNotStored))
            .notify(|err, delay| {
                order.progress.retrying();
                live.set_database(Some(err.outage()));
                warn!(error = %err, retry_in = ?delay, "batch not stored; retrying");
            });
        tokio::select! {
            result = retried => match result {
                Ok(written) => {
                    live.set_database(None);
                    live.metrics().record_write(started.elapsed(), &written.readings_paths);
                    Some(written)
                }
                Err(StoreError::EarlierNotStored) => None,
                Err(err) => {
                    // Another host owns one of the partitions now: writing on would overwrite its
                    // batch log and checkpoints. Stop; a restart joins the group again.
                    error!(error = %err, "batch not stored: another host took a partition of this host's over; stopping (restart it to join the group again)");
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

impl Pipeline {
    /// [`commit`](Self::commit) with no batch in flight beside it (a tick's windows, a handed-off
    /// lane's checkpoint: written once every batch before has committed).
    pub(super) async fn commit_alone(
        store: &Store,
        live: &Live,
        rows: &BatchRows,
        shutdown: &CancellationToken,
    ) -> Option<Written> {
        let (progress, after) = (BatchProgress::start().0, EarlierBatch::stored());
        Self::commit(store, live, rows, shutdown, Order { progress: &progress, after: &after }).await
    }
}

/// One lane's share of a batch, on its way through the lane's stages.
struct LaneWork {
    partition: i32,
    stages: Stages,
    /// The lane's messages, in offset order, not yet decoded.
    messages: Vec<RawMessage>,
    validation: Validation,
    rows: BatchRows,
    /// When due: the lane's position and batch number to checkpoint with.
    checkpoint: Option<(i64, i64)>,
}

/// What a lane's stages made of its share.
struct LaneDone {
    partition: i32,
    stages: Stages,
    rows: BatchRows,
}

/// Runs every lane's stages over its readings on blocking threads, as many side by side as the
/// machine has cores (each lane's plugin instances are its own; a thread takes a share of the
/// lanes, so a topic of hundreds of partitions costs no more thread hops than it has cores); an
/// error if one panicked (the batch will be replayed).
async fn run_lanes(work: Vec<LaneWork>, encode_for_copy: bool) -> Result<Vec<LaneDone>, PipelineError> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).min(work.len().max(1));
    let mut shares: Vec<Vec<LaneWork>> = (0..threads).map(|_| Vec::new()).collect();
    // Largest lanes first, each to the share with the fewest readings so far.
    let mut work = work;
    work.sort_by_key(|w| std::cmp::Reverse(w.messages.len()));
    let mut loads = vec![0usize; threads];
    for lane in work {
        let lightest = (0..threads).min_by_key(|&t| loads[t]).unwrap_or(0);
        loads[lightest] += lane.messages.len().max(1);
        shares[lightest].push(lane);
    }
    let tasks: Vec<_> = shares
        .into_iter()
        .filter(|share| !share.is_empty())
        .map(|share| {
            tokio::task::spawn_blocking(move || {
                share.into_iter().map(|lane| run_lane(lane, encode_for_copy)).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut done = Vec::new();
    for task in tasks {
        match task.await {
            Ok(lanes) => done.extend(lanes),
            Err(panic) => {
                error!(error = %panic, "plugin stages panicked; stopping the pipeline (the batch will be replayed)");
                return Err(PipelineError::StagesPanicked);
            }
        }
    }
    // In partition order: the batch's rows, and so its transaction's, do not depend on the shares.
    done.sort_by_key(|lane| lane.partition);
    Ok(done)
}

/// One lane's share validated and through its stages, with its checkpoint when due, its readings
/// encoded for the `COPY` if `encode_for_copy` ([`BatchRows::encode_for_copy`]).
fn run_lane(mut w: LaneWork, encode_for_copy: bool) -> LaneDone {
    let (mut wit, faults) = validate(&w.validation, &mut w.stages, &w.messages, &mut w.rows);
    drop(w.messages);
    if !wit.is_empty() {
        w.stages.run(&mut wit, &mut w.rows);
    }
    if let Some((next_offset, batch_seq)) = w.checkpoint {
        w.rows.checkpoints.push(w.stages.checkpoint(CheckpointReason::Interval, next_offset, batch_seq));
    }
    add_sensor_faults(&mut w.rows, faults);
    if encode_for_copy {
        w.rows.encode_for_copy();
    }
    LaneDone { partition: w.partition, stages: w.stages, rows: w.rows }
}

/// What a lane's messages are validated against: the same for every lane of a batch.
#[derive(Clone)]
struct Validation {
    limits: ReadingLimits,
    /// The topic, named in dead letters.
    topic: std::sync::Arc<str>,
    /// The batch's time, which a message without a Kafka timestamp is judged at.
    now: DateTime<Utc>,
}

/// Validates each message of a lane's share into `rows` (a reading, or a dead letter with its
/// reason); returns the readings as they cross the WIT boundary (their sensors declared in the
/// lane's catalog), and the sensor faults (readings outside their type's physical range), which no
/// plugin sees.
fn validate(
    validation: &Validation,
    stages: &mut Stages,
    messages: &[RawMessage],
    rows: &mut BatchRows,
) -> (Vec<WitReading>, Vec<StoredReading>) {
    let mut wit = Vec::with_capacity(messages.len());
    let mut faults = Vec::new();
    for message in messages {
        match validation.limits.check(message.payload.as_deref(), judged_at(message, validation.now)) {
            Ok(reading) if !reading.is_plausible() => faults.push(StoredReading {
                reading,
                flagged: true,
                partition: message.partition,
                offset: message.offset,
            }),
            Ok(reading) => {
                wit.push(stages.catalog.wit_reading(&reading));
                rows.readings.push(StoredReading {
                    reading,
                    flagged: false,
                    partition: message.partition,
                    offset: message.offset,
                });
            }
            Err(err) => {
                debug!(partition = message.partition, offset = message.offset, error = %err, "dead-lettering a message");
                rows.dead_letters.push(dead_letter(&validation.topic, message, &err));
            }
        }
    }
    (wit, faults)
}

/// The time a message's event time is judged against: its Kafka timestamp (when it was produced or
/// appended), the same however late it is processed, so a replay long after a crash judges it as
/// the first run did; the host's clock `now` only for a message without one.
fn judged_at(message: &RawMessage, now: DateTime<Utc>) -> DateTime<Utc> {
    message.timestamp_ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single()).unwrap_or(now)
}

/// Pushes a committed batch (its `parts`, what they `written`, its newest rows) to the live view.
pub(super) fn publish(
    live: &Live,
    parts: &[BatchRows],
    written: Written,
    latencies_ms: Vec<f64>,
    plugins: Vec<PluginStatus>,
) {
    for refused in &written.refused {
        live.record_refused(refused);
    }
    let Written { totals: written, windows, .. } = written;
    let messages = parts.iter().map(|p| p.readings.len() + p.dead_letters.len()).sum();
    let reasons = parts.iter().flat_map(|p| p.dead_letters.iter().map(|d| d.reason));
    live.metrics().record_batch(messages, written.readings, reasons);
    let readings = || parts.iter().flat_map(|p| p.readings.iter());
    // A batch holds each partition's messages in turn: its newest rows are the newest by event
    // time, whichever partition they came from.
    let mut anomalies: Vec<(&Prediction, &StoredReading)> = parts
        .iter()
        .flat_map(|part| {
            let anomalies = part.predictions.iter().filter(|p| p.verdict.is_anomaly());
            anomalies.filter_map(|p| part.readings.get(p.reading).map(|stored| (p, stored)))
        })
        .collect();
    anomalies.sort_by_key(|(_, stored)| stored.reading.timestamp);
    let detections = anomalies
        .into_iter()
        .rev()
        .take(EVENT_ROWS)
        .map(|(p, stored)| PredictionRow {
            detector: p.detector.to_string(),
            sensor_id: stored.reading.sensor_id.to_string(),
            sensor_type: stored.reading.sensor_type,
            value: stored.reading.value,
            timestamp: stored.reading.timestamp,
            verdict: p.verdict,
            is_anomaly: true,
            anomaly_score: p.score,
            rule_based_anomaly: stored.reading.anomaly,
            detector_version: p.detector_version.to_string(),
            model_generation: p.model.map(|m| m.generation),
        })
        .collect();
    let summary = BatchSummary {
        sensor_ids: readings().map(|r| r.reading.sensor_id.as_str()).collect(),
        stored: written.readings,
        flagged: written.flagged,
        newest_readings: newest_readings(readings()),
        detections,
        aggregates: windows,
        new_aggregates: written.aggregates,
        dead_letters: written.dead_letters,
        latencies_ms,
    };
    live.record_batch(summary, plugins);
}

/// The batch's readings the live stream carries, at most [`EVENT_ROWS`], newest first: each
/// sensor's newest reading before any sensor's second newest, so that every sensor heard in the
/// batch shows on the live charts (up to [`EVENT_ROWS`] sensors) however many readings the busier
/// ones sent: a batch taken while the host caught up holds hundreds of readings, and the newest 25
/// alone would leave out a sensor that spoke once among them.
fn newest_readings<'a>(readings: impl Iterator<Item = &'a StoredReading>) -> Vec<iotstream_api::ReadingRow> {
    let mut newest_first: Vec<&StoredReading> = readings.collect();
    newest_first.sort_by_key(|r| std::cmp::Reverse(r.reading.timestamp));
    let mut heard: HashMap<&str, usize> = HashMap::new();
    // (how many of its sensor's newer readings come before it, the reading): a stable sort on the
    // first keeps time order within each rank.
    let mut ranked: Vec<(usize, &StoredReading)> = newest_first
        .into_iter()
        .map(|r| {
            let newer = heard.entry(r.reading.sensor_id.as_str()).or_default();
            *newer += 1;
            (*newer - 1, r)
        })
        .collect();
    ranked.sort_by_key(|(rank, _)| *rank);
    ranked.truncate(EVENT_ROWS);
    ranked.sort_by_key(|(_, r)| std::cmp::Reverse(r.reading.timestamp));
    ranked.into_iter().map(|(_, r)| r.api_row()).collect()
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
            detector: SENSOR_FAULT_DETECTOR.into(),
            reading: rows.readings.len(),
            verdict: Verdict::Anomaly,
            score: 1.0,
            detector_version: env!("CARGO_PKG_VERSION").into(),
            model: None,
        });
        rows.readings.push(fault);
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::reading::{Reading, SensorType};

    fn stored(sensor: &str, ms: i64, offset: i64) -> StoredReading {
        StoredReading {
            reading: Reading {
                sensor_id: sensor.into(),
                sensor_type: SensorType::Temperature,
                location: "lab".into(),
                value: 20.0,
                timestamp: Utc.timestamp_millis_opt(1_700_000_000_000 + ms).unwrap(),
                anomaly: false,
                unit: "celsius".into(),
            },
            flagged: false,
            partition: 0,
            offset,
        }
    }

    #[test]
    fn the_live_sample_has_every_sensor_of_a_batch_before_a_second_reading_of_any() {
        // 30 sensors, 10 readings each at ms 100 * i + sensor (i = 0..10), and one quiet sensor
        // whose only reading, at ms 450, is older than 300 of the others.
        let mut batch: Vec<StoredReading> = (0..10)
            .flat_map(|i| (0..30).map(move |s| (i, s)))
            .map(|(i, s)| stored(&format!("busy-{s:02}"), 100 * i + s, 30 * i + s))
            .collect();
        batch.push(stored("quiet", 450, 999));
        let sample = newest_readings(batch.iter());
        // 25 of the 31 sensors, each once: the 25 whose newest readings are newest (busy-05..29 at
        // 905..929; the quiet one's 450 is older than every busy sensor's newest), newest first.
        let expected: Vec<String> = (5..30).rev().map(|s| format!("busy-{s:02}")).collect();
        assert_eq!(sample.iter().map(|r| r.sensor_id.clone()).collect::<Vec<_>>(), expected);
        assert_eq!(sample[0].timestamp, Utc.timestamp_millis_opt(1_700_000_000_929).unwrap());
    }

    #[test]
    fn a_sensor_that_spoke_once_among_busy_ones_is_in_the_live_sample() {
        // 20 busy sensors, 30 readings each newer than the quiet one's: by time alone, the newest
        // 25 would be busy ones only.
        let mut batch: Vec<StoredReading> = vec![stored("quiet", 0, 0)];
        batch.extend((0..600).map(|n| stored(&format!("busy-{:02}", n % 20), 1 + n, 1 + n)));
        let sample = newest_readings(batch.iter());
        let ids: Vec<&str> = sample.iter().map(|r| r.sensor_id.as_str()).collect();
        assert_eq!(ids.len(), EVENT_ROWS);
        // The 21 sensors' newest readings (the quiet one's last, being oldest), then the busy
        // sensors' second newest: the newest four of those (busy-16..19, at 577..580).
        assert_eq!(ids.iter().filter(|id| **id == "quiet").count(), 1);
        let times: Vec<i64> = sample.iter().map(|r| r.timestamp.timestamp_millis() - 1_700_000_000_000).collect();
        let mut expected: Vec<i64> = (581..=600).chain(577..=580).collect();
        expected.push(0);
        expected.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(times, expected);
    }
}
