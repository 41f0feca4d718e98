//! The API cannot starve the pipeline: its queries run on connections of their own, each with a
//! statement timeout; `/api/quality` compares detectors over a bounded range; live streams are
//! limited, and a stream refused past the limit says so (503, `too_many_streams`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use iotstream::http::live::Live;
use iotstream::http::{ApiState, router};
use iotstream::reading::{Reading, SensorType};
use iotstream::store::{API_STATEMENT_TIMEOUT, BatchRows, Store, StoredReading, Totals, pipeline_connections};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Serves the API of `store` with at most `max_streams` live streams on a free port.
pub(crate) async fn serve(store: Store, max_streams: usize) -> std::net::SocketAddr {
    let live = Arc::new(Live::new(Totals::default(), Vec::new(), Vec::new(), Vec::new()));
    let state = ApiState::with_max_streams(store, live, CancellationToken::new(), max_streams);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router(state, "/nonexistent".into())).await });
    addr
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn api_queries_cannot_take_the_pipelines_connections_and_time_out(pool: PgPool) {
    let store = Store::connect((*pool.connect_options()).clone(), pipeline_connections(2, 2)).await.expect("connect");
    // Every connection the API may have, held by queries that do not end.
    let api_connections = store.api_pool().options().get_max_connections();
    let mut held = Vec::new();
    for _ in 0..api_connections {
        held.push(store.api_pool().acquire().await.expect("an API connection"));
    }
    let source = store.source_id("api-limits-cluster", "iot_sensors").await.expect("source");
    let at = Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 0).single().expect("time");
    let reading = Reading {
        sensor_id: "s1".into(),
        sensor_type: SensorType::Co2,
        location: "lab_1".into(),
        value: 420.0,
        timestamp: at,
        anomaly: false,
        unit: "ppm".into(),
    };
    let batch = BatchRows {
        source,
        topic: "iot_sensors".into(),
        positions: [(0, 1)].into(),
        readings: vec![StoredReading { reading, flagged: false, partition: 0, offset: 0 }],
        ..BatchRows::default()
    };
    let written = tokio::time::timeout(Duration::from_secs(3), store.write(&batch))
        .await
        .expect("the pipeline writes while the API's connections are all busy")
        .expect("written");
    assert_eq!(written.totals.readings, 1);
    // A query slower than the statement timeout is cancelled by PostgreSQL (57014).
    held.pop();
    let started = Instant::now();
    let err = sqlx::query("SELECT pg_sleep(30)").execute(store.api_pool()).await.expect_err("cancelled");
    let code = err.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("57014"), "{err}");
    let took = started.elapsed();
    assert!(took >= API_STATEMENT_TIMEOUT && took < API_STATEMENT_TIMEOUT + Duration::from_secs(3), "{took:?}");
    // The pipeline's own connections have no such timeout (a checkpoint of a large state may take long).
    sqlx::query("SELECT pg_sleep(0.1)").execute(store.pool()).await.expect("no timeout on the pipeline's pool");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn quality_ranges_are_bounded(pool: PgPool) {
    let addr = serve(Store::new(pool), 4).await;
    let get = |query: &'static str| async move {
        let response = reqwest::get(format!("http://{addr}/api/quality{query}")).await.expect("api");
        (response.status().as_u16(), response.json::<serde_json::Value>().await.expect("json"))
    };
    let (status, body) = get("?from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("range_too_long")), "{body}");
    let (status, body) = get("?from=2026-03-01T00:00:00Z&to=2026-01-01T00:00:00Z").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("empty_range")), "{body}");
    let (status, body) = get("?from=2026-01-01T00:00:00Z&to=2026-01-08T00:00:00Z").await;
    assert_eq!((status, body["detectors"].as_array().map(Vec::len)), (200, Some(0)), "{body}");
    let (status, body) = get("").await;
    assert_eq!((status, body["agreement"].as_array().map(Vec::len)), (200, Some(0)), "{body}");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn live_streams_beyond_the_limit_are_refused_until_one_closes(pool: PgPool) {
    let addr = serve(Store::new(pool), 2).await;
    let url = format!("http://{addr}/api/stream");
    let first = reqwest::get(&url).await.expect("first stream");
    let second = reqwest::get(&url).await.expect("second stream");
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let refused = reqwest::get(&url).await.expect("third stream");
    assert_eq!(refused.status().as_u16(), 503);
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["error"], "too_many_streams");
    drop(first);
    // The closed stream's slot comes back once the server notices the connection is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = reqwest::get(&url).await.expect("stream");
        if again.status().as_u16() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the closed stream's slot never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(second);
}
