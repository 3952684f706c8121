//! Payout throughput end to end against anvil (automine, confirmations 1), side by side with
//! the best a hand-written sender gets from the same node, measured in the same run on a
//! fresh node of its own: the same ERC-20 transfers, signed in advance with consecutive nonces
//! and sent with `eth_sendRawTransaction` by as many concurrent connections as the daemon's
//! clients use (32), with no database, no policy and no ledger.
//!
//! Both are reported as "landed": from the first request to the moment the hot wallet's nonce
//! on chain shows the last transfer mined. The daemon is also reported as "settled" (every
//! payout confirmed in the ledger), "accepted" (every POST answered 202) and by its POST
//! latency. Baseline and daemon alternate, each on a fresh anvil (anvil slows as its state
//! grows), and the median ratio of landed rates is the figure to quote.
//!
//!   cargo bench --bench payouts                      # 1,000 payouts, 3 rounds per backend
//!   TREASURYD_BENCH_PAYOUTS=500 TREASURYD_BENCH_ROUNDS=1 cargo bench --bench payouts
//!   TREASURYD_BENCH_BACKENDS=SQLite cargo bench --bench payouts   # one backend only
//!   TREASURYD_BENCH_IN_FLIGHT=100,10000 cargo bench --bench payouts   # payouts in flight
//!   TREASURYD_BENCH_FOOTPRINT=100000,10000 cargo bench --bench payouts  # memory, restart
//!   TREASURYD_BENCH_DISPERSE=100 cargo bench --bench payouts   # the node with batched transfers
//!   TREASURYD_BENCH_STEADY=500 cargo bench --bench payouts      # accepted → broadcast at a pace
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use futures::StreamExt;
use secrecy::SecretString;
use std::time::{Duration, Instant};
use treasuryd::api::auth::Caller;
use treasuryd::app::App;
use treasuryd::chains::evm::{
    DisperseTx, EvmClient, FeeMode, TransferTx, sign_approve, sign_disperse, sign_transfer,
};
use treasuryd::config::Config;
use treasuryd::dev::chain::{DevChain, TestToken};
use treasuryd::domain::{Amount, AssetKey, Role};
use treasuryd::ledger::{AccountKind, Command, NewAccount};
use treasuryd::store::AuditRecord;

const GWEI: u128 = 1_000_000_000;
/// Concurrent clients: payout requests the benchmark keeps open at once, and the baseline's
/// concurrent `eth_sendRawTransaction` calls.
const CONCURRENT_REQUESTS: usize = 32;

fn destination(i: usize) -> Address {
    Address::from_word(U256::from(0xB000_0000u64 + i as u64).into())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

/// CPU time used so far by one process and by the whole machine, read from /proc: where a
/// run's two cores went (anvil, this process with the daemon and its clients, the rest).
#[derive(Clone, Copy)]
struct CpuMark {
    anvil: f64,
    bench: f64,
    /// Seconds all cores were busy, and seconds that passed on all cores together.
    machine_busy: f64,
    machine_total: f64,
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User plus system seconds of a process (`self` or a pid).
fn process_cpu(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: state is the first, utime the 12th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / clock_ticks()
}

impl CpuMark {
    fn now(chain: &DevChain) -> Self {
        let machine = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let jiffies: Vec<f64> = machine
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let total: f64 = jiffies.iter().take(8).sum();
        // idle and iowait
        let idle = jiffies.get(3).unwrap_or(&0.0) + jiffies.get(4).unwrap_or(&0.0);
        Self {
            anvil: process_cpu(&chain.anvil.child().id().to_string()),
            bench: process_cpu("self"),
            machine_busy: (total - idle) / clock_ticks(),
            machine_total: total / clock_ticks(),
        }
    }

    /// CPU used since `self`: (anvil ms, this process ms, machine busy share) per transfer
    /// count `n`.
    fn since(&self, chain: &DevChain, n: usize) -> CpuUse {
        let now = Self::now(chain);
        let per = |a: f64, b: f64| (b - a) * 1e6 / n as f64;
        CpuUse {
            anvil_us: per(self.anvil, now.anvil),
            bench_us: per(self.bench, now.bench),
            machine_us: per(self.machine_busy, now.machine_busy),
            busy: (now.machine_busy - self.machine_busy)
                / (now.machine_total - self.machine_total).max(f64::MIN_POSITIVE),
            signing_us: None,
        }
    }
}

/// CPU microseconds per transfer over a run, and the share of the machine that was busy.
#[derive(Clone, Copy, Default)]
struct CpuUse {
    anvil_us: f64,
    bench_us: f64,
    machine_us: f64,
    busy: f64,
    /// The baseline's signing beforehand, one thread, per transfer.
    signing_us: Option<f64>,
}

impl CpuUse {
    fn row(&self, who: &str, backend: &str) -> String {
        format!(
            "| {backend} | {who} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0}% | {} |",
            self.anvil_us,
            self.bench_us,
            self.machine_us - self.anvil_us - self.bench_us,
            self.busy * 100.0,
            self.signing_us
                .map_or("—".to_owned(), |us| format!("{us:.0} µs"))
        )
    }
}

/// Waits until `who`'s nonce on chain (mined transactions) reaches `target`.
async fn landed(client: &EvmClient, who: Address, target: u64) {
    while client.nonce(who, false).await.unwrap() < target {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A fresh anvil whose dev account 1 (the hot wallet) holds plenty of USDT, a client of it and
/// the fees to sign with.
async fn funded_chain() -> (
    DevChain,
    alloy::signers::local::PrivateKeySigner,
    EvmClient,
    treasuryd::chains::evm::Fees,
) {
    let chain = DevChain::start(&[]).await.unwrap();
    let hot = chain.dev_key(1).unwrap();
    chain
        .mint(TestToken::Usdt, hot.address(), 1_000_000_000_000_000)
        .await
        .unwrap();
    let client = EvmClient::new(&chain.url).unwrap();
    let fees = client
        .suggest_fees(FeeMode::Normal, GWEI, 300 * GWEI)
        .await
        .unwrap();
    (chain, hot, client, fees)
}

/// Broadcasts pre-signed transactions, CONCURRENT_REQUESTS calls at a time.
async fn send_all(client: &EvmClient, signed: Vec<treasuryd::chains::evm::SignedTransfer>) {
    futures::stream::iter(signed)
        .map(|s| {
            let client = client.clone();
            async move { client.broadcast(&s.raw).await.unwrap() }
        })
        .buffer_unordered(CONCURRENT_REQUESTS)
        .collect::<Vec<_>>()
        .await;
}

/// The hand-written sender: `n` transfers signed beforehand with consecutive nonces, sent by
/// CONCURRENT_REQUESTS concurrent calls; transfers per second from the first send until the
/// hot wallet's nonce shows the last one mined.
async fn baseline(n: usize) -> (f64, CpuUse) {
    let (chain, hot, client, fees) = funded_chain().await;
    let first = client.nonce(hot.address(), false).await.unwrap();
    let signing = Instant::now();
    let signed: Vec<_> = (0..n)
        .map(|i| {
            let tx = TransferTx {
                chain_id: chain.chain_id,
                nonce: first + i as u64,
                token: chain.usdt,
                to: destination(i),
                value: U256::from(1_000_000u64),
                gas_limit: 100_000,
                fees,
            };
            sign_transfer(&hot, &tx).unwrap()
        })
        .collect();
    let signing_us = signing.elapsed().as_secs_f64() * 1e6 / n as f64;
    let cpu = CpuMark::now(&chain);
    let started = Instant::now();
    send_all(&client, signed).await;
    landed(&client, hot.address(), first + n as u64).await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let mut cpu = cpu.since(&chain, n);
    cpu.signing_us = Some(signing_us);
    (rate, cpu)
}

struct Subject {
    /// First request to the last transfer mined.
    landed: f64,
    /// First request to every payout confirmed in the ledger.
    settled: f64,
    /// First request to the last 202.
    accepted: f64,
    /// Each POST's answer time, sorted.
    post: Vec<Duration>,
    to_broadcast: Vec<Duration>,
    /// Engine ticks during the run, and seconds spent in each phase of them.
    ticks: u64,
    phases: Vec<(&'static str, f64)>,
    /// CPU from the first request to the last transfer mined.
    cpu: CpuUse,
    /// Transactions re-signed during the run (speed-ups and cancels): none is needed on a
    /// chain that mines every transaction it is sent.
    replacements: u64,
}

const PHASES: [&str; 6] = ["lease", "choose", "track", "settle", "send", "watch"];

/// The daemon running in-process against `chain` with anvil dev account 1 as its hot wallet,
/// and a funded partner account to pay from.
struct Daemon {
    api: std::net::SocketAddr,
    store: treasuryd::store::DynStore,
    metrics: treasuryd::metrics::Metrics,
    account: String,
    stop: tokio::sync::oneshot::Sender<()>,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start_daemon(chain: &DevChain, db_url: String, network_extra: &str) -> Daemon {
    let hot = chain.dev_key(1).unwrap();
    chain
        .mint(TestToken::Usdt, hot.address(), 1_000_000_000_000_000)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = App::build(
        daemon_config(chain, &dir, db_url, network_extra),
        vec![(
            SecretString::from(TRADER.to_owned()),
            Caller::staff("bench", Role::Trader),
        )],
    )
    .await
    .unwrap();
    let api = app.api_addr();
    let metrics = app.state().metrics.clone();
    let ledger = app.state().ledger.clone();
    let store = app.state().store.clone();
    let asset = AssetKey::new("ethereum", "USDT");
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
    let account = store
        .create_account(
            &NewAccount {
                owner: "bench".into(),
                company: None,
                asset: asset.clone(),
                kind: AccountKind::Partner,
                allow_negative: false,
            },
            &audit,
        )
        .await
        .unwrap();
    ledger
        .post_one(Command::new(
            "bench-funding",
            asset,
            ledger
                .deposit(&account, Amount::new(1_000_000_000_000_000).unwrap())
                .unwrap(),
        ))
        .await
        .unwrap()
        .unwrap();
    let (stop, running) = run(app);
    Daemon {
        api,
        store,
        metrics,
        account: account.id.to_string(),
        stop,
        running,
        _dir: dir,
    }
}

const TRADER: &str = "tdk_bench_trader";

/// Runs a built app until the sender fires.
fn run(
    app: App,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async {
        let _ = stop_rx.await;
    }));
    (stop, running)
}

/// The daemon's config: `dir` for its data and wallet file, anvil dev account 1 as the hot
/// wallet of `chain`.
fn daemon_config(
    chain: &DevChain,
    dir: &tempfile::TempDir,
    db_url: String,
    network_extra: &str,
) -> Config {
    let hot = chain.dev_key(1).unwrap();
    let wallets = dir.path().join("wallets");
    std::fs::create_dir_all(&wallets).unwrap();
    std::fs::write(
        wallets.join("ethereum.toml"),
        format!("[[wallets]]\nnetwork = \"ethereum\"\nrole = \"hot\"\naddress = \"{}\"\nkey_env = \"HOT\"\n", hot.address().to_checksum(None)),
    )
    .unwrap();
    let mut c = Config::defaults();
    c.data_dir = dir.path().to_owned();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.server.metrics_listen = "127.0.0.1:0".parse().unwrap();
    c.database.url = Some(SecretString::from(db_url));
    c.database.max_connections = 8;
    c.wallets_dir = wallets;
    c.secrets.insert(
        "HOT".into(),
        SecretString::from(format!("0x{}", hex::encode(hot.to_bytes()))),
    );
    c.networks = vec![
        toml::from_str(&format!(
            "name = \"ethereum\"\nchain_id = {}\nrpc_urls = [\"{}\"]\nconfirmations = 1\npoll_interval_ms = 20\n{network_extra}\n\
             [[tokens]]\ncode = \"USDT\"\naddress = \"{}\"\ndecimals = 6\n",
            chain.chain_id,
            chain.url,
            chain.usdt.to_checksum(None)
        ))
        .unwrap(),
    ];
    c
}

impl Daemon {
    /// Requests `n` payouts of 1 USDT, up to CONCURRENT_REQUESTS at a time, as a busy
    /// treasury would.
    async fn request(&self, n: usize) -> Vec<(treasuryd::domain::PayoutId, Duration)> {
        let http = reqwest::Client::new();
        futures::stream::iter(0..n)
            .map(|i| self.post_one(&http, i))
            .buffer_unordered(CONCURRENT_REQUESTS)
            .collect()
            .await
    }

    /// POSTs payout `i` (1 USDT to `destination(i)`); its id and how long the answer took.
    async fn post_one(
        &self,
        http: &reqwest::Client,
        i: usize,
    ) -> (treasuryd::domain::PayoutId, Duration) {
        let sent = Instant::now();
        let body = serde_json::json!({"account": self.account, "network": "ethereum", "asset": "USDT",
            "destination": destination(i).to_checksum(None), "amount": "1"});
        let r = http
            .post(format!("http://{}/v1/payouts", self.api))
            .bearer_auth(TRADER)
            .header("Idempotency-Key", format!("b-{i}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let v: serde_json::Value = r.json().await.unwrap();
        let id = treasuryd::domain::PayoutId::parse(v["id"].as_str().unwrap());
        (id.unwrap(), sent.elapsed())
    }

    /// Each payout's time from accepted to its first chunk's first broadcast, sorted.
    async fn to_first_broadcast(&self, ids: &[treasuryd::domain::PayoutId]) -> Vec<Duration> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let p = self.store.get_payout(*id).await.unwrap();
            if let Some(at) = p
                .chunks
                .first()
                .and_then(|c| c.attempts.first())
                .and_then(|a| a.broadcast_at)
            {
                out.push(Duration::from_micros((at - p.created_at).max(0) as u64));
            }
        }
        out.sort();
        out
    }

    /// Requests `n` payouts of 1 USDT through the batch API, 500 a request, 4 requests at a
    /// time; keys start with `prefix`.
    async fn request_batches(&self, n: usize, prefix: &str) {
        let http = reqwest::Client::new();
        let starts: Vec<usize> = (0..n).step_by(500).collect();
        futures::stream::iter(starts)
            .map(|start| {
                let (http, account, api) = (http.clone(), self.account.clone(), self.api);
                async move {
                    let items: Vec<serde_json::Value> = (start..(start + 500).min(n))
                        .map(|i| {
                            serde_json::json!({"idempotency_key": format!("{prefix}-{i}"),
                            "account": account, "network": "ethereum", "asset": "USDT",
                            "destination": destination(i).to_checksum(None), "amount": "1"})
                        })
                        .collect();
                    let r = http
                        .post(format!("http://{api}/v1/payouts/batch"))
                        .bearer_auth(TRADER)
                        .json(&serde_json::json!({ "payouts": items }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    let v: serde_json::Value = r.json().await.unwrap();
                    assert!(
                        v["results"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .all(|r| r["status"] == 202),
                        "{v}"
                    );
                }
            })
            .buffer_unordered(4)
            .collect::<Vec<_>>()
            .await;
    }

    /// Waits until `n` chunks are in flight, every one of them broadcast.
    async fn all_broadcast(&self, n: usize) {
        loop {
            let waiting = self.store.in_flight("ethereum").await.unwrap();
            if waiting.len() == n
                && waiting
                    .iter()
                    .all(|f| f.attempts.iter().any(|a| a.broadcast_at.is_some()))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.running.await.unwrap().unwrap();
    }

    /// Seconds spent so far in each phase of the engine's ticks.
    fn phase_sums(&self) -> Vec<(&'static str, f64)> {
        PHASES
            .iter()
            .map(|p| {
                let h = self
                    .metrics
                    .payouts
                    .tick_phase_seconds
                    .with_label_values(&["ethereum", p]);
                (*p, h.get_sample_sum())
            })
            .collect()
    }

    /// Speed-ups and cancels signed so far.
    fn replacements(&self) -> u64 {
        let p = &self.metrics.payouts;
        p.speedups_total.with_label_values(&["ethereum"]).get()
            + p.cancels_total.with_label_values(&["ethereum"]).get()
    }

    /// (ticks, seconds in ticks) so far.
    fn ticks(&self) -> (u64, f64) {
        let h = self
            .metrics
            .payouts
            .tick_seconds
            .with_label_values(&["ethereum"]);
        (h.get_sample_count(), h.get_sample_sum())
    }
}

/// Runs the daemon in-process on `db_url` against a fresh anvil and pays `n` payouts.
async fn subject(n: usize, db_url: String) -> Subject {
    let chain = DevChain::start(&[]).await.unwrap();
    let daemon = start_daemon(&chain, db_url, "max_in_flight = 512").await;
    let client = EvmClient::new(&chain.url).unwrap();
    let hot = chain.dev_key(1).unwrap().address();
    let first = client.nonce(hot, false).await.unwrap();
    let cpu = CpuMark::now(&chain);
    let started = Instant::now();
    let answered = daemon.request(n).await;
    let accepted = n as f64 / started.elapsed().as_secs_f64();
    landed(&client, hot, first + n as u64).await;
    let landed = n as f64 / started.elapsed().as_secs_f64();
    let cpu = cpu.since(&chain, n);
    while count_active(&daemon.store).await > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settled = n as f64 / started.elapsed().as_secs_f64();
    let mut post: Vec<Duration> = answered.iter().map(|(_, took)| *took).collect();
    post.sort();
    let ids: Vec<_> = answered.iter().map(|(id, _)| *id).collect();
    let to_broadcast = daemon.to_first_broadcast(&ids).await;
    let phases = daemon.phase_sums();
    let ticks = daemon.ticks().0;
    let replacements = daemon.replacements();
    daemon.stop().await;
    Subject {
        landed,
        settled,
        accepted,
        post,
        to_broadcast,
        ticks,
        phases,
        cpu,
        replacements,
    }
}

/// With automine off, puts `n` payouts in flight at once (signed, stored, broadcast, waiting
/// in the node's pool) and measures the engine's tick while they wait; then mines and
/// measures how fast they settle. Returns (mean tick ms while waiting, payouts/s settled,
/// transactions re-sent because the node lost them).
async fn in_flight(n: usize, db_url: String) -> (f64, f64, u64) {
    let chain = DevChain::start(&[]).await.unwrap();
    let daemon = start_daemon(
        &chain,
        db_url,
        // anvil may drop part of a very large pool; what it dropped is re-sent (same nonce,
        // higher fee) once stuck, as on a real network.
        "max_in_flight = 10000\nstuck_after_seconds = 60\nstuck_after_blocks = 1000000",
    )
    .await;
    chain.set_automine(false).await.unwrap();
    daemon.request(n).await;
    daemon.all_broadcast(n).await;
    let (count0, sum0) = daemon.ticks();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (count1, sum1) = daemon.ticks();
    let tick_ms = (sum1 - sum0) / (count1 - count0).max(1) as f64 * 1e3;
    let started = Instant::now();
    let miner = {
        let client = EvmClient::new(&chain.url).unwrap();
        tokio::spawn(async move {
            loop {
                let _ = client
                    .provider()
                    .raw_request::<_, ()>("evm_mine".into(), ())
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    while count_active(&daemon.store).await > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settled = n as f64 / started.elapsed().as_secs_f64();
    let resent = daemon
        .metrics
        .payouts
        .speedups_total
        .with_label_values(&["ethereum"])
        .get();
    miner.abort();
    daemon.stop().await;
    (tick_ms, settled, resent)
}

/// Payouts on the network not yet final (a grouped count over the active ones only).
async fn count_active(store: &treasuryd::store::DynStore) -> i64 {
    store
        .active_payouts("ethereum")
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum()
}

async fn postgres_db() -> (String, String) {
    let admin = std::env::var("TREASURYD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("treasuryd_bench_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let base = admin.rsplit_once('/').unwrap().0.to_owned();
    (format!("{base}/{name}"), name)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("TREASURYD_BENCH_PAYOUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000);
    if let Ok(sizes) = std::env::var("TREASURYD_BENCH_IN_FLIGHT") {
        return in_flight_table(&sizes).await;
    }
    if let Ok(sizes) = std::env::var("TREASURYD_BENCH_FOOTPRINT") {
        return footprint(&sizes).await;
    }
    if let Ok(rate) = std::env::var("TREASURYD_BENCH_STEADY") {
        return steady_table(n, rate.parse().expect("payouts a second")).await;
    }
    if let Ok(k) = std::env::var("TREASURYD_BENCH_DISPERSE") {
        return disperse_table(n, k.parse().expect("a batch size")).await;
    }
    println!(
        "| backend | payouts | baseline landed/s | daemon landed/s | ratio | settled/s | accepted/s | POST p50 | p95 | p99 | accepted→broadcast p50 | p95 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let rounds: usize = std::env::var("TREASURYD_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let mut summary = Vec::new();
    let mut phase_rows = Vec::new();
    let mut cpu_rows = Vec::new();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let backends =
        std::env::var("TREASURYD_BENCH_BACKENDS").unwrap_or_else(|_| "SQLite,PostgreSQL".into());
    for backend in ["SQLite", "PostgreSQL"] {
        if !backends.split(',').any(|b| b.eq_ignore_ascii_case(backend)) {
            continue;
        }
        let mut ratios = Vec::new();
        // anvil's speed drifts from node to node: baseline and daemon alternate, each on a
        // fresh node, and the median ratio is the figure to quote.
        for round in 0..rounds {
            let (base, base_cpu) = baseline(n).await;
            let (url, pg_name) = if backend == "SQLite" {
                (
                    format!(
                        "sqlite://{}",
                        dir.path().join(format!("bench-{round}.db")).display()
                    ),
                    None,
                )
            } else {
                let (url, name) = postgres_db().await;
                (url, Some(name))
            };
            let s = subject(n, url).await;
            println!(
                "| {backend} | {n} | {base:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
                s.landed,
                s.landed / base,
                s.settled,
                s.accepted,
                ms(pct(&s.post, 0.5)),
                ms(pct(&s.post, 0.95)),
                ms(pct(&s.post, 0.99)),
                ms(pct(&s.to_broadcast, 0.5)),
                ms(pct(&s.to_broadcast, 0.95)),
            );
            ratios.push(s.landed / base);
            cpu_rows.push(base_cpu.row("baseline", backend));
            cpu_rows.push(s.cpu.row("daemon", backend));
            phase_rows.push(format!(
                "| {backend} | {} | {} | {} |",
                s.ticks,
                s.replacements,
                s.phases
                    .iter()
                    .map(|(_, secs)| format!("{:.0} ms", secs * 1e3))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
            if let Some(name) = pg_name {
                drop_postgres_db(&name).await;
            }
        }
        summary.push((backend, median(ratios)));
    }
    println!();
    println!("| backend | median ratio of landed rates, daemon to baseline |");
    println!("|---|---|");
    for (backend, ratio) in summary {
        println!("| {backend} | {ratio:.2} |");
    }
    println!();
    println!(
        "| backend | engine ticks | replacements | {} |",
        PHASES.map(|p| format!("{p} (total)")).join(" | ")
    );
    println!("|---|---|---|{}", "---|".repeat(PHASES.len()));
    for row in phase_rows {
        println!("{row}");
    }
    println!();
    println!(
        "| backend | run | anvil CPU per transfer | this process (daemon, clients) | rest of the machine | machine busy | signing beforehand |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in cpu_rows {
        println!("{row}");
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// `TREASURYD_BENCH_IN_FLIGHT=100,10000`: the tick with that many payouts waiting in the
/// node's pool, on PostgreSQL, smallest first as the reference.
async fn in_flight_table(sizes: &str) {
    let sizes: Vec<usize> = sizes
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "| in flight | mean tick while waiting | tick per 1k in flight | settled payouts/s | re-sent after the stuck threshold |"
    );
    println!("|---|---|---|---|---|");
    for n in sizes {
        let (url, name) = postgres_db().await;
        let (tick_ms, settled, resent) = in_flight(n, url).await;
        println!(
            "| {n} | {tick_ms:.1} ms | {:.2} ms | {settled:.0} | {resent} |",
            tick_ms / n as f64 * 1000.0
        );
        drop_postgres_db(&name).await;
    }
}

async fn drop_postgres_db(name: &str) {
    let admin = std::env::var("TREASURYD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&pool)
    .await;
}

/// This process's resident memory and its peak so far, in MB (Linux).
fn resident_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or_default()
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

/// `TREASURYD_BENCH_FOOTPRINT=100000,10000`, on SQLite: the resident memory of the process
/// (the daemon in-process; anvil runs apart) with the first figure's payouts queued through
/// the batch API while the node mines nothing, and how long a restart takes, with the second
/// figure's payouts signed, broadcast and waiting in the node's pool, to answer /readyz and to
/// finish its first engine tick (which loads every chunk in flight).
async fn footprint(spec: &str) {
    let sizes: Vec<usize> = spec
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let (queued, in_flight) = (
        sizes.first().copied().unwrap_or(100_000),
        sizes.get(1).copied().unwrap_or(10_000),
    );
    let dir = tempfile::tempdir().unwrap();
    let url = |name: &str| format!("sqlite://{}", dir.path().join(name).display());

    let chain = DevChain::start(&[]).await.unwrap();
    let daemon = start_daemon(&chain, url("queued.db"), "max_in_flight = 512").await;
    chain.set_automine(false).await.unwrap();
    let (started_rss, _) = resident_mb();
    daemon.request_batches(queued, "q").await;
    // The engine signs its 512 and waits on the node; the rest stays queued.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss, peak) = resident_mb();
    let active = count_active(&daemon.store).await;
    daemon.stop().await;
    drop(chain);
    println!("| payouts queued | resident after start | resident with them queued | peak |");
    println!("|---|---|---|---|");
    println!("| {active} | {started_rss:.0} MB | {rss:.0} MB | {peak:.0} MB |");
    println!();

    let chain = DevChain::start(&[]).await.unwrap();
    let extra = "max_in_flight = 10000\nstuck_after_seconds = 600\nstuck_after_blocks = 1000000";
    let db = url("in-flight.db");
    let daemon = start_daemon(&chain, db.clone(), extra).await;
    chain.set_automine(false).await.unwrap();
    daemon.request_batches(in_flight, "f").await;
    daemon.all_broadcast(in_flight).await;
    let Daemon {
        stop,
        running,
        _dir,
        ..
    } = daemon;
    let _ = stop.send(());
    running.await.unwrap().unwrap();

    let began = Instant::now();
    let app = App::build(
        daemon_config(&chain, &_dir, db, extra),
        vec![(
            SecretString::from(TRADER.to_owned()),
            Caller::staff("bench", Role::Trader),
        )],
    )
    .await
    .unwrap();
    let (api, metrics) = (app.api_addr(), app.state().metrics.clone());
    let (stop, running) = run(app);
    let http = reqwest::Client::new();
    while !http
        .get(format!("http://{api}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready = began.elapsed();
    let ticks = || {
        metrics
            .payouts
            .tick_seconds
            .with_label_values(&["ethereum"])
            .get_sample_count()
    };
    while ticks() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ticked = began.elapsed();
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    println!(
        "| payouts in flight | restart to /readyz 200 | restart to the first engine tick done |"
    );
    println!("|---|---|---|");
    println!(
        "| {in_flight} | {:.0} ms | {:.0} ms |",
        ready.as_secs_f64() * 1e3,
        ticked.as_secs_f64() * 1e3
    );
}

/// What the same node takes when transfers go `k` to a transaction through
/// `contracts/Disperse.sol`, against the single-transfer baseline, alternating on fresh nodes:
/// a hand-written sender's `n` transfers as `n / k` pre-signed disperse calls (the ceiling
/// batching gives), and the daemon with `[networks.batching]` paying `n` payouts submitted
/// through the batch API, on both databases. Also the gas of one transfer alone and in a
/// batch, to a fresh recipient and to one already holding the token.
async fn disperse_table(n: usize, k: usize) {
    let rounds: usize = std::env::var("TREASURYD_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    println!(
        "| transfers | per batch | single baseline landed/s | hand-written batches landed/s | daemon SQLite landed/s | settled/s | daemon PostgreSQL landed/s | settled/s | gas single fresh | batched fresh | gas single known | batched known |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let dir = tempfile::tempdir().unwrap();
    let (mut raw_ratios, mut sqlite_ratios, mut pg_ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let single = baseline(n).await.0;
        let b = batched(n, k).await;
        let sqlite = daemon_batched(
            n,
            k,
            format!(
                "sqlite://{}",
                dir.path().join(format!("disperse-{round}.db")).display()
            ),
        )
        .await;
        let (url, name) = postgres_db().await;
        let pg = daemon_batched(n, k, url).await;
        drop_postgres_db(&name).await;
        println!(
            "| {n} | {k} | {single:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} ({:.2}×) | {} | {} ({:.2}×) |",
            b.landed,
            sqlite.0,
            sqlite.1,
            pg.0,
            pg.1,
            b.single_fresh,
            b.batched_fresh,
            b.batched_fresh as f64 / b.single_fresh as f64,
            b.single_known,
            b.batched_known,
            b.batched_known as f64 / b.single_known as f64,
        );
        raw_ratios.push(b.landed / single);
        sqlite_ratios.push(sqlite.0 / single);
        pg_ratios.push(pg.0 / single);
    }
    println!();
    println!("| median ratio of landed transfers/s to the single-transfer baseline | |");
    println!("|---|---|");
    println!("| hand-written batches | {:.2} |", median(raw_ratios));
    println!("| daemon, SQLite | {:.2} |", median(sqlite_ratios));
    println!("| daemon, PostgreSQL | {:.2} |", median(pg_ratios));
}

/// The daemon with batching of `k` on a fresh anvil paying `n` payouts of 1 USDT submitted
/// through the batch API: (landed transfers/s, settled payouts/s) from the first request.
/// Landed: the hot wallet's token balance down by all `n`.
async fn daemon_batched(n: usize, k: usize, db_url: String) -> (f64, f64) {
    let chain = DevChain::start(&[]).await.unwrap();
    let contract = chain.deploy_disperse().await.unwrap();
    let extra = format!(
        "max_in_flight = 10000\n[batching]\ncontract = \"{}\"\ntokens = [\"USDT\"]\nmax_transfers = {k}\n",
        contract.to_checksum(None)
    );
    let daemon = start_daemon(&chain, db_url, &extra).await;
    let client = EvmClient::new(&chain.url).unwrap();
    let hot = chain.dev_key(1).unwrap().address();
    let before = client.token_balance(chain.usdt, hot).await.unwrap();
    let target = before - U256::from(n as u64 * 1_000_000);
    let started = Instant::now();
    daemon.request_batches(n, "d").await;
    let accepted = started.elapsed();
    while client.token_balance(chain.usdt, hot).await.unwrap() > target {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let landed = n as f64 / started.elapsed().as_secs_f64();
    while count_active(&daemon.store).await > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settled = n as f64 / started.elapsed().as_secs_f64();
    assert_eq!(
        client.token_balance(chain.usdt, hot).await.unwrap(),
        target,
        "paid exactly"
    );
    let phases: Vec<String> = daemon
        .phase_sums()
        .iter()
        .map(|(p, secs)| format!("{p} {:.0} ms", secs * 1e3))
        .collect();
    eprintln!(
        "daemon with batches: all {n} accepted in {:.0} ms; {} ticks: {}",
        accepted.as_secs_f64() * 1e3,
        daemon.ticks().0,
        phases.join(", ")
    );
    daemon.stop().await;
    (landed, settled)
}

struct Batched {
    landed: f64,
    /// Gas per transfer: alone and in a batch, to fresh recipients and to known ones.
    single_fresh: u64,
    batched_fresh: u64,
    single_known: u64,
    batched_known: u64,
}

async fn batched(n: usize, k: usize) -> Batched {
    let (chain, hot, client, fees) = funded_chain().await;
    let contract = chain.deploy_disperse().await.unwrap();
    let mut nonce = client.nonce(hot.address(), false).await.unwrap();
    let mined = async |raw: &[u8], hash| {
        client.broadcast(raw).await.unwrap();
        loop {
            if let Some(i) = client.inclusion(hash).await.unwrap() {
                assert!(i.success);
                return i.gas_used;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let approve = sign_approve(
        &hot,
        chain.chain_id,
        nonce,
        chain.usdt,
        contract,
        U256::MAX,
        fees,
    )
    .unwrap();
    mined(&approve.raw, approve.hash).await;
    nonce += 1;
    let value = U256::from(1_000_000u64);
    let gas_limit = 60_000 + 40_000 * k as u64;
    // Gas: a single transfer to a fresh recipient, then to the same one again; a batch of k
    // fresh recipients, then the same batch again.
    let mut single = Vec::new();
    for _ in 0..2 {
        let tx = TransferTx {
            chain_id: chain.chain_id,
            nonce,
            token: chain.usdt,
            to: destination(usize::MAX / 2),
            value,
            gas_limit: 100_000,
            fees,
        };
        let s = sign_transfer(&hot, &tx).unwrap();
        single.push(mined(&s.raw, s.hash).await);
        nonce += 1;
    }
    let mut batch_gas = Vec::new();
    for _ in 0..2 {
        let tx = DisperseTx {
            chain_id: chain.chain_id,
            nonce,
            contract,
            token: chain.usdt,
            payments: (0..k)
                .map(|i| (destination(usize::MAX / 4 + i), value))
                .collect(),
            gas_limit,
            fees,
        };
        let s = sign_disperse(&hot, &tx).unwrap();
        batch_gas.push(mined(&s.raw, s.hash).await / k as u64);
        nonce += 1;
    }
    // Throughput: n fresh recipients in n / k calls.
    let first = nonce;
    let signed: Vec<_> = (0..n.div_ceil(k))
        .map(|b| {
            let tx = DisperseTx {
                chain_id: chain.chain_id,
                nonce: first + b as u64,
                contract,
                token: chain.usdt,
                payments: (b * k..((b + 1) * k).min(n))
                    .map(|i| (destination(i), value))
                    .collect(),
                gas_limit,
                fees,
            };
            sign_disperse(&hot, &tx).unwrap()
        })
        .collect();
    let calls = signed.len() as u64;
    let started = Instant::now();
    send_all(&client, signed).await;
    landed(&client, hot.address(), first + calls).await;
    let landed = n as f64 / started.elapsed().as_secs_f64();
    // Every recipient was paid exactly once.
    for i in [0, n / 2, n - 1] {
        assert_eq!(
            client
                .token_balance(chain.usdt, destination(i))
                .await
                .unwrap(),
            value
        );
    }
    Batched {
        landed,
        single_fresh: single[0],
        batched_fresh: batch_gas[0],
        single_known: single[1],
        batched_known: batch_gas[1],
    }
}

/// `TREASURYD_BENCH_STEADY=500`: `n` single payouts requested at a steady `rate` a second (each
/// sent at its own moment, whatever the answers before it), on both databases; the time from
/// accepted to the first broadcast and the POST latency, as percentiles.
async fn steady_table(n: usize, rate: f64) {
    println!(
        "| backend | payouts | requested/s | accepted→first broadcast p50 | p95 | p99 | POST p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let dir = tempfile::tempdir().unwrap();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for backend in ["SQLite", "PostgreSQL"] {
        let (url, pg_name) = if backend == "SQLite" {
            (
                format!("sqlite://{}", dir.path().join("steady.db").display()),
                None,
            )
        } else {
            let (url, name) = postgres_db().await;
            (url, Some(name))
        };
        let chain = DevChain::start(&[]).await.unwrap();
        let daemon = std::sync::Arc::new(start_daemon(&chain, url, "max_in_flight = 512").await);
        let http = reqwest::Client::new();
        let start = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let (daemon, http) = (daemon.clone(), http.clone());
                let at = start + Duration::from_secs_f64(i as f64 / rate);
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    daemon.post_one(&http, i).await
                })
            })
            .collect();
        let mut answered = Vec::with_capacity(n);
        for t in tasks {
            answered.push(t.await.unwrap());
        }
        let offered = n as f64 / start.elapsed().as_secs_f64();
        while count_active(&daemon.store).await > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ids: Vec<_> = answered.iter().map(|(id, _)| *id).collect();
        let to_broadcast = daemon.to_first_broadcast(&ids).await;
        let mut post: Vec<Duration> = answered.iter().map(|(_, took)| *took).collect();
        post.sort();
        println!(
            "| {backend} | {n} | {offered:.0} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
            ms(pct(&to_broadcast, 0.5)),
            ms(pct(&to_broadcast, 0.95)),
            ms(pct(&to_broadcast, 0.99)),
            ms(pct(&post, 0.5)),
            ms(pct(&post, 0.99)),
        );
        match std::sync::Arc::try_unwrap(daemon) {
            Ok(daemon) => daemon.stop().await,
            Err(_) => panic!("a request task still holds the daemon"),
        }
        if let Some(name) = pg_name {
            drop_postgres_db(&name).await;
        }
    }
}
