//! Readings per second of the novelty detector natively, on one core: 50 sensors, 2 million
//! readings of noisy daily cycles at 1-minute intervals (so the season stream is on). Run it
//! optimised: `cargo run --release -p novelty --example throughput`. (`iotstream bench-plugins`
//! measures it beside its `.wasm`, but only a release build of the host gives native figures.)

use std::sync::Arc;
use std::time::Instant;

use novelty::novelty::{Judgement, Novelty, NoveltyConfig};

fn main() {
    const SENSORS: u32 = 50;
    const READINGS: u32 = 2_000_000;
    let sensors: Vec<Arc<str>> = (0..SENSORS).map(|i| Arc::from(format!("s{i}"))).collect();
    let mut detector = Novelty::new(NoveltyConfig::default());
    let mut anomalies = 0_u64;
    let started = Instant::now();
    for i in 0..READINGS {
        let sensor = &sensors[(i % SENSORS) as usize];
        let minute = i64::from(i / SENSORS);
        let noise = f64::from((i.wrapping_mul(2_654_435_761)) % 1000) / 1000.0;
        let value = 20.0 + 5.0 * (minute as f64 * std::f64::consts::TAU / 1440.0).sin() + noise;
        if let Judgement::Scored { anomaly: true, .. } = detector.observe(sensor, minute * 60_000, value) {
            anomalies += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "novelty natively: {READINGS} readings of {SENSORS} sensors in {seconds:.3} s: {:.0} readings/s ({anomalies} flagged)",
        f64::from(READINGS) / seconds
    );
}
