//! Host bindings of the WIT contract, in each version the host runs: one `bindgen!` per stage world
//! and version, the worlds of a version sharing its `types` interface.
//!
//! The host's own types are version 0.1.0's (`wit/v0.1.0/pipeline.wit`): a [`Reading`] and a
//! [`Detection`] per reading, which the pipeline builds and stores. A stage of version 0.2.0
//! (`wit/pipeline.wit`, the SDK's) takes a batch as columns and answers in columns; [`columnar`]
//! holds its bindings, and `stage.rs` converts at the call.

#![allow(missing_docs, reason = "generated from the documented WIT")]

/// The `detector-plugin` world of version 0.1.0.
pub mod detector {
    wasmtime::component::bindgen!({ path: "../wit/v0.1.0", world: "detector-plugin", additional_derives: [PartialEq] });
}

/// The `aggregator-plugin` world of version 0.1.0.
pub mod aggregator {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "aggregator-plugin",
        additional_derives: [PartialEq],
        with: { "iotstream:pipeline/types": super::detector::iotstream::pipeline::types },
    });
}

/// The worlds of version 0.2.0: batches as columns.
pub mod columnar {
    /// Its `detector-plugin` world.
    pub mod detector {
        wasmtime::component::bindgen!({ path: "../wit", world: "detector-plugin" });
    }

    /// Its `aggregator-plugin` world.
    pub mod aggregator {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "aggregator-plugin",
            with: { "iotstream:pipeline/types": super::detector::iotstream::pipeline::types },
        });
    }

    pub use aggregator::exports::iotstream::pipeline::aggregator::WindowAggregate;
    pub use detector::exports::iotstream::pipeline::detector::{Detections, ModelInfo, ModelRun};
    pub use detector::iotstream::pipeline::types::{Readings, Sensor, SensorType, StageError, StageInfo};

    /// A batch as its columns: one pass over the host's readings.
    pub fn readings(batch: &[super::Reading]) -> Readings {
        let mut columns = Readings {
            sensors: Vec::with_capacity(batch.len()),
            timestamps_ms: Vec::with_capacity(batch.len()),
            values: Vec::with_capacity(batch.len()),
            flagged: Vec::new(),
        };
        for (at, reading) in (0_u32..).zip(batch) {
            columns.sensors.push(reading.sensor);
            columns.timestamps_ms.push(reading.timestamp_ms);
            columns.values.push(reading.value);
            if reading.flagged {
                columns.flagged.push(at);
            }
        }
        columns
    }

    /// A plugin SDK stage's answer as the host lifts it from a `.wasm` (the native-parity tests read
    /// a stage called natively through the host's own checks).
    impl From<iotstream_plugin_sdk::DetectionColumns> for Detections {
        fn from(columns: iotstream_plugin_sdk::DetectionColumns) -> Self {
            Detections {
                scores: columns.scores,
                anomalies: columns.anomalies,
                warming_up: columns.warming_up,
                models: columns
                    .models
                    .into_iter()
                    .map(|(first, model)| ModelRun {
                        first,
                        model: model.map(|m| ModelInfo {
                            generation: m.generation,
                            trained_at_ms: m.trained_at_ms,
                            training_rows: m.training_rows,
                        }),
                    })
                    .collect(),
            }
        }
    }

    /// The columns the host lowers into a `.wasm`, as the plugin SDK lifts them on the other side:
    /// a plugin's SDK stage called natively as its `.wasm` is called (`bench-plugins`' native
    /// stage, the native-parity tests).
    impl From<Readings> for iotstream_plugin_sdk::Batch {
        fn from(columns: Readings) -> Self {
            iotstream_plugin_sdk::Batch {
                sensors: columns.sensors,
                timestamps_ms: columns.timestamps_ms,
                values: columns.values,
                flagged: columns.flagged,
            }
        }
    }

    /// Sensors to declare, in this version's type.
    pub fn sensors(declared: &[super::Sensor]) -> Vec<Sensor> {
        declared
            .iter()
            .map(|s| Sensor {
                key: s.key,
                sensor_id: s.sensor_id.clone(),
                sensor_type: crate::reading::SensorType::from(s.sensor_type).into(),
                location: s.location.clone(),
            })
            .collect()
    }

    impl From<StageInfo> for super::StageInfo {
        fn from(info: StageInfo) -> Self {
            super::StageInfo { name: info.name, version: info.version, state_version: info.state_version }
        }
    }

    impl From<StageError> for super::StageError {
        fn from(err: StageError) -> Self {
            match err {
                StageError::InvalidConfig(m) => super::StageError::InvalidConfig(m),
                StageError::InvalidState(m) => super::StageError::InvalidState(m),
                StageError::InvalidInput(m) => super::StageError::InvalidInput(m),
            }
        }
    }

    impl From<ModelInfo> for super::ModelInfo {
        fn from(m: ModelInfo) -> Self {
            super::ModelInfo {
                generation: m.generation,
                trained_at_ms: m.trained_at_ms,
                training_rows: m.training_rows,
            }
        }
    }

    impl From<WindowAggregate> for super::WindowAggregate {
        fn from(a: WindowAggregate) -> Self {
            super::WindowAggregate {
                window_start_ms: a.window_start_ms,
                window_end_ms: a.window_end_ms,
                location: a.location,
                sensor_type: crate::reading::SensorType::from(a.sensor_type).into(),
                count: a.count,
                avg: a.avg,
                min: a.min,
                max: a.max,
                stddev: a.stddev,
                anomaly_count: a.anomaly_count,
                revision: a.revision,
                late_count: a.late_count,
            }
        }
    }
}

pub use aggregator::exports::iotstream::pipeline::aggregator::WindowAggregate;
pub use detector::exports::iotstream::pipeline::detector::{Detection, ModelInfo, Verdict};
pub use detector::iotstream::pipeline::types::{Reading, Sensor, SensorType, StageError, StageInfo};

/// A version of the contract the host runs: a stage is built against one, and the host calls it
/// through that version's bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContractVersion {
    /// 0.1.0: readings and detections as lists of records.
    Records,
    /// 0.2.0, the SDK's (`iotstream_plugin_sdk::CONTRACT_VERSION`): batches as columns.
    Columns,
}

impl ContractVersion {
    /// Every version the host runs, oldest first.
    pub const ALL: [ContractVersion; 2] = [ContractVersion::Records, ContractVersion::Columns];

    /// Its semver, as the WIT package names it.
    pub fn number(self) -> &'static str {
        match self {
            ContractVersion::Records => "0.1.0",
            // The SDK's tests hold this to the package line of `wit/pipeline.wit`.
            ContractVersion::Columns => iotstream_plugin_sdk::contract_version!(),
        }
    }

    /// Export name of the stage interface of `kind` in this version.
    pub fn export(self, kind: super::StageKind) -> String {
        let interface = match kind {
            super::StageKind::Detector => "detector",
            super::StageKind::Aggregator => "aggregator",
        };
        format!("iotstream:pipeline/{interface}@{}", self.number())
    }

    /// The version and kind of the stage interface a component exports as `name`, if the host runs it.
    pub fn of_export(name: &str) -> Option<(ContractVersion, super::StageKind)> {
        ContractVersion::ALL.into_iter().find_map(|version| {
            [super::StageKind::Detector, super::StageKind::Aggregator]
                .into_iter()
                .find(|&kind| version.export(kind) == name)
                .map(|kind| (version, kind))
        })
    }

    /// The versions the host runs, for messages: `0.1.0 and 0.2.0`.
    pub fn all_numbers() -> String {
        let numbers: Vec<&str> = ContractVersion::ALL.iter().map(|v| v.number()).collect();
        numbers.join(" and ")
    }
}

/// `From` both ways between the host's `SensorType` and a contract version's generated one.
macro_rules! sensor_type_conversions {
    ($wit:ty) => {
        impl From<crate::reading::SensorType> for $wit {
            fn from(t: crate::reading::SensorType) -> Self {
                use crate::reading::SensorType as S;
                match t {
                    S::Temperature => Self::Temperature,
                    S::Humidity => Self::Humidity,
                    S::AirQuality => Self::AirQuality,
                    S::Pressure => Self::Pressure,
                    S::Co2 => Self::Co2,
                }
            }
        }

        impl From<$wit> for crate::reading::SensorType {
            fn from(t: $wit) -> Self {
                use crate::reading::SensorType as S;
                match t {
                    <$wit>::Temperature => S::Temperature,
                    <$wit>::Humidity => S::Humidity,
                    <$wit>::AirQuality => S::AirQuality,
                    <$wit>::Pressure => S::Pressure,
                    <$wit>::Co2 => S::Co2,
                }
            }
        }
    };
}

sensor_type_conversions!(SensorType);
sensor_type_conversions!(columnar::SensorType);

/// A `stage-error` as one line of text.
pub fn describe(err: &StageError) -> String {
    match err {
        StageError::InvalidConfig(m) => format!("invalid configuration: {m}"),
        StageError::InvalidState(m) => format!("invalid state: {m}"),
        StageError::InvalidInput(m) => format!("invalid input: {m}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::StageKind;

    #[test]
    fn an_export_names_its_version_and_kind_and_only_the_host_s_versions_are_known() {
        assert_eq!(
            ContractVersion::of_export("iotstream:pipeline/detector@0.1.0"),
            Some((ContractVersion::Records, StageKind::Detector))
        );
        assert_eq!(
            ContractVersion::of_export("iotstream:pipeline/aggregator@0.2.0"),
            Some((ContractVersion::Columns, StageKind::Aggregator))
        );
        for unknown in ["iotstream:pipeline/detector@0.3.0", "iotstream:pipeline/types@0.2.0", "wasi:cli/run@0.2.0"] {
            assert_eq!(ContractVersion::of_export(unknown), None, "{unknown}");
        }
        assert_eq!(ContractVersion::Columns.number(), iotstream_plugin_sdk::CONTRACT_VERSION);
        assert_eq!(ContractVersion::all_numbers(), "0.1.0 and 0.2.0");
    }

    #[test]
    fn the_released_version_stays_where_its_bindings_are_made_from() {
        let wit = include_str!("../../../wit/v0.1.0/pipeline.wit");
        let packages: Vec<&str> = wit.lines().filter_map(|line| line.trim().strip_prefix("package ")).collect();
        assert_eq!(packages, ["iotstream:pipeline@0.1.0;"]);
        assert!(wit.contains("detect: func(readings: list<reading>) -> result<list<detection>, stage-error>;"));
    }

    #[test]
    fn a_batch_becomes_columns_with_the_flagged_readings_indices() {
        let reading = |sensor, timestamp_ms, value, flagged| Reading { sensor, timestamp_ms, value, flagged };
        let batch = [reading(2, 10, 1.5, false), reading(0, 20, -2.5, true), reading(2, 5, 0.0, true)];
        let columns = columnar::readings(&batch);
        assert_eq!(
            (columns.sensors, columns.timestamps_ms, columns.values, columns.flagged),
            (vec![2, 0, 2], vec![10, 20, 5], vec![1.5, -2.5, 0.0], vec![1, 2])
        );
    }
}
