//! The simulated sensor fleet: realistic values with daily cycles and noise, and labelled anomaly
//! episodes (spikes, drifts, stuck values). Pure and seeded: the same seed gives the same stream.

use chrono::{DateTime, Timelike, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::reading::{Reading, SensorType};

/// The kinds of location, as the seed names them.
pub const LOCATION_KINDS: [&str; 5] = ["server_room", "office", "warehouse", "laboratory", "manufacturing_floor"];

/// How a sensor of a type behaves at a kind of location: mean, daily swing (peak at 15:00), noise.
fn profile(sensor_type: SensorType, location_kind: usize) -> (f64, f64, f64) {
    use SensorType::*;
    match (sensor_type, location_kind) {
        (Temperature, 0) => (20.0, 0.8, 0.2),
        (Temperature, 1) => (21.5, 2.0, 0.3),
        (Temperature, 2) => (14.0, 4.0, 0.5),
        (Temperature, 3) => (20.0, 0.6, 0.15),
        (Temperature, _) => (26.0, 3.0, 0.6),
        (Humidity, 0) => (40.0, 2.0, 0.8),
        (Humidity, 2) => (60.0, 8.0, 1.5),
        (Humidity, 4) => (50.0, 6.0, 1.2),
        (Humidity, _) => (45.0, 5.0, 1.0),
        (AirQuality, 0) => (20.0, 3.0, 2.0),
        (AirQuality, 1) => (35.0, 10.0, 3.0),
        (AirQuality, 2) => (50.0, 12.0, 4.0),
        (AirQuality, 3) => (25.0, 5.0, 2.0),
        (AirQuality, _) => (80.0, 25.0, 6.0),
        (Pressure, _) => (1013.25, 1.5, 0.3),
        (Co2, 0) => (420.0, 20.0, 8.0),
        (Co2, 1) => (600.0, 250.0, 15.0),
        (Co2, 2) => (450.0, 50.0, 10.0),
        (Co2, 3) => (500.0, 100.0, 12.0),
        (Co2, _) => (700.0, 200.0, 20.0),
    }
}

/// Physical bounds the simulator never crosses.
fn clamp(sensor_type: SensorType, value: f64) -> f64 {
    let (low, high) = sensor_type.physical_range();
    // Outdoor air holds about 420 ppm of CO2: no room reads much below it.
    let low = if sensor_type == SensorType::Co2 { 250.0 } else { low };
    value.clamp(low, high)
}

/// An anomaly in progress on one sensor.
#[derive(Debug, Clone, PartialEq)]
enum Episode {
    /// One reading far off.
    Spike { offset: f64 },
    /// A growing offset: `step` more each reading, for `remaining` readings.
    Drift { step: f64, offset: f64, remaining: u32 },
    /// The same value repeated for `remaining` readings.
    Stuck { value: f64, remaining: u32 },
}

#[derive(Debug, Clone)]
struct SimSensor {
    id: String,
    sensor_type: SensorType,
    location: String,
    location_kind: usize,
    episode: Option<Episode>,
    last: f64,
}

/// Counts of what the fleet produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetCounts {
    /// Readings produced.
    pub readings: u64,
    /// Readings labelled anomalous.
    pub anomalous: u64,
    /// Spike episodes started.
    pub spikes: u64,
    /// Drift episodes started.
    pub drifts: u64,
    /// Stuck episodes started.
    pub stuck: u64,
}

/// The fleet: `n` sensors over the five types and five kinds of location, read round-robin.
#[derive(Debug, Clone)]
pub struct Fleet {
    sensors: Vec<SimSensor>,
    rng: StdRng,
    anomaly_rate: f64,
    next: usize,
    counts: FleetCounts,
}

impl Fleet {
    /// `sensors` sensors; each reading starts an anomaly episode with probability `anomaly_rate`.
    pub fn new(sensors: usize, anomaly_rate: f64, seed: u64) -> Self {
        let sensors = (0..sensors.max(1))
            .map(|i| {
                let sensor_type = SensorType::ALL[i % 5];
                let location_kind = (i / 5) % 5;
                let location = format!("{}_{}", LOCATION_KINDS[location_kind], i / 25 + 1);
                let (mean, _, _) = profile(sensor_type, location_kind);
                SimSensor {
                    id: format!("{}_{location}_{i:03}", sensor_type.as_str()),
                    sensor_type,
                    location,
                    location_kind,
                    episode: None,
                    last: mean,
                }
            })
            .collect();
        Fleet {
            sensors,
            rng: StdRng::seed_from_u64(seed),
            anomaly_rate: anomaly_rate.clamp(0.0, 1.0),
            next: 0,
            counts: FleetCounts::default(),
        }
    }

    /// What was produced so far.
    pub fn counts(&self) -> FleetCounts {
        self.counts
    }

    /// Number of sensors.
    pub fn len(&self) -> usize {
        self.sensors.len()
    }

    /// Whether the fleet is empty (never: it has at least one sensor).
    pub fn is_empty(&self) -> bool {
        self.sensors.is_empty()
    }

    /// The next sensor's reading at `at`.
    pub fn next_reading(&mut self, at: DateTime<Utc>) -> Reading {
        let index = self.next;
        self.next = (self.next + 1) % self.sensors.len();
        let rng = &mut self.rng;
        let sensor = &mut self.sensors[index];
        let (mean, swing, noise) = profile(sensor.sensor_type, sensor.location_kind);
        let hour = f64::from(at.hour()) + f64::from(at.minute()) / 60.0 + f64::from(at.second()) / 3600.0;
        let z: f64 = rng.sample(StandardNormal);
        let normal = mean + swing * (std::f64::consts::TAU * (hour - 9.0) / 24.0).sin() + noise * z;
        if sensor.episode.is_none() && rng.random_bool(self.anomaly_rate) {
            // A scale for "far": the larger of the noise and a tenth of the daily swing.
            let scale = noise.max(swing * 0.1);
            let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            let kind = rng.random_range(0..4);
            sensor.episode = Some(match kind {
                0 | 1 => {
                    self.counts.spikes += 1;
                    Episode::Spike { offset: sign * scale * rng.random_range(6.0..10.0) }
                }
                2 => {
                    self.counts.drifts += 1;
                    let remaining = rng.random_range(30..120);
                    let total = sign * scale * rng.random_range(8.0..15.0);
                    Episode::Drift { step: total / f64::from(remaining), offset: 0.0, remaining }
                }
                _ => {
                    self.counts.stuck += 1;
                    Episode::Stuck { value: sensor.last, remaining: rng.random_range(20..60) }
                }
            });
        }
        let (value, anomalous) = match sensor.episode.take() {
            None => (normal, false),
            Some(Episode::Spike { offset }) => (normal + offset, true),
            Some(Episode::Drift { step, offset, remaining }) => {
                let offset = offset + step;
                if remaining > 1 {
                    sensor.episode = Some(Episode::Drift { step, offset, remaining: remaining - 1 });
                }
                (normal + offset, true)
            }
            Some(Episode::Stuck { value, remaining }) => {
                if remaining > 1 {
                    sensor.episode = Some(Episode::Stuck { value, remaining: remaining - 1 });
                }
                (value, true)
            }
        };
        let value = (clamp(sensor.sensor_type, value) * 100.0).round() / 100.0;
        sensor.last = value;
        self.counts.readings += 1;
        self.counts.anomalous += u64::from(anomalous);
        Reading {
            sensor_id: sensor.id.as_str().into(),
            sensor_type: sensor.sensor_type,
            location: sensor.location.as_str().into(),
            value,
            timestamp: at,
            anomaly: anomalous,
            unit: sensor.sensor_type.default_unit().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, hour, 0, 0).single().expect("valid time")
    }

    #[test]
    fn covers_every_type_and_kind_of_location_and_is_seeded() {
        let mut fleet = Fleet::new(25, 0.0, 1);
        let readings: Vec<Reading> = (0..25).map(|_| fleet.next_reading(at(12))).collect();
        for t in SensorType::ALL {
            assert_eq!(readings.iter().filter(|r| r.sensor_type == t).count(), 5);
        }
        for kind in LOCATION_KINDS {
            assert_eq!(readings.iter().filter(|r| r.location == format!("{kind}_1")).count(), 5);
        }
        assert_eq!(readings[0].sensor_id, "temperature_server_room_1_000");
        let mut again = Fleet::new(25, 0.0, 1);
        assert_eq!(again.next_reading(at(12)), readings[0]);
    }

    #[test]
    fn daily_cycle_peaks_in_the_afternoon_within_physical_units() {
        // The office CO2 sensor (index 9): mean 600 ppm, swing 250, noise 15.
        let mut fleet = Fleet::new(10, 0.0, 3);
        let mut co2 = |hour| {
            (0..200)
                .map(|_| {
                    let r: Vec<Reading> = (0..10).map(|_| fleet.next_reading(at(hour))).collect();
                    r[9].value
                })
                .sum::<f64>()
                / 200.0
        };
        let (afternoon, night) = (co2(15), co2(3));
        assert!((afternoon - 850.0).abs() < 10.0, "15:00 mean {afternoon}");
        assert!((night - 350.0).abs() < 10.0, "03:00 mean {night}");
    }

    #[test]
    fn anomalies_are_labelled_and_counted() {
        let mut fleet = Fleet::new(5, 0.02, 9);
        let readings: Vec<Reading> = (0..20_000).map(|_| fleet.next_reading(at(10))).collect();
        let counts = fleet.counts();
        assert_eq!(counts.readings, 20_000);
        assert_eq!(readings.iter().filter(|r| r.anomaly).count() as u64, counts.anomalous);
        assert!(counts.spikes > 0 && counts.drifts > 0 && counts.stuck > 0, "{counts:?}");
        let share = counts.anomalous as f64 / 20_000.0;
        assert!(share > 0.05 && share < 0.6, "anomalous share {share}");
        // A stuck episode repeats one value exactly.
        let humidity: Vec<&Reading> = readings.iter().filter(|r| r.sensor_type == SensorType::Humidity).collect();
        assert!(humidity.windows(5).any(|w| w.iter().all(|r| r.anomaly && r.value == w[0].value)));
    }
}
