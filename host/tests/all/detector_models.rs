//! Verdicts name their models (`detector_models`, migration 0015). Attacked here: the host and the
//! database compute the same id for every model, odd fields included (so a replay, another host
//! and the migration agree); a model's row keeps the newest day of a reading it judged, and
//! retention deletes a model only once no partition left can name it, while the view still reads
//! every verdict that is left.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use iotstream::reading::{Reading, SensorType};
use iotstream::store::models::DetectorModel;
use iotstream::store::partitions::Retention;
use iotstream::store::{BatchRows, LaneBatch, ModelLineage, Prediction, Store, StoredReading};
use iotstream_api::Verdict;
use sqlx::PgPool;

fn lineage(generation: i32, trained_at: Option<DateTime<Utc>>, training_rows: i32) -> Option<ModelLineage> {
    Some(ModelLineage { generation, trained_at, training_rows })
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn the_host_and_the_database_give_every_model_the_same_id(pool: PgPool) {
    let at = |ms| Utc.timestamp_millis_opt(ms).single();
    let models = [
        DetectorModel { detector: "zscore", version: "0.3.0", lineage: None },
        DetectorModel {
            detector: "isolation-forest",
            version: "0.5.0",
            lineage: lineage(3, at(1_764_979_200_123), 256),
        },
        DetectorModel {
            detector: "isolation-forest",
            version: "0.5.0",
            lineage: lineage(3, at(1_764_979_200_124), 256),
        },
        DetectorModel { detector: "isolation-forest", version: "0.5.0", lineage: lineage(-7, None, 0) },
        DetectorModel {
            detector: "détecteur ü 温度",
            version: "",
            lineage: lineage(i32::MAX, at(-86_400_001), i32::MIN),
        },
        DetectorModel { detector: "nul\0inside", version: "1\0", lineage: None },
        DetectorModel { detector: "far", version: "1", lineage: lineage(1, at(-8_000_000_000_000_000), 1) },
    ];
    let mut ids = Vec::new();
    for model in &models {
        let stored: i64 = sqlx::query_scalar("SELECT iotstream_detector_model_id($1, $2, $3, $4, $5)")
            .bind(model.stored_detector())
            .bind(model.stored_version())
            .bind(model.lineage.map(|l| l.generation))
            .bind(model.stored_trained_at())
            .bind(model.lineage.map(|l| l.training_rows))
            .fetch_one(&pool)
            .await
            .expect("the database's id");
        assert_eq!(model.id(), stored, "{model:?}");
        ids.push(stored);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), models.len(), "a millisecond's difference is another model");
    assert_eq!(models[5].stored_detector(), "nul\u{FFFD}inside");
}

fn reading(offset: i64, timestamp: DateTime<Utc>) -> StoredReading {
    StoredReading {
        reading: Reading {
            sensor_id: format!("s-{offset}").into(),
            sensor_type: SensorType::Co2,
            location: "lab".into(),
            value: 400.0 + offset as f64,
            timestamp,
            anomaly: false,
            unit: "ppm".into(),
        },
        flagged: offset == 1,
        partition: 0,
        offset,
    }
}

fn verdict(detector: &str, reading: usize, verdict: Verdict, model: Option<ModelLineage>) -> Prediction {
    Prediction {
        detector: detector.into(),
        reading,
        verdict,
        score: reading as f64 + 0.25,
        detector_version: "1.0.0".into(),
        model,
    }
}

/// A batch of `readings` (offsets from `first`), each judged by the z-score and by the forest's
/// model `forest`.
fn batch(source: i16, first: i64, times: &[DateTime<Utc>], forest: Option<ModelLineage>) -> BatchRows {
    let readings: Vec<StoredReading> = times.iter().enumerate().map(|(i, t)| reading(first + i as i64, *t)).collect();
    let mut predictions = Vec::new();
    for (i, stored) in readings.iter().enumerate() {
        let judged = if stored.flagged { Verdict::Anomaly } else { Verdict::Normal };
        predictions.push(verdict("zscore", i, judged, None));
        predictions.push(verdict("isolation-forest", i, Verdict::WarmingUp, forest));
    }
    let next = first + readings.len() as i64;
    BatchRows {
        source,
        topic: "iot_sensors".into(),
        positions: [(0, next)].into(),
        lanes: vec![LaneBatch { partition: 0, batch_seq: first + 1, next_offset: next, forget: None }],
        readings,
        predictions,
        fresh: true,
        ..BatchRows::default()
    }
}

type Model = (String, Option<i32>, NaiveDate);

async fn models(pool: &PgPool) -> Vec<Model> {
    sqlx::query_as(
        "SELECT detector, model_generation, last_day FROM detector_models ORDER BY detector, model_generation",
    )
    .fetch_all(pool)
    .await
    .expect("models")
}

type ViewRow = (i64, String, String, bool, Option<f64>, String, Option<i32>, Option<DateTime<Utc>>, Option<i32>);

async fn view(pool: &PgPool) -> Vec<ViewRow> {
    sqlx::query_as(
        "SELECT kafka_offset, detector::text, verdict::text, is_anomaly, anomaly_score, detector_version::text, \
         model_generation, model_trained_at, model_training_rows FROM ml_anomaly_predictions \
         ORDER BY kafka_offset, detector",
    )
    .fetch_all(pool)
    .await
    .expect("view")
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_model_lives_as_long_as_a_partition_that_names_it(pool: PgPool) {
    let store = Store::new(pool.clone());
    let source = store.source_id("models-test", "iot_sensors").await.expect("source");
    let day = |d| NaiveDate::from_ymd_opt(2026, 1, d).expect("a day");
    let at = |d, h| Utc.with_ymd_and_hms(2026, 1, d, h, 0, 0).single().expect("a time");
    let first = lineage(1, Some(at(1, 0)), 256);
    let second = lineage(2, Some(at(2, 23)), 512);

    // Day 1 and day 2 under the first model; day 3 under the second.
    store.write(&batch(source, 0, &[at(1, 10), at(2, 9)], first)).await.expect("written");
    store.write(&batch(source, 2, &[at(3, 8)], second)).await.expect("written");
    // A late reading of day 1 under the second model does not make its row older.
    store.write(&batch(source, 3, &[at(1, 11)], second)).await.expect("written");

    assert_eq!(
        models(&pool).await,
        vec![
            ("isolation-forest".into(), Some(1), day(2)),
            ("isolation-forest".into(), Some(2), day(3)),
            ("zscore".into(), None, day(3)),
        ]
    );
    let forest = |offset, generation, trained: DateTime<Utc>, rows| -> ViewRow {
        let model = (Some(generation), Some(trained), Some(rows));
        (
            offset,
            "isolation-forest".into(),
            "warming_up".into(),
            false,
            Some(0.25),
            "1.0.0".into(),
            model.0,
            model.1,
            model.2,
        )
    };
    let zscore = |offset, anomaly: bool| -> ViewRow {
        let verdict = if anomaly { "anomaly" } else { "normal" };
        (offset, "zscore".into(), verdict.into(), anomaly, Some(0.25), "1.0.0".into(), None, None, None)
    };
    let mut expected = vec![
        forest(0, 1, at(1, 0), 256),
        zscore(0, false),
        forest(1, 1, at(1, 0), 256),
        zscore(1, true),
        forest(2, 2, at(2, 23), 512),
        zscore(2, false),
        forest(3, 2, at(2, 23), 512),
        zscore(3, false),
    ];
    // Scores are 0.25 past each reading's index in its batch.
    expected[3].4 = Some(1.25);
    expected[2].4 = Some(1.25);
    assert_eq!(view(&pool).await, expected);

    // Keeping a day past the newest reading (day 3, 08:00) drops day 1: the first model still
    // judged a reading of day 2, so it stays.
    let keep_a_day = Retention { readings: Some(std::time::Duration::from_secs(86_400)), dead_letters: None };
    let report = store.maintain_partitions(&keep_a_day, at(3, 12)).await.expect("maintained");
    assert!(report.dropped.contains(&"sensor_readings_20260101".to_owned()), "{report:?}");
    assert_eq!(report.models_pruned, 0);
    assert_eq!(models(&pool).await.len(), 3);
    assert_eq!(
        view(&pool).await,
        vec![expected[2].clone(), expected[3].clone(), expected[4].clone(), expected[5].clone()]
    );

    // A reading of day 4 moves the cut past day 2: the first model goes with it, the others stay.
    store.write(&batch(source, 4, &[at(4, 9)], second)).await.expect("written");
    let report = store.maintain_partitions(&keep_a_day, at(4, 12)).await.expect("maintained");
    assert!(report.dropped.contains(&"sensor_readings_20260102".to_owned()), "{report:?}");
    assert_eq!(report.models_pruned, 1);
    assert_eq!(
        models(&pool).await,
        vec![("isolation-forest".into(), Some(2), day(4)), ("zscore".into(), None, day(4))]
    );
    let offsets: Vec<i64> = view(&pool).await.iter().map(|row| row.0).collect();
    assert_eq!(offsets, [2, 2, 4, 4], "every verdict left reads through the view");
}

/// A plugin that reports a new model with every verdict (a bug, or hostile): every model is
/// stored, once, in the batch's one transaction, and every verdict reads back with its own.
#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_model_for_every_verdict_is_stored_with_its_verdict(pool: PgPool) {
    let store = Store::new(pool.clone());
    let source = store.source_id("models-test", "iot_sensors").await.expect("source");
    let at = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).single().expect("a time");
    let times: Vec<DateTime<Utc>> = (0..500).map(|i| at + chrono::Duration::seconds(i)).collect();
    let mut rows = batch(source, 0, &times, None);
    for p in rows.predictions.iter_mut().filter(|p| p.detector == "isolation-forest") {
        p.model = lineage(p.reading as i32, Some(at), 7);
    }
    store.write(&rows).await.expect("written");
    let models: i64 =
        sqlx::query_scalar("SELECT count(*) FROM detector_models").fetch_one(&pool).await.expect("models");
    assert_eq!(models, 501, "a model for each forest verdict, and the z-score's");
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ml_anomaly_predictions WHERE detector = 'isolation-forest' \
         AND model_generation IS DISTINCT FROM kafka_offset::int",
    )
    .fetch_one(&pool)
    .await
    .expect("view");
    let judged: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ml_anomaly_predictions").fetch_one(&pool).await.expect("view");
    assert_eq!((judged, wrong), (1000, 0), "every verdict with its own model");
}
