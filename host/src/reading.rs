//! Sensor readings as they arrive on Kafka: the seed's JSON format, decoded and validated.
//!
//! A message is a JSON object with `sensor_id`, `sensor_type`, `location`, `value` and `timestamp`
//! (ISO 8601, with or without an offset, taken as UTC without one; or milliseconds since the epoch),
//! and optionally `anomaly` (the source's own flag) and `unit`. Anything else that does not decode
//! or validate is a [`DecodeError`], which the pipeline dead-letters: [`decode`] checks the format
//! and what holds whatever the time (field lengths, the sensor type, a finite value within the
//! type's physical range); [`ReadingLimits::check`] adds what depends on the message and the clock
//! (its size, and an event time neither far ahead of nor far behind the message's Kafka timestamp).

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
pub use compact_str::CompactString;
use iotstream_api::DeadLetterReason;
use serde::{Deserialize, Serialize};

/// The kinds of sensor iotstream knows (the WIT `sensor-type`): one type for the host and the
/// plugins, from the plugin SDK.
pub use iotstream_plugin_sdk::SensorType;

/// A decoded, valid reading. Its texts are [`CompactString`]s: up to 24 bytes (every sensor id,
/// location and unit of the seed's fleet) they are held inline, so decoding a reading allocates
/// nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The sensor's identifier (1 to 100 characters).
    pub sensor_id: CompactString,
    /// What it measures.
    pub sensor_type: SensorType,
    /// Where it is (1 to 100 characters).
    pub location: CompactString,
    /// The value, finite.
    pub value: f64,
    /// Event time.
    pub timestamp: DateTime<Utc>,
    /// The source's own anomaly flag (the simulator's label of an injected anomaly).
    pub anomaly: bool,
    /// The unit (at most 20 characters).
    pub unit: CompactString,
}

impl Reading {
    /// Whether the value is one a sensor of its type can physically read
    /// ([`SensorType::physical_range`]). A reading outside is stored all the same, as a sensor
    /// fault: a broken or miscalibrated sensor is an alarm for the operator, not a message to drop.
    pub fn is_plausible(&self) -> bool {
        let (low, high) = self.sensor_type.physical_range();
        (low..=high).contains(&self.value)
    }
}

/// Who a sensor is: the three fields a reading names it by, and a sensor key stands for in the
/// plugins' catalog (a checkpoint stores the catalog as these, in key order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorIdentity {
    /// The sensor's identifier.
    pub sensor_id: String,
    /// What it measures.
    pub sensor_type: SensorType,
    /// Where it is.
    pub location: String,
}

/// Why a message is not a valid reading.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The message had no payload.
    #[error("empty message")]
    Empty,
    /// The payload is not JSON of the expected shape (the text names the field and position).
    #[error("malformed reading: {0}")]
    Malformed(String),
    /// `sensor_type` is not one iotstream knows.
    #[error("unknown sensor type {0:?}")]
    UnknownSensorType(String),
    /// `value` is NaN or infinite.
    #[error("value is not a finite number")]
    NotFinite,
    /// The message is larger than any reading can be.
    #[error("message of {len} bytes is larger than the {max}-byte limit")]
    Oversized {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The event time is further ahead of its Kafka timestamp than sensor clocks drift.
    #[error("timestamp {timestamp} is {ahead_s} s in the future (more than {max_s} s)")]
    FromTheFuture {
        /// The event time (RFC 3339).
        timestamp: String,
        /// How far ahead, in seconds.
        ahead_s: i64,
        /// The limit, in seconds.
        max_s: i64,
    },
    /// The event time is older than the host accepts.
    #[error("timestamp {timestamp} is {age_s} s old (more than {max_s} s)")]
    TooOld {
        /// The event time (RFC 3339).
        timestamp: String,
        /// How old, in seconds.
        age_s: i64,
        /// The limit, in seconds.
        max_s: i64,
    },
    /// `timestamp` is neither ISO 8601 nor epoch milliseconds.
    #[error("timestamp {0:?} is not ISO 8601 or epoch milliseconds")]
    BadTimestamp(String),
    /// A text field holds a NUL character, which PostgreSQL text cannot store.
    #[error("field {0} contains a NUL character")]
    NulCharacter(&'static str),
    /// A text field is empty or longer than its column.
    #[error("field {field} must be 1 to {max} characters, got {len}")]
    FieldLength {
        /// The field.
        field: &'static str,
        /// Its limit.
        max: usize,
        /// Its length.
        len: usize,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireTimestamp<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Millis(i64),
    FloatMillis(f64),
}

#[derive(Deserialize)]
struct WireReading<'a> {
    #[serde(borrow)]
    sensor_id: Cow<'a, str>,
    #[serde(borrow)]
    sensor_type: Cow<'a, str>,
    #[serde(borrow)]
    location: Cow<'a, str>,
    value: f64,
    #[serde(borrow)]
    timestamp: WireTimestamp<'a>,
    #[serde(default)]
    anomaly: bool,
    #[serde(default, borrow)]
    unit: Option<Cow<'a, str>>,
}

/// Decodes and validates one message payload.
pub fn decode(payload: Option<&[u8]>) -> Result<Reading, DecodeError> {
    let payload = payload.filter(|p| !p.is_empty()).ok_or(DecodeError::Empty)?;
    let wire: WireReading<'_> =
        serde_json::from_slice(payload).map_err(|err| DecodeError::Malformed(err.to_string()))?;
    let sensor_type = SensorType::from_name(&wire.sensor_type)
        .ok_or_else(|| DecodeError::UnknownSensorType(excerpt(&wire.sensor_type)))?;
    if !wire.value.is_finite() {
        return Err(DecodeError::NotFinite);
    }
    let timestamp = parse_timestamp(&wire.timestamp)?;
    let unit = wire
        .unit
        .map_or_else(|| CompactString::const_new(sensor_type.default_unit()), |u| CompactString::from(u.as_ref()));
    check_length("sensor_id", &wire.sensor_id, 1, 100)?;
    check_length("location", &wire.location, 1, 100)?;
    check_length("unit", &unit, 0, 20)?;
    Ok(Reading {
        sensor_id: CompactString::from(wire.sensor_id.as_ref()),
        sensor_type,
        location: CompactString::from(wire.location.as_ref()),
        value: wire.value,
        timestamp,
        anomaly: wire.anomaly,
        unit,
    })
}

impl DecodeError {
    /// The kind of refusal, to count dead letters by.
    pub fn kind(&self) -> DeadLetterReason {
        match self {
            DecodeError::Empty => DeadLetterReason::Empty,
            DecodeError::Malformed(_) => DeadLetterReason::Malformed,
            DecodeError::UnknownSensorType(_) => DeadLetterReason::UnknownSensorType,
            DecodeError::NotFinite => DeadLetterReason::NotFinite,
            DecodeError::Oversized { .. } => DeadLetterReason::Oversized,
            DecodeError::FromTheFuture { .. } => DeadLetterReason::FromTheFuture,
            DecodeError::TooOld { .. } => DeadLetterReason::TooOld,
            DecodeError::BadTimestamp(_) => DeadLetterReason::BadTimestamp,
            DecodeError::NulCharacter(_) => DeadLetterReason::NulCharacter,
            DecodeError::FieldLength { .. } => DeadLetterReason::FieldLength,
        }
    }
}

/// The limits a message is checked against besides its format: its size and how far its event
/// time may be from the time it is judged at (the pipeline passes the message's Kafka timestamp,
/// so that a replay judges it as the first run did).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadingLimits {
    /// Largest payload accepted, in bytes.
    pub max_bytes: usize,
    /// How far ahead of the time judged at an event time may be.
    pub max_future: Duration,
    /// How far behind it an event time may be (`None`: no limit, for backfills).
    pub max_age: Option<Duration>,
}

impl Default for ReadingLimits {
    /// 16 KiB (a reading is about 200 bytes; a message fifty times larger is not one), 5 minutes
    /// ahead (sensor clocks drift seconds; minutes mean a wrong clock or time zone), 30 days old
    /// (far beyond any reconnect buffer of a sensor gateway; set higher to backfill history).
    fn default() -> Self {
        ReadingLimits {
            max_bytes: 16 * 1024,
            max_future: Duration::from_secs(300),
            max_age: Some(Duration::from_secs(30 * 24 * 3600)),
        }
    }
}

impl ReadingLimits {
    /// Decodes and validates `payload` as judged at `now` (its Kafka timestamp, in the pipeline).
    pub fn check(&self, payload: Option<&[u8]>, now: DateTime<Utc>) -> Result<Reading, DecodeError> {
        let len = payload.map_or(0, <[u8]>::len);
        if len > self.max_bytes {
            return Err(DecodeError::Oversized { len, max: self.max_bytes });
        }
        let reading = decode(payload)?;
        let ahead_ms = (reading.timestamp - now).num_milliseconds();
        let timestamp = || reading.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        if ahead_ms > millis(self.max_future) {
            return Err(DecodeError::FromTheFuture {
                timestamp: timestamp(),
                ahead_s: ahead_ms / 1000,
                max_s: self.max_future.as_secs() as i64,
            });
        }
        if let Some(max_age) = self.max_age
            && -ahead_ms > millis(max_age)
        {
            return Err(DecodeError::TooOld {
                timestamp: timestamp(),
                age_s: -ahead_ms / 1000,
                max_s: max_age.as_secs() as i64,
            });
        }
        Ok(reading)
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn check_length(field: &'static str, text: &str, min: usize, max: usize) -> Result<(), DecodeError> {
    if text.contains('\0') {
        return Err(DecodeError::NulCharacter(field));
    }
    // A character takes one to four bytes: a text of at most `max` bytes and at least `4 × min` is
    // within the bounds without counting its characters (the common case, read for every reading).
    if text.len() <= max && text.len() >= min.saturating_mul(4) {
        return Ok(());
    }
    let len = text.chars().count();
    if len < min || len > max { Err(DecodeError::FieldLength { field, max, len }) } else { Ok(()) }
}

fn parse_timestamp(raw: &WireTimestamp<'_>) -> Result<DateTime<Utc>, DecodeError> {
    let parsed = match raw {
        WireTimestamp::Text(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .ok()
            .or_else(|| NaiveDateTime::from_str(text).ok().map(|naive| Utc.from_utc_datetime(&naive))),
        WireTimestamp::Millis(ms) => Utc.timestamp_millis_opt(*ms).single(),
        WireTimestamp::FloatMillis(ms) if ms.is_finite() => Utc.timestamp_millis_opt(*ms as i64).single(),
        WireTimestamp::FloatMillis(_) => None,
    };
    parsed.ok_or_else(|| {
        DecodeError::BadTimestamp(match raw {
            WireTimestamp::Text(text) => excerpt(text),
            WireTimestamp::Millis(ms) => ms.to_string(),
            WireTimestamp::FloatMillis(ms) => ms.to_string(),
        })
    })
}

/// At most 50 characters of untrusted text for an error message, without NUL characters (the
/// message is stored in PostgreSQL text).
fn excerpt(text: &str) -> String {
    text.chars().filter(|c| *c != '\0').take(50).collect()
}

/// Encodes a reading in the seed's format (what the simulator produces).
pub fn encode(reading: &Reading) -> Vec<u8> {
    #[derive(Serialize)]
    struct Wire<'a> {
        sensor_id: &'a str,
        sensor_type: SensorType,
        location: &'a str,
        value: f64,
        timestamp: String,
        anomaly: bool,
        unit: &'a str,
    }
    let wire = Wire {
        sensor_id: &reading.sensor_id,
        sensor_type: reading.sensor_type,
        location: &reading.location,
        value: reading.value,
        timestamp: reading.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        anomaly: reading.anomaly,
        unit: &reading.unit,
    };
    // A struct of strings, numbers and booleans always serialises.
    serde_json::to_vec(&wire).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_seed_format_with_naive_and_zoned_timestamps() {
        let naive = br#"{"sensor_id":"temp_001","sensor_type":"temperature","location":"server_room_1",
            "value":22.31,"timestamp":"2026-11-25T10:00:00.250","anomaly":false,"unit":"\u00b0C"}"#;
        let r = decode(Some(naive)).expect("valid");
        assert_eq!(r.sensor_type, SensorType::Temperature);
        assert_eq!(r.timestamp.timestamp_millis(), 1_795_600_800_250);
        assert_eq!(r.unit, "°C");
        let zoned = br#"{"sensor_id":"c","sensor_type":"co2","location":"lab_1","value":1,"timestamp":"2026-11-25T11:00:00.250+01:00"}"#;
        let r = decode(Some(zoned)).expect("valid");
        assert_eq!(r.timestamp.timestamp_millis(), 1_795_600_800_250);
        assert_eq!((r.anomaly, r.unit.as_str()), (false, "ppm"));
        let millis = br#"{"sensor_id":"c","sensor_type":"co2","location":"lab_1","value":1,"timestamp":1795600800250}"#;
        assert_eq!(decode(Some(millis)).map(|r| r.timestamp.timestamp_millis()), Ok(1_795_600_800_250));
    }

    #[test]
    fn encode_then_decode_is_identity() {
        let reading = Reading {
            sensor_id: "hum_7".into(),
            sensor_type: SensorType::Humidity,
            location: "warehouse_2".into(),
            value: 47.25,
            timestamp: Utc.timestamp_millis_opt(1_795_600_800_123).single().expect("valid"),
            anomaly: true,
            unit: "%".into(),
        };
        assert_eq!(decode(Some(&encode(&reading))), Ok(reading));
    }

    #[test]
    fn bad_messages_say_why() {
        let cases: [(&[u8], &str); 7] = [
            (b"", "empty message"),
            (b"not json", "malformed reading: expected ident at line 1 column 2"),
            (
                br#"{"sensor_id":"a","sensor_type":"co2","location":"l","timestamp":1}"#,
                "malformed reading: missing field `value` at line 1 column 66",
            ),
            (
                br#"{"sensor_id":"a","sensor_type":"co2","location":"l","value":"1","timestamp":1}"#,
                "malformed reading: invalid type: string \"1\", expected f64 at line 1 column 63",
            ),
            (
                br#"{"sensor_id":"a","sensor_type":"co2","location":"l","value":NaN,"timestamp":1}"#,
                "malformed reading: expected value at line 1 column 61",
            ),
            (
                br#"{"sensor_id":"a","sensor_type":"radon","location":"l","value":1,"timestamp":1}"#,
                "unknown sensor type \"radon\"",
            ),
            (
                br#"{"sensor_id":"","sensor_type":"co2","location":"l","value":1,"timestamp":"yesterday"}"#,
                "timestamp \"yesterday\" is not ISO 8601 or epoch milliseconds",
            ),
        ];
        for (payload, expected) in cases {
            let err = decode(Some(payload)).expect_err("invalid");
            assert_eq!(err.to_string(), expected);
        }
        let long_id = format!(
            r#"{{"sensor_id":"{}","sensor_type":"co2","location":"l","value":1,"timestamp":1}}"#,
            "x".repeat(101)
        );
        assert_eq!(
            decode(Some(long_id.as_bytes())),
            Err(DecodeError::FieldLength { field: "sensor_id", max: 100, len: 101 })
        );
        // Lengths are characters, not bytes: 100 four-byte characters fit, 101 one-byte ones do not,
        // and an empty id is refused.
        let id = |sensor_id: &str| {
            format!(r#"{{"sensor_id":"{sensor_id}","sensor_type":"co2","location":"l","value":1,"timestamp":1}}"#)
        };
        assert_eq!(decode(Some(id(&"🌡".repeat(100)).as_bytes())).map(|r| r.sensor_id.chars().count()), Ok(100));
        assert_eq!(
            decode(Some(id(&"🌡".repeat(101)).as_bytes())),
            Err(DecodeError::FieldLength { field: "sensor_id", max: 100, len: 101 })
        );
        assert_eq!(decode(Some(id(&format!("{}é", "x".repeat(99))).as_bytes())).map(|r| r.sensor_id.len()), Ok(101));
        assert_eq!(
            decode(Some(id("").as_bytes())),
            Err(DecodeError::FieldLength { field: "sensor_id", max: 100, len: 0 })
        );
        assert_eq!(decode(None), Err(DecodeError::Empty));
        let nul = br#"{"sensor_id":"a\u0000b","sensor_type":"co2","location":"l","value":1,"timestamp":1}"#;
        assert_eq!(decode(Some(nul)), Err(DecodeError::NulCharacter("sensor_id")));
        let nul_type = br#"{"sensor_id":"a","sensor_type":"c\u0000o","location":"l","value":1,"timestamp":1}"#;
        assert_eq!(decode(Some(nul_type)).map_err(|e| e.to_string()), Err("unknown sensor type \"co\"".to_owned()));
    }

    #[test]
    fn limits_refuse_out_of_range_oversized_future_and_old_readings() {
        let now = Utc.timestamp_millis_opt(1_795_600_800_000).single().expect("valid");
        let at = |ms: i64, value: f64| {
            format!(r#"{{"sensor_id":"h","sensor_type":"humidity","location":"l","value":{value},"timestamp":{ms}}}"#)
        };
        let limits = ReadingLimits::default();
        let check = |payload: &str| limits.check(Some(payload.as_bytes()), now).map_err(|e| e.to_string());
        let now_ms = now.timestamp_millis();
        assert_eq!(check(&at(now_ms, 100.0)).map(|r| r.value), Ok(100.0));
        // Outside the physical range: a reading all the same (a sensor fault, not a bad message).
        let fault = limits.check(Some(at(now_ms, 100.5).as_bytes()), now).expect("a reading");
        assert_eq!((fault.value, fault.is_plausible()), (100.5, false));
        assert!(!limits.check(Some(at(now_ms, -0.01).as_bytes()), now).expect("a reading").is_plausible());
        assert!(check(&at(now_ms, 100.0)).is_ok_and(|r| r.is_plausible()));
        // 5 minutes ahead is accepted, a second more is not.
        assert!(check(&at(now_ms + 300_000, 1.0)).is_ok());
        assert_eq!(
            check(&at(now_ms + 301_000, 1.0)),
            Err("timestamp 2026-11-25T10:05:01.000Z is 301 s in the future (more than 300 s)".to_owned())
        );
        let thirty_days_ms = 30 * 24 * 3600 * 1000;
        assert!(check(&at(now_ms - thirty_days_ms, 1.0)).is_ok());
        assert_eq!(
            check(&at(now_ms - thirty_days_ms - 1000, 1.0)),
            Err("timestamp 2026-10-26T09:59:59.000Z is 2592001 s old (more than 2592000 s)".to_owned())
        );
        let backfill = ReadingLimits { max_age: None, ..limits };
        assert!(backfill.check(Some(at(0, 1.0).as_bytes()), now).is_ok());
        let padded = format!("{}{}", at(now_ms, 1.0), " ".repeat(16 * 1024));
        assert_eq!(
            check(&padded),
            Err(format!("message of {} bytes is larger than the 16384-byte limit", padded.len()))
        );
    }
}
