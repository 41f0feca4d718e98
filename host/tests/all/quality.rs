//! Detector quality against the source's labels, and agreement between detectors, from the
//! predictions table: counts and rates computed by hand for a small known set.

use chrono::{TimeZone, Utc};
use iotstream::store::Store;
use sqlx::PgPool;

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn precision_recall_and_agreement_match_hand_counts(pool: PgPool) {
    let labels = [true, true, true, false, true, true, false, false, false, false, true, true];
    let zscore = [
        "anomaly",
        "anomaly",
        "anomaly",
        "anomaly",
        "normal",
        "normal",
        "normal",
        "normal",
        "normal",
        "normal",
        "warming_up",
        "warming_up",
    ];
    let forest = [
        "anomaly", "normal", "anomaly", "normal", "normal", "anomaly", "normal", "normal", "normal", "anomaly",
        "anomaly", "normal",
    ];
    let base = Utc.timestamp_millis_opt(1_767_225_600_000).single().expect("time");
    for i in 0..12 {
        let verdicts = serde_json::json!([
            {"d": "zscore", "ver": "0.3.0", "v": zscore[i], "s": 0.0},
            {"d": "isolation-forest", "ver": "0.3.0", "v": forest[i], "s": 0.0},
        ]);
        insert_judged_reading(
            &pool,
            "co2",
            base + chrono::Duration::seconds(i as i64),
            labels[i],
            (0, i as i64),
            verdicts,
        )
        .await;
    }
    let report = Store::new(pool).quality(None, None).await.expect("quality");
    let d: Vec<_> = report
        .detectors
        .iter()
        .map(|q| (q.detector.as_str(), q.judged, q.true_positives, q.false_positives, q.false_negatives))
        .collect();
    assert_eq!(d, [("isolation-forest", 12, 4, 1, 3), ("zscore", 10, 3, 1, 2)]);
    let z = &report.detectors[1];
    assert_eq!((z.precision, z.recall), (Some(0.75), Some(0.6)));
    assert!((z.f1.unwrap_or_default() - 2.0 / 3.0).abs() < 1e-12);
    let f = &report.detectors[0];
    assert_eq!((f.precision, f.recall), (Some(0.8), Some(4.0 / 7.0)));
    // Alarms per hour of event time: the z-score judged readings 0-9 (9 s) and flagged 4, so
    // 4 x 3600 / 9 = 1600; the forest judged 0-11 (11 s) and flagged 5: 5 x 3600 / 11.
    assert_eq!((z.span_s, z.alarms_per_hour), (9.0, Some(1600.0)));
    assert_eq!((f.span_s, f.alarms_per_hour), (11.0, Some(5.0 * 3600.0 / 11.0)));
    let a = &report.agreement;
    assert_eq!(a.len(), 1);
    assert_eq!(
        (
            a[0].detector_a.as_str(),
            a[0].detector_b.as_str(),
            a[0].judged_by_both,
            a[0].agreed,
            a[0].both_anomalous,
            a[0].agreement
        ),
        ("isolation-forest", "zscore", 10, 6, 2, Some(0.6))
    );
    // The 2x2 confusion of the verdicts both gave (readings 0-9; the z-score warmed up on 10-11):
    // both anomalous on 0 and 2, only the forest on 5 and 9, only the z-score on 1 and 3, both
    // normal on 4, 6, 7 and 8.
    assert_eq!((a[0].only_a_anomalous, a[0].only_b_anomalous, a[0].both_normal()), (2, 2, 4));
}

/// Inserts a reading of `sensor_type` with its verdicts as the pipeline stores them: `verdicts`
/// as objects of detector `d`, version `ver`, verdict `v`, score `s` and the model's `g`, `t`
/// and `n`, stored as `[model, verdict, score]` with each model a row of `detector_models` whose
/// id the database computes (migration 0015).
async fn insert_judged_reading(
    pool: &PgPool,
    sensor_type: &str,
    at: chrono::DateTime<Utc>,
    label: bool,
    (partition, offset): (i32, i64),
    verdicts: serde_json::Value,
) {
    let mut stored = Vec::new();
    for v in verdicts.as_array().cloned().unwrap_or_default() {
        let trained_at: Option<chrono::DateTime<Utc>> = v["t"].as_str().map(|t| t.parse().expect("a time"));
        let model: i64 = sqlx::query_scalar(
            "INSERT INTO detector_models (id, detector, detector_version, model_generation, model_trained_at, \
             model_training_rows, last_day) \
             SELECT iotstream_detector_model_id($1, $2, $3, $4, $5), $1, $2, $3, $4, $5, $6 \
             ON CONFLICT (id) DO UPDATE SET last_day = EXCLUDED.last_day RETURNING id",
        )
        .bind(v["d"].as_str())
        .bind(v["ver"].as_str())
        .bind(v["g"].as_i64().map(|g| g as i32))
        .bind(trained_at)
        .bind(v["n"].as_i64().map(|n| n as i32))
        .bind(at.date_naive())
        .fetch_one(pool)
        .await
        .expect("a model");
        let code = match v["v"].as_str() {
            Some("warming_up") => 0,
            Some("normal") => 1,
            _ => 2,
        };
        stored.push(serde_json::json!([model, code, v["s"]]));
    }
    sqlx::query(
        "INSERT INTO sensor_readings (sensor_id, sensor_type, location, value, timestamp, anomaly, unit, \
         kafka_partition, kafka_offset, verdicts) VALUES ('s', $1, 'lab', 1, $2, $3, 'ppm', $4, $5, $6::json)",
    )
    .bind(sensor_type)
    .bind(at)
    .bind(label)
    .bind(partition)
    .bind(offset)
    .bind(serde_json::Value::from(stored).to_string())
    .execute(pool)
    .await
    .expect("insert a judged reading");
}

/// Inserts one verdict `seconds` after 2026-01-01T00:00:00Z (a reading of its own, of Kafka
/// partition 0), with its model's lineage when given (`(generation, trained seconds after the same
/// time, training rows)`).
async fn insert_verdict(
    pool: &PgPool,
    detector_and_type: (&str, &str),
    seconds: i64,
    anomaly: bool,
    model: Option<(i32, i64, i32)>,
) {
    insert_lane_verdict(pool, detector_and_type, (0, seconds), anomaly, model).await;
}

/// As [`insert_verdict`], of Kafka partition `partition`.
async fn insert_lane_verdict(
    pool: &PgPool,
    (detector, sensor_type): (&str, &str),
    (partition, seconds): (i32, i64),
    anomaly: bool,
    model: Option<(i32, i64, i32)>,
) {
    let base = Utc.timestamp_millis_opt(1_767_225_600_000).single().expect("time");
    let mut verdict =
        serde_json::json!({"d": detector, "ver": "0.3.0", "v": if anomaly { "anomaly" } else { "normal" }, "s": 0.0});
    if let Some((generation, trained, rows)) = model {
        let trained_at = base + chrono::Duration::seconds(trained);
        verdict["g"] = generation.into();
        verdict["t"] = trained_at.to_rfc3339().into();
        verdict["n"] = rows.into();
    }
    insert_judged_reading(
        pool,
        sensor_type,
        base + chrono::Duration::seconds(seconds),
        false,
        (partition, seconds),
        serde_json::json!([verdict]),
    )
    .await;
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn models_list_each_generation_with_its_training_and_verdicts(pool: PgPool) {
    let forest_co2 = ("isolation-forest", "co2");
    // Generation 1 (trained a minute before, on 256 rows) judged 0-2 s, one anomaly; generation 2
    // (trained at 2 s, on 512 rows) judged 3 and 4 s, both anomalies.
    for (second, anomaly) in [(0, false), (1, true), (2, false)] {
        insert_verdict(&pool, forest_co2, second, anomaly, Some((1, -60, 256))).await;
    }
    for second in [3, 4] {
        insert_verdict(&pool, forest_co2, second, true, Some((2, 2, 512))).await;
    }
    insert_verdict(&pool, ("isolation-forest", "temperature"), 5, false, Some((1, 1, 300))).await;
    // Partition 1's lane trains its own co2 models and counts its own generations: its generation 1
    // (trained 30 s before, on 128 rows) judged 6 and 7 s; the same number is another model.
    for second in [6, 7] {
        insert_lane_verdict(&pool, forest_co2, (1, second), second == 7, Some((1, -30, 128))).await;
    }
    // A detector without models is not listed; a verdict at the range's end (exclusive) is not counted.
    insert_verdict(&pool, ("zscore", "co2"), 1, true, None).await;
    insert_verdict(&pool, forest_co2, 3600, false, Some((3, 3000, 1024))).await;
    let addr = crate::api_limits::serve(Store::new(pool), 4).await;
    let url = format!("http://{addr}/api/models?from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z");
    let body: serde_json::Value = reqwest::get(url).await.expect("api").json().await.expect("json");
    let rows: Vec<_> = body
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| {
            serde_json::json!([
                m["sensor_type"],
                m["source_id"],
                m["partition"],
                m["generation"],
                m["trained_at"],
                m["training_rows"],
                m["verdicts"],
                m["anomalies"],
                m["first_verdict"],
                m["last_verdict"],
                m["detector"],
                m["detector_version"]
            ])
        })
        .collect();
    // The newest trained first.
    let forest = |row: serde_json::Value| {
        let mut row = row.as_array().cloned().unwrap_or_default();
        row.extend(["isolation-forest".into(), "0.3.0".into()]);
        serde_json::Value::from(row)
    };
    assert_eq!(
        rows,
        [
            forest(serde_json::json!([
                "co2",
                0,
                0,
                2,
                "2026-01-01T00:00:02Z",
                512,
                2,
                2,
                "2026-01-01T00:00:03Z",
                "2026-01-01T00:00:04Z"
            ])),
            forest(serde_json::json!([
                "temperature",
                0,
                0,
                1,
                "2026-01-01T00:00:01Z",
                300,
                1,
                0,
                "2026-01-01T00:00:05Z",
                "2026-01-01T00:00:05Z"
            ])),
            forest(serde_json::json!([
                "co2",
                0,
                1,
                1,
                "2025-12-31T23:59:30Z",
                128,
                2,
                1,
                "2026-01-01T00:00:06Z",
                "2026-01-01T00:00:07Z"
            ])),
            forest(serde_json::json!([
                "co2",
                0,
                0,
                1,
                "2025-12-31T23:59:00Z",
                256,
                3,
                1,
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:02Z"
            ])),
        ],
        "{body}"
    );
}
