//! `GET /api/history`: readings already in PostgreSQL, aggregated by the host into buckets of
//! equal width aligned on `from`, at most 1000 a series whatever the range, filtered by type,
//! location or sensor; bad ranges and unknown types refused with their codes. Every expected
//! bucket below is computed by hand from the rows inserted.

use iotstream::store::Store;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::api_limits::serve;

/// 2026-01-01T00:00:00Z in milliseconds.
const BASE: i64 = 1_767_225_600_000;

/// Inserts one reading `ms` milliseconds after [`BASE`].
async fn insert(
    pool: &PgPool,
    offset: i64,
    (sensor, kind, location): (&str, &str, &str),
    ms: i64,
    value: f64,
    flags: (bool, bool),
) {
    sqlx::query(
        "INSERT INTO sensor_readings (sensor_id, sensor_type, location, value, unit, timestamp, anomaly, flagged, \
         kafka_partition, kafka_offset) VALUES ($1, $2, $3, $4, 'u', to_timestamp($5::double precision / 1000), $6, $7, 0, $8)",
    )
    .bind(sensor)
    .bind(kind)
    .bind(location)
    .bind(value)
    .bind(BASE + ms)
    .bind(flags.0)
    .bind(flags.1)
    .bind(offset)
    .execute(pool)
    .await
    .expect("insert reading");
}

/// `(start, count, avg, min, max, flagged, labelled)` of each point of each series, as text.
fn points(body: &Value) -> Vec<(String, Vec<Value>)> {
    let series = body["series"].as_array().cloned().unwrap_or_default();
    series
        .iter()
        .map(|s| {
            let name =
                format!("{}/{}", s["sensor_type"].as_str().unwrap_or("?"), s["location"].as_str().unwrap_or("?"));
            let points =
                s["points"].as_array().cloned().unwrap_or_default().into_iter().map(|p| {
                    json!([p["start"], p["count"], p["avg"], p["min"], p["max"], p["flagged"], p["labelled"]])
                });
            (name, points.collect())
        })
        .collect()
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn history_is_bucketed_on_the_server_exactly(pool: PgPool) {
    let hall_t = ("t-1", "temperature", "hall");
    insert(&pool, 0, hall_t, 0, 10.0, (false, true)).await;
    insert(&pool, 1, hall_t, 3_599, 20.0, (false, false)).await;
    insert(&pool, 2, hall_t, 3_600, 30.0, (true, false)).await;
    insert(&pool, 3, ("t-2", "temperature", "hall"), 7_300, 5.0, (false, false)).await;
    insert(&pool, 4, ("h-1", "humidity", "lab"), 3_599_999, 50.0, (true, true)).await;
    // Outside [from, to): one millisecond before, and exactly at `to`.
    insert(&pool, 5, ("h-1", "humidity", "lab"), -1, 99.0, (false, false)).await;
    insert(&pool, 6, ("h-1", "humidity", "lab"), 3_600_000, 99.0, (false, false)).await;
    let addr = serve(Store::new(pool.clone()), 4).await;
    let get = |query: String| async move {
        let response = reqwest::get(format!("http://{addr}/api/history{query}")).await.expect("api");
        (response.status().as_u16(), response.json::<Value>().await.expect("json"))
    };
    let hour = "from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z";
    let (status, body) = get(format!("?{hour}")).await;
    assert_eq!(status, 200, "{body}");
    // One hour in at most 1000 buckets: 3,600,000 ms / 1000 = 3600 ms each, aligned on `from`.
    assert_eq!(body["bucket_millis"], 3600);
    let hall = vec![
        json!(["2026-01-01T00:00:00Z", 2, 15.0, 10.0, 20.0, 1, 0]),
        json!(["2026-01-01T00:00:03.600Z", 1, 30.0, 30.0, 30.0, 0, 1]),
        json!(["2026-01-01T00:00:07.200Z", 1, 5.0, 5.0, 5.0, 0, 0]),
    ];
    // 3,599,999 ms is in bucket 999, which starts at 999 * 3600 ms = 3596.4 s.
    let lab = vec![json!(["2026-01-01T00:59:56.400Z", 1, 50.0, 50.0, 50.0, 1, 1])];
    assert_eq!(
        points(&body),
        [("humidity/lab".to_owned(), lab.clone()), ("temperature/hall".to_owned(), hall.clone())]
    );
    // Sample standard deviation of 10 and 20: sqrt((5^2 + 5^2) / 1) = sqrt(50); none for one reading.
    let stddev = body["series"][1]["points"][0]["stddev"].as_f64().unwrap_or_default();
    assert!((stddev - 50f64.sqrt()).abs() < 1e-12, "{stddev}");
    assert_eq!(body["series"][1]["points"][1]["stddev"], Value::Null);
    // Filters: a type, a location, one sensor.
    let (_, body) = get(format!("?{hour}&sensor_type=humidity")).await;
    assert_eq!(points(&body), [("humidity/lab".to_owned(), lab)]);
    let (_, body) = get(format!("?{hour}&location=hall")).await;
    assert_eq!(points(&body), [("temperature/hall".to_owned(), hall)]);
    let (_, body) = get(format!("?{hour}&sensor_id=t-2")).await;
    assert_eq!(
        points(&body),
        [("temperature/hall".to_owned(), vec![json!(["2026-01-01T00:00:07.200Z", 1, 5.0, 5.0, 5.0, 0, 0])])]
    );
    // Refusals, with their codes.
    let (status, body) = get(format!("?{hour}&sensor_type=radiation")).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("unknown_sensor_type")), "{body}");
    let (status, body) = get("?from=2026-01-01T00:00:00Z&to=2026-01-09T00:00:00Z".into()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("range_too_long")), "{body}");
    let (status, body) = get("?from=2026-01-01T01:00:00Z&to=2026-01-01T00:00:00Z".into()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("empty_range")), "{body}");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_week_of_history_is_at_most_a_thousand_points_a_series(pool: PgPool) {
    // One reading a minute for 7 days: 10,080 readings, value = the minute's index.
    sqlx::query(
        "INSERT INTO sensor_readings (sensor_id, sensor_type, location, value, unit, timestamp, kafka_partition, kafka_offset) \
         SELECT 'c-1', 'co2', 'hall', m, 'ppm', to_timestamp($1::double precision / 1000) + m * interval '1 minute', 0, m \
         FROM generate_series(0, 10079) AS m",
    )
    .bind(BASE)
    .execute(&pool)
    .await
    .expect("insert a week");
    let addr = serve(Store::new(pool), 4).await;
    let url = format!("http://{addr}/api/history?from=2026-01-01T00:00:00Z&to=2026-01-08T00:00:00Z");
    let body: Value = reqwest::get(url).await.expect("api").json().await.expect("json");
    // 604,800,000 ms / 1000 = 604,800 ms (10.08 min) a bucket: exactly 1000 buckets.
    assert_eq!(body["bucket_millis"], 604_800);
    let points = body["series"][0]["points"].as_array().cloned().unwrap_or_default();
    assert_eq!(points.len(), 1000);
    let total: i64 = points.iter().map(|p| p["count"].as_i64().unwrap_or_default()).sum();
    assert_eq!(total, 10_080);
    // Bucket 0 holds minutes 0..=10 (0 to 600 s, under 604.8 s): 11 readings, mean 5.
    assert_eq!(
        (points[0]["count"].clone(), points[0]["avg"].clone(), points[0]["max"].clone()),
        (json!(11), json!(5.0), json!(10.0))
    );
    // Bucket 1, [604.8 s, 1209.6 s), holds minutes 11..=20 (660 s to 1200 s): 10 readings.
    assert_eq!(
        (points[1]["start"].clone(), points[1]["count"].clone(), points[1]["min"].clone()),
        (json!("2026-01-01T00:10:04.800Z"), json!(10), json!(11.0))
    );
}
