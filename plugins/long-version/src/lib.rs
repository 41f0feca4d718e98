//! The `long-version` detector: a test plugin whose only fault is its `stage-info` version, a
//! semver with a build hash (from its crate version), longer than the host stores. The host must
//! refuse it at load, and `iotstream plugin check` must say why. It judges every reading normal.

use iotstream_plugin_sdk::SensorIdentity;
use iotstream_plugin_sdk::detector::{Detector, Judgement};
use serde::Deserialize;

/// No configuration: `{}`, any key refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// A detector that scores every reading 0, normal; no configuration, no state.
#[derive(Debug, Default)]
pub struct Plain {
    state: (),
}

impl Detector for Plain {
    type Config = NoConfig;
    type State = ();
    const STATE_VERSION: u32 = 1;

    fn create(_: NoConfig) -> Result<Self, String> {
        Ok(Plain::default())
    }

    fn judge(&mut self, _: &SensorIdentity, _: i64, _: f64) -> Judgement {
        Judgement::Scored { score: 0.0, anomaly: false }
    }

    fn state(&self) -> &() {
        &self.state
    }

    fn restore(&mut self, state: ()) {
        self.state = state;
    }
}

#[cfg(target_arch = "wasm32")]
iotstream_plugin_sdk::export_detector!(crate::Plain);
