//! Webhook endpoints on PostgreSQL.

use super::*;
use crate::webhooks::Endpoint;
use secrecy::{ExposeSecret, SecretString};

const ENDPOINT_COLUMNS: &str = "id, url, event_types, active, secret, previous_secret, previous_until, disabled_reason, \
    created_by, created_at, updated_at";

fn endpoint_from_row(r: &PgRow) -> StoreResult<Endpoint> {
    let types: String = r.try_get("event_types")?;
    Ok(Endpoint {
        id: r.try_get("id")?,
        url: r.try_get("url")?,
        event_types: serde_json::from_str(&types)
            .map_err(|e| StoreError::Invariant(format!("event_types: {e}")))?,
        active: r.try_get("active")?,
        secret: SecretString::from(r.try_get::<String, _>("secret")?),
        previous_secret: r
            .try_get::<Option<String>, _>("previous_secret")?
            .map(SecretString::from),
        previous_until: r.try_get("previous_until")?,
        disabled_reason: r.try_get("disabled_reason")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

pub(super) async fn insert_endpoint(
    conn: &mut sqlx::PgConnection,
    e: &Endpoint,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, url, event_types, active, secret, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(e.id)
    .bind(&e.url)
    .bind(serde_json::to_string(&e.event_types).unwrap_or_else(|_| "[]".into()))
    .bind(e.active)
    .bind(e.secret.expose_secret())
    .bind(&e.created_by)
    .bind(e.created_at)
    .bind(e.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn endpoints(conn: &mut sqlx::PgConnection) -> StoreResult<Vec<Endpoint>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY id"
    )))
    .fetch_all(conn)
    .await?;
    rows.iter().map(endpoint_from_row).collect()
}

pub(super) async fn endpoint(
    conn: &mut sqlx::PgConnection,
    id: uuid::Uuid,
) -> StoreResult<Endpoint> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    endpoint_from_row(&row)
}

/// The new secret signs from now on; the old one keeps signing until `previous_until`.
pub(super) async fn rotate_secret(
    conn: &mut sqlx::PgConnection,
    id: uuid::Uuid,
    secret: &SecretString,
    previous_until: i64,
    at: i64,
) -> StoreResult<()> {
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET previous_secret = secret, previous_until = $1, secret = $2, updated_at = $3 WHERE id = $4",
    )
    .bind(previous_until)
    .bind(secret.expose_secret())
    .bind(at)
    .bind(id)
    .execute(conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(super) async fn set_endpoint_active(
    conn: &mut sqlx::PgConnection,
    id: uuid::Uuid,
    active: bool,
    reason: Option<&str>,
    at: i64,
) -> StoreResult<()> {
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET active = $1, disabled_reason = $2, updated_at = $3 WHERE id = $4",
    )
    .bind(active)
    .bind(reason)
    .bind(at)
    .bind(id)
    .execute(conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}
