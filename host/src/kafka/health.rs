//! Whether the brokers answer, as the consumer sees them: [`SourceHealth`], fed by every message
//! received, by librdkafka's errors and by its statistics' broker states (through
//! [`SourceContext`]: a connected broker marks them up again on an idle topic, where no message
//! would), read by the API and the
//! dashboard, and by a replay that must not count a broker outage as waiting for messages.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::statistics::Statistics;
use tracing::{debug, warn};

/// Whether the brokers are reachable, as the consumer last saw them.
#[derive(Debug, Default)]
pub struct SourceHealth {
    down: AtomicBool,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Messages behind each partition's end, from librdkafka's statistics.
    consumer_lag: Mutex<BTreeMap<i32, i64>>,
}

impl SourceHealth {
    /// Whether the brokers answer (false after an error until the next message arrives).
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    /// Client errors since start.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The last client error.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or_default()
    }

    pub(super) fn record_error(&self, error: String) {
        self.down.store(true, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error);
        }
    }

    pub(super) fn record_message(&self) {
        self.down.store(false, Ordering::Relaxed);
    }

    /// Messages behind each partition's end, as librdkafka last reported (partitions it does not
    /// know the lag of yet are left out).
    pub fn consumer_lag(&self) -> BTreeMap<i32, i64> {
        self.consumer_lag.lock().map(|lag| lag.clone()).unwrap_or_default()
    }

    fn record_lag(&self, lag: BTreeMap<i32, i64>) {
        if let Ok(mut stored) = self.consumer_lag.lock() {
            *stored = lag;
        }
    }

    /// librdkafka's statistics report a broker connected.
    fn record_connected(&self) {
        if !self.is_up() {
            debug!("a kafka broker is connected again");
        }
        self.down.store(false, Ordering::Relaxed);
    }
}

/// Receives librdkafka's global errors (all brokers down, transport failures) into the health.
pub(super) struct SourceContext {
    pub(super) health: Arc<SourceHealth>,
}

impl ClientContext for SourceContext {
    fn error(&self, error: RdKafkaError, reason: &str) {
        if self.health.is_up() {
            warn!(error = %error, reason, "kafka client error");
        } else {
            debug!(error = %error, reason, "kafka client error");
        }
        self.health.record_error(format!("{error}: {reason}"));
    }

    /// Every `statistics.interval.ms`: a broker connected means the brokers answer, even while no
    /// message arrives to say so (an idle topic after a passing error).
    fn stats(&self, statistics: Statistics) {
        if any_broker_up(&statistics) {
            self.health.record_connected();
        }
        self.health.record_lag(consumer_lag(&statistics));
    }

    /// librdkafka's own log lines, at most at WARN (the errors they describe reach [`Self::error`],
    /// which the health and the API report; an outage is not an ERROR of this host).
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as Level;
        match level {
            Level::Emerg | Level::Alert | Level::Critical | Level::Error | Level::Warning => {
                debug!(target: "librdkafka", facility = fac, "{message}")
            }
            _ => tracing::trace!(target: "librdkafka", facility = fac, "{message}"),
        }
    }
}

/// Whether a statistics report shows a real broker (not librdkafka's internal or logical ones)
/// connected.
fn any_broker_up(statistics: &Statistics) -> bool {
    statistics.brokers.values().any(|b| matches!(b.source.as_str(), "learned" | "configured") && b.state == "UP")
}

/// Each partition's consumer lag in a statistics report: librdkafka's internal partition (-1) and
/// partitions whose lag is not known yet (-1) are left out.
fn consumer_lag(statistics: &Statistics) -> BTreeMap<i32, i64> {
    let partitions = statistics.topics.values().flat_map(|t| t.partitions.values());
    partitions.filter(|p| p.partition >= 0 && p.consumer_lag >= 0).map(|p| (p.partition, p.consumer_lag)).collect()
}

impl ConsumerContext for SourceContext {}
