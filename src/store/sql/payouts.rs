//! Payouts, their chunks, attempts and events as rows, on both databases.

use super::*;

pub(crate) const PAYOUT_COLUMNS: &str = "id, account_id, network, asset, destination, amount, reference, metadata, state, \
     initial_state, created_by, hold_id, created_at, updated_at, cancel_reason, cancel_by";

pub(crate) async fn insert_event(
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

pub(crate) async fn chunk_payout(conn: &mut DbConnection, chunk: ChunkId) -> StoreResult<Uuid> {
    Ok(
        sqlx::query_scalar("SELECT payout_id FROM payout_chunks WHERE id = $1")
            .bind(chunk.0)
            .fetch_one(conn)
            .await?,
    )
}

pub(crate) fn payout_from_row(row: &DbRow) -> StoreResult<Payout> {
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

pub(crate) fn attempt_from_row(r: &DbRow) -> StoreResult<Attempt> {
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

pub(crate) async fn chunk_attempts(
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

pub(crate) async fn load_payout(
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

pub(crate) async fn attach_chunks(
    conn: &mut DbConnection,
    payouts: &mut [Payout],
) -> StoreResult<()> {
    let ids: Vec<Uuid> = payouts.iter().map(|p| p.id.0).collect();
    let index: std::collections::HashMap<Uuid, usize> =
        ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut qb = QueryBuilder::new(
            "SELECT id, payout_id, idx, amount, state FROM payout_chunks WHERE payout_id",
        );
        any_of(&mut qb, chunk);
        qb.push(" ORDER BY payout_id, idx");
        for row in qb.build().fetch_all(&mut *conn).await? {
            let payout: Uuid = row.try_get("payout_id")?;
            let state: String = row.try_get("state")?;
            let Some(&i) = index.get(&payout) else {
                continue;
            };
            payouts[i].chunks.push(Chunk {
                id: ChunkId(row.try_get("id")?),
                index: u32::try_from(row.try_get::<i32, _>("idx")?).unwrap_or(u32::MAX),
                amount: amount_from(&row, "amount")?,
                state: ChunkState::parse(&state)
                    .ok_or_else(|| StoreError::Invariant(format!("chunk state {state:?}")))?,
                attempts: Vec::new(),
            });
        }
    }
    Ok(())
}

pub(crate) async fn load_in_flight(
    conn: &mut DbConnection,
    network: &str,
    settled_from: Option<u64>,
) -> StoreResult<Vec<InFlight>> {
    let states = match settled_from {
        None => "c.state IN ('signed', 'broadcast', 'mined')",
        Some(_) => "c.state IN ('confirmed', 'failed', 'cancelled') AND c.mined_block >= $2",
    };
    let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT c.id, c.payout_id, p.hold_id, p.network, p.asset, p.destination, c.amount, c.state, c.wallet, c.nonce, \
         c.mined_hash, c.mined_block, c.mined_block_hash, c.mined_success, c.mined_fee, p.cancel_reason FROM payout_chunks c \
         JOIN payouts p ON p.id = c.payout_id WHERE p.network = $1 AND {states} \
         ORDER BY c.wallet, c.nonce",
    )))
    .bind(network);
    if let Some(block) = settled_from {
        query = query.bind(block as i64);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let state: String = r.try_get("state")?;
        let mined_hash: Option<Vec<u8>> = r.try_get("mined_hash")?;
        let mined = match mined_hash {
            Some(h) => Some(Mined {
                hash: hash32(&h)?,
                block: r.try_get::<i64, _>("mined_block")? as u64,
                block_hash: hash32(&r.try_get::<Vec<u8>, _>("mined_block_hash")?)?,
                success: r.try_get("mined_success")?,
                fee_wei: opt_amount_from(r, "mined_fee")?.unwrap_or(0) as u128,
            }),
            None => None,
        };
        out.push(InFlight {
            chunk: ChunkId(r.try_get("id")?),
            payout: PayoutId(r.try_get("payout_id")?),
            hold: HoldId(r.try_get("hold_id")?),
            asset: AssetKey::new(
                r.try_get::<String, _>("network")?,
                r.try_get::<String, _>("asset")?,
            ),
            destination: r.try_get("destination")?,
            amount: amount_from(r, "amount")?,
            state: ChunkState::parse(&state)
                .ok_or_else(|| StoreError::Invariant(format!("chunk state {state:?}")))?,
            wallet: r.try_get("wallet")?,
            nonce: r.try_get::<i64, _>("nonce")? as u64,
            mined,
            cancel_requested: r.try_get::<Option<String>, _>("cancel_reason")?.is_some(),
            attempts: Vec::new(),
        });
    }
    let index: std::collections::HashMap<Uuid, usize> = out
        .iter()
        .enumerate()
        .map(|(i, f)| (f.chunk.0, i))
        .collect();
    let ids: Vec<Uuid> = out.iter().map(|f| f.chunk.0).collect();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut qb = QueryBuilder::new(
            "SELECT id, kind, chunk_id, nonce, hash, raw, max_fee_per_gas, max_priority_fee_per_gas, gas_limit, created_at, \
             broadcast_at, head_at_broadcast FROM tx_attempts WHERE chunk_id",
        );
        any_of(&mut qb, chunk);
        qb.push(" ORDER BY created_at, id");
        for r in qb.build().fetch_all(&mut *conn).await? {
            let Some(&i) = index.get(&r.try_get::<Uuid, _>("chunk_id")?) else {
                continue;
            };
            out[i].attempts.push(attempt_from_row(&r)?);
        }
    }
    Ok(out)
}

pub(crate) async fn insert_payout(
    conn: &mut DbConnection,
    p: &NewPayout,
    hold: HoldId,
    at: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO payouts (id, account_id, network, asset, destination, amount, reference, metadata, state, \
         initial_state, created_by, hold_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(p.id.0)
    .bind(p.account.0)
    .bind(&p.asset.network)
    .bind(&p.asset.code)
    .bind(&p.destination)
    .bind(amount_to_db(p.amount))
    .bind(&p.reference)
    .bind(p.metadata.as_ref().map(|m| m.to_string()))
    .bind(p.state.as_str())
    .bind(p.state.as_str())
    .bind(&p.created_by)
    .bind(hold.0)
    .bind(at)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    // A few rows each: one multi-row VALUES statement on either database.
    if !p.chunks.is_empty() {
        let mut qb = QueryBuilder::<Db>::new(
            "INSERT INTO payout_chunks (id, payout_id, idx, amount, state, updated_at) ",
        );
        qb.push_values(p.chunks.iter().enumerate(), |mut row, (i, amount)| {
            row.push_bind(ChunkId::new().0)
                .push_bind(p.id.0)
                .push_bind(i32::try_from(i).unwrap_or(i32::MAX))
                .push_bind(amount_to_db(*amount))
                .push_bind(ChunkState::Queued.as_str())
                .push_bind(at);
        });
        qb.build().execute(&mut *conn).await?;
    }
    if !p.events.is_empty() {
        let mut qb =
            QueryBuilder::<Db>::new("INSERT INTO payout_events (id, payout_id, at, kind, detail) ");
        qb.push_values(&p.events, |mut row, e| {
            row.push_bind(Uuid::now_v7())
                .push_bind(p.id.0)
                .push_bind(at)
                .push_bind(e.kind.clone())
                .push_bind(e.detail.clone());
        });
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

pub(crate) async fn insert_attempt(
    conn: &mut DbConnection,
    chunk: ChunkId,
    wallet: &str,
    a: &Attempt,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO tx_attempts (id, chunk_id, wallet, nonce, hash, raw, max_fee_per_gas, max_priority_fee_per_gas, \
         gas_limit, created_at, kind) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(a.id)
    .bind(chunk.0)
    .bind(wallet)
    .bind(a.nonce as i64)
    .bind(a.hash.as_slice())
    .bind(a.raw.as_slice())
    .bind(amount_to_db(a.max_fee_per_gas as i128))
    .bind(amount_to_db(a.max_priority_fee_per_gas as i128))
    .bind(a.gas_limit as i64)
    .bind(a.created_at)
    .bind(a.kind.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// The payout of each chunk a `RETURNING id, payout_id` gave back.
pub(crate) fn payouts_of(rows: &[DbRow]) -> StoreResult<std::collections::HashMap<Uuid, Uuid>> {
    rows.iter()
        .map(|row| Ok((row.try_get("id")?, row.try_get("payout_id")?)))
        .collect()
}

/// Payout events at `at`, each `(payout, kind, detail)`, in one statement.
pub(crate) async fn insert_events(
    conn: &mut DbConnection,
    at: i64,
    events: impl Iterator<Item = (Uuid, &'static str, String)>,
) -> StoreResult<()> {
    let (mut payouts, mut kinds, mut details) = (Vec::new(), Vec::new(), Vec::new());
    for (payout, kind, detail) in events {
        payouts.push(payout);
        kinds.push(kind);
        details.push(detail);
    }
    let rows = BulkRows::new()
        .col("id", payouts.iter().map(|_| Uuid::now_v7()))
        .col("payout_id", payouts)
        .col("at", kinds.iter().map(|_| at))
        .col("kind", kinds)
        .col("detail", details);
    let insert = format!("INSERT INTO payout_events ({}) ", rows.names());
    bulk(conn, &insert, rows, "").await?;
    Ok(())
}
