//! Accounts, holds, journal transactions, leases and the audit log as rows, and what a posted
//! transaction's effects write beside it, on both databases.

use super::*;

pub(crate) const ACCOUNT_COLUMNS: &str =
    "id, owner, network, asset, kind, allow_negative, available, held, created_at";

pub(crate) const HOLD_SELECT: &str = "SELECT h.id, h.account_id, a.network, a.asset, h.amount, h.released, h.voided, h.state, \
     h.reference, h.created_at, h.resolved_at FROM holds h JOIN accounts a ON a.id = h.account_id";

pub(crate) const JOURNAL_COLUMNS: &str = "seq, id, kind, network, asset, hold_id, idempotency_key, request_hash, reference, memo, actor, created_at, hash";

pub(crate) fn account_from_row(row: &DbRow) -> StoreResult<Account> {
    let kind: String = row.try_get("kind")?;
    Ok(Account {
        id: AccountId(row.try_get("id")?),
        owner: row.try_get("owner")?,
        asset: AssetKey::new(
            row.try_get::<String, _>("network")?,
            row.try_get::<String, _>("asset")?,
        ),
        kind: AccountKind::parse(&kind)
            .ok_or_else(|| StoreError::Invariant(format!("account kind {kind:?}")))?,
        allow_negative: row.try_get("allow_negative")?,
        available: units(row.try_get("available")?)?,
        held: units(row.try_get("held")?)?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) fn hold_from_row(row: &DbRow) -> StoreResult<Hold> {
    let state: String = row.try_get("state")?;
    Ok(Hold {
        id: HoldId(row.try_get("id")?),
        account: AccountId(row.try_get("account_id")?),
        asset: AssetKey::new(
            row.try_get::<String, _>("network")?,
            row.try_get::<String, _>("asset")?,
        ),
        amount: units(row.try_get("amount")?)?,
        released: units(row.try_get("released")?)?,
        voided: units(row.try_get("voided")?)?,
        state: HoldState::parse(&state)
            .ok_or_else(|| StoreError::Invariant(format!("hold state {state:?}")))?,
        reference: row.try_get("reference")?,
        created_at: row.try_get("created_at")?,
        resolved_at: row.try_get("resolved_at")?,
    })
}

pub(crate) fn journal_from_row(row: &DbRow) -> StoreResult<JournalTx> {
    let kind: String = row.try_get("kind")?;
    Ok(JournalTx {
        seq: row.try_get("seq")?,
        id: TxId(row.try_get("id")?),
        kind: EntryKind::parse(&kind)
            .ok_or_else(|| StoreError::Invariant(format!("entry kind {kind:?}")))?,
        asset: AssetKey::new(
            row.try_get::<String, _>("network")?,
            row.try_get::<String, _>("asset")?,
        ),
        hold: row.try_get::<Option<Uuid>, _>("hold_id")?.map(HoldId),
        idempotency_key: row.try_get("idempotency_key")?,
        request_hash: hash32(row.try_get("request_hash")?)?,
        reference: row.try_get("reference")?,
        memo: row.try_get("memo")?,
        actor: row.try_get("actor")?,
        created_at: row.try_get("created_at")?,
        postings: Vec::new(),
        hash: hash32(row.try_get("hash")?)?,
    })
}

pub(crate) fn lease_from_row(r: &DbRow) -> StoreResult<Lease> {
    Ok(Lease {
        owner: r.try_get("owner")?,
        fence: r.try_get::<i64, _>("fence")? as u64,
        expires_at: r.try_get("expires_at")?,
    })
}

pub(crate) async fn insert_audit(conn: &mut DbConnection, audit: &AuditRecord) -> StoreResult<()> {
    sqlx::query("INSERT INTO audit_log (id, at, actor, role, action, target, reason, request_id, evidence) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(Uuid::now_v7())
        .bind(audit.at)
        .bind(&audit.actor)
        .bind(audit.role.as_str())
        .bind(&audit.action)
        .bind(&audit.target)
        .bind(&audit.reason)
        .bind(&audit.request_id)
        .bind(audit.evidence.as_ref().map(|e| e.to_string()))
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn load_transaction(conn: &mut DbConnection, id: TxId) -> StoreResult<JournalTx> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {JOURNAL_COLUMNS} FROM journal_transactions WHERE id = $1"
    )))
    .bind(id.0)
    .fetch_one(&mut *conn)
    .await?;
    let mut txs = vec![journal_from_row(&row)?];
    attach_postings(conn, &mut txs).await?;
    txs.pop().ok_or(StoreError::NotFound)
}

pub(crate) async fn load_hold(conn: &mut DbConnection, id: HoldId) -> StoreResult<Hold> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{HOLD_SELECT} WHERE h.id = $1"
    )))
    .bind(id.0)
    .fetch_one(conn)
    .await?;
    hold_from_row(&row)
}

/// Writes what `effect` says beside the journal transaction `posted`, in its database
/// transaction.
pub(crate) async fn write_effect(
    conn: &mut DbConnection,
    effect: &Effect,
    posted: &Posted,
) -> StoreResult<()> {
    match effect {
        Effect::NewPayout(p) => {
            let hold =
                posted.hold.as_ref().map(|h| h.id).ok_or_else(|| {
                    StoreError::Invariant("a payout must come with a HOLD".into())
                })?;
            insert_payout(conn, p, hold, posted.tx.created_at).await
        }
        Effect::ChunkConfirmed { chunk, payout } => {
            let at = posted.tx.created_at;
            sqlx::query(
                "UPDATE payout_chunks SET state = 'confirmed', updated_at = $1 WHERE id = $2",
            )
            .bind(at)
            .bind(chunk.0)
            .execute(&mut *conn)
            .await?;
            insert_event(
                conn,
                *payout,
                at,
                "chunk_confirmed",
                &format!("chunk {chunk} paid in journal seq {}", posted.tx.seq),
            )
            .await?;
            let done = sqlx::query(
                "UPDATE payouts SET state = 'confirmed', updated_at = $1 WHERE id = $2 \
                 AND NOT EXISTS (SELECT 1 FROM payout_chunks WHERE payout_id = $2 AND state <> 'confirmed')",
            )
            .bind(at)
            .bind(payout.0)
            .execute(&mut *conn)
            .await?;
            if done.rows_affected() == 1 {
                insert_event(conn, *payout, at, "confirmed", "every chunk confirmed").await?;
            }
            Ok(())
        }
        Effect::PayoutClosed {
            payout,
            from,
            state,
            detail,
        } => {
            let at = posted.tx.created_at;
            let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
            // Compare-and-set: the states are the enum's own names, never input.
            let states: Vec<String> = from.iter().map(|s| format!("'{s}'")).collect();
            let updated = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE payouts SET state = $1, updated_at = $2 WHERE id = $3 AND state IN ({})",
                states.join(", ")
            )))
            .bind(state.as_str())
            .bind(at)
            .bind(payout.0)
            .execute(&mut *conn)
            .await?;
            if updated.rows_affected() != 1 {
                return Err(StoreError::Conflict(format!(
                    "payout {payout} is no longer {}",
                    from.join(" or ")
                )));
            }
            // Whatever was never signed will never be.
            sqlx::query("UPDATE payout_chunks SET state = 'cancelled', updated_at = $1 WHERE payout_id = $2 AND state = 'queued'")
                .bind(at)
                .bind(payout.0)
                .execute(&mut *conn)
                .await?;
            insert_event(conn, *payout, at, state.as_str(), detail).await
        }
        Effect::DealStep(step) => escrow::write_deal_step(conn, step, Some(posted)).await,
        Effect::SessionStep(step) => trust::write_session_step(conn, step, Some(posted)).await,
    }
}
