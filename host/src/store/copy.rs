//! New readings into `sensor_readings` with binary `COPY`, not `INSERT`.
//!
//! Most batches hold no stored message: every message at or past its partition's stored position
//! when this host was given the partition (and the fence that waited for the previous owner's
//! transactions) is new. Those batches ([`crate::store::BatchRows::fresh`]) copy their readings in
//! PostgreSQL's binary `COPY` format, which the server reads without parsing text; measured in
//! isolation (200,000 readings, three verdicts each, every index of the table), `COPY` took about
//! 75% of an `INSERT ... SELECT FROM UNNEST`'s time.
//!
//! Nothing relies on the hint being right: the batch's transaction reads its partitions' stored
//! positions first (`writer::StoredPositions`), and a batch taken for fresh that holds a stored
//! message after all (a retry after a commit whose answer was lost) inserts only the messages
//! past them: a second path, never a duplicate or a refused reading.

use chrono::{DateTime, Utc};

use crate::store::models::BatchModels;
use crate::store::rows::{Prediction, StoredReading, VerdictsByReading, write_verdicts_json};

/// The statement; the columns in the order [`readings_copy_data`] writes each row's fields.
pub(super) const COPY_READINGS: &str = "COPY sensor_readings (sensor_id, sensor_type, location, value, timestamp, \
     anomaly, unit, flagged, kafka_partition, kafka_offset, verdicts, source_id) FROM STDIN (FORMAT binary)";

/// Fields a row of [`COPY_READINGS`] has.
const FIELDS: i16 = 12;

/// The binary format's signature, then its flags and header extension length (both 0).
pub(super) const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The end of the data: a field count of -1.
pub(super) const TRAILER: &[u8] = &(-1i16).to_be_bytes();

/// PostgreSQL's epoch (2000-01-01 UTC) in Unix microseconds: a binary `timestamptz` counts from it.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The `COPY` data of `readings` (with `predictions` the verdicts, each naming its reading by index),
/// all of it: header, one tuple per reading, trailer.
pub(super) fn readings_copy_data(source: i16, readings: &[StoredReading], predictions: &[Prediction]) -> Vec<u8> {
    let text_bytes: usize =
        readings.iter().map(|r| r.reading.sensor_id.len() + r.reading.location.len() + r.reading.unit.len() + 16).sum();
    let mut out = Vec::with_capacity(HEADER.len() + TRAILER.len() + text_bytes + readings.len() * 90);
    out.extend_from_slice(HEADER);
    let verdicts = VerdictsByReading::new(readings.len(), predictions);
    let models = BatchModels::of(predictions);
    for (i, stored) in readings.iter().enumerate() {
        encode_tuple(&mut out, source, stored, predictions, &models.ids, verdicts.of(i));
    }
    out.extend_from_slice(TRAILER);
    out
}

/// Appends one reading's tuple to `out`: its verdicts are `predictions[i]` for each `i` in
/// `verdicts` (`model_ids[i]` the id of its model), written as JSON straight into the tuple.
pub(crate) fn encode_tuple(
    out: &mut Vec<u8>,
    source: i16,
    stored: &StoredReading,
    predictions: &[Prediction],
    model_ids: &[i64],
    verdicts: &[usize],
) {
    let r = &stored.reading;
    out.extend_from_slice(&FIELDS.to_be_bytes());
    field(out, r.sensor_id.as_bytes());
    field(out, r.sensor_type.as_str().as_bytes());
    field(out, r.location.as_bytes());
    field(out, &r.value.to_bits().to_be_bytes());
    field(out, &postgres_micros(r.timestamp).to_be_bytes());
    field(out, &[u8::from(r.anomaly)]);
    field(out, r.unit.as_bytes());
    field(out, &[u8::from(stored.flagged)]);
    field(out, &stored.partition.to_be_bytes());
    field(out, &stored.offset.to_be_bytes());
    // The verdicts' length is known once they are written: four bytes reserved, then filled in.
    let length_at = out.len();
    out.extend_from_slice(&[0; 4]);
    write_verdicts_json(out, predictions, model_ids, verdicts);
    let len = i32::try_from(out.len() - length_at - 4).unwrap_or(i32::MAX);
    out[length_at..length_at + 4].copy_from_slice(&len.to_be_bytes());
    field(out, &source.to_be_bytes());
}

/// One field: its length, then its bytes.
fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    // Every field is far below 2 GiB: readings' texts are validated to their columns' lengths and
    // a reading's verdicts are bounded by the plugins' output limits.
    let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A binary `timestamptz`: microseconds since PostgreSQL's epoch. A time past the range of `i64`
/// microseconds saturates, and the server refuses it as out of range, as it would the `INSERT`'s.
fn postgres_micros(t: DateTime<Utc>) -> i64 {
    let micros = t.timestamp().saturating_mul(1_000_000).saturating_add(i64::from(t.timestamp_subsec_micros()));
    micros.saturating_sub(POSTGRES_EPOCH_MICROS)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;
    use crate::reading::{Reading, SensorType};

    fn stored(sensor_id: &str, micros_after_2000: i64) -> StoredReading {
        let at = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single().expect("a valid time")
            + chrono::Duration::microseconds(micros_after_2000);
        StoredReading {
            reading: Reading {
                sensor_id: sensor_id.into(),
                sensor_type: SensorType::Humidity,
                location: "lab".into(),
                value: 1.5,
                timestamp: at,
                anomaly: true,
                unit: "%".into(),
            },
            flagged: false,
            partition: 3,
            offset: 258,
        }
    }

    fn verdict(reading: usize) -> Prediction {
        Prediction {
            detector: "z".into(),
            reading,
            verdict: iotstream_api::Verdict::Normal,
            score: 0.5,
            detector_version: "1".into(),
            model: None,
        }
    }

    #[test]
    fn one_reading_is_laid_out_as_the_binary_copy_format_says() {
        let data = readings_copy_data(7, &[stored("s1", 1)], &[verdict(0)]);
        let mut expected: Vec<u8> = b"PGCOPY\n\xff\r\n\0".to_vec();
        expected.extend([0, 0, 0, 0, 0, 0, 0, 0]); // flags, header extension length
        expected.extend([0, 12]); // fields
        expected.extend([0, 0, 0, 2, b's', b'1']);
        expected.extend([0, 0, 0, 8]);
        expected.extend(b"humidity");
        expected.extend([0, 0, 0, 3, b'l', b'a', b'b']);
        expected.extend([0, 0, 0, 8, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]); // 1.5
        expected.extend([0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]); // one microsecond past 2000
        expected.extend([0, 0, 0, 1, 1]); // anomaly
        expected.extend([0, 0, 0, 1, b'%']);
        expected.extend([0, 0, 0, 1, 0]); // flagged
        expected.extend([0, 0, 0, 4, 0, 0, 0, 3]);
        expected.extend([0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 1, 2]); // offset 258
        // The verdict names its model, detector "z" version "1", by id (see `store::models`).
        let model = crate::store::models::DetectorModel { detector: "z", version: "1", lineage: None }.id();
        let verdicts = format!("[[{model},1,0.5]]");
        expected.extend((verdicts.len() as i32).to_be_bytes());
        expected.extend(verdicts.as_bytes());
        expected.extend([0, 0, 0, 2, 0, 7]); // source
        expected.extend([0xff, 0xff]); // trailer
        assert_eq!(data, expected);
    }

    #[test]
    fn times_before_postgres_epoch_are_negative_and_missing_verdicts_are_an_empty_array() {
        let data = readings_copy_data(1, &[stored("s", -1_500_000)], &[verdict(1)]);
        let start = HEADER.len() + 2 + (4 + 1) + (4 + 8) + (4 + 3) + (4 + 8) + 4;
        assert_eq!(data[start..start + 8], (-1_500_000i64).to_be_bytes());
        let tail = &data[data.len() - 2 - 6 - 6..data.len() - 2 - 6];
        assert_eq!(tail, [0, 0, 0, 2, b'[', b']']);
    }
}
