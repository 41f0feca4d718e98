//! The closed sets of values the pipeline's rows and events carry, one enum each. Each has one text
//! form, used in JSON (serde), in the database and in the dashboard: [`Named::as_str`], and
//! [`Named::from_name`] back. A test checks serde and `as_str` agree for every value.
//!
//! [`SensorType`] is the WIT contract's `sensor-type`, defined once in the plugin SDK and shared by
//! plugins, host, API and dashboard.

use serde::{Deserialize, Serialize};

pub use iotstream_plugin_sdk::SensorType;

/// A closed set of values with one text form each.
pub trait Named: Sized + Copy + 'static {
    /// Every value, in declaration order.
    const ALL: &'static [Self];

    /// The value's text form.
    fn as_str(self) -> &'static str;

    /// The value whose text form is `name`, if there is one.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|value| value.as_str() == name)
    }
}

impl Named for SensorType {
    const ALL: &'static [Self] = &SensorType::ALL;

    fn as_str(self) -> &'static str {
        SensorType::as_str(self)
    }
}

/// Defines a closed set: the enum (serde in snake case), its [`Named`] text forms and `Display`.
macro_rules! closed_set {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl Named for $name {
            const ALL: &'static [Self] = &[$($name::$variant,)+];

            fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

closed_set! {
    /// A detector's verdict on one reading.
    Verdict {
        /// The detector has not seen enough of the sensor yet to judge.
        WarmingUp = "warming_up",
        /// Judged normal.
        Normal = "normal",
        /// Judged anomalous: the reading is flagged.
        Anomaly = "anomaly",
    }
}

impl Verdict {
    /// Whether the verdict flags the reading.
    pub fn is_anomaly(self) -> bool {
        self == Verdict::Anomaly
    }
}

closed_set! {
    /// The kind of stage a plugin is, from the WIT interface it exports.
    StageKind {
        /// Exports `detector`: one verdict and score per reading.
        Detector = "detector",
        /// Exports `aggregator`: closed windows.
        Aggregator = "aggregator",
    }
}

closed_set! {
    /// Whether a plugin is called.
    PluginState {
        /// Called on every batch.
        Running = "running",
        /// Failed lately: calls are skipped until its backoff ends.
        Backoff = "backoff",
        /// Failed too often in a row: not called until it is released or reloaded.
        Quarantined = "quarantined",
    }
}

#[allow(clippy::derivable_impls, reason = "closed_set! derives no Default: most sets have none")]
/// A plugin runs until it fails.
impl Default for PluginState {
    fn default() -> Self {
        PluginState::Running
    }
}

closed_set! {
    /// What happened to a plugin while the host ran.
    PluginAction {
        /// Loaded: at start, or dropped into the folder.
        Loaded = "loaded",
        /// Replaced by a new version (or configuration), at a batch boundary.
        Swapped = "swapped",
        /// Its file was removed: it no longer runs.
        Removed = "removed",
        /// A file was refused; the running version, if any, keeps running.
        Refused = "refused",
    }
}

closed_set! {
    /// Which plugins folder a plugin's file is in.
    PluginLayer {
        /// The built-in plugins folder (`--builtin-plugins`): the installation's, replaced by an
        /// upgrade.
        BuiltIn = "built_in",
        /// The drop-in folder (`--plugins`): the operator's; a plugin there replaces the built-in of
        /// the same name.
        DropIn = "drop_in",
    }
}

closed_set! {
    /// Why a message was dead-lettered instead of stored as a reading.
    DeadLetterReason {
        /// The message had no payload.
        Empty = "empty",
        /// Not JSON of the expected shape.
        Malformed = "malformed",
        /// A sensor type iotstream does not know.
        UnknownSensorType = "unknown_sensor_type",
        /// The value is NaN or infinite.
        NotFinite = "not_finite",
        /// The value is outside what a sensor of its type can physically read. No longer given:
        /// such a reading is stored as a sensor fault (kept for dead letters written before).
        OutOfRange = "out_of_range",
        /// Larger than any reading can be.
        Oversized = "oversized",
        /// The event time is too far in the future.
        FromTheFuture = "from_the_future",
        /// The event time is older than the host accepts.
        TooOld = "too_old",
        /// The timestamp is neither ISO 8601 nor epoch milliseconds.
        BadTimestamp = "bad_timestamp",
        /// A text field holds a NUL character.
        NulCharacter = "nul_character",
        /// A text field is empty or longer than its column.
        FieldLength = "field_length",
        /// Decoded as a reading, but the database refused to store it (a value outside what its
        /// column holds): kept here instead, so the batch and the stream go on.
        StorageRefused = "storage_refused",
    }
}

closed_set! {
    /// Why a dependency is down, as the API and dashboard say it: a stable code and a short message
    /// (no addresses, paths or driver errors: those are in the host's log).
    OutageCode {
        /// PostgreSQL does not answer (refused, reset or timed out); the pipeline retries the batch.
        DatabaseUnreachable = "database_unreachable",
        /// PostgreSQL answered a write with an error; the pipeline retries the batch.
        DatabaseError = "database_error",
        /// The host is still connecting to the Kafka brokers.
        BrokersConnecting = "brokers_connecting",
        /// The Kafka brokers do not answer; the consumer reconnects by itself.
        BrokersUnreachable = "brokers_unreachable",
    }
}

impl OutageCode {
    /// The short message shown beside the code.
    pub fn message(self) -> &'static str {
        match self {
            OutageCode::DatabaseUnreachable => "PostgreSQL does not answer; the pipeline retries the batch",
            OutageCode::DatabaseError => "PostgreSQL refused a write; the pipeline retries the batch",
            OutageCode::BrokersConnecting => "connecting to the Kafka brokers",
            OutageCode::BrokersUnreachable => "the Kafka brokers do not answer; the consumer reconnects",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each value's JSON form is its `as_str`, and `from_name` finds it again.
    fn agree<T: Named + Serialize + std::fmt::Debug + PartialEq>() {
        for &value in T::ALL {
            let json = serde_json::to_string(&value).expect("a closed-set value serialises");
            assert_eq!(json, format!("\"{}\"", value.as_str()), "{value:?}");
            assert_eq!(T::from_name(value.as_str()), Some(value));
        }
        assert_eq!(T::from_name("no such value"), None);
    }

    #[test]
    fn serde_and_text_forms_agree() {
        agree::<SensorType>();
        agree::<Verdict>();
        agree::<StageKind>();
        agree::<PluginState>();
        agree::<PluginAction>();
        agree::<PluginLayer>();
        agree::<DeadLetterReason>();
        agree::<OutageCode>();
    }

    #[test]
    fn only_anomaly_flags() {
        assert_eq!(Verdict::ALL.iter().filter(|v| v.is_anomaly()).collect::<Vec<_>>(), [&Verdict::Anomaly]);
    }
}
