//! `iotstream bench`: the whole pipeline, measured. A broker (the embedded one, or `--brokers`), the
//! simulator producing `--readings` readings (as fast as the broker takes them, or at `--rate`; or
//! nothing with `--prefilled`, when the topic holds them already), `iotstream run` with the
//! configured plugins into a scratch database, and a report: readings/s from the first stored
//! reading to the last, end-to-end latency percentiles in the steady state (event time to the storing
//! transaction, for readings produced from 2 s after the first commit), CPU seconds over the same
//! span and peak memory of the process. When it produces, a dashboard client of its own reads the
//! live stream (`GET /api/stream`, [`super::bench_stream`]) and reports produce-to-dashboard latency
//! percentiles over the same steady state. The scratch database (`--database`, `iotstream_bench` by
//! default) is recreated by every run. `cargo xtask bench` runs it beside the seed's Python design.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::RunConfig;
use crate::http::metrics::LoopPhase;
use crate::kafka::EmbeddedBroker;
use crate::plugins::PluginFolders;
use crate::store::{Store, pipeline_connections};

/// `iotstream bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchConfig {
    /// Readings to push through the pipeline.
    #[arg(long, default_value_t = 200_000)]
    pub readings: u64,
    /// The topic on `--brokers` holds `--readings` readings already: produce nothing and measure
    /// how fast the pipeline stores them (a fresh consumer group reads the topic from its start).
    #[arg(long, requires = "brokers")]
    pub prefilled: bool,
    /// The scratch database, dropped and created anew on the server of `--database-url`.
    #[arg(long = "database", default_value = "iotstream_bench")]
    pub database: String,
    /// Producer rate in readings/s (0: as fast as the broker takes them, to find the pipeline's
    /// ceiling; a fixed rate measures latency under a sustained load).
    #[arg(long, default_value_t = 0.0)]
    pub producer_rate: f64,
    /// Hot-swap this plugin (a fresh copy of its files, so its state is handed over) this many
    /// seconds after the first reading is stored, and report the throughput around the swap (the
    /// drop-in folder is copied to a scratch folder first, and the copy is dropped in there).
    #[arg(long, requires = "swap_after_s")]
    pub swap_plugin: Option<String>,
    /// When to swap `--swap-plugin`, in seconds after the first stored reading.
    #[arg(long)]
    pub swap_after_s: Option<f64>,
    /// Hosts in the consumer group, each an `iotstream run` of its own in this process (its own
    /// database pool, API and name `bench-N`), sharing the topic's partitions (docs/scaling.md).
    /// They share this machine's cores.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub hosts: u32,
    /// The pipeline under test (its --sensors, --plugins, --builtin-plugins, --batch-max... apply;
    /// not --rate).
    #[command(flatten)]
    pub run: RunConfig,
}

/// What one benchmark run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Readings the broker acknowledged.
    pub produced: u64,
    /// Readings stored.
    pub readings: u64,
    /// Seconds from the first stored reading to the last.
    pub seconds: f64,
    /// Readings per second over that time.
    pub readings_per_s: f64,
    /// Event time to storing transaction, milliseconds, in the steady state (readings produced
    /// from 2 s after the first commit: the consumer group's join is start-up, not latency): median.
    /// `None` when no reading was produced then (`--prefilled`).
    pub latency_ms_p50: Option<f64>,
    /// 95th percentile.
    pub latency_ms_p95: Option<f64>,
    /// 99th percentile.
    pub latency_ms_p99: Option<f64>,
    /// Event time to arrival in the dashboard's live stream (`GET /api/stream`), milliseconds, in
    /// the steady state, measured on the readings the stream carries (each batch's newest): median.
    /// `None` when nothing was produced during the run (`--prefilled`).
    pub dashboard_latency_ms_p50: Option<f64>,
    /// 95th percentile.
    pub dashboard_latency_ms_p95: Option<f64>,
    /// 99th percentile.
    pub dashboard_latency_ms_p99: Option<f64>,
    /// Readings the dashboard latency was measured on.
    pub dashboard_readings: u64,
    /// `batch` events the dashboard client received.
    pub dashboard_batches: u64,
    /// Times the dashboard client fell behind and got a fresh snapshot instead of the events it
    /// missed.
    pub dashboard_resyncs: u64,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: f64,
    /// CPU seconds (user and system, every thread) the process spent from the first stored
    /// reading to the last.
    pub cpu_s: f64,
    /// Detector verdicts stored.
    pub predictions: i64,
    /// Windows stored.
    pub aggregates: i64,
    /// With `--swap-plugin`: readings/s stored in the 2 s before the swap, in the slowest 250 ms
    /// of the second after it, and in the 2 s from 1 s after it.
    pub swap_readings_per_s: Option<[f64; 3]>,
    /// Hosts in the consumer group (`--hosts`).
    pub hosts: u32,
    /// Rebalances the hosts recorded (a host's join counts one), and the longest time one stood
    /// its pipeline still, ms.
    pub rebalances: i64,
    /// The longest pause of a pipeline for a rebalance, ms.
    pub rebalance_pause_ms_max: Option<f64>,
    /// When the timed span ended (the last reading stored), Unix milliseconds: `cargo xtask
    /// bench` charges the database's CPU up to then, not for the checks this run makes after.
    pub timed_until_unix_ms: f64,
    /// Where the first host's loop spent the timed span (`iotstream_pipeline_loop_seconds_total`);
    /// `None` when its metrics could not be read.
    pub loop_seconds: Option<LoopSeconds>,
}

/// Seconds of a pipeline's loop by phase ([`LoopPhase`]): the side that holds the run back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LoopSeconds {
    /// Waiting for messages.
    pub source: f64,
    /// Validating and running the plugins.
    pub stages: f64,
    /// Waiting for the oldest batch in flight to commit.
    pub database: f64,
}

impl LoopSeconds {
    /// The loop's seconds as the Prometheus text of `GET /metrics` gives them; `None` if a phase
    /// is missing.
    fn parse(metrics: &str) -> Option<LoopSeconds> {
        let seconds = |phase: LoopPhase| {
            let series = format!("iotstream_pipeline_loop_seconds_total{{phase=\"{}\"}} ", phase.as_str());
            metrics.lines().find_map(|line| line.strip_prefix(series.as_str())?.trim().parse::<f64>().ok())
        };
        Some(LoopSeconds {
            source: seconds(LoopPhase::Source)?,
            stages: seconds(LoopPhase::Stages)?,
            database: seconds(LoopPhase::Database)?,
        })
    }

    /// Reads the host's at `api`.
    async fn read(api: &str) -> Option<LoopSeconds> {
        let response = reqwest::get(format!("{api}/metrics")).await.ok()?.error_for_status().ok()?;
        LoopSeconds::parse(&response.text().await.ok()?)
    }

    /// Each phase's share of their sum, in percent.
    fn shares(&self) -> [f64; 3] {
        let total = self.source + self.stages + self.database;
        let share = |s: f64| if total > 0.0 { 100.0 * s / total } else { 0.0 };
        [share(self.source), share(self.stages), share(self.database)]
    }

    fn since(self, start: LoopSeconds) -> LoopSeconds {
        LoopSeconds {
            source: self.source - start.source,
            stages: self.stages - start.stages,
            database: self.database - start.database,
        }
    }
}

/// Runs the benchmark. The scratch database is kept for inspection, and dropped by the next run.
pub async fn bench(config: &BenchConfig) -> anyhow::Result<BenchReport> {
    let store = scratch_store(&config.run, &config.database).await?;
    let (broker, brokers) = match &config.run.brokers {
        Some(brokers) => (None, brokers.clone()),
        None => {
            // The mock cluster keeps ~5 MB a partition and the producer runs ahead while the consumer
            // group forms (~3 s). Messages are keyed by sensor, so partitions fill unevenly: give each
            // sensor about four partitions of its own, and the whole run (~230 bytes a message) twice
            // the room it needs.
            let by_volume = config.readings * 460 / 4_000_000;
            let by_sensors = config.run.simulate.sensors as u64 * 4;
            let partitions = i32::try_from(by_volume.max(by_sensors).max(12)).unwrap_or(i32::MAX);
            let broker = EmbeddedBroker::start(&config.run.topic, partitions)?;
            let brokers = broker.bootstrap_servers().to_owned();
            (Some(broker), brokers)
        }
    };
    let mut run_config = config.run.clone();
    run_config.brokers = Some(brokers.clone());
    if config.swap_plugin.is_some() {
        run_config.plugin_folders.dropin_plugins =
            Some(scratch_plugins(config.run.plugin_folders.dropin_plugins.as_deref())?);
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.context("binding the API's listener")?;
    let api = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let mut pipelines = Vec::new();
    let mut listener = Some(listener);
    for host in 1..=config.hosts {
        let mut run_config = run_config.clone();
        if config.hosts > 1 {
            run_config.host_name = Some(format!("bench-{host}"));
        }
        // The first host's API is the one the dashboard client reads; the others' on free ports.
        let listener = match listener.take() {
            Some(first) => first,
            None => tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.context("binding an API's listener")?,
        };
        // Each host its own pool, as separate processes would have.
        let store = if host == 1 { store.clone() } else { scratch_connect(&config.run, &config.database).await? };
        let shutdown = shutdown.clone();
        let kafka = run_config.kafka.brokers(&brokers);
        pipelines
            .push(tokio::spawn(async move { crate::app::run(&run_config, store, listener, &kafka, shutdown).await }));
    }
    // A rate is a steady state to measure latency in: it starts once the group gave the hosts their
    // partitions (3 s on Kafka; tansu takes longer), not with a backlog the join piled up.
    if config.producer_rate > 0.0 {
        wait_until_joined(&api).await?;
    }
    // The dashboard connects before the first reading is produced, as an open dashboard would be.
    let dashboard = (!config.prefilled).then(|| {
        let (shutdown, api) = (shutdown.clone(), api.clone());
        tokio::spawn(async move { super::bench_stream::watch(&api, STEADY_AFTER, shutdown).await })
    });
    let mut simulate = config.run.simulate.clone();
    simulate.count = config.readings;
    simulate.rate = config.producer_rate;
    let producer = (!config.prefilled).then(|| {
        let (brokers, topic, shutdown) =
            (config.run.kafka.brokers(&brokers), config.run.topic.clone(), shutdown.clone());
        tokio::spawn(async move { crate::simulate::run(&simulate, &brokers, &topic, shutdown).await })
    });
    info!(readings = config.readings, prefilled = config.prefilled, "benchmark running");
    let progress = watch_progress(config, &store, &run_config.plugin_folders.folders(), &api).await?;
    let mut report = measure(&store, progress).await?;
    shutdown.cancel();
    if let Some(dashboard) = dashboard {
        let seen = dashboard.await.context("the dashboard client panicked")?.context("the dashboard client")?;
        let percentile = |p| super::bench_stream::percentile_cont(&seen.latencies_ms, p);
        report.dashboard_latency_ms_p50 = percentile(0.5);
        report.dashboard_latency_ms_p95 = percentile(0.95);
        report.dashboard_latency_ms_p99 = percentile(0.99);
        report.dashboard_readings = seen.latencies_ms.len() as u64;
        report.dashboard_batches = seen.batches;
        report.dashboard_resyncs = seen.snapshots.saturating_sub(1);
    }
    let produced = match producer {
        None => config.readings,
        Some(producer) => match producer.await {
            Ok(Ok(report)) => report.delivered,
            _ => 0,
        },
    };
    for pipeline in pipelines {
        if let Ok(result) = pipeline.await {
            result?;
        }
    }
    drop(broker);
    store.pool().close().await;
    Ok(BenchReport { produced, hosts: config.hosts, ..report })
}

/// Waits until the host serving `api` owns partitions (`/api/health`), for up to two minutes.
async fn wait_until_joined(api: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let health: serde_json::Value = match reqwest::get(format!("{api}/api/health")).await {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        if health["partitions"].as_array().is_some_and(|owned| !owned.is_empty()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("the consumer group gave the host no partition within two minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Readings produced this long after the first commit are the steady state the latencies are
/// measured on: the consumer group's join is start-up, not latency.
const STEADY_AFTER: Duration = Duration::from_secs(2);

/// The scratch database `name` on the server of `run`'s database URL, created anew and migrated.
async fn scratch_store(run: &RunConfig, name: &str) -> anyhow::Result<Store> {
    let database_url = run.database_url.as_str();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        anyhow::bail!("the scratch database name {name:?} must be letters, digits and underscores");
    }
    let admin = PgConnectOptions::from_str(database_url).context("parsing the database URL")?;
    let mut conn = admin.connect().await.context("connecting to PostgreSQL")?;
    let drop_sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::query(sqlx::AssertSqlSafe(drop_sql)).execute(&mut conn).await.context("dropping the scratch database")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .context("creating the scratch database")?;
    let _ = conn.close().await;
    scratch_connect(run, name).await
}

/// Another connection pool to the scratch database `name` (created by [`scratch_store`]).
/// The pipeline's pool holds what `run`'s writers and batches in flight need.
async fn scratch_connect(run: &RunConfig, name: &str) -> anyhow::Result<Store> {
    let options = PgConnectOptions::from_str(&run.database_url).context("parsing the database URL")?;
    let pipeline = run.pipeline();
    Ok(Store::connect(options.database(name), pipeline_connections(pipeline.writers, pipeline.batches_in_flight))
        .await?)
}

/// How the stored count grew while the benchmark ran.
struct Progress {
    /// Readings stored.
    stored: u64,
    /// Seconds from the first stored reading to the last.
    seconds: f64,
    /// When `--swap-plugin` was swapped.
    swapped_at: Option<chrono::DateTime<chrono::Utc>>,
    /// CPU seconds of the process from the first stored reading to the last.
    cpu_s: f64,
    /// When the last reading was stored.
    ended_at: chrono::DateTime<chrono::Utc>,
    /// The first host's loop, from the first stored reading to the end.
    loop_seconds: Option<LoopSeconds>,
}

/// Polls the stored positions until every reading is stored, or none is for 60 s; swaps the plugin
/// on the way if asked to. Then counts the stored readings once.
///
/// The poll reads the source's positions (`kafka_offsets`, a row per partition, advanced in each
/// batch's transaction: on a topic that starts at offset 0, their sum is the messages stored), not
/// `count(*)` of `sensor_readings`: ten counts a second of a table growing to hundreds of thousands
/// of rows took most of a core from the database the pipeline writes to, and the benchmark measured
/// itself.
async fn watch_progress(
    config: &BenchConfig,
    store: &Store,
    folders: &PluginFolders,
    api: &str,
) -> anyhow::Result<Progress> {
    let mut first: Option<Instant> = None;
    let mut last_progress = Instant::now();
    let mut ended_at = chrono::Utc::now();
    let mut stored = 0;
    let mut swapped_at = None;
    let bar = super::progress::bar(config.readings, "readings").with_message("stored");
    let (mut cpu_at_first, mut cpu_at_last) = (0.0, 0.0);
    let mut loop_at_first = None;
    while stored < config.readings {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now: i64 = sqlx::query_scalar("SELECT coalesce(sum(next_offset), 0)::int8 FROM kafka_offsets")
            .fetch_one(store.pool())
            .await?;
        let now = now.max(0) as u64;
        if now > 0 && first.is_none() {
            first = Some(Instant::now());
            cpu_at_first = cpu_seconds();
            loop_at_first = LoopSeconds::read(api).await;
        }
        if let (Some(plugin), Some(after), Some(first), None) =
            (&config.swap_plugin, config.swap_after_s, first, swapped_at)
            && first.elapsed().as_secs_f64() >= after
        {
            swap(folders, plugin)?;
            swapped_at = Some(chrono::Utc::now());
            info!(plugin, "benchmark: plugin file replaced");
        }
        if now != stored {
            last_progress = Instant::now();
            ended_at = chrono::Utc::now();
            cpu_at_last = cpu_seconds();
        }
        stored = now;
        bar.set_position(stored);
        if last_progress.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    bar.finish_and_clear();
    let loop_seconds = match (LoopSeconds::read(api).await, loop_at_first) {
        (Some(end), Some(start)) => Some(end.since(start)),
        _ => None,
    };
    let seconds = first.map_or(0.0, |f| last_progress.duration_since(f).as_secs_f64());
    let stored = store.totals().await?.readings;
    Ok(Progress { stored, seconds, swapped_at, cpu_s: cpu_at_last - cpu_at_first, ended_at, loop_seconds })
}

/// The report's figures from the scratch database (all but `produced`).
async fn measure(store: &Store, progress: Progress) -> anyhow::Result<BenchReport> {
    let pool = store.pool();
    let latency: (Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d), percentile_cont(0.95) WITHIN GROUP (ORDER BY d), \
         percentile_cont(0.99) WITHIN GROUP (ORDER BY d) \
         FROM (SELECT extract(epoch FROM ingested_at - timestamp)::float8 * 1000 AS d FROM sensor_readings \
         WHERE timestamp > (SELECT min(ingested_at) FROM sensor_readings) + make_interval(secs => $1)) AS l",
    )
    .bind(STEADY_AFTER.as_secs_f64())
    .fetch_one(pool)
    .await?;
    let predictions: i64 = sqlx::query_scalar("SELECT count(*) FROM ml_anomaly_predictions").fetch_one(pool).await?;
    let aggregates: i64 = sqlx::query_scalar("SELECT count(*) FROM sensor_aggregates").fetch_one(pool).await?;
    let swap_readings_per_s = match progress.swapped_at {
        Some(at) => Some(throughput_around(pool, at).await?),
        None => None,
    };
    let (rebalances, rebalance_pause_ms_max): (i64, Option<f64>) =
        sqlx::query_as("SELECT count(*), max(pause_ms) FROM rebalances").fetch_one(pool).await?;
    let Progress { stored, seconds, cpu_s, ended_at, loop_seconds, .. } = progress;
    Ok(BenchReport {
        produced: 0,
        readings: stored,
        seconds,
        readings_per_s: if seconds > 0.0 { stored as f64 / seconds } else { 0.0 },
        latency_ms_p50: latency.0,
        latency_ms_p95: latency.1,
        latency_ms_p99: latency.2,
        dashboard_latency_ms_p50: None,
        dashboard_latency_ms_p95: None,
        dashboard_latency_ms_p99: None,
        dashboard_readings: 0,
        dashboard_batches: 0,
        dashboard_resyncs: 0,
        peak_rss_mib: peak_rss_mib(),
        cpu_s,
        predictions,
        aggregates,
        swap_readings_per_s,
        hosts: 1,
        rebalances,
        rebalance_pause_ms_max,
        timed_until_unix_ms: ended_at.timestamp_millis() as f64,
        loop_seconds,
    })
}

/// A scratch drop-in folder in the temporary folder, for a benchmark that changes it: a copy of
/// `from` (the configured drop-in folder), or empty.
fn scratch_plugins(from: Option<&Path>) -> std::io::Result<PathBuf> {
    let to = std::env::temp_dir().join(format!("iotstream-bench-plugins-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&to);
    std::fs::create_dir_all(&to)?;
    for entry in from.map(std::fs::read_dir).transpose()?.into_iter().flatten() {
        let path = entry?.path();
        if let (true, Some(name)) = (path.is_file(), path.file_name()) {
            std::fs::copy(&path, to.join(name))?;
        }
    }
    Ok(to)
}

/// Drops a fresh copy of `plugin` (its manifest and configuration, then its `.wasm`, each written
/// beside and renamed) into the drop-in folder of `folders`, from the folder it runs from: the
/// host loads it again and hands the running instance's state over.
fn swap(folders: &PluginFolders, plugin: &str) -> anyhow::Result<()> {
    let file = folders.locate(plugin).with_context(|| format!("no plugin {plugin} to swap"))?;
    let dropin = folders.dropin().context("no drop-in folder to swap a plugin in")?;
    let from = file.path.parent().context("a plugin file is in a folder")?;
    for extension in ["toml", "json", "wasm"] {
        let name = format!("{plugin}.{extension}");
        if !from.join(&name).is_file() {
            continue;
        }
        let partial = dropin.join(format!(".{name}.partial"));
        std::fs::copy(from.join(&name), &partial).with_context(|| format!("copying {name}"))?;
        std::fs::rename(&partial, dropin.join(&name)).with_context(|| format!("dropping in {name}"))?;
    }
    Ok(())
}

/// Readings/s stored before, right after and after `at` (see [`BenchReport::swap_readings_per_s`]).
async fn throughput_around(pool: &sqlx::PgPool, at: chrono::DateTime<chrono::Utc>) -> Result<[f64; 3], sqlx::Error> {
    let rate = |from: f64, to: f64| {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM sensor_readings WHERE ingested_at >= $1 + make_interval(secs => $2) \
             AND ingested_at < $1 + make_interval(secs => $3)",
        )
        .bind(at)
        .bind(from)
        .bind(to)
        .fetch_one(pool)
    };
    let before = rate(-2.0, 0.0).await? as f64 / 2.0;
    let mut slowest = f64::INFINITY;
    for quarter in 0..4 {
        let from = f64::from(quarter) * 0.25;
        slowest = slowest.min(rate(from, from + 0.25).await? as f64 * 4.0);
    }
    let after = rate(1.0, 3.0).await? as f64 / 2.0;
    Ok([before, slowest, after])
}

/// `VmHWM` of this process (Linux), in MiB; 0 where unknown.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// CPU seconds (user and system, all threads) this process has used: `utime` and `stime` of
/// `/proc/self/stat` (Linux), counted in `USER_HZ` ticks, which the kernel fixes at 100 a second
/// for what it shows user space; 0 where unknown.
fn cpu_seconds() -> f64 {
    const USER_HZ: f64 = 100.0;
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // The command name, in parentheses, may hold spaces: the fields are counted after it.
    let Some((_, fields)) = stat.rsplit_once(')') else { return 0.0 };
    let mut fields = fields.split_whitespace().skip(11);
    let mut ticks = || fields.next().and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks() + ticks()) / USER_HZ
}

/// A latency for the summary line: whole milliseconds, or `-` where none was measured.
fn milliseconds(latency: Option<f64>) -> String {
    latency.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0}"))
}

/// Prints `report`: JSON on stdout, a summary on stderr.
pub fn print(report: &BenchReport) -> anyhow::Result<()> {
    super::print_json(report)?;
    eprintln!(
        "{} of {} readings stored in {:.1} s: {:.0} readings/s; latency to durable p50 {} ms, p95 {} ms, p99 {} ms; \
         to dashboard p50 {} ms, p95 {} ms, p99 {} ms ({} readings); peak RSS {:.0} MiB; {:.2} CPU s; {} host(s), \
         {} rebalances, longest pause {} ms",
        report.readings,
        report.produced,
        report.seconds,
        report.readings_per_s,
        milliseconds(report.latency_ms_p50),
        milliseconds(report.latency_ms_p95),
        milliseconds(report.latency_ms_p99),
        milliseconds(report.dashboard_latency_ms_p50),
        milliseconds(report.dashboard_latency_ms_p95),
        milliseconds(report.dashboard_latency_ms_p99),
        report.dashboard_readings,
        report.peak_rss_mib,
        report.cpu_s,
        report.hosts,
        report.rebalances,
        milliseconds(report.rebalance_pause_ms_max)
    );
    if let Some(phases) = report.loop_seconds {
        let [source, stages, database] = phases.shares();
        eprintln!(
            "the loop's time: waiting for messages {source:.0}%, running the plugins {stages:.0}%, waiting for the database {database:.0}%"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus_client::registry::Registry;

    use super::*;
    use crate::http::metrics::{PipelineMetrics, Snapshot};

    /// The Prometheus text a host with `metrics` serves.
    fn served(metrics: &PipelineMetrics) -> String {
        let mut registry = Registry::with_prefix("iotstream");
        metrics.register(&mut registry, &Snapshot::default());
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).expect("encodes");
        text
    }

    #[test]
    fn the_loop_s_phases_are_read_back_from_the_host_s_metrics() {
        let metrics = PipelineMetrics::default();
        metrics.record_loop(LoopPhase::Source, Duration::from_millis(125));
        metrics.record_loop(LoopPhase::Stages, Duration::from_millis(2500));
        metrics.record_loop(LoopPhase::Database, Duration::from_millis(1375));
        let read = LoopSeconds::parse(&served(&metrics)).expect("every phase");
        assert_eq!(read, LoopSeconds { source: 0.125, stages: 2.5, database: 1.375 });
        assert_eq!(read.shares(), [3.125, 62.5, 34.375]);
        let start = LoopSeconds { source: 0.125, stages: 0.5, database: 0.375 };
        assert_eq!(read.since(start), LoopSeconds { source: 0.0, stages: 2.0, database: 1.0 });
        assert_eq!(LoopSeconds::default().shares(), [0.0, 0.0, 0.0]);
    }

    #[test]
    fn metrics_without_a_phase_give_no_loop_seconds() {
        let text = served(&PipelineMetrics::default());
        let without_database: String =
            text.lines().filter(|l| !l.contains(r#"phase="database""#)).map(|l| format!("{l}\n")).collect();
        assert_eq!(LoopSeconds::parse(&text), Some(LoopSeconds::default()));
        assert_eq!(LoopSeconds::parse(&without_database), None);
        assert_eq!(LoopSeconds::parse(""), None);
    }
}
