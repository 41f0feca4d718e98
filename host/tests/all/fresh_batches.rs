//! Fresh batches: readings none of which can be stored yet are copied (binary `COPY`), not inserted
//! one by one. Attacked here: every column reads back exactly as the `INSERT` path stores it; a
//! batch wrongly taken for fresh (a retry after a commit whose answer was lost) is written once,
//! not twice and not refused; a poison reading in a fresh batch still costs only itself; the tuples
//! the lanes encode, assembled into one batch, read back exactly; a replay stores only the messages
//! past the partitions' stored positions, and a message repeated within a batch once; an attempt
//! beside its first attempt's commit rolls back instead of storing its messages again.

use chrono::{DateTime, TimeZone, Utc};
use iotstream::reading::{Reading, SensorType};
use iotstream::store::{
    BatchRows, LaneBatch, ModelLineage, Prediction, ReadingsPath, Store, StoreError, StoredReading,
};
use iotstream_api::Verdict;
use sqlx::PgPool;

fn reading(sensor: &str, offset: i64, timestamp: DateTime<Utc>, value: f64) -> StoredReading {
    StoredReading {
        reading: Reading {
            sensor_id: sensor.into(),
            sensor_type: SensorType::Pressure,
            location: "hall ü".into(),
            value,
            timestamp,
            anomaly: offset % 2 == 1,
            unit: "hPa".into(),
        },
        flagged: offset == 2,
        partition: 1,
        offset,
    }
}

fn batch(source: i16, readings: Vec<StoredReading>, fresh: bool) -> BatchRows {
    let next = readings.iter().map(|r| r.offset + 1).max().unwrap_or(0);
    let predictions = vec![Prediction {
        detector: "zscore".into(),
        reading: 0,
        verdict: Verdict::Anomaly,
        score: 3.5,
        detector_version: "0.3.0".into(),
        model: Some(ModelLineage { generation: 2, trained_at: None, training_rows: 100 }),
    }];
    BatchRows {
        source,
        topic: "iot_sensors".into(),
        positions: [(1, next)].into(),
        lanes: vec![LaneBatch { partition: 1, batch_seq: 1, next_offset: next, forget: None }],
        readings,
        predictions,
        fresh,
        ..BatchRows::default()
    }
}

type Row = (String, String, String, f64, DateTime<Utc>, bool, String, bool, i32, i64, i16, String);

/// The id of a model (untrained: no training time) as the database computes it (migration 0015).
async fn model_id(pool: &PgPool, detector: &str, version: &str, generation: Option<i32>, rows: Option<i32>) -> i64 {
    sqlx::query_scalar("SELECT iotstream_detector_model_id($1, $2, $3, NULL, $4)")
        .bind(detector)
        .bind(version)
        .bind(generation)
        .bind(rows)
        .fetch_one(pool)
        .await
        .expect("model id")
}

async fn stored_rows(pool: &PgPool) -> Vec<Row> {
    sqlx::query_as(
        "SELECT sensor_id, sensor_type, location, value, timestamp, anomaly, unit, flagged, kafka_partition, \
         kafka_offset, source_id, verdicts::text FROM sensor_readings ORDER BY kafka_offset",
    )
    .fetch_all(pool)
    .await
    .expect("readings")
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_fresh_batch_stores_the_same_rows_as_the_insert_would(pool: PgPool) {
    let store = Store::new(pool.clone());
    let source = store.source_id("fresh-test-cluster", "iot_sensors").await.expect("source");
    let at = Utc.with_ymd_and_hms(2026, 12, 3, 8, 15, 30).single().expect("valid time")
        + chrono::Duration::microseconds(123_456);
    // Before PostgreSQL's epoch (2000): a binary timestamp counts back from it.
    let old = Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 59).single().expect("valid time");
    let readings = vec![reading("p-1", 0, at, 1013.25), reading("p-2", 1, at, -0.0), reading("p-3", 2, old, 1e-300)];

    let written = store.write(&batch(source, readings, true)).await.expect("written");

    assert_eq!((written.totals.readings, written.totals.flagged, written.refused.len()), (3, 1, 0));
    assert_eq!(written.readings_paths, vec![ReadingsPath::Copy]);
    let verdicts = format!("[[{},2,3.5]]", model_id(&pool, "zscore", "0.3.0", Some(2), Some(100)).await);
    let verdicts = verdicts.as_str();
    let row = |sensor: &str, offset: i64, t: DateTime<Utc>, value: f64, verdicts: &str| -> Row {
        let hall = "hall ü".to_owned();
        let (anomaly, flagged) = (offset % 2 == 1, offset == 2);
        (
            sensor.into(),
            "pressure".into(),
            hall,
            value,
            t,
            anomaly,
            "hPa".into(),
            flagged,
            1,
            offset,
            source,
            verdicts.into(),
        )
    };
    let rows = stored_rows(&pool).await;
    assert_eq!(
        rows,
        vec![row("p-1", 0, at, 1013.25, verdicts), row("p-2", 1, at, -0.0, "[]"), row("p-3", 2, old, 1e-300, "[]"),]
    );
    assert!(rows[1].3.is_sign_negative(), "-0.0 keeps its sign");
    let totals = store.totals().await.expect("totals");
    assert_eq!((totals.readings, totals.flagged), (3, 1));
    // The seed's view reads the copied verdicts.
    let view: Vec<(String, i64, bool)> =
        sqlx::query_as("SELECT detector, kafka_offset, is_anomaly FROM ml_anomaly_predictions")
            .fetch_all(&pool)
            .await
            .expect("view");
    assert_eq!(view, vec![("zscore".to_owned(), 0, true)]);
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_batch_wrongly_taken_for_fresh_is_written_once(pool: PgPool) {
    let store = Store::new(pool.clone());
    let source = store.source_id("fresh-test-cluster", "iot_sensors").await.expect("source");
    let at = Utc.with_ymd_and_hms(2026, 12, 3, 8, 15, 30).single().expect("valid time");
    let first = batch(source, vec![reading("p-1", 0, at, 1.0), reading("p-2", 1, at, 2.0)], true);
    assert_eq!(store.write(&first).await.expect("written").readings_paths, vec![ReadingsPath::Copy]);
    let before = stored_rows(&pool).await;

    // The same batch again, still marked fresh (a retry after a commit whose answer was lost), with
    // one new reading: the stored two are skipped, the new one stored, nothing refused.
    let mut again = batch(source, vec![reading("p-1", 0, at, 1.0), reading("p-2", 1, at, 2.0)], true);
    again.readings.push(reading("p-4", 3, at, 4.0));
    again.positions = [(1, 4)].into();
    let written = store.write(&again).await.expect("written again");

    assert_eq!((written.totals.readings, written.refused.len()), (1, 0));
    assert_eq!(written.readings_paths, vec![ReadingsPath::CopyRedone]);
    let after = stored_rows(&pool).await;
    assert_eq!(after[..2], before[..]);
    assert_eq!(after.iter().map(|r| r.9).collect::<Vec<_>>(), vec![0, 1, 3]);
    let totals = store.totals().await.expect("totals");
    assert_eq!(totals.readings, 3);
    assert_eq!(store.positions(source).await.expect("positions"), [(1, 4)].into());
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters").fetch_one(&pool).await.expect("letters");
    assert_eq!(dead, 0);
}

/// (offset, value) of every stored reading, in offset order, and the source's stored total.
async fn offsets_and_values(pool: &PgPool, store: &Store) -> (Vec<(i64, f64)>, u64) {
    let rows = stored_rows(pool).await.into_iter().map(|r| (r.9, r.3)).collect();
    (rows, store.totals().await.expect("totals").readings)
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_replay_stores_only_the_messages_past_the_positions_and_a_repeated_message_once(pool: PgPool) {
    let store = Store::new(pool.clone());
    let source = store.source_id("fresh-test-cluster", "iot_sensors").await.expect("source");
    let at = Utc.with_ymd_and_hms(2026, 12, 3, 8, 15, 30).single().expect("valid time");
    let first = batch(source, (0..3).map(|o| reading("p", o, at, o as f64)).collect(), true);
    assert_eq!(store.write(&first).await.expect("written").readings_paths, vec![ReadingsPath::Copy]);

    // A replay (not fresh): offsets 1 and 2 are stored (the position is 3), 3 and 4 are new, and
    // 3 comes twice (its second copy's value tells it apart).
    let mut replay = batch(
        source,
        [(1, 1.0), (2, 2.0), (3, 3.0), (3, 30.0), (4, 4.0)].map(|(o, v)| reading("p", o, at, v)).to_vec(),
        false,
    );
    replay.lanes[0].batch_seq = 2;
    let written = store.write(&replay).await.expect("replay written");
    assert_eq!(
        (written.totals.readings, written.refused.len(), written.readings_paths.as_slice()),
        (2, 0, [ReadingsPath::Insert].as_slice())
    );
    assert_eq!(offsets_and_values(&pool, &store).await, (vec![(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)], 5));
    assert_eq!(store.positions(source).await.expect("positions"), [(1, 5)].into());

    // A fresh batch with a message repeated out of order: its first copy stored, once.
    let mut repeated =
        batch(source, [(5, 5.0), (6, 6.0), (5, 50.0), (7, 7.0)].map(|(o, v)| reading("p", o, at, v)).to_vec(), true);
    repeated.lanes[0].batch_seq = 3;
    let written = store.write(&repeated).await.expect("written");
    assert_eq!(
        (written.totals.readings, written.readings_paths.as_slice()),
        (3, [ReadingsPath::CopyRedone].as_slice())
    );
    let (rows, total) = offsets_and_values(&pool, &store).await;
    assert_eq!((&rows[5..], total), ([(5, 5.0), (6, 6.0), (7, 7.0)].as_slice(), 8));

    // Written again whole (its commit's answer lost): nothing more.
    let written = store.write(&repeated).await.expect("written again");
    assert_eq!(
        (written.totals.readings, written.readings_paths.as_slice()),
        (0, [ReadingsPath::CopyRedone].as_slice())
    );
    assert_eq!(offsets_and_values(&pool, &store).await.1, 8);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM sensor_readings").fetch_one(&pool).await.expect("count");
    assert_eq!(rows, 8);
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn an_attempt_beside_its_first_attempts_commit_stores_nothing_twice(pool: PgPool) {
    let store = Store::new(pool.clone());
    let source = store.source_id("fresh-test-cluster", "iot_sensors").await.expect("source");
    let at = Utc.with_ymd_and_hms(2026, 12, 3, 8, 15, 30).single().expect("valid time");
    let readings: Vec<StoredReading> = (0..3).map(|o| reading("p", o, at, o as f64)).collect();

    sqlx::query("SELECT iotstream_ensure_day_partition('sensor_readings', $1::date)")
        .bind(at.date_naive())
        .execute(&pool)
        .await
        .expect("day");
    // The first attempt, its commit still on its way when its answer is lost: its readings and
    // its partition's position written, not yet committed.
    let mut first = pool.begin().await.expect("begin");
    sqlx::query("INSERT INTO kafka_offsets (source_id, kafka_partition, next_offset) VALUES ($1, 1, 3)")
        .bind(source)
        .execute(&mut *first)
        .await
        .expect("position");
    sqlx::query(
        "INSERT INTO sensor_readings (sensor_id, sensor_type, location, value, timestamp, unit, kafka_partition, \
         kafka_offset, source_id) SELECT 'p', 'pressure', 'hall', o, $2, 'hPa', 1, o, $1 FROM generate_series(0, 2) o",
    )
    .bind(source)
    .bind(at)
    .execute(&mut *first)
    .await
    .expect("readings");

    // The retry, beside it: it reads the positions before the first attempt commits, so it takes
    // every message for new, and waits for the first attempt's position before it moves it.
    let retry = tokio::spawn({
        let store = store.clone();
        let batch = batch(source, readings.clone(), true);
        async move { store.write(&batch).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!retry.is_finished(), "the retry waits for the first attempt's position");
    first.commit().await.expect("first attempt commits");
    let refused = retry.await.expect("task");
    assert!(
        matches!(refused, Err(StoreError::StoredMeanwhile { partition: 1, position: 3 })),
        "the retry rolls back: {refused:?}"
    );

    // Written again, as the pipeline retries it: nothing new.
    let written = store.write(&batch(source, readings, true)).await.expect("written again");
    assert_eq!(
        (written.totals.readings, written.readings_paths.as_slice()),
        (0, [ReadingsPath::CopyRedone].as_slice())
    );
    let (rows, _) = offsets_and_values(&pool, &store).await;
    assert_eq!(rows, vec![(0, 0.0), (1, 1.0), (2, 2.0)]);
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_poison_reading_in_a_fresh_batch_costs_only_itself(pool: PgPool) {
    let store = Store::new(pool.clone());
    let source = store.source_id("fresh-test-cluster", "iot_sensors").await.expect("source");
    let at = Utc.with_ymd_and_hms(2026, 12, 3, 8, 15, 30).single().expect("valid time");
    let mut long_id = reading("p-2", 1, at, 2.0);
    long_id.reading.sensor_id = "x".repeat(101).into(); // over sensor_id's 100 characters
    // Before 4713 BC, PostgreSQL's first day: the binary timestamp must be refused, not stored as
    // some other time.
    let before_postgres = Utc.with_ymd_and_hms(-7000, 1, 1, 0, 0, 0).single().expect("chrono holds it");
    let readings =
        vec![reading("p-1", 0, at, 1.0), long_id, reading("p-3", 2, at, 3.0), reading("p-4", 3, before_postgres, 4.0)];

    let written = store.write(&batch(source, readings, true)).await.expect("written");

    assert_eq!((written.totals.readings, written.totals.dead_letters), (2, 2));
    assert_eq!(written.readings_paths, vec![ReadingsPath::Insert]);
    assert_eq!(stored_rows(&pool).await.iter().map(|r| r.9).collect::<Vec<_>>(), vec![0, 2]);
    let letters: Vec<i64> = sqlx::query_scalar("SELECT kafka_offset FROM dead_letters ORDER BY kafka_offset")
        .fetch_all(&pool)
        .await
        .expect("letters");
    assert_eq!(letters, vec![1, 3]);
}

/// The pipeline's way: each lane encodes its readings for the `COPY` on its own thread, and the
/// batch assembled from the lanes sends those tuples. They read back exactly as the rows say, each
/// lane's verdicts on its own readings.
#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_batch_its_lanes_encoded_reads_back_exactly(pool: PgPool) {
    let store = Store::new(pool.clone());
    let source = store.source_id("fresh-test-cluster", "iot_sensors").await.expect("source");
    let at = Utc.with_ymd_and_hms(2026, 12, 4, 23, 0, 0).single().expect("valid time");
    let mut whole = BatchRows { source, topic: "iot_sensors".into(), fresh: true, ..BatchRows::default() };
    for (partition, values) in [(1, vec![1.5, 2.5]), (2, vec![-3.0])] {
        let mut lane = batch(source, Vec::new(), true);
        for (offset, value) in values.into_iter().enumerate() {
            let offset = offset as i64;
            let mut stored = reading(&format!("s-{partition}-{offset}"), offset, at, value);
            stored.partition = partition;
            lane.readings.push(stored);
        }
        lane.positions = [(partition, lane.readings.len() as i64)].into();
        lane.lanes = vec![LaneBatch { partition, batch_seq: 1, next_offset: lane.readings.len() as i64, forget: None }];
        // batch() gives reading 0 a verdict; partition 2's says `warming_up` with no model.
        if partition == 2 {
            lane.predictions[0].verdict = Verdict::WarmingUp;
            lane.predictions[0].model = None;
        }
        lane.encode_for_copy();
        whole.append(lane);
    }
    assert!(whole.copy_matches_readings(), "the lanes' tuples are sent");

    let written = store.write(&whole).await.expect("written");

    assert_eq!(written.readings_paths, vec![ReadingsPath::Copy]);
    assert_eq!((written.totals.readings, written.totals.flagged), (3, 0));
    let rows: Vec<(String, i32, i64, f64, String)> = sqlx::query_as(
        "SELECT sensor_id, kafka_partition, kafka_offset, value, verdicts::text FROM sensor_readings \
         ORDER BY kafka_partition, kafka_offset",
    )
    .fetch_all(&pool)
    .await
    .expect("readings");
    let zscore = format!("[[{},2,3.5]]", model_id(&pool, "zscore", "0.3.0", Some(2), Some(100)).await);
    let warming = format!("[[{},0,3.5]]", model_id(&pool, "zscore", "0.3.0", None, None).await);
    assert_eq!(
        rows,
        vec![
            ("s-1-0".to_owned(), 1, 0, 1.5, zscore.to_owned()),
            ("s-1-1".to_owned(), 1, 1, 2.5, "[]".to_owned()),
            ("s-2-0".to_owned(), 2, 0, -3.0, warming.to_owned()),
        ]
    );
    assert_eq!(store.positions(source).await.expect("positions"), [(1, 2), (2, 1)].into());
}
