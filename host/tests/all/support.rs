//! Helpers shared by the integration tests.

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use iotstream::reading::{Reading, SensorType};

/// The built plugin `name` (`dist/plugins/NAME.wasm`, written by `cargo xtask build`).
pub fn plugin_path(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist/plugins").join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is missing: run `cargo xtask build` first", path.display());
    path
}

/// A reading of `sensor` (type and location fixed per call) at `ms` after the epoch.
pub fn reading(sensor: &str, sensor_type: SensorType, location: &str, ms: i64, value: f64) -> Reading {
    Reading {
        sensor_id: sensor.into(),
        sensor_type,
        location: location.into(),
        value,
        timestamp: Utc.timestamp_millis_opt(ms).single().expect("valid timestamp"),
        anomaly: false,
        unit: sensor_type.default_unit().into(),
    }
}
