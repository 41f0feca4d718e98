//! `iotstream run`: the one start-up path (connect and migrate, bind, broker) and the wiring of
//! plugins, live view, HTTP server and processing loop, run until shutdown.
//!
//! [`start`] is what the binary runs; [`serve`] takes an already connected [`Store`] (the benchmark
//! hands it a scratch database); [`run`] takes every resource as an argument, so tests pass a test
//! pool, a listener on `127.0.0.1:0` and a mock cluster's address.

use std::sync::Arc;

use iotstream_api::{LIVE_ROWS, Named, OutageCode, PluginAction};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::RunConfig;
use crate::http::cluster::{LAG_REPORT_INTERVAL, report_lag_every};
use crate::http::live::Live;
use crate::http::metrics::Throughput;
use crate::http::{ApiState, router};
use crate::kafka::{Brokers, EmbeddedBroker, KafkaError, Source};
use crate::pipeline::{Pipeline, PipelineError, PluginReload, StartError};
use crate::plugins::watch::PluginWatcher;
use crate::plugins::{LoadedFolders, PluginError, PluginFolders, PluginLayer, PluginRuntime};
use crate::store::partitions::{MAINTENANCE_INTERVAL, Retention};
use crate::store::{Store, StoreError, pipeline_connections};

/// How long a shutdown waits for HTTP requests in flight (live streams end at once).
const SERVER_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Why `iotstream run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The plugin runtime or folder.
    #[error(transparent)]
    Plugins(#[from] PluginError),
    /// Kafka.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// PostgreSQL.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Restoring the checkpoint or positioning the source.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The loop stopped short of a clean shutdown.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The built-in plugins folder does not exist.
    #[error(
        "no built-in plugins folder {0}: install iotstream with its built-in plugins (`cargo xtask \
         install`), build them in a checkout (`cargo xtask build`), name their folder with \
         --builtin-plugins (IOTSTREAM_BUILTIN_PLUGINS), or run without them (--no-builtin-plugins)"
    )]
    NoBuiltinPlugins(std::path::PathBuf),
    /// The drop-in plugins folder does not exist and cannot be created.
    #[error("cannot create the drop-in plugins folder {} (--plugins): {source}", path.display())]
    DropinFolder {
        /// The folder.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP server failed while serving.
    #[error("http server: {0}")]
    Http(#[source] std::io::Error),
}

/// Connects to the database of `config` (retrying while it starts) and migrates it, then
/// [`serve`]s.
pub async fn start(config: &RunConfig, shutdown: CancellationToken) -> Result<(), RunError> {
    let options = config.database_url.parse().map_err(StoreError::from)?;
    let pipeline = config.pipeline();
    let store = Store::connect(options, pipeline_connections(pipeline.writers, pipeline.batches_in_flight)).await?;
    serve(config, store, shutdown).await
}

/// Binds the HTTP listener of `config`, starts the embedded broker (and simulator) when `config`
/// names no brokers, and [`run`]s over `store` (migrated) until `shutdown`.
pub async fn serve(config: &RunConfig, store: Store, shutdown: CancellationToken) -> Result<(), RunError> {
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| RunError::Bind { address: config.listen, source })?;
    let embedded;
    let brokers = match &config.brokers {
        Some(brokers) => config.kafka.brokers(brokers),
        None => {
            embedded = start_embedded(config, shutdown.clone()).await?;
            config.kafka.brokers(embedded.bootstrap_servers())
        }
    };
    run(config, store, listener, &brokers, shutdown).await
}

/// Runs the pipeline and the HTTP server over `store` (migrated), `listener` and `brokers` until
/// `shutdown`.
pub async fn run(
    config: &RunConfig,
    store: Store,
    listener: TcpListener,
    brokers: &Brokers,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let folders = config.plugin_folders.folders();
    let (runtime, loaded) = load_plugins(config, &folders)?;
    // Plugins dropped into either folder, replaced or removed take effect while the host runs.
    let mut watchers = Vec::new();
    for (layer, dir) in folders.layers() {
        match PluginWatcher::start(dir) {
            Ok(watcher) => watchers.push((layer, watcher)),
            Err(err) => warn!(
                dir = %dir.display(),
                layer = layer.as_str(),
                error = %err,
                "cannot watch a plugins folder: its plugins change only at restart"
            ),
        }
    }
    let reload = (!watchers.is_empty()).then(|| PluginReload::new(runtime, folders, watchers));
    let live = start_live_view(&store).await?;
    announce_plugins(&live, &loaded);
    tokio::spawn(maintain_partitions(store.clone(), config.retention(), shutdown.clone()));
    let server = serve_http(config, &store, &live, listener, &shutdown)?;
    if !config.summary_interval.is_zero() {
        tokio::spawn(log_summaries(live.clone(), *config.summary_interval, shutdown.clone()));
    }
    // The API serves while the brokers are still unreachable, and says so.
    live.set_broker(Some(OutageCode::BrokersConnecting));
    let result = match Source::connect_retrying(brokers, &config.group, &config.topic, &shutdown).await {
        Some(source) => {
            live.set_broker(None);
            info!(source = source.identity(), partitions = source.partitions().len(), "kafka source connected");
            let pipeline_config = config.pipeline();
            start_lag_reports(&store, &live, &source, &pipeline_config.host_name, &shutdown).await;
            match Pipeline::start(pipeline_config, source, loaded.plugins, reload, store, live.clone(), &shutdown).await
            {
                Ok(Some(pipeline)) => {
                    live.set_processing(true);
                    let ran = pipeline.run(shutdown.clone()).await.map_err(RunError::from);
                    live.set_processing(false);
                    ran
                }
                // Stopped while another host owned the source.
                Ok(None) => Ok(()),
                Err(err) => Err(err.into()),
            }
        }
        None => Ok(()),
    };
    shutdown.cancel();
    match tokio::time::timeout(SERVER_DRAIN, server).await {
        Ok(Ok(served)) => served.map_err(RunError::Http)?,
        Ok(Err(join)) => error!(error = %join, "http server task failed"),
        Err(_) => warn!(after = ?SERVER_DRAIN, "http connections still open at shutdown; closing them"),
    }
    result
}

/// The plugin runtime and the plugins of the configured folders, those that loaded and those that
/// did not (each logged). The built-in folder must exist; the drop-in folder is created if missing
/// (an operator names the folder they will drop plugins into, as with Grafana's plugins path).
fn load_plugins(config: &RunConfig, folders: &PluginFolders) -> Result<(Arc<PluginRuntime>, LoadedFolders), RunError> {
    if let Some(builtin) = folders.builtin().filter(|dir| !dir.is_dir()) {
        return Err(RunError::NoBuiltinPlugins(builtin.to_owned()));
    }
    if let Some(dropin) = folders.dropin().filter(|dir| !dir.is_dir()) {
        std::fs::create_dir_all(dropin).map_err(|source| RunError::DropinFolder { path: dropin.to_owned(), source })?;
        info!(dir = %dropin.display(), "drop-in plugins folder created");
    }
    for name in folders.lone_dropin_settings() {
        warn!(
            plugin = %name,
            "a drop-in manifest or configuration without its .wasm is ignored: copy the built-in's .wasm \
             beside it to override the built-in"
        );
    }
    let runtime = Arc::new(PluginRuntime::with_limits(config.plugin_limits())?);
    let loaded = runtime.load_folders(folders)?;
    for (plugin, failure) in &loaded.failures {
        error!(plugin = %plugin, error = %failure, "plugin not loaded");
    }
    for plugin in &loaded.plugins {
        let overrides = plugin.layer() == Some(PluginLayer::DropIn)
            && folders.builtin().is_some_and(|dir| dir.join(format!("{}.wasm", plugin.name())).is_file());
        info!(
            plugin = plugin.name(),
            kind = plugin.kind().as_str(),
            version = %plugin.info().version,
            layer = plugin.layer().map(Named::as_str),
            overrides_builtin = overrides,
            "plugin loaded"
        );
    }
    if loaded.plugins.is_empty() {
        let dirs: Vec<String> = folders.layers().map(|(_, dir)| dir.display().to_string()).collect();
        warn!(dirs = %dirs.join(", "), "no plugin loaded: readings are stored raw only");
    }
    Ok((runtime, loaded))
}

/// The live view, filled from the database.
async fn start_live_view(store: &Store) -> Result<Arc<Live>, RunError> {
    Ok(Arc::new(Live::new(
        store.totals().await?,
        store.recent_readings(LIVE_ROWS as i64, None).await?,
        store.recent_predictions(LIVE_ROWS as i64, None, true).await?,
        store.recent_aggregates(LIVE_ROWS as i64).await?,
    )))
}

/// Tells the live view which plugins loaded at start (and from which folder) and which files were
/// refused.
fn announce_plugins(live: &Live, loaded: &LoadedFolders) {
    for plugin in &loaded.plugins {
        let layer = plugin.layer().map_or("", Named::as_str);
        let detail = format!("version {} ({layer}) at start", plugin.info().version);
        live.plugin_event(plugin.name(), PluginAction::Loaded, detail);
    }
    for (plugin, failure) in &loaded.failures {
        let running = loaded.plugins.iter().any(|p| p.name() == plugin);
        let detail =
            if running { format!("{}; the built-in version runs instead", failure.public()) } else { failure.public() };
        live.set_plugin_failure(plugin, Some(detail.clone()));
        live.plugin_event(plugin, PluginAction::Refused, detail);
    }
}

/// Serves the API and the dashboard on `listener` until `shutdown`.
fn serve_http(
    config: &RunConfig,
    store: &Store,
    live: &Arc<Live>,
    listener: TcpListener,
    shutdown: &CancellationToken,
) -> Result<JoinHandle<std::io::Result<()>>, RunError> {
    let state = ApiState::with_max_streams(store.clone(), live.clone(), shutdown.clone(), config.max_streams)
        .with_admin_token(config.admin_token.as_deref());
    let app = router(state, config.dashboard_dir.clone());
    let address = listener.local_addr().map_err(RunError::Http)?;
    info!(url = %format!("http://{address}/"), "dashboard served");
    let server_shutdown = shutdown.clone();
    Ok(tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(server_shutdown.cancelled_owned()).await
    }))
}

/// Makes the coming days' partitions and drops those past `retention`, now and then every
/// [`MAINTENANCE_INTERVAL`] until `shutdown` (see [`crate::store::partitions`]). A failed pass is
/// logged and tried again: each batch also makes the partitions it needs.
async fn maintain_partitions(store: Store, retention: Retention, shutdown: CancellationToken) {
    loop {
        if let Err(err) = store.maintain_partitions(&retention, chrono::Utc::now()).await {
            warn!(error = %err, "partition maintenance failed; trying again in 10 minutes");
        }
        tokio::select! {
            _ = tokio::time::sleep(MAINTENANCE_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Reports this host's partitions' lag every [`LAG_REPORT_INTERVAL`] until `shutdown` (which also
/// lets `GET /api/partitions` answer for `source`). A database that does not answer now is logged:
/// the pipeline's start, which needs it too, says what follows.
async fn start_lag_reports(store: &Store, live: &Arc<Live>, source: &Source, host: &str, shutdown: &CancellationToken) {
    match store.source_ids(source.identity(), source.topic()).await {
        Ok(ids) => {
            let (store, live, host) = (store.clone(), live.clone(), host.to_owned());
            tokio::spawn(report_lag_every(store, live, ids.lineage, host, LAG_REPORT_INTERVAL, shutdown.clone()));
        }
        Err(err) => warn!(error = %err, "cannot look the source up: no lag reports from this host"),
    }
}

/// Logs one throughput line every `every` until `shutdown`: what was consumed and stored in the
/// interval, the totals, the consumer lag and whether database and brokers answer.
async fn log_summaries(live: Arc<Live>, every: std::time::Duration, shutdown: CancellationToken) {
    let (mut before, mut at) = (live.metrics().totals(), tokio::time::Instant::now());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        let (now, totals) = (tokio::time::Instant::now(), live.metrics().totals());
        let throughput = Throughput::between(before, totals, now - at);
        let snapshot = live.snapshot();
        info!(
            received = throughput.received,
            stored = throughput.stored,
            stored_per_second = format!("{:.1}", throughput.stored_per_second),
            received_total = totals.0,
            stored_total = totals.1,
            lag = snapshot.consumer_lag.values().sum::<i64>(),
            database_up = snapshot.database_up,
            broker_up = snapshot.broker_up,
            "throughput"
        );
        (before, at) = (totals, now);
    }
}

/// The embedded default: an in-process broker with the topic, and (unless disabled) the simulator
/// producing to it. Dropping the broker stops it.
pub async fn start_embedded(config: &RunConfig, shutdown: CancellationToken) -> Result<EmbeddedBroker, RunError> {
    let broker = EmbeddedBroker::start(&config.topic, config.embedded_partitions)?;
    info!(bootstrap = broker.bootstrap_servers(), topic = %config.topic, "embedded Kafka-protocol broker started");
    if !config.no_simulator {
        let (simulate, brokers, topic) =
            (config.simulate.clone(), config.kafka.brokers(broker.bootstrap_servers()), config.topic.clone());
        tokio::spawn(async move {
            if let Err(err) = crate::simulate::run(&simulate, &brokers, &topic, shutdown).await {
                error!(error = %err, "embedded simulator stopped");
            }
        });
    }
    Ok(broker)
}
