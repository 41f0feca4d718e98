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

use iotstream_plugin_sdk::detector::{Detector, Judgement};
use iotstream_plugin_sdk::{DetectionColumns, ResolvedBatch, SensorIdentity};
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
    /// Behaves, but leaks [`LEAK`] bytes of its memory (written, never freed) on every call: its
    /// linear memory grows while its state does not.
    Leak,
}

/// What `leak` leaks a call.
pub const LEAK: usize = 256 * 1024;

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
    fn scored(&mut self, readings: ResolvedBatch<'_>, score: f64, out: &mut DetectionColumns) {
        for (sensor, _, _) in readings.iter() {
            self.count(sensor);
            out.push(Judgement::Scored { score, anomaly: false }, None);
        }
    }

    /// Counts `readings`, scoring each its sensor's count.
    fn counted(&mut self, readings: ResolvedBatch<'_>, out: &mut DetectionColumns) {
        for (sensor, _, _) in readings.iter() {
            let count = self.count(sensor);
            out.push(Judgement::Scored { score: count as f64, anomaly: false }, None);
        }
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

    fn judge_batch(&mut self, readings: ResolvedBatch<'_>, out: &mut DetectionColumns) -> Result<(), String> {
        self.calls += 1;
        if self.calls <= self.config.after_calls {
            self.counted(readings, out);
            return Ok(());
        }
        match self.config.mode {
            Mode::Behave => self.counted(readings, out),
            Mode::Spin => spin(),
            Mode::Allocate => allocate(),
            Mode::Trap => panic!("misbehaving detector: trap on call {}", self.calls),
            Mode::Nan => self.scored(readings, f64::NAN, out),
            Mode::Short => {
                self.counted(readings, out);
                out.scores.pop();
            }
            Mode::Refuse => return Err(format!("misbehaving detector refuses call {}", self.calls)),
            Mode::Sleep => {
                std::thread::sleep(SLEEP);
                self.counted(readings, out);
            }
            Mode::Clock => self.scored(readings, wall_clock_ms(), out),
            Mode::Random => self.scored(readings, seeded_hash(), out),
            Mode::Leak => {
                std::mem::forget(std::hint::black_box(vec![1u8; LEAK]));
                self.counted(readings, out);
            }
        }
        Ok(())
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
    use iotstream_plugin_sdk::{Batch, Catalog, SensorType};

    use super::*;

    fn sensor(id: &str) -> SensorIdentity {
        SensorIdentity { sensor_id: id.into(), sensor_type: SensorType::Co2, location: "lab_1".into() }
    }

    /// One call of `d` over readings of the sensors `ids`, in order: the scores it answered.
    fn judged(d: &mut Misbehaving, ids: &[&str]) -> Result<Vec<f64>, String> {
        let mut catalog = Catalog::default();
        for (key, id) in (0..).zip(ids) {
            catalog.declare(key, sensor(id));
        }
        let batch: Batch = (0..).zip(ids).map(|(key, _)| (key, 0, 1.0)).collect();
        let readings = ResolvedBatch::new(&catalog, &batch).map_err(|err| err.to_string())?;
        let mut out = DetectionColumns::default();
        d.judge_batch(readings, &mut out)?;
        Ok(out.scores)
    }

    fn detector(mode: Mode, after_calls: u32) -> Misbehaving {
        Misbehaving::create(MisbehavingConfig { mode, after_calls }).expect("created")
    }

    #[test]
    fn behaves_for_after_calls_scoring_the_count_per_sensor() {
        let mut d = detector(Mode::Refuse, 2);
        let batch = ["a", "b", "a"];
        assert_eq!(judged(&mut d, &batch), Ok(vec![1.0, 1.0, 2.0]));
        assert_eq!(judged(&mut d, &batch), Ok(vec![3.0, 2.0, 4.0]));
        assert_eq!(judged(&mut d, &batch), Err("misbehaving detector refuses call 3".into()));
        // The refusal left the counts as they were.
        assert_eq!(d.state(), &BTreeMap::from([("a".into(), 4), ("b".into(), 2)]));
    }

    #[test]
    fn nan_and_short_break_the_output_but_count() {
        let mut nan = detector(Mode::Nan, 0);
        let out = judged(&mut nan, &["a", "a"]).expect("answers");
        assert!(out.len() == 2 && out.iter().all(|s| s.is_nan()), "{out:?}");
        assert_eq!(nan.state()["a"], 2);
        let mut short = detector(Mode::Short, 0);
        assert_eq!(judged(&mut short, &["a", "a"]), Ok(vec![1.0]));
        assert_eq!(short.state()["a"], 2);
    }

    #[test]
    #[should_panic(expected = "trap on call 2")]
    fn trap_panics() {
        let mut d = detector(Mode::Trap, 1);
        assert_eq!(judged(&mut d, &["a"]), Ok(vec![1.0]));
        let _ = judged(&mut d, &["a"]);
    }

    #[test]
    fn config_is_strict() {
        let config: MisbehavingConfig =
            iotstream_plugin_sdk::parse_config(r#"{"mode": "allocate", "after_calls": 3}"#).expect("parses");
        assert_eq!(config, MisbehavingConfig { mode: Mode::Allocate, after_calls: 3 });
        assert!(iotstream_plugin_sdk::parse_config::<MisbehavingConfig>(r#"{"mode": "explode"}"#).is_err());
    }
}
