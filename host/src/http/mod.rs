//! The HTTP side: the JSON API, the live stream (server-sent events) and the built dashboard.
//!
//! Errors never leak internals: a database failure is logged and answered 503.
//!
//! # Layout
//! * this module: the router and the JSON endpoints, answered from PostgreSQL and the live view;
//! * [`live`]: the live view, the fold of every committed batch the pipeline publishes;
//! * [`sse`]: `GET /api/stream`, the live view as server-sent events;
//! * [`admin`]: the admin actions, behind a bearer token;
//! * [`metrics`]: the pipeline's and the API's own metrics;
//! * [`prometheus`]: `GET /metrics` in Prometheus's text format;
//! * [`probes`]: `GET /healthz` and `GET /readyz`, answered by status code;
//! * [`cluster`]: `GET /api/partitions`, the hosts sharing the topic, and the lag reports it shows.

pub mod admin;
pub mod cluster;
pub mod live;
pub mod metrics;
pub mod probes;
pub mod prometheus;
mod sse;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use iotstream_api::{Named, PluginEvent, PluginFailure, PluginStatus, SensorType, Stats};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tower::limit::ConcurrencyLimitLayer;
use tower_http::services::{ServeDir, ServeFile};
use tracing::error;

use self::live::Live;
use crate::store::{HistoryFilter, Store, StoreError};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The database.
    pub store: Store,
    /// The live view.
    pub live: Arc<Live>,
    /// Cancelled at shutdown: ends every live stream, so a graceful shutdown does not wait on them.
    pub shutdown: CancellationToken,
    /// A permit per live stream that may be open.
    streams: Arc<tokio::sync::Semaphore>,
    /// The admin endpoints' token (`None`: they are off).
    admin_token: Option<admin::AdminToken>,
}

/// Live streams served at once by default: a dashboard holds one; beyond this many, a new one is
/// answered 503 rather than letting clients hold the host's memory and tasks without bound.
pub const MAX_STREAMS: usize = 64;
/// JSON requests handled at once; more wait for a slot (each holds at most one of the API's
/// database connections, and those are fewer still).
const MAX_CONCURRENT_REQUESTS: usize = 32;
/// The longest event-time range `/api/quality` compares detectors over: its join is quadratic in
/// the verdicts per reading and linear in the range, so a bound keeps it to a dashboard's query.
const QUALITY_MAX_RANGE: chrono::TimeDelta = chrono::TimeDelta::days(7);
/// The longest event-time range `/api/history` aggregates: the answer stays at most
/// [`iotstream_api::HISTORY_MAX_POINTS`] a series whatever the range, but the scan grows with it; a
/// week is the longest the dashboard's picker offers past its presets.
const HISTORY_MAX_RANGE: chrono::TimeDelta = chrono::TimeDelta::days(7);
/// The range `/api/history` covers without `from`: the dashboard's default, the last hour.
const HISTORY_DEFAULT_RANGE: chrono::TimeDelta = chrono::TimeDelta::hours(1);
/// The range `/api/quality` covers without `from`: the day up to `to` (or the newest verdict).
const QUALITY_DEFAULT_RANGE: chrono::TimeDelta = chrono::TimeDelta::days(1);

impl ApiState {
    /// The handlers' state, serving at most [`MAX_STREAMS`] live streams at once.
    pub fn new(store: Store, live: Arc<Live>, shutdown: CancellationToken) -> Self {
        Self::with_max_streams(store, live, shutdown, MAX_STREAMS)
    }

    /// [`ApiState::new`] with at most `max_streams` live streams at once.
    pub fn with_max_streams(store: Store, live: Arc<Live>, shutdown: CancellationToken, max_streams: usize) -> Self {
        let streams = Arc::new(tokio::sync::Semaphore::new(max_streams));
        ApiState { store, live, shutdown, streams, admin_token: None }
    }

    /// The same state with the admin endpoints behind `token` (`None`, or an empty token: off).
    pub fn with_admin_token(self, token: Option<&str>) -> Self {
        ApiState { admin_token: token.and_then(admin::AdminToken::new), ..self }
    }
}

/// The API's error: a stable code and a short message, without internals (those are logged).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The database did not answer.
    #[error("the database is unavailable; try again")]
    Database(#[from] StoreError),
    /// The request asks for something the API does not serve.
    #[error("{message}")]
    BadRequest {
        /// The stable code.
        code: &'static str,
        /// What is wrong, for a person.
        message: String,
    },
    /// Every live stream slot is taken.
    #[error("too many live streams are open; close one or try again later")]
    TooManyStreams,
    /// The host has not joined its topic's consumer group yet (it is connecting to the brokers).
    #[error("this host has not joined its topic's consumer group yet; try again")]
    SourceNotConnected,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::Database(err) => {
                error!(error = %err, "api query failed");
                (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable")
            }
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, *code),
            ApiError::TooManyStreams => (StatusCode::SERVICE_UNAVAILABLE, "too_many_streams"),
            ApiError::SourceNotConnected => (StatusCode::SERVICE_UNAVAILABLE, "source_not_connected"),
        };
        (status, Json(serde_json::json!({ "error": code, "message": self.to_string() }))).into_response()
    }
}

/// The router: `/api/*`, and the dashboard from `dashboard_dir` for every other path.
pub fn router(state: ApiState, dashboard_dir: PathBuf) -> Router {
    let api = Router::new()
        .route("/api/health", get(health))
        .route("/api/stats", get(stats))
        .route("/api/readings", get(readings))
        .route("/api/predictions", get(predictions))
        .route("/api/aggregates", get(aggregates))
        .route("/api/dead-letters", get(dead_letters))
        .route("/api/dead-letters/counts", get(dead_letter_counts))
        .route("/api/plugins", get(plugins))
        .route("/api/shadows", get(shadows))
        .route("/api/quality", get(quality))
        .route("/api/history", get(history))
        .route("/api/correlations", get(correlations))
        .route("/api/models", get(models))
        .route("/api/partitions", get(cluster::partitions))
        .route("/metrics", get(metrics))
        // Live streams are bounded by their own permits, not by the request slots they would hold.
        .layer(ConcurrencyLimitLayer::new(MAX_CONCURRENT_REQUESTS))
        .route("/api/stream", get(sse::stream))
        // Probes never wait behind the API's requests: a busy host is not a dead one.
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .merge(admin::routes(state.clone()))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state);
    let index = dashboard_dir.join("index.html");
    if index.exists() {
        // `cargo xtask build` writes a gzipped copy beside each file: served to browsers that take it.
        let page = ServeFile::new(index).precompressed_gzip();
        api.fallback_service(ServeDir::new(&dashboard_dir).precompressed_gzip().fallback(page))
    } else {
        let message = format!(
            "<h1>iotstream</h1><p>The dashboard is not built ({} is missing): run <code>cargo xtask build</code>. \
             The API is at <a href=\"/api/stats\">/api/stats</a>.</p>",
            index.display()
        );
        api.fallback(move || async move { (StatusCode::NOT_FOUND, Html(message)) })
    }
}

/// `GET /api/health`: `ok`, or `degraded` with what is down (the database or the brokers; the
/// pipeline retries either by itself), and the partitions the consumer group gave this host (`null`
/// until it joined). Always 200: the process is alive and serving.
async fn health(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let stats = state.live.stats();
    let status = if stats.database_ok && stats.broker_ok { "ok" } else { "degraded" };
    Json(serde_json::json!({
        "status": status,
        "database": { "ok": stats.database_ok, "code": stats.database_code, "error": stats.database_error },
        "broker": { "ok": stats.broker_ok, "code": stats.broker_code, "error": stats.broker_error },
        "partitions": state.live.owned_partitions(),
        "last_checkpoint": stats.last_checkpoint,
    }))
}

/// `?limit=` of the list endpoints: 1 to 1000, default 100.
#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<i64>,
    sensor_id: Option<String>,
    detector: Option<String>,
    #[serde(default)]
    anomalies_only: bool,
}

impl ListQuery {
    fn limit(&self) -> i64 {
        self.limit.unwrap_or(100).clamp(1, 1000)
    }
}

async fn stats(State(state): State<ApiState>) -> Json<Stats> {
    Json(state.live.stats())
}

async fn readings(State(state): State<ApiState>, Query(q): Query<ListQuery>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.store.recent_readings(q.limit(), q.sensor_id.as_deref()).await?))
}

async fn predictions(State(state): State<ApiState>, Query(q): Query<ListQuery>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.store.recent_predictions(q.limit(), q.detector.as_deref(), q.anomalies_only).await?))
}

async fn aggregates(State(state): State<ApiState>, Query(q): Query<ListQuery>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.store.recent_aggregates(q.limit()).await?))
}

async fn dead_letters(
    State(state): State<ApiState>,
    Query(q): Query<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.store.dead_letters(q.limit()).await?))
}

/// `GET /api/dead-letters/counts`: dead letters per kind of refusal.
async fn dead_letter_counts(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.store.dead_letter_counts().await?))
}

/// `?from=&to=` of `/api/quality` (RFC 3339; either may be left out).
#[derive(Debug, Deserialize)]
struct RangeQuery {
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
}

/// `[from, to)` from a query's ends: `to` given or `default_to`, `from` given or `default_range`
/// before `to`; refused when empty or longer than `max_range`.
fn bounded_range(
    q: &RangeQuery,
    default_to: chrono::DateTime<chrono::Utc>,
    default_range: chrono::TimeDelta,
    max_range: chrono::TimeDelta,
) -> Result<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>), ApiError> {
    let to = q.to.unwrap_or(default_to);
    let from = q.from.unwrap_or(to - default_range);
    if from >= to {
        return Err(ApiError::BadRequest {
            code: "empty_range",
            message: format!("from ({from}) is not before to ({to})"),
        });
    }
    if to - from > max_range {
        return Err(ApiError::BadRequest {
            code: "range_too_long",
            message: format!("the range may span at most {} days", max_range.num_days()),
        });
    }
    Ok((from, to))
}

/// The range of a query over verdicts: at most [`QUALITY_MAX_RANGE`]; `to` defaults to just
/// after the newest verdict, `from` to [`QUALITY_DEFAULT_RANGE`] before `to`.
async fn verdict_range(
    state: &ApiState,
    q: &RangeQuery,
) -> Result<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>), ApiError> {
    let default_to = match q.to {
        Some(to) => to,
        None => match state.store.newest_verdict().await? {
            Some(newest) => newest + chrono::TimeDelta::milliseconds(1),
            None => chrono::Utc::now(),
        },
    };
    bounded_range(q, default_to, QUALITY_DEFAULT_RANGE, QUALITY_MAX_RANGE)
}

/// `GET /api/quality?from=&to=`: over event times in `[from, to)` (see [`verdict_range`]).
async fn quality(State(state): State<ApiState>, Query(q): Query<RangeQuery>) -> Result<impl IntoResponse, ApiError> {
    let (from, to) = verdict_range(&state, &q).await?;
    Ok(Json(state.store.quality(Some(from), Some(to)).await?))
}

/// `GET /api/models?from=&to=`: the models that judged readings with event time in `[from, to)`
/// (see [`verdict_range`]), their generations, training times and rows.
async fn models(State(state): State<ApiState>, Query(q): Query<RangeQuery>) -> Result<impl IntoResponse, ApiError> {
    let (from, to) = verdict_range(&state, &q).await?;
    Ok(Json(state.store.model_generations(from, to).await?))
}

/// `?location=&from=&to=` of `/api/correlations`.
#[derive(Debug, Deserialize)]
struct CorrelationQuery {
    location: Option<String>,
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
}

/// `GET /api/correlations?location=&from=&to=`: each pair of sensor types at `location` (required),
/// correlated over the 1-minute windows starting in `[from, to)` (ranged as `/api/history`).
async fn correlations(
    State(state): State<ApiState>,
    Query(q): Query<CorrelationQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let Some(location) = q.location.filter(|l| !l.is_empty()) else {
        return Err(ApiError::BadRequest {
            code: "location_required",
            message: "correlations are per location: give ?location=".to_owned(),
        });
    };
    let (from, to) = bounded_range(
        &RangeQuery { from: q.from, to: q.to },
        chrono::Utc::now(),
        HISTORY_DEFAULT_RANGE,
        HISTORY_MAX_RANGE,
    )?;
    Ok(Json(state.store.type_correlations(&location, from, to).await?))
}

/// `?from=&to=&sensor_type=&location=&sensor_id=` of `/api/history`.
#[derive(Debug, Deserialize)]
struct HistoryQuery {
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
    sensor_type: Option<String>,
    location: Option<String>,
    sensor_id: Option<String>,
}

/// `GET /api/history`: readings with event time in `[from, to)` (at most [`HISTORY_MAX_RANGE`];
/// `to` defaults to now, `from` to [`HISTORY_DEFAULT_RANGE`] before `to`), per sensor type and
/// location, in at most [`iotstream_api::HISTORY_MAX_POINTS`] buckets a series.
async fn history(State(state): State<ApiState>, Query(q): Query<HistoryQuery>) -> Result<impl IntoResponse, ApiError> {
    let (from, to) = bounded_range(
        &RangeQuery { from: q.from, to: q.to },
        chrono::Utc::now(),
        HISTORY_DEFAULT_RANGE,
        HISTORY_MAX_RANGE,
    )?;
    let sensor_type = match q.sensor_type.as_deref() {
        None | Some("") => None,
        Some(name) => Some(<SensorType as Named>::from_name(name).ok_or_else(|| ApiError::BadRequest {
            code: "unknown_sensor_type",
            message: format!("{name:?} is not a sensor type"),
        })?),
    };
    let nonempty = |text: Option<String>| text.filter(|t| !t.is_empty());
    let filter = HistoryFilter { sensor_type, location: nonempty(q.location), sensor_id: nonempty(q.sensor_id) };
    Ok(Json(state.store.history(from, to, &filter).await?))
}

/// `GET /api/plugins`.
#[derive(Debug, Serialize)]
struct PluginsResponse {
    plugins: Vec<PluginStatus>,
    /// Plugin files refused (and not since fixed or removed).
    failures: Vec<PluginFailure>,
    /// Loads, swaps, removals and refusals while the host ran, oldest first.
    events: Vec<PluginEvent>,
}

async fn plugins(State(state): State<ApiState>) -> Json<PluginsResponse> {
    Json(PluginsResponse {
        plugins: state.live.plugins(),
        failures: state.live.plugin_failures(),
        events: state.live.plugin_events(),
    })
}

/// `GET /api/shadows`: each shadow detector against its live detector, with both call times.
async fn shadows(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let mut comparisons = state.store.shadow_comparisons().await?;
    let plugins = state.live.plugins();
    let p50 = |name: &str| plugins.iter().find(|p| p.name == name).map(|p| p.p50_call_micros);
    for c in &mut comparisons {
        c.shadow_call_micros_p50 = p50(&c.shadow);
        c.live_call_micros_p50 = p50(&c.live_detector);
    }
    Ok(Json(comparisons))
}

/// `GET /metrics`.
async fn metrics(State(state): State<ApiState>) -> Response {
    let snapshot = state.live.snapshot();
    match prometheus::encode_all(state.live.plugins(), state.live.metrics(), &snapshot) {
        Ok(text) => ([(axum::http::header::CONTENT_TYPE, prometheus::CONTENT_TYPE)], text).into_response(),
        Err(err) => {
            // Encoding into a String fails only through a bug in the encoder: say so, leak nothing.
            error!(error = %err, "cannot encode the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Counts each request by the route it matched and its status (`iotstream_http_requests_total`).
async fn count_request(
    State(state): State<ApiState>,
    route: axum::extract::MatchedPath,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = route.as_str().to_owned();
    let response = next.run(request).await;
    state.live.metrics().record_request(&route, response.status().as_u16());
    response
}
