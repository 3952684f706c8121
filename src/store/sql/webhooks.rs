//! Webhook endpoints and the outbox, on both databases.

use super::*;
use crate::domain::webhooks::Endpoint;
use crate::domain::webhooks::{
    AttemptOutcome, Backlog, Delivery, DeliveryState, EndpointBacklog, OutboxEvent,
};
use secrecy::{ExposeSecret, SecretString};

const ENDPOINT_COLUMNS: &str = "id, company_id, url, event_types, active, secret, previous_secret, previous_until, disabled_reason, \
    created_by, created_at, updated_at";

fn endpoint_from_row(r: &DbRow) -> StoreResult<Endpoint> {
    let types: String = r.try_get("event_types")?;
    Ok(Endpoint {
        id: r.try_get("id")?,
        company: r.try_get("company_id")?,
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

pub(crate) async fn insert_endpoint(conn: &mut DbConnection, e: &Endpoint) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, url, event_types, active, secret, created_by, created_at, updated_at, company_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(e.id)
    .bind(&e.url)
    .bind(serde_json::to_string(&e.event_types).unwrap_or_else(|_| "[]".into()))
    .bind(e.active)
    .bind(e.secret.expose_secret())
    .bind(&e.created_by)
    .bind(e.created_at)
    .bind(e.updated_at)
    .bind(e.company)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn endpoints(conn: &mut DbConnection) -> StoreResult<Vec<Endpoint>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY id"
    )))
    .fetch_all(conn)
    .await?;
    rows.iter().map(endpoint_from_row).collect()
}

pub(crate) async fn endpoint(conn: &mut DbConnection, id: uuid::Uuid) -> StoreResult<Endpoint> {
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
pub(crate) async fn rotate_secret(
    conn: &mut DbConnection,
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

pub(crate) async fn set_endpoint_active(
    conn: &mut DbConnection,
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

const EVENT_COLUMNS: &str = "seq, id, type, subject_id, network, actor, detail, evidence, occurred_at, created_at, body, dispatched_at";

const DELIVERY_SELECT: &str = "SELECT d.endpoint_id, d.event_seq, e.id AS event_id, e.type, e.created_at AS event_created_at, \
    COALESCE(e.body, '') AS body, d.state, d.attempts, d.due_since, d.next_attempt_at, d.last_attempt_at, d.last_status, \
    d.last_error, d.delivered_at, d.replays FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq";

pub(crate) async fn undispatched_events(
    conn: &mut DbConnection,
    limit: i64,
) -> StoreResult<Vec<OutboxEvent>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM webhook_events WHERE dispatched_at IS NULL ORDER BY seq LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

pub(crate) async fn event_by_id(
    conn: &mut DbConnection,
    id: uuid::Uuid,
) -> StoreResult<OutboxEvent> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM webhook_events WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}

/// Rendered events written by the outbox between `from` and `to` (database clock), oldest first.
pub(crate) async fn events_between(
    conn: &mut DbConnection,
    from: i64,
    to: i64,
    limit: i64,
) -> StoreResult<Vec<OutboxEvent>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS} FROM webhook_events WHERE created_at >= $1 AND created_at < $2 \
         AND dispatched_at IS NOT NULL ORDER BY seq LIMIT $3"
    )))
    .bind(from)
    .bind(to)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Stores rendered bodies and queues deliveries; an event another dispatcher already took is
/// left as it is (its deliveries too).
pub(crate) async fn dispatch(
    conn: &mut DbConnection,
    bodies: &[(i64, String)],
    deliveries: &[(uuid::Uuid, i64)],
    at: i64,
) -> StoreResult<()> {
    let mut taken = std::collections::HashSet::new();
    for (seq, body) in bodies {
        let done = sqlx::query(
            "UPDATE webhook_events SET body = $1, dispatched_at = $2 WHERE seq = $3 AND dispatched_at IS NULL",
        )
        .bind(body)
        .bind(at)
        .bind(seq)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() == 1 {
            taken.insert(*seq);
        }
    }
    let rows: Vec<&(uuid::Uuid, i64)> = deliveries
        .iter()
        .filter(|(_, seq)| taken.contains(seq))
        .collect();
    for chunk in rows.chunks(500) {
        let mut q = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO webhook_deliveries (endpoint_id, event_seq, state, due_since, next_attempt_at) ",
        );
        q.push_values(chunk, |mut b, (endpoint, seq)| {
            b.push_bind(*endpoint)
                .push_bind(*seq)
                .push_bind("pending")
                .push_bind(at)
                .push_bind(at);
        });
        q.push(" ON CONFLICT (endpoint_id, event_seq) DO NOTHING");
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

pub(crate) async fn deliveries(
    conn: &mut DbConnection,
    endpoint: uuid::Uuid,
    state: Option<DeliveryState>,
    after_seq: i64,
    limit: i64,
) -> StoreResult<Vec<Delivery>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{DELIVERY_SELECT} WHERE d.endpoint_id = $1 AND ($2 IS NULL OR d.state = $2) AND d.event_seq > $3 \
         ORDER BY d.event_seq LIMIT $4"
    )))
    .bind(endpoint)
    .bind(state.map(|s| s.as_str()))
    .bind(after_seq)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Records one attempt on a delivery that is still pending (a replay or another worker may
/// have moved it meanwhile: then nothing changes).
pub(crate) async fn record_attempt(conn: &mut DbConnection, o: &AttemptOutcome) -> StoreResult<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, next_attempt_at = $2, last_attempt_at = $3, \
         last_status = $4, last_error = $5, delivered_at = CASE WHEN $1 = 'delivered' THEN $3 ELSE delivered_at END \
         WHERE endpoint_id = $6 AND event_seq = $7 AND state = 'pending'",
    )
    .bind(o.state.as_str())
    .bind(o.next_attempt_at)
    .bind(o.at)
    .bind(o.status.map(i32::from))
    .bind(o.error.as_deref())
    .bind(o.endpoint)
    .bind(o.event_seq)
    .execute(conn)
    .await?;
    Ok(())
}

/// Makes these events due again for `endpoint` (new rows for events it never had); those
/// already pending are left alone. Returns how many became due.
pub(crate) async fn replay(
    conn: &mut DbConnection,
    endpoint: uuid::Uuid,
    seqs: &[i64],
    at: i64,
) -> StoreResult<u64> {
    let mut changed = 0;
    for seq in seqs {
        let done = sqlx::query(
            "INSERT INTO webhook_deliveries (endpoint_id, event_seq, state, due_since, next_attempt_at, replays) \
             VALUES ($1, $2, 'pending', $3, $3, 1) \
             ON CONFLICT (endpoint_id, event_seq) DO UPDATE SET state = 'pending', attempts = 0, due_since = $3, \
             next_attempt_at = $3, last_error = NULL, last_status = NULL, replays = webhook_deliveries.replays + 1 \
             WHERE webhook_deliveries.state <> 'pending'",
        )
        .bind(endpoint)
        .bind(seq)
        .bind(at)
        .execute(&mut *conn)
        .await?;
        changed += done.rows_affected();
    }
    Ok(changed)
}

pub(crate) async fn backlog(conn: &mut DbConnection) -> StoreResult<Backlog> {
    let rows = sqlx::query(
        "SELECT w.id, w.active, \
         (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.endpoint_id = w.id AND d.state = 'pending') AS pending, \
         (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.endpoint_id = w.id AND d.state = 'dead') AS dead, \
         (SELECT MIN(e.created_at) FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq \
          WHERE d.endpoint_id = w.id AND d.state = 'pending') AS oldest \
         FROM webhook_endpoints w ORDER BY w.id",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Backlog::default();
    for r in rows {
        out.endpoints.push(EndpointBacklog::from_row(&r)?);
    }
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM webhook_events WHERE dispatched_at IS NULL",
    )
    .fetch_one(&mut *conn)
    .await?;
    out.undispatched = row.try_get("n")?;
    out.oldest_undispatched_created_at = row.try_get("oldest")?;
    Ok(out)
}

/// Deletes deliveries delivered before `before` and the events left with no delivery that were
/// dispatched before it. Pending and dead-lettered deliveries (and their events) stay.
pub(crate) async fn prune(conn: &mut DbConnection, before: i64) -> StoreResult<(u64, u64)> {
    let deliveries = sqlx::query(
        "DELETE FROM webhook_deliveries WHERE state = 'delivered' AND delivered_at < $1",
    )
    .bind(before)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let events = sqlx::query(
        "DELETE FROM webhook_events WHERE dispatched_at < $1 \
         AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_seq = webhook_events.seq)",
    )
    .bind(before)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok((events, deliveries))
}

#[async_trait]
impl WebhookStore for DbStore {
    async fn create_endpoint(
        &self,
        endpoint: &crate::domain::webhooks::Endpoint,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        webhooks::insert_endpoint(&mut tx, endpoint).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn endpoints(&self) -> StoreResult<Vec<crate::domain::webhooks::Endpoint>> {
        let mut conn = self.pool.acquire().await?;
        webhooks::endpoints(&mut conn).await
    }

    async fn endpoint(&self, id: uuid::Uuid) -> StoreResult<crate::domain::webhooks::Endpoint> {
        let mut conn = self.pool.acquire().await?;
        webhooks::endpoint(&mut conn, id).await
    }

    async fn rotate_endpoint_secret(
        &self,
        id: uuid::Uuid,
        secret: &secrecy::SecretString,
        previous_until: UnixMicros,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        webhooks::rotate_secret(&mut tx, id, secret, previous_until, audit.at).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_endpoint_active(
        &self,
        id: uuid::Uuid,
        active: bool,
        reason: Option<&str>,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        webhooks::set_endpoint_active(&mut tx, id, active, reason, audit.at).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn undispatched_webhook_events(
        &self,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::webhooks::OutboxEvent>> {
        let mut conn = self.pool.acquire().await?;
        webhooks::undispatched_events(&mut conn, limit).await
    }

    async fn dispatch_webhook_events(
        &self,
        bodies: &[(i64, String)],
        deliveries: &[(uuid::Uuid, i64)],
        at: UnixMicros,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        webhooks::dispatch(&mut tx, bodies, deliveries, at).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn webhook_event(
        &self,
        id: uuid::Uuid,
    ) -> StoreResult<crate::domain::webhooks::OutboxEvent> {
        let mut conn = self.pool.acquire().await?;
        webhooks::event_by_id(&mut conn, id).await
    }

    async fn webhook_events_between(
        &self,
        from: UnixMicros,
        to: UnixMicros,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::webhooks::OutboxEvent>> {
        let mut conn = self.pool.acquire().await?;
        webhooks::events_between(&mut conn, from, to, limit).await
    }

    async fn webhook_deliveries(
        &self,
        endpoint: uuid::Uuid,
        state: Option<crate::domain::webhooks::DeliveryState>,
        after_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::webhooks::Delivery>> {
        let mut conn = self.pool.acquire().await?;
        webhooks::deliveries(&mut conn, endpoint, state, after_seq, limit).await
    }

    async fn record_webhook_attempts(
        &self,
        outcomes: &[crate::domain::webhooks::AttemptOutcome],
    ) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let (_writing, mut tx) = self.begin_write().await?;
        for outcome in outcomes {
            webhooks::record_attempt(&mut tx, outcome).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn replay_webhook_events(
        &self,
        endpoint: uuid::Uuid,
        seqs: &[i64],
        audit: &AuditRecord,
    ) -> StoreResult<u64> {
        let (_writing, mut tx) = self.begin_write().await?;
        let changed = webhooks::replay(&mut tx, endpoint, seqs, audit.at).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(changed)
    }

    async fn prune_webhooks(&self, before: UnixMicros) -> StoreResult<(u64, u64)> {
        let (_writing, mut tx) = self.begin_write().await?;
        let pruned = webhooks::prune(&mut tx, before).await?;
        tx.commit().await?;
        Ok(pruned)
    }

    async fn webhook_backlog(&self) -> StoreResult<crate::domain::webhooks::Backlog> {
        let mut conn = self.pool.acquire().await?;
        webhooks::backlog(&mut conn).await
    }
}
