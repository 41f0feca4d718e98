//! The sensor catalog of one stage instance.
//!
//! Readings name their sensor by a small integer key that is valid only for one stage instance (see
//! the WIT contract). The host declares each key once, with the sensor's identity, before the first
//! reading that uses it. The catalog maps keys back to identities; state a plugin keeps across
//! exports is keyed by identity, never by key.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::PluginError;

/// What a sensor measures; mirrors the WIT `sensor-type` enum. Its text form (messages, database,
/// JSON) is snake case: `temperature`, `humidity`, `air_quality`, `pressure`, `co2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorType {
    /// Degrees Celsius.
    Temperature,
    /// Percent relative humidity.
    Humidity,
    /// Air quality index.
    AirQuality,
    /// Hectopascals.
    Pressure,
    /// Parts per million.
    Co2,
}

impl SensorType {
    /// Every sensor type, in WIT order.
    pub const ALL: [SensorType; 5] =
        [SensorType::Temperature, SensorType::Humidity, SensorType::AirQuality, SensorType::Pressure, SensorType::Co2];

    /// The name used in messages and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            SensorType::Temperature => "temperature",
            SensorType::Humidity => "humidity",
            SensorType::AirQuality => "air_quality",
            SensorType::Pressure => "pressure",
            SensorType::Co2 => "co2",
        }
    }

    /// The values a reading of this type can physically take on the ambient sensors iotstream
    /// monitors (server rooms, offices, warehouses, laboratories, factory floors), inclusive, in
    /// [`SensorType::default_unit`]: a value outside is a broken sensor or a corrupt message, not
    /// an anomaly to detect. Temperature spans industrial ambient sensors (-60 to 150 °C); relative
    /// humidity is a percentage; the air quality index is defined on 0 to 500; pressure spans
    /// barometric sensors (300 to 1250 hPa: above Everest to well over any weather); CO2 stops at
    /// 10% of the air (100 000 ppm), far beyond any room a person works in.
    pub fn physical_range(self) -> (f64, f64) {
        match self {
            SensorType::Temperature => (-60.0, 150.0),
            SensorType::Humidity => (0.0, 100.0),
            SensorType::AirQuality => (0.0, 500.0),
            SensorType::Pressure => (300.0, 1250.0),
            SensorType::Co2 => (0.0, 100_000.0),
        }
    }

    /// The unit readings of this type are in, when a message does not say.
    pub fn default_unit(self) -> &'static str {
        match self {
            SensorType::Temperature => "°C",
            SensorType::Humidity => "%",
            SensorType::AirQuality => "AQI",
            SensorType::Pressure => "hPa",
            SensorType::Co2 => "ppm",
        }
    }

    /// The type named `name` (its [`SensorType::as_str`] form), if there is one.
    pub fn from_name(name: &str) -> Option<SensorType> {
        SensorType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl std::fmt::Display for SensorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who took a reading: the sensor's identity as declared by the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SensorIdentity {
    /// The sensor's own identifier.
    pub sensor_id: Arc<str>,
    /// What it measures.
    pub sensor_type: SensorType,
    /// Where it is.
    pub location: Arc<str>,
}

/// A name the catalog holds (a sensor's identifier or its location) as a map key ([`SensorMap`],
/// [`CatalogMap`]). Two are equal when they are the same string in memory, as the catalog's own
/// name and the key a stage stored from it are (every lookup of a declared sensor), else when their
/// text is: a stage looks its sensor's state up once a reading, and in a `.wasm` build comparing the
/// text is a byte-by-byte loop that cost the z-score detector a fifth of its time and the windows
/// two fifths. It is stored as its text, and read back as the catalog's own string: names are
/// shared through one pool ([`Catalog::declare`] and reading a state both take theirs from it), so
/// a state imported after a restart still finds its sensors by pointer.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct CatalogName(Arc<str>);

impl<'de> Deserialize<'de> for CatalogName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Ok(CatalogName(names::shared(&text)))
    }
}

/// The pool of names: one shared string per text among the declared sensors' identifiers and
/// locations and the names of the state read since the last import (a guest is one thread).
pub(crate) mod names {
    use std::cell::RefCell;
    use std::collections::HashSet;
    use std::sync::Arc;

    thread_local! {
        static POOL: RefCell<HashSet<Arc<str>, foldhash::fast::RandomState>> = RefCell::default();
    }

    /// The pool's string for `text`, added if new.
    pub(crate) fn shared(text: &str) -> Arc<str> {
        POOL.with_borrow_mut(|pool| match pool.get(text) {
            Some(name) => Arc::clone(name),
            None => {
                let name: Arc<str> = Arc::from(text);
                pool.insert(Arc::clone(&name));
                name
            }
        })
    }

    /// Empties the pool (before a state import, after which every sensor is declared again), so
    /// it holds no name the stage has forgotten.
    pub(crate) fn clear() {
        POOL.with_borrow_mut(HashSet::clear);
    }
}

impl CatalogName {
    /// The name's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as the shared string it holds.
    pub fn as_shared(&self) -> &Arc<str> {
        &self.0
    }
}

impl From<&Arc<str>> for CatalogName {
    fn from(id: &Arc<str>) -> Self {
        CatalogName(Arc::clone(id))
    }
}

impl From<&str> for CatalogName {
    fn from(id: &str) -> Self {
        CatalogName(Arc::from(id))
    }
}

impl PartialEq for CatalogName {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for CatalogName {}

impl std::hash::Hash for CatalogName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// A map hashed with foldhash, a few operations per 8 bytes of a name where the standard SipHash
/// takes rounds, still seeded per map (names come from whoever writes to the topic): for state
/// keyed by [`CatalogName`]s, alone or with more (a location and a sensor type, say).
pub type CatalogMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Per-sensor state: a [`CatalogMap`] by the sensor's identifier.
pub type SensorMap<V> = CatalogMap<CatalogName, V>;

/// The keys declared to one stage instance.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    by_key: Vec<Option<Arc<SensorIdentity>>>,
}

impl Catalog {
    /// Declares (or re-declares) `key` as `identity`.
    pub fn declare(&mut self, key: u32, identity: SensorIdentity) {
        let index = key as usize;
        if self.by_key.len() <= index {
            self.by_key.resize(index + 1, None);
        }
        let identity = SensorIdentity {
            sensor_id: names::shared(&identity.sensor_id),
            location: names::shared(&identity.location),
            ..identity
        };
        self.by_key[index] = Some(Arc::new(identity));
    }

    /// The identity behind `key`, or an error naming the undeclared key.
    pub fn get(&self, key: u32) -> Result<&Arc<SensorIdentity>, PluginError> {
        self.identity(key).ok_or_else(|| PluginError::InvalidInput(format!("sensor key {key} was never declared")))
    }

    /// The identity behind `key`, if it is declared: [`get`](Self::get) without the error, for a
    /// loop over keys already checked.
    #[inline]
    pub fn identity(&self, key: u32) -> Option<&Arc<SensorIdentity>> {
        self.by_key.get(key as usize).and_then(Option::as_ref)
    }

    /// Forgets every key (after a state import the host declares them again).
    pub fn clear(&mut self) {
        self.by_key.clear();
    }

    /// Checks that every key in `keys` is declared, so a call can be refused before it changes state.
    pub fn check_all(&self, keys: impl IntoIterator<Item = u32>) -> Result<(), PluginError> {
        keys.into_iter().try_for_each(|key| self.get(key).map(|_| ()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(id: &str) -> SensorIdentity {
        SensorIdentity { sensor_id: id.into(), sensor_type: SensorType::Co2, location: "lab_1".into() }
    }

    #[test]
    fn type_names_round_trip_and_match_serde() {
        let names: Vec<&str> = SensorType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(names, ["temperature", "humidity", "air_quality", "pressure", "co2"]);
        for t in SensorType::ALL {
            assert_eq!(SensorType::from_name(t.as_str()), Some(t));
            assert_eq!(serde_json::to_string(&t).ok(), Some(format!("\"{t}\"")));
        }
        assert_eq!(SensorType::from_name("radon"), None);
    }

    #[test]
    fn declared_keys_resolve_and_undeclared_keys_are_errors() {
        let mut catalog = Catalog::default();
        catalog.declare(2, identity("c2"));
        assert_eq!(&*catalog.get(2).map(|s| s.sensor_id.clone()).unwrap_or_default(), "c2");
        assert_eq!(
            catalog.get(0).map(|_| ()),
            Err(PluginError::InvalidInput("sensor key 0 was never declared".into()))
        );
        assert!(catalog.check_all([2, 3]).is_err());
        catalog.declare(2, identity("other"));
        assert_eq!(&*catalog.get(2).map(|s| s.sensor_id.clone()).unwrap_or_default(), "other");
        catalog.clear();
        assert!(catalog.get(2).is_err());
    }

    #[test]
    fn catalog_names_are_equal_by_text_stored_as_text_and_shared_again_after_an_import() {
        let declared: Arc<str> = Arc::from("temperature_lab_1_007");
        let mut state: SensorMap<u32> = SensorMap::default();
        *state.entry(CatalogName::from(&declared)).or_default() += 1;
        // The same string (a lookup of the declared sensor), and an equal one made apart from it
        // (the key a restored state holds): one entry.
        *state.entry(CatalogName::from(&declared)).or_default() += 1;
        *state.entry(CatalogName::from("temperature_lab_1_007")).or_default() += 1;
        *state.entry(CatalogName::from("temperature_lab_1_008")).or_default() += 1;
        assert_eq!(state.len(), 2);
        assert_eq!(state.get(&CatalogName::from("temperature_lab_1_007")), Some(&3));
        // Encoded as a map by plain text, as per-sensor state was before the type: exported states
        // of either read as the other.
        let one: SensorMap<u32> = SensorMap::from_iter([(CatalogName::from("s-1"), 5)]);
        let plain: std::collections::HashMap<Arc<str>, u32> = [(Arc::from("s-1"), 5)].into_iter().collect();
        let bytes = postcard::to_allocvec(&one).unwrap_or_default();
        assert_eq!(bytes, postcard::to_allocvec(&plain).unwrap_or_default());
        assert_eq!(bytes, [1, 3, b's', b'-', b'1', 5]);
        let back: SensorMap<u32> = postcard::from_bytes(&bytes).unwrap_or_default();
        assert_eq!(back.get(&CatalogName::from("s-1")).map(|v| (*v, back.len())), Some((5, 1)));
        // A state read back and the sensors declared after it share their names' strings, so its
        // lookups are pointer comparisons again (as after a restart's import).
        let mut catalog = Catalog::default();
        catalog.declare(3, SensorIdentity { sensor_id: "s-1".into(), ..identity("x") });
        let declared = catalog.get(3).map(|s| Arc::clone(&s.sensor_id)).unwrap_or_else(|_| Arc::from(""));
        let stored = back.keys().next().map(|k| Arc::clone(k.as_shared())).unwrap_or_else(|| Arc::from(""));
        assert!(Arc::ptr_eq(&declared, &stored));
        // An import empties the pool: the names read next are new strings, equal by text.
        names::clear();
        let again: SensorMap<u32> = postcard::from_bytes(&bytes).unwrap_or_default();
        let fresh = again.keys().next().map(|k| Arc::clone(k.as_shared())).unwrap_or_else(|| Arc::from(""));
        assert!(!Arc::ptr_eq(&declared, &fresh) && declared == fresh);
    }
}
