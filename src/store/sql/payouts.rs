//! Payouts, their chunks, attempts and events as rows, on both databases.

use super::*;
use crate::domain::tiers::Used;

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
        state: row.try_get("state")?,
        initial_state: row.try_get("initial_state")?,
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
    Ok(Attempt {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
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
        batch: match (
            r.try_get::<Option<i32>, _>("batch_index")?,
            r.try_get::<Option<i32>, _>("batch_size")?,
        ) {
            (Some(index), Some(size)) => Some(BatchSlot {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                size: u32::try_from(size).unwrap_or(u32::MAX),
            }),
            _ => None,
        },
    })
}

/// An attempt's columns as `attempt_from_row` reads them, over `ATTEMPTS_WITH_BATCHES`.
const ATTEMPT_COLUMNS: &str = "a.id, a.kind, a.nonce, a.hash, COALESCE(b.raw, a.raw) AS raw, a.max_fee_per_gas, \
     a.max_priority_fee_per_gas, a.gas_limit, a.created_at, a.broadcast_at, a.head_at_broadcast, a.batch_index, a.batch_size";

/// Attempts with their batch's signed bytes, which batched attempts keep only in
/// `signed_batches`.
const ATTEMPTS_WITH_BATCHES: &str =
    "tx_attempts a LEFT JOIN signed_batches b ON a.batch_size IS NOT NULL AND b.hash = a.hash";

/// Stores each batched transaction's signed bytes once (a replay stores nothing).
async fn store_signed_bytes<'a>(
    conn: &mut DbConnection,
    attempts: impl Iterator<Item = &'a Attempt>,
) -> StoreResult<()> {
    let mut seen = std::collections::HashSet::new();
    let batches: Vec<&Attempt> = attempts
        .filter(|a| a.batch.is_some() && seen.insert(a.hash))
        .collect();
    if batches.is_empty() {
        return Ok(());
    }
    let rows = BulkRows::new()
        .col("hash", batches.iter().map(|a| Some(a.hash.to_vec())))
        .col("raw", batches.iter().map(|a| Some(a.raw.clone())));
    let insert = format!("INSERT INTO signed_batches ({}) ", rows.names());
    bulk(conn, &insert, rows, " ON CONFLICT DO NOTHING").await?;
    Ok(())
}

/// The bytes an attempt row keeps: a batched attempt's are in `signed_batches`.
fn own_raw(a: &Attempt) -> Vec<u8> {
    if a.batch.is_some() {
        Vec::new()
    } else {
        a.raw.clone()
    }
}

pub(crate) async fn chunk_attempts(
    conn: &mut DbConnection,
    chunk: ChunkId,
) -> StoreResult<Vec<Attempt>> {
    let rows = sqlx::query(
        sqlx::AssertSqlSafe(format!(
            "SELECT {ATTEMPT_COLUMNS} FROM {ATTEMPTS_WITH_BATCHES} WHERE a.chunk_id = $1 ORDER BY a.created_at, a.id"
        )),
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
            let Some(&i) = index.get(&payout) else {
                continue;
            };
            payouts[i].chunks.push(Chunk {
                id: ChunkId(row.try_get("id")?),
                index: u32::try_from(row.try_get::<i32, _>("idx")?).unwrap_or(u32::MAX),
                amount: amount_from(&row, "amount")?,
                state: row.try_get("state")?,
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
            state: r.try_get("state")?,
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
        let mut qb = QueryBuilder::new(format!(
            "SELECT a.chunk_id, {ATTEMPT_COLUMNS} FROM {ATTEMPTS_WITH_BATCHES} WHERE a.chunk_id"
        ));
        any_of(&mut qb, chunk);
        qb.push(" ORDER BY a.created_at, a.id");
        for r in qb.build().fetch_all(&mut *conn).await? {
            let Some(&i) = index.get(&r.try_get::<Uuid, _>("chunk_id")?) else {
                continue;
            };
            let attempt = attempt_from_row(&r)?;
            // A batch this chunk left (reverted, or cancelled by a batch-mate) is history:
            // its receipt must never be taken for the chunk's present nonce.
            if attempt.batch.is_some() && attempt.nonce != out[i].nonce {
                continue;
            }
            out[i].attempts.push(attempt);
        }
    }
    Ok(out)
}

/// Writes one new payout in the state the rolling four-eyes reading gives it (its own state
/// when it needs none), with the reading's event when it waits for an approver.
pub(crate) async fn insert_payout(
    conn: &mut DbConnection,
    p: &NewPayout,
    hold: HoldId,
    at: i64,
) -> StoreResult<PayoutState> {
    let (state, rolling_event) = rolling_approval(conn, p, at).await?;
    let mut decided = p.clone();
    decided.state = state;
    decided.events.extend(rolling_event);
    insert_payouts(conn, &[(&decided, hold, at)]).await?;
    Ok(state)
}

/// Writes new payouts in the states they say, with their chunks and events: three multi-row
/// statements for a whole run of them (a ledger batch's accepted requests).
pub(crate) async fn insert_payouts(
    conn: &mut DbConnection,
    run: &[(&NewPayout, HoldId, i64)],
) -> StoreResult<()> {
    if run.is_empty() {
        return Ok(());
    }
    let rows = BulkRows::new()
        .col("id", run.iter().map(|(p, _, _)| p.id.0))
        .col("account_id", run.iter().map(|(p, _, _)| p.account.0))
        .col(
            "network",
            run.iter().map(|(p, _, _)| p.asset.network.as_str()),
        )
        .col("asset", run.iter().map(|(p, _, _)| p.asset.code.as_str()))
        .col(
            "destination",
            run.iter().map(|(p, _, _)| p.destination.as_str()),
        )
        .col("amount", run.iter().map(|(p, _, _)| p.amount))
        .col("reference", run.iter().map(|(p, _, _)| p.reference.clone()))
        .col(
            "metadata",
            run.iter()
                .map(|(p, _, _)| p.metadata.as_ref().map(|m| m.to_string())),
        )
        .col("state", run.iter().map(|(p, _, _)| p.state.as_str()))
        .col(
            "initial_state",
            run.iter().map(|(p, _, _)| p.state.as_str()),
        )
        .col(
            "created_by",
            run.iter().map(|(p, _, _)| p.created_by.as_str()),
        )
        .col("hold_id", run.iter().map(|(_, h, _)| h.0))
        .col("created_at", run.iter().map(|(_, _, at)| *at))
        .col("updated_at", run.iter().map(|(_, _, at)| *at));
    let insert = format!("INSERT INTO payouts ({}) ", rows.names());
    bulk(conn, &insert, rows, "").await?;
    let chunks: Vec<(PayoutId, i64, i128, i64)> = run
        .iter()
        .flat_map(|(p, _, at)| {
            p.chunks
                .iter()
                .enumerate()
                .map(|(i, amount)| (p.id, i as i64, *amount, *at))
        })
        .collect();
    let rows = BulkRows::new()
        .col("id", chunks.iter().map(|_| ChunkId::new().0))
        .col("payout_id", chunks.iter().map(|c| c.0.0))
        .col("idx", chunks.iter().map(|c| c.1))
        .col("amount", chunks.iter().map(|c| c.2))
        .col("state", chunks.iter().map(|_| ChunkState::Queued.as_str()))
        .col("updated_at", chunks.iter().map(|c| c.3));
    let insert = format!("INSERT INTO payout_chunks ({}) ", rows.names());
    bulk(conn, &insert, rows, "").await?;
    let events: Vec<(PayoutId, i64, &PayoutEvent)> = run
        .iter()
        .flat_map(|(p, _, at)| p.events.iter().map(|e| (p.id, *at, e)))
        .collect();
    let rows = BulkRows::new()
        .col("id", events.iter().map(|_| Uuid::now_v7()))
        .col("payout_id", events.iter().map(|e| e.0.0))
        .col("at", events.iter().map(|e| e.1))
        .col("kind", events.iter().map(|e| e.2.kind.as_str()))
        .col("detail", events.iter().map(|e| e.2.detail.as_str()));
    let insert = format!("INSERT INTO payout_events ({}) ", rows.names());
    bulk(conn, &insert, rows, "").await?;
    Ok(())
}

/// Whether `p`'s starting state needs the rolling-approval reading (`insert_payout` alone).
pub(crate) fn needs_rolling_reading(p: &NewPayout) -> bool {
    p.rolling.is_some() && p.state == PayoutState::Queued
}

/// The state `p` starts in: `RollingApproval::decide` over the company's payouts that needed no
/// approval in the 24 hours before `at`, read under a lock on the company's row so concurrent
/// payouts of one company count each other.
async fn rolling_approval(
    conn: &mut DbConnection,
    p: &NewPayout,
    at: i64,
) -> StoreResult<(PayoutState, Option<PayoutEvent>)> {
    let Some(rolling) = p.rolling.filter(|_| needs_rolling_reading(p)) else {
        return Ok((p.state, None));
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM companies WHERE id = $1{FOR_UPDATE}"
    )))
    .bind(rolling.company)
    .fetch_optional(&mut *conn)
    .await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} AS total FROM payouts p JOIN accounts a ON a.id = p.account_id \
         WHERE a.company_id = $1 AND p.network = $2 AND p.asset = $3 AND p.initial_state = 'queued' \
         AND p.created_at > $4",
        sum_amount("p.amount")
    )))
    .bind(rolling.company)
    .bind(&p.asset.network)
    .bind(&p.asset.code)
    .bind(at - 86_400_000_000)
    .fetch_one(&mut *conn)
    .await?;
    let before = opt_amount_from(&row, "total")?.unwrap_or(0);
    Ok(match rolling.decide(before, p) {
        Some(waits) => (
            PayoutState::PendingApproval,
            Some(PayoutEvent { at, ..waits }),
        ),
        None => (PayoutState::Queued, None),
    })
}

/// What `company`'s payouts in `asset` reserved since `month_start`, and since `day_start`
/// within it: a payout that ended cancelled, rejected or failed counts only its confirmed
/// chunks, as the rest went back to the account.
pub(crate) async fn company_usage(
    conn: &mut DbConnection,
    company: Uuid,
    asset: &AssetKey,
    day_start: i64,
    month_start: i64,
) -> StoreResult<Used> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} AS day, {} AS month FROM (SELECT p.created_at, CASE WHEN p.state IN ('cancelled', 'rejected', 'failed') \
         THEN (SELECT {} FROM payout_chunks c WHERE c.payout_id = p.id AND c.state = 'confirmed') ELSE p.amount END AS used \
         FROM payouts p JOIN accounts a ON a.id = p.account_id \
         WHERE a.company_id = $1 AND p.network = $2 AND p.asset = $3 AND p.created_at >= $4) AS u",
        sum_amount("CASE WHEN u.created_at >= $5 THEN u.used END"),
        sum_amount("u.used"),
        sum_amount("c.amount"),
    )))
    .bind(company)
    .bind(&asset.network)
    .bind(&asset.code)
    .bind(month_start)
    .bind(day_start)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Used {
        day: opt_amount_from(&row, "day")?.unwrap_or(0),
        month: opt_amount_from(&row, "month")?.unwrap_or(0),
    })
}

/// Moves `wallet`'s next nonce from `first` to `next` under its row lock (a second writer for
/// the wallet waits here, then finds the nonce moved), if `fence` is still the network's
/// engine lease: `Conflict` otherwise, and the caller's transaction writes nothing.
async fn take_nonces(
    conn: &mut DbConnection,
    network: &str,
    wallet: &str,
    fence: u64,
    first: u64,
    next: u64,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO wallet_nonces (network, address, next_nonce) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(network)
        .bind(wallet)
        .bind(first as i64)
        .execute(&mut *conn)
        .await?;
    let stored: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT next_nonce FROM wallet_nonces WHERE network = $1 AND address = $2{FOR_UPDATE}"
    )))
    .bind(network)
    .bind(wallet)
    .fetch_one(&mut *conn)
    .await?;
    if stored as u64 != first {
        return Err(StoreError::Conflict(
            ConflictKind::NonceMoved,
            format!("{wallet} next nonce is {stored}, not {first}"),
        ));
    }
    let current: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT fence FROM engine_leases WHERE network = $1{FOR_UPDATE}"
    )))
    .bind(network)
    .fetch_optional(&mut *conn)
    .await?;
    if current != Some(fence as i64) {
        return Err(StoreError::Conflict(
            ConflictKind::Fenced,
            format!("the engine lease on {network} is at fence {current:?}, not {fence}"),
        ));
    }
    sqlx::query("UPDATE wallet_nonces SET next_nonce = $3 WHERE network = $1 AND address = $2")
        .bind(network)
        .bind(wallet)
        .bind(next as i64)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) async fn insert_attempt(
    conn: &mut DbConnection,
    chunk: ChunkId,
    wallet: &str,
    a: &Attempt,
) -> StoreResult<()> {
    store_signed_bytes(&mut *conn, std::iter::once(a)).await?;
    sqlx::query(
        "INSERT INTO tx_attempts (id, chunk_id, wallet, nonce, hash, raw, max_fee_per_gas, max_priority_fee_per_gas, \
         gas_limit, created_at, kind, batch_index, batch_size) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(a.id)
    .bind(chunk.0)
    .bind(wallet)
    .bind(a.nonce as i64)
    .bind(a.hash.as_slice())
    .bind(own_raw(a))
    .bind(amount_to_db(a.max_fee_per_gas as i128))
    .bind(amount_to_db(a.max_priority_fee_per_gas as i128))
    .bind(a.gas_limit as i64)
    .bind(a.created_at)
    .bind(a.kind.as_str())
    .bind(a.batch.map(|b| i64::from(b.index)))
    .bind(a.batch.map(|b| i64::from(b.size)))
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

#[async_trait]
impl PayoutStore for DbStore {
    async fn get_payout(&self, id: PayoutId) -> StoreResult<Payout> {
        let mut conn = self.pool.acquire().await?;
        load_payout(&mut conn, "id", id.0).await
    }

    async fn payout_for_hold(&self, hold: HoldId) -> StoreResult<Payout> {
        let mut conn = self.pool.acquire().await?;
        load_payout(&mut conn, "hold_id", hold.0).await
    }

    async fn list_payouts(&self, f: &PayoutFilter) -> StoreResult<Vec<Payout>> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PAYOUT_COLUMNS} FROM payouts WHERE (CAST($1 AS TEXT) IS NULL OR state = $1) \
             AND (CAST($2 AS UUID) IS NULL OR account_id = $2) AND (CAST($3 AS TEXT) IS NULL OR network = $3) \
             AND (CAST($4 AS UUID) IS NULL OR id > $4) \
             AND (CAST($6 AS UUID) IS NULL OR account_id IN (SELECT id FROM accounts WHERE company_id = $6)) \
             ORDER BY id LIMIT $5"
    )))
    .bind(f.state.map(|s| s.as_str()))
    .bind(f.account.map(|a| a.0))
    .bind(&f.network)
    .bind(f.after.map(|p| p.0))
    .bind(f.limit)
    .bind(f.company)
    .fetch_all(&mut *conn)
    .await?;
        let mut payouts = rows
            .iter()
            .map(payout_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        attach_chunks(&mut conn, &mut payouts).await?;
        Ok(payouts)
    }

    async fn payouts_by_id(&self, ids: &[PayoutId]) -> StoreResult<Vec<Payout>> {
        let mut conn = self.pool.acquire().await?;
        let ids: Vec<Uuid> = ids.iter().map(|p| p.0).collect();
        let mut payouts = Vec::with_capacity(ids.len());
        for part in ids.chunks(ROWS_PER_STATEMENT) {
            let mut qb =
                QueryBuilder::new(format!("SELECT {PAYOUT_COLUMNS} FROM payouts WHERE id"));
            any_of(&mut qb, part);
            for row in qb.build().fetch_all(&mut *conn).await? {
                payouts.push(payout_from_row(&row)?);
            }
        }
        attach_chunks(&mut conn, &mut payouts).await?;
        Ok(payouts)
    }

    async fn next_nonce(&self, network: &str, wallet: &str) -> StoreResult<Option<u64>> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT next_nonce FROM wallet_nonces WHERE network = $1 AND address = $2",
        )
        .bind(network)
        .bind(wallet)
        .fetch_optional(&self.pool)
        .await?;
        Ok(n.map(|n| n as u64))
    }

    async fn queued_chunks(&self, network: &str, limit: i64) -> StoreResult<Vec<ChunkWork>> {
        let rows = sqlx::query(
            "SELECT c.id, c.payout_id, p.account_id, p.hold_id, c.idx, p.created_at, p.network, p.asset, p.destination, c.amount, \
             c.single_only FROM payout_chunks c \
             JOIN payouts p ON p.id = c.payout_id WHERE c.state = 'queued' AND p.network = $1 \
             AND p.state IN ('queued', 'broadcast') \
             AND NOT EXISTS (SELECT 1 FROM asset_freezes f WHERE f.network = p.network AND f.asset = p.asset) \
             AND NOT EXISTS (SELECT 1 FROM destination_allowlists l WHERE l.account_id = p.account_id AND l.enforced \
                 AND NOT EXISTS (SELECT 1 FROM allowed_destinations d WHERE d.account_id = p.account_id \
                     AND d.network = p.network AND d.address = p.destination)) \
             ORDER BY c.id LIMIT $2",
        )
        .bind(network)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ChunkWork {
                    chunk: ChunkId(r.try_get("id")?),
                    payout: PayoutId(r.try_get("payout_id")?),
                    account: AccountId(r.try_get("account_id")?),
                    hold: HoldId(r.try_get("hold_id")?),
                    index: u32::try_from(r.try_get::<i32, _>("idx")?).unwrap_or(u32::MAX),
                    accepted_at: r.try_get("created_at")?,
                    asset: AssetKey::new(
                        r.try_get::<String, _>("network")?,
                        r.try_get::<String, _>("asset")?,
                    ),
                    destination: r.try_get("destination")?,
                    amount: units(r.try_get("amount")?)?,
                    single_only: r.try_get("single_only")?,
                })
            })
            .collect()
    }

    async fn record_signed(
        &self,
        network: &str,
        wallet: &str,
        fence: u64,
        first_nonce: u64,
        signed: &[(ChunkId, Attempt)],
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        // A batched transaction's chunks share one nonce: the next one is past the highest.
        let next = signed
            .iter()
            .map(|(_, a)| a.nonce + 1)
            .max()
            .unwrap_or(first_nonce);
        take_nonces(&mut tx, network, wallet, fence, first_nonce, next).await?;
        // Safe-mode entered after this round was planned still stops it from being stored,
        // and so from ever being broadcast.
        let safe: Option<String> =
            sqlx::query_scalar("SELECT reason FROM network_safe_mode WHERE network = $1")
                .bind(network)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(reason) = safe {
            return Err(StoreError::Conflict(
                ConflictKind::Halted,
                format!("{network} is in safe-mode: {reason}"),
            ));
        }
        let ids: Vec<Uuid> = signed.iter().map(|(c, _)| c.0).collect();
        for part in ids.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::new(
                "SELECT f.asset FROM payout_chunks c JOIN payouts p ON p.id = c.payout_id \
                 JOIN asset_freezes f ON f.network = p.network AND f.asset = p.asset WHERE c.id",
            );
            any_of(&mut qb, part);
            qb.push(" LIMIT 1");
            if let Some(row) = qb.build().fetch_optional(&mut *tx).await? {
                let asset: String = row.try_get("asset")?;
                return Err(StoreError::Conflict(
                    ConflictKind::Halted,
                    format!("{asset} is frozen on {network}"),
                ));
            }
        }
        let at = self.clock.now();
        let attempts = BulkRows::new()
            .col("id", signed.iter().map(|(_, a)| a.id))
            .col("chunk_id", signed.iter().map(|(c, _)| c.0))
            .col("wallet", signed.iter().map(|_| wallet))
            .col("nonce", signed.iter().map(|(_, a)| a.nonce as i64))
            .col("hash", signed.iter().map(|(_, a)| Some(a.hash.to_vec())))
            .col("raw", signed.iter().map(|(_, a)| Some(own_raw(a))))
            .col(
                "max_fee_per_gas",
                signed.iter().map(|(_, a)| Some(a.max_fee_per_gas as i128)),
            )
            .col(
                "max_priority_fee_per_gas",
                signed
                    .iter()
                    .map(|(_, a)| Some(a.max_priority_fee_per_gas as i128)),
            )
            .col("gas_limit", signed.iter().map(|(_, a)| a.gas_limit as i64))
            .col("created_at", signed.iter().map(|(_, a)| a.created_at))
            .col("kind", signed.iter().map(|(_, a)| a.kind.as_str()))
            .col(
                "batch_index",
                signed
                    .iter()
                    .map(|(_, a)| a.batch.map(|b| i64::from(b.index))),
            )
            .col(
                "batch_size",
                signed
                    .iter()
                    .map(|(_, a)| a.batch.map(|b| i64::from(b.size))),
            );
        store_signed_bytes(&mut tx, signed.iter().map(|(_, a)| a)).await?;
        let insert = format!("INSERT INTO tx_attempts ({}) ", attempts.names());
        bulk(&mut tx, &insert, attempts, "").await?;
        let chunks = BulkRows::new()
            .col("id", signed.iter().map(|(c, _)| c.0))
            .col("nonce", signed.iter().map(|(_, a)| a.nonce as i64))
            .col("wallet", signed.iter().map(|_| wallet))
            .col("at", signed.iter().map(|_| at));
        let updated = bulk(
            &mut tx,
            "UPDATE payout_chunks SET state = 'signed', wallet = u.wallet, nonce = u.nonce, updated_at = u.at, \
             signed_at = u.at FROM (",
            chunks,
            ") AS u WHERE payout_chunks.id = u.id AND payout_chunks.state = 'queued' \
             RETURNING payout_chunks.id, payout_chunks.payout_id",
        )
        .await?;
        if updated.len() != signed.len() {
            return Err(StoreError::Conflict(
                ConflictKind::StateChanged,
                format!(
                    "{} of {} chunks are no longer queued",
                    signed.len() - updated.len(),
                    signed.len()
                ),
            ));
        }
        let payout_of = payouts_of(&updated)?;
        let payouts: Vec<Uuid> = signed
            .iter()
            .map(|(c, _)| payout_of.get(&c.0).copied().unwrap_or_default())
            .collect();
        for part in payouts.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::new("UPDATE payouts SET state = 'broadcast', updated_at = ");
            qb.push_bind(at);
            qb.push(" WHERE state = 'queued' AND id");
            any_of(&mut qb, part);
            qb.build().execute(&mut *tx).await?;
        }
        let events = signed.iter().zip(&payouts).map(|((chunk, a), payout)| {
            let batch = a.batch.map_or(String::new(), |b| {
                format!(", payment {} of {} in a batch", b.index + 1, b.size)
            });
            let detail = format!(
                "chunk {chunk}: nonce {} from {wallet}, tx 0x{}{batch}",
                a.nonce,
                hex::encode(a.hash)
            );
            (*payout, "signed", detail)
        });
        insert_events(&mut tx, at, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_replacements(
        &self,
        attempts: &[(ChunkId, Attempt, String)],
        event: &str,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        for (chunk, attempt, detail) in attempts {
            let row = sqlx::query("SELECT payout_id, wallet FROM payout_chunks WHERE id = $1")
                .bind(chunk.0)
                .fetch_one(&mut *tx)
                .await?;
            let (payout, wallet): (Uuid, String) =
                (row.try_get("payout_id")?, row.try_get("wallet")?);
            insert_attempt(&mut tx, *chunk, &wallet, attempt).await?;
            insert_event(&mut tx, PayoutId(payout), attempt.created_at, event, detail).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn requeue_alone(&self, chunks: &[(ChunkId, u64, String)]) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        let at = self.clock.now();
        for (chunk, nonce, detail) in chunks {
            let row = sqlx::query(
                "UPDATE payout_chunks SET state = 'queued', wallet = NULL, nonce = NULL, mined_hash = NULL, \
                 mined_block = NULL, mined_block_hash = NULL, mined_success = NULL, mined_fee = NULL, \
                 single_only = $3, updated_at = $4 \
                 WHERE id = $1 AND nonce = $2 AND state IN ('signed', 'broadcast', 'mined') RETURNING payout_id",
            )
            .bind(chunk.0)
            .bind(*nonce as i64)
            .bind(true)
            .bind(at)
            .fetch_optional(&mut *tx)
            .await?;
            // Already queued again (a replay after a crash): nothing more to do.
            if let Some(row) = row {
                let payout: Uuid = row.try_get("payout_id")?;
                insert_event(&mut tx, PayoutId(payout), at, "requeued_alone", detail).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_wallet_call(
        &self,
        network: &str,
        fence: u64,
        call: &WalletCall,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        take_nonces(
            &mut tx,
            network,
            &call.wallet,
            fence,
            call.nonce,
            call.nonce + 1,
        )
        .await?;
        sqlx::query(
            "INSERT INTO wallet_calls (hash, network, wallet, nonce, kind, token, spender, raw, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(call.hash.as_slice())
        .bind(network)
        .bind(&call.wallet)
        .bind(call.nonce as i64)
        .bind("approve")
        .bind(&call.token)
        .bind(&call.spender)
        .bind(call.raw.as_slice())
        .bind(call.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn wallet_calls(&self, network: &str) -> StoreResult<Vec<WalletCall>> {
        let rows = sqlx::query(
            "SELECT hash, wallet, nonce, token, spender, raw, created_at, broadcast_at FROM wallet_calls \
             WHERE network = $1 ORDER BY wallet, nonce",
        )
        .bind(network)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(WalletCall {
                    hash: hash32(&r.try_get::<Vec<u8>, _>("hash")?)?,
                    wallet: r.try_get("wallet")?,
                    nonce: r.try_get::<i64, _>("nonce")? as u64,
                    token: r.try_get("token")?,
                    spender: r.try_get("spender")?,
                    raw: r.try_get("raw")?,
                    created_at: r.try_get("created_at")?,
                    broadcast_at: r.try_get("broadcast_at")?,
                })
            })
            .collect()
    }

    async fn mark_wallet_call_broadcast(&self, hash: [u8; 32], at: i64) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        sqlx::query(
            "UPDATE wallet_calls SET broadcast_at = $2 WHERE hash = $1 AND broadcast_at IS NULL",
        )
        .bind(hash.as_slice())
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn mark_broadcast(&self, attempts: &[Uuid], head: u64, at: i64) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        for part in attempts.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::new("UPDATE tx_attempts SET broadcast_at = ");
            qb.push_bind(at);
            qb.push(", head_at_broadcast = ");
            qb.push_bind(head as i64);
            qb.push(" WHERE broadcast_at IS NULL AND id");
            any_of(&mut qb, part);
            qb.build().execute(&mut *tx).await?;
            let mut qb =
                QueryBuilder::new("UPDATE payout_chunks SET state = 'broadcast', updated_at = ");
            qb.push_bind(at);
            qb.push(" WHERE state = 'signed' AND id IN (SELECT chunk_id FROM tx_attempts WHERE id");
            any_of(&mut qb, part);
            qb.push(")");
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn in_flight(&self, network: &str) -> StoreResult<Vec<InFlight>> {
        let mut conn = self.pool.acquire().await?;
        load_in_flight(&mut conn, network, None).await
    }

    async fn record_mined(&self, chunks: &[(ChunkId, Option<Mined>)]) -> StoreResult<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let mut last: std::collections::HashMap<ChunkId, Option<&Mined>> =
            std::collections::HashMap::with_capacity(chunks.len());
        for (chunk, mined) in chunks {
            last.insert(*chunk, mined.as_ref());
        }
        let last: Vec<(ChunkId, Option<&Mined>)> = last.into_iter().collect();
        let (_writing, mut tx) = self.begin_write().await?;
        let at = self.clock.now();
        let rows = BulkRows::new()
            .col("id", last.iter().map(|(c, _)| c.0))
            .col(
                "state",
                last.iter()
                    .map(|(_, m)| if m.is_some() { "mined" } else { "broadcast" }),
            )
            .col("hash", last.iter().map(|(_, m)| m.map(|m| m.hash.to_vec())))
            .col("block", last.iter().map(|(_, m)| m.map(|m| m.block as i64)))
            .col(
                "block_hash",
                last.iter().map(|(_, m)| m.map(|m| m.block_hash.to_vec())),
            )
            .col("success", last.iter().map(|(_, m)| m.map(|m| m.success)))
            .col(
                "fee",
                last.iter().map(|(_, m)| m.map(|m| m.fee_wei as i128)),
            )
            .col("at", last.iter().map(|_| at));
        let updated = bulk(
            &mut tx,
            "UPDATE payout_chunks SET state = u.state, mined_hash = u.hash, mined_block = u.block, \
             mined_block_hash = u.block_hash, mined_success = u.success, mined_fee = u.fee, updated_at = u.at FROM (",
            rows,
            ") AS u WHERE payout_chunks.id = u.id RETURNING payout_chunks.id, payout_chunks.payout_id",
        )
        .await?;
        let payout_of = payouts_of(&updated)?;
        let mut events = Vec::with_capacity(chunks.len());
        for (chunk, mined) in chunks {
            let payout = *payout_of.get(&chunk.0).ok_or(StoreError::NotFound)?;
            events.push(match mined {
                Some(m) => (
                    payout,
                    "mined",
                    format!(
                        "chunk {chunk}: tx 0x{} in block {} ({})",
                        hex::encode(m.hash),
                        m.block,
                        if m.success { "success" } else { "reverted" }
                    ),
                ),
                None => (
                    payout,
                    "reorged",
                    format!("chunk {chunk}: its block left the chain; tracking again"),
                ),
            });
        }
        insert_events(&mut tx, at, events.into_iter()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn close_chunk(
        &self,
        chunk: ChunkId,
        state: ChunkState,
        detail: &str,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        let at = self.clock.now();
        let payout = chunk_payout(&mut tx, chunk).await?;
        sqlx::query(
        "UPDATE payout_chunks SET state = $1, updated_at = $2 WHERE id = $3 AND state = 'mined'",
    )
    .bind(state.as_str())
    .bind(at)
    .bind(chunk.0)
    .execute(&mut *tx)
    .await?;
        if state == ChunkState::Failed {
            sqlx::query("UPDATE payout_chunks SET state = 'cancelled', updated_at = $1 WHERE payout_id = $2 AND state = 'queued'")
                .bind(at)
                .bind(payout)
                .execute(&mut *tx)
                .await?;
        }
        let kind = match state {
            ChunkState::Failed => "chunk_failed",
            _ => "chunk_cancelled",
        };
        insert_event(
            &mut tx,
            PayoutId(payout),
            at,
            kind,
            &format!("chunk {chunk}: {detail}"),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn request_cancel(&self, payout: PayoutId, audit: &AuditRecord) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        let state: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT state FROM payouts WHERE id = $1{FOR_UPDATE}"
        )))
        .bind(payout.0)
        .fetch_one(&mut *tx)
        .await?;
        if state != PayoutState::Broadcast.as_str() {
            return Err(StoreError::Conflict(
                ConflictKind::StateChanged,
                format!("payout {payout} is {state}"),
            ));
        }
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM payout_chunks WHERE payout_id = $1 AND state IN ('queued', 'signed', 'broadcast')",
        )
        .bind(payout.0)
        .fetch_one(&mut *tx)
        .await?;
        if open == 0 {
            return Err(StoreError::Conflict(
                ConflictKind::StateChanged,
                format!("every chunk of payout {payout} is mined or final"),
            ));
        }
        let reason = audit.reason.clone().unwrap_or_default();
        sqlx::query("UPDATE payouts SET cancel_reason = COALESCE(cancel_reason, $1), cancel_by = COALESCE(cancel_by, $2), updated_at = $3 WHERE id = $4")
            .bind(&reason)
            .bind(&audit.actor)
            .bind(audit.at)
            .bind(payout.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE payout_chunks SET state = 'cancelled', updated_at = $1 WHERE payout_id = $2 AND state = 'queued'")
            .bind(audit.at)
            .bind(payout.0)
            .execute(&mut *tx)
            .await?;
        insert_event(
            &mut tx,
            payout,
            audit.at,
            "cancel_requested",
            &format!("by {}: {reason}", audit.actor),
        )
        .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn add_payout_event(
        &self,
        payout: PayoutId,
        kind: &str,
        detail: &str,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        insert_event(&mut tx, payout, self.clock.now(), kind, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn approve_payout(
        &self,
        payout: PayoutId,
        approver: &str,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        let at = audit.at;
        let updated = sqlx::query("UPDATE payouts SET state = 'queued', updated_at = $1 WHERE id = $2 AND state = 'pending_approval' AND created_by <> $3")
            .bind(at)
            .bind(payout.0)
            .bind(approver)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::Conflict(
                ConflictKind::StateChanged,
                format!("payout {payout} is not pending an approval by {approver}"),
            ));
        }
        insert_event(
            &mut tx,
            payout,
            at,
            "approved",
            &format!("approved by {approver}"),
        )
        .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn safe_mode(&self, network: &str) -> StoreResult<Option<SafeMode>> {
        Ok(
            sqlx::query_as("SELECT reason, actor, since FROM network_safe_mode WHERE network = $1")
                .bind(network)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn set_safe_mode(
        &self,
        network: &str,
        mode: Option<&SafeMode>,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        match mode {
            Some(m) => {
                sqlx::query("INSERT INTO network_safe_mode (network, reason, actor, since) VALUES ($1, $2, $3, $4) ON CONFLICT (network) DO UPDATE SET reason = EXCLUDED.reason, actor = EXCLUDED.actor")
                    .bind(network)
                    .bind(&m.reason)
                    .bind(&m.actor)
                    .bind(m.since)
                    .execute(&mut *tx)
                    .await?;
            }
            None => {
                sqlx::query("DELETE FROM network_safe_mode WHERE network = $1")
                    .bind(network)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn cancelling_payouts(&self, network: &str) -> StoreResult<Vec<PayoutId>> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM payouts WHERE cancel_reason IS NOT NULL AND state = 'broadcast' AND network = $1",
        )
        .bind(network)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(PayoutId).collect())
    }

    async fn active_payouts(&self, network: &str) -> StoreResult<Vec<(PayoutState, i64)>> {
        Ok(sqlx::query_as(
            "SELECT state, COUNT(*) AS n FROM payouts WHERE network = $1 \
             AND state IN ('pending_approval', 'queued', 'broadcast') GROUP BY state",
        )
        .bind(network)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn rollout_phase(&self, network: &str) -> StoreResult<Option<RolloutSetting>> {
        Ok(sqlx::query_as(
            "SELECT phase, actor, reason, since FROM network_rollout WHERE network = $1",
        )
        .bind(network)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn set_rollout_phase(
        &self,
        network: &str,
        setting: &RolloutSetting,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO network_rollout (network, phase, actor, reason, since) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (network) DO UPDATE SET phase = excluded.phase, actor = excluded.actor, \
             reason = excluded.reason, since = excluded.since",
        )
        .bind(network)
        .bind(setting.phase.as_str())
        .bind(&setting.actor)
        .bind(&setting.reason)
        .bind(setting.since)
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn freezes(&self, network: &str) -> StoreResult<Vec<AssetFreeze>> {
        let rows = sqlx::query("SELECT asset, reason, actor, since FROM asset_freezes WHERE network = $1 ORDER BY asset")
            .bind(network)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(AssetFreeze::from_row(r)?)).collect()
    }

    async fn set_freeze(
        &self,
        network: &str,
        asset: &str,
        freeze: Option<&AssetFreeze>,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        match freeze {
            Some(f) => {
                sqlx::query(
                    "INSERT INTO asset_freezes (network, asset, reason, actor, since) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (network, asset) DO UPDATE SET reason = excluded.reason, actor = excluded.actor",
                )
                .bind(network)
                .bind(asset)
                .bind(&f.reason)
                .bind(&f.actor)
                .bind(f.since)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM asset_freezes WHERE network = $1 AND asset = $2")
                    .bind(network)
                    .bind(asset)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn signed_volume_since(
        &self,
        network: &str,
        since: UnixMicros,
    ) -> StoreResult<Vec<(String, i128)>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT p.asset, {} AS total FROM payout_chunks c JOIN payouts p ON p.id = c.payout_id \
             WHERE c.signed_at >= $1 AND p.network = $2 GROUP BY p.asset",
            sum_amount("c.amount")
        )))
        .bind(since)
        .bind(network)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("asset")?, amount_from(r, "total")?)))
            .collect()
    }

    async fn tier_usage(
        &self,
        company: Uuid,
        asset: &AssetKey,
        day_start: i64,
        month_start: i64,
    ) -> StoreResult<Used> {
        let mut conn = self.pool.acquire().await?;
        company_usage(&mut conn, company, asset, day_start, month_start).await
    }
}
