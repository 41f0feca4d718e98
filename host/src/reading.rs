//! Sensor readings as they arrive on Kafka: the seed's JSON format, decoded and validated.
//!
//! A message is a JSON object with `sensor_id`, `sensor_type`, `location`, `value` and `timestamp`
//! (ISO 8601, with or without an offset, taken as UTC without one; or milliseconds since the epoch),
//! and optionally `anomaly` (the source's own flag) and `unit`. Anything else that does not decode
//! or validate is a [`DecodeError`], which the pipeline dead-letters.

use std::borrow::Cow;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// The kinds of sensor iotstream knows (the WIT `sensor-type`): one type for the host and the
/// plugins, from the plugin SDK.
pub use iotstream_plugin_sdk::SensorType;

/// A decoded, valid reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The sensor's identifier (1 to 100 characters).
    pub sensor_id: String,
    /// What it measures.
    pub sensor_type: SensorType,
    /// Where it is (1 to 100 characters).
    pub location: String,
    /// The value, finite.
    pub value: f64,
    /// Event time.
    pub timestamp: DateTime<Utc>,
    /// The source's own anomaly flag (the simulator's label of an injected anomaly).
    pub anomaly: bool,
    /// The unit (at most 20 characters).
    pub unit: String,
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
    let unit = wire.unit.map_or_else(|| sensor_type.default_unit().to_owned(), Cow::into_owned);
    check_length("sensor_id", &wire.sensor_id, 1, 100)?;
    check_length("location", &wire.location, 1, 100)?;
    check_length("unit", &unit, 0, 20)?;
    Ok(Reading {
        sensor_id: wire.sensor_id.into_owned(),
        sensor_type,
        location: wire.location.into_owned(),
        value: wire.value,
        timestamp,
        anomaly: wire.anomaly,
        unit,
    })
}

fn check_length(field: &'static str, text: &str, min: usize, max: usize) -> Result<(), DecodeError> {
    if text.contains('\0') {
        return Err(DecodeError::NulCharacter(field));
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
        assert_eq!(decode(None), Err(DecodeError::Empty));
        let nul = br#"{"sensor_id":"a\u0000b","sensor_type":"co2","location":"l","value":1,"timestamp":1}"#;
        assert_eq!(decode(Some(nul)), Err(DecodeError::NulCharacter("sensor_id")));
        let nul_type = br#"{"sensor_id":"a","sensor_type":"c\u0000o","location":"l","value":1,"timestamp":1}"#;
        assert_eq!(decode(Some(nul_type)).map_err(|e| e.to_string()), Err("unknown sensor type \"co\"".to_owned()));
    }
}
