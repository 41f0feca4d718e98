//! What the pipeline hands the store: the rows of one batch, as plain data. The store knows rows,
//! not plugins: a detector's model lineage arrives as a [`ModelLineage`], not as a WIT binding.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use iotstream_api::{AggregateRow, DeadLetterReason, ReadingRow, Verdict};

use crate::reading::{CompactString, Reading};
use crate::store::checkpoints::Checkpoint;
use crate::store::models::BatchModels;
use crate::store::ownership::Fence;

/// Longest payload prefix kept in a dead letter: a whole valid-sized message (see
/// `ReadingLimits::max_bytes`), and a bounded piece of an oversized one.
pub const DEAD_LETTER_PAYLOAD_LIMIT: usize = 16 * 1024;
/// Longest message key kept in a dead letter: producers key readings by sensor id (at most 100
/// characters); a longer key is kept in part, never whole (a key can be as large as a message).
pub const DEAD_LETTER_KEY_LIMIT: usize = 1024;

/// A reading with where it came from and what the detectors said.
#[derive(Debug, Clone)]
pub struct StoredReading {
    /// The reading.
    pub reading: Reading,
    /// Whether any detector flagged it.
    pub flagged: bool,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
}

impl StoredReading {
    /// The reading as the API and the live view show it.
    pub fn api_row(&self) -> ReadingRow {
        let r = &self.reading;
        ReadingRow {
            sensor_id: r.sensor_id.to_string(),
            sensor_type: r.sensor_type,
            location: r.location.to_string(),
            value: r.value,
            unit: r.unit.to_string(),
            timestamp: r.timestamp,
            anomaly: r.anomaly,
            flagged: self.flagged,
        }
    }
}

/// One detector's verdict on one reading of the batch.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The detector plugin (inline, as the reading's texts: a verdict allocates nothing).
    pub detector: CompactString,
    /// Index of the reading in [`BatchRows::readings`].
    pub reading: usize,
    /// The verdict.
    pub verdict: Verdict,
    /// The detector's score.
    pub score: f64,
    /// The detector plugin's version.
    pub detector_version: CompactString,
    /// The model behind the verdict, for a detector that trains models.
    pub model: Option<ModelLineage>,
}

/// A shadow detector's verdict on one reading of the batch.
#[derive(Debug, Clone)]
pub struct ShadowPrediction {
    /// The shadow plugin.
    pub shadow: String,
    /// The live detector it shadows.
    pub live_detector: String,
    /// The shadow plugin's version.
    pub shadow_version: String,
    /// Index of the reading in [`BatchRows::readings`].
    pub reading: usize,
    /// The verdict.
    pub verdict: Verdict,
    /// The shadow's score.
    pub score: f64,
}

/// A message that did not decode.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Kafka topic.
    pub topic: String,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// The message key.
    pub key: Option<Vec<u8>>,
    /// The payload (at most [`DEAD_LETTER_PAYLOAD_LIMIT`] bytes).
    pub payload: Option<Vec<u8>>,
    /// Why it was refused.
    pub error: String,
    /// The kind of refusal (`DecodeError::kind`).
    pub reason: DeadLetterReason,
}

/// A window one lane's aggregator closed: a partial of the window, over the readings of one Kafka
/// partition (migration 0010). The partials of a window, from every partition, on any host, are
/// merged exactly by `sensor_aggregates_latest`; the API and the live view show only merged
/// windows, so the partition stays here, with the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredWindow {
    /// The Kafka partition of the lane that emitted it.
    pub partition: i32,
    /// The partial, as the aggregator reported it.
    pub window: AggregateRow,
}

/// The model behind a verdict, for a detector that trains models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModelLineage {
    /// How many models the detector trained for this sensor type so far.
    pub generation: i32,
    /// When the model was trained (event time), if that is a valid time.
    pub trained_at: Option<DateTime<Utc>>,
    /// How many readings it was trained on.
    pub training_rows: i32,
}

/// Everything one batch writes.
#[derive(Debug, Default)]
pub struct BatchRows {
    /// The `kafka_sources` id the messages came from.
    pub source: i16,
    /// The topic they came from (for the dead letters of readings the database refuses).
    pub topic: String,
    /// The next offset of each partition the batch read from: its extent.
    pub positions: BTreeMap<i32, i64>,
    /// Each lane's part of the batch, logged under the lane's batch number.
    pub lanes: Vec<LaneBatch>,
    /// Checkpoints to store with the batch, at most one per lane.
    pub checkpoints: Vec<Checkpoint>,
    /// What the transaction checks first: the partitions it writes are still this host's (`None`:
    /// unfenced, for tools and tests).
    pub fence: Option<Fence>,
    /// No message of the batch can be stored yet: each is at or past its partition's stored
    /// position when this host was given the partition. Its readings are then copied, not
    /// inserted `ON CONFLICT` (see `store::copy`); a wrong hint costs a second attempt, never a row.
    pub fresh: bool,
    /// Valid readings.
    pub readings: Vec<StoredReading>,
    /// Detector verdicts.
    pub predictions: Vec<Prediction>,
    /// Shadow detectors' verdicts.
    pub shadow_predictions: Vec<ShadowPrediction>,
    /// Closed windows: each a partial, of its lane's partition.
    pub aggregates: Vec<StoredWindow>,
    /// Refused messages.
    pub dead_letters: Vec<DeadLetter>,
    /// The readings already in `COPY`'s binary format, with their verdicts, a run of one
    /// partition's readings each, in the order of `readings` (see [`BatchRows::encode_for_copy`]);
    /// empty, or not matching the readings, and the writer encodes them itself.
    pub readings_copy: Vec<CopySegment>,
}

/// A run of a batch's readings, all of one partition, as binary `COPY` tuples (see `store::copy`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CopySegment {
    /// The partition of every reading in the run.
    pub partition: i32,
    /// How many readings the run holds.
    pub readings: usize,
    /// Their tuples, each reading's verdicts in it.
    pub tuples: Vec<u8>,
}

impl BatchRows {
    /// Adds `other`'s rows (a lane's share of the batch) to these: its verdicts keep pointing at
    /// its readings.
    pub fn append(&mut self, mut other: BatchRows) {
        let base = self.readings.len();
        for prediction in &mut other.predictions {
            prediction.reading += base;
        }
        for shadow in &mut other.shadow_predictions {
            shadow.reading += base;
        }
        if self.copy_matches_readings() && other.copy_matches_readings() {
            self.readings_copy.append(&mut other.readings_copy);
        } else {
            self.readings_copy.clear();
        }
        self.readings.append(&mut other.readings);
        self.predictions.append(&mut other.predictions);
        self.shadow_predictions.append(&mut other.shadow_predictions);
        self.aggregates.append(&mut other.aggregates);
        self.dead_letters.append(&mut other.dead_letters);
        self.positions.append(&mut other.positions);
        self.lanes.append(&mut other.lanes);
        self.checkpoints.append(&mut other.checkpoints);
    }
}

impl BatchRows {
    /// Encodes the readings, with their verdicts, for the batch's `COPY` (see `store::copy`), so
    /// that its transaction only sends them: called where the rows are made (a lane's thread, off
    /// the commit's path), once they are final. A reading or verdict added after leaves the copy
    /// stale: the writer then sees that it does not match and encodes the readings itself.
    pub fn encode_for_copy(&mut self) {
        let verdicts = VerdictsByReading::new(self.readings.len(), &self.predictions);
        let models = BatchModels::of(&self.predictions);
        let mut segments: Vec<CopySegment> = Vec::new();
        for (index, stored) in self.readings.iter().enumerate() {
            if segments.last().is_none_or(|last| last.partition != stored.partition) {
                segments.push(CopySegment { partition: stored.partition, ..CopySegment::default() });
            }
            if let Some(segment) = segments.last_mut() {
                let of_reading = verdicts.of(index);
                crate::store::copy::encode_tuple(
                    &mut segment.tuples,
                    self.source,
                    stored,
                    &self.predictions,
                    &models.ids,
                    of_reading,
                );
                segment.readings += 1;
            }
        }
        self.readings_copy = segments;
    }

    /// Whether [`BatchRows::readings_copy`] holds exactly the readings: as many, each run's
    /// readings of its partition.
    pub fn copy_matches_readings(&self) -> bool {
        let mut from = 0;
        for segment in &self.readings_copy {
            let Some(run) = self.readings.get(from..from + segment.readings) else { return false };
            if run.iter().any(|r| r.partition != segment.partition) {
                return false;
            }
            from += segment.readings;
        }
        from == self.readings.len()
    }

    /// A batch's parts, for as many transactions side by side (at most `parts`), from its lanes'
    /// rows: each lane is one partition's (its readings, verdicts, windows, dead letters,
    /// position, logged batch and checkpoint), so a partition's rows and position still commit
    /// together and no two parts touch the same partition. The lanes are dealt out so the parts
    /// hold about as many rows each (the largest first, each to the lightest part); each part is
    /// `header`'s batch (its source, topic, fresh hint, and fence, kept to the part's partitions)
    /// with its lanes' rows in the order given. A part of one lane takes that lane's rows as they
    /// are; a part of several copies them once ([`BatchRows::append`]). No lane: one empty part.
    pub fn parts_of(header: &BatchRows, lanes: Vec<BatchRows>, parts: usize) -> Vec<BatchRows> {
        let count = parts.clamp(1, lanes.len().max(1));
        let size = |lane: &BatchRows| (lane.readings.len() + lane.dead_letters.len()).max(1);
        let mut by_size: Vec<usize> = (0..lanes.len()).collect();
        by_size.sort_by_key(|&i| std::cmp::Reverse(size(&lanes[i])));
        let (mut loads, mut part_of) = (vec![0usize; count], vec![0usize; lanes.len()]);
        for i in by_size {
            let lightest = (0..count).min_by_key(|&p| loads[p]).unwrap_or(0);
            loads[lightest] += size(&lanes[i]);
            part_of[i] = lightest;
        }
        let mut grouped: Vec<Vec<BatchRows>> = (0..count).map(|_| Vec::new()).collect();
        for (lane, part) in lanes.into_iter().zip(part_of) {
            grouped[part].push(lane);
        }
        grouped
            .into_iter()
            .map(|mut lanes| {
                let mut part = if lanes.len() == 1 {
                    lanes.pop().unwrap_or_default()
                } else {
                    let mut part = BatchRows::default();
                    part.readings.reserve(lanes.iter().map(|l| l.readings.len()).sum());
                    part.predictions.reserve(lanes.iter().map(|l| l.predictions.len()).sum());
                    for lane in lanes {
                        part.append(lane);
                    }
                    part
                };
                part.source = header.source;
                part.topic.clone_from(&header.topic);
                part.fresh = header.fresh;
                part.fence = header.fence.clone().map(|mut fence| {
                    if count > 1 {
                        let mine: Vec<i32> =
                            part.positions.keys().chain(part.lanes.iter().map(|l| &l.partition)).copied().collect();
                        fence.generations.retain(|partition, _| mine.contains(partition));
                    }
                    fence
                });
                part
            })
            .collect()
    }
}

/// One lane's part of a batch, as the batch log keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneBatch {
    /// The lane's partition.
    pub partition: i32,
    /// The batch's number among the lane's batches (0: not logged).
    pub batch_seq: i64,
    /// The partition's next offset after the batch.
    pub next_offset: i64,
    /// Logged batches to forget first, numbers after the first and up to the second: those a new
    /// owner gave up forming again.
    pub forget: Option<(i64, i64)>,
}

/// Row counts: all-time ones, or the rows one write added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// `sensor_readings` rows.
    pub readings: u64,
    /// `sensor_readings` rows a detector flagged.
    pub flagged: u64,
    /// `sensor_aggregates` rows: window emissions stored (each partition's partial of a window,
    /// and each revision of it, is one; a partial emitted again by a replay is not).
    pub aggregates: u64,
    /// `dead_letters` rows.
    pub dead_letters: u64,
}

/// Each reading's verdicts as the JSON array its `sensor_readings.verdicts` holds (`[]` for a
/// reading no detector judged), in the order of `readings` (see [`write_verdicts_json`]).
pub fn verdicts_json(readings: usize, predictions: &[Prediction]) -> Vec<String> {
    let by_reading = VerdictsByReading::new(readings, predictions);
    let models = BatchModels::of(predictions);
    (0..readings)
        .map(|reading| {
            let mut json = Vec::new();
            write_verdicts_json(&mut json, predictions, &models.ids, by_reading.of(reading));
            // serde_json writes UTF-8, and the brackets and commas around it are ASCII.
            String::from_utf8(json).unwrap_or_else(|_| "[]".to_owned())
        })
        .collect()
}

/// Which predictions are each reading's: one pass over the batch's predictions instead of a list
/// per reading.
pub(crate) struct VerdictsByReading {
    /// Reading `i`'s predictions are `order[start[i]..start[i + 1]]`.
    start: Vec<usize>,
    /// Indices into the predictions, by reading, each reading's in their order in the batch.
    order: Vec<usize>,
}

impl VerdictsByReading {
    /// Groups `predictions` by reading (one pointing past `readings` belongs to none).
    pub(crate) fn new(readings: usize, predictions: &[Prediction]) -> Self {
        let mut start = vec![0usize; readings + 1];
        for p in predictions.iter().filter(|p| p.reading < readings) {
            start[p.reading + 1] += 1;
        }
        for i in 1..start.len() {
            start[i] += start[i - 1];
        }
        let mut next = start.clone();
        let mut order = vec![0usize; start[readings]];
        for (index, p) in predictions.iter().enumerate().filter(|(_, p)| p.reading < readings) {
            order[next[p.reading]] = index;
            next[p.reading] += 1;
        }
        VerdictsByReading { start, order }
    }

    /// The indices of reading `reading`'s predictions.
    pub(crate) fn of(&self, reading: usize) -> &[usize] {
        match (self.start.get(reading), self.start.get(reading + 1)) {
            (Some(&from), Some(&to)) => &self.order[from..to],
            _ => &[],
        }
    }
}

/// Appends to `out` the JSON array of the verdicts `predictions[i]` for each `i` in `indices`, as
/// `sensor_readings.verdicts` keeps them (migration 0015): `[model, verdict, score]` each, `model`
/// the id of its `detector_models` row (`model_ids[i]`, see [`BatchModels`]), `verdict` its
/// [`verdict_code`], `score` a number, or `null` for one that is not finite (JSON has no NaN).
/// `[]` for none.
pub(crate) fn write_verdicts_json(out: &mut Vec<u8>, predictions: &[Prediction], model_ids: &[i64], indices: &[usize]) {
    let array_start = out.len();
    out.push(b'[');
    let verdicts = indices.iter().filter_map(|&i| Some((predictions.get(i)?, model_ids.get(i)?)));
    for (n, (p, &model)) in verdicts.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let verdict = (model, verdict_code(p.verdict), p.score.is_finite().then_some(p.score));
        // Serializing numbers into memory cannot fail; were it to, the reading keeps no verdict
        // rather than a broken array.
        if serde_json::to_writer(&mut *out, &verdict).is_err() {
            out.truncate(array_start);
            out.extend_from_slice(b"[]");
            return;
        }
    }
    out.push(b']');
}

/// A verdict as `sensor_readings.verdicts` keeps it (migration 0015, whose view reads it back).
fn verdict_code(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::WarmingUp => 0,
        Verdict::Normal => 1,
        Verdict::Anomaly => 2,
    }
}

/// `text` with any NUL replaced by U+FFFD: PostgreSQL's text refuses `\u0000`.
pub(crate) fn without_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') { Cow::Owned(text.replace('\0', "\u{FFFD}")) } else { Cow::Borrowed(text) }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use iotstream_api::SensorType;

    use super::*;

    fn reading(partition: i32, offset: i64) -> StoredReading {
        StoredReading {
            reading: Reading {
                sensor_id: format!("s-{partition}-{offset}").into(),
                sensor_type: SensorType::Temperature,
                location: "lab".into(),
                value: offset as f64,
                timestamp: Utc.timestamp_millis_opt(1_700_000_000_000 + offset).unwrap(),
                anomaly: false,
                unit: "C".into(),
            },
            flagged: false,
            partition,
            offset,
        }
    }

    fn verdict(detector: &str, reading: usize) -> Prediction {
        Prediction {
            detector: detector.into(),
            reading,
            verdict: Verdict::Normal,
            score: 0.0,
            detector_version: "1".into(),
            model: None,
        }
    }

    /// One lane's rows: `count` readings of `partition`, two verdicts each, its position and
    /// logged batch.
    fn lane(partition: i32, count: i64, next: i64) -> BatchRows {
        let mut lane = BatchRows { source: 3, ..BatchRows::default() };
        for offset in 0..count {
            lane.readings.push(reading(partition, offset));
            lane.predictions.push(verdict("zscore", lane.readings.len() - 1));
            lane.predictions.push(verdict("forest", lane.readings.len() - 1));
        }
        lane.positions = BTreeMap::from([(partition, next)]);
        lane.lanes = vec![LaneBatch { partition, batch_seq: 1, next_offset: next, forget: None }];
        lane
    }

    /// Partition 0 has 5 readings, 1 has 3, 2 has 2 and a dead letter, 3 only a position: dealt
    /// largest first to the lighter part, two parts get {0, 3} (5 + 0, counted as 1) and {1, 2}
    /// (3 + 3), every row with its partition's part, every verdict still on its own reading, each
    /// part the batch's header, fenced on its own partitions.
    #[test]
    fn a_batchs_lanes_make_parts_of_whole_partitions() {
        let header = BatchRows {
            source: 3,
            topic: "t".to_owned(),
            fresh: true,
            fence: Some(Fence { lineage: 1, generations: BTreeMap::from([(0, 4), (1, 4), (2, 5), (3, 6)]) }),
            ..BatchRows::default()
        };
        let mut with_letter = lane(2, 2, 10);
        with_letter.dead_letters.push(DeadLetter {
            topic: "t".to_owned(),
            partition: 2,
            offset: 9,
            key: None,
            payload: None,
            error: "bad".to_owned(),
            reason: DeadLetterReason::Empty,
        });
        let lanes = vec![lane(0, 5, 5), lane(1, 3, 3), with_letter, lane(3, 0, 7)];

        let parts = BatchRows::parts_of(&header, lanes, 2);
        assert_eq!(parts.len(), 2);
        let partitions = |part: &BatchRows| part.positions.keys().copied().collect::<Vec<_>>();
        assert_eq!(partitions(&parts[0]), [0, 3]);
        assert_eq!(partitions(&parts[1]), [1, 2]);
        for part in &parts {
            let mine = partitions(part);
            assert!(part.readings.iter().all(|r| mine.contains(&r.partition)));
            assert_eq!(part.lanes.iter().map(|l| l.partition).collect::<Vec<_>>(), mine);
            assert_eq!(part.fence.as_ref().expect("fenced").generations.keys().copied().collect::<Vec<_>>(), mine);
            assert_eq!((part.source, part.topic.as_str(), part.fresh), (3, "t", true));
            assert_eq!(part.predictions.len(), 2 * part.readings.len());
            for (i, p) in part.predictions.iter().enumerate() {
                assert_eq!(p.reading, i / 2, "verdicts follow their reading");
            }
        }
        assert_eq!(parts[0].readings.len(), 5);
        assert_eq!(parts[1].readings.len(), 5);
        assert_eq!(parts[1].dead_letters.len(), 1);
        assert_eq!(
            parts.iter().flat_map(|p| p.positions.clone()).collect::<BTreeMap<_, _>>(),
            BTreeMap::from([(0, 5), (1, 3), (2, 10), (3, 7)])
        );
        let mut ids: Vec<_> = parts
            .iter()
            .flat_map(|part| part.predictions.iter().map(|p| (&part.readings[p.reading], p.detector.clone())))
            .map(|(r, detector)| {
                assert_eq!(r.reading.sensor_id, format!("s-{}-{}", r.partition, r.offset));
                (r.reading.sensor_id.clone(), detector)
            })
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 20, "every reading keeps both its verdicts");
    }

    /// Each reading's verdicts, exactly as `sensor_readings.verdicts` keeps them: in the batch's
    /// order per reading, each naming its model by id, a score that is not a number as `null`,
    /// a verdict pointing past the readings left out.
    #[test]
    fn verdicts_are_each_readings_json_array_in_the_batchs_order() {
        use crate::store::models::DetectorModel;
        let trained_at = Utc.timestamp_opt(1_700_000_000, 0).single();
        let lineage = Some(ModelLineage { generation: 2, trained_at, training_rows: 256 });
        let predictions = vec![
            Prediction { score: 1.5, ..verdict("zscore", 2) },
            Prediction { verdict: Verdict::Anomaly, score: 0.75, model: lineage, ..verdict("forest", 0) },
            Prediction { score: f64::NAN, ..verdict("zscore", 0) },
            Prediction { verdict: Verdict::WarmingUp, ..verdict("a\0b", 1) },
            verdict("zscore", 7),
        ];
        let id = |detector, lineage| DetectorModel { detector, version: "1", lineage }.id();
        let (zscore, forest, odd) = (id("zscore", None), id("forest", lineage), id("a\u{FFFD}b", None));
        assert_eq!(
            verdicts_json(4, &predictions),
            [
                format!("[[{forest},2,0.75],[{zscore},1,null]]"),
                format!("[[{odd},0,0.0]]"),
                format!("[[{zscore},1,1.5]]"),
                "[]".to_owned(),
            ]
        );
    }

    /// The `COPY` data of a batch's part, with each of `parts`' readings encoded apart.
    fn copy_data_sent(part: &BatchRows) -> Option<Vec<u8>> {
        part.copy_matches_readings().then(|| {
            let mut data = crate::store::copy::HEADER.to_vec();
            for segment in &part.readings_copy {
                data.extend_from_slice(&segment.tuples);
            }
            data.extend_from_slice(crate::store::copy::TRAILER);
            data
        })
    }

    /// Lanes encode their readings for the `COPY`; the batch assembled from them, and each part
    /// made of them, sends exactly what encoding its readings at once makes.
    #[test]
    fn readings_encoded_by_their_lanes_follow_them_into_the_batch_and_its_parts() {
        let lanes = || {
            [(0, 4), (1, 1), (2, 3), (3, 0)].map(|(partition, count)| {
                let mut lane = BatchRows { source: 5, ..BatchRows::default() };
                for offset in 0..count {
                    lane.readings.push(reading(partition, offset));
                    lane.predictions
                        .push(Prediction { score: offset as f64, ..verdict("zscore", lane.readings.len() - 1) });
                }
                lane.predictions.push(verdict("forest", 0));
                lane.encode_for_copy();
                assert_eq!(lane.readings_copy.len(), usize::from(count > 0));
                lane
            })
        };
        let mut batch = BatchRows { source: 5, ..BatchRows::default() };
        for lane in lanes() {
            batch.append(lane);
        }
        let whole = crate::store::copy::readings_copy_data(5, &batch.readings, &batch.predictions);
        assert_eq!(copy_data_sent(&batch), Some(whole));
        let header = BatchRows { source: 5, ..BatchRows::default() };
        for writers in [1, 2, 3] {
            let parts = BatchRows::parts_of(&header, lanes().into(), writers);
            assert_eq!(parts.len(), writers);
            assert_eq!(parts.iter().map(|p| p.readings.len()).sum::<usize>(), 8);
            for part in &parts {
                let independent = crate::store::copy::readings_copy_data(5, &part.readings, &part.predictions);
                assert_eq!(copy_data_sent(part), Some(independent));
            }
        }
    }

    /// A reading added after the encoding, or a lane that was not encoded, leaves no copy that
    /// could be sent for the batch: the writer encodes the readings itself.
    #[test]
    fn a_copy_that_does_not_match_the_readings_is_never_sent() {
        let mut lane = BatchRows { readings: vec![reading(0, 0), reading(0, 1)], ..BatchRows::default() };
        lane.encode_for_copy();
        assert!(lane.copy_matches_readings());
        lane.readings.push(reading(0, 2));
        assert!(!lane.copy_matches_readings());

        let mut batch = BatchRows::default();
        let mut encoded = BatchRows { readings: vec![reading(1, 0)], ..BatchRows::default() };
        encoded.encode_for_copy();
        batch.append(encoded);
        assert!(batch.copy_matches_readings());
        batch.append(BatchRows { readings: vec![reading(2, 0)], ..BatchRows::default() });
        assert!(batch.readings_copy.is_empty());
        assert!(!batch.copy_matches_readings());
        let mut relabelled = BatchRows { readings: vec![reading(1, 0)], ..BatchRows::default() };
        relabelled.encode_for_copy();
        relabelled.readings[0].partition = 2;
        assert!(!relabelled.copy_matches_readings(), "a run's readings are all of its partition");
    }

    /// One lane or one writer: one part. A part of one lane is that lane's rows, moved, not
    /// copied; no lane, one empty part (the transaction still moves nothing and commits).
    #[test]
    fn one_lane_or_one_writer_makes_one_part_and_a_lone_lane_is_not_copied() {
        let header = BatchRows { source: 3, ..BatchRows::default() };
        let alone = lane(4, 2, 2);
        let buffer = alone.readings.as_ptr();
        let parts = BatchRows::parts_of(&header, vec![alone], 8);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].readings.as_ptr(), buffer, "a lone lane's readings are moved, not copied");
        let two = || vec![lane(0, 1, 1), lane(1, 1, 1)];
        let one = BatchRows::parts_of(&header, two(), 1);
        assert_eq!((one.len(), one[0].readings.len(), one[0].predictions.len()), (1, 2, 4));
        assert_eq!(one[0].predictions[2].reading, 1, "the second lane's verdicts moved with its reading");
        assert_eq!(BatchRows::parts_of(&header, two(), 2).len(), 2);
        let none = BatchRows::parts_of(&header, Vec::new(), 2);
        assert_eq!((none.len(), none[0].readings.len(), none[0].source), (1, 0, 3));
    }
}
