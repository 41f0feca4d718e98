//! An aggregator is one trait implementation: [`Aggregator`] is the algorithm, [`AggregatorStage`]
//! the per-instance plumbing every aggregator shares (sensor catalog, batch loop, state encoding),
//! and [`export_aggregator!`](crate::export_aggregator) turns the pair into a component exporting
//! the WIT `aggregator` interface.

use std::cell::RefCell;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{
    Batch, Catalog, PluginError, ResolvedBatch, SensorIdentity, SensorType, decode_state, encode_state, parse_config,
};

/// The summary of one window of one location and sensor type (the WIT `window-aggregate`).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowAggregate {
    /// Start of the window (inclusive), ms since the Unix epoch.
    pub window_start_ms: i64,
    /// End of the window (exclusive), ms since the Unix epoch.
    pub window_end_ms: i64,
    /// The location the readings came from.
    pub location: Arc<str>,
    /// The type of sensor the readings came from.
    pub sensor_type: SensorType,
    /// Number of readings in the window, at least 1.
    pub count: u32,
    /// Mean value.
    pub avg: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Population standard deviation.
    pub stddev: f64,
    /// Readings a detector flagged.
    pub anomaly_count: u32,
    /// 0 for the window's first emission; each later one (caused by late readings) counts up and
    /// supersedes the earlier ones.
    pub revision: u32,
    /// Readings in `count` that arrived late.
    pub late_count: u32,
}

/// The algorithm of an aggregator plugin.
pub trait Aggregator: Sized {
    /// Its configuration (`#[serde(default, deny_unknown_fields)]`).
    type Config: DeserializeOwned;
    /// Its complete state, open windows included, keyed by sensor identity (never by sensor key).
    type State: Serialize + DeserializeOwned;
    /// Version of the state format; bump it whenever `State` changes shape.
    const STATE_VERSION: u32;

    /// Creates the aggregator, or says which configuration value is wrong.
    fn create(config: Self::Config) -> Result<Self, String>;
    /// Adds one reading of `sensor` to its window, updating the state; `flagged` says whether a
    /// detector flagged it earlier in the batch.
    fn add(&mut self, sensor: &SensorIdentity, timestamp_ms: i64, value: f64, flagged: bool);
    /// The windows the readings added so far closed, and the revisions late readings made; asked
    /// once at the end of each batch.
    fn close_ready(&mut self) -> Vec<WindowAggregate>;
    /// Adds a whole batch, in order (each reading with its sensor and flag:
    /// [`ResolvedBatch::iter_flagged`]), and returns what it closed. The default calls
    /// [`add`](Aggregator::add) reading by reading, then [`close_ready`](Aggregator::close_ready);
    /// override it for an algorithm that must refuse a batch (the `Err` becomes the WIT
    /// `invalid-input`, and a refused batch must leave the state as it was).
    fn aggregate_batch(&mut self, readings: ResolvedBatch<'_>) -> Result<Vec<WindowAggregate>, String> {
        for (sensor, timestamp_ms, value, flagged) in readings.iter_flagged() {
            self.add(sensor, timestamp_ms, value, flagged);
        }
        Ok(self.close_ready())
    }
    /// Tells the aggregator the host's processing time (ms since the Unix epoch); returns the
    /// windows that closed because they were idle.
    fn tick(&mut self, now_ms: i64) -> Vec<WindowAggregate>;
    /// The state, for export.
    fn state(&self) -> &Self::State;
    /// Replaces the state.
    fn restore(&mut self, state: Self::State);
}

/// One running aggregator with its sensor catalog: what a WIT `aggregator-stage` resource holds.
pub struct AggregatorStage<A> {
    catalog: RefCell<Catalog>,
    aggregator: RefCell<A>,
}

impl<A: Aggregator> AggregatorStage<A> {
    /// Parses the configuration and creates the aggregator.
    pub fn create(config: &str) -> Result<Self, PluginError> {
        let config: A::Config = parse_config(config)?;
        let aggregator = A::create(config).map_err(PluginError::InvalidConfig)?;
        Ok(AggregatorStage { catalog: RefCell::default(), aggregator: RefCell::new(aggregator) })
    }

    /// Declares sensor keys.
    pub fn declare(&self, sensors: impl IntoIterator<Item = (u32, SensorIdentity)>) {
        let mut catalog = self.catalog.borrow_mut();
        for (key, identity) in sensors {
            catalog.declare(key, identity);
        }
    }

    /// Adds a batch, in order; returns the windows it closed. A batch of the wrong shape or with an
    /// undeclared key is refused whole, before any state changes.
    pub fn aggregate(&self, batch: &Batch) -> Result<Vec<WindowAggregate>, PluginError> {
        let catalog = self.catalog.borrow();
        let readings = ResolvedBatch::new(&catalog, batch)?;
        self.aggregator.borrow_mut().aggregate_batch(readings).map_err(PluginError::InvalidInput)
    }

    /// Advances processing time; returns the windows closed for idleness.
    pub fn tick(&self, now_ms: i64) -> Vec<WindowAggregate> {
        self.aggregator.borrow_mut().tick(now_ms)
    }

    /// The state in the versioned byte format.
    pub fn export_state(&self) -> Vec<u8> {
        encode_state(A::STATE_VERSION, self.aggregator.borrow().state())
    }

    /// Restores exported state and forgets every sensor key.
    pub fn import_state(&self, bytes: &[u8]) -> Result<(), PluginError> {
        // The state's names are read into a fresh pool, which the sensors declared next share.
        crate::catalog::names::clear();
        let state = decode_state(A::STATE_VERSION, bytes)?;
        self.aggregator.borrow_mut().restore(state);
        self.catalog.borrow_mut().clear();
        Ok(())
    }
}

/// Exports an [`Aggregator`] as a component of the WIT `aggregator-plugin` world. Invoke it once,
/// at the root of a plugin crate, for wasm builds. The WIT folder is `../../wit` relative to the
/// crate's manifest (a crate in `plugins/NAME` of this repository) unless given as a second
/// argument, as for [`export_detector!`](crate::export_detector):
///
/// ```ignore
/// #[cfg(target_arch = "wasm32")]
/// iotstream_plugin_sdk::export_aggregator!(crate::window::TumblingWindows);
/// ```
#[macro_export]
macro_rules! export_aggregator {
    ($aggregator:ty) => {
        $crate::export_aggregator!($aggregator, "../../wit");
    };
    ($aggregator:ty, $wit:tt) => {
        /// The component glue `export_aggregator!` generated.
        #[allow(unsafe_code, missing_docs, reason = "wit-bindgen generates FFI code")]
        mod aggregator_component {
            use $crate::aggregator::{Aggregator as _, AggregatorStage};
            use $crate::wit::{Readings, Sensor, StageError, StageInfo};

            $crate::__contract_bindings!("aggregator-plugin", $wit);

            use exports::iotstream::pipeline::aggregator::{
                AggregatorStage as Handle, Guest, GuestAggregatorStage, WindowAggregate,
            };

            struct Component;

            impl Guest for Component {
                type AggregatorStage = Stage;

                fn info() -> StageInfo {
                    $crate::stage_info!(<$aggregator>::STATE_VERSION)
                }
            }

            struct Stage(AggregatorStage<$aggregator>);

            impl GuestAggregatorStage for Stage {
                fn create(config: String) -> Result<Handle, StageError> {
                    Ok(Handle::new(Stage(AggregatorStage::create(&config)?)))
                }

                fn declare_sensors(&self, sensors: Vec<Sensor>) {
                    self.0.declare(sensors.into_iter().map($crate::wit::identity));
                }

                fn aggregate(&self, readings: Readings) -> Result<Vec<WindowAggregate>, StageError> {
                    Ok(self.0.aggregate(&$crate::wit::batch(readings))?.into_iter().map(to_wit).collect())
                }

                fn tick(&self, now_ms: i64) -> Vec<WindowAggregate> {
                    self.0.tick(now_ms).into_iter().map(to_wit).collect()
                }

                fn export_state(&self) -> Vec<u8> {
                    self.0.export_state()
                }

                fn import_state(&self, state: Vec<u8>) -> Result<(), StageError> {
                    Ok(self.0.import_state(&state)?)
                }
            }

            fn to_wit(a: $crate::aggregator::WindowAggregate) -> WindowAggregate {
                WindowAggregate {
                    window_start_ms: a.window_start_ms,
                    window_end_ms: a.window_end_ms,
                    location: a.location.to_string(),
                    sensor_type: a.sensor_type.into(),
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

            export!(Component);
        }
    };
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Sums the readings of each location: a location's window closes with its third reading;
    /// `tick` closes every open one.
    struct Triples(BTreeMap<String, (u32, f64, u32)>);

    impl Aggregator for Triples {
        type Config = BTreeMap<String, u32>;
        type State = BTreeMap<String, (u32, f64, u32)>;
        const STATE_VERSION: u32 = 3;

        fn create(config: Self::Config) -> Result<Self, String> {
            if config.contains_key("bad") { Err("bad is not allowed".into()) } else { Ok(Triples(BTreeMap::new())) }
        }

        fn add(&mut self, sensor: &SensorIdentity, _: i64, value: f64, flagged: bool) {
            let (count, sum, flags) = self.0.entry(sensor.location.to_string()).or_default();
            *count += 1;
            *sum += value;
            *flags += u32::from(flagged);
        }

        fn close_ready(&mut self) -> Vec<WindowAggregate> {
            let full: Vec<String> = self.0.iter().filter(|(_, w)| w.0 >= 3).map(|(l, _)| l.clone()).collect();
            full.into_iter().filter_map(|location| self.close(&location)).collect()
        }

        fn tick(&mut self, _: i64) -> Vec<WindowAggregate> {
            let open: Vec<String> = self.0.keys().cloned().collect();
            open.into_iter().filter_map(|location| self.close(&location)).collect()
        }

        fn state(&self) -> &Self::State {
            &self.0
        }

        fn restore(&mut self, state: Self::State) {
            self.0 = state;
        }
    }

    impl Triples {
        fn close(&mut self, location: &str) -> Option<WindowAggregate> {
            let (count, sum, flags) = self.0.remove(location)?;
            Some(WindowAggregate {
                window_start_ms: 0,
                window_end_ms: 1,
                location: location.into(),
                sensor_type: SensorType::Pressure,
                count,
                avg: sum / f64::from(count),
                min: 0.0,
                max: 0.0,
                stddev: 0.0,
                anomaly_count: flags,
                revision: 0,
                late_count: 0,
            })
        }
    }

    fn rows<const N: usize>(rows: [(u32, i64, f64, bool); N]) -> Batch {
        rows.into_iter().collect()
    }

    fn sensor(id: &str, location: &str) -> SensorIdentity {
        SensorIdentity { sensor_id: id.into(), sensor_type: SensorType::Pressure, location: location.into() }
    }

    fn summary(windows: &[WindowAggregate]) -> Vec<(String, u32, f64, u32)> {
        windows.iter().map(|w| (w.location.to_string(), w.count, w.avg, w.anomaly_count)).collect()
    }

    #[test]
    fn aggregates_by_identity_refuses_undeclared_keys_and_hands_state_over() {
        assert_eq!(
            AggregatorStage::<Triples>::create(r#"{"bad": 1}"#).err(),
            Some(PluginError::InvalidConfig("bad is not allowed".into()))
        );
        assert!(matches!(AggregatorStage::<Triples>::create("[]"), Err(PluginError::InvalidConfig(_))));
        let stage = AggregatorStage::<Triples>::create("").expect("created");
        stage.declare([(0, sensor("a", "lab_1")), (1, sensor("b", "lab_1")), (2, sensor("c", "office_1"))]);
        let closed =
            stage.aggregate(&rows([(0, 0, 1.0, false), (2, 0, 7.0, true), (1, 0, 2.0, true), (0, 0, 3.0, false)]));
        assert_eq!(summary(&closed.expect("aggregates")), [("lab_1".into(), 3, 2.0, 1)]);
        // A batch with an undeclared key changes nothing: office_1 still holds one reading.
        assert!(matches!(
            stage.aggregate(&rows([(2, 0, 1.0, false), (5, 0, 1.0, false)])),
            Err(PluginError::InvalidInput(_))
        ));
        let state = stage.export_state();
        let other = AggregatorStage::<Triples>::create("").expect("created");
        other.import_state(&state).expect("imports");
        // Keys are per instance: after the import, office_1's sensor is declared under another key.
        assert!(other.aggregate(&rows([(2, 0, 1.0, false)])).is_err(), "the import forgot the keys");
        other.declare([(9, sensor("c", "office_1"))]);
        assert_eq!(other.aggregate(&rows([(9, 0, 5.0, false)])).expect("aggregates"), []);
        assert_eq!(summary(&other.tick(0)), [("office_1".into(), 2, 6.0, 1)]);
        assert_eq!(other.tick(1), []);
        assert!(matches!(other.import_state(&[1, 0, 0, 0]), Err(PluginError::InvalidState(_))));
    }
}
