//! The host's sensor catalog: the small integer keys readings carry across the WIT boundary.
//!
//! Keys are dense and assigned in arrival order. Each plugin instance remembers how many of them it
//! was told about, so a batch declares only the sensors that are new to it (usually none).

use std::collections::HashMap;

use super::bindings::{Reading as WitReading, Sensor};
use crate::reading::SensorIdentity;
use crate::reading::{Reading, SensorType};

/// Keys a catalog may hold beyond two per sensor id before it is compacted: a sensor that moves or
/// changes type now and then costs a few keys; one that flips on every reading (or a producer
/// that cycles locations) would otherwise grow the catalog, and every checkpoint, without end.
const COMPACTION_SLACK: usize = 1024;

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
        if let Some(&key) = self.by_id.get(reading.sensor_id.as_str()) {
            let known = &self.sensors[key as usize];
            if known.sensor_type == wit_type && known.location == reading.location {
                return key;
            }
        }
        let key = self.sensors.len() as u32;
        self.sensors.push(Sensor {
            key,
            sensor_id: reading.sensor_id.to_string(),
            sensor_type: wit_type,
            location: reading.location.to_string(),
        });
        self.by_id.insert(reading.sensor_id.to_string(), key);
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

    /// A catalog with `entries` at keys 0, 1, ... (from a checkpoint: the keys its states use).
    pub fn restore(entries: &[SensorIdentity]) -> Self {
        let mut catalog = SensorCatalog::default();
        for (key, entry) in entries.iter().enumerate() {
            catalog.sensors.push(Sensor {
                key: key as u32,
                sensor_id: entry.sensor_id.clone(),
                sensor_type: entry.sensor_type.into(),
                location: entry.location.clone(),
            });
            // As in `key_for`: a sensor id maps to its newest key.
            catalog.by_id.insert(entry.sensor_id.clone(), key as u32);
        }
        catalog
    }

    /// Every sensor, in key order, for a checkpoint.
    pub fn entries(&self) -> Vec<SensorIdentity> {
        self.sensors
            .iter()
            .map(|s| SensorIdentity {
                sensor_id: s.sensor_id.clone(),
                sensor_type: SensorType::from(s.sensor_type),
                location: s.location.clone(),
            })
            .collect()
    }

    /// The sensors from key `from` on (what a plugin that knows `from` keys has not been told).
    pub fn since(&self, from: usize) -> &[Sensor] {
        self.sensors.get(from..).unwrap_or_default()
    }

    /// The sensor behind `key`.
    pub fn get(&self, key: u32) -> Option<&Sensor> {
        self.sensors.get(key as usize)
    }

    /// Whether the catalog holds so many keys of past identities (sensors that moved or changed
    /// type) that it should be compacted.
    pub fn needs_compaction(&self) -> bool {
        self.sensors.len() > 2 * self.by_id.len() + COMPACTION_SLACK
    }

    /// This catalog with only each sensor id's current identity, keyed again from 0 in the order
    /// of their current keys. Every plugin must then be told the new keys (the pipeline hands each
    /// its state over, see `Plugin::renumber`).
    pub fn compacted(&self) -> SensorCatalog {
        let mut current: Vec<u32> = self.by_id.values().copied().collect();
        current.sort_unstable();
        let entries: Vec<SensorIdentity> = current
            .into_iter()
            .filter_map(|key| self.get(key))
            .map(|s| SensorIdentity {
                sensor_id: s.sensor_id.clone(),
                sensor_type: SensorType::from(s.sensor_type),
                location: s.location.clone(),
            })
            .collect();
        SensorCatalog::restore(&entries)
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

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn reading(sensor_id: &str, sensor_type: SensorType, location: &str) -> Reading {
        Reading {
            sensor_id: sensor_id.into(),
            sensor_type,
            location: location.into(),
            value: 1.0,
            timestamp: Utc.timestamp_millis_opt(0).single().expect("epoch"),
            anomaly: false,
            unit: Default::default(),
        }
    }

    #[test]
    fn a_restored_catalog_gives_every_sensor_its_checkpointed_key() {
        let mut catalog = SensorCatalog::default();
        let a = reading("a", SensorType::Co2, "lab_1");
        let b = reading("b", SensorType::Humidity, "office_1");
        let moved = reading("a", SensorType::Co2, "lab_2");
        assert_eq!([catalog.key_for(&a), catalog.key_for(&b), catalog.key_for(&moved)], [0, 1, 2]);
        let mut restored = SensorCatalog::restore(&catalog.entries());
        assert_eq!(restored.entries(), catalog.entries());
        // Known sensors keep their keys (a moved sensor its newest one); a new one gets the next.
        assert_eq!(restored.key_for(&b), 1);
        assert_eq!(restored.key_for(&moved), 2);
        assert_eq!(restored.key_for(&reading("c", SensorType::Pressure, "hall")), 3);
        assert_eq!(restored.since(3).len(), 1);
    }

    #[test]
    fn compaction_keeps_each_sensors_current_identity_in_key_order() {
        let mut catalog = SensorCatalog::default();
        catalog.key_for(&reading("steady", SensorType::Humidity, "office_1"));
        let mut moves = 0;
        while !catalog.needs_compaction() {
            catalog.key_for(&reading("mover", SensorType::Co2, &format!("room_{moves}")));
            moves += 1;
        }
        // Two sensor ids: compacted once their keys pass two each plus the slack.
        assert_eq!(catalog.len(), 2 * 2 + COMPACTION_SLACK + 1);
        let compacted = catalog.compacted();
        let ids: Vec<(String, String)> = compacted.entries().into_iter().map(|e| (e.sensor_id, e.location)).collect();
        let last = format!("room_{}", moves - 1);
        assert_eq!(ids, vec![("steady".into(), "office_1".into()), ("mover".into(), last.clone())]);
        let mut compacted = compacted;
        assert_eq!(compacted.key_for(&reading("mover", SensorType::Co2, &last)), 1);
        assert!(!compacted.needs_compaction());
    }
}
