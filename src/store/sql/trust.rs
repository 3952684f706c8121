//! Companies, trust pairs, their sessions and obligations, on both databases.

use super::*;
use crate::domain::HoldId;
use crate::domain::trust::{
    Company, Member, ObligationKind, Session, SessionState, SessionStep, Side, StoredObligation,
    TrustPair,
};
use crate::domain::trust::{Netted, Outcome};

fn invariant(what: &str, value: &str) -> StoreError {
    StoreError::Invariant(format!("{what} {value:?}"))
}

fn side(text: &str) -> StoreResult<Side> {
    match text {
        "A" => Ok(Side::A),
        "B" => Ok(Side::B),
        other => Err(invariant("trust side", other)),
    }
}

fn outcome(text: &str) -> StoreResult<Outcome> {
    match text {
        "nothing" => Ok(Outcome::Nothing),
        "full" => Ok(Outcome::Full),
        "partial" => Ok(Outcome::Partial),
        "carried" => Ok(Outcome::Carried),
        "unsettled" => Ok(Outcome::Unsettled),
        other => Err(invariant("settlement outcome", other)),
    }
}

pub(crate) async fn insert_company(conn: &mut DbConnection, c: &Company) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO companies (id, name, tier, created_by, created_at, second_factor) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(c.id)
    .bind(&c.name)
    .bind(c.tier.as_str())
    .bind(&c.created_by)
    .bind(c.created_at)
    .bind(c.second_factor)
    .execute(conn)
    .await
    .map_err(|e| match StoreError::from(e) {
        StoreError::Database(sqlx::Error::Database(d)) if d.code().as_deref() == Some(UNIQUE_VIOLATION) => {
            StoreError::Conflict(ConflictKind::Exists, format!("a company named {:?} exists", c.name))
        }
        other => other,
    })?;
    Ok(())
}

pub(crate) async fn companies(conn: &mut DbConnection) -> StoreResult<Vec<Company>> {
    Ok(sqlx::query_as(
        "SELECT id, name, tier, created_by, created_at, second_factor FROM companies ORDER BY name",
    )
    .fetch_all(conn)
    .await?)
}

pub(crate) async fn insert_member(conn: &mut DbConnection, m: &Member) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO company_members (company_id, user_name, role, added_by, added_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (company_id, user_name) DO UPDATE SET role = EXCLUDED.role, added_by = EXCLUDED.added_by, added_at = EXCLUDED.added_at",
    )
    .bind(m.company)
    .bind(&m.user)
    .bind(m.role.as_str())
    .bind(&m.added_by)
    .bind(m.added_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Members of `company`, or every membership of `user`.
pub(crate) async fn members(
    conn: &mut DbConnection,
    company: Option<uuid::Uuid>,
    user: Option<&str>,
) -> StoreResult<Vec<Member>> {
    Ok(sqlx::query_as(
        "SELECT company_id, user_name, role, added_by, added_at FROM company_members \
         WHERE ($1 IS NULL OR company_id = $1) AND ($2 IS NULL OR user_name = $2) ORDER BY company_id, user_name",
    )
    .bind(company)
    .bind(user)
    .fetch_all(conn)
    .await?)
}

const PAIR_COLUMNS: &str = "id, company_a, company_b, account_a, account_b, network, asset, limit_a_to_b, limit_b_to_a, \
    timezone, cutoff, mode, payout_address_a, payout_address_b, created_by, created_at, suspended_by, suspended_reason, suspended_at";

fn pair_from_row(r: &DbRow) -> StoreResult<TrustPair> {
    let tz: String = r.try_get("timezone")?;
    let cutoff: String = r.try_get("cutoff")?;
    Ok(TrustPair {
        id: r.try_get("id")?,
        company_a: r.try_get("company_a")?,
        company_b: r.try_get("company_b")?,
        account_a: AccountId(r.try_get("account_a")?),
        account_b: AccountId(r.try_get("account_b")?),
        asset: AssetKey::new(
            r.try_get::<String, _>("network")?,
            r.try_get::<String, _>("asset")?,
        ),
        limit_a_to_b: amount_from(r, "limit_a_to_b")?,
        limit_b_to_a: amount_from(r, "limit_b_to_a")?,
        timezone: tz.parse().map_err(|_| invariant("timezone", &tz))?,
        cutoff: crate::domain::trust::parse_cutoff(&cutoff)
            .ok_or_else(|| invariant("cutoff", &cutoff))?,
        mode: r.try_get("mode")?,
        payout_address_a: r.try_get("payout_address_a")?,
        payout_address_b: r.try_get("payout_address_b")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        suspended: match r.try_get::<Option<String>, _>("suspended_by")? {
            Some(by) => Some(crate::domain::trust::Suspension {
                by,
                reason: r
                    .try_get::<Option<String>, _>("suspended_reason")?
                    .unwrap_or_default(),
                at: r
                    .try_get::<Option<i64>, _>("suspended_at")?
                    .unwrap_or_default(),
            }),
            None => None,
        },
    })
}

pub(crate) async fn insert_pair(
    conn: &mut DbConnection,
    p: &TrustPair,
    first: &crate::domain::trust::NextSession,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO trust_pairs (id, company_a, company_b, account_a, account_b, network, asset, limit_a_to_b, limit_b_to_a, \
         timezone, cutoff, mode, payout_address_a, payout_address_b, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(p.id)
    .bind(p.company_a)
    .bind(p.company_b)
    .bind(p.account_a.0)
    .bind(p.account_b.0)
    .bind(&p.asset.network)
    .bind(&p.asset.code)
    .bind(amount_to_db(p.limit_a_to_b))
    .bind(amount_to_db(p.limit_b_to_a))
    .bind(p.timezone.name())
    .bind(p.cutoff.format("%H:%M").to_string())
    .bind(p.mode.as_str())
    .bind(&p.payout_address_a)
    .bind(&p.payout_address_b)
    .bind(&p.created_by)
    .bind(p.created_at)
    .execute(&mut *conn)
    .await?;
    open_session(conn, p.id, first).await
}

async fn open_session(
    conn: &mut DbConnection,
    pair: uuid::Uuid,
    s: &crate::domain::trust::NextSession,
) -> StoreResult<()> {
    // The session keeps the pair's mode and limits as they are now: a later change of terms
    // reaches the sessions opened after it.
    sqlx::query(
        "INSERT INTO trust_sessions (id, pair_id, business_date, cutoff_at, state, mode, limit_a_to_b, limit_b_to_a) \
         SELECT $1, $2, $3, $4, 'open', mode, limit_a_to_b, limit_b_to_a FROM trust_pairs WHERE id = $2 \
         ON CONFLICT (pair_id, business_date) DO NOTHING",
    )
    .bind(s.id)
    .bind(pair)
    .bind(s.business_date.to_string())
    .bind(s.cutoff_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn pairs(
    conn: &mut DbConnection,
    id: Option<uuid::Uuid>,
) -> StoreResult<Vec<TrustPair>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PAIR_COLUMNS} FROM trust_pairs WHERE ($1 IS NULL OR id = $1) ORDER BY id"
    )))
    .bind(id)
    .fetch_all(conn)
    .await?;
    rows.iter().map(pair_from_row).collect()
}

const SESSION_COLUMNS: &str = "id, pair_id, business_date, cutoff_at, state, frozen_seq, obligations, gross_a_to_b, gross_b_to_a, \
    outcome, settled_amount, carried_amount, hold_id, payout_id, closed_by, closed_at, settled_at, mode, limit_a_to_b, limit_b_to_a";

fn session_from_row(r: &DbRow) -> StoreResult<Session> {
    let date: String = r.try_get("business_date")?;
    Ok(Session {
        id: r.try_get("id")?,
        pair: r.try_get("pair_id")?,
        business_date: date
            .parse()
            .map_err(|_| invariant("business date", &date))?,
        cutoff_at: r.try_get("cutoff_at")?,
        state: r.try_get("state")?,
        frozen_seq: r.try_get("frozen_seq")?,
        netted: Netted {
            gross_a_to_b: amount_from(r, "gross_a_to_b")?,
            gross_b_to_a: amount_from(r, "gross_b_to_a")?,
            obligations: usize::try_from(r.try_get::<i32, _>("obligations")?).unwrap_or(0),
        },
        outcome: r
            .try_get::<Option<String>, _>("outcome")?
            .as_deref()
            .map(outcome)
            .transpose()?,
        settled_amount: amount_from(r, "settled_amount")?,
        carried_amount: amount_from(r, "carried_amount")?,
        hold: r.try_get::<Option<uuid::Uuid>, _>("hold_id")?.map(HoldId),
        payout: r
            .try_get::<Option<uuid::Uuid>, _>("payout_id")?
            .map(crate::domain::PayoutId),
        closed_by: r.try_get("closed_by")?,
        closed_at: r.try_get("closed_at")?,
        settled_at: r.try_get("settled_at")?,
        mode: r.try_get("mode")?,
        limit_a_to_b: opt_amount_from(r, "limit_a_to_b")?,
        limit_b_to_a: opt_amount_from(r, "limit_b_to_a")?,
    })
}

pub(crate) async fn session(conn: &mut DbConnection, id: uuid::Uuid) -> StoreResult<Session> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SESSION_COLUMNS} FROM trust_sessions WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    session_from_row(&row)
}

/// Sessions in cut-off order, of one pair and/or in one state, after `after` (cut-off, id).
pub(crate) async fn sessions(
    conn: &mut DbConnection,
    pair: Option<uuid::Uuid>,
    state: Option<SessionState>,
    limit: i64,
) -> StoreResult<Vec<Session>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SESSION_COLUMNS} FROM trust_sessions WHERE ($1 IS NULL OR pair_id = $1) \
         AND ($2 IS NULL OR state = $2) ORDER BY cutoff_at, id LIMIT $3"
    )))
    .bind(pair)
    .bind(state.map(|s| s.as_str()))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(session_from_row).collect()
}

/// Sessions past their cut-off and not settled (closed, settling or unsettled), oldest first.
pub(crate) async fn unsettled_sessions(conn: &mut DbConnection) -> StoreResult<Vec<Session>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SESSION_COLUMNS} FROM trust_sessions WHERE state IN ('closed', 'settling', 'unsettled') ORDER BY cutoff_at, id"
    )))
    .fetch_all(conn)
    .await?;
    rows.iter().map(session_from_row).collect()
}

/// Open sessions whose cut-off is at or before `now`.
pub(crate) async fn due_sessions(
    conn: &mut DbConnection,
    now: i64,
    limit: i64,
) -> StoreResult<Vec<Session>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SESSION_COLUMNS} FROM trust_sessions WHERE state = 'open' AND cutoff_at <= $1 ORDER BY cutoff_at LIMIT $2"
    )))
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(session_from_row).collect()
}

const OBLIGATION_COLUMNS: &str =
    "seq, id, session_id, debtor, amount, kind, reference, idempotency_key, created_by, created_at";

fn obligation_from_row(r: &DbRow) -> StoreResult<StoredObligation> {
    let kind: String = r.try_get("kind")?;
    Ok(StoredObligation {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        session: r.try_get("session_id")?,
        debtor: side(&r.try_get::<String, _>("debtor")?)?,
        amount: amount_from(r, "amount")?,
        kind: match kind.as_str() {
            "intraday" => ObligationKind::Intraday,
            "t_plus_1" => ObligationKind::TPlus1,
            other => return Err(invariant("obligation kind", other)),
        },
        reference: r.try_get("reference")?,
        idempotency_key: r.try_get("idempotency_key")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}

/// A session's obligations in sequence order, up to `through` when given.
pub(crate) async fn obligations(
    conn: &mut DbConnection,
    session: uuid::Uuid,
    through: Option<i64>,
) -> StoreResult<Vec<StoredObligation>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {OBLIGATION_COLUMNS} FROM trust_obligations WHERE session_id = $1 AND ($2 IS NULL OR seq <= $2) ORDER BY seq"
    )))
    .bind(session)
    .bind(through)
    .fetch_all(conn)
    .await?;
    rows.iter().map(obligation_from_row).collect()
}

async fn insert_obligation(conn: &mut DbConnection, o: &StoredObligation) -> StoreResult<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO trust_obligations (id, session_id, debtor, amount, kind, reference, idempotency_key, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING seq",
    )
    .bind(o.id)
    .bind(o.session)
    .bind(o.debtor.as_str())
    .bind(amount_to_db(o.amount))
    .bind(o.kind.as_str())
    .bind(&o.reference)
    .bind(&o.idempotency_key)
    .bind(&o.created_by)
    .bind(o.created_at)
    .fetch_one(conn)
    .await?)
}

/// Records an obligation in `pair`'s open session, refused (`CreditLimit`) when the debtor's
/// net exposure in that session would pass `limit`. The session row is locked meanwhile, so
/// concurrent obligations are checked one after the other and none lands in a closing session.
/// A repeated idempotency key returns the first obligation (looked up under the lock, so two
/// requests with one key at once record it once).
pub(crate) async fn record_obligation(
    conn: &mut DbConnection,
    pair: uuid::Uuid,
    o: &StoredObligation,
    headroom: &Headroom,
) -> StoreResult<StoredObligation> {
    let open = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SESSION_COLUMNS} FROM trust_sessions WHERE pair_id = $1 AND state = 'open' ORDER BY cutoff_at LIMIT 1{FOR_UPDATE}"
    )))
    .bind(pair)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::Conflict(ConflictKind::NoOpenSession, "the pair has no open session".into()))?;
    let open = session_from_row(&open)?;
    let session = open.id;
    // Read under the session's lock: a suspension committed before it refuses this one.
    let terms = pairs(conn, Some(pair))
        .await?
        .pop()
        .ok_or(StoreError::NotFound)?;
    if let Some(s) = &terms.suspended {
        return Err(StoreError::Conflict(
            ConflictKind::Suspended,
            format!("the pair is suspended ({}): no new obligations", s.reason),
        ));
    }
    // Under the session lock: a request with the same key that got here first has committed.
    if let Some(key) = &o.idempotency_key {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {OBLIGATION_COLUMNS} FROM trust_obligations WHERE idempotency_key = $1"
        )))
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = row {
            return obligation_from_row(&row);
        }
    }
    let so_far = obligations(conn, session, None).await?;
    let limits = (
        open.limit(&terms, crate::domain::trust::Side::A),
        open.limit(&terms, crate::domain::trust::Side::B),
    );
    let headroom = headroom(&so_far, limits);
    if o.amount > headroom {
        return Err(StoreError::CreditLimit {
            headroom: headroom.max(0),
            limits,
        });
    }
    let mut stored = o.clone();
    stored.session = session;
    stored.seq = insert_obligation(conn, &stored).await?;
    Ok(stored)
}

/// Applies a guarded session step (see `SessionStep`), with the posting that carries it.
pub(crate) async fn write_session_step(
    conn: &mut DbConnection,
    step: &SessionStep,
    posted: Option<&Posted>,
) -> StoreResult<()> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SESSION_COLUMNS} FROM trust_sessions WHERE id = $1{FOR_UPDATE}"
    )))
    .bind(step.session)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    let current = session_from_row(&row)?;
    if !step.from.contains(&current.state) {
        return Err(StoreError::Conflict(
            ConflictKind::StateChanged,
            format!("session {} is {}", current.id, current.state.as_str()),
        ));
    }
    if let Some(close) = &step.close {
        // Completeness: exactly the obligations the netting saw, none recorded since.
        let (count, last): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MAX(seq) FROM trust_obligations WHERE session_id = $1",
        )
        .bind(step.session)
        .fetch_one(&mut *conn)
        .await?;
        if usize::try_from(count).unwrap_or(usize::MAX) != close.netted.obligations
            || last.unwrap_or(0) != close.frozen_seq
        {
            return Err(StoreError::Conflict(
                ConflictKind::StateChanged,
                format!("session {} took an obligation while closing", step.session),
            ));
        }
        let debtor = close.netted.debtor();
        sqlx::query(
            "UPDATE trust_sessions SET frozen_seq = $1, obligations = $2, gross_a_to_b = $3, gross_b_to_a = $4, debtor = $5, \
             net_amount = $6, closed_by = $7, closed_at = $8 WHERE id = $9",
        )
        .bind(close.frozen_seq)
        .bind(i32::try_from(close.netted.obligations).unwrap_or(i32::MAX))
        .bind(amount_to_db(close.netted.gross_a_to_b))
        .bind(amount_to_db(close.netted.gross_b_to_a))
        .bind(debtor.map(|(s, _)| s.as_str()))
        .bind(amount_to_db(debtor.map_or(0, |(_, a)| a)))
        .bind(&close.by)
        .bind(step.at)
        .bind(step.session)
        .execute(&mut *conn)
        .await?;
        open_session(conn, current.pair, &close.next).await?;
    }
    let hold = match (step.takes_hold, posted.and_then(|p| p.hold.as_ref())) {
        (true, Some(h)) => Some(h.id),
        (true, None) => {
            return Err(StoreError::Invariant(
                "a settling step needs its HOLD".into(),
            ));
        }
        (false, _) => current.hold,
    };
    let settled_at = (step.to == SessionState::Settled).then_some(step.at);
    sqlx::query(
        "UPDATE trust_sessions SET state = $1, hold_id = $2, outcome = COALESCE($3, outcome), \
         settled_amount = $4, carried_amount = $5, settled_at = COALESCE(settled_at, $6), \
         payout_id = COALESCE($8, payout_id) WHERE id = $7",
    )
    .bind(step.to.as_str())
    .bind(hold.map(|h| h.0))
    .bind(step.outcome.map(|o| o.as_str()))
    .bind(amount_to_db(current.settled_amount + step.settled_amount))
    .bind(amount_to_db(
        current.carried_amount + step.carry.map_or(0, |(_, a)| a),
    ))
    .bind(settled_at)
    .bind(step.session)
    .bind(step.payout.map(|p| p.0))
    .execute(&mut *conn)
    .await?;
    if let Some((debtor, amount)) = step.carry {
        let next: uuid::Uuid = sqlx::query_scalar(
            "SELECT id FROM trust_sessions WHERE pair_id = $1 AND state = 'open' ORDER BY cutoff_at LIMIT 1",
        )
        .bind(current.pair)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::Invariant("no open session to carry into".into()))?;
        insert_obligation(
            conn,
            &StoredObligation {
                seq: 0,
                id: uuid::Uuid::now_v7(),
                session: next,
                debtor,
                amount,
                kind: ObligationKind::TPlus1,
                reference: Some(format!("T+1 from session {}", current.id)),
                idempotency_key: Some(format!("t+1:{}", current.id)),
                created_by: "treasuryd".into(),
                created_at: step.at,
            },
        )
        .await?;
    }
    Ok(())
}

#[async_trait]
impl TrustStore for DbStore {
    async fn create_company(
        &self,
        company: &crate::domain::trust::Company,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        trust::insert_company(&mut tx, company).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn companies(&self) -> StoreResult<Vec<crate::domain::trust::Company>> {
        let mut conn = self.pool.acquire().await?;
        trust::companies(&mut conn).await
    }

    async fn set_company_second_factor(
        &self,
        company: uuid::Uuid,
        required: bool,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        sqlx::query("UPDATE companies SET second_factor = $1 WHERE id = $2")
            .bind(required)
            .bind(company)
            .execute(&mut *tx)
            .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_company_tier(
        &self,
        company: uuid::Uuid,
        from: crate::domain::trust::Tier,
        tier: crate::domain::trust::Tier,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        let changed = sqlx::query("UPDATE companies SET tier = $1 WHERE id = $2 AND tier = $3")
            .bind(tier.as_str())
            .bind(company)
            .bind(from.as_str())
            .execute(&mut *tx)
            .await?;
        if changed.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                ConflictKind::StateChanged,
                format!("company {company} is no longer in tier {}", from.as_str()),
            ));
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_company_member(
        &self,
        member: &crate::domain::trust::Member,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        trust::insert_member(&mut tx, member).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn company_members(
        &self,
        company: Option<uuid::Uuid>,
        user: Option<&str>,
    ) -> StoreResult<Vec<crate::domain::trust::Member>> {
        let mut conn = self.pool.acquire().await?;
        trust::members(&mut conn, company, user).await
    }

    async fn create_trust_pair(
        &self,
        pair: &crate::domain::trust::TrustPair,
        first: &crate::domain::trust::NextSession,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        trust::insert_pair(&mut tx, pair, first).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_trust_pair_terms(
        &self,
        pair: uuid::Uuid,
        terms: &crate::domain::trust::PairTerms,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE trust_pairs SET limit_a_to_b = COALESCE($1, limit_a_to_b), limit_b_to_a = COALESCE($2, limit_b_to_a), \
             timezone = COALESCE($3, timezone), cutoff = COALESCE($4, cutoff), mode = COALESCE($5, mode) WHERE id = $6",
        )
        .bind(terms.limit_a_to_b.map(amount_to_db))
        .bind(terms.limit_b_to_a.map(amount_to_db))
        .bind(terms.timezone.map(|t| t.name()))
        .bind(terms.cutoff.map(|c| c.format("%H:%M").to_string()))
        .bind(terms.mode.map(|m| m.as_str()))
        .bind(pair)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_trust_pair_suspension(
        &self,
        pair: uuid::Uuid,
        suspension: Option<&crate::domain::trust::Suspension>,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE trust_pairs SET suspended_by = $1, suspended_reason = $2, suspended_at = $3 WHERE id = $4",
        )
        .bind(suspension.map(|s| s.by.as_str()))
        .bind(suspension.map(|s| s.reason.as_str()))
        .bind(suspension.map(|s| s.at))
        .bind(pair)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn trust_pairs(
        &self,
        id: Option<uuid::Uuid>,
    ) -> StoreResult<Vec<crate::domain::trust::TrustPair>> {
        let mut conn = self.pool.acquire().await?;
        trust::pairs(&mut conn, id).await
    }

    async fn trust_session(&self, id: uuid::Uuid) -> StoreResult<crate::domain::trust::Session> {
        let mut conn = self.pool.acquire().await?;
        trust::session(&mut conn, id).await
    }

    async fn trust_sessions(
        &self,
        pair: Option<uuid::Uuid>,
        state: Option<crate::domain::trust::SessionState>,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::trust::Session>> {
        let mut conn = self.pool.acquire().await?;
        trust::sessions(&mut conn, pair, state, limit).await
    }

    async fn due_trust_sessions(
        &self,
        now: UnixMicros,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::trust::Session>> {
        let mut conn = self.pool.acquire().await?;
        trust::due_sessions(&mut conn, now, limit).await
    }

    async fn unsettled_trust_sessions(&self) -> StoreResult<Vec<crate::domain::trust::Session>> {
        let mut conn = self.pool.acquire().await?;
        trust::unsettled_sessions(&mut conn).await
    }

    async fn trust_obligations(
        &self,
        session: uuid::Uuid,
        through: Option<i64>,
    ) -> StoreResult<Vec<crate::domain::trust::StoredObligation>> {
        let mut conn = self.pool.acquire().await?;
        trust::obligations(&mut conn, session, through).await
    }

    async fn record_trust_obligation(
        &self,
        pair: uuid::Uuid,
        obligation: &crate::domain::trust::StoredObligation,
        headroom: &Headroom,
        audit: &AuditRecord,
    ) -> StoreResult<crate::domain::trust::StoredObligation> {
        let (_writing, mut tx) = self.begin_write().await?;
        let stored = trust::record_obligation(&mut tx, pair, obligation, headroom).await?;
        if stored.id == obligation.id {
            insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    async fn apply_session_step(
        &self,
        step: &crate::domain::trust::SessionStep,
        audit: Option<&AuditRecord>,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        trust::write_session_step(&mut tx, step, None).await?;
        if let Some(a) = audit {
            insert_audit(&mut tx, a).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
