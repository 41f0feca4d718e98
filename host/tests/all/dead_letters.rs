//! Malformed and invalid messages end in `dead_letters` with their reason, position and bytes, and
//! every valid reading around them is stored (the fault suite's mixed-input case).

use iotstream::reading::{SensorType, encode};
use sqlx::PgPool;

use crate::support::{Host, count_rows, reading, wait_for};

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn malformed_messages_are_dead_lettered_and_good_ones_stored(pool: PgPool) {
    // Readings up to ten years old are accepted: the good ones are from 2026, one bad one from 2001.
    let host = Host::start(pool.clone(), None, &["--max-age", "3650days"]).await;
    let oversized = format!(
        r#"{{"sensor_id":"x","sensor_type":"co2","location":"l","value":1,"timestamp":1,"pad":"{}"}}"#,
        "p".repeat(20_000)
    );
    let bad: Vec<(&str, &[u8], &str)> = vec![
        ("not-json", b"this is not json", "malformed reading: expected ident at line 1 column 2"),
        (
            "missing",
            br#"{"sensor_id":"x","sensor_type":"co2","location":"l","timestamp":1}"#,
            "malformed reading: missing field `value` at line 1 column 66",
        ),
        (
            "wrong-type",
            br#"{"sensor_id":"x","sensor_type":"co2","location":"l","value":"hot","timestamp":1}"#,
            "malformed reading: invalid type: string \"hot\", expected f64 at line 1 column 65",
        ),
        (
            "nan",
            br#"{"sensor_id":"x","sensor_type":"co2","location":"l","value":NaN,"timestamp":1}"#,
            "malformed reading: expected value at line 1 column 61",
        ),
        (
            "unknown-type",
            br#"{"sensor_id":"x","sensor_type":"radon","location":"l","value":1,"timestamp":1}"#,
            "unknown sensor type \"radon\"",
        ),
        ("empty", b"", "empty message"),
        ("binary", b"\xff\xfe\x00\x01", "malformed reading: expected value at line 1 column 1"),
        (
            "too-old",
            br#"{"sensor_id":"x","sensor_type":"co2","location":"l","value":400,"timestamp":"2001-01-01T00:00:00Z"}"#,
            "too_old",
        ),
        (
            "future",
            br#"{"sensor_id":"x","sensor_type":"co2","location":"l","value":400,"timestamp":"2099-01-01T00:00:00Z"}"#,
            "from_the_future",
        ),
        ("oversized", oversized.as_bytes(), "message of 20085 bytes is larger than the 16384-byte limit"),
    ];
    let mut payloads = Vec::new();
    let mut good = Vec::new();
    for (i, (key, payload, _)) in bad.iter().enumerate() {
        for j in 0..3 {
            let r = reading(
                &format!("co2-{j}"),
                SensorType::Co2,
                "office_1",
                1_767_225_600_000 + (i * 3 + j) as i64 * 1000,
                400.0 + (i * 3 + j) as f64,
            );
            payloads.push((r.sensor_id.to_string(), encode(&r)));
            good.push(r);
        }
        payloads.push((key.to_string(), payload.to_vec()));
    }
    host.produce(&payloads).await;
    wait_for("sensor_readings", good.len() as i64, || count_rows(&pool, "sensor_readings")).await;
    wait_for("dead_letters", bad.len() as i64, || count_rows(&pool, "dead_letters")).await;

    let mut stored: Vec<(String, f64)> =
        sqlx::query_as("SELECT sensor_id, value FROM sensor_readings").fetch_all(&pool).await.expect("readings");
    stored.sort_by(|a, b| a.1.total_cmp(&b.1));
    let expected: Vec<(String, f64)> = good.iter().map(|r| (r.sensor_id.to_string(), r.value)).collect();
    assert_eq!(stored, expected);

    /// Key, payload, error, reason, topic.
    type Letter = (Vec<u8>, Option<Vec<u8>>, String, String, String);
    let letters: Vec<Letter> = sqlx::query_as("SELECT message_key, payload, error, reason, topic FROM dead_letters")
        .fetch_all(&pool)
        .await
        .expect("letters");
    for (key, payload, error) in &bad {
        let letter =
            letters.iter().find(|l| l.0 == key.as_bytes()).unwrap_or_else(|| panic!("no dead letter for {key}"));
        // The errors that depend on the clock are checked by their kind (their text is unit-tested).
        if error.contains(' ') {
            assert_eq!(letter.2, *error, "error of {key}");
        } else {
            assert_eq!(letter.3, *error, "reason of {key}: {}", letter.2);
        }
        // The payload is kept, up to 16 KiB.
        assert_eq!(
            letter.1.as_deref().unwrap_or_default(),
            &payload[..payload.len().min(16 * 1024)],
            "payload of {key}"
        );
        assert_eq!(letter.4, "iot_sensors");
    }
    let counts: serde_json::Value = reqwest::get(format!("http://{}/api/dead-letters/counts", host.addr))
        .await
        .expect("api")
        .json()
        .await
        .expect("json");
    let malformed = counts.as_array().and_then(|c| c.iter().find(|c| c["reason"] == "malformed")).cloned();
    assert_eq!(malformed.map(|m| m["count"].clone()), Some(serde_json::json!(5)), "{counts}");
    let stored_count = count_rows(&pool, "sensor_readings").await;
    crate::support::report(&format!(
        "FAULT mixed input: produced {} good + {} bad, stored {stored_count}, dead-lettered {}, lost {}",
        good.len(),
        bad.len(),
        letters.len(),
        (good.len() + bad.len()) as i64 - stored_count - letters.len() as i64
    ));
    let api: serde_json::Value =
        reqwest::get(format!("http://{}/api/dead-letters", host.addr)).await.expect("api").json().await.expect("json");
    assert_eq!(api.as_array().map(Vec::len), Some(bad.len()));
    let stats: serde_json::Value =
        reqwest::get(format!("http://{}/api/stats", host.addr)).await.expect("api").json().await.expect("json");
    assert_eq!(stats["dead_letters_total"], bad.len());
    host.stop().await.expect("clean shutdown");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_huge_key_is_kept_in_part_and_the_cut_is_said(pool: PgPool) {
    let host = Host::start(pool.clone(), None, &[]).await;
    let key = "k".repeat(100_000);
    let good = encode(&reading("s1", SensorType::Co2, "lab_1", 1_764_064_800_000, 420.0));
    host.produce(&[(key.clone(), b"not a reading".to_vec()), (key, good)]).await;
    wait_for("dead_letters", 1, || count_rows(&pool, "dead_letters")).await;
    wait_for("sensor_readings", 1, || count_rows(&pool, "sensor_readings")).await;
    let (key_len, error): (i32, String) =
        sqlx::query_as("SELECT length(message_key), error FROM dead_letters").fetch_one(&pool).await.expect("letter");
    assert_eq!(key_len, 1024);
    assert!(error.ends_with("(key cut from 100000 to 1024 bytes)"), "{error}");
    host.stop().await.expect("clean stop");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_reading_outside_its_physical_range_is_a_sensor_fault_alarm_not_a_dead_letter(pool: PgPool) {
    let host = Host::start(pool.clone(), None, &[]).await;
    let ok = |ms: i64, value: f64| encode(&reading("h1", SensorType::Humidity, "lab_1", ms, value));
    // Humidity above 100 %: a broken sensor, between two ordinary readings.
    let fault =
        br#"{"sensor_id":"h1","sensor_type":"humidity","location":"lab_1","value":150,"timestamp":1764064801000}"#;
    host.produce(&[
        ("h1".into(), ok(1_764_064_800_000, 40.0)),
        ("h1".into(), fault.to_vec()),
        ("h1".into(), ok(1_764_064_802_000, 41.0)),
    ])
    .await;
    wait_for("sensor_readings", 3, || count_rows(&pool, "sensor_readings")).await;
    assert_eq!(count_rows(&pool, "dead_letters").await, 0, "a sensor fault is not a dead letter");
    let stored: Vec<(i64, f64, bool)> =
        sqlx::query_as("SELECT kafka_offset, value, flagged FROM sensor_readings ORDER BY kafka_offset")
            .fetch_all(&pool)
            .await
            .expect("readings");
    assert_eq!(stored, vec![(0, 40.0, false), (1, 150.0, true), (2, 41.0, false)]);
    // Its alarm is the rule's, and no plugin judged it.
    let verdicts: Vec<(String, String, f64)> = sqlx::query_as(
        "SELECT detector, verdict, anomaly_score FROM ml_anomaly_predictions WHERE kafka_offset = 1 ORDER BY detector",
    )
    .fetch_all(&pool)
    .await
    .expect("verdicts");
    assert_eq!(verdicts, vec![("sensor-fault".to_owned(), "anomaly".to_owned(), 1.0)]);
    let live: serde_json::Value =
        reqwest::get(format!("http://{}/api/stats", host.addr)).await.expect("api").json().await.expect("json");
    assert_eq!(live["anomalies_total"], 1);
    host.stop().await.expect("clean shutdown");
}
