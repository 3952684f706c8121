//! Liveness and readiness.

use super::AppState;
use super::error::ApiError;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

/// The process is up and serving HTTP.
#[utoipa::path(get, tag = "health", path = "/healthz", responses((status = 200, description = "alive")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The database answers; a load balancer may send traffic.
#[utoipa::path(get, tag = "health", path = "/readyz", responses(
    (status = 200, description = "ready"),
    (status = 503, description = "database unreachable", body = super::error::ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match state.store.ping().await {
        Ok(()) => Ok(Json(json!({"status": "ready"}))),
        Err(e) => {
            tracing::warn!(error = ?e, "readiness check failed");
            Err(ApiError::Unavailable)
        }
    }
}
