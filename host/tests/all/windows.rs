//! Windows across partitions (migration 0010, docs/guarantees.md "Windows"): each lane's
//! aggregator emits a partial of a window, over its partition's readings; the store keeps every
//! partition's partial and `sensor_aggregates_latest`, the API and the live view show their exact
//! merge. The partials here are computed as the tumbling-window plugin reports them (Welford's
//! running mean and squared deviations, population stddev), written through `Store::write`, and
//! the merge is checked against one pass over all the window's readings.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use iotstream::reading::SensorType;
use iotstream::store::{BatchRows, MIGRATOR, Store, StoredWindow, Written};
use iotstream_api::AggregateRow;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;

const STAGE: &str = "tumbling-window";

/// A reading of a window: its value and whether a detector flagged it.
type Value = (f64, bool);

/// The start of minute `minute` of the test's day.
fn minute(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).single().expect("valid time") + TimeDelta::minutes(minute)
}

/// One partition's partial of the window at `start`, as the tumbling-window plugin reports it.
fn partial(start: DateTime<Utc>, location: &str, values: &[Value], revision: i32, late: i32) -> AggregateRow {
    let (mut count, mut mean, mut m2) = (0_i32, 0.0_f64, 0.0_f64);
    for &(value, _) in values {
        count += 1;
        let delta = value - mean;
        mean += delta / f64::from(count);
        m2 += delta * (value - mean);
    }
    AggregateRow {
        stage: STAGE.into(),
        window_start: start,
        window_end: start + TimeDelta::minutes(1),
        location: location.into(),
        sensor_type: SensorType::Co2,
        avg_value: mean,
        min_value: values.iter().map(|v| v.0).fold(f64::INFINITY, f64::min),
        max_value: values.iter().map(|v| v.0).fold(f64::NEG_INFINITY, f64::max),
        stddev_value: (m2.max(0.0) / f64::from(count)).sqrt(),
        count_readings: count,
        anomaly_count: values.iter().filter(|v| v.1).count() as i32,
        revision,
        late_count: late,
    }
}

/// The window over all `values` in one pass (two, for the deviations), as one aggregator that
/// saw every partition would have it: the reference the merge must equal.
fn single_pass(start: DateTime<Utc>, location: &str, values: &[Value], revision: i32, late: i32) -> AggregateRow {
    let n = values.len() as f64;
    let mean = values.iter().map(|v| v.0).sum::<f64>() / n;
    let variance = values.iter().map(|v| (v.0 - mean) * (v.0 - mean)).sum::<f64>() / n;
    AggregateRow { avg_value: mean, stddev_value: variance.sqrt(), ..partial(start, location, values, revision, late) }
}

/// Writes `window` as `partition`'s partial, alone in its batch, as a lane's tick does.
async fn write(store: &Store, source: i16, partition: i32, window: &AggregateRow) -> Written {
    let batch = BatchRows {
        source,
        aggregates: vec![StoredWindow { partition, window: window.clone() }],
        ..BatchRows::default()
    };
    store.write(&batch).await.expect("the partial is stored")
}

/// The columns of a window, in `AggregateRow`'s order.
type WindowColumns = (String, DateTime<Utc>, DateTime<Utc>, String, String, f64, f64, f64, f64, i32, i32, i32, i32);

/// Every window of `sensor_aggregates_latest`, by location and start.
async fn view(pool: &PgPool) -> Vec<AggregateRow> {
    let rows: Vec<WindowColumns> = sqlx::query_as(
        "SELECT stage, window_start, window_end, location, sensor_type, avg_value, min_value, max_value, \
         stddev_value, count_readings, anomaly_count, revision, late_count \
         FROM sensor_aggregates_latest ORDER BY location, window_start",
    )
    .fetch_all(pool)
    .await
    .expect("the windows");
    rows.into_iter()
        .map(|r| AggregateRow {
            stage: r.0,
            window_start: r.1,
            window_end: r.2,
            location: r.3,
            sensor_type: SensorType::from_name(&r.4).expect("a sensor type"),
            avg_value: r.5,
            min_value: r.6,
            max_value: r.7,
            stddev_value: r.8,
            count_readings: r.9,
            anomaly_count: r.10,
            revision: r.11,
            late_count: r.12,
        })
        .collect()
}

/// How many partials each window of [`view`] merges, in its order.
async fn partials(pool: &PgPool) -> Vec<i32> {
    sqlx::query_scalar("SELECT partials FROM sensor_aggregates_latest ORDER BY location, window_start")
        .fetch_all(pool)
        .await
        .expect("partials per window")
}

/// Whether `merged` equals `expected`: counts, extremes and the rest exactly, the mean and the
/// stddev to 1e-9 relative.
fn assert_same_window(merged: &AggregateRow, expected: &AggregateRow, case: &str) {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs();
    assert!(close(merged.avg_value, expected.avg_value), "{case}: avg {} != {}", merged.avg_value, expected.avg_value);
    assert!(
        close(merged.stddev_value, expected.stddev_value),
        "{case}: stddev {} != {}",
        merged.stddev_value,
        expected.stddev_value
    );
    let exact = |a: &AggregateRow| AggregateRow { avg_value: 0.0, stddev_value: 0.0, ..a.clone() };
    assert_eq!(exact(merged), exact(expected), "{case}");
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn partials_of_any_split_merge_to_the_single_pass_window(pool: PgPool) {
    const CASES: i64 = 150;
    let store = Store::new(pool.clone());
    let source = store.source_id("windows-test-cluster", "iot_sensors").await.expect("source");
    let mut rng = StdRng::seed_from_u64(0x1075_7ea3);
    let mut expected = Vec::new();
    for case in 0..CASES {
        let start = minute(case);
        // Sensor-like values: a base with a spread at most 2000 times smaller (CO2 ppm, hPa, °C).
        let base = [0.0, 22.0, 400.0, 1013.0][rng.random_range(0..4)];
        let spread = [0.5, 5.0, 50.0][rng.random_range(0..3)];
        let partitions = rng.random_range(1..=6_usize);
        let readings = rng.random_range(1..=40_usize);
        let values: Vec<Value> =
            (0..readings).map(|_| (base + spread * rng.random_range(-1.0..1.0), rng.random_bool(0.1))).collect();
        let mut split: Vec<Vec<Value>> = vec![Vec::new(); partitions];
        for &value in &values {
            split[rng.random_range(0..partitions)].push(value);
        }
        // A partition with no reading of the window emits no partial of it; each lane writes its
        // own, in any order.
        let mut partials: Vec<(i32, Vec<Value>)> =
            split.into_iter().enumerate().filter(|(_, v)| !v.is_empty()).map(|(p, v)| (p as i32, v)).collect();
        partials.sort_by_key(|_| rng.random::<u32>());
        let late: Vec<i32> = partials.iter().map(|_| rng.random_range(0..3)).collect();
        let stored: Vec<StoredWindow> = partials
            .iter()
            .zip(&late)
            .map(|((partition, values), late)| StoredWindow {
                partition: *partition,
                window: partial(start, "hall", values, 0, *late),
            })
            .collect();
        let mut last = Written::default();
        if case % 2 == 0 {
            // Lanes writing apart, one partial a batch.
            for window in &stored {
                last = write(&store, source, window.partition, &window.window).await;
            }
        } else {
            // Lanes of one host whose partials share a batch.
            let batch = BatchRows { source, aggregates: stored, ..BatchRows::default() };
            last = store.write(&batch).await.expect("the partials are stored");
        }
        let reference = single_pass(start, "hall", &values, 0, late.iter().sum());
        // The live view gets the window as merged after the last partial, not the partial.
        assert_eq!(last.windows.len(), 1, "case {case}");
        assert_same_window(&last.windows[0], &reference, &format!("case {case}, live"));
        expected.push((reference, partials.len() as i32));
    }

    let windows = view(&pool).await;
    assert_eq!(windows.len(), expected.len());
    for (case, (window, (reference, _))) in windows.iter().zip(&expected).enumerate() {
        assert_same_window(window, reference, &format!("case {case}"));
    }
    assert_eq!(partials(&pool).await, expected.iter().map(|e| e.1).collect::<Vec<_>>());
    // The API's newest windows: each window once, merged, newest first.
    let recent = store.recent_aggregates(10).await.expect("recent windows");
    let starts: Vec<DateTime<Utc>> = recent.iter().map(|a| a.window_start).collect();
    assert_eq!(starts, (CASES - 10..CASES).rev().map(minute).collect::<Vec<_>>());
    for window in &recent {
        let case = (window.window_start - minute(0)).num_minutes() as usize;
        assert_same_window(window, &expected[case].0, &format!("case {case}, API"));
    }
}

#[sqlx::test(migrator = "iotstream::store::MIGRATOR")]
async fn a_revised_partial_replaces_only_itself_and_a_repeated_one_changes_nothing(pool: PgPool) {
    let store = Store::new(pool.clone());
    let source = store.source_id("windows-test-cluster", "iot_sensors").await.expect("source");
    let start = minute(0);
    let on_time_0: Vec<Value> = vec![(400.0, false), (410.0, true), (405.5, false)];
    let late_0: Vec<Value> = vec![(390.25, false), (431.0, true)];
    let on_time_1: Vec<Value> = vec![(420.0, false), (418.5, false), (401.0, false), (399.0, true)];
    let on_time_2: Vec<Value> = vec![(395.0, false)];
    write(&store, source, 0, &partial(start, "lab", &on_time_0, 0, 0)).await;
    write(&store, source, 1, &partial(start, "lab", &on_time_1, 0, 0)).await;
    let first = write(&store, source, 2, &partial(start, "lab", &on_time_2, 0, 0)).await;
    let all_on_time: Vec<Value> = [&on_time_0[..], &on_time_1, &on_time_2].concat();
    assert_same_window(&first.windows[0], &single_pass(start, "lab", &all_on_time, 0, 0), "on time");

    // Late readings revise partition 0's partial: its revision 1 holds its readings so far.
    let revised_0: Vec<Value> = [&on_time_0[..], &late_0].concat();
    let revised = write(&store, source, 0, &partial(start, "lab", &revised_0, 1, 2)).await;
    assert_eq!(revised.totals.aggregates, 1, "a revision is an emission of its own");
    let everything: Vec<Value> = [&revised_0[..], &on_time_1, &on_time_2].concat();
    let expected = single_pass(start, "lab", &everything, 1, 2);
    assert_same_window(&revised.windows[0], &expected, "revised, live");
    let windows = view(&pool).await;
    assert_eq!(windows.len(), 1);
    assert_same_window(&windows[0], &expected, "revised");
    assert_eq!(partials(&pool).await, [3], "partition 0's revision replaced its revision 0; 1 and 2 stay");

    // A replay emits partition 1's partial again, at its revision: nothing is added, the window
    // is the same.
    let repeated = write(&store, source, 1, &partial(start, "lab", &on_time_1, 0, 0)).await;
    assert_eq!(repeated.totals.aggregates, 0);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM sensor_aggregates").fetch_one(&pool).await.expect("rows");
    assert_eq!(rows, 4, "three partials, one revised");
    assert_same_window(&repeated.windows[0], &expected, "repeated, live");
    assert_same_window(&view(&pool).await[0], &expected, "repeated");
    assert_eq!(store.totals().await.expect("totals").aggregates, 4);
}

#[sqlx::test(migrations = false)]
async fn windows_stored_before_partitions_stay_readable_after_the_migration(pool: PgPool) {
    // The schema as it was before windows had partitions.
    MIGRATOR.run_to(9, &pool).await.expect("migrations up to 0009");
    sqlx::query("INSERT INTO kafka_sources (cluster_id, topic) VALUES ('old-cluster', 'iot_sensors')")
        .execute(&pool)
        .await
        .expect("a source");
    // Window 0 with a revision (the view showed its newest emission), window 1 once, and one
    // written before sources (source 0).
    sqlx::query(
        "INSERT INTO sensor_aggregates (stage, window_start, window_end, location, sensor_type, avg_value, min_value, \
         max_value, stddev_value, count_readings, anomaly_count, revision, late_count, source_id) VALUES \
         ($1, $2, $3, 'lab', 'co2', 401.0, 400.0, 402.0, 0.8164965809277263, 3, 0, 0, 0, 1), \
         ($1, $2, $3, 'lab', 'co2', 402.5, 400.0, 406.0, 2.29128784747792, 4, 1, 1, 1, 1), \
         ($1, $3, $4, 'lab', 'co2', 0.1, 0.1, 0.1, 0.0, 1, 0, 0, 0, 1), \
         ($1, $2, $3, 'hall', 'temperature', 21.5, 21.0, 22.0, 0.5, 2, 0, 0, 0, 0)",
    )
    .bind(STAGE)
    .bind(minute(0))
    .bind(minute(1))
    .bind(minute(2))
    .execute(&pool)
    .await
    .expect("old windows");
    let before = view(&pool).await;
    assert_eq!(before.len(), 3);

    MIGRATOR.run(&pool).await.expect("the remaining migrations");

    let partitions: Vec<i32> = sqlx::query_scalar("SELECT DISTINCT kafka_partition FROM sensor_aggregates")
        .fetch_all(&pool)
        .await
        .expect("rows");
    assert_eq!(partitions, [-1]);
    assert_eq!(view(&pool).await, before, "the same windows, bit for bit");
    assert_eq!(partials(&pool).await, [1, 1, 1]);
    // A lane's partial of a new window is stored beside them.
    let store = Store::new(pool.clone());
    let values = [(20.0, false), (22.0, false)];
    let written = write(&store, 1, 3, &partial(minute(5), "lab", &values, 0, 0)).await;
    assert_eq!(written.windows, vec![partial(minute(5), "lab", &values, 0, 0)]);
    assert_eq!(view(&pool).await.len(), 4);
}
