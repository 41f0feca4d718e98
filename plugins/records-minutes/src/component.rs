//! The component glue: the 0.1.0 `aggregator-plugin` world over [`crate::minutes`].

use std::cell::RefCell;
use std::collections::HashMap;

use crate::minutes::{Closed, Minutes};

wit_bindgen::generate!({ path: "../../wit/v0.1.0", world: "aggregator-plugin" });

use exports::iotstream::pipeline::aggregator::{
    AggregatorStage as Handle, Guest, GuestAggregatorStage, WindowAggregate,
};
use iotstream::pipeline::types::{Reading, Sensor, SensorType, StageError, StageInfo};

const TYPES: [SensorType; 5] =
    [SensorType::Temperature, SensorType::Humidity, SensorType::AirQuality, SensorType::Pressure, SensorType::Co2];

struct Component;

impl Guest for Component {
    type AggregatorStage = Stage;

    fn info() -> StageInfo {
        StageInfo { name: env!("CARGO_PKG_NAME").into(), version: env!("CARGO_PKG_VERSION").into(), state_version: 1 }
    }
}

struct Stage {
    minutes: RefCell<Minutes>,
    /// Sensor key -> (location, type index).
    sensors: RefCell<HashMap<u32, (String, u8)>>,
}

impl GuestAggregatorStage for Stage {
    fn create(config: String) -> Result<Handle, StageError> {
        if !matches!(config.trim(), "" | "{}") {
            return Err(StageError::InvalidConfig(format!("records-minutes takes no configuration, got {config}")));
        }
        Ok(Handle::new(Stage { minutes: RefCell::default(), sensors: RefCell::default() }))
    }

    fn declare_sensors(&self, sensors: Vec<Sensor>) {
        let mut known = self.sensors.borrow_mut();
        for s in sensors {
            let index = TYPES.iter().position(|t| *t == s.sensor_type).unwrap_or_default() as u8;
            known.insert(s.key, (s.location, index));
        }
    }

    fn aggregate(&self, readings: Vec<Reading>) -> Result<Vec<WindowAggregate>, StageError> {
        let known = self.sensors.borrow();
        if let Some(r) = readings.iter().find(|r| !known.contains_key(&r.sensor)) {
            return Err(StageError::InvalidInput(format!("sensor key {} was never declared", r.sensor)));
        }
        let mut minutes = self.minutes.borrow_mut();
        for r in &readings {
            let (location, sensor_type) = &known[&r.sensor];
            // A reading of a minute already emitted is left out (module docs of `minutes`).
            minutes.add(location, *sensor_type, r.timestamp_ms, r.value, r.flagged);
        }
        Ok(Vec::new())
    }

    fn tick(&self, now_ms: i64) -> Vec<WindowAggregate> {
        self.minutes.borrow_mut().close_until(now_ms).into_iter().map(to_wit).collect()
    }

    fn export_state(&self) -> Vec<u8> {
        self.minutes.borrow().export()
    }

    fn import_state(&self, state: Vec<u8>) -> Result<(), StageError> {
        *self.minutes.borrow_mut() = Minutes::import(&state).map_err(StageError::InvalidState)?;
        self.sensors.borrow_mut().clear();
        Ok(())
    }
}

fn to_wit(closed: Closed) -> WindowAggregate {
    let stddev = closed.stddev();
    WindowAggregate {
        window_start_ms: closed.start_ms,
        window_end_ms: closed.start_ms + crate::minutes::MINUTE_MS,
        location: closed.location,
        sensor_type: TYPES[usize::from(closed.sensor_type)],
        count: closed.window.count,
        avg: closed.window.mean,
        min: closed.window.min,
        max: closed.window.max,
        stddev,
        anomaly_count: closed.window.flagged,
        revision: 0,
        late_count: 0,
    }
}

export!(Component);
