//! Ledger write throughput and latency, SQLite and PostgreSQL, one journal transaction per
//! database transaction and batched, side by side with a baseline measured in the same run on
//! the same database: a bare one-row INSERT per database transaction (what the database itself
//! can commit). Results are ratios against that baseline plus absolute figures.
//!
//!   cargo bench --bench ledger                         # both backends
//!   TREASURYD_BENCH_SECONDS=5 cargo bench --bench ledger
//!
//! PostgreSQL comes from TREASURYD_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres);
//! each measurement gets a fresh database so table growth never favours one side.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use treasuryd::domain::{Amount, AssetKey, Role};
use treasuryd::ledger::{Account, AccountKind, Command, Ledger, NewAccount, Operation};
use treasuryd::store::AuditRecord;

const ACCOUNTS: usize = 50;

/// How commands reach the database.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    /// `Ledger::post`: each worker's batch is one database transaction.
    Direct,
    /// `Ledger::post_one`: every worker sends single commands and the group-commit writer
    /// gathers whatever is waiting into one transaction (what the API does).
    GroupCommit,
}

#[derive(Clone, Copy, Debug)]
enum Workload {
    /// A hold on one of 50 accounts: one account row and one hold row per transaction.
    Hold,
    /// A deposit into one of 50 accounts: every transaction also touches the asset's single
    /// external account, the hottest row there is.
    Deposit,
    /// Baseline: INSERT one row and commit.
    RawInsert,
}

struct Result {
    label: String,
    txs: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Result {
    fn per_second(&self) -> f64 {
        self.txs as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        l.get(((l.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    }
}

struct Db {
    url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

fn pg_admin() -> String {
    std::env::var("TREASURYD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn fresh_db(postgres: bool) -> Db {
    if postgres {
        let name = format!("treasuryd_bench_{}", uuid::Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&pg_admin())
            .await
            .expect("PostgreSQL reachable");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let base = pg_admin().rsplit_once('/').unwrap().0.to_owned();
        Db {
            url: format!("{base}/{name}"),
            pg_name: Some(name),
            _dir: None,
        }
    } else {
        let dir = tempfile::tempdir().unwrap();
        Db {
            url: format!("sqlite://{}", dir.path().join("bench.db").display()),
            pg_name: None,
            _dir: Some(dir),
        }
    }
}

async fn drop_db(db: Db) {
    if let Some(name) = db.pg_name {
        let pool = sqlx::PgPool::connect(&pg_admin()).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
}

async fn setup_ledger(db: &Db, connections: u32) -> (Ledger, Vec<Account>) {
    let store = treasuryd::store::open(
        &db.url,
        connections,
        treasuryd::clock::SystemClock::shared(),
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let asset = AssetKey::new("ethereum", "USDT");
    let ledger = Ledger::open(
        store.clone(),
        &[treasuryd::domain::AssetSpec {
            key: asset.clone(),
            decimals: 6,
        }],
    )
    .await
    .unwrap();
    let audit = AuditRecord {
        actor: "bench".into(),
        role: Role::Admin,
        action: "account.create".into(),
        target: String::new(),
        reason: None,
        request_id: String::new(),
        at: 0,
        evidence: None,
    };
    let mut accounts = Vec::new();
    for i in 0..ACCOUNTS {
        let new = NewAccount {
            owner: format!("bench-{i}"),
            company: None,
            asset: asset.clone(),
            kind: AccountKind::Partner,
            allow_negative: false,
        };
        let a = store.create_account(&new, &audit).await.unwrap();
        let op = ledger
            .deposit(&a, Amount::new(1_000_000_000_000_000).unwrap())
            .unwrap();
        ledger
            .post_one(Command::new(format!("fund-{i}"), asset.clone(), op))
            .await
            .unwrap()
            .unwrap();
        accounts.push(a);
    }
    (ledger, accounts)
}

fn command(ledger: &Ledger, accounts: &[Account], workload: Workload, n: u64) -> Command {
    let a = &accounts[(n as usize).wrapping_mul(2_654_435_761) % accounts.len()];
    let op = match workload {
        Workload::Hold => Operation::Hold {
            account: a.id,
            amount: Amount::new(1).unwrap(),
        },
        _ => ledger.deposit(a, Amount::new(1).unwrap()).unwrap(),
    };
    Command::new(format!("bench-{n}"), a.asset.clone(), op)
}

async fn measure(
    postgres: bool,
    workload: Workload,
    path: Path,
    workers: usize,
    batch: usize,
    seconds: u64,
) -> Result {
    let db = fresh_db(postgres).await;
    let connections = workers as u32 + 2;
    let counter = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    let started;
    match workload {
        Workload::RawInsert => {
            let (sqlite_pool, pg_pool) = if postgres {
                let p = sqlx::PgPool::connect(&db.url).await.unwrap();
                sqlx::query(
                    "CREATE TABLE bench_raw (id BIGINT PRIMARY KEY, payload TEXT NOT NULL)",
                )
                .execute(&p)
                .await
                .unwrap();
                (None, Some(p))
            } else {
                let opts: sqlx::sqlite::SqliteConnectOptions = db.url.parse().unwrap();
                let opts = opts
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10));
                let p = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(connections)
                    .connect_with(opts)
                    .await
                    .unwrap();
                sqlx::query(
                    "CREATE TABLE bench_raw (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)",
                )
                .execute(&p)
                .await
                .unwrap();
                (Some(p), None)
            };
            started = Instant::now();
            for _ in 0..workers {
                let (counter, stop, sp, pp) = (
                    counter.clone(),
                    stop.clone(),
                    sqlite_pool.clone(),
                    pg_pool.clone(),
                );
                handles.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let first = counter.fetch_add(batch as u64, Ordering::Relaxed) as i64;
                        if let Some(p) = &sp {
                            let mut tx = p.begin_with("BEGIN IMMEDIATE").await.unwrap();
                            for i in 0..batch as i64 {
                                sqlx::query("INSERT INTO bench_raw (id, payload) VALUES (?, 'x')")
                                    .bind(first + i)
                                    .execute(&mut *tx)
                                    .await
                                    .unwrap();
                            }
                            tx.commit().await.unwrap();
                        } else if let Some(p) = &pp {
                            let mut tx = p.begin().await.unwrap();
                            for i in 0..batch as i64 {
                                sqlx::query("INSERT INTO bench_raw (id, payload) VALUES ($1, 'x')")
                                    .bind(first + i)
                                    .execute(&mut *tx)
                                    .await
                                    .unwrap();
                            }
                            tx.commit().await.unwrap();
                        }
                        lat.push(t.elapsed());
                    }
                    lat
                }));
            }
        }
        _ => {
            let (ledger, accounts) = setup_ledger(&db, connections).await;
            let accounts: Arc<Vec<Account>> = Arc::new(accounts);
            started = Instant::now();
            for _ in 0..workers {
                let (counter, stop, ledger, accounts) = (
                    counter.clone(),
                    stop.clone(),
                    ledger.clone(),
                    accounts.clone(),
                );
                handles.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let first = counter.fetch_add(batch as u64, Ordering::Relaxed);
                        let cmds: Vec<Command> = (first..first + batch as u64)
                            .map(|n| command(&ledger, &accounts, workload, n))
                            .collect();
                        let t = Instant::now();
                        if path == Path::GroupCommit {
                            for cmd in cmds {
                                let posted = ledger.post_one(cmd).await.unwrap().unwrap();
                                assert!(!posted.replayed);
                            }
                        } else {
                            let results = ledger.post(cmds).await.unwrap();
                            assert!(
                                results
                                    .iter()
                                    .all(|r| r.as_ref().is_ok_and(|p| !p.replayed))
                            );
                        }
                        lat.push(t.elapsed());
                    }
                    lat
                }));
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.await.unwrap());
    }
    let elapsed = started.elapsed();
    let txs = latencies.len() as u64 * batch as u64;
    drop_db(db).await;
    let label = match workload {
        Workload::RawInsert => format!("bare INSERT, {workers} workers × {batch} rows/commit"),
        _ => format!("{workload:?}, {path:?}, {workers} workers × {batch}"),
    };
    Result {
        label,
        txs,
        elapsed,
        latencies,
    }
}

fn row(backend: &str, r: &Result, baseline: &Result) -> String {
    format!(
        "| {backend} | {} | {:.0} | {:.2}× | {:.2} ms | {:.2} ms |",
        r.label,
        r.per_second(),
        r.per_second() / baseline.per_second(),
        r.pct(0.5).as_secs_f64() * 1e3,
        r.pct(0.99).as_secs_f64() * 1e3
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::var("TREASURYD_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    println!("| backend | workload | journal tx/s | vs bare INSERT | p50 call | p99 call |");
    println!("|---|---|---|---|---|---|");
    for (postgres, name) in [(false, "SQLite"), (true, "PostgreSQL")] {
        // One command per call: baseline, then the same load direct and through group commit.
        // Baseline and subjects alternate, each on a fresh database.
        let baseline = measure(postgres, Workload::RawInsert, Path::Direct, 16, 1, seconds).await;
        println!("{}", row(name, &baseline, &baseline));
        for (workload, path, workers) in [
            (Workload::Hold, Path::Direct, 16),
            (Workload::Hold, Path::GroupCommit, 16),
            (Workload::Hold, Path::GroupCommit, 64),
            (Workload::Deposit, Path::GroupCommit, 64),
        ] {
            let r = measure(postgres, workload, path, workers, 1, seconds).await;
            println!("{}", row(name, &r, &baseline));
        }
        // Caller-side batches of 50.
        let baseline = measure(postgres, Workload::RawInsert, Path::Direct, 4, 50, seconds).await;
        println!("{}", row(name, &baseline, &baseline));
        let r = measure(postgres, Workload::Hold, Path::Direct, 4, 50, seconds).await;
        println!("{}", row(name, &r, &baseline));
    }
}
