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
        for (detector, verdict) in [("zscore", zscore[i]), ("isolation-forest", forest[i])] {
            sqlx::query(
                "INSERT INTO ml_anomaly_predictions (detector, sensor_id, sensor_type, value, timestamp, verdict, is_anomaly, \
                 anomaly_score, rule_based_anomaly, kafka_partition, kafka_offset) VALUES ($1, 'c', 'co2', 1, $2, $3, $4, 0, $5, 0, $6)",
            )
            .bind(detector)
            .bind(base + chrono::Duration::seconds(i as i64))
            .bind(verdict)
            .bind(verdict == "anomaly")
            .bind(labels[i])
            .bind(i as i64)
            .execute(&pool)
            .await
            .expect("insert");
        }
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
}
