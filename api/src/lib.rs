//! The JSON the iotstream host serves and its dashboard reads: REST responses and live-stream
//! events, and the closed sets of values they carry as typed enums. Shared by both sides so they
//! cannot drift apart.
//!
//! # Layout
//! * [`vocabulary`]: the closed sets (sensor types, verdicts, stage kinds, plugin states and
//!   actions, dead-letter reasons), one enum each, with one text form for JSON and the database;
//! * [`history`]: readings over a time range, downsampled by the host;
//! * [`rows`]: stored rows as served; [`plugins`]: plugin status and events; [`quality`]: detection
//!   quality; [`live`]: the live stream and its fold;
//! * [`cluster`]: the hosts sharing a topic, their partitions and rebalances.

pub mod cluster;
pub mod history;
pub mod live;
pub mod plugins;
pub mod quality;
pub mod rows;
pub mod vocabulary;

pub use cluster::{ClusterView, PartitionStatus, RebalanceEvent};
pub use history::{
    Correlations, HISTORY_MAX_POINTS, HISTORY_MIN_BUCKET, History, HistoryPoint, HistorySeries, TypeCorrelation,
    bucket_width,
};
pub use live::{LIVE_ROWS, LiveEvent, LiveView, Stats};
pub use plugins::{CALL_MICROS_BUCKETS, PluginEvent, PluginFailure, PluginStatus, call_micros_quantile};
pub use quality::{DetectorAgreement, DetectorQuality, ModelGeneration, QualityReport};
pub use rows::{AggregateRow, DeadLetterCount, DeadLetterRow, PredictionRow, ReadingRow, ShadowComparison};
pub use vocabulary::{
    DeadLetterReason, Named, OutageCode, PluginAction, PluginLayer, PluginState, SensorType, StageKind, Verdict,
};
