//! Canary runs, the configuration freeze and overdue timers, on both databases.

use super::*;
use crate::domain::operations::{CanaryResult, CanaryRun, ConfigFreeze};

fn canary_run(r: &DbRow) -> StoreResult<CanaryRun> {
    let result: Option<String> = r.try_get("result")?;
    Ok(CanaryRun {
        id: r.try_get("id")?,
        network: r.try_get("network")?,
        payout: PayoutId(r.try_get("payout_id")?),
        started_by: r.try_get("started_by")?,
        started_at: r.try_get("started_at")?,
        result: result
            .map(|t| {
                CanaryResult::parse(&t)
                    .ok_or_else(|| StoreError::Invariant(format!("canary result {t:?}")))
            })
            .transpose()?,
        reason: r.try_get("reason")?,
        finished_at: r.try_get("finished_at")?,
    })
}

pub(crate) async fn insert_canary_run(conn: &mut DbConnection, run: &CanaryRun) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO canary_runs (id, network, payout_id, started_by, started_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(run.id)
    .bind(&run.network)
    .bind(run.payout.0)
    .bind(&run.started_by)
    .bind(run.started_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn finish_canary_run(
    conn: &mut DbConnection,
    id: Uuid,
    result: CanaryResult,
    reason: &str,
    at: UnixMicros,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE canary_runs SET result = $1, reason = $2, finished_at = $3 WHERE id = $4 AND result IS NULL",
    )
    .bind(result.as_str())
    .bind(reason)
    .bind(at)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn canary_runs(
    conn: &mut DbConnection,
    network: &str,
    limit: i64,
) -> StoreResult<Vec<CanaryRun>> {
    let rows = sqlx::query(
        "SELECT * FROM canary_runs WHERE network = $1 ORDER BY started_at DESC, id DESC LIMIT $2",
    )
    .bind(network)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(canary_run).collect()
}

pub(crate) async fn config_freeze(conn: &mut DbConnection) -> StoreResult<Option<ConfigFreeze>> {
    let row = sqlx::query("SELECT reason, actor, since, until FROM config_freeze WHERE id = 1")
        .fetch_optional(conn)
        .await?;
    row.map(|r| {
        Ok(ConfigFreeze {
            reason: r.try_get("reason")?,
            actor: r.try_get("actor")?,
            since: r.try_get("since")?,
            until: r.try_get("until")?,
        })
    })
    .transpose()
}

pub(crate) async fn set_config_freeze(
    conn: &mut DbConnection,
    freeze: Option<&ConfigFreeze>,
) -> StoreResult<()> {
    match freeze {
        Some(f) => {
            sqlx::query(
                "INSERT INTO config_freeze (id, reason, actor, since, until) VALUES (1, $1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET reason = excluded.reason, actor = excluded.actor, since = excluded.since, until = excluded.until",
            )
            .bind(&f.reason)
            .bind(&f.actor)
            .bind(f.since)
            .bind(f.until)
            .execute(conn)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM config_freeze WHERE id = 1")
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

/// Deal timers still pending and trust sessions still open whose moment was before `before`:
/// how many, and the earliest of those moments.
pub(crate) async fn overdue(
    conn: &mut DbConnection,
    before: UnixMicros,
) -> StoreResult<(i64, Option<UnixMicros>)> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, MIN(at) AS oldest FROM ( \
           SELECT due_at AS at FROM timers WHERE state = 'pending' AND due_at < $1 \
           UNION ALL SELECT cutoff_at AS at FROM trust_sessions WHERE state = 'open' AND cutoff_at < $1) AS overdue",
    )
    .bind(before)
    .fetch_one(conn)
    .await?;
    Ok((row.try_get("n")?, row.try_get("oldest")?))
}
