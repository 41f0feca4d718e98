//! [`crate::window`] as the SDK's [`Aggregator`]; for wasm builds, `export_aggregator!` makes it a
//! component of the WIT `aggregator-plugin` world.

use iotstream_plugin_sdk::SensorIdentity;
use iotstream_plugin_sdk::aggregator::{Aggregator, WindowAggregate};

use crate::window::{TumblingWindows, WindowConfig, WindowState};

impl Aggregator for TumblingWindows {
    type Config = WindowConfig;
    type State = WindowState;
    /// Bumped whenever [`WindowState`] changes shape.
    const STATE_VERSION: u32 = 1;

    fn create(config: WindowConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(TumblingWindows::new(config))
    }

    fn add(&mut self, sensor: &SensorIdentity, timestamp_ms: i64, value: f64, flagged: bool) {
        // Readings beyond the revision horizon are counted in the state; the admission is not output.
        TumblingWindows::add(self, &sensor.location, sensor.sensor_type, timestamp_ms, value, flagged);
    }

    fn close_ready(&mut self) -> Vec<WindowAggregate> {
        TumblingWindows::close_ready(self)
    }

    fn tick(&mut self, now_ms: i64) -> Vec<WindowAggregate> {
        TumblingWindows::tick(self, now_ms)
    }

    fn state(&self) -> &WindowState {
        TumblingWindows::state(self)
    }

    fn restore(&mut self, state: WindowState) {
        TumblingWindows::restore(self, state);
    }
}

#[cfg(target_arch = "wasm32")]
iotstream_plugin_sdk::export_aggregator!(crate::window::TumblingWindows);

#[cfg(test)]
mod tests {
    use iotstream_plugin_sdk::aggregator::AggregatorStage;
    use iotstream_plugin_sdk::{Batch, PluginError, SensorType};

    use super::*;

    fn rows<const N: usize>(rows: [(u32, i64, f64, bool); N]) -> Batch {
        rows.into_iter().collect()
    }

    fn sensor(id: &str) -> SensorIdentity {
        SensorIdentity { sensor_id: id.into(), sensor_type: SensorType::Co2, location: "lab_1".into() }
    }

    #[test]
    fn the_stage_validates_its_config_refuses_undeclared_keys_and_hands_windows_over() {
        let refused = AggregatorStage::<TumblingWindows>::create(r#"{"window_ms": 0}"#).err();
        assert_eq!(refused, Some(PluginError::InvalidConfig("window_ms must be positive, got 0".into())));
        assert!(matches!(
            AggregatorStage::<TumblingWindows>::create(r#"{"windowms": 1}"#),
            Err(PluginError::InvalidConfig(msg)) if msg.contains("windowms")
        ));
        let stage = AggregatorStage::<TumblingWindows>::create(r#"{"allowed_lateness_ms": 0}"#).expect("created");
        stage.declare([(0, sensor("c1")), (1, sensor("c2"))]);
        assert_eq!(stage.aggregate(&rows([(0, 1_000, 400.0, false), (1, 2_000, 600.0, true)])).expect("adds"), []);
        assert!(stage.aggregate(&rows([(0, 70_000, 1.0, false), (4, 70_000, 1.0, false)])).is_err());
        // The refused batch moved nothing: minute 0 is still open, and an instance that imports the
        // state closes it as this one would have.
        let other = AggregatorStage::<TumblingWindows>::create(r#"{"allowed_lateness_ms": 0}"#).expect("created");
        other.import_state(&stage.export_state()).expect("imports");
        other.declare([(3, sensor("c1"))]);
        let closed = other.aggregate(&rows([(3, 60_000, 500.0, false)])).expect("closes minute 0");
        let summary: Vec<_> = closed.iter().map(|a| (a.window_start_ms, a.count, a.avg, a.anomaly_count)).collect();
        assert_eq!(summary, [(0, 2, 500.0, 1)]);
    }
}
