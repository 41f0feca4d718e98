//! The WIT `aggregator-plugin` world over [`crate::window`].

use std::cell::RefCell;

use iotstream_plugin_sdk::wit::{Reading, Sensor, StageError, StageInfo};
use iotstream_plugin_sdk::{Catalog, decode_state, encode_state, parse_config, stage_info};

use crate::window::{Aggregate, TumblingWindows, WindowConfig};

iotstream_plugin_sdk::__contract_bindings!("aggregator-plugin", "../../wit");

use exports::iotstream::pipeline::aggregator::{AggregatorStage, Guest, GuestAggregatorStage, WindowAggregate};

/// Bumped whenever [`crate::window::WindowState`] changes shape.
const STATE_VERSION: u32 = 1;

struct Component;

impl Guest for Component {
    type AggregatorStage = Stage;

    fn info() -> StageInfo {
        stage_info!(STATE_VERSION)
    }
}

/// One running stage: its sensor catalog and its windows.
struct Stage {
    catalog: RefCell<Catalog>,
    windows: RefCell<TumblingWindows>,
}

impl GuestAggregatorStage for Stage {
    fn create(config: String) -> Result<AggregatorStage, StageError> {
        let config: WindowConfig = parse_config(&config)?;
        config.validate().map_err(StageError::InvalidConfig)?;
        Ok(AggregatorStage::new(Stage {
            catalog: RefCell::default(),
            windows: RefCell::new(TumblingWindows::new(config)),
        }))
    }

    fn declare_sensors(&self, sensors: Vec<Sensor>) {
        self.catalog.borrow_mut().declare_all(sensors);
    }

    fn aggregate(&self, readings: Vec<Reading>) -> Result<Vec<WindowAggregate>, StageError> {
        let catalog = self.catalog.borrow();
        catalog.check_all(readings.iter().map(|r| r.sensor))?;
        let mut windows = self.windows.borrow_mut();
        for reading in &readings {
            let sensor = catalog.get(reading.sensor)?;
            windows.add(&sensor.location, sensor.sensor_type, reading.timestamp_ms, reading.value, reading.flagged);
        }
        Ok(windows.close_ready().into_iter().map(to_wit).collect())
    }

    fn tick(&self, now_ms: i64) -> Vec<WindowAggregate> {
        self.windows.borrow_mut().tick(now_ms).into_iter().map(to_wit).collect()
    }

    fn export_state(&self) -> Vec<u8> {
        encode_state(STATE_VERSION, self.windows.borrow().state())
    }

    fn import_state(&self, state: Vec<u8>) -> Result<(), StageError> {
        let state = decode_state(STATE_VERSION, &state)?;
        self.windows.borrow_mut().restore(state);
        self.catalog.borrow_mut().clear();
        Ok(())
    }
}

fn to_wit(a: Aggregate) -> WindowAggregate {
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
