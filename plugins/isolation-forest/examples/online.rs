//! Readings per second of the online forest natively, on one core, with its retraining: 50 sensors
//! of 5 types, 300 000 readings 20 ms apart (so models retrain every 5 minutes of event time, as
//! live). Run it optimised: `cargo run --release -p isolation-forest --example online [seed]`
//! (`seed` runs the seed's preset). `iotstream bench-plugins` measures it beside its `.wasm`, but
//! only a release build of the host gives native figures.

use std::sync::Arc;
use std::time::Instant;

use iotstream_plugin_sdk::SensorType;
use isolation_forest::detector::{DetectorConfig, Judgement, OnlineForest};

fn main() {
    const SENSORS: u32 = 50;
    const READINGS: u32 = 300_000;
    let seed = std::env::args().nth(1).as_deref() == Some("seed");
    let config = if seed { DetectorConfig::seed() } else { DetectorConfig::default() };
    let sensors: Vec<Arc<str>> = (0..SENSORS).map(|i| Arc::from(format!("s{i}"))).collect();
    let mut forest = OnlineForest::new(config);
    let (mut anomalies, mut longest) = (0_u64, 0.0_f64);
    let started = Instant::now();
    for i in 0..READINGS {
        let sensor = (i % SENSORS) as usize;
        let noise = f64::from((i.wrapping_mul(2_654_435_761)) % 1000) / 1000.0;
        let call = Instant::now();
        let judgement = forest.observe(&sensors[sensor], SensorType::ALL[sensor % 5], i64::from(i) * 20, 20.0 + noise);
        longest = longest.max(call.elapsed().as_secs_f64());
        anomalies += u64::from(matches!(judgement, Judgement::Scored { anomaly: true, .. }));
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "online forest ({}) natively: {READINGS} readings in {seconds:.2} s: {:.0} readings/s, longest reading {:.1} ms \
         ({anomalies} flagged)",
        if seed { "seed preset" } else { "default" },
        f64::from(READINGS) / seconds,
        longest * 1000.0
    );
}
