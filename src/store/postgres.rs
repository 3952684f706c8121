//! PostgreSQL store: production, and several daemon instances on one database. READ COMMITTED
//! with the touched rows locked in a fixed order (`SELECT … FOR UPDATE`), batch writes through
//! `UNNEST`, and whole-transaction retries on serialisation failures and deadlocks.

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
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row, Transaction};
use std::str::FromStr;
use uuid::Uuid;

/// What the SQL shared by both backends (`store/sql/`) is compiled against here.
type Db = Postgres;
type DbRow = PgRow;
const BACKEND: Backend = Backend::Postgres;
type DbStore = PgStore;
type DbConnection = sqlx::PgConnection;

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// A write transaction. Nothing to queue behind: row locks and retries on serialisation
    /// failures order the writers (the unit stands where SQLite holds its writer lock).
    async fn begin_write(&self) -> StoreResult<((), Transaction<'static, Postgres>)> {
        Ok(((), self.pool.begin().await?))
    }

    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    async fn post_once(
        &self,
        commands: &[Command],
    ) -> StoreResult<Vec<Result<Posted, LedgerError>>> {
        let mut txn = PgTxn {
            tx: self.pool.begin().await?,
        };
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

fn dec(units: i128) -> Decimal {
    Decimal::from_i128_with_scale(units, 0)
}

fn units(d: Decimal) -> StoreResult<i128> {
    if d.fract() != Decimal::ZERO {
        return Err(StoreError::Invariant(format!(
            "stored amount {d} is not an integer"
        )));
    }
    d.to_i128()
        .ok_or_else(|| StoreError::Invariant(format!("stored amount {d} out of range")))
}

/// Amounts are NUMERIC(39,0) here.
type DbAmount = Decimal;

fn amount_from(r: &DbRow, col: &str) -> StoreResult<i128> {
    units(r.try_get::<Decimal, _>(col)?)
}

fn opt_amount_from(r: &DbRow, col: &str) -> StoreResult<Option<i128>> {
    r.try_get::<Option<Decimal>, _>(col)?.map(units).transpose()
}

fn amount_to_db(x: i128) -> DbAmount {
    dec(x)
}

/// Locks the rows a read-then-write reads, against other instances' transactions.
const FOR_UPDATE: &str = " FOR UPDATE";
/// `unique_violation`.
const UNIQUE_VIOLATION: &str = "23505";

async fn attach_postings(conn: &mut sqlx::PgConnection, txs: &mut [JournalTx]) -> StoreResult<()> {
    if txs.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = txs.iter().map(|t| t.seq).collect();
    let rows = sqlx::query("SELECT seq, account_id, bucket, amount FROM postings WHERE seq = ANY($1) ORDER BY seq, idx")
        .bind(&seqs)
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

async fn insert_audits(conn: &mut sqlx::PgConnection, audits: &[&AuditRecord]) -> StoreResult<()> {
    if audits.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO audit_log (id, at, actor, role, action, target, reason, request_id, evidence) \
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])",
    )
    .bind(audits.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
    .bind(audits.iter().map(|a| a.at).collect::<Vec<_>>())
    .bind(audits.iter().map(|a| a.actor.clone()).collect::<Vec<_>>())
    .bind(audits.iter().map(|a| a.role.as_str()).collect::<Vec<_>>())
    .bind(audits.iter().map(|a| a.action.clone()).collect::<Vec<_>>())
    .bind(audits.iter().map(|a| a.target.clone()).collect::<Vec<_>>())
    .bind(audits.iter().map(|a| a.reason.clone()).collect::<Vec<_>>())
    .bind(audits.iter().map(|a| a.request_id.clone()).collect::<Vec<_>>())
    .bind(
        audits
            .iter()
            .map(|a| a.evidence.as_ref().map(|e| e.to_string()))
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Rows per statement when the shared SQL filters by a list: one array bind here, so only a
/// bound on the statement's size.
const ROWS_PER_STATEMENT: usize = 10_000;

/// ` = ANY($n)` over `values`: one array bind, one plan whatever the length.
fn any_of<T>(qb: &mut QueryBuilder<Postgres>, values: &[T])
where
    T: Clone
        + sqlx::postgres::PgHasArrayType
        + for<'t> sqlx::Encode<'t, Postgres>
        + sqlx::Type<Postgres>
        + Send
        + 'static,
{
    qb.push(" = ANY(");
    qb.push_bind(values.to_vec());
    qb.push(")");
}

struct PgTxn {
    tx: Transaction<'static, Postgres>,
}

#[async_trait]
impl LedgerTxn for PgTxn {
    async fn lock_holds(&mut self, ids: &[HoldId]) -> StoreResult<Vec<Hold>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = ids.iter().map(|h| h.0).collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{HOLD_SELECT} WHERE h.id = ANY($1) ORDER BY h.id FOR UPDATE OF h"
        )))
        .bind(&ids)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(hold_from_row).collect()
    }

    async fn lock_accounts(&mut self, ids: &[AccountId]) -> StoreResult<Vec<Account>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = ids.iter().map(|a| a.0).collect();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE"
        )))
        .bind(&ids)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(account_from_row).collect()
    }

    async fn find_idempotency_keys(
        &mut self,
        keys: &[String],
    ) -> StoreResult<Vec<(String, [u8; 32], TxId)>> {
        // One unique-index probe per key. The `= ANY($1)` form gets a sequential-scan generic plan
        // when the statement is first prepared on a young table, and sqlx keeps that plan for
        // the life of the connection: 3 ms per batch at 14k rows, growing with the journal.
        let rows = sqlx::query(
            "SELECT j.idempotency_key, j.request_hash, j.id FROM UNNEST($1::text[]) AS k(key) \
             CROSS JOIN LATERAL (SELECT idempotency_key, request_hash, id FROM journal_transactions \
             WHERE idempotency_key = k.key LIMIT 1) AS j",
        )
            .bind(keys)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("idempotency_key")?,
                    hash32(r.try_get("request_hash")?)?,
                    TxId(r.try_get("id")?),
                ))
            })
            .collect()
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
        let ids: Vec<Uuid> = accounts.iter().map(|a| a.id.0).collect();
        let available: Vec<Decimal> = accounts.iter().map(|a| dec(a.available)).collect();
        let held: Vec<Decimal> = accounts.iter().map(|a| dec(a.held)).collect();
        sqlx::query(
            "UPDATE accounts SET available = u.available, held = u.held, version = accounts.version + 1 \
             FROM UNNEST($1::uuid[], $2::numeric[], $3::numeric[]) AS u(id, available, held) WHERE accounts.id = u.id",
        )
        .bind(&ids)
        .bind(&available)
        .bind(&held)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn write_holds(&mut self, holds: &[&Hold]) -> StoreResult<()> {
        if holds.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = holds.iter().map(|h| h.id.0).collect();
        let accounts: Vec<Uuid> = holds.iter().map(|h| h.account.0).collect();
        let amounts: Vec<Decimal> = holds.iter().map(|h| dec(h.amount)).collect();
        let released: Vec<Decimal> = holds.iter().map(|h| dec(h.released)).collect();
        let voided: Vec<Decimal> = holds.iter().map(|h| dec(h.voided)).collect();
        let states: Vec<&str> = holds.iter().map(|h| h.state.as_str()).collect();
        let references: Vec<Option<String>> = holds.iter().map(|h| h.reference.clone()).collect();
        let created: Vec<i64> = holds.iter().map(|h| h.created_at).collect();
        let resolved: Vec<Option<i64>> = holds.iter().map(|h| h.resolved_at).collect();
        sqlx::query(
            "INSERT INTO holds (id, account_id, amount, released, voided, state, reference, created_at, resolved_at) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::numeric[], $4::numeric[], $5::numeric[], $6::text[], \
             $7::text[], $8::bigint[], $9::bigint[]) \
             ON CONFLICT (id) DO UPDATE SET released = EXCLUDED.released, voided = EXCLUDED.voided, \
             state = EXCLUDED.state, resolved_at = EXCLUDED.resolved_at",
        )
        .bind(&ids)
        .bind(&accounts)
        .bind(&amounts)
        .bind(&released)
        .bind(&voided)
        .bind(&states)
        .bind(&references)
        .bind(&created)
        .bind(&resolved)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn append_journal(&mut self, txs: &mut [JournalTx]) -> StoreResult<()> {
        let head = sqlx::query("SELECT seq, hash FROM ledger_head WHERE id = 1 FOR UPDATE")
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
        sqlx::query(
            "INSERT INTO journal_transactions (seq, id, kind, network, asset, hold_id, idempotency_key, request_hash, \
             reference, memo, actor, created_at, hash) SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::text[], \
             $4::text[], $5::text[], $6::uuid[], $7::text[], $8::bytea[], $9::text[], $10::text[], $11::text[], \
             $12::bigint[], $13::bytea[])",
        )
        .bind(txs.iter().map(|t| t.seq).collect::<Vec<_>>())
        .bind(txs.iter().map(|t| t.id.0).collect::<Vec<_>>())
        .bind(txs.iter().map(|t| t.kind.as_str()).collect::<Vec<_>>())
        .bind(txs.iter().map(|t| t.asset.network.clone()).collect::<Vec<_>>())
        .bind(txs.iter().map(|t| t.asset.code.clone()).collect::<Vec<_>>())
        .bind(txs.iter().map(|t| t.hold.map(|h| h.0)).collect::<Vec<_>>())
        .bind(txs.iter().map(|t| t.idempotency_key.clone()).collect::<Vec<_>>())
        .bind(txs.iter().map(|t| t.request_hash.to_vec()).collect::<Vec<_>>())
        .bind(txs.iter().map(|t| t.reference.clone()).collect::<Vec<_>>())
        .bind(txs.iter().map(|t| t.memo.clone()).collect::<Vec<_>>())
        .bind(txs.iter().map(|t| t.actor.clone()).collect::<Vec<_>>())
        .bind(txs.iter().map(|t| t.created_at).collect::<Vec<_>>())
        .bind(txs.iter().map(|t| t.hash.to_vec()).collect::<Vec<_>>())
        .execute(&mut *self.tx)
        .await?;

        let postings = txs.iter().flat_map(|t| {
            t.postings
                .iter()
                .enumerate()
                .map(move |(i, p)| (t.seq, i, p))
        });
        let (mut seqs, mut idxs, mut accounts, mut buckets, mut amounts) =
            (vec![], vec![], vec![], vec![], vec![]);
        for (seq, idx, p) in postings {
            seqs.push(seq);
            idxs.push(idx as i16);
            accounts.push(p.account.0);
            buckets.push(p.bucket.as_str());
            amounts.push(dec(p.amount));
        }
        sqlx::query(
            "INSERT INTO postings (seq, idx, account_id, bucket, amount) \
             SELECT * FROM UNNEST($1::bigint[], $2::smallint[], $3::uuid[], $4::text[], $5::numeric[])",
        )
        .bind(&seqs)
        .bind(&idxs)
        .bind(&accounts)
        .bind(&buckets)
        .bind(&amounts)
        .execute(&mut *self.tx)
        .await?;

        sqlx::query("UPDATE ledger_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(seq)
            .bind(hash.as_slice())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}

// The `Store` operations this backend writes its own way (see `sql/store.rs`).

pub(super) async fn migrate(store: &PgStore) -> StoreResult<()> {
    sqlx::migrate!("migrations/postgres")
        .run(&store.pool)
        .await?;
    Ok(())
}

pub(super) async fn register_asset(store: &PgStore, spec: &AssetSpec) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO assets (network, code, decimals) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(&spec.key.network)
    .bind(&spec.key.code)
    .bind(i16::from(spec.decimals))
    .execute(&store.pool)
    .await?;
    let stored: i16 =
        sqlx::query_scalar("SELECT decimals FROM assets WHERE network = $1 AND code = $2")
            .bind(&spec.key.network)
            .bind(&spec.key.code)
            .fetch_one(&store.pool)
            .await?;
    if stored != i16::from(spec.decimals) {
        return Err(StoreError::AssetDecimalsChanged {
            asset: spec.key.clone(),
            stored: u8::try_from(stored).unwrap_or(u8::MAX),
            configured: spec.decimals,
        });
    }
    Ok(())
}

pub(super) async fn ensure_system_account(
    store: &PgStore,
    asset: &AssetKey,
    kind: AccountKind,
) -> StoreResult<Account> {
    sqlx::query(
            "INSERT INTO accounts (id, owner, network, asset, kind, allow_negative, created_at) \
             VALUES ($1, 'system', $2, $3, $4, $5, $6) ON CONFLICT (owner, network, asset, kind) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(&asset.network)
        .bind(&asset.code)
        .bind(kind.as_str())
        .bind(kind.system_allows_negative())
        .bind(now_micros())
        .execute(&store.pool)
        .await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE owner = 'system' AND network = $1 AND asset = $2 AND kind = $3"
        )))
        .bind(&asset.network)
        .bind(&asset.code)
        .bind(kind.as_str())
        .fetch_one(&store.pool)
        .await?;
    account_from_row(&row)
}

pub(super) async fn record_signed(
    store: &PgStore,
    network: &str,
    wallet: &str,
    fence: u64,
    first_nonce: u64,
    signed: &[(ChunkId, Attempt)],
) -> StoreResult<()> {
    let mut tx = store.pool.begin().await?;
    // The wallet row is the nonce lock: a second writer for the wallet waits here, then
    // finds the nonce moved and gets a Conflict.
    sqlx::query("INSERT INTO wallet_nonces (network, address, next_nonce) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(network)
            .bind(wallet)
            .bind(first_nonce as i64)
            .execute(&mut *tx)
            .await?;
    let stored: i64 = sqlx::query_scalar(
        "SELECT next_nonce FROM wallet_nonces WHERE network = $1 AND address = $2 FOR UPDATE",
    )
    .bind(network)
    .bind(wallet)
    .fetch_one(&mut *tx)
    .await?;
    if stored as u64 != first_nonce {
        return Err(StoreError::Conflict(format!(
            "{wallet} next nonce is {stored}, not {first_nonce}"
        )));
    }
    // Safe-mode entered after this round was planned still stops it from being stored,
    // and so from ever being broadcast.
    let safe: Option<String> =
        sqlx::query_scalar("SELECT reason FROM network_safe_mode WHERE network = $1")
            .bind(network)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(reason) = safe {
        return Err(StoreError::Conflict(format!(
            "{network} is in safe-mode: {reason}"
        )));
    }
    let current: Option<i64> =
        sqlx::query_scalar("SELECT fence FROM engine_leases WHERE network = $1 FOR SHARE")
            .bind(network)
            .fetch_optional(&mut *tx)
            .await?;
    if current != Some(fence as i64) {
        return Err(StoreError::Conflict(format!(
            "the engine lease on {network} is at fence {current:?}, not {fence}"
        )));
    }
    let ids: Vec<Uuid> = signed.iter().map(|(c, _)| c.0).collect();
    let frozen: Option<String> = sqlx::query_scalar(
            "SELECT f.asset FROM payout_chunks c JOIN payouts p ON p.id = c.payout_id \
             JOIN asset_freezes f ON f.network = p.network AND f.asset = p.asset WHERE c.id = ANY($1) LIMIT 1",
        )
        .bind(&ids)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(asset) = frozen {
        return Err(StoreError::Conflict(format!(
            "{asset} is frozen on {network}"
        )));
    }
    sqlx::query("UPDATE wallet_nonces SET next_nonce = $3 WHERE network = $1 AND address = $2")
        .bind(network)
        .bind(wallet)
        .bind((first_nonce + signed.len() as u64) as i64)
        .execute(&mut *tx)
        .await?;
    let at = now_micros();
    // A round is one statement per table, whatever its size.
    let chunk_ids: Vec<Uuid> = signed.iter().map(|(c, _)| c.0).collect();
    let nonces: Vec<i64> = signed.iter().map(|(_, a)| a.nonce as i64).collect();
    sqlx::query(
            "INSERT INTO tx_attempts (id, chunk_id, wallet, nonce, hash, raw, max_fee_per_gas, max_priority_fee_per_gas, \
             gas_limit, created_at, kind) SELECT u.id, u.chunk_id, $3, u.nonce, u.hash, u.raw, u.max_fee, u.tip, u.gas_limit, \
             u.created_at, u.kind FROM UNNEST($1::uuid[], $2::uuid[], $4::bigint[], $5::bytea[], $6::bytea[], $7::numeric[], \
             $8::numeric[], $9::bigint[], $10::bigint[], $11::text[]) \
             AS u(id, chunk_id, nonce, hash, raw, max_fee, tip, gas_limit, created_at, kind)",
        )
        .bind(signed.iter().map(|(_, a)| a.id).collect::<Vec<_>>())
        .bind(&chunk_ids)
        .bind(wallet)
        .bind(&nonces)
        .bind(signed.iter().map(|(_, a)| a.hash.to_vec()).collect::<Vec<_>>())
        .bind(signed.iter().map(|(_, a)| a.raw.clone()).collect::<Vec<_>>())
        .bind(signed.iter().map(|(_, a)| dec(a.max_fee_per_gas as i128)).collect::<Vec<_>>())
        .bind(signed.iter().map(|(_, a)| dec(a.max_priority_fee_per_gas as i128)).collect::<Vec<_>>())
        .bind(signed.iter().map(|(_, a)| a.gas_limit as i64).collect::<Vec<_>>())
        .bind(signed.iter().map(|(_, a)| a.created_at).collect::<Vec<_>>())
        .bind(signed.iter().map(|(_, a)| a.kind.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    let updated = sqlx::query(
            "UPDATE payout_chunks c SET state = 'signed', wallet = $1, nonce = u.nonce, updated_at = $2, signed_at = $2 \
             FROM UNNEST($3::uuid[], $4::bigint[]) AS u(id, nonce) WHERE c.id = u.id AND c.state = 'queued' \
             RETURNING c.id, c.payout_id",
        )
        .bind(wallet)
        .bind(at)
        .bind(&chunk_ids)
        .bind(&nonces)
        .fetch_all(&mut *tx)
        .await?;
    if updated.len() != signed.len() {
        return Err(StoreError::Conflict(format!(
            "{} of {} chunks are no longer queued",
            signed.len() - updated.len(),
            signed.len()
        )));
    }
    let mut payout_of = std::collections::HashMap::with_capacity(updated.len());
    for row in &updated {
        payout_of.insert(
            row.try_get::<Uuid, _>("id")?,
            row.try_get::<Uuid, _>("payout_id")?,
        );
    }
    let payouts: Vec<Uuid> = signed
        .iter()
        .map(|(c, _)| payout_of.get(&c.0).copied().unwrap_or_default())
        .collect();
    sqlx::query("UPDATE payouts SET state = 'broadcast', updated_at = $1 WHERE id = ANY($2) AND state = 'queued'")
            .bind(at)
            .bind(&payouts)
            .execute(&mut *tx)
            .await?;
    sqlx::query(
            "INSERT INTO payout_events (id, payout_id, at, kind, detail) \
             SELECT u.id, u.payout_id, $3, 'signed', u.detail FROM UNNEST($1::uuid[], $2::uuid[], $4::text[]) AS u(id, payout_id, detail)",
        )
        .bind(signed.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
        .bind(&payouts)
        .bind(at)
        .bind(
            signed
                .iter()
                .map(|(chunk, a)| {
                    format!(
                        "chunk {chunk}: nonce {} from {wallet}, tx 0x{}",
                        a.nonce,
                        hex::encode(a.hash)
                    )
                })
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn mark_broadcast(
    store: &PgStore,
    attempts: &[Uuid],
    head: u64,
    at: i64,
) -> StoreResult<()> {
    let mut tx = store.pool.begin().await?;
    sqlx::query(
            "UPDATE tx_attempts SET broadcast_at = $1, head_at_broadcast = $2 WHERE id = ANY($3) AND broadcast_at IS NULL",
        )
        .bind(at)
        .bind(head as i64)
        .bind(attempts)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
            "UPDATE payout_chunks SET state = 'broadcast', updated_at = $1 \
             WHERE id IN (SELECT chunk_id FROM tx_attempts WHERE id = ANY($2)) AND state = 'signed'",
        )
        .bind(at)
        .bind(attempts)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn custody_snapshot(
    store: &PgStore,
    network: &str,
) -> StoreResult<CustodySnapshot> {
    let mut tx = store.pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let next_block: Option<i64> =
        sqlx::query_scalar("SELECT next_block FROM deposit_cursors WHERE network = $1")
            .bind(network)
            .fetch_optional(&mut *tx)
            .await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE network = $1 AND owner LIKE 'wallet:%' ORDER BY owner, asset, kind"
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
    let mined: Vec<(String, ChunkId)> = in_flight
        .iter()
        .chain(&settled_ahead)
        .filter(|f| f.mined.is_some())
        .map(|f| (format!("payout-chunk:{}:gas", f.chunk), f.chunk))
        .collect();
    let keys: Vec<String> = mined.iter().map(|(k, _)| k.clone()).collect();
    let posted: Vec<String> = sqlx::query_scalar(
        "SELECT idempotency_key FROM journal_transactions WHERE idempotency_key = ANY($1)",
    )
    .bind(&keys)
    .fetch_all(&mut *tx)
    .await?;
    let fee_posted = mined
        .iter()
        .filter(|(k, _)| posted.contains(k))
        .map(|(_, chunk)| *chunk)
        .collect();
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
    store: &PgStore,
    chunks: &[(ChunkId, Option<Mined>)],
) -> StoreResult<()> {
    if chunks.is_empty() {
        return Ok(());
    }
    // The last word on each chunk wins (found, then its block left the chain); every
    // step is still written to the payout's story.
    let mut last: std::collections::HashMap<ChunkId, Option<&Mined>> =
        std::collections::HashMap::with_capacity(chunks.len());
    for (chunk, mined) in chunks {
        last.insert(*chunk, mined.as_ref());
    }
    let rows: Vec<(ChunkId, Option<&Mined>)> = last.into_iter().collect();
    let mut tx = store.pool.begin().await?;
    let at = now_micros();
    let updated = sqlx::query(
            "UPDATE payout_chunks c SET state = u.state, mined_hash = u.hash, mined_block = u.block, \
             mined_block_hash = u.block_hash, mined_success = u.success, mined_fee = u.fee, updated_at = $1 \
             FROM UNNEST($2::uuid[], $3::text[], $4::bytea[], $5::bigint[], $6::bytea[], $7::bool[], $8::numeric[]) \
             AS u(id, state, hash, block, block_hash, success, fee) WHERE c.id = u.id RETURNING c.id, c.payout_id",
        )
        .bind(at)
        .bind(rows.iter().map(|(c, _)| c.0).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|(_, m)| if m.is_some() { "mined" } else { "broadcast" })
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|(_, m)| m.map(|m| m.hash.to_vec())).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, m)| m.map(|m| m.block as i64)).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, m)| m.map(|m| m.block_hash.to_vec())).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, m)| m.map(|m| m.success)).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, m)| m.map(|m| dec(m.fee_wei as i128))).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
    let mut payout_of = std::collections::HashMap::with_capacity(updated.len());
    for row in &updated {
        payout_of.insert(
            row.try_get::<Uuid, _>("id")?,
            row.try_get::<Uuid, _>("payout_id")?,
        );
    }
    let mut ids = Vec::with_capacity(chunks.len());
    let mut payouts = Vec::with_capacity(chunks.len());
    let mut kinds = Vec::with_capacity(chunks.len());
    let mut details = Vec::with_capacity(chunks.len());
    for (chunk, mined) in chunks {
        let Some(payout) = payout_of.get(&chunk.0) else {
            return Err(StoreError::NotFound);
        };
        ids.push(Uuid::now_v7());
        payouts.push(*payout);
        let (kind, detail) = match mined {
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
                "reorged",
                format!("chunk {chunk}: its block left the chain; tracking again"),
            ),
        };
        kinds.push(kind);
        details.push(detail);
    }
    sqlx::query(
            "INSERT INTO payout_events (id, payout_id, at, kind, detail) \
             SELECT u.id, u.payout_id, $3, u.kind, u.detail FROM UNNEST($1::uuid[], $2::uuid[], $4::text[], $5::text[]) \
             AS u(id, payout_id, kind, detail)",
        )
        .bind(&ids)
        .bind(&payouts)
        .bind(at)
        .bind(&kinds)
        .bind(&details)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn add_payout_event(
    store: &PgStore,
    payout: PayoutId,
    kind: &str,
    detail: &str,
) -> StoreResult<()> {
    let mut conn = store.pool.acquire().await?;
    insert_event(&mut conn, payout, now_micros(), kind, detail).await
}

pub(super) async fn claim_due_timers(
    store: &PgStore,
    now: UnixMicros,
    claimer: &str,
    limit: i64,
) -> StoreResult<Vec<crate::timers::Timer>> {
    let rows = sqlx::query(
            "UPDATE timers SET claimed_by = $1, claimed_until = $2 WHERE id IN (\
             SELECT id FROM timers WHERE state = 'pending' AND due_at <= $3 AND (claimed_until IS NULL OR claimed_until < $3) \
             ORDER BY due_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING id, kind, deal_id, due_at, state, fired_at",
        )
        .bind(claimer)
        .bind(now + crate::timers::CLAIM_MICROS)
        .bind(now)
        .bind(limit)
        .fetch_all(&store.pool)
        .await?;
    let mut timers: Vec<crate::timers::Timer> = rows
        .iter()
        .map(sql::escrow::timer_from_row)
        .collect::<StoreResult<_>>()?;
    // RETURNING gives no order: the runner fires them as they came due.
    timers.sort_by_key(|t| (t.due_at, t.id.0));
    Ok(timers)
}

pub(super) async fn acquire_lease(
    store: &PgStore,
    network: &str,
    owner: &str,
    _now: UnixMicros,
    ttl_micros: i64,
) -> StoreResult<Option<Lease>> {
    // Instances on several machines compare expiry against one clock: the database's.
    let mut tx = store.pool.begin().await?;
    let row = sqlx::query(
            "WITH clock AS (SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint AS now) \
             INSERT INTO engine_leases (network, owner, fence, expires_at) SELECT $1, $2, 1, clock.now + $3 FROM clock \
             ON CONFLICT (network) DO UPDATE SET owner = excluded.owner, \
             fence = CASE WHEN engine_leases.owner = excluded.owner THEN engine_leases.fence ELSE engine_leases.fence + 1 END, \
             expires_at = excluded.expires_at \
             WHERE engine_leases.owner = excluded.owner OR engine_leases.expires_at < (SELECT now FROM clock) \
             RETURNING owner, fence, expires_at",
        )
        .bind(network)
        .bind(owner)
        .bind(ttl_micros)
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    row.as_ref().map(lease_from_row).transpose()
}

pub(super) async fn signed_volume_since(
    store: &PgStore,
    network: &str,
    since: UnixMicros,
) -> StoreResult<Vec<(String, i128)>> {
    let rows = sqlx::query(
            "SELECT p.asset, SUM(c.amount) AS total FROM payout_chunks c \
             JOIN payouts p ON p.id = c.payout_id WHERE c.signed_at >= $1 AND p.network = $2 GROUP BY p.asset",
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
    store: &PgStore,
    after: Option<Uuid>,
    limit: i64,
) -> StoreResult<Vec<StoredAudit>> {
    let rows = sqlx::query(
        "SELECT id, at, actor, role, action, target, reason, request_id, evidence FROM audit_log \
             WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|r| {
            let role: String = r.try_get("role")?;
            Ok(StoredAudit {
                id: r.try_get("id")?,
                record: AuditRecord {
                    actor: r.try_get("actor")?,
                    role: super::sqlite::parse_role(&role)?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    reason: r.try_get("reason")?,
                    request_id: r.try_get("request_id")?,
                    at: r.try_get("at")?,
                    evidence: r
                        .try_get::<Option<String>, _>("evidence")?
                        .map(|e| serde_json::from_str(&e))
                        .transpose()
                        .map_err(|e| StoreError::Invariant(format!("audit evidence: {e}")))?,
                },
            })
        })
        .collect()
}
