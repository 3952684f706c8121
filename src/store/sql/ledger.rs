//! Accounts, holds, journal transactions, leases and the audit log as rows, and what a posted
//! transaction's effects write beside it, on both databases.

use super::*;

pub(crate) const ACCOUNT_COLUMNS: &str =
    "id, owner, company_id, network, asset, kind, allow_negative, available, held, created_at";

pub(crate) const HOLD_SELECT: &str = "SELECT h.id, h.account_id, a.network, a.asset, h.amount, h.released, h.voided, h.state, \
     h.reference, h.created_at, h.resolved_at FROM holds h JOIN accounts a ON a.id = h.account_id";

pub(crate) const JOURNAL_COLUMNS: &str = "seq, id, kind, network, asset, hold_id, idempotency_key, request_hash, reference, memo, actor, created_at, hash";

pub(crate) fn account_from_row(row: &DbRow) -> StoreResult<Account> {
    Ok(Account {
        id: AccountId(row.try_get("id")?),
        owner: row.try_get("owner")?,
        company: row.try_get("company_id")?,
        asset: AssetKey::new(
            row.try_get::<String, _>("network")?,
            row.try_get::<String, _>("asset")?,
        ),
        kind: row.try_get("kind")?,
        allow_negative: row.try_get("allow_negative")?,
        available: units(row.try_get("available")?)?,
        held: units(row.try_get("held")?)?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) fn hold_from_row(row: &DbRow) -> StoreResult<Hold> {
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
        state: row.try_get("state")?,
        reference: row.try_get("reference")?,
        created_at: row.try_get("created_at")?,
        resolved_at: row.try_get("resolved_at")?,
    })
}

pub(crate) fn journal_from_row(row: &DbRow) -> StoreResult<JournalTx> {
    Ok(JournalTx {
        seq: row.try_get("seq")?,
        id: TxId(row.try_get("id")?),
        kind: row.try_get("kind")?,
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

/// A chunk paid by a journal transaction (`Effect::ChunkConfirmed`), waiting to be written
/// with the others of its run.
struct Confirmation {
    chunk: ChunkId,
    payout: PayoutId,
    at: i64,
    seq: i64,
}

/// Marks the chunks confirmed with their events, then each of their payouts whose chunks are
/// now all confirmed, with its event: what `Effect::ChunkConfirmed` does, for many at once.
async fn confirm_chunks(conn: &mut DbConnection, run: Vec<Confirmation>) -> StoreResult<()> {
    let Some(at) = run.iter().map(|c| c.at).max() else {
        return Ok(());
    };
    let chunks: Vec<Uuid> = run.iter().map(|c| c.chunk.0).collect();
    for part in chunks.chunks(ROWS_PER_STATEMENT) {
        let mut qb =
            QueryBuilder::new("UPDATE payout_chunks SET state = 'confirmed', updated_at = ");
        qb.push_bind(at);
        qb.push(" WHERE id");
        any_of(&mut qb, part);
        qb.build().execute(&mut *conn).await?;
    }
    insert_events(
        conn,
        at,
        run.iter().map(|c| {
            (
                c.payout.0,
                "chunk_confirmed",
                format!("chunk {} paid in journal seq {}", c.chunk, c.seq),
            )
        }),
    )
    .await?;
    let mut payouts: Vec<Uuid> = run.iter().map(|c| c.payout.0).collect();
    payouts.sort_unstable();
    payouts.dedup();
    let mut done: Vec<Uuid> = Vec::new();
    for part in payouts.chunks(ROWS_PER_STATEMENT) {
        let mut qb = QueryBuilder::new("UPDATE payouts SET state = 'confirmed', updated_at = ");
        qb.push_bind(at);
        qb.push(" WHERE id");
        any_of(&mut qb, part);
        qb.push(
            " AND NOT EXISTS (SELECT 1 FROM payout_chunks c WHERE c.payout_id = payouts.id \
             AND c.state <> 'confirmed') RETURNING id",
        );
        for row in qb.build().fetch_all(&mut *conn).await? {
            done.push(row.try_get("id")?);
        }
    }
    // In the order the run confirmed them.
    let mut first: std::collections::HashMap<Uuid, usize> = std::collections::HashMap::new();
    for (i, c) in run.iter().enumerate() {
        first.entry(c.payout.0).or_insert(i);
    }
    done.sort_by_key(|p| first.get(p).copied());
    insert_events(
        conn,
        at,
        done.into_iter()
            .map(|p| (p, "confirmed", "every chunk confirmed".to_owned())),
    )
    .await
}

/// The hold a new payout's command placed.
fn payout_hold(posted: &Posted) -> StoreResult<HoldId> {
    posted
        .hold
        .as_ref()
        .map(|h| h.id)
        .ok_or_else(|| StoreError::Invariant("a payout must come with a HOLD".into()))
}

/// Writes what `effect` says beside the journal transaction `posted`, in its database
/// transaction (a new payout's starting state goes into `posted`).
pub(crate) async fn write_effect(
    conn: &mut DbConnection,
    effect: &Effect,
    posted: &mut Posted,
) -> StoreResult<()> {
    match effect {
        Effect::NewPayout(p) => {
            let hold = payout_hold(posted)?;
            posted.payout_state = Some(insert_payout(conn, p, hold, posted.tx.created_at).await?);
            Ok(())
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
                return Err(StoreError::Conflict(
                    ConflictKind::StateChanged,
                    format!("payout {payout} is no longer {}", from.join(" or ")),
                ));
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

/// The postings of `txs`, read back in their order.
pub(crate) async fn attach_postings(
    conn: &mut DbConnection,
    txs: &mut [JournalTx],
) -> StoreResult<()> {
    let index: std::collections::HashMap<i64, usize> =
        txs.iter().enumerate().map(|(i, t)| (t.seq, i)).collect();
    let seqs: Vec<i64> = txs.iter().map(|t| t.seq).collect();
    for part in seqs.chunks(ROWS_PER_STATEMENT) {
        let mut qb =
            QueryBuilder::new("SELECT seq, account_id, bucket, amount FROM postings WHERE seq");
        any_of(&mut qb, part);
        qb.push(" ORDER BY seq, idx");
        for row in qb.build().fetch_all(&mut *conn).await? {
            let seq: i64 = row.try_get("seq")?;
            let Some(&i) = index.get(&seq) else { continue };
            txs[i].postings.push(Posting {
                account: AccountId(row.try_get("account_id")?),
                bucket: row.try_get("bucket")?,
                amount: amount_from(&row, "amount")?,
            });
        }
    }
    Ok(())
}

pub(crate) async fn insert_audits(
    conn: &mut DbConnection,
    audits: &[&AuditRecord],
) -> StoreResult<()> {
    let rows = BulkRows::new()
        .col("id", audits.iter().map(|_| Uuid::now_v7()))
        .col("at", audits.iter().map(|a| a.at))
        .col("actor", audits.iter().map(|a| a.actor.clone()))
        .col("role", audits.iter().map(|a| a.role.as_str()))
        .col("action", audits.iter().map(|a| a.action.clone()))
        .col("target", audits.iter().map(|a| a.target.clone()))
        .col("reason", audits.iter().map(|a| a.reason.clone()))
        .col("request_id", audits.iter().map(|a| a.request_id.clone()))
        .col(
            "evidence",
            audits
                .iter()
                .map(|a| a.evidence.as_ref().map(|e| e.to_string())),
        );
    let head = format!("INSERT INTO audit_log ({}) ", rows.names());
    bulk(conn, &head, rows, "").await?;
    Ok(())
}

/// A ledger write transaction, as `run_batch` sees it.
pub(crate) struct DbTxn {
    pub(crate) tx: sqlx::Transaction<'static, Db>,
}

#[async_trait]
impl LedgerTxn for DbTxn {
    // Locked in id order, so two batches never wait on each other in a cycle.
    async fn lock_holds(&mut self, ids: &[HoldId]) -> StoreResult<Vec<Hold>> {
        let ids: Vec<Uuid> = ids.iter().map(|h| h.0).collect();
        let mut out = Vec::with_capacity(ids.len());
        for part in ids.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::new(format!("{HOLD_SELECT} WHERE h.id"));
            any_of(&mut qb, part);
            qb.push(format!(" ORDER BY h.id{}", for_update_of("h")));
            for row in qb.build().fetch_all(&mut *self.tx).await? {
                out.push(hold_from_row(&row)?);
            }
        }
        Ok(out)
    }

    async fn lock_accounts(&mut self, ids: &[AccountId]) -> StoreResult<Vec<Account>> {
        let ids: Vec<Uuid> = ids.iter().map(|a| a.0).collect();
        let mut out = Vec::with_capacity(ids.len());
        for part in ids.chunks(ROWS_PER_STATEMENT) {
            let mut qb =
                QueryBuilder::new(format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id"));
            any_of(&mut qb, part);
            qb.push(format!(" ORDER BY id{FOR_UPDATE}"));
            for row in qb.build().fetch_all(&mut *self.tx).await? {
                out.push(account_from_row(&row)?);
            }
        }
        Ok(out)
    }

    async fn find_idempotency_keys(
        &mut self,
        keys: &[String],
    ) -> StoreResult<Vec<(String, [u8; 32], TxId)>> {
        find_idempotency_keys(&mut self.tx, keys).await
    }

    async fn lock_usage(
        &mut self,
        quotas: &[&crate::domain::tiers::Quota],
    ) -> StoreResult<Vec<crate::domain::tiers::Used>> {
        let mut out = Vec::with_capacity(quotas.len());
        for q in quotas {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT id FROM companies WHERE id = $1{FOR_UPDATE}"
            )))
            .bind(q.company)
            .fetch_optional(&mut *self.tx)
            .await?;
            out.push(
                company_usage(
                    &mut self.tx,
                    q.company,
                    &q.spec.key,
                    q.day_start,
                    q.month_start,
                )
                .await?,
            );
        }
        Ok(out)
    }

    async fn load_posted(&mut self, tx: TxId) -> StoreResult<Posted> {
        let tx = load_transaction(&mut self.tx, tx).await?;
        let hold = match tx.hold {
            Some(h) => Some(load_hold(&mut self.tx, h).await?),
            None => None,
        };
        Ok(Posted {
            tx,
            hold,
            replayed: true,
            payout_state: None,
        })
    }

    async fn write_balances(&mut self, accounts: &[&Account]) -> StoreResult<()> {
        let rows = BulkRows::new()
            .col("id", accounts.iter().map(|a| a.id.0))
            .col("available", accounts.iter().map(|a| Some(a.available)))
            .col("held", accounts.iter().map(|a| Some(a.held)));
        bulk(
            &mut self.tx,
            "UPDATE accounts SET available = u.available, held = u.held, version = version + 1 FROM (",
            rows,
            ") AS u WHERE accounts.id = u.id",
        )
        .await?;
        Ok(())
    }

    async fn write_holds(&mut self, holds: &[&Hold]) -> StoreResult<()> {
        let rows = BulkRows::new()
            .col("id", holds.iter().map(|h| h.id.0))
            .col("account_id", holds.iter().map(|h| h.account.0))
            .col("amount", holds.iter().map(|h| Some(h.amount)))
            .col("released", holds.iter().map(|h| Some(h.released)))
            .col("voided", holds.iter().map(|h| Some(h.voided)))
            .col("state", holds.iter().map(|h| h.state.as_str()))
            .col("reference", holds.iter().map(|h| h.reference.clone()))
            .col("created_at", holds.iter().map(|h| h.created_at))
            .col("resolved_at", holds.iter().map(|h| h.resolved_at));
        bulk(
            &mut self.tx,
            &format!("INSERT INTO holds ({}) ", rows.names()),
            rows,
            " ON CONFLICT (id) DO UPDATE SET released = excluded.released, voided = excluded.voided, \
             state = excluded.state, resolved_at = excluded.resolved_at",
        )
        .await?;
        Ok(())
    }

    async fn append_journal(&mut self, txs: &mut [JournalTx]) -> StoreResult<()> {
        let head = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT seq, hash FROM ledger_head WHERE id = 1{FOR_UPDATE}"
        )))
        .fetch_one(&mut *self.tx)
        .await?;
        let mut seq: i64 = head.try_get("seq")?;
        let mut hash = hash32(head.try_get("hash")?)?;
        for tx in txs.iter_mut() {
            seq += 1;
            tx.seq = seq;
            hash = JournalTx::chain_hash(&hash, &tx.content_digest());
            tx.hash = hash;
        }
        let rows = BulkRows::new()
            .col("seq", txs.iter().map(|t| t.seq))
            .col("id", txs.iter().map(|t| t.id.0))
            .col("kind", txs.iter().map(|t| t.kind.as_str()))
            .col("network", txs.iter().map(|t| t.asset.network.clone()))
            .col("asset", txs.iter().map(|t| t.asset.code.clone()))
            .col("hold_id", txs.iter().map(|t| t.hold.map(|h| h.0)))
            .col(
                "idempotency_key",
                txs.iter().map(|t| t.idempotency_key.clone()),
            )
            .col(
                "request_hash",
                txs.iter().map(|t| Some(t.request_hash.to_vec())),
            )
            .col("reference", txs.iter().map(|t| t.reference.clone()))
            .col("memo", txs.iter().map(|t| t.memo.clone()))
            .col("actor", txs.iter().map(|t| t.actor.clone()))
            .col("created_at", txs.iter().map(|t| t.created_at))
            .col("hash", txs.iter().map(|t| Some(t.hash.to_vec())));
        let insert = format!("INSERT INTO journal_transactions ({}) ", rows.names());
        bulk(&mut self.tx, &insert, rows, "").await?;
        let postings: Vec<(i64, i64, &Posting)> = txs
            .iter()
            .flat_map(|t| {
                t.postings
                    .iter()
                    .enumerate()
                    .map(move |(i, p)| (t.seq, i as i64, p))
            })
            .collect();
        let rows = BulkRows::new()
            .col("seq", postings.iter().map(|(seq, _, _)| *seq))
            .col("idx", postings.iter().map(|(_, idx, _)| *idx))
            .col("account_id", postings.iter().map(|(_, _, p)| p.account.0))
            .col("bucket", postings.iter().map(|(_, _, p)| p.bucket.as_str()))
            .col("amount", postings.iter().map(|(_, _, p)| Some(p.amount)));
        let insert = format!("INSERT INTO postings ({}) ", rows.names());
        bulk(&mut self.tx, &insert, rows, "").await?;
        sqlx::query("UPDATE ledger_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(seq)
            .bind(hash.as_slice())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}

impl DbStore {
    /// One group-commit batch in one write transaction: the ledger's postings, then the
    /// audits and effects of the commands that were not replays.
    pub(crate) async fn post_once(
        &self,
        commands: &[Command],
        turn: &WriteTurn,
    ) -> StoreResult<Vec<Result<Posted, LedgerError>>> {
        let (_writing, tx) = self.begin_write_in(turn).await?;
        let mut txn = DbTxn { tx };
        let mut results = run_batch(&mut txn, commands, self.clock.now()).await?;
        let audits: Vec<&AuditRecord> = commands
            .iter()
            .zip(&results)
            .filter(|(_, r)| matches!(r, Ok(p) if !p.replayed))
            .filter_map(|(c, _)| c.audit.as_ref())
            .collect();
        insert_audits(&mut txn.tx, &audits).await?;
        // Effects in command order; a run of chunk confirmations (a settlement batch: PAYOUT,
        // FEE, PAYOUT, FEE…) is written as a few multi-row statements instead of three or four
        // round trips a chunk, with the same outcome.
        // Likewise a run of new payouts (accepted requests) goes in as three statements.
        let mut confirmations: Vec<Confirmation> = Vec::new();
        let mut new_payouts: Vec<(&NewPayout, HoldId, i64)> = Vec::new();
        for (cmd, result) in commands.iter().zip(&mut results) {
            if let Ok(posted) = result
                && !posted.replayed
            {
                for effect in &cmd.effects {
                    match effect {
                        Effect::ChunkConfirmed { chunk, payout } => {
                            confirmations.push(Confirmation {
                                chunk: *chunk,
                                payout: *payout,
                                at: posted.tx.created_at,
                                seq: posted.tx.seq,
                            });
                            continue;
                        }
                        Effect::NewPayout(p) if !needs_rolling_reading(p) => {
                            let hold = payout_hold(posted)?;
                            // Its state is its own: known now, written with its run.
                            posted.payout_state = Some(p.state);
                            new_payouts.push((p, hold, posted.tx.created_at));
                            continue;
                        }
                        _ => {}
                    }
                    confirm_chunks(&mut txn.tx, std::mem::take(&mut confirmations)).await?;
                    insert_payouts(&mut txn.tx, &std::mem::take(&mut new_payouts)).await?;
                    write_effect(&mut txn.tx, effect, posted).await?;
                }
            }
        }
        confirm_chunks(&mut txn.tx, confirmations).await?;
        insert_payouts(&mut txn.tx, &new_payouts).await?;
        txn.tx.commit().await?;
        Ok(results)
    }
}

pub(crate) fn parse_role(text: &str) -> StoreResult<Role> {
    Role::parse(text).ok_or_else(|| StoreError::Invariant(format!("role {text:?}")))
}

#[async_trait]
impl LedgerStore for DbStore {
    async fn register_asset(&self, spec: &AssetSpec) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO assets (network, code, decimals) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(&spec.key.network)
        .bind(&spec.key.code)
        .bind(i32::from(spec.decimals))
        .execute(&mut *tx)
        .await?;
        let stored: i32 = sqlx::query_scalar(
            "SELECT CAST(decimals AS INTEGER) FROM assets WHERE network = $1 AND code = $2",
        )
        .bind(&spec.key.network)
        .bind(&spec.key.code)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        if stored != i32::from(spec.decimals) {
            return Err(StoreError::AssetDecimalsChanged {
                asset: spec.key.clone(),
                stored: u8::try_from(stored).unwrap_or(u8::MAX),
                configured: spec.decimals,
            });
        }
        Ok(())
    }

    async fn ensure_system_account(
        &self,
        asset: &AssetKey,
        kind: AccountKind,
    ) -> StoreResult<Account> {
        let (_writing, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO accounts (id, owner, network, asset, kind, allow_negative, created_at) \
             VALUES ($1, 'system', $2, $3, $4, $5, $6) ON CONFLICT (owner, network, asset, kind) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(&asset.network)
        .bind(&asset.code)
        .bind(kind.as_str())
        .bind(kind.system_allows_negative())
        .bind(self.clock.now())
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE owner = 'system' AND network = $1 AND asset = $2 AND kind = $3"
        )))
        .bind(&asset.network)
        .bind(&asset.code)
        .bind(kind.as_str())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        account_from_row(&row)
    }

    async fn create_account(&self, new: &NewAccount, audit: &AuditRecord) -> StoreResult<Account> {
        let (_writing, mut tx) = self.begin_write().await?;
        let id = AccountId::new();
        let inserted = sqlx::query(
            "INSERT INTO accounts (id, owner, network, asset, kind, allow_negative, created_at, company_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (owner, network, asset, kind) DO NOTHING",
        )
        .bind(id.0)
        .bind(&new.owner)
        .bind(&new.asset.network)
        .bind(&new.asset.code)
        .bind(new.kind.as_str())
        .bind(new.allow_negative)
        .bind(audit.at)
        .bind(new.company)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                ConflictKind::Exists,
                format!(
                    "owner {} already has a {} account for {}",
                    new.owner,
                    new.kind.as_str(),
                    new.asset
                ),
            ));
        }
        let mut audit = audit.clone();
        audit.target = format!("account:{id}");
        insert_audit(&mut tx, &audit).await?;
        tx.commit().await?;
        self.get_account(id).await
    }

    async fn get_account(&self, id: AccountId) -> StoreResult<Account> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"
        )))
        .bind(id.0)
        .fetch_one(&self.pool)
        .await?;
        account_from_row(&row)
    }

    async fn list_accounts(&self, f: &AccountFilter) -> StoreResult<Vec<Account>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE (CAST($1 AS TEXT) IS NULL OR owner = $1) AND (CAST($2 AS TEXT) IS NULL OR network = $2) \
             AND (CAST($3 AS TEXT) IS NULL OR asset = $3) AND (CAST($4 AS TEXT) IS NULL OR kind = $4) AND (CAST($5 AS UUID) IS NULL OR id > $5) \
             AND (CAST($6 AS UUID) IS NULL OR company_id = $6) ORDER BY id LIMIT $7"
        )))
        .bind(&f.owner)
        .bind(f.asset.as_ref().map(|a| a.network.clone()))
        .bind(f.asset.as_ref().map(|a| a.code.clone()))
        .bind(f.kind.map(|k| k.as_str()))
        .bind(f.after.map(|a| a.0))
        .bind(f.company)
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(account_from_row).collect()
    }

    async fn write_turn(&self) -> WriteTurn {
        self.take_write_turn().await
    }

    async fn post_batch(
        &self,
        commands: &[Command],
        turn: &WriteTurn,
    ) -> StoreResult<Vec<Result<Posted, LedgerError>>> {
        (|| self.post_once(commands, turn))
            .retry(retry_policy())
            .when(StoreError::is_retryable)
            .await
    }

    async fn get_transaction(&self, id: TxId) -> StoreResult<JournalTx> {
        let mut conn = self.pool.acquire().await?;
        load_transaction(&mut conn, id).await
    }

    async fn list_journal(&self, f: &JournalFilter) -> StoreResult<Vec<JournalTx>> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOURNAL_COLUMNS} FROM journal_transactions WHERE seq > $1 \
             AND (CAST($2 AS UUID) IS NULL OR seq IN (SELECT seq FROM postings WHERE account_id = $2 AND seq > $1)) \
             AND (CAST($3 AS TEXT) IS NULL OR kind = $3) AND (CAST($4 AS BIGINT) IS NULL OR created_at >= $4) \
             AND (CAST($5 AS BIGINT) IS NULL OR created_at < $5) \
             AND (CAST($7 AS UUID) IS NULL OR seq IN (SELECT p.seq FROM postings p JOIN accounts a ON a.id = p.account_id \
                  WHERE a.company_id = $7 AND p.seq > $1)) ORDER BY seq LIMIT $6"
        )))
        .bind(f.after_seq)
        .bind(f.account.map(|a| a.0))
        .bind(f.kind.map(|k| k.as_str()))
        .bind(f.from)
        .bind(f.to)
        .bind(f.limit)
        .bind(f.company)
        .fetch_all(&mut *conn)
        .await?;
        let mut txs = rows
            .iter()
            .map(journal_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        attach_postings(&mut conn, &mut txs).await?;
        Ok(txs)
    }

    async fn get_hold(&self, id: HoldId) -> StoreResult<Hold> {
        let mut conn = self.pool.acquire().await?;
        load_hold(&mut conn, id).await
    }

    async fn list_holds(&self, after: Option<HoldId>, limit: i64) -> StoreResult<Vec<Hold>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{HOLD_SELECT} WHERE (CAST($1 AS UUID) IS NULL OR h.id > $1) ORDER BY h.id LIMIT $2"
        )))
        .bind(after.map(|h| h.0))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(hold_from_row).collect()
    }

    async fn journal_head(&self) -> StoreResult<(i64, [u8; 32])> {
        let row = sqlx::query("SELECT seq, hash FROM ledger_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get("seq")?, hash32(row.try_get("hash")?)?))
    }
}
