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
///
/// A burst is what the time since the start owes, not a tick's share: each burst waits for its
/// deliveries, and on a busy machine (or a broker with a long round trip) that takes longer than a
/// tick, so a tick's share would fall behind the rate for good (measured: 5,000 readings/s asked,
/// under 2,000 sent, on a loaded 2-core machine). A late tick sends what the missed time owes instead,
/// and the rate holds on average.
struct Pacer {
    rate: f64,
    ticker: tokio::time::Interval,
    started: tokio::time::Instant,
    /// Readings handed out since `started`.
    sent: u64,
}

impl Pacer {
    fn new(rate: f64) -> Self {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Pacer { rate, ticker, started: tokio::time::Instant::now(), sent: 0 }
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
        let burst = owed(self.rate, self.started.elapsed(), self.sent);
        self.sent += burst;
        Some(burst)
    }
}

/// Readings a producer at `rate` readings/s owes `elapsed` after its start, having sent `sent`.
fn owed(rate: f64, elapsed: Duration, sent: u64) -> u64 {
    ((rate * elapsed.as_secs_f64()).floor() as u64).saturating_sub(sent)
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
        let record = FutureRecord::to(topic).key(reading.sensor_id.as_str()).payload(&payload);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_tick_sends_what_the_missed_time_owes() {
        // 5,000/s: one on-time tick (10 ms) owes 50.
        assert_eq!(owed(5_000.0, Duration::from_millis(10), 0), 50);
        // Deliveries held the producer for 70 ms: the next tick owes 80 ms of readings, less the 50 sent.
        assert_eq!(owed(5_000.0, Duration::from_millis(80), 50), 350);
        // Fractions carry: 333.3/s for 1 s owes 333, then 3 s owes 1,000 in all.
        assert_eq!(owed(1_000.0 / 3.0, Duration::from_secs(1), 0), 333);
        assert_eq!(owed(1_000.0 / 3.0, Duration::from_secs(3), 333), 667);
        // Ahead of the clock (never, but no underflow): nothing owed.
        assert_eq!(owed(100.0, Duration::from_millis(10), 5), 0);
    }
}
