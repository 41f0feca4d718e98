//! `iotstream simulate`: produces seed-format readings of a simulated fleet to Kafka, at a set rate
//! (or as fast as the broker takes them), with labelled anomalies. The seed's `producer.py`, better.

mod fleet;

pub use fleet::{Fleet, FleetCounts, LOCATION_KINDS};

use std::time::Duration;

use chrono::Utc;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::kafka::{Brokers, KafkaError, producer};
use crate::reading::encode;

/// What to simulate.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateConfig {
    /// Readings per second, over all sensors (0: as fast as the broker takes them).
    #[arg(long = "rate", env = "IOTSTREAM_SIMULATE_RATE", default_value_t = 200.0)]
    pub rate: f64,
    /// Number of sensors (spread over the 5 types and 5 kinds of location).
    #[arg(long = "sensors", env = "IOTSTREAM_SIMULATE_SENSORS", default_value_t = 50)]
    pub sensors: usize,
    /// Stop after this many seconds (0: run until stopped).
    #[arg(long = "duration", env = "IOTSTREAM_SIMULATE_DURATION", default_value_t = 0)]
    pub duration_s: u64,
    /// Stop after this many readings (0: no limit).
    #[arg(long = "count", env = "IOTSTREAM_SIMULATE_COUNT", default_value_t = 0)]
    pub count: u64,
    /// Probability per reading that an anomaly episode starts on its sensor.
    #[arg(long = "anomaly-rate", env = "IOTSTREAM_SIMULATE_ANOMALY_RATE", default_value_t = 0.002)]
    pub anomaly_rate: f64,
    /// Seed of the random generator: the same seed gives the same values.
    #[arg(long = "seed", env = "IOTSTREAM_SIMULATE_SEED", default_value_t = 42)]
    pub seed: u64,
}

/// What a simulation produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimulationReport {
    /// What the fleet generated.
    pub fleet: FleetCounts,
    /// Messages the broker acknowledged.
    pub delivered: u64,
    /// Messages the broker did not take.
    pub failed: u64,
}

/// Pacing granularity: readings are sent in small bursts this often.
const TICK: Duration = Duration::from_millis(10);

/// Produces readings to `topic` on `brokers` until the duration or count is reached or `shutdown`.
pub async fn run(
    config: &SimulateConfig,
    brokers: &Brokers,
    topic: &str,
    shutdown: CancellationToken,
) -> Result<SimulationReport, KafkaError> {
    run_with_progress(config, brokers, topic, shutdown, &indicatif::ProgressBar::hidden()).await
}

/// [`run`], counting the readings produced on `progress` (`iotstream simulate`'s bar).
pub async fn run_with_progress(
    config: &SimulateConfig,
    brokers: &Brokers,
    topic: &str,
    shutdown: CancellationToken,
    progress: &indicatif::ProgressBar,
) -> Result<SimulationReport, KafkaError> {
    let producer = producer(brokers)?;
    let mut fleet = Fleet::new(config.sensors, config.anomaly_rate, config.seed);
    let mut report = SimulationReport::default();
    let started = tokio::time::Instant::now();
    let mut pacer = Pacer::new(config.rate);
    info!(brokers = %brokers.servers, topic, rate = config.rate, sensors = fleet.len(), "simulator producing");
    loop {
        if shutdown.is_cancelled()
            || (config.duration_s > 0 && started.elapsed() >= Duration::from_secs(config.duration_s))
            || (config.count > 0 && fleet.counts().readings >= config.count)
        {
            break;
        }
        let Some(burst) = pacer.next_burst(&shutdown).await else { break };
        let burst = if config.count > 0 { burst.min(config.count - fleet.counts().readings) } else { burst };
        send_burst(&producer, topic, &mut fleet, burst, &mut report).await;
        progress.set_position(fleet.counts().readings);
    }
    progress.finish_and_clear();
    report.fleet = fleet.counts();
    info!(
        delivered = report.delivered,
        failed = report.failed,
        anomalous = report.fleet.anomalous,
        "simulator stopped"
    );
    Ok(report)
}

/// Paces the producer: `rate` readings/s in bursts every [`TICK`], or (rate 0) bursts of 1000 as
/// fast as the broker takes them.
struct Pacer {
    rate: f64,
    ticker: tokio::time::Interval,
    /// Readings owed: the fractional part carried from tick to tick.
    budget: f64,
}

impl Pacer {
    fn new(rate: f64) -> Self {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Pacer { rate, ticker, budget: 0.0 }
    }

    /// How many readings to send now; `None` once `shutdown` is cancelled.
    async fn next_burst(&mut self, shutdown: &CancellationToken) -> Option<u64> {
        if self.rate <= 0.0 {
            return Some(1000);
        }
        tokio::select! {
            _ = self.ticker.tick() => {},
            _ = shutdown.cancelled() => return None,
        }
        self.budget += self.rate * TICK.as_secs_f64();
        let whole = self.budget.floor();
        self.budget -= whole;
        Some(whole as u64)
    }
}

/// Produces `burst` readings of `fleet` and waits for their deliveries, counting them in `report`.
async fn send_burst(
    producer: &FutureProducer,
    topic: &str,
    fleet: &mut Fleet,
    burst: u64,
    report: &mut SimulationReport,
) {
    let mut deliveries = Vec::with_capacity(burst as usize);
    for _ in 0..burst {
        let reading = fleet.next_reading(Utc::now());
        let payload = encode(&reading);
        let record = FutureRecord::to(topic).key(&reading.sensor_id).payload(&payload);
        match producer.send_result(record) {
            Ok(delivery) => deliveries.push(delivery),
            Err((err, _)) => {
                report.failed += 1;
                warn!(error = %err, "simulator could not enqueue a reading");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => report.delivered += 1,
            Ok(Err((err, _))) => {
                report.failed += 1;
                warn!(error = %err, "broker refused a reading");
            }
            Err(_) => report.failed += 1,
        }
    }
}
