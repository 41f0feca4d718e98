//! The operational view of hosts sharing a topic (`GET /api/partitions`, store/cluster.rs): rows
//! written the way the pipeline writes them (partition owners and positions through SQL, lag
//! reports and rebalances through the store), read back as the exact JSON an operator's dashboard
//! gets; a host's lag report touches only the partitions it owns; rebalances are pruned to a week
//! and a thousand a source.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use iotstream::http::live::Live;
use iotstream::http::{ApiState, router};
use iotstream::store::{Rebalance, Store, Totals};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Serves the API of `store` and `live` on a free port.
async fn serve(store: Store, live: Arc<Live>) -> std::net::SocketAddr {
    let state = ApiState::new(store, live, CancellationToken::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router(state, "/nonexistent".into())).await });
    addr
}

fn at(hour: u32, minute: u32, second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, hour, minute, second).single().expect("valid time")
}

/// Gives `partition` of the source `lineage` to `owner` in `generation`, since `since`.
async fn own(pool: &PgPool, lineage: i16, partition: i32, owner: &str, generation: i64, since: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO partition_owners (source_id, kafka_partition, owner, generation, since) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (source_id, kafka_partition) DO UPDATE SET owner = $3, generation = $4, since = $5",
    )
    .bind(lineage)
    .bind(partition)
    .bind(owner)
    .bind(generation)
    .bind(since)
    .execute(pool)
    .await
    .expect("partition owner");
}

/// Stores `next_offset` as the position of `partition` of the source id `source`.
async fn position(pool: &PgPool, source: i16, partition: i32, next_offset: i64) {
    sqlx::query("INSERT INTO kafka_offsets (source_id, kafka_partition, next_offset) VALUES ($1, $2, $3)")
        .bind(source)
        .bind(partition)
        .bind(next_offset)
        .execute(pool)
        .await
        .expect("position");
}

/// The lag and report time of each partition of `lineage`, from the table.
async fn lags(pool: &PgPool, lineage: i16) -> BTreeMap<i32, (Option<i64>, Option<DateTime<Utc>>)> {
    let rows: Vec<(i32, Option<i64>, Option<DateTime<Utc>>)> =
        sqlx::query_as("SELECT kafka_partition, lag, lag_at FROM partition_owners WHERE source_id = $1")
            .bind(lineage)
            .fetch_all(pool)
            .await
            .expect("lags");
    rows.into_iter().map(|(p, lag, lag_at)| (p, (lag, lag_at))).collect()
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn partitions_show_every_hosts_partitions_lag_and_rebalances_exactly(pool: PgPool) {
    let store = Store::new(pool.clone());
    let lineage = store.source_ids("cluster-a", "iot_sensors").await.expect("source").lineage;
    let other = store.source_ids("cluster-b", "iot_sensors").await.expect("another source").lineage;
    let current = store.new_epoch("cluster-a", "iot_sensors", "the log started again").await.expect("epoch").current;
    assert_ne!(current, lineage);
    // Positions: the current epoch's are shown, the first epoch's and the other source's are not;
    // partition 3 has a position but no owner yet.
    position(&pool, lineage, 0, 999).await;
    position(&pool, current, 0, 120).await;
    position(&pool, current, 1, 80).await;
    position(&pool, current, 3, 7).await;
    position(&pool, other, 0, 5).await;
    own(&pool, lineage, 0, "node-a", 1, at(10, 0, 0)).await;
    own(&pool, lineage, 1, "node-b", 3, at(11, 30, 1)).await;
    own(&pool, lineage, 2, "node-a", 2, at(11, 0, 0)).await;
    own(&pool, lineage, 4, "node-a", 1, at(11, 0, 0)).await;
    own(&pool, other, 0, "node-a", 1, at(9, 0, 0)).await;

    // node-a reports all three partitions librdkafka knows of: only its own two are written.
    let reported = store.report_lag(lineage, "node-a", &BTreeMap::from([(0, 5), (1, 99), (2, 0), (4, 8)])).await;
    assert_eq!(reported.expect("report"), 3);
    // node-c took partition 4 over at noon; node-a's last report on it was at 11:59: not node-c's.
    sqlx::query("UPDATE partition_owners SET lag_at = $2 WHERE source_id = $1 AND kafka_partition = 4")
        .bind(lineage)
        .bind(at(11, 59, 0))
        .execute(&pool)
        .await
        .expect("a report before the take-over");
    own(&pool, lineage, 4, "node-c", 2, at(12, 0, 0)).await;
    assert_eq!(store.report_lag(lineage, "node-b", &BTreeMap::from([(1, 11)])).await.expect("report"), 1);
    assert_eq!(store.report_lag(other, "node-a", &BTreeMap::from([(0, 1)])).await.expect("report"), 1);
    // node-b stopped reporting 90 s ago.
    sqlx::query(
        "UPDATE partition_owners SET lag_at = now() - interval '90 seconds' WHERE source_id = $1 AND owner = 'node-b'",
    )
    .bind(lineage)
    .execute(&pool)
    .await
    .expect("an old report");

    let rebalance = |at, assigned: Vec<i32>, revoked: Vec<i32>, pause| Rebalance { at, assigned, revoked, pause };
    let recorded = [
        ("node-a", rebalance(at(10, 0, 0), vec![2, 0, 1], vec![], None)),
        ("node-a", rebalance(at(11, 30, 0), vec![], vec![1], Some(Duration::from_millis(40)))),
        ("node-b", rebalance(at(11, 30, 1), vec![1], vec![], Some(Duration::from_millis(1250)))),
    ];
    for (host, event) in &recorded {
        store.record_rebalance(lineage, host, event).await.expect("rebalance recorded");
    }
    store.record_rebalance(other, "node-a", &recorded[2].1).await.expect("another source's rebalance");

    let live = Arc::new(Live::new(Totals::default(), Vec::new(), Vec::new(), Vec::new()));
    let addr = serve(store.clone(), live.clone()).await;
    let get = |query: &'static str| async move {
        let response = reqwest::get(format!("http://{addr}/api/partitions{query}")).await.expect("api");
        (response.status().as_u16(), response.json::<Value>().await.expect("json"))
    };

    // Before the host has joined its group, it says so.
    let (status, body) = get("").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "source_not_connected", "{body}");

    live.set_source(lineage, "node-a");
    let (status, mut body) = get("?rebalances=2").await;
    assert_eq!(status, 200, "{body}");
    // The reports' ages are the database's clock's: node-a's just now, node-b's 90 s ago.
    let reports = lags(&pool, lineage).await;
    for (partition, ages) in [(0, 0..=5), (1, 90..=95), (2, 0..=5)] {
        let age = body["partitions"][partition]["lag_age_seconds"].as_i64().unwrap_or(-1);
        assert!(ages.contains(&age), "partition {partition} reported {age} s ago: {body}");
        body["partitions"][partition]["lag_age_seconds"] = json!("checked");
        let lag_at = reports.get(&(partition as i32)).and_then(|(_, at)| *at);
        assert_eq!(body["partitions"][partition]["lag_at"], json!(lag_at), "{body}");
        body["partitions"][partition]["lag_at"] = json!("checked");
    }
    let expected = json!({
        "host": "node-a",
        "partitions": [
            { "partition": 0, "owner": "node-a", "since": "2026-12-01T10:00:00Z", "generation": 1, "next_offset": 120,
              "lag": 5, "lag_at": "checked", "lag_age_seconds": "checked" },
            { "partition": 1, "owner": "node-b", "since": "2026-12-01T11:30:01Z", "generation": 3, "next_offset": 80,
              "lag": 11, "lag_at": "checked", "lag_age_seconds": "checked" },
            { "partition": 2, "owner": "node-a", "since": "2026-12-01T11:00:00Z", "generation": 2, "next_offset": null,
              "lag": 0, "lag_at": "checked", "lag_age_seconds": "checked" },
            { "partition": 3, "owner": null, "since": null, "generation": null, "next_offset": 7,
              "lag": null, "lag_at": null, "lag_age_seconds": null },
            { "partition": 4, "owner": "node-c", "since": "2026-12-01T12:00:00Z", "generation": 2, "next_offset": null,
              "lag": null, "lag_at": null, "lag_age_seconds": null },
        ],
        "rebalances": [
            { "at": "2026-12-01T11:30:01Z", "host": "node-b", "assigned": [1], "revoked": [], "pause_ms": 1250.0 },
            { "at": "2026-12-01T11:30:00Z", "host": "node-a", "assigned": [], "revoked": [1], "pause_ms": 40.0 },
        ],
    });
    assert_eq!(body, expected);

    // Without ?rebalances=, every one of the three (newest first); the oldest lists its partitions
    // ascending whatever order the pipeline gave them in.
    let (status, body) = get("").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["rebalances"][2],
        json!({ "at": "2026-12-01T10:00:00Z", "host": "node-a", "assigned": [0, 1, 2], "revoked": [], "pause_ms": null })
    );
    assert_eq!(body["rebalances"].as_array().map(Vec::len), Some(3), "{body}");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_host_reports_lag_only_on_the_partitions_it_owns(pool: PgPool) {
    let store = Store::new(pool.clone());
    let lineage = store.source_ids("cluster-a", "iot_sensors").await.expect("source").lineage;
    own(&pool, lineage, 0, "node-a", 1, at(10, 0, 0)).await;
    own(&pool, lineage, 1, "node-a", 1, at(10, 0, 0)).await;
    assert_eq!(store.report_lag(lineage, "node-a", &BTreeMap::from([(0, 5), (1, 6)])).await.expect("report"), 2);
    // node-b takes partition 0 over and has not reported yet; node-a, which still believes it owns
    // it (its revocation not handled yet), reports again: partition 0 keeps its last report.
    own(&pool, lineage, 0, "node-b", 2, at(11, 0, 0)).await;
    let before = lags(&pool, lineage).await;
    let updated = store.report_lag(lineage, "node-a", &BTreeMap::from([(0, 1234), (1, 7)])).await.expect("report");
    assert_eq!(updated, 1);
    let after = lags(&pool, lineage).await;
    assert_eq!(after.get(&0), before.get(&0));
    assert_eq!(after.get(&1).map(|(lag, _)| *lag), Some(Some(7)));
    // Nothing to report, or a host owning nothing: nothing written.
    assert_eq!(store.report_lag(lineage, "node-a", &BTreeMap::new()).await.expect("report"), 0);
    assert_eq!(store.report_lag(lineage, "node-c", &BTreeMap::from([(0, 1)])).await.expect("report"), 0);
    assert_eq!(lags(&pool, lineage).await, after);
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn rebalances_are_pruned_past_a_week_and_beyond_the_newest_thousand(pool: PgPool) {
    let store = Store::new(pool.clone());
    let lineage = store.source_ids("cluster-a", "iot_sensors").await.expect("source").lineage;
    let other = store.source_ids("cluster-b", "iot_sensors").await.expect("another source").lineage;
    let insert = |source: i16, host: String, age: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO rebalances (source_id, host, at, assigned, revoked) \
                 VALUES ($1, $2, now() - $3::interval, '{}', '{}')",
            )
            .bind(source)
            .bind(host)
            .bind(age)
            .execute(&pool)
            .await
            .expect("rebalance row");
        }
    };
    insert(lineage, "eight-days-ago".into(), "8 days").await;
    insert(other, "other-eight-days-ago".into(), "8 days").await;
    insert(other, "other-yesterday".into(), "1 day").await;
    // 999 of this source within the week, oldest first: with the week-old one and the one recorded
    // next, 1001.
    sqlx::query(
        "INSERT INTO rebalances (source_id, host, at, assigned, revoked) \
         SELECT $1, 'recent-' || i, now() - (1000 - i) * interval '1 minute', '{}', '{}' FROM generate_series(1, 999) AS i",
    )
    .bind(lineage)
    .execute(&pool)
    .await
    .expect("recent rebalances");
    let now = Rebalance { at: Utc::now(), assigned: vec![0], revoked: vec![], pause: None };
    store.record_rebalance(lineage, "node-a", &now).await.expect("rebalance recorded");

    let hosts = |source: i16| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT host FROM rebalances WHERE source_id = $1 ORDER BY id")
                .bind(source)
                .fetch_all(&pool)
                .await
                .expect("hosts")
        }
    };
    let kept = hosts(lineage).await;
    // The week-old one went by age; the 999 recent ones and the new one are the newest thousand.
    assert_eq!(kept.len(), 1000);
    assert_eq!((kept[0].as_str(), kept[998].as_str(), kept[999].as_str()), ("recent-1", "recent-999", "node-a"));
    // Another source's rows go by age too, never by this source's count.
    assert_eq!(hosts(other).await, ["other-yesterday"]);

    // One more: now the oldest of the thousand goes.
    store.record_rebalance(lineage, "node-b", &now).await.expect("rebalance recorded");
    let kept = hosts(lineage).await;
    assert_eq!(kept.len(), 1000);
    assert_eq!((kept[0].as_str(), kept[999].as_str()), ("recent-2", "node-b"));
}
