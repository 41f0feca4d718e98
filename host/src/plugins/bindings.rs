//! Host bindings of the WIT contract (`wit/pipeline.wit`): one `bindgen!` per stage world, sharing
//! the `types` interface so a `Reading` is one Rust type whichever stage it goes to.

#![allow(missing_docs, reason = "generated from the documented WIT")]

/// The `detector-plugin` world.
pub mod detector {
    wasmtime::component::bindgen!({ path: "../wit", world: "detector-plugin", additional_derives: [PartialEq] });
}

/// The `aggregator-plugin` world.
pub mod aggregator {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "aggregator-plugin",
        additional_derives: [PartialEq],
        with: { "iotstream:pipeline/types": super::detector::iotstream::pipeline::types },
    });
}

pub use aggregator::exports::iotstream::pipeline::aggregator::WindowAggregate;
pub use detector::exports::iotstream::pipeline::detector::{Detection, ModelInfo, Verdict};
pub use detector::iotstream::pipeline::types::{Reading, Sensor, SensorType, StageError, StageInfo};

// The contract's names, with the version the SDK names (`iotstream_plugin_sdk::contract`): the
// bindings above are generated from the same WIT, and the SDK's tests hold that version to it.
/// The WIT package every stage must export from; checked at load.
pub const PACKAGE: &str = concat!("iotstream:pipeline@", iotstream_plugin_sdk::contract_version!());
/// Export name of the detector interface.
pub const DETECTOR_EXPORT: &str = concat!("iotstream:pipeline/detector@", iotstream_plugin_sdk::contract_version!());
/// Export name of the aggregator interface.
pub const AGGREGATOR_EXPORT: &str =
    concat!("iotstream:pipeline/aggregator@", iotstream_plugin_sdk::contract_version!());

impl From<crate::reading::SensorType> for SensorType {
    fn from(t: crate::reading::SensorType) -> Self {
        use crate::reading::SensorType as S;
        match t {
            S::Temperature => SensorType::Temperature,
            S::Humidity => SensorType::Humidity,
            S::AirQuality => SensorType::AirQuality,
            S::Pressure => SensorType::Pressure,
            S::Co2 => SensorType::Co2,
        }
    }
}

impl From<SensorType> for crate::reading::SensorType {
    fn from(t: SensorType) -> Self {
        use crate::reading::SensorType as S;
        match t {
            SensorType::Temperature => S::Temperature,
            SensorType::Humidity => S::Humidity,
            SensorType::AirQuality => S::AirQuality,
            SensorType::Pressure => S::Pressure,
            SensorType::Co2 => S::Co2,
        }
    }
}

/// A `stage-error` as one line of text.
pub fn describe(err: &StageError) -> String {
    match err {
        StageError::InvalidConfig(m) => format!("invalid configuration: {m}"),
        StageError::InvalidState(m) => format!("invalid state: {m}"),
        StageError::InvalidInput(m) => format!("invalid input: {m}"),
    }
}
