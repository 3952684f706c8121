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
use crate::domain::payouts::{
    Attempt, CancelRequest, Chunk, ChunkState, ChunkWork, InFlight, Mined, NewPayout, Payout,
    PayoutEvent, PayoutState,
};
use crate::domain::{ChunkId, PayoutId};
use crate::ledger::{Effect, Posting, batch::run_batch};
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
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    clock: crate::clock::DynClock,
}

impl SqliteStore {
    pub async fn connect(
        url: &str,
        max_connections: u32,
        clock: crate::clock::DynClock,
    ) -> StoreResult<Self> {
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
            write_lock: Default::default(),
            clock,
        })
    }

    async fn begin_write(
        &self,
    ) -> StoreResult<(
        Option<tokio::sync::MutexGuard<'_, ()>>,
        Transaction<'static, Sqlite>,
    )> {
        self.begin_write_in(&WriteTurn::none()).await
    }

    /// A write transaction within `turn` when it holds one (the caller waited for it), else
    /// after waiting for the lock here. A turn taken from another store only skips this
    /// process's queue: `BEGIN IMMEDIATE` still takes the database's own lock.
    async fn begin_write_in(
        &self,
        turn: &WriteTurn,
    ) -> StoreResult<(
        Option<tokio::sync::MutexGuard<'_, ()>>,
        Transaction<'static, Sqlite>,
    )> {
        let guard = match turn.is_held() {
            true => None,
            false => Some(self.write_lock.lock().await),
        };
        Ok((guard, self.pool.begin_with("BEGIN IMMEDIATE").await?))
    }

    async fn take_write_turn(&self) -> WriteTurn {
        WriteTurn::held(self.write_lock.clone().lock_owned().await)
    }

    /// A read of one moment: a deferred transaction in WAL mode reads one snapshot from its
    /// first statement on.
    async fn begin_snapshot(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin().await?)
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
/// Nothing to skip: claims are made under the database lock.
const SKIP_LOCKED: &str = "";

/// Amounts are TEXT, so they are summed as integers (64 bits: SQLite's widest).
fn sum_amount(column: &str) -> String {
    format!("CAST(SUM(CAST({column} AS INTEGER)) AS TEXT)")
}
/// `SQLITE_CONSTRAINT_UNIQUE`.
const UNIQUE_VIOLATION: &str = "2067";

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

/// Runs `head`, the rows, then `tail`, once per `ROWS_PER_STATEMENT` rows; returns what the
/// statements return. After an `INSERT` the rows are a plain `VALUES` list, the form SQLite
/// inserts fastest (`INSERT … SELECT` over the same rows made single-command ledger posts
/// measurably slower, BENCHMARKS.md); elsewhere (`UPDATE … FROM`) they are `SELECT column1 AS
/// name, … FROM (VALUES …) WHERE true`, which names the columns.
async fn bulk(
    conn: &mut DbConnection,
    head: &str,
    mut rows: BulkRows,
    tail: &str,
) -> StoreResult<Vec<DbRow>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < rows.len() {
        let end = (start + ROWS_PER_STATEMENT).min(rows.len());
        let mut qb = QueryBuilder::new(head.to_owned());
        let insert = head.trim_start().starts_with("INSERT");
        if !insert {
            qb.push("SELECT ");
            for (i, (name, _)) in rows.columns.iter().enumerate() {
                qb.push(format!(
                    "{}column{} AS {name}",
                    if i > 0 { ", " } else { "" },
                    i + 1
                ));
            }
            qb.push(" FROM (");
        }
        qb.push("VALUES ");
        for r in start..end {
            qb.push(if r > start { ", (" } else { "(" });
            let mut values = qb.separated(", ");
            // Each value is bound once, so it is moved out rather than copied.
            for (_, column) in &mut rows.columns {
                match column {
                    Column::Uuid(v) => values.push_bind(v[r]),
                    Column::Int(v) => values.push_bind(v[r]),
                    Column::Text(v) => values.push_bind(v[r].take()),
                    Column::Bytes(v) => values.push_bind(v[r].take()),
                    Column::Bool(v) => values.push_bind(v[r]),
                    Column::Amount(v) => values.push_bind(v[r].map(amount_to_db)),
                };
            }
            qb.push(")");
        }
        if !insert {
            qb.push(") WHERE true");
        }
        qb.push(tail);
        out.extend(qb.build().fetch_all(&mut *conn).await?);
        start = end;
    }
    Ok(out)
}

/// Nothing to add: every write transaction holds the database lock from `BEGIN IMMEDIATE`.
fn for_update_of(_table: &str) -> String {
    String::new()
}

/// The journal transactions already posted under any of `keys`.
async fn find_idempotency_keys(
    conn: &mut DbConnection,
    keys: &[String],
) -> StoreResult<Vec<(String, [u8; 32], TxId)>> {
    let mut out = Vec::new();
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let mut qb = QueryBuilder::new(
            "SELECT idempotency_key, request_hash, id FROM journal_transactions WHERE idempotency_key",
        );
        any_of(&mut qb, chunk);
        for row in qb.build().fetch_all(&mut *conn).await? {
            out.push((
                row.try_get("idempotency_key")?,
                hash32(row.try_get("request_hash")?)?,
                TxId(row.try_get("id")?),
            ));
        }
    }
    Ok(out)
}

// The `Store` operations this backend writes its own way (see `sql/store.rs`).

pub(super) async fn migrate(store: &SqliteStore) -> StoreResult<()> {
    sqlx::migrate!("migrations/sqlite").run(&store.pool).await?;
    Ok(())
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
    Ok(row.as_ref().map(sqlx::FromRow::from_row).transpose()?)
}
