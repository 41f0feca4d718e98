//! A detector that counts readings per sensor and, after a number of good calls, misbehaves.
//!
//! While it behaves, the score of a reading is the number of readings of its sensor seen so far,
//! this one included (verdict normal), and the state is those counts, keyed by sensor id. So a test
//! reads the state an instance holds from its scores: after a restart from a snapshot, the next
//! reading of a sensor scores the snapshot's count plus one.
//!
//! Calls are counted per instance and are not part of the state: an instance re-created from a
//! snapshot behaves for `after_calls` calls again before it misbehaves.

use std::collections::BTreeMap;

use iotstream_plugin_sdk::SensorIdentity;
use iotstream_plugin_sdk::detector::{Detector, Judgement, ModelInfo};
use serde::Deserialize;

/// How the detector breaks the contract once it stops behaving.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Never misbehaves.
    #[default]
    Behave,
    /// Loops forever: the host's CPU deadline must stop it.
    Spin,
    /// Allocates memory without end: the host's memory cap must stop it.
    Allocate,
    /// Panics, which is a trap (`unreachable`) in wasm.
    Trap,
    /// Scores every reading NaN (the counts still advance).
    Nan,
    /// Returns one detection fewer than readings (the counts still advance).
    Short,
    /// Refuses the call with a stage error, leaving the state as it was.
    Refuse,
    /// Sleeps for [`SLEEP`] (a blocking WASI call, not wasm code), then answers as it would have:
    /// the host must not let a plugin block the pipeline for as long as it likes.
    Sleep,
    /// Behaves, but scores every reading with the wall-clock time it reads, ms since the epoch:
    /// the host's clock for the call, not the machine's.
    Clock,
    /// Behaves, but scores every reading with a hash keyed by the random seed it is given (what
    /// `HashMap` uses): the host's seed for the plugin, the same for every instance.
    Random,
}

/// How long `sleep` sleeps: far past any call deadline the host would set.
pub const SLEEP: std::time::Duration = std::time::Duration::from_secs(60);

/// Configuration: `{"mode": "spin", "after_calls": 2}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MisbehavingConfig {
    /// What to do once misbehaving. Default `behave`.
    pub mode: Mode,
    /// Detect calls answered correctly before misbehaving. Default 0: misbehave from the first call.
    pub after_calls: u32,
}

/// The detector: its configuration, the calls this instance has answered, the counts.
#[derive(Debug)]
pub struct Misbehaving {
    config: MisbehavingConfig,
    calls: u32,
    counts: BTreeMap<String, u64>,
}

impl Misbehaving {
    fn count(&mut self, sensor: &SensorIdentity) -> u64 {
        let count = self.counts.entry(sensor.sensor_id.to_string()).or_default();
        *count += 1;
        *count
    }

    /// Counts `readings`, scoring each `score`.
    fn scored(&mut self, readings: &[(&SensorIdentity, i64, f64)], score: f64) -> Vec<(Judgement, Option<ModelInfo>)> {
        let mut judgements = self.counted(readings);
        for (judgement, _) in &mut judgements {
            *judgement = Judgement::Scored { score, anomaly: false };
        }
        judgements
    }

    fn counted(&mut self, readings: &[(&SensorIdentity, i64, f64)]) -> Vec<(Judgement, Option<ModelInfo>)> {
        readings
            .iter()
            .map(|&(sensor, _, _)| (Judgement::Scored { score: self.count(sensor) as f64, anomaly: false }, None))
            .collect()
    }
}

impl Detector for Misbehaving {
    type Config = MisbehavingConfig;
    type State = BTreeMap<String, u64>;
    const STATE_VERSION: u32 = 1;

    fn create(config: MisbehavingConfig) -> Result<Self, String> {
        Ok(Misbehaving { config, calls: 0, counts: BTreeMap::new() })
    }

    fn judge(&mut self, sensor: &SensorIdentity, _: i64, _: f64) -> Judgement {
        Judgement::Scored { score: self.count(sensor) as f64, anomaly: false }
    }

    fn judge_batch(
        &mut self,
        readings: &[(&SensorIdentity, i64, f64)],
    ) -> Result<Vec<(Judgement, Option<ModelInfo>)>, String> {
        self.calls += 1;
        if self.calls <= self.config.after_calls {
            return Ok(self.counted(readings));
        }
        match self.config.mode {
            Mode::Behave => Ok(self.counted(readings)),
            Mode::Spin => spin(),
            Mode::Allocate => allocate(),
            Mode::Trap => panic!("misbehaving detector: trap on call {}", self.calls),
            Mode::Nan => Ok(self.scored(readings, f64::NAN)),
            Mode::Short => {
                let mut judgements = self.counted(readings);
                judgements.pop();
                Ok(judgements)
            }
            Mode::Refuse => Err(format!("misbehaving detector refuses call {}", self.calls)),
            Mode::Sleep => {
                std::thread::sleep(SLEEP);
                Ok(self.counted(readings))
            }
            Mode::Clock => Ok(self.scored(readings, wall_clock_ms())),
            Mode::Random => Ok(self.scored(readings, seeded_hash())),
        }
    }

    fn state(&self) -> &Self::State {
        &self.counts
    }

    fn restore(&mut self, state: Self::State) {
        self.counts = state;
    }
}

/// The wall clock as the plugin reads it, ms since the Unix epoch (0 before it).
fn wall_clock_ms() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_millis() as f64)
}

/// A hash of 0 keyed by a fresh `RandomState` (seeded from the WASI random seed), to 53 bits so
/// that it is exact as a score.
fn seeded_hash() -> f64 {
    use std::hash::BuildHasher;
    (std::collections::hash_map::RandomState::new().hash_one(0u8) >> 11) as f64
}

/// Never returns; `black_box` keeps the optimiser from proving the loop useless.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Touches a new MiB at a time until the allocator (or the host's memory cap) gives up.
fn allocate() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

#[cfg(test)]
mod tests {
    use iotstream_plugin_sdk::SensorType;

    use super::*;

    fn sensor(id: &str) -> SensorIdentity {
        SensorIdentity { sensor_id: id.into(), sensor_type: SensorType::Co2, location: "lab_1".into() }
    }

    fn scores(out: &[(Judgement, Option<ModelInfo>)]) -> Vec<f64> {
        out.iter().map(|(j, _)| if let Judgement::Scored { score, .. } = j { *score } else { -1.0 }).collect()
    }

    fn detector(mode: Mode, after_calls: u32) -> Misbehaving {
        Misbehaving::create(MisbehavingConfig { mode, after_calls }).expect("created")
    }

    #[test]
    fn behaves_for_after_calls_scoring_the_count_per_sensor() {
        let (a, b) = (sensor("a"), sensor("b"));
        let mut d = detector(Mode::Refuse, 2);
        let batch = [(&a, 0, 1.0), (&b, 0, 1.0), (&a, 0, 1.0)];
        assert_eq!(scores(&d.judge_batch(&batch).expect("call 1")), [1.0, 1.0, 2.0]);
        assert_eq!(scores(&d.judge_batch(&batch).expect("call 2")), [3.0, 2.0, 4.0]);
        assert_eq!(d.judge_batch(&batch), Err("misbehaving detector refuses call 3".into()));
        // The refusal left the counts as they were.
        assert_eq!(d.state(), &BTreeMap::from([("a".into(), 4), ("b".into(), 2)]));
    }

    #[test]
    fn nan_and_short_break_the_output_but_count() {
        let a = sensor("a");
        let mut nan = detector(Mode::Nan, 0);
        let out = nan.judge_batch(&[(&a, 0, 1.0), (&a, 0, 1.0)]).expect("answers");
        assert!(scores(&out).iter().all(|s| s.is_nan()));
        assert_eq!(nan.state()["a"], 2);
        let mut short = detector(Mode::Short, 0);
        assert_eq!(short.judge_batch(&[(&a, 0, 1.0), (&a, 0, 1.0)]).expect("answers").len(), 1);
        assert_eq!(short.state()["a"], 2);
    }

    #[test]
    #[should_panic(expected = "trap on call 2")]
    fn trap_panics() {
        let a = sensor("a");
        let mut d = detector(Mode::Trap, 1);
        d.judge_batch(&[(&a, 0, 1.0)]).expect("call 1 behaves");
        let _ = d.judge_batch(&[(&a, 0, 1.0)]);
    }

    #[test]
    fn config_is_strict() {
        let config: MisbehavingConfig =
            iotstream_plugin_sdk::parse_config(r#"{"mode": "allocate", "after_calls": 3}"#).expect("parses");
        assert_eq!(config, MisbehavingConfig { mode: Mode::Allocate, after_calls: 3 });
        assert!(iotstream_plugin_sdk::parse_config::<MisbehavingConfig>(r#"{"mode": "explode"}"#).is_err());
    }
}
