//! `GET /metrics`: every plugin's counters, gauges and call-time histogram in the Prometheus text
//! exposition format (version 0.0.4), encoded by `prometheus-client` from the plugin statuses the
//! live view holds, so they are the numbers `GET /api/plugins` shows.
//!
//! The pipeline's own metrics ([`super::metrics`]) are encoded beside them, as `iotstream_*`.
//!
//! Each series is labelled `plugin` (the file name) and `kind`; `iotstream_plugin_state` has one
//! series per state, 1 for the plugin's current one (the usual encoding of an enum as a gauge).

use std::fmt::Error;

use iotstream_api::{CALL_MICROS_BUCKETS, Named, PluginState, PluginStatus};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::metrics::{PipelineMetrics, Snapshot};

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Encodes the plugins' metrics in the text format.
pub fn encode(plugins: Vec<PluginStatus>) -> Result<String, Error> {
    let mut registry = Registry::with_prefix("iotstream_plugin");
    registry.register_collector(Box::new(Plugins(plugins)));
    to_text(&registry)
}

/// Encodes the pipeline's metrics (`iotstream_*`, with `snapshot`'s gauges) and the plugins'
/// (`iotstream_plugin_*`) in the text format.
pub fn encode_all(
    plugins: Vec<PluginStatus>,
    pipeline: &PipelineMetrics,
    snapshot: &Snapshot,
) -> Result<String, Error> {
    let mut registry = Registry::with_prefix("iotstream");
    pipeline.register(&mut registry, snapshot);
    registry.sub_registry_with_prefix("plugin").register_collector(Box::new(Plugins(plugins)));
    to_text(&registry)
}

fn to_text(registry: &Registry) -> Result<String, Error> {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
    Ok(text)
}

/// The plugins' statuses at one scrape.
#[derive(Debug)]
struct Plugins(Vec<PluginStatus>);

impl Plugins {
    /// One counter or gauge per plugin, `value` of its status.
    fn series(
        &self,
        encoder: &mut DescriptorEncoder,
        (name, help): (&str, &str),
        metric_type: MetricType,
        value: fn(&PluginStatus) -> u64,
    ) -> Result<(), Error> {
        let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
        for plugin in &self.0 {
            let labels = labels(plugin);
            let mut series = metric.encode_family(&labels)?;
            match metric_type {
                MetricType::Counter => series.encode_counter::<NoLabelSet, _, f64>(&value(plugin), None)?,
                _ => series.encode_gauge(&value(plugin))?,
            }
        }
        Ok(())
    }
}

fn labels(plugin: &PluginStatus) -> [(&'static str, &str); 2] {
    [("plugin", plugin.name.as_str()), ("kind", plugin.kind.as_str())]
}

impl Collector for Plugins {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), Error> {
        let e = &mut encoder;
        use MetricType::{Counter, Gauge};
        self.series(e, ("calls", "Calls made to the plugin"), Counter, |p| p.calls)?;
        self.series(e, ("readings", "Readings passed to the plugin"), Counter, |p| p.readings_in)?;
        self.series(e, ("outputs", "Detections or windows the plugin returned"), Counter, |p| p.outputs)?;
        let errors = "Calls that failed (trap, deadline, memory cap, refusal, malformed output)";
        self.series(e, ("errors", errors), Counter, |p| p.errors)?;
        let restarts = "Instances re-created from the last good state after a failure";
        self.series(e, ("restarts", restarts), Counter, |p| p.restarts)?;
        let replacements = "Instances replaced at a checkpoint by a fresh one holding their state, their memory grown past its ceiling";
        self.series(e, ("memory_replacements", replacements), Counter, |p| p.memory_replacements)?;
        let skipped = "Readings not passed in while the plugin backed off or was quarantined";
        self.series(e, ("skipped_readings", skipped), Counter, |p| p.skipped_readings)?;
        let failures = ("consecutive_failures", "Failed calls in a row");
        self.series(e, failures, Gauge, |p| u64::from(p.consecutive_failures))?;
        self.series(e, ("memory_bytes", "Linear memory of the live instance"), Gauge, |p| p.memory_bytes)?;
        let state = ("exported_state_bytes", "Size of the last exported state, the restart point");
        self.series(e, state, Gauge, |p| p.state_bytes)?;

        let mut metric = e.encode_descriptor(
            "state",
            "1 for the plugin's state: running, backoff or quarantined",
            None,
            MetricType::Gauge,
        )?;
        for plugin in &self.0 {
            for &state in PluginState::ALL {
                let labels =
                    [("plugin", plugin.name.as_str()), ("kind", plugin.kind.as_str()), ("state", state.as_str())];
                metric.encode_family(&labels)?.encode_gauge(&u64::from(plugin.state == state))?;
            }
        }

        let mut metric = e.encode_descriptor("call_duration_seconds", "Time per call", None, MetricType::Histogram)?;
        for plugin in &self.0 {
            // The status holds cumulative counts; the encoder wants each bucket's own.
            let mut below = 0;
            let buckets: Vec<(f64, u64)> = CALL_MICROS_BUCKETS
                .iter()
                .zip(&plugin.call_micros_buckets)
                .map(|(&bound, &at_most)| {
                    let own = at_most.saturating_sub(below);
                    below = at_most;
                    (bound as f64 / 1e6, own)
                })
                .collect();
            let seconds = plugin.busy_micros as f64 / 1e6;
            metric.encode_family(&labels(plugin))?.encode_histogram::<NoLabelSet>(
                seconds,
                plugin.calls,
                &buckets,
                None,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotstream_api::StageKind;

    #[test]
    fn known_counters_encode_exactly() {
        let mut call_micros_buckets = vec![0; CALL_MICROS_BUCKETS.len()];
        // Two calls of at most 20 µs, one of at most 5 ms (cumulative counts).
        call_micros_buckets[1..].fill(2);
        call_micros_buckets[8..].fill(3);
        let plugin = PluginStatus {
            name: "zscore".into(),
            kind: StageKind::Detector,
            version: "0.1.0".into(),
            contract: "0.2.0".into(),
            layer: None,
            calls: 3,
            readings_in: 1500,
            outputs: 1000,
            errors: 1,
            restarts: 1,
            memory_replacements: 2,
            mean_call_micros: 1010.0,
            last_error: Some("plugin zscore trapped: wasm trap".into()),
            state: PluginState::Backoff,
            consecutive_failures: 1,
            skipped_readings: 500,
            memory_bytes: 1_179_648,
            state_bytes: 2048,
            p50_call_micros: 15.0,
            p99_call_micros: 4900.0,
            busy_micros: 3030,
            call_micros_buckets,
        };
        let expected = r#"# HELP iotstream_plugin_calls_total Calls made to the plugin
# TYPE iotstream_plugin_calls_total counter
iotstream_plugin_calls_total{plugin="zscore",kind="detector"} 3
# HELP iotstream_plugin_readings_total Readings passed to the plugin
# TYPE iotstream_plugin_readings_total counter
iotstream_plugin_readings_total{plugin="zscore",kind="detector"} 1500
# HELP iotstream_plugin_outputs_total Detections or windows the plugin returned
# TYPE iotstream_plugin_outputs_total counter
iotstream_plugin_outputs_total{plugin="zscore",kind="detector"} 1000
# HELP iotstream_plugin_errors_total Calls that failed (trap, deadline, memory cap, refusal, malformed output)
# TYPE iotstream_plugin_errors_total counter
iotstream_plugin_errors_total{plugin="zscore",kind="detector"} 1
# HELP iotstream_plugin_restarts_total Instances re-created from the last good state after a failure
# TYPE iotstream_plugin_restarts_total counter
iotstream_plugin_restarts_total{plugin="zscore",kind="detector"} 1
# HELP iotstream_plugin_memory_replacements_total Instances replaced at a checkpoint by a fresh one holding their state, their memory grown past its ceiling
# TYPE iotstream_plugin_memory_replacements_total counter
iotstream_plugin_memory_replacements_total{plugin="zscore",kind="detector"} 2
# HELP iotstream_plugin_skipped_readings_total Readings not passed in while the plugin backed off or was quarantined
# TYPE iotstream_plugin_skipped_readings_total counter
iotstream_plugin_skipped_readings_total{plugin="zscore",kind="detector"} 500
# HELP iotstream_plugin_consecutive_failures Failed calls in a row
# TYPE iotstream_plugin_consecutive_failures gauge
iotstream_plugin_consecutive_failures{plugin="zscore",kind="detector"} 1
# HELP iotstream_plugin_memory_bytes Linear memory of the live instance
# TYPE iotstream_plugin_memory_bytes gauge
iotstream_plugin_memory_bytes{plugin="zscore",kind="detector"} 1179648
# HELP iotstream_plugin_exported_state_bytes Size of the last exported state, the restart point
# TYPE iotstream_plugin_exported_state_bytes gauge
iotstream_plugin_exported_state_bytes{plugin="zscore",kind="detector"} 2048
# HELP iotstream_plugin_state 1 for the plugin's state: running, backoff or quarantined
# TYPE iotstream_plugin_state gauge
iotstream_plugin_state{plugin="zscore",kind="detector",state="running"} 0
iotstream_plugin_state{plugin="zscore",kind="detector",state="backoff"} 1
iotstream_plugin_state{plugin="zscore",kind="detector",state="quarantined"} 0
# HELP iotstream_plugin_call_duration_seconds Time per call
# TYPE iotstream_plugin_call_duration_seconds histogram
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="1e-05"} 0
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="2e-05"} 2
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="5e-05"} 2
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="0.0001"} 2
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="0.0002"} 2
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="0.0005"} 2
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="0.001"} 2
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="0.002"} 2
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="0.005"} 3
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="0.01"} 3
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="0.02"} 3
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="0.05"} 3
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="0.1"} 3
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="0.2"} 3
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="0.5"} 3
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="1"} 3
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="2"} 3
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="5"} 3
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="10"} 3
iotstream_plugin_call_duration_seconds_bucket{plugin="zscore",kind="detector",le="+Inf"} 3
iotstream_plugin_call_duration_seconds_sum{plugin="zscore",kind="detector"} 0.00303
iotstream_plugin_call_duration_seconds_count{plugin="zscore",kind="detector"} 3
"#;
        assert_eq!(encode(vec![plugin]).expect("encodes"), expected);
    }
}
