//! What the API and the live view read: totals, the newest rows, history downsampled into buckets,
//! detection quality, shadows and dead letters. Every query is bounded by a `LIMIT` or an aggregate.

use chrono::{DateTime, TimeDelta, Utc};
use iotstream_api::{
    AggregateRow, Correlations, DeadLetterCount, DeadLetterRow, DetectorAgreement, DetectorQuality, History,
    HistoryPoint, HistorySeries, ModelGeneration, Named, PredictionRow, QualityReport, ReadingRow, SensorType,
    ShadowComparison, TypeCorrelation,
};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::store::{Store, StoreError, Totals};

/// Emissions `recent_aggregates` reads per window it answers: a window's emissions are its
/// partitions' partials and their revisions, so the newest `16 * limit` emissions hold the newest
/// `limit` windows while a window has on average at most 16 of them (a topic of up to 16
/// partitions, or fewer partitions and some revisions) among them.
const RECENT_EMISSIONS_PER_WINDOW: i64 = 16;

/// The value of a closed set named `text`; a name outside the set is a decode error that says so.
fn named<T: Named>(text: &str) -> Result<T, sqlx::Error> {
    T::from_name(text).ok_or_else(|| sqlx::Error::Decode(format!("{text:?} is not a known value of its column").into()))
}

/// Column `index` of `row`, a closed-set value stored as its name.
fn named_column<T: Named>(row: &PgRow, index: usize) -> Result<T, sqlx::Error> {
    named(&row.try_get::<String, _>(index)?)
}

/// Which readings `/api/history` aggregates; a field left `None` does not filter.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Only this sensor type.
    pub sensor_type: Option<SensorType>,
    /// Only this location.
    pub location: Option<String>,
    /// Only this sensor.
    pub sensor_id: Option<String>,
}

/// The newest readings (`$1` of them; `$2`: of one sensor, or `NULL`), newest by event time: read
/// off the table's key `(timestamp, id)`, so it sorts nothing (`newest::…` checks the plan).
pub const RECENT_READINGS: &str = "SELECT sensor_id, sensor_type, location, value, unit, timestamp, anomaly, flagged \
     FROM sensor_readings WHERE ($2::text IS NULL OR sensor_id = $2) ORDER BY timestamp DESC, id DESC LIMIT $1";

/// The newest verdicts (`$1` of them; `$2`: of one detector, or `NULL`; `$3`: anomalies only), as
/// [`RECENT_READINGS`] orders readings, a reading's verdicts by detector.
pub const RECENT_PREDICTIONS: &str = "SELECT detector, sensor_id, sensor_type, value, timestamp, verdict, is_anomaly, \
     anomaly_score, rule_based_anomaly, detector_version, model_generation FROM ml_anomaly_predictions \
     WHERE ($2::text IS NULL OR detector = $2) AND (NOT $3 OR is_anomaly) ORDER BY timestamp DESC, id DESC, detector \
     LIMIT $1";

impl Store {
    /// All-time row counts: what the batch transactions stored, summed over the sources (read
    /// once at start, then kept by the pipeline). Exact for what hosts stored, and O(sources)
    /// however large the tables; rows inserted by hand are not counted, rows retention dropped
    /// still are.
    pub async fn totals(&self) -> Result<Totals, StoreError> {
        let row = sqlx::query(
            "SELECT COALESCE(sum(readings), 0)::int8, COALESCE(sum(flagged), 0)::int8, \
             COALESCE(sum(aggregates), 0)::int8, COALESCE(sum(dead_letters), 0)::int8 FROM stored_totals",
        )
        .fetch_one(&self.pool)
        .await?;
        let count = |i: usize| row.try_get::<i64, _>(i).map(|n| n.max(0) as u64);
        Ok(Totals { readings: count(0)?, flagged: count(1)?, aggregates: count(2)?, dead_letters: count(3)? })
    }

    /// The newest readings, optionally of one sensor.
    pub async fn recent_readings(&self, limit: i64, sensor_id: Option<&str>) -> Result<Vec<ReadingRow>, StoreError> {
        let rows = sqlx::query(RECENT_READINGS).bind(limit).bind(sensor_id).fetch_all(&self.api_pool).await?;
        rows.iter().map(decode_reading).collect::<Result<_, _>>().map_err(StoreError::from)
    }

    /// The newest predictions, optionally of one detector and only anomalies.
    pub async fn recent_predictions(
        &self,
        limit: i64,
        detector: Option<&str>,
        anomalies_only: bool,
    ) -> Result<Vec<PredictionRow>, StoreError> {
        let rows = sqlx::query(RECENT_PREDICTIONS)
            .bind(limit)
            .bind(detector)
            .bind(anomalies_only)
            .fetch_all(&self.api_pool)
            .await?;
        rows.iter().map(decode_prediction).collect::<Result<_, _>>().map_err(StoreError::from)
    }

    /// The windows of the newest emissions, newest first, each merged over its partitions'
    /// partials (`sensor_aggregates_latest`): at most `limit` windows, those of the
    /// `limit * RECENT_EMISSIONS_PER_WINDOW` newest emissions (fewer windows when more of those
    /// are partials or revisions of the same windows).
    pub async fn recent_aggregates(&self, limit: i64) -> Result<Vec<AggregateRow>, StoreError> {
        let rows = sqlx::query(
            "WITH recent AS (SELECT stage, location, sensor_type, window_start, max(emission) AS newest FROM \
             (SELECT stage, location, sensor_type, window_start, emission FROM sensor_aggregates ORDER BY emission DESC LIMIT $2) e \
             GROUP BY stage, location, sensor_type, window_start ORDER BY newest DESC LIMIT $1) \
             SELECT l.stage, l.window_start, l.window_end, l.location, l.sensor_type, l.avg_value, l.min_value, l.max_value, \
             l.stddev_value, l.count_readings, l.anomaly_count, l.revision, l.late_count FROM sensor_aggregates_latest l \
             JOIN recent r ON l.stage = r.stage AND l.location = r.location AND l.sensor_type = r.sensor_type \
             AND l.window_start = r.window_start \
             WHERE l.window_start = ANY(ARRAY(SELECT window_start FROM recent)) ORDER BY l.emission DESC",
        )
        .bind(limit)
        .bind(limit.saturating_mul(RECENT_EMISSIONS_PER_WINDOW))
        .fetch_all(&self.api_pool)
        .await?;
        rows.iter().map(decode_aggregate).collect::<Result<_, _>>().map_err(StoreError::from)
    }

    /// Readings with event time in `[from, to)`, per sensor type and location, in buckets of
    /// [`iotstream_api::bucket_width`] aligned on `from` (so at most
    /// [`iotstream_api::HISTORY_MAX_POINTS`] a series), optionally of one type, location or sensor.
    pub async fn history(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        filter: &HistoryFilter,
    ) -> Result<History, StoreError> {
        let width = iotstream_api::bucket_width(from, to);
        type Row = (String, String, i64, i64, f64, f64, f64, Option<f64>, i64, i64);
        // The bucket index from the exact (numeric) epoch difference: no float rounding at an edge.
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT sensor_type, location, floor(extract(epoch FROM timestamp - $1) * 1000 / $3)::bigint AS bucket, \
             count(*), avg(value), min(value), max(value), stddev_samp(value), count(*) FILTER (WHERE flagged), count(*) FILTER (WHERE anomaly) \
             FROM sensor_readings WHERE timestamp >= $1 AND timestamp < $2 \
             AND ($4::text IS NULL OR sensor_type = $4) AND ($5::text IS NULL OR location = $5) \
             AND ($6::text IS NULL OR sensor_id = $6) \
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        )
        .bind(from)
        .bind(to)
        .bind(width.num_milliseconds())
        .bind(filter.sensor_type.map(Named::as_str))
        .bind(filter.location.as_deref())
        .bind(filter.sensor_id.as_deref())
        .fetch_all(&self.api_pool)
        .await?;
        let mut series: Vec<HistorySeries> = Vec::new();
        for (sensor_type, location, bucket, count, avg, min, max, stddev, flagged, labelled) in rows {
            let sensor_type = named(&sensor_type)?;
            let point = HistoryPoint {
                start: from + TimeDelta::milliseconds(width.num_milliseconds() * bucket),
                count,
                avg,
                min,
                max,
                stddev,
                flagged,
                labelled,
            };
            match series.last_mut() {
                Some(last) if last.sensor_type == sensor_type && last.location == location => last.points.push(point),
                _ => series.push(HistorySeries { sensor_type, location, points: vec![point] }),
            }
        }
        Ok(History { from, to, bucket_millis: width.num_milliseconds(), series })
    }

    /// The event time of the newest verdict (a backward scan of the time index, stopping at the
    /// first judged reading), if there is any.
    pub async fn newest_verdict(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(sqlx::query_scalar("SELECT max(timestamp) FROM sensor_readings WHERE verdicts::text <> '[]'")
            .fetch_one(&self.api_pool)
            .await?)
    }

    /// Each detector against the source's labels (the simulator labels what it injects), and each
    /// pair of detectors against each other, per sensor type, over readings with event time in
    /// `[from, to)` (either end open when `None`). Warming-up verdicts are left out.
    pub async fn quality(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<QualityReport, StoreError> {
        Ok(QualityReport {
            detectors: self.detector_quality(from, to).await?,
            agreement: self.detector_agreement(from, to).await?,
        })
    }

    /// Each detector against the labels, per sensor type (see [`Store::quality`]).
    async fn detector_quality(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Vec<DetectorQuality>, StoreError> {
        let detectors: Vec<(String, String, i64, i64, i64, i64, f64)> = sqlx::query_as(
            "SELECT detector, sensor_type, count(*), \
             count(*) FILTER (WHERE is_anomaly AND rule_based_anomaly), \
             count(*) FILTER (WHERE is_anomaly AND NOT rule_based_anomaly), \
             count(*) FILTER (WHERE NOT is_anomaly AND rule_based_anomaly), \
             extract(epoch FROM max(timestamp) - min(timestamp))::float8 \
             FROM ml_anomaly_predictions \
             WHERE verdict <> 'warming_up' AND ($1::timestamptz IS NULL OR timestamp >= $1) \
             AND ($2::timestamptz IS NULL OR timestamp < $2) \
             GROUP BY detector, sensor_type ORDER BY detector, sensor_type",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.api_pool)
        .await?;
        Ok(detectors
            .into_iter()
            .map(|(detector, sensor_type, judged, tp, fp, fn_, span_s)| {
                Ok(DetectorQuality {
                    detector,
                    sensor_type: named(&sensor_type)?,
                    judged,
                    true_positives: tp,
                    false_positives: fp,
                    false_negatives: fn_,
                    precision: None,
                    recall: None,
                    f1: None,
                    span_s,
                    alarms_per_hour: None,
                }
                .with_rates())
            })
            .collect::<Result<_, sqlx::Error>>()?)
    }

    /// Each pair of detectors against each other, per sensor type (see [`Store::quality`]).
    async fn detector_agreement(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Vec<DetectorAgreement>, StoreError> {
        type Row = (String, String, String, i64, i64, i64, i64, i64);
        // A reading's verdicts are one row's array (migration 0008): pairs come from the row itself,
        // each verdict `[model, verdict, score]` (migration 0015; 0 is warming up, 2 an anomaly).
        let agreement: Vec<Row> = sqlx::query_as(
            "SELECT r.sensor_type, ma.detector::text, mb.detector::text, count(*), \
             count(*) FILTER (WHERE (a.e ->> 1 = '2') = (b.e ->> 1 = '2')), \
             count(*) FILTER (WHERE a.e ->> 1 = '2' AND b.e ->> 1 = '2'), \
             count(*) FILTER (WHERE a.e ->> 1 = '2' AND b.e ->> 1 <> '2'), \
             count(*) FILTER (WHERE b.e ->> 1 = '2' AND a.e ->> 1 <> '2') \
             FROM sensor_readings r, json_array_elements(r.verdicts) AS a (e), json_array_elements(r.verdicts) AS b (e), \
             detector_models ma, detector_models mb \
             WHERE ma.id = (a.e ->> 0)::bigint AND mb.id = (b.e ->> 0)::bigint AND ma.detector < mb.detector \
             AND a.e ->> 1 <> '0' AND b.e ->> 1 <> '0' \
             AND ($1::timestamptz IS NULL OR r.timestamp >= $1) AND ($2::timestamptz IS NULL OR r.timestamp < $2) \
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.api_pool)
        .await?;
        Ok(agreement
            .into_iter()
            .map(|(sensor_type, detector_a, detector_b, both, agreed, both_anomalous, only_a, only_b)| {
                Ok(DetectorAgreement {
                    sensor_type: named(&sensor_type)?,
                    detector_a,
                    detector_b,
                    judged_by_both: both,
                    agreed,
                    both_anomalous,
                    only_a_anomalous: only_a,
                    only_b_anomalous: only_b,
                    agreement: (both > 0).then(|| agreed as f64 / both as f64),
                })
            })
            .collect::<Result<_, sqlx::Error>>()?)
    }

    /// Each model the detectors that train models used for verdicts with event time in `[from, to)`:
    /// its lane (source and partition), generation, training time and rows, and the verdicts it
    /// gave, the newest trained first. A lane counts its own generations, so a model is grouped by
    /// its lane too: generation 3 of two partitions are two models, trained apart.
    pub async fn model_generations(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ModelGeneration>, StoreError> {
        /// A model's row: its identity (detector, type, source, partition, generation), then what its
        /// verdicts say of it.
        type Row = (
            String,
            String,
            i16,
            i32,
            i32,
            String,
            Option<DateTime<Utc>>,
            Option<i32>,
            i64,
            i64,
            DateTime<Utc>,
            DateTime<Utc>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT detector, sensor_type, source_id, kafka_partition, model_generation, max(detector_version), \
             max(model_trained_at), max(model_training_rows), count(*), count(*) FILTER (WHERE is_anomaly), \
             min(timestamp), max(timestamp) \
             FROM ml_anomaly_predictions \
             WHERE model_generation IS NOT NULL AND timestamp >= $1 AND timestamp < $2 \
             GROUP BY detector, sensor_type, source_id, kafka_partition, model_generation \
             ORDER BY max(model_trained_at) DESC NULLS LAST, detector, sensor_type, source_id, kafka_partition, \
             model_generation DESC",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.api_pool)
        .await?;
        let generations = rows.into_iter().map(
            |(
                detector,
                sensor_type,
                source_id,
                partition,
                generation,
                version,
                trained_at,
                training_rows,
                verdicts,
                anomalies,
                first,
                last,
            )| {
                Ok(ModelGeneration {
                    detector,
                    sensor_type: named(&sensor_type)?,
                    source_id,
                    partition,
                    generation,
                    detector_version: version,
                    trained_at,
                    training_rows,
                    verdicts,
                    anomalies,
                    first_verdict: first,
                    last_verdict: last,
                })
            },
        );
        Ok(generations.collect::<Result<_, sqlx::Error>>()?)
    }

    /// The correlation of each pair of sensor types at `location` over the 1-minute windows that
    /// start in `[from, to)`: each window at its newest revision, the two types' windows paired by
    /// stage and window start, Pearson's `corr()` of their averages.
    pub async fn type_correlations(
        &self,
        location: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Correlations, StoreError> {
        let rows: Vec<(String, String, String, i64, Option<f64>)> = sqlx::query_as(
            "WITH w AS (SELECT stage, sensor_type, window_start, avg_value FROM sensor_aggregates_latest \
             WHERE location = $1 AND window_start >= $2 AND window_start < $3) \
             SELECT a.stage, a.sensor_type, b.sensor_type, count(*), corr(a.avg_value, b.avg_value) \
             FROM w a JOIN w b ON a.stage = b.stage AND a.window_start = b.window_start AND a.sensor_type <= b.sensor_type \
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        )
        .bind(location)
        .bind(from)
        .bind(to)
        .fetch_all(&self.api_pool)
        .await?;
        let pairs = rows.into_iter().map(|(stage, a, b, windows, correlation)| {
            Ok(TypeCorrelation {
                stage,
                sensor_type_a: named(&a)?,
                sensor_type_b: named(&b)?,
                windows,
                // A float's rounding can put a perfect correlation a hair outside [-1, 1].
                correlation: correlation.map(|r| r.clamp(-1.0, 1.0)),
            })
        });
        Ok(Correlations { location: location.to_owned(), from, to, pairs: pairs.collect::<Result<_, sqlx::Error>>()? })
    }

    /// Each shadow detector against the live detector it shadows, over the readings both judged
    /// (warming-up verdicts left out): agreement and score distributions.
    pub async fn shadow_comparisons(&self) -> Result<Vec<ShadowComparison>, StoreError> {
        type Row = (String, String, String, i64, i64, i64, i64, i64, Option<Vec<f64>>, Option<Vec<f64>>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT s.shadow, max(s.shadow_version), s.live_detector, count(*), \
             count(*) FILTER (WHERE s.is_anomaly = p.is_anomaly), \
             count(*) FILTER (WHERE s.is_anomaly AND p.is_anomaly), \
             count(*) FILTER (WHERE s.is_anomaly), count(*) FILTER (WHERE p.is_anomaly), \
             percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY s.anomaly_score), \
             percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY p.anomaly_score) \
             FROM shadow_predictions s JOIN ml_anomaly_predictions p ON p.source_id = s.source_id \
             AND p.kafka_partition = s.kafka_partition AND p.kafka_offset = s.kafka_offset \
             AND p.detector = s.live_detector \
             WHERE s.verdict <> 'warming_up' AND p.verdict <> 'warming_up' AND s.source_id > 0 \
             GROUP BY s.shadow, s.live_detector ORDER BY s.shadow",
        )
        .fetch_all(&self.api_pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(shadow, shadow_version, live, judged, agreed, both, shadow_anomalies, live_anomalies, s, l)| {
                ShadowComparison {
                    shadow,
                    shadow_version,
                    live_detector: live,
                    judged_by_both: judged,
                    agreed,
                    both_anomalous: both,
                    shadow_anomalies,
                    live_anomalies,
                    agreement: (judged > 0).then(|| agreed as f64 / judged as f64),
                    shadow_score_p50_p90_p99: s.unwrap_or_default(),
                    live_score_p50_p90_p99: l.unwrap_or_default(),
                    shadow_call_micros_p50: None,
                    live_call_micros_p50: None,
                }
            })
            .collect())
    }

    /// Dead letters per kind of refusal, most frequent first.
    pub async fn dead_letter_counts(&self) -> Result<Vec<DeadLetterCount>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY 2 DESC, 1")
                .fetch_all(&self.api_pool)
                .await?;
        let counts = rows.into_iter().map(|(reason, count)| Ok(DeadLetterCount { reason: named(&reason)?, count }));
        Ok(counts.collect::<Result<_, sqlx::Error>>()?)
    }

    /// The newest dead letters.
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<DeadLetterRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, received_at, topic, kafka_partition, kafka_offset, error, payload, reason FROM dead_letters \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.api_pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetterRow {
                    id: row.try_get(0)?,
                    received_at: row.try_get(1)?,
                    topic: row.try_get(2)?,
                    partition: row.try_get(3)?,
                    offset: row.try_get(4)?,
                    error: row.try_get(5)?,
                    payload: row
                        .try_get::<Option<Vec<u8>>, _>(6)?
                        .map(|p| String::from_utf8_lossy(&p).into_owned())
                        .unwrap_or_default(),
                    reason: named_column(row, 7)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}

fn decode_reading(row: &PgRow) -> Result<ReadingRow, sqlx::Error> {
    Ok(ReadingRow {
        sensor_id: row.try_get(0)?,
        sensor_type: named_column(row, 1)?,
        location: row.try_get(2)?,
        value: row.try_get(3)?,
        unit: row.try_get(4)?,
        timestamp: row.try_get::<DateTime<Utc>, _>(5)?,
        anomaly: row.try_get(6)?,
        flagged: row.try_get(7)?,
    })
}

fn decode_prediction(row: &PgRow) -> Result<PredictionRow, sqlx::Error> {
    Ok(PredictionRow {
        detector: row.try_get(0)?,
        sensor_id: row.try_get(1)?,
        sensor_type: named_column(row, 2)?,
        value: row.try_get(3)?,
        timestamp: row.try_get(4)?,
        verdict: named_column(row, 5)?,
        is_anomaly: row.try_get(6)?,
        anomaly_score: row.try_get(7)?,
        rule_based_anomaly: row.try_get(8)?,
        detector_version: row.try_get(9)?,
        model_generation: row.try_get(10)?,
    })
}

/// A window as the API shows it, from a row of the columns `AggregateRow` lists, in its order.
pub(super) fn decode_aggregate(row: &PgRow) -> Result<AggregateRow, sqlx::Error> {
    Ok(AggregateRow {
        stage: row.try_get(0)?,
        window_start: row.try_get(1)?,
        window_end: row.try_get(2)?,
        location: row.try_get(3)?,
        sensor_type: named_column(row, 4)?,
        avg_value: row.try_get(5)?,
        min_value: row.try_get(6)?,
        max_value: row.try_get(7)?,
        stddev_value: row.try_get(8)?,
        count_readings: row.try_get(9)?,
        anomaly_count: row.try_get(10)?,
        revision: row.try_get(11)?,
        late_count: row.try_get(12)?,
    })
}
