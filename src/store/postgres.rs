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
use crate::domain::payouts::{
    Attempt, CancelRequest, Chunk, ChunkState, ChunkWork, InFlight, Mined, NewPayout, Payout,
    PayoutEvent, PayoutState,
};
use crate::domain::{ChunkId, PayoutId};
use crate::ledger::{Effect, Posting, batch::run_batch};
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
    clock: crate::clock::DynClock,
}

impl PgStore {
    /// A write transaction. Nothing to queue behind: row locks and retries on serialisation
    /// failures order the writers (the unit stands where SQLite holds its writer lock).
    async fn begin_write(&self) -> StoreResult<((), Transaction<'static, Postgres>)> {
        Ok(((), self.pool.begin().await?))
    }

    /// Within a turn or not, the same: PostgreSQL's writers do not queue in-process.
    async fn begin_write_in(
        &self,
        _turn: &WriteTurn,
    ) -> StoreResult<((), Transaction<'static, Postgres>)> {
        self.begin_write().await
    }

    async fn take_write_turn(&self) -> WriteTurn {
        WriteTurn::none()
    }

    /// A read of one moment across statements.
    async fn begin_snapshot(&self) -> StoreResult<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    pub async fn connect(
        url: &str,
        max_connections: u32,
        clock: crate::clock::DynClock,
    ) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .connect_with(options)
            .await?;
        Ok(Self { pool, clock })
    }
}

/// Never clamps in practice: the ledger keeps every amount and balance within `MAX_UNITS`
/// (10^28), far inside `rust_decimal`'s 2^96, whose `from_i128_with_scale` would panic past it.
fn dec(units: i128) -> Decimal {
    Decimal::try_from_i128_with_scale(units, 0).unwrap_or(if units < 0 {
        Decimal::MIN
    } else {
        Decimal::MAX
    })
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
/// Rows another instance is claiming are left to it.
const SKIP_LOCKED: &str = " FOR UPDATE SKIP LOCKED";

fn sum_amount(column: &str) -> String {
    format!("SUM({column})")
}
/// `unique_violation`.
const UNIQUE_VIOLATION: &str = "23505";

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

/// Runs `head`, the rows as `SELECT * FROM UNNEST($1::type[], …) AS u(name, …) WHERE true`
/// (one array bind per column: one statement and one plan whatever the count), then `tail`.
/// Returns what the statement returns.
async fn bulk(
    conn: &mut DbConnection,
    head: &str,
    rows: BulkRows,
    tail: &str,
) -> StoreResult<Vec<DbRow>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let names = rows.names();
    let mut qb = QueryBuilder::new(head.to_owned());
    qb.push("SELECT * FROM UNNEST(");
    for (i, (_, column)) in rows.columns.into_iter().enumerate() {
        if i > 0 {
            qb.push(", ");
        }
        let array = format!("::{}[]", column.sql_type());
        match column {
            Column::Uuid(v) => qb.push_bind(v),
            Column::Int(v) => qb.push_bind(v),
            Column::Text(v) => qb.push_bind(v),
            Column::Bytes(v) => qb.push_bind(v),
            Column::Bool(v) => qb.push_bind(v),
            Column::Amount(v) => {
                qb.push_bind(v.into_iter().map(|a| a.map(dec)).collect::<Vec<_>>())
            }
        };
        qb.push(array);
    }
    qb.push(format!(") AS u({names}) WHERE true"));
    qb.push(tail);
    Ok(qb.build().fetch_all(conn).await?)
}

/// Only the named table's rows: a join's other rows are locked where they are written.
fn for_update_of(table: &str) -> String {
    format!(" FOR UPDATE OF {table}")
}

/// The journal transactions already posted under any of `keys`: one unique-index probe per
/// key. The `= ANY($1)` form gets a sequential-scan generic plan when the statement is first
/// prepared on a young table, and sqlx keeps that plan for the life of the connection: 3 ms
/// per batch at 14k rows, growing with the journal.
async fn find_idempotency_keys(
    conn: &mut DbConnection,
    keys: &[String],
) -> StoreResult<Vec<(String, [u8; 32], TxId)>> {
    let rows = sqlx::query(
        "SELECT j.idempotency_key, j.request_hash, j.id FROM UNNEST($1::text[]) AS k(key) \
         CROSS JOIN LATERAL (SELECT idempotency_key, request_hash, id FROM journal_transactions \
         WHERE idempotency_key = k.key LIMIT 1) AS j",
    )
    .bind(keys)
    .fetch_all(conn)
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

// The `Store` operations this backend writes its own way (see `sql/store.rs`).

pub(super) async fn migrate(store: &PgStore) -> StoreResult<()> {
    sqlx::migrate!("migrations/postgres")
        .run(&store.pool)
        .await?;
    Ok(())
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
    Ok(row.as_ref().map(sqlx::FromRow::from_row).transpose()?)
}
