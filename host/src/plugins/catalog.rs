//! The host's sensor catalog: the small integer keys readings carry across the WIT boundary.
//!
//! Keys are dense and assigned in arrival order. Each plugin instance remembers how many of them it
//! was told about, so a batch declares only the sensors that are new to it (usually none).

use std::collections::HashMap;

use super::bindings::{Reading as WitReading, Sensor};
use crate::reading::Reading;

/// Every sensor seen by this process, by key.
#[derive(Debug, Default)]
pub struct SensorCatalog {
    sensors: Vec<Sensor>,
    by_id: HashMap<String, u32>,
}

impl SensorCatalog {
    /// The key of the sensor that took `reading`, declaring a new key for a new sensor (or for a
    /// known sensor id that now reports another type or location).
    pub fn key_for(&mut self, reading: &Reading) -> u32 {
        let wit_type = reading.sensor_type.into();
        if let Some(&key) = self.by_id.get(&reading.sensor_id) {
            let known = &self.sensors[key as usize];
            if known.sensor_type == wit_type && known.location == reading.location {
                return key;
            }
        }
        let key = self.sensors.len() as u32;
        self.sensors.push(Sensor {
            key,
            sensor_id: reading.sensor_id.clone(),
            sensor_type: wit_type,
            location: reading.location.clone(),
        });
        self.by_id.insert(reading.sensor_id.clone(), key);
        key
    }

    /// `reading` as it crosses the WIT boundary: its sensor's key (declared if new), event time and
    /// value, not yet flagged.
    pub fn wit_reading(&mut self, reading: &Reading) -> WitReading {
        WitReading {
            sensor: self.key_for(reading),
            timestamp_ms: reading.timestamp.timestamp_millis(),
            value: reading.value,
            flagged: false,
        }
    }

    /// The sensors from key `from` on (what a plugin that knows `from` keys has not been told).
    pub fn since(&self, from: usize) -> &[Sensor] {
        self.sensors.get(from..).unwrap_or_default()
    }

    /// The sensor behind `key`.
    pub fn get(&self, key: u32) -> Option<&Sensor> {
        self.sensors.get(key as usize)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.sensors.len()
    }

    /// Whether no sensor was seen yet.
    pub fn is_empty(&self) -> bool {
        self.sensors.is_empty()
    }
}
