//! Tables that stay small (migration 0008): `sensor_readings` and `dead_letters` are partitioned by
//! day; a batch makes the days it needs, a replay into them stores nothing twice, and retention
//! drops whole days, never rows of the days it keeps.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use iotstream::reading::{Reading, SensorType};
use iotstream::store::partitions::{PartitionedTable, Retention};
use iotstream::store::{BatchRows, DeadLetter, Store, StoredReading};
use iotstream_api::DeadLetterReason;
use sqlx::PgPool;

fn stored(offset: i64, timestamp: DateTime<Utc>) -> StoredReading {
    StoredReading {
        reading: Reading {
            sensor_id: format!("t{}", offset % 3).into(),
            sensor_type: SensorType::Temperature,
            location: "lab_1".into(),
            value: 20.0 + offset as f64,
            timestamp,
            anomaly: false,
            unit: "C".into(),
        },
        flagged: false,
        partition: 0,
        offset,
    }
}

fn letter(offset: i64) -> DeadLetter {
    DeadLetter {
        topic: "iot_sensors".into(),
        partition: 0,
        offset,
        key: None,
        payload: Some(b"not a reading".to_vec()),
        error: "malformed reading".into(),
        reason: DeadLetterReason::Malformed,
    }
}

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("date")
}

/// The stored messages' offsets of `table` (a fixed table name from the test).
async fn offsets(pool: &PgPool, table: &'static str) -> Vec<i64> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT kafka_offset FROM {table} ORDER BY kafka_offset")))
        .fetch_all(pool)
        .await
        .expect("offsets")
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_batch_makes_its_days_and_a_replay_stores_nothing_twice(pool: PgPool) {
    let store = Store::new(pool.clone());
    let source = store.source_id("partitions-test", "iot_sensors").await.expect("source");
    let at = |d: u32, h: u32| Utc.with_ymd_and_hms(2025, 3, d, h, 0, 0).single().expect("time");
    // Three days, the last reading a second before midnight and the next at midnight (UTC).
    let readings = vec![
        stored(0, at(1, 10)),
        stored(1, at(1, 23) + Duration::seconds(3599)),
        stored(2, at(2, 0)),
        stored(3, at(9, 12)),
    ];
    let batch = BatchRows {
        source,
        topic: "iot_sensors".into(),
        positions: [(0, 6)].into(),
        readings,
        dead_letters: vec![letter(4), letter(5)],
        ..BatchRows::default()
    };
    let written = store.write(&batch).await.expect("written");
    assert_eq!((written.totals.readings, written.totals.dead_letters), (4, 2));
    assert_eq!(
        store.partition_days(PartitionedTable::Readings).await.expect("days"),
        vec![day(2025, 3, 1), day(2025, 3, 2), day(2025, 3, 9)]
    );
    // Each reading is in its own day's partition.
    let placed: Vec<(String, i64)> =
        sqlx::query_as("SELECT tableoid::regclass::text, kafka_offset FROM sensor_readings ORDER BY kafka_offset")
            .fetch_all(&pool)
            .await
            .expect("placed");
    let expected = [("20250301", 0), ("20250301", 1), ("20250302", 2), ("20250309", 3)]
        .map(|(d, o)| (format!("sensor_readings_{d}"), o));
    assert_eq!(placed, expected);
    // The same batch again (a replay): nothing added, in either table.
    let again = store.write(&batch).await.expect("written again");
    assert_eq!((again.totals.readings, again.totals.dead_letters), (0, 0));
    assert_eq!(offsets(&pool, "sensor_readings").await, vec![0, 1, 2, 3]);
    assert_eq!(offsets(&pool, "dead_letters").await, vec![4, 5]);
    // The all-time counts the dashboard starts from count each row once.
    let totals = store.totals().await.expect("totals");
    assert_eq!((totals.readings, totals.flagged, totals.dead_letters), (4, 0, 2));
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn retention_drops_whole_days_past_the_newest_reading_and_keeps_the_rest(pool: PgPool) {
    let store = Store::new(pool.clone());
    let source = store.source_id("partitions-test", "iot_sensors").await.expect("source");
    // The newest reading is 2025-06-30 12:00: with 30 days kept, the cutoff is 2025-05-31 12:00;
    // the days that ended by then (up to 2025-05-30) go, 2025-05-31 (partly newer) stays.
    let at = |m: u32, d: u32| Utc.with_ymd_and_hms(2025, m, d, 12, 0, 0).single().expect("time");
    let readings = vec![stored(0, at(5, 1)), stored(1, at(5, 30)), stored(2, at(5, 31)), stored(3, at(6, 30))];
    let batch = BatchRows {
        source,
        topic: "iot_sensors".into(),
        positions: [(0, 5)].into(),
        readings,
        dead_letters: vec![letter(4)],
        ..BatchRows::default()
    };
    store.write(&batch).await.expect("written");
    let now = Utc::now();
    let retention = Retention { readings: Some(std::time::Duration::from_secs(30 * 86_400)), dead_letters: None };
    let report = store.maintain_partitions(&retention, now).await.expect("maintained");
    assert_eq!(report.dropped, vec!["sensor_readings_20250501".to_owned(), "sensor_readings_20250530".to_owned()]);
    assert_eq!(offsets(&pool, "sensor_readings").await, vec![2, 3]);
    // Today's and the next two days' partitions are made ahead, for both tables.
    let today = now.date_naive();
    let ahead: Vec<NaiveDate> = today.iter_days().take(3).collect();
    for table in PartitionedTable::ALL {
        let days = store.partition_days(table).await.expect("days");
        assert!(ahead.iter().all(|d| days.contains(d)), "{table:?}: {days:?} lacks some of {ahead:?}");
    }
    // Dead letters by arrival: kept with no retention, dropped with theirs once their day ended
    // longer ago than it (seen from three days on).
    assert_eq!(offsets(&pool, "dead_letters").await, vec![4]);
    let later = now + Duration::days(3);
    let one_day = Retention { readings: None, dead_letters: Some(std::time::Duration::from_secs(86_400)) };
    let report = store.maintain_partitions(&one_day, later).await.expect("maintained later");
    assert!(report.dropped.contains(&format!("dead_letters_{}", today.format("%Y%m%d"))), "{report:?}");
    assert_eq!(offsets(&pool, "dead_letters").await, Vec::<i64>::new());
    // A day dropped is made again when a batch needs it (a replay of old data): nothing is lost.
    let replay = BatchRows {
        source,
        topic: "iot_sensors".into(),
        positions: [(0, 6)].into(),
        readings: vec![stored(5, at(5, 1))],
        ..BatchRows::default()
    };
    assert_eq!(store.write(&replay).await.expect("replayed").totals.readings, 1);
    assert_eq!(offsets(&pool, "sensor_readings").await, vec![2, 3, 5]);
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_row_inserted_by_hand_is_never_refused_and_moves_into_its_day(pool: PgPool) {
    let store = Store::new(pool.clone());
    // A day with no partition: the row goes to the default partition.
    sqlx::query(
        "INSERT INTO sensor_readings (sensor_id, sensor_type, location, value, timestamp, unit, kafka_partition, \
         kafka_offset) VALUES ('s', 'co2', 'lab', 400, '2024-02-29 23:59:59.5+00', 'ppm', 0, 7)",
    )
    .execute(&pool)
    .await
    .expect("inserted by hand");
    let table: String = sqlx::query_scalar("SELECT tableoid::regclass::text FROM sensor_readings")
        .fetch_one(&pool)
        .await
        .expect("table");
    assert_eq!(table, "sensor_readings_default");
    let report = store.maintain_partitions(&Retention::default(), Utc::now()).await.expect("maintained");
    assert!(report.created.contains(&"sensor_readings_20240229".to_owned()), "{report:?}");
    let (table, offset): (String, i64) =
        sqlx::query_as("SELECT tableoid::regclass::text, kafka_offset FROM sensor_readings")
            .fetch_one(&pool)
            .await
            .expect("moved");
    assert_eq!((table.as_str(), offset), ("sensor_readings_20240229", 7));
}

/// Runs a migration file of the repository on `pool`, as the migrator would.
async fn run_migration(pool: &PgPool, file: &str) {
    let path = format!("{}/../migrations/{file}", env!("CARGO_MANIFEST_DIR"));
    let sql = std::fs::read_to_string(&path).expect("migration file");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pool).await.unwrap_or_else(|err| panic!("{file}: {err}"));
}

#[sqlx::test(migrations = false)]
async fn a_database_of_the_old_layout_keeps_every_reading_verdict_and_dead_letter(pool: PgPool) {
    let mut files: Vec<String> = std::fs::read_dir(format!("{}/../migrations", env!("CARGO_MANIFEST_DIR")))
        .expect("migrations")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    files.sort();
    let (before, after): (Vec<_>, Vec<_>) = files.iter().partition(|f| f.as_str() < "0008");
    for file in &before {
        run_migration(&pool, file).await;
    }
    // The old layout: two readings, three verdict rows (two of one reading), a dead letter.
    sqlx::raw_sql(
        "INSERT INTO kafka_sources (cluster_id, topic) VALUES ('old', 'iot_sensors'); \
         INSERT INTO sensor_readings (sensor_id, sensor_type, location, value, timestamp, unit, flagged, kafka_partition, \
         kafka_offset, source_id) VALUES ('a', 'co2', 'lab', 400, '2025-01-01 10:00Z', 'ppm', true, 0, 0, 1), \
         ('b', 'co2', 'lab', 410, '2025-01-02 10:00Z', 'ppm', false, 0, 1, 1); \
         INSERT INTO ml_anomaly_predictions (detector, sensor_id, sensor_type, value, timestamp, verdict, is_anomaly, \
         anomaly_score, rule_based_anomaly, detector_version, model_generation, model_trained_at, model_training_rows, \
         kafka_partition, kafka_offset, source_id) VALUES \
         ('zscore', 'a', 'co2', 400, '2025-01-01 10:00Z', 'anomaly', true, 4.5, false, '0.1.0', NULL, NULL, NULL, 0, 0, 1), \
         ('isolation-forest', 'a', 'co2', 400, '2025-01-01 10:00Z', 'normal', false, 0.41, false, '0.3.0', 2, \
          '2025-01-01 09:00Z', 512, 0, 0, 1), \
         ('zscore', 'b', 'co2', 410, '2025-01-02 10:00Z', 'normal', false, 0.5, false, '0.1.0', NULL, NULL, NULL, 0, 1, 1); \
         INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, error, reason, source_id) \
         VALUES ('iot_sensors', 0, 2, 'malformed reading', 'malformed', 1);",
    )
    .execute(&pool)
    .await
    .expect("old rows");
    for file in &after {
        run_migration(&pool, file).await;
    }
    type Verdict = (i64, String, String, Option<f64>, String, Option<i32>, Option<DateTime<Utc>>, Option<i32>);
    let verdicts: Vec<Verdict> = sqlx::query_as(
        "SELECT kafka_offset, detector, verdict, anomaly_score, detector_version, model_generation, model_trained_at, \
         model_training_rows FROM ml_anomaly_predictions ORDER BY kafka_offset, detector",
    )
    .fetch_all(&pool)
    .await
    .expect("verdicts");
    let trained = Utc.with_ymd_and_hms(2025, 1, 1, 9, 0, 0).single();
    assert_eq!(
        verdicts,
        vec![
            (0, "isolation-forest".into(), "normal".into(), Some(0.41), "0.3.0".into(), Some(2), trained, Some(512)),
            (0, "zscore".into(), "anomaly".into(), Some(4.5), "0.1.0".into(), None, None, None),
            (1, "zscore".into(), "normal".into(), Some(0.5), "0.1.0".into(), None, None, None),
        ]
    );
    // 0015: each verdict names its model, a row of `detector_models` with the newest day it judged.
    let models: Vec<(String, String, Option<i32>, NaiveDate)> = sqlx::query_as(
        "SELECT detector::text, detector_version::text, model_generation, last_day FROM detector_models ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("models");
    assert_eq!(
        models,
        vec![
            ("isolation-forest".into(), "0.3.0".into(), Some(2), day(2025, 1, 1)),
            ("zscore".into(), "0.1.0".into(), None, day(2025, 1, 2)),
        ]
    );
    let stored: Vec<(i64, String)> =
        sqlx::query_as("SELECT kafka_offset, verdicts::text FROM sensor_readings ORDER BY kafka_offset")
            .fetch_all(&pool)
            .await
            .expect("verdicts");
    let zscore: i64 = sqlx::query_scalar("SELECT iotstream_detector_model_id('zscore', '0.1.0', NULL, NULL, NULL)")
        .fetch_one(&pool)
        .await
        .expect("id");
    assert_eq!(stored[1], (1, format!("[[{zscore}, 1, 0.5]]")));
    let placed: Vec<(String, i64, bool)> = sqlx::query_as(
        "SELECT tableoid::regclass::text, kafka_offset, flagged FROM sensor_readings ORDER BY kafka_offset",
    )
    .fetch_all(&pool)
    .await
    .expect("readings");
    assert_eq!(
        placed,
        vec![("sensor_readings_20250101".into(), 0, true), ("sensor_readings_20250102".into(), 1, false)]
    );
    assert_eq!(offsets(&pool, "dead_letters").await, vec![2]);
    // The all-time counts start from the rows there were.
    let totals = Store::new(pool.clone()).totals().await.expect("totals");
    assert_eq!((totals.readings, totals.flagged, totals.aggregates, totals.dead_letters), (2, 1, 0, 1));
    // New rows take ids after the old ones (the sequences moved with the tables).
    let next: i64 = sqlx::query_scalar("SELECT nextval('sensor_readings_id_seq')").fetch_one(&pool).await.expect("seq");
    assert_eq!(next, 3);
    // 0013: the verdicts became JSON and sensor ids compare bytewise, in every day partition and
    // in the index that orders them.
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod) || ' ' || \
         COALESCE((SELECT collname FROM pg_collation WHERE oid = a.attcollation), '') \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         WHERE c.relname IN ('sensor_readings', 'sensor_readings_20250101', 'sensor_readings_20250101_sensor_id_timestamp_idx') \
         AND a.attname IN ('sensor_id', 'verdicts') ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .expect("columns");
    let column = |table: &str, name: &str, kind: &str| (table.to_owned(), name.to_owned(), kind.to_owned());
    assert_eq!(
        columns,
        vec![
            column("sensor_readings", "sensor_id", "character varying(100) C"),
            column("sensor_readings", "verdicts", "json "),
            column("sensor_readings_20250101", "sensor_id", "character varying(100) C"),
            column("sensor_readings_20250101", "verdicts", "json "),
            column("sensor_readings_20250101_sensor_id_timestamp_idx", "sensor_id", "character varying(100) C"),
        ]
    );
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_table_with_no_reading_drops_no_day(pool: PgPool) {
    let store = Store::new(pool.clone());
    // A day made ahead of a batch that has not committed yet (or a replay about to fill it): with
    // no reading stored there is no newest reading to measure from, so the day stays.
    let old = day(2020, 1, 1);
    store.ensure_partitions(PartitionedTable::Readings, [old]).await.expect("made");
    let keep_a_day = Retention { readings: Some(std::time::Duration::from_secs(86_400)), dead_letters: None };
    let report = store.maintain_partitions(&keep_a_day, Utc::now()).await.expect("maintained");
    assert!(!report.dropped.contains(&"sensor_readings_20200101".to_owned()), "{report:?}");
    assert!(store.partition_days(PartitionedTable::Readings).await.expect("days").contains(&old));
}

/// Hosts sharing a topic make the same day's partition at the same moment: every maker succeeds,
/// one of them makes it, and the day holds its rows.
#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn hosts_making_the_same_day_at_once_all_succeed_and_one_makes_it(pool: PgPool) {
    let day = NaiveDate::from_ymd_opt(2031, 3, 14).expect("a date");
    let makers: Vec<_> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                sqlx::query_scalar::<_, bool>("SELECT iotstream_ensure_day_partition('sensor_readings', $1)")
                    .bind(day)
                    .fetch_one(&pool)
                    .await
            })
        })
        .collect();
    let mut made = 0;
    for maker in makers {
        made += usize::from(maker.await.expect("task").expect("no maker fails"));
    }
    assert_eq!(made, 1, "one maker made the day, the others found it made");
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('sensor_readings_20310314') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .expect("lookup");
    assert!(exists);
}
