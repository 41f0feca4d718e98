//! `GET /api/history`: readings from PostgreSQL over a time range, aggregated by the host into
//! buckets of equal width so a series never carries more than [`HISTORY_MAX_POINTS`] points,
//! whatever the range (the dashboard draws an hour or a week the same way).

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::vocabulary::SensorType;

/// The most buckets a series is cut into: about one per horizontal pixel of a laptop-wide chart,
/// so downsampling loses nothing a chart could show, and a week's answer stays small.
pub const HISTORY_MAX_POINTS: i64 = 1000;

/// The narrowest bucket: readings carry millisecond times, but a chart of a few minutes needs no
/// finer step than a second, and a fixed floor keeps short ranges from becoming one bucket a reading.
pub const HISTORY_MIN_BUCKET: TimeDelta = TimeDelta::seconds(1);

/// The bucket width for `[from, to)`: the range cut into at most [`HISTORY_MAX_POINTS`] equal
/// buckets, rounded up to a whole millisecond, never under [`HISTORY_MIN_BUCKET`].
pub fn bucket_width(from: DateTime<Utc>, to: DateTime<Utc>) -> TimeDelta {
    let millis = (to - from).num_milliseconds().max(0);
    let width = (millis + HISTORY_MAX_POINTS - 1) / HISTORY_MAX_POINTS;
    TimeDelta::milliseconds(width).max(HISTORY_MIN_BUCKET)
}

/// One bucket of one series: the readings with event time in `[start, start + bucket)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// The bucket's start.
    pub start: DateTime<Utc>,
    /// Readings in the bucket.
    pub count: i64,
    /// Their mean value.
    pub avg: f64,
    /// Their smallest value.
    pub min: f64,
    /// Their largest value.
    pub max: f64,
    /// Their sample standard deviation; `None` for a bucket of one reading. With `count` and `avg`
    /// it lets a client pool buckets into the statistics of the whole range.
    pub stddev: Option<f64>,
    /// Readings a detector flagged.
    pub flagged: i64,
    /// Readings the source labelled anomalous.
    pub labelled: i64,
}

/// One sensor type at one location, bucket by bucket (empty buckets left out), oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistorySeries {
    /// What the sensors measure.
    pub sensor_type: SensorType,
    /// Where they are.
    pub location: String,
    /// The non-empty buckets.
    pub points: Vec<HistoryPoint>,
}

/// `GET /api/history`: the range asked for, the bucket width chosen and every series in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The range's start (inclusive): bucket `k` starts at `from + k * bucket_millis`.
    pub from: DateTime<Utc>,
    /// The range's end (exclusive).
    pub to: DateTime<Utc>,
    /// The bucket width in milliseconds.
    pub bucket_millis: i64,
    /// Per sensor type and location, ordered by both.
    pub series: Vec<HistorySeries>,
}

/// The correlation of two sensor types at one location over the 1-minute windows both have (the
/// newest revision of each window, paired by window start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypeCorrelation {
    /// The aggregator plugin whose windows were paired.
    pub stage: String,
    /// One sensor type (the alphabetically first; equal to `sensor_type_b` on the diagonal).
    pub sensor_type_a: SensorType,
    /// The other.
    pub sensor_type_b: SensorType,
    /// Windows both types have.
    pub windows: i64,
    /// Pearson's correlation of their window averages; `None` under two windows or for a constant.
    pub correlation: Option<f64>,
}

/// `GET /api/correlations`: every pair of sensor types at a location over a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Correlations {
    /// The location.
    pub location: String,
    /// Windows starting at or after this.
    pub from: DateTime<Utc>,
    /// And before this.
    pub to: DateTime<Utc>,
    /// Each pair once (and each type with itself), ordered by stage and types.
    pub pairs: Vec<TypeCorrelation>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(millis).unwrap_or_default()
    }

    #[test]
    fn a_range_is_cut_into_at_most_the_maximum_buckets() {
        // 15 minutes: 900 s, under 1000 buckets of 1 s.
        assert_eq!(bucket_width(at(0), at(900_000)), TimeDelta::seconds(1));
        // 1 hour: 3,600,000 ms / 1000 = 3600 ms.
        assert_eq!(bucket_width(at(0), at(3_600_000)), TimeDelta::milliseconds(3600));
        // 24 hours: 86,400 ms.
        assert_eq!(bucket_width(at(0), at(86_400_000)), TimeDelta::milliseconds(86_400));
        // A range not divisible by 1000 rounds up: 1,000,001 ms gives 1001 ms, so 999 buckets.
        assert_eq!(bucket_width(at(0), at(1_000_001)), TimeDelta::milliseconds(1001));
    }
}
