//! Escrow deals, their timeline and their timers, on both databases.

use super::*;
use crate::domain::DealId;
use crate::domain::escrow::{Deal, DealEvent, DealState, DealStep, Issue, Resolution};
use crate::timers::Timer;

const DEAL_COLUMNS: &str = "id, template, buyer_account, seller_account, network, asset, amount, immediate, holdback, state, hold_id, \
    released, offset_amount, refunded, issue_reason, issue_detail, issue_at, escalated, resolution_outcome, resolution_offset, \
    resolution_by, resolution_reason, resolution_at, reference, created_by, created_at, updated_at, settled_at, \
    seller_payout_address, buyer_refund_address";

fn deal_from_row(r: &DbRow) -> StoreResult<Deal> {
    let template: String = r.try_get("template")?;
    let state: String = r.try_get("state")?;
    let issue = match r.try_get::<Option<String>, _>("issue_reason")? {
        Some(reason_code) => Some(Issue {
            reason_code,
            detail: r
                .try_get::<Option<String>, _>("issue_detail")?
                .unwrap_or_default(),
            raised_at: r.try_get::<Option<i64>, _>("issue_at")?.unwrap_or_default(),
        }),
        None => None,
    };
    let resolution = match r.try_get::<Option<String>, _>("resolution_outcome")? {
        Some(outcome) => Some(Resolution {
            outcome: serde_json::from_value(serde_json::Value::String(outcome.clone()))
                .map_err(|_| StoreError::Invariant(format!("resolution outcome {outcome:?}")))?,
            offset: opt_amount_from(r, "resolution_offset")?.unwrap_or(0),
            by: r
                .try_get::<Option<String>, _>("resolution_by")?
                .unwrap_or_default(),
            reason: r
                .try_get::<Option<String>, _>("resolution_reason")?
                .unwrap_or_default(),
            at: r
                .try_get::<Option<i64>, _>("resolution_at")?
                .unwrap_or_default(),
        }),
        None => None,
    };
    Ok(Deal {
        id: DealId(r.try_get("id")?),
        template: serde_json::from_str(&template)
            .map_err(|e| StoreError::Invariant(format!("deal template: {e}")))?,
        buyer: AccountId(r.try_get("buyer_account")?),
        seller: AccountId(r.try_get("seller_account")?),
        asset: AssetKey::new(
            r.try_get::<String, _>("network")?,
            r.try_get::<String, _>("asset")?,
        ),
        amount: amount_from(r, "amount")?,
        immediate: amount_from(r, "immediate")?,
        holdback: amount_from(r, "holdback")?,
        state: DealState::parse(&state)
            .ok_or_else(|| StoreError::Invariant(format!("deal state {state:?}")))?,
        hold: r.try_get::<Option<Uuid>, _>("hold_id")?.map(HoldId),
        released: amount_from(r, "released")?,
        offset: amount_from(r, "offset_amount")?,
        refunded: amount_from(r, "refunded")?,
        issue,
        escalated: r.try_get("escalated")?,
        resolution,
        reference: r.try_get("reference")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        settled_at: r.try_get("settled_at")?,
        seller_payout: r.try_get("seller_payout_address")?,
        buyer_refund: r.try_get("buyer_refund_address")?,
    })
}

async fn insert_deal_event(
    conn: &mut DbConnection,
    deal: DealId,
    at: i64,
    kind: &str,
    actor: &str,
    detail: &str,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO deal_events (id, deal_id, at, kind, actor, detail) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(deal.0)
    .bind(at)
    .bind(kind)
    .bind(actor)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn insert_deal(
    conn: &mut DbConnection,
    d: &Deal,
    detail: &str,
) -> StoreResult<()> {
    let template = serde_json::to_string(&d.template)
        .map_err(|e| StoreError::Invariant(format!("deal template: {e}")))?;
    sqlx::query(
        "INSERT INTO deals (id, template_id, template, country, category, template_version, buyer_account, seller_account, \
         network, asset, amount, immediate, holdback, state, released, offset_amount, refunded, escalated, reference, \
         created_by, created_at, updated_at, seller_payout_address, buyer_refund_address) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)",
    )
    .bind(d.id.0)
    .bind(&d.template.id)
    .bind(template)
    .bind(&d.template.country)
    .bind(&d.template.category)
    .bind(i64::from(d.template.version))
    .bind(d.buyer.0)
    .bind(d.seller.0)
    .bind(&d.asset.network)
    .bind(&d.asset.code)
    .bind(amount_to_db(d.amount))
    .bind(amount_to_db(d.immediate))
    .bind(amount_to_db(d.holdback))
    .bind(d.state.as_str())
    .bind(amount_to_db(0))
    .bind(amount_to_db(0))
    .bind(amount_to_db(0))
    .bind(false)
    .bind(&d.reference)
    .bind(&d.created_by)
    .bind(d.created_at)
    .bind(d.updated_at)
    .bind(&d.seller_payout)
    .bind(&d.buyer_refund)
    .execute(&mut *conn)
    .await?;
    insert_deal_event(conn, d.id, d.created_at, "CREATED", &d.created_by, detail).await
}

/// Applies a guarded deal step inside the caller's transaction; `posted` is the ledger posting
/// that carries it, if any.
pub(crate) async fn write_deal_step(
    conn: &mut DbConnection,
    step: &DealStep,
    posted: Option<&Posted>,
) -> StoreResult<()> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {DEAL_COLUMNS} FROM deals WHERE id = $1{FOR_UPDATE}"
    )))
    .bind(step.deal.0)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    let deal = deal_from_row(&row)?;
    if !step.from.contains(&deal.state) {
        return Err(StoreError::Conflict(
            ConflictKind::StateChanged,
            format!("deal {} is {}", deal.id, deal.state.as_str()),
        ));
    }
    if let Some(timer) = step.fire_timer {
        let fired = sqlx::query(
            "UPDATE timers SET state = 'fired', fired_at = $1 WHERE id = $2 AND state = 'pending'",
        )
        .bind(step.at)
        .bind(timer.0)
        .execute(&mut *conn)
        .await?;
        if fired.rows_affected() != 1 {
            return Err(StoreError::Conflict(
                ConflictKind::StateChanged,
                format!("timer {timer} already ended"),
            ));
        }
    }
    if step.cancel_timers {
        let cancelled: Vec<String> = sqlx::query_scalar(
            "UPDATE timers SET state = 'cancelled' WHERE deal_id = $1 AND state = 'pending' RETURNING kind",
        )
        .bind(step.deal.0)
        .fetch_all(&mut *conn)
        .await?;
        for kind in cancelled {
            insert_deal_event(
                conn,
                step.deal,
                step.at,
                "TIMER_CANCELLED",
                &step.actor,
                &kind,
            )
            .await?;
        }
    }
    let hold = match (step.takes_hold, posted.and_then(|p| p.hold.as_ref())) {
        (true, Some(h)) => Some(h.id),
        (true, None) => {
            return Err(StoreError::Invariant(
                "a funding step needs its HOLD".into(),
            ));
        }
        (false, _) => deal.hold,
    };
    let issue = step.issue.as_ref().or(deal.issue.as_ref());
    let resolution = step.resolution.as_ref().or(deal.resolution.as_ref());
    let settled_at = if step.to == DealState::Settled {
        Some(step.at)
    } else {
        deal.settled_at
    };
    sqlx::query(
        "UPDATE deals SET state = $1, hold_id = $2, released = $3, offset_amount = $4, refunded = $5, issue_reason = $6, \
         issue_detail = $7, issue_at = $8, disputed = (disputed OR $9), escalated = (escalated OR $10), resolution_outcome = $11, \
         resolution_offset = $12, resolution_by = $13, resolution_reason = $14, resolution_at = $15, updated_at = $16, \
         settled_at = $17 WHERE id = $18",
    )
    .bind(step.to.as_str())
    .bind(hold.map(|h| h.0))
    .bind(amount_to_db(deal.released + step.released))
    .bind(amount_to_db(deal.offset + step.offset))
    .bind(amount_to_db(deal.refunded + step.refunded))
    .bind(issue.map(|i| i.reason_code.clone()))
    .bind(issue.map(|i| i.detail.clone()))
    .bind(issue.map(|i| i.raised_at))
    .bind(step.to == DealState::Issue)
    .bind(step.escalate)
    .bind(resolution.map(|r| r.outcome.as_str()))
    .bind(resolution.map(|r| amount_to_db(r.offset)))
    .bind(resolution.map(|r| r.by.clone()))
    .bind(resolution.map(|r| r.reason.clone()))
    .bind(resolution.map(|r| r.at))
    .bind(step.at)
    .bind(settled_at)
    .bind(step.deal.0)
    .execute(&mut *conn)
    .await?;
    if let Some(p) = posted {
        insert_deal_event(
            conn,
            step.deal,
            step.at,
            "LEDGER",
            &step.actor,
            &format!(
                "{} journal seq {} tx {}",
                p.tx.kind.as_str(),
                p.tx.seq,
                p.tx.id
            ),
        )
        .await?;
    }
    for (kind, detail) in &step.events {
        insert_deal_event(conn, step.deal, step.at, kind, &step.actor, detail).await?;
    }
    if let Some((kind, due_at)) = step.set_timer {
        sqlx::query(
            "INSERT INTO timers (id, kind, deal_id, due_at, state, created_at) VALUES ($1, $2, $3, $4, 'pending', $5)",
        )
        .bind(Uuid::now_v7())
        .bind(kind.as_str())
        .bind(step.deal.0)
        .bind(due_at)
        .bind(step.at)
        .execute(&mut *conn)
        .await?;
        insert_deal_event(
            conn,
            step.deal,
            step.at,
            "TIMER_SET",
            &step.actor,
            &format!(
                "{} due {}",
                kind.as_str(),
                crate::domain::micros_to_rfc3339(due_at)
            ),
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn get_deal(conn: &mut DbConnection, id: DealId) -> StoreResult<Deal> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {DEAL_COLUMNS} FROM deals WHERE id = $1"
    )))
    .bind(id.0)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    deal_from_row(&row)
}

pub(crate) async fn list_deals(
    conn: &mut DbConnection,
    f: &crate::store::DealFilter,
) -> StoreResult<Vec<Deal>> {
    let state = f.state.map(|s| s.as_str());
    let version = f
        .template_version
        .map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    let after = f.after.map(|a| a.0);
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {DEAL_COLUMNS} FROM deals WHERE ($1 IS NULL OR state = $2) AND ($3 IS NULL OR country = $4) \
         AND ($5 IS NULL OR category = $6) AND ($7 IS NULL OR template_version = $8) AND ($9 IS NULL OR id > $10) \
         AND (CAST($12 AS UUID) IS NULL OR buyer_account IN (SELECT id FROM accounts WHERE company_id = $12) \
              OR seller_account IN (SELECT id FROM accounts WHERE company_id = $12)) \
         ORDER BY id LIMIT $11"
    )))
    .bind(state)
    .bind(state)
    .bind(&f.country)
    .bind(&f.country)
    .bind(&f.category)
    .bind(&f.category)
    .bind(version)
    .bind(version)
    .bind(after)
    .bind(after)
    .bind(f.limit)
    .bind(f.company)
    .fetch_all(conn)
    .await?;
    rows.iter().map(deal_from_row).collect()
}

pub(crate) async fn deal_events(
    conn: &mut DbConnection,
    id: DealId,
) -> StoreResult<Vec<DealEvent>> {
    let rows = sqlx::query(
        "SELECT at, kind, actor, detail FROM deal_events WHERE deal_id = $1 ORDER BY id",
    )
    .bind(id.0)
    .fetch_all(conn)
    .await?;
    rows.iter().map(|r| Ok(DealEvent::from_row(r)?)).collect()
}

pub(crate) async fn deal_timers(conn: &mut DbConnection, id: DealId) -> StoreResult<Vec<Timer>> {
    Ok(sqlx::query_as(
        "SELECT id, kind, deal_id, due_at, state, fired_at FROM timers WHERE deal_id = $1 ORDER BY id",
    )
    .bind(id.0)
    .fetch_all(conn)
    .await?)
}

pub(crate) async fn insert_evidence(
    conn: &mut DbConnection,
    e: &crate::domain::escrow::Evidence,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO deal_evidence (id, deal_id, type, sha256, size, content_type, uploaded_by, uploaded_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(e.id)
    .bind(e.deal.0)
    .bind(&e.kind)
    .bind(&e.sha256)
    .bind(e.size)
    .bind(&e.content_type)
    .bind(&e.uploaded_by)
    .bind(e.uploaded_at)
    .execute(&mut *conn)
    .await?;
    insert_deal_event(
        conn,
        e.deal,
        e.uploaded_at,
        "EVIDENCE",
        &e.uploaded_by,
        &format!(
            "{} {} ({} bytes, sha256 {})",
            e.kind, e.id, e.size, e.sha256
        ),
    )
    .await
}

pub(crate) async fn list_evidence(
    conn: &mut DbConnection,
    deal: DealId,
) -> StoreResult<Vec<crate::domain::escrow::Evidence>> {
    Ok(sqlx::query_as(
        "SELECT id, deal_id, type, sha256, size, content_type, uploaded_by, uploaded_at FROM deal_evidence \
         WHERE deal_id = $1 ORDER BY id",
    )
    .bind(deal.0)
    .fetch_all(conn)
    .await?)
}

pub(crate) async fn deal_facts(
    conn: &mut DbConnection,
    from: i64,
    to: i64,
) -> StoreResult<Vec<crate::domain::escrow::DealFacts>> {
    let rows = sqlx::query(
        "SELECT d.country, d.category, d.template_version, d.state, d.created_at, d.settled_at, d.disputed, d.issue_at, \
         d.template, d.resolution_by, d.resolution_at, \
         EXISTS (SELECT 1 FROM deal_evidence e WHERE e.deal_id = d.id) AS has_evidence \
         FROM deals d WHERE d.created_at >= $1 AND d.created_at < $2 ORDER BY d.id",
    )
    .bind(from)
    .bind(to)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            let template: crate::templates::Template =
                serde_json::from_str(&r.try_get::<String, _>("template")?)
                    .map_err(|e| StoreError::Invariant(format!("deal template: {e}")))?;
            Ok(crate::domain::escrow::DealFacts {
                country: r.try_get("country")?,
                category: r.try_get("category")?,
                template_version: u32::try_from(r.try_get::<i32, _>("template_version")?)
                    .unwrap_or(0),
                state: r.try_get("state")?,
                created_at: r.try_get("created_at")?,
                settled_at: r.try_get("settled_at")?,
                disputed: r.try_get("disputed")?,
                issue_at: r.try_get("issue_at")?,
                dispute_ttl_hours: template.dispute_ttl_hours,
                has_evidence: r.try_get("has_evidence")?,
                resolved_by: r.try_get("resolution_by")?,
                resolved_at: r.try_get("resolution_at")?,
            })
        })
        .collect()
}

#[async_trait]
impl EscrowStore for DbStore {
    async fn create_deal(
        &self,
        deal: &crate::domain::escrow::Deal,
        detail: &str,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        escrow::insert_deal(&mut tx, deal, detail).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_deal(
        &self,
        id: crate::domain::DealId,
    ) -> StoreResult<crate::domain::escrow::Deal> {
        let mut conn = self.pool.acquire().await?;
        escrow::get_deal(&mut conn, id).await
    }

    async fn list_deals(
        &self,
        filter: &DealFilter,
    ) -> StoreResult<Vec<crate::domain::escrow::Deal>> {
        let mut conn = self.pool.acquire().await?;
        escrow::list_deals(&mut conn, filter).await
    }

    async fn deal_events(
        &self,
        id: crate::domain::DealId,
    ) -> StoreResult<Vec<crate::domain::escrow::DealEvent>> {
        let mut conn = self.pool.acquire().await?;
        escrow::deal_events(&mut conn, id).await
    }

    async fn deal_timers(
        &self,
        id: crate::domain::DealId,
    ) -> StoreResult<Vec<crate::timers::Timer>> {
        let mut conn = self.pool.acquire().await?;
        escrow::deal_timers(&mut conn, id).await
    }

    async fn deal_facts(
        &self,
        from: UnixMicros,
        to: UnixMicros,
    ) -> StoreResult<Vec<crate::domain::escrow::DealFacts>> {
        let mut conn = self.pool.acquire().await?;
        escrow::deal_facts(&mut conn, from, to).await
    }

    async fn overdue_timers(&self, before: UnixMicros) -> StoreResult<(i64, Option<UnixMicros>)> {
        let mut conn = self.pool.acquire().await?;
        operations::overdue(&mut conn, before).await
    }

    async fn add_evidence(
        &self,
        evidence: &crate::domain::escrow::Evidence,
        max_per_deal: usize,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM deals WHERE id = $1{FOR_UPDATE}"
        )))
        .bind(evidence.deal.0)
        .fetch_optional(&mut *tx)
        .await?;
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM deal_evidence WHERE deal_id = $1")
                .bind(evidence.deal.0)
                .fetch_one(&mut *tx)
                .await?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= max_per_deal {
            return Err(StoreError::Conflict(
                ConflictKind::LimitReached,
                format!(
                    "deal {} already carries {count} evidence files, the most it may",
                    evidence.deal
                ),
            ));
        }
        escrow::insert_evidence(&mut tx, evidence).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn evidence(
        &self,
        deal: crate::domain::DealId,
    ) -> StoreResult<Vec<crate::domain::escrow::Evidence>> {
        let mut conn = self.pool.acquire().await?;
        escrow::list_evidence(&mut conn, deal).await
    }

    async fn apply_deal_step(
        &self,
        step: &crate::domain::escrow::DealStep,
        audit: Option<&AuditRecord>,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        escrow::write_deal_step(&mut tx, step, None).await?;
        if let Some(a) = audit {
            insert_audit(&mut tx, a).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn claim_due_timers(
        &self,
        now: UnixMicros,
        claimer: &str,
        limit: i64,
    ) -> StoreResult<Vec<crate::timers::Timer>> {
        let (_writing, mut tx) = self.begin_write().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE timers SET claimed_by = $1, claimed_until = $2 WHERE id IN (\
             SELECT id FROM timers WHERE state = 'pending' AND due_at <= $3 AND (claimed_until IS NULL OR claimed_until < $3) \
             ORDER BY due_at, id LIMIT $4{SKIP_LOCKED}) RETURNING id, kind, deal_id, due_at, state, fired_at"
        )))
        .bind(claimer)
        .bind(now + crate::timers::CLAIM_MICROS)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut timers: Vec<crate::timers::Timer> = rows
            .iter()
            .map(|r| Ok(Timer::from_row(r)?))
            .collect::<StoreResult<_>>()?;
        // RETURNING gives no order: the runner fires them as they came due.
        timers.sort_by_key(|t| (t.due_at, t.id.0));
        Ok(timers)
    }
}
