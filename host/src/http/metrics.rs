//! The pipeline's own metrics, beside the plugins' ([`super::prometheus`] encodes both): what came
//! in and what was stored, dead letters by reason, batch sizes and write times, API requests
//! (counted as they happen, in `prometheus-client`'s atomic types), and what is read off the live
//! view at each scrape (database, brokers and pipeline up, checkpoint age, consumer lag, partitions
//! owned), and the consumer group's rebalances (partitions moved, the pipeline's pause for each).
//!
//! The pipeline records into [`PipelineMetrics`] at the point it publishes a committed batch, so
//! every figure here is of committed work; the API's middleware records each request.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use iotstream_api::{DeadLetterReason, Named};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::ReadingsPath;

/// Batch-size buckets: 1 message doubling to 8192, past the default `--batch-max` of 5000, so a
/// full batch and a trickle of single messages land in different buckets.
const BATCH_MESSAGE_BUCKETS: (f64, f64, u16) = (1.0, 2.0, 14);
/// Write-time buckets: 1 ms doubling to about 33 s; a healthy commit takes milliseconds, a write
/// retried through an outage (backoff up to 10 s a try) tens of seconds.
const WRITE_SECONDS_BUCKETS: (f64, f64, u16) = (0.001, 2.0, 16);
/// Rebalance-pause buckets: 10 ms doubling to about 82 s; a partition handed over with its lane
/// committed and its checkpoint restored takes tens of milliseconds, one waiting for a write retried
/// through an outage or a large state restored, seconds to a minute.
const REBALANCE_PAUSE_SECONDS_BUCKETS: (f64, f64, u16) = (0.01, 2.0, 14);

/// A dead letter's reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// An API request: the route it matched (a bounded set, never the raw path) and its status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

/// Which way partitions moved in a rebalance: `assigned` to this host or `revoked` from it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    change: &'static str,
}

/// How a transaction stored its readings ([`ReadingsPath`]).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: &'static str,
}

/// What the pipeline's loop is doing: the side of the pipeline it waits on, or its own work.
/// Their shares of the loop's time (`iotstream_pipeline_loop_seconds_total`) say what holds the
/// throughput back: the brokers (`source`), the plugins (`stages`) or PostgreSQL (`database`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoopPhase {
    /// Waiting for the next batch's messages (the consumer's queue, a batch's linger).
    Source,
    /// Validating a batch and running its lanes' plugins, encoding its rows.
    Stages,
    /// Waiting for the oldest batch in flight to commit, before the batch may start its own
    /// transaction (`--batches-in-flight`).
    Database,
}

impl LoopPhase {
    /// Every phase, in the loop's order.
    pub const ALL: [LoopPhase; 3] = [LoopPhase::Source, LoopPhase::Stages, LoopPhase::Database];

    /// The phase's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LoopPhase::Source => "source",
            LoopPhase::Stages => "stages",
            LoopPhase::Database => "database",
        }
    }
}

/// A phase of the pipeline's loop ([`LoopPhase`]).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

/// A Kafka partition.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    partition: i32,
}

/// Counters and histograms of the pipeline and the API, shared (every type is atomic inside).
#[derive(Debug, Clone)]
pub struct PipelineMetrics {
    received: Counter,
    stored: Counter,
    dead_letters: Family<ReasonLabels, Counter>,
    batch_messages: Histogram,
    write_seconds: Histogram,
    reading_writes: Family<PathLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    rebalanced: Family<ChangeLabels, Counter>,
    rebalance_pause_seconds: Histogram,
    loop_seconds: Family<PhaseLabels, Counter<f64, AtomicU64>>,
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        let buckets = |(start, factor, length)| exponential_buckets(start, factor, length);
        let metrics = PipelineMetrics {
            received: Counter::default(),
            stored: Counter::default(),
            dead_letters: Family::default(),
            batch_messages: Histogram::new(buckets(BATCH_MESSAGE_BUCKETS)),
            write_seconds: Histogram::new(buckets(WRITE_SECONDS_BUCKETS)),
            reading_writes: Family::default(),
            requests: Family::default(),
            rebalanced: Family::default(),
            rebalance_pause_seconds: Histogram::new(buckets(REBALANCE_PAUSE_SECONDS_BUCKETS)),
            loop_seconds: Family::default(),
        };
        // Both series from the start: a host that never rebalanced shows 0, not a missing series.
        for change in ["assigned", "revoked"] {
            metrics.rebalanced.get_or_create(&ChangeLabels { change }).inc_by(0);
        }
        for path in ReadingsPath::ALL {
            metrics.reading_writes.get_or_create(&PathLabels { path: path.as_str() }).inc_by(0);
        }
        for phase in LoopPhase::ALL {
            metrics.loop_seconds.get_or_create(&PhaseLabels { phase: phase.as_str() }).inc_by(0.0);
        }
        metrics
    }
}

/// What changed between two readings of [`PipelineMetrics::totals`]: the periodic summary line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Messages consumed into committed batches in the interval.
    pub received: u64,
    /// Readings stored in the interval.
    pub stored: u64,
    /// Stored readings per second over the interval.
    pub stored_per_second: f64,
}

impl Throughput {
    /// Between totals `before` and `after` (each: received, stored), `elapsed` apart.
    pub fn between(before: (u64, u64), after: (u64, u64), elapsed: Duration) -> Throughput {
        let stored = after.1.saturating_sub(before.1);
        let seconds = elapsed.as_secs_f64();
        Throughput {
            received: after.0.saturating_sub(before.0),
            stored,
            stored_per_second: if seconds > 0.0 { stored as f64 / seconds } else { 0.0 },
        }
    }
}

/// What a scrape reads off the live view.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The last database write succeeded.
    pub database_up: bool,
    /// The brokers answer.
    pub broker_up: bool,
    /// The pipeline runs (owns the source, consumes).
    pub pipeline_running: bool,
    /// Since the last checkpoint of this process (`None`: none yet).
    pub checkpoint_age: Option<Duration>,
    /// Messages behind the partition's end, per partition, as librdkafka last reported.
    pub consumer_lag: BTreeMap<i32, i64>,
    /// Partitions the consumer group gave this host (`None`: not told yet).
    pub partitions_owned: Option<usize>,
}

impl PipelineMetrics {
    /// A committed batch: `messages` consumed, `stored` readings new to the database, and the
    /// reason of each message dead-lettered.
    pub fn record_batch(&self, messages: usize, stored: u64, dead_letters: impl Iterator<Item = DeadLetterReason>) {
        self.received.inc_by(messages as u64);
        self.stored.inc_by(stored);
        self.batch_messages.observe(messages as f64);
        for reason in dead_letters {
            self.dead_letters.get_or_create(&ReasonLabels { reason: reason.as_str() }).inc();
        }
    }

    /// A batch's write, from its start to the commit (retries included), and how each of its
    /// transactions stored its readings.
    pub fn record_write(&self, took: Duration, paths: &[ReadingsPath]) {
        self.write_seconds.observe(took.as_secs_f64());
        for path in paths {
            self.reading_writes.get_or_create(&PathLabels { path: path.as_str() }).inc();
        }
    }

    /// A rebalance of this host's consumer group: `assigned` partitions given to it, `revoked`
    /// taken from it, its pipeline stopped for `pause` (`None`: not measured).
    pub fn record_rebalance(&self, assigned: usize, revoked: usize, pause: Option<Duration>) {
        self.rebalanced.get_or_create(&ChangeLabels { change: "assigned" }).inc_by(assigned as u64);
        self.rebalanced.get_or_create(&ChangeLabels { change: "revoked" }).inc_by(revoked as u64);
        if let Some(pause) = pause {
            self.rebalance_pause_seconds.observe(pause.as_secs_f64());
        }
    }

    /// The pipeline's loop spent `took` in `phase`.
    pub fn record_loop(&self, phase: LoopPhase, took: Duration) {
        self.loop_seconds.get_or_create(&PhaseLabels { phase: phase.as_str() }).inc_by(took.as_secs_f64());
    }

    /// Seconds the loop spent in each phase since start, in [`LoopPhase::ALL`]'s order.
    pub fn loop_seconds(&self) -> [f64; 3] {
        LoopPhase::ALL.map(|phase| self.loop_seconds.get_or_create(&PhaseLabels { phase: phase.as_str() }).get())
    }

    /// An API request on `route` answered `status`.
    pub fn record_request(&self, route: &str, status: u16) {
        self.requests.get_or_create(&RequestLabels { route: route.to_owned(), status }).inc();
    }

    /// Messages consumed into committed batches, and readings stored, since start.
    pub fn totals(&self) -> (u64, u64) {
        (self.received.get(), self.stored.get())
    }

    /// Registers every metric, with `snapshot`'s gauges, in `registry`.
    pub fn register(&self, registry: &mut Registry, snapshot: &Snapshot) {
        let received = "Messages consumed into committed batches (a batch replayed after a restart counts again)";
        registry.register("messages_received", received, self.received.clone());
        registry.register("readings_stored", "Readings new to the database", self.stored.clone());
        let dead = "Messages dead-lettered, by reason (a batch replayed after a restart counts again)";
        registry.register("dead_letters", dead, self.dead_letters.clone());
        registry.register("batch_messages", "Messages per committed batch", self.batch_messages.clone());
        let write = "Time from a batch's write to its commit, retries included";
        registry.register("batch_write_seconds", write, self.write_seconds.clone());
        let paths = "Transactions that stored readings, by how: copy (a fresh batch), insert (the messages past the stored positions: one that may replay stored messages), copy_redone (one taken for fresh that held a stored or repeated message after all, written by insert)";
        registry.register("reading_writes", paths, self.reading_writes.clone());
        registry.register("http_requests", "API requests by route and status", self.requests.clone());
        let rebalanced = "Partitions the consumer group moved to (assigned) or from (revoked) this host";
        registry.register("rebalances", rebalanced, self.rebalanced.clone());
        let pause = "Time this host's pipeline stood still for a rebalance";
        registry.register("rebalance_pause_seconds", pause, self.rebalance_pause_seconds.clone());
        let phases = "Time the pipeline's loop spent by phase: waiting for messages (source), running the plugins (stages), waiting for the oldest batch in flight to commit (database); the largest share is what holds the throughput back";
        registry.register("pipeline_loop_seconds", phases, self.loop_seconds.clone());
        let gauge = |registry: &mut Registry, name: &str, help: &str, value: i64| {
            let gauge = Gauge::<i64>::default();
            gauge.set(value);
            registry.register(name, help, gauge);
        };
        gauge(registry, "database_up", "1 when the last database write succeeded", snapshot.database_up.into());
        gauge(registry, "broker_up", "1 when the Kafka brokers answer", snapshot.broker_up.into());
        gauge(
            registry,
            "pipeline_running",
            "1 while the pipeline owns the source and consumes",
            snapshot.pipeline_running.into(),
        );
        if let Some(age) = snapshot.checkpoint_age {
            let seconds = Gauge::<f64, AtomicU64>::default();
            seconds.set(age.as_secs_f64());
            registry.register("checkpoint_age_seconds", "Since this process's last checkpoint", seconds);
        }
        let lag = Family::<PartitionLabels, Gauge>::default();
        for (&partition, &behind) in &snapshot.consumer_lag {
            lag.get_or_create(&PartitionLabels { partition }).set(behind);
        }
        registry.register("consumer_lag_messages", "Messages behind each partition's end", lag);
        if let Some(owned) = snapshot.partitions_owned {
            let help = "Partitions of the topic the consumer group gave this host";
            gauge(registry, "partitions_owned", help, i64::try_from(owned).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_is_the_difference_over_the_interval() {
        let t = Throughput::between((100, 90), (1100, 1040), Duration::from_secs(10));
        assert_eq!(t, Throughput { received: 1000, stored: 950, stored_per_second: 95.0 });
        assert_eq!(Throughput::between((5, 5), (5, 5), Duration::ZERO).stored_per_second, 0.0);
    }

    #[test]
    fn a_batch_and_a_request_encode_exactly() {
        let metrics = PipelineMetrics::default();
        let reasons = [DeadLetterReason::Malformed, DeadLetterReason::Malformed];
        metrics.record_batch(5, 3, reasons.into_iter());
        metrics.record_write(Duration::from_millis(3), &[ReadingsPath::Copy, ReadingsPath::CopyRedone]);
        metrics.record_write(Duration::from_millis(3), &[ReadingsPath::Copy]);
        metrics.record_request("/api/stats", 200);
        metrics.record_rebalance(2, 1, Some(Duration::from_millis(30)));
        metrics.record_rebalance(1, 0, None);
        metrics.record_loop(LoopPhase::Stages, Duration::from_millis(250));
        metrics.record_loop(LoopPhase::Stages, Duration::from_millis(250));
        metrics.record_loop(LoopPhase::Database, Duration::from_millis(1500));
        assert_eq!(metrics.loop_seconds(), [0.0, 0.5, 1.5]);
        let snapshot = Snapshot {
            database_up: true,
            broker_up: false,
            pipeline_running: true,
            checkpoint_age: Some(Duration::from_millis(2500)),
            consumer_lag: BTreeMap::from([(0, 7), (2, 0)]),
            partitions_owned: Some(2),
        };
        let mut registry = Registry::with_prefix("iotstream");
        metrics.register(&mut registry, &snapshot);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).expect("encodes");
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        for expected in [
            "iotstream_messages_received_total 5",
            "iotstream_readings_stored_total 3",
            r#"iotstream_dead_letters_total{reason="malformed"} 2"#,
            r#"iotstream_batch_messages_bucket{le="4"} 0"#,
            r#"iotstream_batch_messages_bucket{le="8"} 1"#,
            "iotstream_batch_messages_sum 5.0",
            "iotstream_batch_messages_count 1",
            r#"iotstream_batch_write_seconds_bucket{le="0.002"} 0"#,
            r#"iotstream_batch_write_seconds_bucket{le="0.004"} 2"#,
            r#"iotstream_reading_writes_total{path="copy"} 2"#,
            r#"iotstream_reading_writes_total{path="insert"} 0"#,
            r#"iotstream_reading_writes_total{path="copy_redone"} 1"#,
            r#"iotstream_http_requests_total{route="/api/stats",status="200"} 1"#,
            "iotstream_database_up 1",
            "iotstream_broker_up 0",
            "iotstream_pipeline_running 1",
            "iotstream_checkpoint_age_seconds 2.5",
            r#"iotstream_consumer_lag_messages{partition="0"} 7"#,
            r#"iotstream_consumer_lag_messages{partition="2"} 0"#,
            r#"iotstream_rebalances_total{change="assigned"} 3"#,
            r#"iotstream_rebalances_total{change="revoked"} 1"#,
            r#"iotstream_rebalance_pause_seconds_bucket{le="0.02"} 0"#,
            r#"iotstream_rebalance_pause_seconds_bucket{le="0.04"} 1"#,
            "iotstream_rebalance_pause_seconds_count 1",
            "iotstream_partitions_owned 2",
            r#"iotstream_pipeline_loop_seconds_total{phase="source"} 0.0"#,
            r#"iotstream_pipeline_loop_seconds_total{phase="stages"} 0.5"#,
            r#"iotstream_pipeline_loop_seconds_total{phase="database"} 1.5"#,
        ] {
            assert!(lines.contains(&expected), "{expected} missing from:\n{text}");
        }
    }
}
