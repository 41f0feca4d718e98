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

/// Inserts a window of `kind` at `location` starting `minute` minutes after [`BASE`], with its
/// average and revision.
async fn insert_window(pool: &PgPool, (location, kind): (&str, &str), minute: i64, avg: f64, revision: i32) {
    sqlx::query(
        "INSERT INTO sensor_aggregates (stage, window_start, window_end, location, sensor_type, avg_value, min_value, \
         max_value, stddev_value, count_readings, anomaly_count, revision) \
         VALUES ('tumbling-window', to_timestamp($1::double precision / 1000), \
         to_timestamp($1::double precision / 1000) + interval '1 minute', $2, $3, $4, $4, $4, 0, 10, 0, $5)",
    )
    .bind(BASE + minute * 60_000)
    .bind(location)
    .bind(kind)
    .bind(avg)
    .bind(revision)
    .execute(pool)
    .await
    .expect("insert window");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn correlations_pair_the_newest_windows_of_two_types_by_start(pool: PgPool) {
    // Minutes 0-3 at the hall: temperature rises 20..23, humidity falls 50..44, CO2 alternates
    // 400/410; pressure has minute 0 only.
    for (minute, (t, h, c)) in
        [(20.0, 50.0, 400.0), (21.0, 48.0, 410.0), (22.0, 46.0, 400.0), (23.0, 44.0, 410.0)].into_iter().enumerate()
    {
        let minute = minute as i64;
        // Temperature's minute 3 was first emitted at 99, then revised to 23: only the revision counts.
        if minute == 3 {
            insert_window(&pool, ("hall", "temperature"), minute, 99.0, 0).await;
        }
        insert_window(&pool, ("hall", "temperature"), minute, t, if minute == 3 { 1 } else { 0 }).await;
        insert_window(&pool, ("hall", "humidity"), minute, h, 0).await;
        insert_window(&pool, ("hall", "co2"), minute, c, 0).await;
        // Another location's windows are not paired with the hall's.
        insert_window(&pool, ("lab", "humidity"), minute, 100.0 - h * h, 0).await;
    }
    insert_window(&pool, ("hall", "pressure"), 0, 1013.0, 0).await;
    // Outside [from, to): a window starting exactly at `to`.
    insert_window(&pool, ("hall", "humidity"), 60, 0.0, 0).await;
    insert_window(&pool, ("hall", "temperature"), 60, 1000.0, 0).await;
    let addr = serve(Store::new(pool.clone()), 4).await;
    let get = |query: &str| {
        let url = format!("http://{addr}/api/correlations?{query}");
        async move {
            let response = reqwest::get(url).await.expect("api");
            (response.status().as_u16(), response.json::<Value>().await.expect("json"))
        }
    };
    let (status, body) = get("location=hall&from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z").await;
    assert_eq!(status, 200, "{body}");
    let pairs: Vec<(String, String, i64, Option<f64>)> = body["pairs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            assert_eq!(p["stage"], "tumbling-window");
            let name = |key: &str| p[key].as_str().unwrap_or("?").to_owned();
            (
                name("sensor_type_a"),
                name("sensor_type_b"),
                p["windows"].as_i64().unwrap_or(-1),
                p["correlation"].as_f64(),
            )
        })
        .collect();
    // By hand: temperature minus its mean is (-1.5, -0.5, 0.5, 1.5), humidity's (3, 1, -1, -3) and
    // CO2's (-5, 5, -5, 5). Temperature-CO2: sxy = 10, sxx = 5, syy = 100, r = 10 / sqrt(500) =
    // 1 / sqrt(5); humidity-CO2: sxy = -20, sxx = 20, syy = 100, r = -1 / sqrt(5); temperature and
    // humidity fall on a line: -1. One window (pressure) has no correlation.
    let fifth = 1.0 / 5f64.sqrt();
    let expected: [(&str, &str, i64, Option<f64>); 10] = [
        ("co2", "co2", 4, Some(1.0)),
        ("co2", "humidity", 4, Some(-fifth)),
        ("co2", "pressure", 1, None),
        ("co2", "temperature", 4, Some(fifth)),
        ("humidity", "humidity", 4, Some(1.0)),
        ("humidity", "pressure", 1, None),
        ("humidity", "temperature", 4, Some(-1.0)),
        ("pressure", "pressure", 1, None),
        ("pressure", "temperature", 1, None),
        ("temperature", "temperature", 4, Some(1.0)),
    ];
    assert_eq!(pairs.len(), expected.len(), "{body}");
    for (got, want) in pairs.iter().zip(expected) {
        assert_eq!((got.0.as_str(), got.1.as_str(), got.2), (want.0, want.1, want.2), "{body}");
        match (got.3, want.3) {
            (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "{got:?} against {want:?}"),
            (g, w) => assert_eq!(g, w, "{got:?}"),
        }
    }
    // The location is required; a bad range is refused as /api/history refuses it.
    let (status, body) = get("from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("location_required")), "{body}");
    let (status, body) = get("location=hall&from=2026-01-01T01:00:00Z&to=2026-01-01T00:00:00Z").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("empty_range")), "{body}");
}
