//! The newest readings and verdicts (`GET /api/readings`, `/api/predictions`, the live view's
//! first snapshot) are the newest by event time, whatever order their messages arrived in
//! (`sensor_readings` is keyed by `(timestamp, id)`, migration 0016), and the database reads them
//! off that key: the query sorts nothing, however large the table.

use chrono::{DateTime, Duration, TimeZone, Utc};
use iotstream::reading::SensorType;
use iotstream::store::{BatchRows, LaneBatch, Prediction, RECENT_PREDICTIONS, RECENT_READINGS, Store, StoredReading};
use iotstream_api::Verdict;
use sqlx::PgPool;

use crate::support::reading;

fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).single().expect("valid time")
}

/// A fresh batch of partition 0 (offsets from `first`), a reading at each of `times` of sensor
/// `s-{offset % 2}`, each with a z-score verdict scored by its offset.
fn batch(source: i16, first: i64, seq: i64, times: &[DateTime<Utc>]) -> BatchRows {
    let next = first + times.len() as i64;
    let readings: Vec<StoredReading> = times
        .iter()
        .zip(first..)
        .map(|(&timestamp, offset)| StoredReading {
            reading: reading(
                &format!("s-{}", offset % 2),
                SensorType::Humidity,
                "store",
                timestamp.timestamp_millis(),
                40.0 + offset as f64,
            ),
            flagged: false,
            partition: 0,
            offset,
        })
        .collect();
    let predictions = (0..readings.len())
        .map(|i| Prediction {
            detector: "zscore".into(),
            reading: i,
            verdict: Verdict::Normal,
            score: (first + i as i64) as f64,
            detector_version: "1.0.0".into(),
            model: None,
        })
        .collect();
    BatchRows {
        source,
        topic: "iot_sensors".into(),
        positions: [(0, next)].into(),
        lanes: vec![LaneBatch { partition: 0, batch_seq: seq, next_offset: next, forget: None }],
        readings,
        predictions,
        fresh: true,
        ..BatchRows::default()
    }
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn the_newest_readings_and_verdicts_are_the_newest_by_event_time(pool: PgPool) {
    let store = Store::new(pool.clone());
    let source = store.source_id("newest-test", "iot_sensors").await.expect("source");
    let at = |seconds: i64| noon() + Duration::seconds(seconds);
    // Offsets 0-2 first, then 3-5: a gateway's buffered readings, an hour older, and one newer
    // than all (offset 5), arriving last.
    let first = [at(10), at(11), at(12)];
    let second = [at(-3600), at(-3599), at(13)];
    store.write(&batch(source, 0, 1, &first)).await.expect("first batch");
    store.write(&batch(source, 3, 2, &second)).await.expect("second batch");

    // By event time, newest first: offsets 5 (12:00:13), 2, 1, 0, then the hour-old 4 and 3.
    let readings = store.recent_readings(4, None).await.expect("readings");
    let values: Vec<f64> = readings.iter().map(|r| r.value).collect();
    assert_eq!(values, [45.0, 42.0, 41.0, 40.0]);
    assert_eq!(readings[0].timestamp, at(13));
    // One sensor's (offsets 1, 3, 5 are `s-1`'s).
    let of_one = store.recent_readings(10, Some("s-1")).await.expect("one sensor's");
    assert_eq!(of_one.iter().map(|r| r.value).collect::<Vec<_>>(), [45.0, 41.0, 43.0]);
    // The verdicts, likewise (each scored by its reading's offset).
    let verdicts = store.recent_predictions(5, None, false).await.expect("verdicts");
    assert_eq!(verdicts.iter().map(|p| p.anomaly_score).collect::<Vec<_>>(), [5.0, 2.0, 1.0, 0.0, 4.0]);

    // Read off the key: with sorting priced out, a plan that still sorts has no index to read
    // the order from (the key by id did not give it). The host's own queries, as a prepared
    // statement's generic plan (the one a pooled connection settles on, any sensor or none); the
    // verdicts of one reading are put in detector order among themselves (an incremental sort).
    let mut connection = pool.acquire().await.expect("connection");
    for setting in ["SET enable_sort = off", "SET enable_seqscan = off", "SET plan_cache_mode = force_generic_plan"] {
        sqlx::query(setting).execute(&mut *connection).await.expect("set");
    }
    for (name, query, arguments) in
        [("readings", RECENT_READINGS, "25, NULL"), ("verdicts", RECENT_PREDICTIONS, "25, NULL, false")]
    {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PREPARE newest_{name} AS {query}")))
            .execute(&mut *connection)
            .await
            .expect("prepare");
        let explain = format!("EXPLAIN (COSTS OFF) EXECUTE newest_{name}({arguments})");
        let plan: String = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(explain))
            .fetch_all(&mut *connection)
            .await
            .expect("plan")
            .join("\n");
        assert!(plan.contains("Index Scan Backward using"), "{name}:\n{plan}");
        let sorts = plan.lines().filter(|line| line.trim_start_matches([' ', '-', '>']) == "Sort").count();
        assert_eq!(sorts, 0, "{name}:\n{plan}");
    }
}
