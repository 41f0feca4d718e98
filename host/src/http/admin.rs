//! The admin endpoints: `POST /api/admin/plugins/{name}/release`, `POST
//! /api/admin/shadows/{name}/promote` and `.../discard`, `POST /api/admin/reload`. They change what the host runs,
//! so each needs `Authorization: Bearer TOKEN` with the token of `--admin-token`: without one
//! configured they are off (403 `admin_disabled`), and a request without the token, or with
//! another, is refused (401 `unauthorized`) before anything is asked of the pipeline. The
//! read-only API stays open.
//!
//! The pipeline does the action at its next batch boundary ([`crate::pipeline::AdminChannel`]).

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use tracing::{error, warn};

use super::ApiState;
use crate::pipeline::{AdminAction, AdminError};

/// The admin token, kept as its SHA-256: requests are compared digest to digest, so the time a
/// comparison takes says nothing useful about the token.
#[derive(Clone)]
pub struct AdminToken(Arc<[u8; 32]>);

impl AdminToken {
    /// The token `text`; `None` for an empty one (an empty token would let any bearer in).
    pub fn new(text: &str) -> Option<Self> {
        (!text.is_empty()).then(|| AdminToken(Arc::new(Sha256::digest(text.as_bytes()).into())))
    }

    fn admits(&self, offered: &str) -> bool {
        let offered: [u8; 32] = Sha256::digest(offered.as_bytes()).into();
        offered == *self.0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// The admin routes, behind the token check.
pub fn routes(state: ApiState) -> Router<ApiState> {
    Router::new()
        .route("/api/admin/plugins/{name}/release", post(release))
        .route("/api/admin/shadows/{name}/discard", post(discard))
        .route("/api/admin/shadows/{name}/promote", post(promote))
        .route("/api/admin/reload", post(reload))
        .route_layer(axum::middleware::from_fn_with_state(state, require_token))
}

/// Lets a request through only with the configured bearer token.
async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.admin_token else {
        return refusal(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "admin actions are off: the host has no --admin-token",
        );
    };
    let offered = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match offered {
        Some(offered) if token.admits(offered) => next.run(request).await,
        _ => {
            warn!(path = %request.uri().path(), "admin request refused: no or wrong bearer token");
            let mut response = refusal(StatusCode::UNAUTHORIZED, "unauthorized", "a valid bearer token is required");
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            response
        }
    }
}

fn refusal(status: StatusCode, code: &'static str, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": code, "message": message }))).into_response()
}

async fn release(State(state): State<ApiState>, Path(name): Path<String>) -> Response {
    answer(&state, AdminAction::Release { plugin: name }).await
}

async fn discard(State(state): State<ApiState>, Path(name): Path<String>) -> Response {
    answer(&state, AdminAction::Discard { shadow: name }).await
}

async fn promote(State(state): State<ApiState>, Path(name): Path<String>) -> Response {
    answer(&state, AdminAction::Promote { shadow: name }).await
}

async fn reload(State(state): State<ApiState>) -> Response {
    answer(&state, AdminAction::Reload).await
}

/// Asks the pipeline (when it runs) and answers with what it did, or why not.
async fn answer(state: &ApiState, action: AdminAction) -> Response {
    let asked =
        if state.live.processing() { state.live.admin().ask(action).await } else { Err(AdminError::NotRunning) };
    match asked {
        Ok(done) => Json(serde_json::json!({ "done": done })).into_response(),
        Err(err) => {
            let (status, code) = match &err {
                AdminError::NoSuchPlugin(_) => (StatusCode::NOT_FOUND, "no_such_plugin"),
                AdminError::NotHeld(_) => (StatusCode::CONFLICT, "not_held"),
                AdminError::NotAShadow(_) => (StatusCode::CONFLICT, "not_a_shadow"),
                AdminError::NoFolder => (StatusCode::CONFLICT, "no_plugins_folder"),
                AdminError::NoDropinFolder => (StatusCode::CONFLICT, "no_dropin_folder"),
                AdminError::BuiltIn(_) => (StatusCode::CONFLICT, "built_in"),
                AdminError::Manifest { .. } => (StatusCode::CONFLICT, "bad_manifest"),
                AdminError::Files { .. } => {
                    error!(error = %err, "admin action failed on the plugins folder");
                    (StatusCode::INTERNAL_SERVER_ERROR, "plugin_files")
                }
                AdminError::NotRunning => (StatusCode::SERVICE_UNAVAILABLE, "pipeline_not_running"),
                AdminError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            };
            refusal(status, code, &err.to_string())
        }
    }
}
