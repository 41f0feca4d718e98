//! The whole path: readings with known values produced by a Kafka client → the host (mock cluster,
//! the real plugins, real PostgreSQL) → exact rows in all three tables, and a window aggregate equal
//! to a value computed here, independently.

use chrono::{TimeZone, Utc};
use iotstream::reading::{SensorType, encode};
use sqlx::{PgPool, Row};

use crate::support::{Host, count_rows, reading, wait_for};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
const MINUTE: i64 = 60_000;

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn readings_flow_to_all_three_tables_with_exact_windows(pool: PgPool) {
    let host = Host::start(pool.clone(), None, &[]).await;
    // Two sensors, minutes 0-2, 12 readings per sensor per minute, 5 s apart.
    let mut readings = Vec::new();
    for minute in 0..3 {
        for i in 0..12 {
            let ms = T0 + minute * MINUTE + i * 5_000;
            let t = 20.0 + 0.25 * ((i * 7 + minute) % 12) as f64;
            let h = 40.0 + 0.5 * ((i * 5 + 3 * minute) % 12) as f64;
            readings.push(reading("temp-1", SensorType::Temperature, "office_1", ms, t));
            readings.push(reading("hum-1", SensorType::Humidity, "lab_1", ms, h));
        }
    }
    let payloads: Vec<(String, Vec<u8>)> = readings.iter().map(|r| (r.sensor_id.to_string(), encode(r))).collect();
    host.produce(&payloads).await;
    wait_for("sensor_readings", 72, || count_rows(&pool, "sensor_readings")).await;
    // The watermark (newest event 2:55 minus 10 s of lateness) closed minutes 0 and 1 of both groups,
    // in the same transactions as the readings.
    assert_eq!(count_rows(&pool, "sensor_aggregates").await, 4);

    // One reading at 5:30 moves the watermark to 5:20: minute 2 of both groups closes too.
    let closer = reading("temp-1", SensorType::Temperature, "office_1", T0 + 5 * MINUTE + 30_000, 21.0);
    host.produce(&[(closer.sensor_id.to_string(), encode(&closer))]).await;
    wait_for("sensor_aggregates", 6, || count_rows(&pool, "sensor_aggregates")).await;
    wait_for("sensor_readings", 73, || count_rows(&pool, "sensor_readings")).await;
    // Every reading judged by the three detectors (warming up included).
    wait_for("ml_anomaly_predictions", 219, || count_rows(&pool, "ml_anomaly_predictions")).await;
    let detectors: Vec<(String, i64)> =
        sqlx::query_as("SELECT detector, count(*) FROM ml_anomaly_predictions GROUP BY detector ORDER BY detector")
            .fetch_all(&pool)
            .await
            .expect("per detector");
    assert_eq!(detectors, [("isolation-forest".to_owned(), 73), ("novelty".to_owned(), 73), ("zscore".to_owned(), 73)]);
    // Lineage: every row names the plugin version; no forest was trained on 73 readings (it needs 256
    // rows of a sensor type), so no row names a model.
    let lineage: (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE detector_version = '0.1.0'), count(model_generation) FROM ml_anomaly_predictions",
    )
    .fetch_one(&pool)
    .await
    .expect("lineage");
    assert_eq!(lineage, (219, 0));

    // The reference: every window's statistics computed here from what was produced.
    for (sensor, location, sensor_type) in [("temp-1", "office_1", "temperature"), ("hum-1", "lab_1", "humidity")] {
        for minute in 0..3 {
            let values: Vec<f64> = readings
                .iter()
                .filter(|r| r.sensor_id == sensor && (r.timestamp.timestamp_millis() - T0) / MINUTE == minute)
                .map(|r| r.value)
                .collect();
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let stddev = (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
            let start = Utc.timestamp_millis_opt(T0 + minute * MINUTE).single().expect("time");
            let row = sqlx::query(
                "SELECT avg_value, min_value, max_value, stddev_value, count_readings, anomaly_count, window_end, stage \
                 FROM sensor_aggregates WHERE location = $1 AND sensor_type = $2 AND window_start = $3",
            )
            .bind(location)
            .bind(sensor_type)
            .bind(start)
            .fetch_one(&pool)
            .await
            .expect("one aggregate per window");
            let (avg, min, max, sd): (f64, f64, f64, f64) = (row.get(0), row.get(1), row.get(2), row.get(3));
            assert!((avg - mean).abs() < 1e-9, "{sensor} minute {minute}: avg {avg} vs {mean}");
            assert!((sd - stddev).abs() < 1e-9, "{sensor} minute {minute}: stddev {sd} vs {stddev}");
            assert_eq!(min, values.iter().copied().fold(f64::INFINITY, f64::min));
            assert_eq!(max, values.iter().copied().fold(f64::NEG_INFINITY, f64::max));
            assert_eq!(row.get::<i32, _>(4), 12);
            assert_eq!(row.get::<chrono::DateTime<Utc>, _>(6), start + chrono::Duration::minutes(1));
            assert_eq!(row.get::<String, _>(7), "tumbling-window");
            // The window's anomaly count is the number of its stored readings a detector flagged.
            let flagged: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM sensor_readings WHERE sensor_id = $1 AND flagged AND timestamp >= $2 AND timestamp < $3",
            )
            .bind(sensor)
            .bind(start)
            .bind(start + chrono::Duration::minutes(1))
            .fetch_one(&pool)
            .await
            .expect("flagged count");
            assert_eq!(i64::from(row.get::<i32, _>(5)), flagged, "{sensor} minute {minute}");
        }
    }

    // Every first emission is revision 0 with no late reading.
    let first: (i64, i64) = sqlx::query_as("SELECT max(revision)::int8, sum(late_count)::int8 FROM sensor_aggregates")
        .fetch_one(&pool)
        .await
        .expect("revisions");
    assert_eq!(first, (0, 0));

    // A late reading for minute 1 (the watermark is at 5:20) is stored, and revises its window.
    let late = reading("temp-1", SensorType::Temperature, "office_1", T0 + MINUTE + 30_000, 25.0);
    host.produce(&[(late.sensor_id.to_string(), encode(&late))]).await;
    wait_for("sensor_aggregates", 7, || count_rows(&pool, "sensor_aggregates")).await;
    assert_eq!(count_rows(&pool, "sensor_aggregates_latest").await, 6);
    let mut minute_one: Vec<f64> = readings
        .iter()
        .filter(|r| r.sensor_id == "temp-1" && (r.timestamp.timestamp_millis() - T0) / MINUTE == 1)
        .map(|r| r.value)
        .collect();
    minute_one.push(25.0);
    let mean = minute_one.iter().sum::<f64>() / 13.0;
    let revised: (f64, f64, i32, i32, i32) = sqlx::query_as(
        "SELECT avg_value, max_value, count_readings, revision, late_count FROM sensor_aggregates_latest \
         WHERE location = 'office_1' AND window_start = $1",
    )
    .bind(Utc.timestamp_millis_opt(T0 + MINUTE).single().expect("time"))
    .fetch_one(&pool)
    .await
    .expect("revised window");
    assert!((revised.0 - mean).abs() < 1e-9, "revised avg {} vs {mean}", revised.0);
    assert_eq!((revised.1, revised.2, revised.3, revised.4), (25.0, 13, 1, 1));

    // The raw readings are exactly what was produced.
    let stored_sum: f64 =
        sqlx::query_scalar("SELECT sum(value) FROM sensor_readings").fetch_one(&pool).await.expect("sum");
    let produced_sum: f64 = readings.iter().map(|r| r.value).sum::<f64>() + closer.value + late.value;
    assert!((stored_sum - produced_sum).abs() < 1e-9, "stored {stored_sum}, produced {produced_sum}");

    // The API serves the same numbers.
    let stats: serde_json::Value =
        reqwest::get(format!("http://{}/api/stats", host.addr)).await.expect("api").json().await.expect("json");
    assert_eq!(stats["readings_total"], 74);
    assert_eq!(stats["aggregates_total"], 7);
    assert_eq!(stats["active_sensors"], 2);
    // The z-score judges each sensor's readings from the 31st on (30 warm it up): temp-1 sent 38
    // (36, the closer and the late one), hum-1 36, so 8 + 6.
    let quality: serde_json::Value =
        reqwest::get(format!("http://{}/api/quality", host.addr)).await.expect("api").json().await.expect("json");
    let judged: i64 = quality["detectors"]
        .as_array()
        .expect("detectors")
        .iter()
        .filter(|q| q["detector"] == "zscore")
        .map(|q| q["judged"].as_i64().unwrap_or_default())
        .sum();
    assert_eq!(judged, 14);
    host.stop().await.expect("clean shutdown");
}
