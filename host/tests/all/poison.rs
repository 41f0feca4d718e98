//! Poison rows: data the database refuses however often it is sent (a timestamp before 4713 BC, a
//! text longer than its column, a NUL character) must cost only itself. `Store::write` commits the
//! batch without it, reports what it left out, and keeps a refused reading as a dead letter; the
//! pipeline's positions move on, so the stream does not stall on a batch it can never store.

use chrono::{TimeZone, Utc};
use iotstream::reading::{Reading, SensorType};
use iotstream::store::{
    BatchRows, LaneBatch, ModelLineage, Prediction, Refused, RefusedOrigin, Store, StoredReading, StoredWindow,
};
use iotstream_api::{AggregateRow, DeadLetterReason, Verdict};
use sqlx::PgPool;

fn stored(sensor: &str, offset: i64, timestamp: chrono::DateTime<Utc>) -> StoredReading {
    StoredReading {
        reading: Reading {
            sensor_id: sensor.into(),
            sensor_type: SensorType::Co2,
            location: "lab_1".into(),
            value: 400.0 + offset as f64,
            timestamp,
            anomaly: false,
            unit: "ppm".into(),
        },
        flagged: false,
        partition: 0,
        offset,
    }
}

fn verdict(detector: &str, version: &str, reading: usize) -> Prediction {
    Prediction {
        detector: detector.into(),
        reading,
        verdict: Verdict::Normal,
        score: 0.25,
        detector_version: version.into(),
        model: Some(ModelLineage { generation: 1, trained_at: None, training_rows: 10 }),
    }
}

fn window(stage: &str, location: &str) -> StoredWindow {
    let start = Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 0).single().expect("valid time");
    let window = AggregateRow {
        stage: stage.into(),
        window_start: start,
        window_end: start + chrono::Duration::minutes(1),
        location: location.into(),
        sensor_type: SensorType::Co2,
        avg_value: 401.0,
        min_value: 400.0,
        max_value: 402.0,
        stddev_value: 1.0,
        count_readings: 3,
        anomaly_count: 0,
        revision: 0,
        late_count: 0,
    };
    StoredWindow { partition: 0, window }
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_poison_row_costs_only_itself_and_the_batch_commits(pool: PgPool) {
    let store = Store::new(pool.clone());
    let source = store.source_id("poison-test-cluster", "iot_sensors").await.expect("source");
    let at = Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 30).single().expect("valid time");
    // PostgreSQL's timestamptz starts in 4713 BC; chrono goes much further back.
    let before_postgres = Utc.with_ymd_and_hms(-7000, 1, 1, 0, 0, 0).single().expect("chrono holds it");
    let readings =
        vec![stored("s1", 0, at), stored("s2", 1, at), stored("s3", 2, before_postgres), stored("s4", 3, at)];
    let mut predictions: Vec<Prediction> = (0..4).map(|i| verdict("good", "1.0.0", i)).collect();
    // Verdicts PostgreSQL could not read back as text (a NUL), or JSON cannot hold (NaN), never
    // cost their reading: they are stored with the NUL replaced and the score null.
    predictions.extend((0..4).map(|i| Prediction { score: f64::NAN, ..verdict("nul\u{0}detector", "1.0.0", i) }));
    let batch = BatchRows {
        source,
        topic: "iot_sensors".into(),
        positions: [(0, 4)].into(),
        lanes: vec![LaneBatch { partition: 0, batch_seq: 1, next_offset: 4, forget: None }],
        readings,
        predictions,
        aggregates: vec![window("windows", "lab_1"), window("nul-windows", "lab\u{0}1")],
        ..BatchRows::default()
    };

    let written = store.write(&batch).await.expect("the batch commits without its poison rows");

    assert_eq!((written.totals.readings, written.totals.aggregates, written.totals.dead_letters), (3, 1, 1));
    let origins: Vec<(RefusedOrigin, usize)> =
        written.refused.iter().map(|Refused { origin, rows, .. }| (origin.clone(), *rows)).collect();
    assert_eq!(origins, vec![(RefusedOrigin::Readings, 1), (RefusedOrigin::Plugin("nul-windows".into()), 1),]);
    let stored_offsets: Vec<i64> = sqlx::query_scalar("SELECT kafka_offset FROM sensor_readings ORDER BY kafka_offset")
        .fetch_all(&pool)
        .await
        .expect("readings");
    assert_eq!(stored_offsets, vec![0, 1, 3]);
    // Both detectors' verdicts on the stored readings.
    let verdicts: Vec<(String, i64, Option<f64>)> = sqlx::query_as(
        "SELECT detector, kafka_offset, anomaly_score FROM ml_anomaly_predictions ORDER BY detector, kafka_offset",
    )
    .fetch_all(&pool)
    .await
    .expect("verdicts");
    let nul = "nul\u{FFFD}detector".to_owned();
    assert_eq!(
        verdicts,
        vec![
            ("good".into(), 0, Some(0.25)),
            ("good".into(), 1, Some(0.25)),
            ("good".into(), 3, Some(0.25)),
            (nul.clone(), 0, None),
            (nul.clone(), 1, None),
            (nul, 3, None),
        ]
    );
    let stages: Vec<String> =
        sqlx::query_scalar("SELECT stage FROM sensor_aggregates").fetch_all(&pool).await.expect("windows");
    assert_eq!(stages, vec!["windows".to_owned()]);
    // The live view gets the stored window (the only partial of its window: unchanged).
    assert_eq!(written.windows, vec![window("windows", "lab_1").window]);
    // The refused reading is kept: a dead letter that names why, with the reading re-encoded.
    let (offset, reason, error, payload): (i64, String, String, Vec<u8>) =
        sqlx::query_as("SELECT kafka_offset, reason, error, payload FROM dead_letters")
            .fetch_one(&pool)
            .await
            .expect("letter");
    assert_eq!((offset, reason.as_str()), (2, DeadLetterReason::StorageRefused.to_string().as_str()));
    assert!(error.contains("the database refused the reading"), "{error}");
    let payload: serde_json::Value = serde_json::from_slice(&payload).expect("json");
    assert_eq!((payload["sensor_id"].as_str(), payload["value"].as_f64()), (Some("s3"), Some(402.0)));
    // The stream goes on: the batch's positions and log are committed.
    let next: i64 = sqlx::query_scalar("SELECT next_offset FROM kafka_offsets WHERE source_id = $1")
        .bind(source)
        .fetch_one(&pool)
        .await
        .expect("position");
    assert_eq!(next, 4);
    assert_eq!(store.last_batch(source, 0).await.expect("log"), 1);
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_batch_the_database_takes_is_written_whole_with_nothing_refused(pool: PgPool) {
    let store = Store::new(pool.clone());
    let source = store.source_id("poison-test-cluster", "iot_sensors").await.expect("source");
    let at = Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 30).single().expect("valid time");
    let batch = BatchRows {
        source,
        topic: "iot_sensors".into(),
        positions: [(0, 2)].into(),
        readings: vec![stored("s1", 0, at), stored("s2", 1, at)],
        predictions: vec![verdict("good", "1.0.0", 0), verdict("good", "1.0.0", 1)],
        ..BatchRows::default()
    };
    let written = store.write(&batch).await.expect("written");
    assert_eq!((written.totals.readings, written.refused.len()), (2, 0));
    // Written again (a replay): nothing new, nothing refused.
    let again = store.write(&batch).await.expect("written again");
    assert_eq!((again.totals.readings, again.refused.len()), (0, 0));
}
