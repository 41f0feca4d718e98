//! A detector against the simulator's own labels: the demo's stream (by default 50 sensors,
//! 110 000 readings at 200 a second, seed 42, as `iotstream run` produces it), every reading
//! labelled by the episode (spike, drift, stuck) that made it.
//!
//! Event level, per sensor: an **episode** is a run of consecutive labelled readings, an **alarm**
//! a run of consecutive flagged ones; an alarm is true when it overlaps an episode, an episode is
//! detected when one of its readings is flagged. Also the share of readings flagged against the
//! share labelled: what an operator sees against what happened.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::nab::Events;
use crate::plugins::bindings::{Detection, Verdict};
use crate::plugins::{Plugin, PluginError, SensorCatalog};
use crate::reading::{Reading, SensorType};
use crate::simulate::Fleet;

/// Readings per detector call, as the pipeline's default batch.
const BATCH: usize = 5000;

/// The simulated stream.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct SimulatedStream {
    /// Readings of the simulated stream.
    #[arg(long = "simulated-readings", default_value_t = 110_000)]
    pub readings: usize,
    /// Simulated sensors.
    #[arg(long = "simulated-sensors", default_value_t = 50)]
    pub sensors: usize,
    /// Readings per second of event time (the simulator's default pace).
    #[arg(long = "simulated-rate", default_value_t = 200.0)]
    pub rate: f64,
    /// Probability that a reading starts an anomaly episode (the simulator's default).
    #[arg(long = "simulated-anomaly-rate", default_value_t = 0.002)]
    pub anomaly_rate: f64,
    /// The simulator's seed.
    #[arg(long = "simulated-seed", default_value_t = 42)]
    pub seed: u64,
    /// Kafka partitions the stream is keyed over (by sensor id), each judged by its own instance
    /// of the detector, as a host's lanes judge them (docs/scaling.md); 1 judges the whole stream
    /// with one instance (one model per sensor type over every sensor).
    #[arg(long = "simulated-partitions", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,
}

/// How a detector did on the simulated stream, overall or for one sensor type.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimulatedReport {
    /// The detector.
    pub detector: String,
    /// A sensor type, or `all`.
    pub sensor_type: String,
    /// Readings.
    pub readings: usize,
    /// Readings labelled anomalous.
    pub labelled: usize,
    /// Readings the detector flagged.
    pub flagged: usize,
    /// Readings labelled and flagged.
    pub labelled_and_flagged: usize,
    /// Episodes, detected episodes, alarms and true alarms.
    pub events: Events,
    /// True alarms over alarms.
    pub precision: f64,
    /// Detected episodes over episodes.
    pub recall: f64,
    /// Their harmonic mean.
    pub f1: f64,
}

/// One sensor's labels and the detector's flags, reading by reading.
type LabelsAndFlags = (Vec<bool>, Vec<bool>);

/// The stream, in order, with its labels.
pub fn stream(config: &SimulatedStream) -> Vec<Reading> {
    let mut fleet = Fleet::new(config.sensors, config.anomaly_rate, config.seed);
    // 08:00 UTC: the fleet's daily cycle is rising, as in a working day's demo.
    let start = Utc.with_ymd_and_hms(2026, 1, 5, 8, 0, 0).single().unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let step_us = (1e6 / config.rate.max(1e-3)) as i64;
    (0..config.readings).map(|i| fleet.next_reading(start + Duration::microseconds(step_us * i as i64))).collect()
}

/// The partition of `partitions` a sensor's readings are keyed to: a stable hash of its id, as a
/// producer keying by sensor id spreads them (not librdkafka's own hash: what matters here is that
/// each partition holds a fixed share of the sensors).
fn partition_of(sensor_id: &str, partitions: u32) -> u32 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same split in every run.
    let mut hasher = std::hash::DefaultHasher::new();
    sensor_id.hash(&mut hasher);
    (hasher.finish() % u64::from(partitions.max(1))) as u32
}

/// Runs fresh instances of `plugin` over `readings`, one per partition of `partitions` (each over
/// its partition's readings, in order, in batches), and returns the detections in the order of
/// `readings`.
pub fn detect_by_partition(
    plugin: &Plugin,
    config: Option<String>,
    readings: &[Reading],
    partitions: u32,
) -> Result<Vec<Detection>, PluginError> {
    let mut lanes: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (index, reading) in readings.iter().enumerate() {
        lanes.entry(partition_of(&reading.sensor_id, partitions)).or_default().push(index);
    }
    let mut detections: Vec<Option<Detection>> = vec![None; readings.len()];
    for indexes in lanes.values() {
        let mut instance = plugin.new_instance(config.clone())?;
        let lane: Vec<Reading> = indexes.iter().map(|&i| readings[i].clone()).collect();
        for (&index, detection) in indexes.iter().zip(detect(&mut instance, &lane)?) {
            detections[index] = Some(detection);
        }
    }
    Ok(detections.into_iter().flatten().collect())
}

/// Runs a fresh instance of `plugin` over `readings` in batches.
pub fn detect(plugin: &mut Plugin, readings: &[Reading]) -> Result<Vec<Detection>, PluginError> {
    let mut catalog = SensorCatalog::default();
    let mut detections = Vec::with_capacity(readings.len());
    for chunk in readings.chunks(BATCH) {
        let batch: Vec<_> = chunk.iter().map(|r| catalog.wit_reading(r)).collect();
        detections.extend(plugin.detect(&catalog, &batch)?);
    }
    Ok(detections)
}

/// The report of `detections` against the labels of `readings`: overall, then per sensor type.
pub fn report(detector: &str, readings: &[Reading], detections: &[Detection]) -> Vec<SimulatedReport> {
    let mut by_type: BTreeMap<Option<SensorType>, BTreeMap<&str, LabelsAndFlags>> = BTreeMap::new();
    for (reading, detection) in readings.iter().zip(detections) {
        let flagged = detection.verdict == Verdict::Anomaly;
        for key in [None, Some(reading.sensor_type)] {
            let (labels, flags) = by_type.entry(key).or_default().entry(reading.sensor_id.as_str()).or_default();
            labels.push(reading.anomaly);
            flags.push(flagged);
        }
    }
    by_type
        .into_iter()
        .map(|(sensor_type, sensors)| {
            let name = sensor_type.map_or("all", |t| t.as_str());
            summarise(detector, name, sensors.values())
        })
        .collect()
}

fn summarise<'a>(
    detector: &str,
    sensor_type: &str,
    sensors: impl Iterator<Item = &'a LabelsAndFlags>,
) -> SimulatedReport {
    let mut report = SimulatedReport {
        detector: detector.to_owned(),
        sensor_type: sensor_type.to_owned(),
        readings: 0,
        labelled: 0,
        flagged: 0,
        labelled_and_flagged: 0,
        events: Events::default(),
        precision: 0.0,
        recall: 0.0,
        f1: 0.0,
    };
    for (labels, flags) in sensors {
        report.readings += labels.len();
        report.labelled += labels.iter().filter(|l| **l).count();
        report.flagged += flags.iter().filter(|f| **f).count();
        report.labelled_and_flagged += labels.iter().zip(flags).filter(|(l, f)| **l && **f).count();
        let episodes = super::nab::runs(labels, 0);
        report.events.add(Events::count(flags, &episodes, 0));
    }
    (report.precision, report.recall) = (report.events.precision(), report.events.recall());
    let sum = report.precision + report.recall;
    report.f1 = if sum > 0.0 { 2.0 * report.precision * report.recall / sum } else { 0.0 };
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn episodes_and_alarms_are_runs_per_sensor() {
        // Sensor a: an episode over readings 2-4, flags at 3 (true) and 7 (false alarm).
        // Sensor b: an episode at 5, missed; a two-reading alarm 0-1 (false).
        let a = (
            vec![false, false, true, true, true, false, false, false],
            vec![false, false, false, true, false, false, false, true],
        );
        let b = (vec![false, false, false, false, false, true], vec![true, true, false, false, false, false]);
        let r = summarise("d", "all", [&a, &b].into_iter());
        assert_eq!((r.readings, r.labelled, r.flagged, r.labelled_and_flagged), (14, 4, 4, 1));
        assert_eq!(r.events, Events { windows: 2, detected: 1, alarms: 3, true_alarms: 1 });
        assert!((r.precision - 1.0 / 3.0).abs() < 1e-12 && (r.recall - 0.5).abs() < 1e-12);
        assert!((r.f1 - 0.4).abs() < 1e-12);
    }
}
