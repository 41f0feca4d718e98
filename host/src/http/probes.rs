//! The probes an orchestrator asks (Docker's `HEALTHCHECK`, Kubernetes' liveness and readiness,
//! `iotstream health`): `GET /healthz`, the process is alive and serving, and `GET /readyz`, the
//! host does its job. They answer by status code, so a probe needs no JSON parsing; the body says
//! which check failed for the person who looks.
//!
//! Both answer from the live view, which the pipeline keeps current (`/api/health` reads the same
//! state): a probe never queries the database, so a scrape every few seconds costs nothing and a
//! slow database cannot make the probe itself time out.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use iotstream_api::PluginState;
use serde::Serialize;

use super::ApiState;

/// What `GET /readyz` checks, each `true` when it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReadyChecks {
    /// The last database write succeeded (or none failed yet).
    pub database: bool,
    /// The brokers answer.
    pub broker: bool,
    /// The pipeline runs: this host owns the source, its plugins are installed and it consumes.
    /// False while it connects, restores a checkpoint or waits for a source another host owns.
    pub pipeline: bool,
}

impl ReadyChecks {
    /// Every check holds.
    pub fn all(self) -> bool {
        self.database && self.broker && self.pipeline
    }
}

/// The body of `GET /readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// Every check holds (the status code says the same: 200, else 503).
    pub ready: bool,
    /// Each check.
    pub checks: ReadyChecks,
    /// Plugins in quarantine. Listed, not a failed check: the stream goes on without them (their
    /// readings are stored raw), and a host taken out of service could not be told to release them.
    pub quarantined: Vec<String>,
}

/// The host's readiness, from the live view.
pub fn readiness(state: &ApiState) -> Readiness {
    let stats = state.live.stats();
    let checks =
        ReadyChecks { database: stats.database_ok, broker: stats.broker_ok, pipeline: state.live.processing() };
    let quarantined =
        state.live.plugins().into_iter().filter(|p| p.state == PluginState::Quarantined).map(|p| p.name).collect();
    Readiness { ready: checks.all(), checks, quarantined }
}

/// `GET /healthz`: 200 while the process serves HTTP. Outages of the database or the brokers do not
/// fail it: the pipeline retries them by itself, and restarting the process would not help.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive" }))
}

/// `GET /readyz`: 200 when every [`ReadyChecks`] holds, else 503; the body is the [`Readiness`].
pub async fn readyz(State(state): State<ApiState>) -> (StatusCode, Json<Readiness>) {
    let readiness = readiness(&state);
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(readiness))
}

#[cfg(test)]
mod tests {
    use super::ReadyChecks;

    #[test]
    fn ready_only_when_every_check_holds() {
        let all = ReadyChecks { database: true, broker: true, pipeline: true };
        assert!(all.all());
        for failing in [
            ReadyChecks { database: false, ..all },
            ReadyChecks { broker: false, ..all },
            ReadyChecks { pipeline: false, ..all },
        ] {
            assert!(!failing.all(), "{failing:?}");
        }
    }
}
