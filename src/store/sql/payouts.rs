//! Payouts, their chunks, attempts and events as rows, on both databases.

use super::*;

pub(super) async fn insert_event(
    conn: &mut DbConnection,
    payout: PayoutId,
    at: i64,
    kind: &str,
    detail: &str,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO payout_events (id, payout_id, at, kind, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(payout.0)
    .bind(at)
    .bind(kind)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn chunk_payout(conn: &mut DbConnection, chunk: ChunkId) -> StoreResult<Uuid> {
    Ok(
        sqlx::query_scalar("SELECT payout_id FROM payout_chunks WHERE id = $1")
            .bind(chunk.0)
            .fetch_one(conn)
            .await?,
    )
}

pub(super) fn payout_from_row(row: &DbRow) -> StoreResult<Payout> {
    let state = |col: &str| -> StoreResult<PayoutState> {
        let text: String = row.try_get(col)?;
        PayoutState::parse(&text)
            .ok_or_else(|| StoreError::Invariant(format!("payout state {text:?}")))
    };
    let metadata: Option<String> = row.try_get("metadata")?;
    let cancel_reason: Option<String> = row.try_get("cancel_reason")?;
    let cancel_by: Option<String> = row.try_get("cancel_by")?;
    Ok(Payout {
        id: PayoutId(row.try_get("id")?),
        account: AccountId(row.try_get("account_id")?),
        asset: AssetKey::new(
            row.try_get::<String, _>("network")?,
            row.try_get::<String, _>("asset")?,
        ),
        destination: row.try_get("destination")?,
        amount: units(row.try_get("amount")?)?,
        reference: row.try_get("reference")?,
        metadata: metadata
            .map(|m| serde_json::from_str(&m))
            .transpose()
            .map_err(|e| StoreError::Invariant(format!("payout metadata: {e}")))?,
        state: state("state")?,
        initial_state: state("initial_state")?,
        created_by: row.try_get("created_by")?,
        hold: HoldId(row.try_get("hold_id")?),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        chunks: Vec::new(),
        events: Vec::new(),
        cancel: cancel_reason.map(|reason| CancelRequest {
            reason,
            by: cancel_by.unwrap_or_default(),
        }),
    })
}

pub(super) fn attempt_from_row(r: &DbRow) -> StoreResult<Attempt> {
    let kind: String = r.try_get("kind")?;
    Ok(Attempt {
        id: r.try_get("id")?,
        kind: AttemptKind::parse(&kind)
            .ok_or_else(|| StoreError::Invariant(format!("attempt kind {kind:?}")))?,
        hash: hash32(&r.try_get::<Vec<u8>, _>("hash")?)?,
        raw: r.try_get("raw")?,
        nonce: r.try_get::<i64, _>("nonce")? as u64,
        max_fee_per_gas: units(r.try_get("max_fee_per_gas")?)? as u128,
        max_priority_fee_per_gas: units(r.try_get("max_priority_fee_per_gas")?)? as u128,
        gas_limit: r.try_get::<i64, _>("gas_limit")? as u64,
        created_at: r.try_get("created_at")?,
        broadcast_at: r.try_get("broadcast_at")?,
        head_at_broadcast: r
            .try_get::<Option<i64>, _>("head_at_broadcast")?
            .map(|h| h as u64),
    })
}

pub(super) async fn chunk_attempts(
    conn: &mut DbConnection,
    chunk: ChunkId,
) -> StoreResult<Vec<Attempt>> {
    let rows = sqlx::query(
        "SELECT id, kind, nonce, hash, raw, max_fee_per_gas, max_priority_fee_per_gas, gas_limit, created_at, broadcast_at, \
         head_at_broadcast FROM tx_attempts WHERE chunk_id = $1 ORDER BY created_at, id",
    )
    .bind(chunk.0)
    .fetch_all(conn)
    .await?;
    rows.iter().map(attempt_from_row).collect()
}

pub(super) async fn load_payout(
    conn: &mut DbConnection,
    column: &'static str,
    id: Uuid,
) -> StoreResult<Payout> {
    let sql = format!("SELECT {PAYOUT_COLUMNS} FROM payouts WHERE {column} = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    let mut payouts = vec![payout_from_row(&row)?];
    attach_chunks(conn, &mut payouts).await?;
    let mut payout = payouts.pop().ok_or(StoreError::NotFound)?;
    for c in &mut payout.chunks {
        c.attempts = chunk_attempts(conn, c.id).await?;
    }
    let rows =
        sqlx::query("SELECT at, kind, detail FROM payout_events WHERE payout_id = $1 ORDER BY id")
            .bind(payout.id.0)
            .fetch_all(&mut *conn)
            .await?;
    for row in rows {
        payout.events.push(PayoutEvent {
            at: row.try_get("at")?,
            kind: row.try_get("kind")?,
            detail: row.try_get("detail")?,
        });
    }
    Ok(payout)
}
