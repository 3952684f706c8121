//! Accounts, holds, journal transactions, leases and the audit log as rows, on both databases.

use super::*;

pub(super) fn account_from_row(row: &DbRow) -> StoreResult<Account> {
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

pub(super) fn hold_from_row(row: &DbRow) -> StoreResult<Hold> {
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

pub(super) fn journal_from_row(row: &DbRow) -> StoreResult<JournalTx> {
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

pub(super) fn lease_from_row(r: &DbRow) -> StoreResult<Lease> {
    Ok(Lease {
        owner: r.try_get("owner")?,
        fence: r.try_get::<i64, _>("fence")? as u64,
        expires_at: r.try_get("expires_at")?,
    })
}

pub(super) async fn insert_audit(conn: &mut DbConnection, audit: &AuditRecord) -> StoreResult<()> {
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

pub(super) async fn load_transaction(conn: &mut DbConnection, id: TxId) -> StoreResult<JournalTx> {
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

pub(super) async fn load_hold(conn: &mut DbConnection, id: HoldId) -> StoreResult<Hold> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{HOLD_SELECT} WHERE h.id = $1"
    )))
    .bind(id.0)
    .fetch_one(conn)
    .await?;
    hold_from_row(&row)
}
