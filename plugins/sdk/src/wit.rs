//! Bindings of the WIT `iotstream:pipeline/types` interface, shared by every plugin, and the
//! conversions between them and this crate's plain Rust types.

crate::__contract_bindings!(types);

pub use self::iotstream::pipeline::types::{Readings, Sensor, SensorType as WitSensorType, StageError, StageInfo};

use crate::{Batch, PluginError, SensorIdentity, SensorType};

impl From<WitSensorType> for SensorType {
    fn from(t: WitSensorType) -> Self {
        match t {
            WitSensorType::Temperature => SensorType::Temperature,
            WitSensorType::Humidity => SensorType::Humidity,
            WitSensorType::AirQuality => SensorType::AirQuality,
            WitSensorType::Pressure => SensorType::Pressure,
            WitSensorType::Co2 => SensorType::Co2,
        }
    }
}

impl From<SensorType> for WitSensorType {
    fn from(t: SensorType) -> Self {
        match t {
            SensorType::Temperature => WitSensorType::Temperature,
            SensorType::Humidity => WitSensorType::Humidity,
            SensorType::AirQuality => WitSensorType::AirQuality,
            SensorType::Pressure => WitSensorType::Pressure,
            SensorType::Co2 => WitSensorType::Co2,
        }
    }
}

impl From<PluginError> for StageError {
    fn from(err: PluginError) -> Self {
        match err {
            PluginError::InvalidConfig(m) => StageError::InvalidConfig(m),
            PluginError::InvalidState(m) => StageError::InvalidState(m),
            PluginError::InvalidInput(m) => StageError::InvalidInput(m),
        }
    }
}

/// A `readings` record as the SDK's [`Batch`]: the columns are moved, not copied.
pub fn batch(readings: Readings) -> Batch {
    Batch {
        sensors: readings.sensors,
        timestamps_ms: readings.timestamps_ms,
        values: readings.values,
        flagged: readings.flagged,
    }
}

/// A declared sensor as its key and identity.
pub fn identity(sensor: Sensor) -> (u32, SensorIdentity) {
    let identity = SensorIdentity {
        sensor_id: sensor.sensor_id.into(),
        sensor_type: sensor.sensor_type.into(),
        location: sensor.location.into(),
    };
    (sensor.key, identity)
}

impl crate::Catalog {
    /// Declares every sensor of a `declare-sensors` call.
    pub fn declare_all(&mut self, sensors: Vec<Sensor>) {
        for (key, identity) in sensors.into_iter().map(identity) {
            self.declare(key, identity);
        }
    }
}

/// The `stage-info` of a plugin crate: its name and version come from its own manifest.
#[macro_export]
macro_rules! stage_info {
    ($state_version:expr) => {
        $crate::wit::StageInfo {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
            state_version: $state_version,
        }
    };
}
