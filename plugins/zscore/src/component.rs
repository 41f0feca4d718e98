//! The WIT `detector-plugin` world over [`crate::zscore`].

use std::cell::RefCell;

use iotstream_plugin_sdk::wit::{Reading, Sensor, StageError, StageInfo};
use iotstream_plugin_sdk::{Catalog, decode_state, encode_state, parse_config, stage_info};

use crate::zscore::{Judgement, ZScore, ZScoreConfig};

wit_bindgen::generate!({
    world: "detector-plugin",
    path: "../../wit",
    with: { "iotstream:pipeline/types@0.1.0": iotstream_plugin_sdk::wit::iotstream::pipeline::types },
});

use exports::iotstream::pipeline::detector::{Detection, DetectorStage, Guest, GuestDetectorStage, Verdict};

/// Bumped whenever [`crate::zscore::ZScoreState`] changes shape.
const STATE_VERSION: u32 = 1;

struct Component;

impl Guest for Component {
    type DetectorStage = Stage;

    fn info() -> StageInfo {
        stage_info!(STATE_VERSION)
    }
}

/// One running stage: its sensor catalog and the per-sensor histories.
struct Stage {
    catalog: RefCell<Catalog>,
    detector: RefCell<ZScore>,
}

impl GuestDetectorStage for Stage {
    fn create(config: String) -> Result<DetectorStage, StageError> {
        let config: ZScoreConfig = parse_config(&config)?;
        config.validate().map_err(StageError::InvalidConfig)?;
        Ok(DetectorStage::new(Stage { catalog: RefCell::default(), detector: RefCell::new(ZScore::new(config)) }))
    }

    fn declare_sensors(&self, sensors: Vec<Sensor>) {
        self.catalog.borrow_mut().declare_all(sensors);
    }

    fn detect(&self, readings: Vec<Reading>) -> Result<Vec<Detection>, StageError> {
        let catalog = self.catalog.borrow();
        catalog.check_all(readings.iter().map(|r| r.sensor))?;
        let mut detector = self.detector.borrow_mut();
        let mut detections = Vec::with_capacity(readings.len());
        for reading in &readings {
            let sensor = catalog.get(reading.sensor)?;
            detections.push(match detector.observe(&sensor.sensor_id, reading.value) {
                Judgement::WarmingUp => Detection { score: 0.0, verdict: Verdict::WarmingUp },
                Judgement::Scored { score, anomaly } => {
                    Detection { score, verdict: if anomaly { Verdict::Anomaly } else { Verdict::Normal } }
                }
            });
        }
        Ok(detections)
    }

    fn export_state(&self) -> Vec<u8> {
        encode_state(STATE_VERSION, self.detector.borrow().state())
    }

    fn import_state(&self, state: Vec<u8>) -> Result<(), StageError> {
        let state = decode_state(STATE_VERSION, &state)?;
        self.detector.borrow_mut().restore(state);
        self.catalog.borrow_mut().clear();
        Ok(())
    }
}

export!(Component);
