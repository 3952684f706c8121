//! SQLite store: the embedded default. One file in the data directory, WAL, `synchronous=FULL`
//! (an acknowledged ledger write survives power loss, not only a crash), and every write in
//! `BEGIN IMMEDIATE` so writers queue on the lock up front instead of failing mid-transaction.

#[path = "sql/mod.rs"]
#[allow(clippy::duplicate_mod, reason = "compiled once per backend on purpose")]
mod sql;

use super::*;
use sql::ledger::*;
use sql::payouts::*;

use crate::domain::AssetSpec;
use crate::domain::payouts::RolloutPhase;
use crate::domain::payouts::{
    Attempt, AttemptKind, CancelRequest, Chunk, ChunkState, ChunkWork, InFlight, Mined, NewPayout,
    Payout, PayoutEvent, PayoutState,
};
use crate::domain::{ChunkId, PayoutId};
use crate::ledger::{Bucket, Effect, HoldState, Posting, batch::run_batch};
use backon::Retryable;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

/// What the SQL shared by both backends (`store/sql/`) is compiled against here.
type Db = Sqlite;
type DbRow = SqliteRow;
const BACKEND: Backend = Backend::Sqlite;
type DbStore = SqliteStore;
type DbConnection = sqlx::SqliteConnection;

pub struct SqliteStore {
    pool: SqlitePool,
    /// SQLite has one writer at a time. Queueing writers here, in order, instead of in SQLite's
    /// busy handler (which sleeps and retries) keeps write latency flat under contention.
    write_lock: tokio::sync::Mutex<()>,
}

impl SqliteStore {
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            write_lock: tokio::sync::Mutex::new(()),
        })
    }

    async fn begin_write(
        &self,
    ) -> StoreResult<(
        tokio::sync::MutexGuard<'_, ()>,
        Transaction<'static, Sqlite>,
    )> {
        let guard = self.write_lock.lock().await;
        Ok((guard, self.pool.begin_with("BEGIN IMMEDIATE").await?))
    }

    async fn post_once(
        &self,
        commands: &[Command],
    ) -> StoreResult<Vec<Result<Posted, LedgerError>>> {
        let (_writing, tx) = self.begin_write().await?;
        let mut txn = SqliteTxn { tx };
        let results = run_batch(&mut txn, commands, now_micros()).await?;
        let audits: Vec<&AuditRecord> = commands
            .iter()
            .zip(&results)
            .filter(|(_, r)| matches!(r, Ok(p) if !p.replayed))
            .filter_map(|(c, _)| c.audit.as_ref())
            .collect();
        insert_audits(&mut txn.tx, &audits).await?;
        for (cmd, result) in commands.iter().zip(&results) {
            if let Ok(posted) = result
                && !posted.replayed
            {
                for effect in &cmd.effects {
                    write_effect(&mut txn.tx, effect, posted).await?;
                }
            }
        }
        txn.tx.commit().await?;
        Ok(results)
    }
}

fn units(text: &str) -> StoreResult<i128> {
    text.parse()
        .map_err(|_| StoreError::Invariant(format!("stored amount {text:?} is not an integer")))
}

/// Amounts are TEXT here (SQLite's integers stop at 64 bits).
type DbAmount = String;

fn amount_from(r: &DbRow, col: &str) -> StoreResult<i128> {
    units(&r.try_get::<String, _>(col)?)
}

fn opt_amount_from(r: &DbRow, col: &str) -> StoreResult<Option<i128>> {
    r.try_get::<Option<String>, _>(col)?
        .as_deref()
        .map(units)
        .transpose()
}

fn amount_to_db(x: i128) -> DbAmount {
    x.to_string()
}

/// None needed: every write transaction holds the database lock from `BEGIN IMMEDIATE`.
const FOR_UPDATE: &str = "";
/// `SQLITE_CONSTRAINT_UNIQUE`.
const UNIQUE_VIOLATION: &str = "2067";

async fn attach_postings(
    conn: &mut sqlx::SqliteConnection,
    txs: &mut [JournalTx],
) -> StoreResult<()> {
    let (Some(first), Some(last)) = (txs.first().map(|t| t.seq), txs.last().map(|t| t.seq)) else {
        return Ok(());
    };
    let rows = sqlx::query("SELECT seq, account_id, bucket, amount FROM postings WHERE seq BETWEEN ? AND ? ORDER BY seq, idx")
        .bind(first.min(last))
        .bind(first.max(last))
        .fetch_all(&mut *conn)
        .await?;
    let index: std::collections::HashMap<i64, usize> =
        txs.iter().enumerate().map(|(i, t)| (t.seq, i)).collect();
    for row in rows {
        let seq: i64 = row.try_get("seq")?;
        let Some(&i) = index.get(&seq) else { continue };
        let bucket: String = row.try_get("bucket")?;
        txs[i].postings.push(Posting {
            account: AccountId(row.try_get("account_id")?),
            bucket: Bucket::parse(&bucket)
                .ok_or_else(|| StoreError::Invariant(format!("bucket {bucket:?}")))?,
            amount: units(row.try_get("amount")?)?,
        });
    }
    Ok(())
}

async fn insert_audits(
    conn: &mut sqlx::SqliteConnection,
    audits: &[&AuditRecord],
) -> StoreResult<()> {
    for audit in audits {
        insert_audit(&mut *conn, audit).await?;
    }
    Ok(())
}

struct SqliteTxn {
    tx: Transaction<'static, Sqlite>,
}

/// Rows per multi-row statement: far below SQLite's bound-parameter limit (32,766) even at
/// 13 columns, and few enough statements per batch that per-statement overhead stays small.
const ROWS_PER_STATEMENT: usize = 200;

/// ` IN (…)` over `values`, one bind each: SQLite has no arrays (hence `ROWS_PER_STATEMENT`).
fn any_of<T>(qb: &mut QueryBuilder<Sqlite>, values: &[T])
where
    T: Clone + for<'t> sqlx::Encode<'t, Sqlite> + sqlx::Type<Sqlite>,
{
    qb.push(" IN (");
    let mut sep = qb.separated(", ");
    for v in values {
        sep.push_bind(v.clone());
    }
    sep.push_unseparated(")");
}

#[async_trait]
impl LedgerTxn for SqliteTxn {
    // BEGIN IMMEDIATE already holds the database's single write lock: plain reads lock.
    async fn lock_holds(&mut self, ids: &[HoldId]) -> StoreResult<Vec<Hold>> {
        let ids: Vec<Uuid> = ids.iter().map(|h| h.0).collect();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::new(format!("{HOLD_SELECT} WHERE h.id"));
            any_of(&mut qb, chunk);
            for row in qb.build().fetch_all(&mut *self.tx).await? {
                out.push(hold_from_row(&row)?);
            }
        }
        Ok(out)
    }

    async fn lock_accounts(&mut self, ids: &[AccountId]) -> StoreResult<Vec<Account>> {
        let ids: Vec<Uuid> = ids.iter().map(|a| a.0).collect();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut qb =
                QueryBuilder::new(format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id"));
            any_of(&mut qb, chunk);
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
        let mut out = Vec::new();
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::new(
                "SELECT idempotency_key, request_hash, id FROM journal_transactions WHERE idempotency_key",
            );
            any_of(&mut qb, chunk);
            for row in qb.build().fetch_all(&mut *self.tx).await? {
                out.push((
                    row.try_get("idempotency_key")?,
                    hash32(row.try_get("request_hash")?)?,
                    TxId(row.try_get("id")?),
                ));
            }
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
        })
    }

    async fn write_balances(&mut self, accounts: &[&Account]) -> StoreResult<()> {
        for chunk in accounts.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::new(
                "UPDATE accounts SET available = v.column2, held = v.column3, version = version + 1 FROM (",
            );
            qb.push_values(chunk, |mut row, a| {
                row.push_bind(a.id.0)
                    .push_bind(a.available.to_string())
                    .push_bind(a.held.to_string());
            });
            qb.push(") AS v WHERE accounts.id = v.column1");
            qb.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    async fn write_holds(&mut self, holds: &[&Hold]) -> StoreResult<()> {
        for chunk in holds.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::new(
                "INSERT INTO holds (id, account_id, amount, released, voided, state, reference, created_at, resolved_at) ",
            );
            qb.push_values(chunk, |mut row, h| {
                row.push_bind(h.id.0)
                    .push_bind(h.account.0)
                    .push_bind(h.amount.to_string())
                    .push_bind(h.released.to_string())
                    .push_bind(h.voided.to_string())
                    .push_bind(h.state.as_str())
                    .push_bind(h.reference.clone())
                    .push_bind(h.created_at)
                    .push_bind(h.resolved_at);
            });
            qb.push(
                " ON CONFLICT (id) DO UPDATE SET released = excluded.released, voided = excluded.voided, \
                 state = excluded.state, resolved_at = excluded.resolved_at",
            );
            qb.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    async fn append_journal(&mut self, txs: &mut [JournalTx]) -> StoreResult<()> {
        let head = sqlx::query("SELECT seq, hash FROM ledger_head WHERE id = 1")
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
        for chunk in txs.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::new(
                "INSERT INTO journal_transactions (seq, id, kind, network, asset, hold_id, idempotency_key, request_hash, \
                 reference, memo, actor, created_at, hash) ",
            );
            qb.push_values(chunk, |mut row, tx| {
                row.push_bind(tx.seq)
                    .push_bind(tx.id.0)
                    .push_bind(tx.kind.as_str())
                    .push_bind(tx.asset.network.clone())
                    .push_bind(tx.asset.code.clone())
                    .push_bind(tx.hold.map(|h| h.0))
                    .push_bind(tx.idempotency_key.clone())
                    .push_bind(tx.request_hash.to_vec())
                    .push_bind(tx.reference.clone())
                    .push_bind(tx.memo.clone())
                    .push_bind(tx.actor.clone())
                    .push_bind(tx.created_at)
                    .push_bind(tx.hash.to_vec());
            });
            qb.build().execute(&mut *self.tx).await?;
        }
        let postings: Vec<(i64, i64, &Posting)> = txs
            .iter()
            .flat_map(|t| {
                t.postings
                    .iter()
                    .enumerate()
                    .map(move |(i, p)| (t.seq, i as i64, p))
            })
            .collect();
        for chunk in postings.chunks(ROWS_PER_STATEMENT) {
            let mut qb =
                QueryBuilder::new("INSERT INTO postings (seq, idx, account_id, bucket, amount) ");
            qb.push_values(chunk, |mut row, (seq, idx, p)| {
                row.push_bind(*seq)
                    .push_bind(*idx)
                    .push_bind(p.account.0)
                    .push_bind(p.bucket.as_str())
                    .push_bind(p.amount.to_string());
            });
            qb.build().execute(&mut *self.tx).await?;
        }
        sqlx::query("UPDATE ledger_head SET seq = ?, hash = ? WHERE id = 1")
            .bind(seq)
            .bind(hash.as_slice())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}

// The `Store` operations this backend writes its own way (see `sql/store.rs`).

pub(super) async fn migrate(store: &SqliteStore) -> StoreResult<()> {
    sqlx::migrate!("migrations/sqlite").run(&store.pool).await?;
    Ok(())
}

pub(super) async fn register_asset(store: &SqliteStore, spec: &AssetSpec) -> StoreResult<()> {
    let (_writing, mut tx) = store.begin_write().await?;
    let stored: Option<i64> =
        sqlx::query_scalar("SELECT decimals FROM assets WHERE network = ? AND code = ?")
            .bind(&spec.key.network)
            .bind(&spec.key.code)
            .fetch_optional(&mut *tx)
            .await?;
    match stored {
        Some(d) if d != i64::from(spec.decimals) => {
            return Err(StoreError::AssetDecimalsChanged {
                asset: spec.key.clone(),
                stored: u8::try_from(d).unwrap_or(u8::MAX),
                configured: spec.decimals,
            });
        }
        Some(_) => {}
        None => {
            sqlx::query("INSERT INTO assets (network, code, decimals) VALUES (?, ?, ?)")
                .bind(&spec.key.network)
                .bind(&spec.key.code)
                .bind(i64::from(spec.decimals))
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn ensure_system_account(
    store: &SqliteStore,
    asset: &AssetKey,
    kind: AccountKind,
) -> StoreResult<Account> {
    let (_writing, mut tx) = store.begin_write().await?;
    sqlx::query(
            "INSERT INTO accounts (id, owner, network, asset, kind, allow_negative, created_at) VALUES (?, 'system', ?, ?, ?, ?, ?) \
             ON CONFLICT (owner, network, asset, kind) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(&asset.network)
        .bind(&asset.code)
        .bind(kind.as_str())
        .bind(kind.system_allows_negative())
        .bind(now_micros())
        .execute(&mut *tx)
        .await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE owner = 'system' AND network = ? AND asset = ? AND kind = ?"
        )))
        .bind(&asset.network)
        .bind(&asset.code)
        .bind(kind.as_str())
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    account_from_row(&row)
}

pub(super) async fn record_signed(
    store: &SqliteStore,
    network: &str,
    wallet: &str,
    fence: u64,
    first_nonce: u64,
    signed: &[(ChunkId, Attempt)],
) -> StoreResult<()> {
    let (_writing, mut tx) = store.begin_write().await?;
    let stored: Option<i64> = sqlx::query_scalar(
        "SELECT next_nonce FROM wallet_nonces WHERE network = ? AND address = ?",
    )
    .bind(network)
    .bind(wallet)
    .fetch_optional(&mut *tx)
    .await?;
    if stored.is_some_and(|n| n as u64 != first_nonce) {
        return Err(StoreError::Conflict(format!(
            "{wallet} next nonce is {stored:?}, not {first_nonce}"
        )));
    }
    // Safe-mode entered after this round was planned still stops it from being stored,
    // and so from ever being broadcast.
    let safe: Option<String> =
        sqlx::query_scalar("SELECT reason FROM network_safe_mode WHERE network = ?")
            .bind(network)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(reason) = safe {
        return Err(StoreError::Conflict(format!(
            "{network} is in safe-mode: {reason}"
        )));
    }
    let current: Option<i64> =
        sqlx::query_scalar("SELECT fence FROM engine_leases WHERE network = ?")
            .bind(network)
            .fetch_optional(&mut *tx)
            .await?;
    if current != Some(fence as i64) {
        return Err(StoreError::Conflict(format!(
            "the engine lease on {network} is at fence {current:?}, not {fence}"
        )));
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
            return Err(StoreError::Conflict(format!(
                "{asset} is frozen on {network}"
            )));
        }
    }
    let next = first_nonce + signed.len() as u64;
    sqlx::query(
        "INSERT INTO wallet_nonces (network, address, next_nonce) VALUES (?1, ?2, ?3) \
             ON CONFLICT (network, address) DO UPDATE SET next_nonce = ?3",
    )
    .bind(network)
    .bind(wallet)
    .bind(next as i64)
    .execute(&mut *tx)
    .await?;
    let at = now_micros();
    for (chunk, attempt) in signed {
        insert_attempt(&mut tx, *chunk, wallet, attempt).await?;
        let updated = sqlx::query(
                "UPDATE payout_chunks SET state = 'signed', wallet = ?, nonce = ?, updated_at = ?, signed_at = ? WHERE id = ? AND state = 'queued'",
            )
            .bind(wallet)
            .bind(attempt.nonce as i64)
            .bind(at)
            .bind(at)
            .bind(chunk.0)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!(
                "chunk {chunk} is no longer queued"
            )));
        }
        let payout = chunk_payout(&mut tx, *chunk).await?;
        sqlx::query("UPDATE payouts SET state = 'broadcast', updated_at = ? WHERE id = ? AND state = 'queued'")
                .bind(at)
                .bind(payout)
                .execute(&mut *tx)
                .await?;
        insert_event(
            &mut tx,
            PayoutId(payout),
            at,
            "signed",
            &format!(
                "chunk {chunk}: nonce {} from {wallet}, tx 0x{}",
                attempt.nonce,
                hex::encode(attempt.hash)
            ),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn mark_broadcast(
    store: &SqliteStore,
    attempts: &[Uuid],
    head: u64,
    at: i64,
) -> StoreResult<()> {
    let (_writing, mut tx) = store.begin_write().await?;
    for id in attempts {
        sqlx::query("UPDATE tx_attempts SET broadcast_at = ?, head_at_broadcast = ? WHERE id = ? AND broadcast_at IS NULL")
                .bind(at)
                .bind(head as i64)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        sqlx::query(
            "UPDATE payout_chunks SET state = 'broadcast', updated_at = ? \
                 WHERE id = (SELECT chunk_id FROM tx_attempts WHERE id = ?) AND state = 'signed'",
        )
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn custody_snapshot(
    store: &SqliteStore,
    network: &str,
) -> StoreResult<CustodySnapshot> {
    // A deferred transaction in WAL mode reads one snapshot from its first statement on.
    let mut tx = store.pool.begin().await?;
    let next_block: Option<i64> =
        sqlx::query_scalar("SELECT next_block FROM deposit_cursors WHERE network = ?")
            .bind(network)
            .fetch_optional(&mut *tx)
            .await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE network = ? AND owner LIKE 'wallet:%' ORDER BY owner, asset, kind"
        )))
        .bind(network)
        .fetch_all(&mut *tx)
        .await?;
    let accounts = rows
        .iter()
        .map(account_from_row)
        .collect::<StoreResult<_>>()?;
    let in_flight = load_in_flight(&mut tx, network, None).await?;
    // Settled after the block the comparison reads: in the ledger, not yet on that block.
    let settled_ahead = match next_block {
        Some(next) => load_in_flight(&mut tx, network, Some(next as u64)).await?,
        None => Vec::new(),
    };
    let mut fee_posted = std::collections::HashSet::new();
    let mined: Vec<(String, ChunkId)> = in_flight
        .iter()
        .chain(&settled_ahead)
        .filter(|f| f.mined.is_some())
        .map(|f| (format!("payout-chunk:{}:gas", f.chunk), f.chunk))
        .collect();
    for part in mined.chunks(ROWS_PER_STATEMENT) {
        let keys: Vec<String> = part.iter().map(|(k, _)| k.clone()).collect();
        let mut qb = QueryBuilder::new(
            "SELECT idempotency_key FROM journal_transactions WHERE idempotency_key",
        );
        any_of(&mut qb, &keys);
        for row in qb.build().fetch_all(&mut *tx).await? {
            let key: String = row.try_get("idempotency_key")?;
            if let Some((_, chunk)) = part.iter().find(|(k, _)| *k == key) {
                fee_posted.insert(*chunk);
            }
        }
    }
    tx.rollback().await?;
    Ok(CustodySnapshot {
        next_block: next_block.map(|n| n as u64),
        accounts,
        in_flight,
        settled_ahead,
        fee_posted,
    })
}

pub(super) async fn record_mined(
    store: &SqliteStore,
    chunks: &[(ChunkId, Option<Mined>)],
) -> StoreResult<()> {
    let (_writing, mut tx) = store.begin_write().await?;
    let at = now_micros();
    for (chunk, mined) in chunks {
        let (chunk, mined) = (*chunk, mined.as_ref());
        let payout = chunk_payout(&mut tx, chunk).await?;
        let (state, detail) = match mined {
            Some(m) => (
                "mined",
                format!(
                    "chunk {chunk}: tx 0x{} in block {} ({})",
                    hex::encode(m.hash),
                    m.block,
                    if m.success { "success" } else { "reverted" }
                ),
            ),
            None => (
                "broadcast",
                format!("chunk {chunk}: its block left the chain; tracking again"),
            ),
        };
        sqlx::query(
                "UPDATE payout_chunks SET state = ?, mined_hash = ?, mined_block = ?, mined_block_hash = ?, mined_success = ?, \
                 mined_fee = ?, updated_at = ? WHERE id = ?",
            )
            .bind(state)
            .bind(mined.map(|m| m.hash.to_vec()))
            .bind(mined.map(|m| m.block as i64))
            .bind(mined.map(|m| m.block_hash.to_vec()))
            .bind(mined.map(|m| m.success))
            .bind(mined.map(|m| m.fee_wei.to_string()))
            .bind(at)
            .bind(chunk.0)
            .execute(&mut *tx)
            .await?;
        insert_event(
            &mut tx,
            PayoutId(payout),
            at,
            if mined.is_some() { "mined" } else { "reorged" },
            &detail,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn add_payout_event(
    store: &SqliteStore,
    payout: PayoutId,
    kind: &str,
    detail: &str,
) -> StoreResult<()> {
    let (_writing, mut tx) = store.begin_write().await?;
    insert_event(&mut tx, payout, now_micros(), kind, detail).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn claim_due_timers(
    store: &SqliteStore,
    now: UnixMicros,
    claimer: &str,
    limit: i64,
) -> StoreResult<Vec<crate::timers::Timer>> {
    let (_writing, mut tx) = store.begin_write().await?;
    let rows = sqlx::query(
            "UPDATE timers SET claimed_by = ?1, claimed_until = ?2 WHERE id IN (\
             SELECT id FROM timers WHERE state = 'pending' AND due_at <= ?3 AND (claimed_until IS NULL OR claimed_until < ?3) \
             ORDER BY due_at, id LIMIT ?4) RETURNING id, kind, deal_id, due_at, state, fired_at",
        )
        .bind(claimer)
        .bind(now + crate::timers::CLAIM_MICROS)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let mut timers: Vec<crate::timers::Timer> = rows
        .iter()
        .map(sql::escrow::timer_from_row)
        .collect::<StoreResult<_>>()?;
    // RETURNING gives no order: the runner fires them as they came due.
    timers.sort_by_key(|t| (t.due_at, t.id.0));
    Ok(timers)
}

pub(super) async fn acquire_lease(
    store: &SqliteStore,
    network: &str,
    owner: &str,
    now: UnixMicros,
    ttl_micros: i64,
) -> StoreResult<Option<Lease>> {
    let (_writing, mut tx) = store.begin_write().await?;
    let row = sqlx::query(
            "INSERT INTO engine_leases (network, owner, fence, expires_at) VALUES (?1, ?2, 1, ?3) \
             ON CONFLICT (network) DO UPDATE SET owner = excluded.owner, \
             fence = CASE WHEN engine_leases.owner = excluded.owner THEN engine_leases.fence ELSE engine_leases.fence + 1 END, \
             expires_at = excluded.expires_at \
             WHERE engine_leases.owner = excluded.owner OR engine_leases.expires_at < ?4 \
             RETURNING owner, fence, expires_at",
        )
        .bind(network)
        .bind(owner)
        .bind(now + ttl_micros)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    row.as_ref().map(lease_from_row).transpose()
}

pub(super) async fn signed_volume_since(
    store: &SqliteStore,
    network: &str,
    since: UnixMicros,
) -> StoreResult<Vec<(String, i128)>> {
    let rows = sqlx::query(
            "SELECT p.asset, CAST(SUM(CAST(c.amount AS INTEGER)) AS TEXT) AS total FROM payout_chunks c \
             JOIN payouts p ON p.id = c.payout_id WHERE c.signed_at >= ? AND p.network = ? GROUP BY p.asset",
        )
        .bind(since)
        .bind(network)
        .fetch_all(&store.pool)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("asset")?, units(r.try_get("total")?)?)))
        .collect()
}

pub(super) async fn list_audit(
    store: &SqliteStore,
    after: Option<Uuid>,
    limit: i64,
) -> StoreResult<Vec<StoredAudit>> {
    let rows = sqlx::query(
        "SELECT id, at, actor, role, action, target, reason, request_id, evidence FROM audit_log \
             WHERE (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|r| audit_from_row(r.try_get("id")?, r.try_get("role")?, r))
        .collect()
}

fn audit_from_row(id: Uuid, role: String, row: &SqliteRow) -> StoreResult<StoredAudit> {
    Ok(StoredAudit {
        id,
        record: AuditRecord {
            actor: row.try_get("actor")?,
            role: parse_role(&role)?,
            action: row.try_get("action")?,
            target: row.try_get("target")?,
            reason: row.try_get("reason")?,
            request_id: row.try_get("request_id")?,
            at: row.try_get("at")?,
            evidence: row
                .try_get::<Option<String>, _>("evidence")?
                .map(|e| serde_json::from_str(&e))
                .transpose()
                .map_err(|e| StoreError::Invariant(format!("audit evidence: {e}")))?,
        },
    })
}

pub(crate) fn parse_role(text: &str) -> StoreResult<Role> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| StoreError::Invariant(format!("role {text:?}")))
}
