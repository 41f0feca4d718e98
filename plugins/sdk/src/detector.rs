//! A detector is one trait implementation: [`Detector`] is the algorithm, [`DetectorStage`] the
//! per-instance plumbing every detector shares (sensor catalog, batch loop, state encoding), and
//! [`export_detector!`](crate::export_detector) turns the pair into a component exporting the WIT
//! `detector` interface.

use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{
    Batch, Catalog, DetectionColumns, PluginError, ResolvedBatch, SensorIdentity, decode_state, encode_state,
    parse_config,
};

/// A detector's judgement of one reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Judgement {
    /// Not enough history to judge.
    WarmingUp,
    /// Judged.
    Scored {
        /// How anomalous, finite, larger is more.
        score: f64,
        /// Whether it is an anomaly.
        anomaly: bool,
    },
}

/// Which trained model judged a reading (the WIT `model-info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelInfo {
    /// 1 for the first model of its scope, counting up with each retraining.
    pub generation: u32,
    /// Event time of the newest reading it was trained with.
    pub trained_at_ms: i64,
    /// Rows it was trained on.
    pub training_rows: u32,
}

/// The algorithm of a detector plugin.
pub trait Detector: Sized {
    /// Its configuration (`#[serde(default, deny_unknown_fields)]`).
    type Config: DeserializeOwned;
    /// Its complete state, keyed by sensor identity (never by sensor key).
    type State: Serialize + DeserializeOwned;
    /// Version of the state format; bump it whenever `State` changes shape.
    const STATE_VERSION: u32;

    /// Creates the detector, or says which configuration value is wrong.
    fn create(config: Self::Config) -> Result<Self, String>;
    /// Judges one reading of `sensor`, updating the state.
    fn judge(&mut self, sensor: &SensorIdentity, timestamp_ms: i64, value: f64) -> Judgement;
    /// The model that judges `sensor`'s readings now, for a detector that trains models (asked right
    /// after each `judge`, so it names the model that gave that judgement).
    fn model(&self, _sensor: &SensorIdentity) -> Option<ModelInfo> {
        None
    }
    /// Judges a whole batch, in order, writing one judgement per reading, with the model behind
    /// it, into `out` ([`DetectionColumns::push`]). The default asks [`judge`](Detector::judge)
    /// and [`model`](Detector::model) reading by reading; override it for an algorithm that scores
    /// a batch at once, or that must refuse a batch (the `Err` becomes the WIT `invalid-input`, and
    /// a refused batch must leave the state as it was; what it wrote into `out` is dropped).
    fn judge_batch(&mut self, readings: ResolvedBatch<'_>, out: &mut DetectionColumns) -> Result<(), String> {
        for (sensor, timestamp_ms, value) in readings.iter() {
            let judgement = self.judge(sensor, timestamp_ms, value);
            out.push(judgement, self.model(sensor));
        }
        Ok(())
    }
    /// The state, for export.
    fn state(&self) -> &Self::State;
    /// Replaces the state.
    fn restore(&mut self, state: Self::State);
}

/// One running detector with its sensor catalog: what a WIT `detector-stage` resource holds.
pub struct DetectorStage<D> {
    catalog: RefCell<Catalog>,
    detector: RefCell<D>,
}

impl<D: Detector> DetectorStage<D> {
    /// Parses the configuration and creates the detector.
    pub fn create(config: &str) -> Result<Self, PluginError> {
        let config: D::Config = parse_config(config)?;
        let detector = D::create(config).map_err(PluginError::InvalidConfig)?;
        Ok(DetectorStage { catalog: RefCell::default(), detector: RefCell::new(detector) })
    }

    /// Declares sensor keys.
    pub fn declare(&self, sensors: impl IntoIterator<Item = (u32, SensorIdentity)>) {
        let mut catalog = self.catalog.borrow_mut();
        for (key, identity) in sensors {
            catalog.declare(key, identity);
        }
    }

    /// Judges a batch, in order, with the model behind each judgement, as the WIT `detections`
    /// columns. A batch of the wrong shape or with an undeclared key is refused whole, before any
    /// state changes.
    pub fn detect(&self, batch: &Batch) -> Result<DetectionColumns, PluginError> {
        let catalog = self.catalog.borrow();
        let readings = ResolvedBatch::new(&catalog, batch)?;
        let mut out = DetectionColumns::with_capacity(batch.len());
        self.detector.borrow_mut().judge_batch(readings, &mut out).map_err(PluginError::InvalidInput)?;
        Ok(out)
    }

    /// The state in the versioned byte format.
    pub fn export_state(&self) -> Vec<u8> {
        encode_state(D::STATE_VERSION, self.detector.borrow().state())
    }

    /// Restores exported state and forgets every sensor key.
    pub fn import_state(&self, bytes: &[u8]) -> Result<(), PluginError> {
        // The state's names are read into a fresh pool, which the sensors declared next share.
        crate::catalog::names::clear();
        let state = decode_state(D::STATE_VERSION, bytes)?;
        self.detector.borrow_mut().restore(state);
        self.catalog.borrow_mut().clear();
        Ok(())
    }
}

/// Exports a [`Detector`] as a component of the WIT `detector-plugin` world. Invoke it once, at
/// the root of a plugin crate, for wasm builds. The WIT folder is `../../wit` relative to the
/// crate's manifest (a crate in `plugins/NAME` of this repository) unless given as a second
/// argument (a crate elsewhere keeps a copy of the released `pipeline.wit`, as `iotstream plugin
/// new` sets up):
///
/// ```ignore
/// #[cfg(target_arch = "wasm32")]
/// iotstream_plugin_sdk::export_detector!(crate::zscore::ZScore);
/// #[cfg(target_arch = "wasm32")]
/// iotstream_plugin_sdk::export_detector!(crate::my_detector::MyDetector, "wit");
/// ```
#[macro_export]
macro_rules! export_detector {
    ($detector:ty) => {
        $crate::export_detector!($detector, "../../wit");
    };
    ($detector:ty, $wit:tt) => {
        /// The component glue `export_detector!` generated.
        #[allow(unsafe_code, missing_docs, reason = "wit-bindgen generates FFI code")]
        mod detector_component {
            use $crate::detector::{Detector as _, DetectorStage};
            use $crate::wit::{Readings, Sensor, StageError, StageInfo};

            $crate::__contract_bindings!("detector-plugin", $wit);

            use exports::iotstream::pipeline::detector::{
                Detections, DetectorStage as Handle, Guest, GuestDetectorStage, ModelInfo, ModelRun,
            };

            struct Component;

            impl Guest for Component {
                type DetectorStage = Stage;

                fn info() -> StageInfo {
                    $crate::stage_info!(<$detector>::STATE_VERSION)
                }
            }

            struct Stage(DetectorStage<$detector>);

            impl GuestDetectorStage for Stage {
                fn create(config: String) -> Result<Handle, StageError> {
                    Ok(Handle::new(Stage(DetectorStage::create(&config)?)))
                }

                fn declare_sensors(&self, sensors: Vec<Sensor>) {
                    self.0.declare(sensors.into_iter().map($crate::wit::identity));
                }

                fn detect(&self, readings: Readings) -> Result<Detections, StageError> {
                    let columns = self.0.detect(&$crate::wit::batch(readings))?;
                    let models = columns
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
                        .collect();
                    Ok(Detections {
                        scores: columns.scores,
                        anomalies: columns.anomalies,
                        warming_up: columns.warming_up,
                        models,
                    })
                }

                fn export_state(&self) -> Vec<u8> {
                    self.0.export_state()
                }

                fn import_state(&self, state: Vec<u8>) -> Result<(), StageError> {
                    Ok(self.0.import_state(&state)?)
                }
            }

            export!(Component);
        }
    };
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::SensorType;

    /// Counts readings per sensor; "anomaly" on every third.
    struct Counter(BTreeMap<String, u32>);

    impl Detector for Counter {
        type Config = BTreeMap<String, u32>;
        type State = BTreeMap<String, u32>;
        const STATE_VERSION: u32 = 7;

        fn create(config: Self::Config) -> Result<Self, String> {
            if config.contains_key("bad") { Err("bad is not allowed".into()) } else { Ok(Counter(config)) }
        }

        fn judge(&mut self, sensor: &SensorIdentity, _: i64, _: f64) -> Judgement {
            let n = self.0.entry(sensor.sensor_id.to_string()).or_default();
            *n += 1;
            Judgement::Scored { score: f64::from(*n), anomaly: n.is_multiple_of(3) }
        }

        fn state(&self) -> &Self::State {
            &self.0
        }

        fn restore(&mut self, state: Self::State) {
            self.0 = state;
        }
    }

    fn rows<const N: usize>(rows: [(u32, i64, f64); N]) -> Batch {
        rows.into_iter().collect()
    }

    fn sensor(id: &str) -> SensorIdentity {
        SensorIdentity { sensor_id: id.into(), sensor_type: SensorType::Humidity, location: "lab_1".into() }
    }

    #[test]
    fn judges_by_identity_refuses_undeclared_keys_and_hands_state_over() {
        assert_eq!(
            DetectorStage::<Counter>::create(r#"{"bad": 1}"#).err(),
            Some(PluginError::InvalidConfig("bad is not allowed".into()))
        );
        let stage = DetectorStage::<Counter>::create("").expect("created");
        stage.declare([(0, sensor("a")), (1, sensor("b"))]);
        let out = stage.detect(&rows([(0, 0, 1.0), (0, 0, 1.0), (1, 0, 1.0), (0, 0, 1.0)])).expect("detects");
        assert_eq!(
            out,
            DetectionColumns { scores: vec![1.0, 2.0, 1.0, 3.0], anomalies: vec![3], ..Default::default() }
        );
        // A batch with an undeclared key changes nothing.
        assert!(stage.detect(&rows([(0, 0, 1.0), (5, 0, 1.0)])).is_err());
        // So does one whose columns differ in length.
        let uneven = Batch { values: vec![1.0], ..rows([(0, 0, 1.0), (0, 0, 1.0)]) };
        assert!(matches!(stage.detect(&uneven), Err(PluginError::InvalidInput(m)) if m.contains("differ in length")));
        let state = stage.export_state();
        let other = DetectorStage::<Counter>::create("").expect("created");
        other.import_state(&state).expect("imports");
        // Keys are per instance: after the import, "a" is declared under another key.
        other.declare([(9, sensor("a"))]);
        assert_eq!(
            other.detect(&rows([(9, 0, 1.0)])).expect("detects"),
            DetectionColumns { scores: vec![4.0], ..Default::default() }
        );
        assert!(matches!(other.import_state(&[1, 0, 0, 0]), Err(PluginError::InvalidState(_))));
    }
}
