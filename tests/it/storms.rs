//! Storms, as operators' machines and chains produce them.
//!
//! - A crash storm: the real binary takes a stream of payouts while it is SIGKILLed every
//!   1–3 s (at random moments) for the first half of the stream and restarted as soon as the
//!   old process is gone, as a supervisor would. Every destination ends holding exactly what it
//!   was sent, the hot wallet's nonce moved by exactly the number of chunks, no automatic
//!   safe-mode was entered, the ledger verifies and `treasuryd reconcile` agrees with the chain.
//! - A block-rhythm and reorg storm: a stream with `confirmations = 4` on an automining chain
//!   (blocks come in bursts, only when a transaction arrives) and on one with a fixed block
//!   time, while `anvil_reorg` replaces the last 1–3 blocks again and again. Every destination
//!   is paid once, nothing enters safe-mode, and every periodic reconciliation is clean.
//! - A reorg deeper than the confirmation depth is a real cause: it must enter safe-mode, with
//!   its evidence recorded.
//!
//! `TREASURYD_STORM_SEED` replays a run (each run prints its seed); `TREASURYD_STORM_PAYOUTS`
//! makes the crash storm bigger for a bench-style run (default 2,000: at 1,000 a watcher that
//! reads the head block, one of the causes found, passed; at 2,000 it failed).

use crate::crash::verify_cli;
use crate::engine::{app_on, spawn_miner};
use crate::engine_crash::{ADMIN_TOKEN, Rig, TRADER_TOKEN, rig, start, stop};
use crate::harness::*;
use crate::on_both_backends;
use crate::reconcile::reconcile_cli;
use alloy::primitives::{Address, U256};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use treasuryd::chains::evm::EvmClient;
use treasuryd::dev::chain::DevChain;

on_both_backends!(
    a_crash_storm_pays_every_payout_exactly_once,
    a_crash_storm_with_batches_on_chain_pays_every_payout_exactly_once,
    a_reorg_storm_on_bursty_blocks_stays_clean,
    a_reorg_storm_on_timed_blocks_stays_clean,
    a_reorg_deeper_than_the_confirmations_enters_safe_mode_with_evidence,
);

/// splitmix64: a small, seedable generator, so that a failing storm can be replayed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn seeded(what: &str) -> Self {
        let seed = std::env::var("TREASURYD_STORM_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{what}: TREASURYD_STORM_SEED={seed}");
        Self(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `range` (inclusive).
    pub(crate) fn within(&mut self, range: std::ops::RangeInclusive<u64>) -> u64 {
        range.start() + self.next() % (range.end() - range.start() + 1)
    }

    fn address(&mut self) -> Address {
        let mut bytes = [0u8; 20];
        for part in bytes.chunks_mut(8) {
            let n = self.next().to_be_bytes();
            part.copy_from_slice(&n[..part.len()]);
        }
        Address::from(bytes)
    }
}

/// One payout of a stream: where to, how much (base units, 6 decimals) and in how many chunks
/// under the 250,000 cap.
/// The daemon of a storm, killed when the test ends, passing or not.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Clone)]
struct Planned {
    key: String,
    to: Address,
    units: u128,
}

impl Planned {
    fn chunks(&self) -> u64 {
        self.units.div_ceil(250_000_000_000) as u64
    }

    fn amount(&self) -> String {
        format!("{}.{:06}", self.units / 1_000_000, self.units % 1_000_000)
    }
}

/// `n` payouts to random destinations: mostly 1–3,000 USDT to the micro-unit, one in a hundred
/// over the cap (split in two).
fn plan(rng: &mut Rng, n: usize, prefix: &str) -> Vec<Planned> {
    (0..n)
        .map(|i| {
            let units = if rng.within(0..=99) == 0 {
                u128::from(rng.within(250_000_000_001..=400_000_000_000))
            } else {
                u128::from(rng.within(1_000_000..=3_000_000_000))
            };
            Planned {
                key: format!("{prefix}-{i}"),
                to: rng.address(),
                units,
            }
        })
        .collect()
}

/// POSTs one payout until the daemon answers it, as a client with an idempotency key does:
/// a refused connection (the daemon is down) or a cut one (killed mid-request) is tried again
/// with the same key, and the second answer is the first.
async fn submit(client: &reqwest::Client, api: &Mutex<String>, account: &str, p: &Planned) {
    let body = json!({"account": account, "network": "ethereum", "asset": "USDT", "destination": p.to.to_checksum(None), "amount": p.amount(), "reference": p.key});
    loop {
        let at = api.lock().unwrap().clone();
        let sent = client
            .post(format!("http://{at}/v1/payouts"))
            .bearer_auth(TRADER_TOKEN)
            .header("Idempotency-Key", &p.key)
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == StatusCode::ACCEPTED || r.status() == StatusCode::OK => {
                return;
            }
            Ok(r) if r.status().is_server_error() => {}
            Ok(r) => {
                let status = r.status();
                panic!(
                    "payout {} refused: {status} {}",
                    p.key,
                    r.text().await.unwrap()
                );
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every item of a paginated list.
async fn all_pages(client: &reqwest::Client, api: &str, path: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("http://{api}{path}{sep}limit=500&cursor={c}"),
            None => format!("http://{api}{path}{sep}limit=500"),
        };
        let page: Value = client
            .get(url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return items,
        }
    }
}

/// Read from the chain: every destination holds exactly what it was sent, and the hot wallet
/// used one nonce per chunk, none burnt or reused.
async fn assert_paid_exactly_once(
    rpc: &EvmClient,
    token: Address,
    planned: &[Planned],
    hot: Address,
    nonce_before: u64,
) {
    for p in planned {
        assert_eq!(
            rpc.token_balance(token, p.to).await.unwrap(),
            U256::from(p.units),
            "{} paid exactly once to {}",
            p.key,
            p.to
        );
    }
    let chunks: u64 = planned.iter().map(Planned::chunks).sum();
    assert_eq!(
        rpc.nonce(hot, false).await.unwrap(),
        nonce_before + chunks,
        "one nonce per chunk"
    );
}

/// The automatic safe-mode entries in an audit log.
fn safe_mode_entries(audit: &[Value]) -> Vec<&Value> {
    audit
        .iter()
        .filter(|a| a["action"] == "safe_mode.enter")
        .collect()
}

fn payouts_count() -> usize {
    std::env::var("TREASURYD_STORM_PAYOUTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000)
}

async fn a_crash_storm_pays_every_payout_exactly_once(backend: Backend) {
    crash_storm(backend, false).await
}

/// The same storm with USDT paid in disperse batches of up to 25: SIGKILLs land between a
/// batch's signing, broadcast, inclusion and settlement, and during its approval.
async fn a_crash_storm_with_batches_on_chain_pays_every_payout_exactly_once(backend: Backend) {
    crash_storm(backend, true).await
}

async fn crash_storm(backend: Backend, batched: bool) {
    let n = payouts_count();
    let mut rng = Rng::seeded(&format!("crash storm on {backend:?}, batched: {batched}"));
    // Depth 1 on an automining chain, as the black-box check ran it; reconciled every second.
    let Rig {
        db,
        _dir,
        chain,
        hot,
        key,
        config,
        client,
        rpc,
        ..
    } = rig(
        backend,
        "confirmations = 1\nlease_seconds = 3\nreconcile_interval_seconds = 1",
        true,
    )
    .await;
    let config = if batched {
        let contract = chain.deploy_disperse().await.unwrap();
        crate::engine_crash::write_config(
            _dir.path(),
            &chain,
            &format!(
                "confirmations = 1\nlease_seconds = 3\nreconcile_interval_seconds = 1\n\
                 [networks.batching]\ncontract = \"{}\"\ntokens = [\"USDT\"]\nmax_transfers = 25\n",
                contract.to_checksum(None)
            ),
        )
    } else {
        config
    };
    let planned = plan(&mut rng, n, "storm");
    let total: u128 = planned.iter().map(|p| p.units).sum();
    // The rig's 10,000,000 USDT may not cover a big run: the wallet holds the whole plan.
    chain
        .mint(treasuryd::dev::chain::TestToken::Usdt, hot.address(), total)
        .await
        .unwrap();
    let nonce_before = rpc.nonce(hot.address(), false).await.unwrap();
    let (first, api, mut logs) = start(&config, &db.url, &key, None);
    // Balance differences any daemon found, even ones a re-read made go away.
    let mut doubts: Vec<String> = Vec::new();
    let doubt = |line: &str| {
        line.contains("reading the range again") || line.contains("differs from the ledger")
    };
    let (s, acct) = crate::engine_crash::call(&client, &api, ADMIN_TOKEN, "/v1/accounts", None, Some(json!({"owner": "storm", "network": "ethereum", "asset": "USDT", "kind": "partner", "reason": "storm"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{acct}");
    let account = acct["id"].as_str().unwrap().to_owned();
    let (s, body) = crate::engine_crash::call(&client, &api, ADMIN_TOKEN, "/v1/deposits", Some("storm-funding"), Some(json!({"account": account, "amount": format!("{}", total / 1_000_000 + 1), "reason": "storm"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");

    let api = Arc::new(Mutex::new(api));
    let daemon = Arc::new(Mutex::new(Daemon(first)));
    let submitted = Arc::new(AtomicUsize::new(0));

    // The stream: eight clients, paced so the first half lasts long enough for many kills.
    let next = Arc::new(AtomicUsize::new(0));
    let planned = Arc::new(planned);
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (next, planned, api, client, account, submitted) = (
            next.clone(),
            planned.clone(),
            api.clone(),
            client.clone(),
            account.clone(),
            submitted.clone(),
        );
        clients.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(p) = planned.get(i) else {
                    return;
                };
                submit(&client, &api, &account, p).await;
                submitted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(160)).await;
            }
        }));
    }

    // The storm: a SIGKILL every 1–3 s until half the stream is in, each followed by a restart
    // the moment the old process is gone.
    let mut kills = 0;
    let started = Instant::now();
    while submitted.load(Ordering::SeqCst) < n / 2 {
        tokio::time::sleep(Duration::from_millis(rng.within(1_000..=3_000))).await;
        let restarted = {
            let (config, url, key) = (config.clone(), db.url.clone(), key.clone());
            let daemon = daemon.clone();
            tokio::task::spawn_blocking(move || {
                let mut old = daemon.lock().unwrap();
                old.0.kill().unwrap(); // SIGKILL
                old.0.wait().unwrap();
                let (child, api, logs) = start(&config, &url, &key, None);
                old.0 = child;
                (api, logs)
            })
            .await
            .unwrap()
        };
        *api.lock().unwrap() = restarted.0;
        // The killed daemon's warnings are all in its channel by now (its stderr closed).
        doubts.extend(logs.try_iter().filter(|l| doubt(l)));
        logs = restarted.1;
        kills += 1;
    }
    for c in clients {
        c.await.unwrap();
    }
    eprintln!(
        "crash storm on {backend:?}: {n} payouts, {kills} kills in {:?}",
        started.elapsed()
    );
    assert!(kills >= 3, "the storm killed the daemon {kills} times");

    // Settlement.
    let api = api.lock().unwrap().clone();
    let mut states: HashMap<String, usize> = HashMap::new();
    for i in 0..1_200 {
        // Safe-mode stops payouts: no use waiting for the rest.
        if i % 20 == 10
            && crate::engine_crash::call(&client, &api, ADMIN_TOKEN, "/v1/networks", None, None)
                .await
                .1[0]
                .get("safe_mode")
                .is_some()
        {
            break;
        }
        let payouts = all_pages(&client, &api, "/v1/payouts").await;
        states.clear();
        for p in &payouts {
            *states
                .entry(p["state"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        if states.get("confirmed") == Some(&n) || states.contains_key("failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines: Vec<String> = logs.try_iter().collect();
    doubts.extend(lines.iter().filter(|l| doubt(l)).cloned());
    if states.get("confirmed") != Some(&n) {
        let tail = &lines[lines.len().saturating_sub(80)..];
        eprintln!("the last daemon's last log lines:\n{}", tail.join("\n"));
    }
    assert!(
        doubts.is_empty(),
        "no balance difference, confirmed or not: {doubts:?}"
    );
    let audit = all_pages(&client, &api, "/v1/audit").await;
    assert!(
        safe_mode_entries(&audit).is_empty(),
        "no automatic safe-mode: {:?}",
        safe_mode_entries(&audit)
    );
    assert_eq!(
        states.get("confirmed"),
        Some(&n),
        "every payout confirmed: {states:?}"
    );
    let chunks: u64 = planned.iter().map(Planned::chunks).sum();
    if batched {
        for p in planned.iter() {
            assert_eq!(
                rpc.token_balance(chain.usdt, p.to).await.unwrap(),
                U256::from(p.units),
                "{} paid exactly once to {}",
                p.key,
                p.to
            );
        }
        // Each transaction took one nonce; batches took fewer than one a chunk (the gas
        // reconciliation below shows none was lost or spent twice).
        let used = rpc.nonce(hot.address(), false).await.unwrap() - nonce_before;
        assert!(used < chunks, "{used} nonces for {chunks} chunks");
    } else {
        assert_paid_exactly_once(&rpc, chain.usdt, &planned, hot.address(), nonce_before).await;
    }
    let paid = all_pages(&client, &api, "/v1/journal?kind=PAYOUT").await;
    assert_eq!(paid.len() as u64, chunks, "one PAYOUT per chunk");
    stop(&mut daemon.lock().unwrap().0);
    let (clean, report) = verify_cli(&config, &db.url);
    assert!(clean, "{report}");
    let (code, lines) = reconcile_cli(&config, &db.url);
    assert_eq!(code, 0, "{lines:?}");
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l["verdict"] == "ok"),
        "{lines:?}"
    );
}

/// How a reorg storm's chain makes blocks.
#[derive(Clone, Copy, Debug)]
enum Rhythm {
    /// Automine: a block for each transaction, none in between.
    Bursty,
    /// One block a second, whatever arrives.
    Timed,
}

/// The daemon's way to the node in a reorg storm: every call passes while no reorg runs, and
/// with automine (`mined_on_send`) a sent transaction holds the way until it is mined, so that
/// a reorg (which takes the gate alone) never races anvil's own miner. It did, with automine
/// and with a block time, and anvil's chain broke: block numbers went missing and blocks kept
/// Transfer logs whose effects its state never applied (reproduced without treasuryd, by plain
/// transfers and `anvil_reorg` from two threads). A real node switches branches atomically;
/// this gives anvil's reorg the same shape.
async fn reorg_gate(
    upstream: &str,
    gate: Arc<tokio::sync::RwLock<()>>,
    mined_on_send: bool,
) -> String {
    #[derive(Clone)]
    struct Gate {
        upstream: String,
        http: reqwest::Client,
        node: EvmClient,
        gate: Arc<tokio::sync::RwLock<()>>,
        mined_on_send: bool,
    }
    async fn forward(
        axum::extract::State(g): axum::extract::State<Gate>,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let _passing = g.gate.read().await;
        let answer = match g
            .http
            .post(&g.upstream)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
        {
            Ok(r) => r.bytes().await.unwrap_or_default(),
            Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
        };
        let sent = g.mined_on_send
            && serde_json::from_slice::<Value>(&body)
                .is_ok_and(|v| v["method"] == "eth_sendRawTransaction");
        if let (true, Ok(v)) = (sent, serde_json::from_slice::<Value>(&answer))
            && let Some(Ok(hash)) = v["result"].as_str().map(str::parse)
        {
            // Mined within half a second, or not being mined (a nonce gap): either way idle.
            for _ in 0..50 {
                if g.node.inclusion(hash).await.is_ok_and(|i| i.is_some()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            answer,
        )
            .into_response()
    }
    let state = Gate {
        upstream: upstream.to_owned(),
        http: reqwest::Client::new(),
        node: EvmClient::new(upstream).unwrap(),
        gate,
        mined_on_send,
    };
    let app = axum::Router::new()
        .route("/", axum::routing::post(forward))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// `n` payouts with `confirmations = 4` while `anvil_reorg` replaces the last 1–3 blocks many
/// times; then the chain keeps going until every payout is final.
async fn reorg_storm(backend: Backend, rhythm: Rhythm, n: usize) {
    let mut rng = Rng::seeded(&format!("reorg storm ({rhythm:?}) on {backend:?}"));
    let chain = Arc::new(DevChain::start(&[]).await.unwrap());
    let gate = Arc::new(tokio::sync::RwLock::new(()));
    let node = reorg_gate(&chain.url, gate.clone(), matches!(rhythm, Rhythm::Bursty)).await;
    // A block a second, mined through the gate (anvil's own `--block-time` miner cannot be).
    if matches!(rhythm, Rhythm::Timed) {
        chain.set_automine(false).await.unwrap();
    }
    let clock = matches!(rhythm, Rhythm::Timed).then(|| {
        let (gate, chain) = (gate.clone(), chain.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _alone = gate.write().await;
                chain.mine(1).await.ok();
            }
        })
    });
    let app = crate::engine::app_with(
        backend,
        &chain,
        &[node],
        "confirmations = 4\nreconcile_interval_seconds = 1",
        "",
    )
    .await;
    let rpc = EvmClient::new(&chain.url).unwrap();
    let hot = chain.dev_key(1).unwrap().address();
    let nonce_before = rpc.nonce(hot, false).await.unwrap();
    let planned = plan(&mut rng, n, "reorg");
    let total: u128 = planned.iter().map(|p| p.units).sum();
    let account =
        funded_partner(&app, "storm", "USDT", &format!("{}", total / 1_000_000 + 1)).await;

    // The chain's setup (token contracts, the hot wallet's funding) is buried deeper than any
    // injected reorg: a reorg without its transactions would undo it, and the network would
    // rightly stop on a wallet whose tokens vanished.
    chain.mine(4).await.unwrap();
    let reorgs = Arc::new(AtomicUsize::new(0));
    let storming = Arc::new(AtomicBool::new(true));
    let reorger = {
        let (reorgs, storming, gate) = (reorgs.clone(), storming.clone(), gate.clone());
        let chain = chain.clone();
        let mut rng = Rng(rng.next());
        tokio::spawn(async move {
            while storming.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(rng.within(150..=600))).await;
                let depth = rng.within(1..=3);
                // Alone on the node: no request in flight, nothing being mined.
                let _alone = gate.write().await;
                if chain.reorg(depth, &[]).await.is_ok() {
                    reorgs.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    for p in &planned {
        let (s, body) = app
            .post(
                "/v1/payouts",
                TRADER,
                Some(&p.key),
                &json!({"account": account, "network": "ethereum", "asset": "USDT", "destination": p.to.to_checksum(None), "amount": p.amount()}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{body}");
        tokio::time::sleep(Duration::from_millis(rng.within(0..=20))).await;
    }
    // Reorgs go on after the last request (at least 3 s, and until there were 15), then
    // blocks keep coming.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for _ in 0..300 {
        if reorgs.load(Ordering::SeqCst) >= 15 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    storming.store(false, Ordering::SeqCst);
    reorger.await.unwrap();
    let miner =
        matches!(rhythm, Rhythm::Bursty).then(|| spawn_miner(&chain, Duration::from_millis(100)));
    let mut confirmed = 0;
    for i in 0..1_200 {
        let (_, page) = app
            .get("/v1/payouts?state=confirmed&limit=500", ADMIN)
            .await;
        confirmed = page["items"].as_array().map_or(0, Vec::len);
        if confirmed == n {
            break;
        }
        // Safe-mode stops payouts: no use waiting for the rest.
        if i % 20 == 0
            && app.get("/v1/networks", ADMIN).await.1[0]
                .get("safe_mode")
                .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Two more reconciliations after the last payout settled.
    let runs = |text: &str, outcome: &str| {
        metric_value(
            text,
            &format!(
                "treasuryd_wallet_reconcile_runs_total{{network=\"ethereum\",outcome=\"{outcome}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    let clean_before = runs(&app.metrics_text().await, "clean");
    for _ in 0..100 {
        if runs(&app.metrics_text().await, "clean") >= clean_before + 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for task in [miner, clock].into_iter().flatten() {
        task.abort();
    }
    let reorgs = reorgs.load(Ordering::SeqCst);
    eprintln!("reorg storm ({rhythm:?}) on {backend:?}: {n} payouts, {reorgs} reorgs");
    assert!(reorgs >= 15, "only {reorgs} reorgs were injected");

    let (_, audit) = app.get("/v1/audit?limit=500", ADMIN).await;
    let audit = audit["items"].as_array().cloned().unwrap_or_default();

    assert!(
        safe_mode_entries(&audit).is_empty(),
        "no automatic safe-mode: {:?}",
        safe_mode_entries(&audit)
    );
    let text = app.metrics_text().await;
    // Agreed at every run: not even a difference a re-read made go away.
    assert_eq!(runs(&text, "mismatch"), 0.0, "every reconciliation agreed");
    assert_eq!(
        runs(&text, "unconfirmed"),
        0.0,
        "every reconciliation agreed"
    );
    assert!(
        !text.contains("treasuryd_wallet_balance_rereads_total{"),
        "the watcher's balance check never needed a re-read"
    );
    assert!(
        runs(&text, "clean") >= clean_before + 2.0,
        "reconciliations ran after the stream: {}",
        runs(&text, "clean")
    );
    assert_eq!(confirmed, n, "every payout confirmed");
    assert_paid_exactly_once(&rpc, chain.usdt, &planned, hot, nonce_before).await;
    app.verify_clean().await;
    app.stop().await.unwrap();
}

async fn a_reorg_storm_on_bursty_blocks_stays_clean(backend: Backend) {
    reorg_storm(backend, Rhythm::Bursty, 300).await
}

async fn a_reorg_storm_on_timed_blocks_stays_clean(backend: Backend) {
    reorg_storm(backend, Rhythm::Timed, 300).await
}

/// A reorg deeper than the confirmation depth takes a paid transfer off the chain: no storm to
/// ride out. The network must enter safe-mode, and its audit row and webhook event must carry
/// what the engine saw: the block, the hash it was paid in and the one there now.
async fn a_reorg_deeper_than_the_confirmations_enters_safe_mode_with_evidence(backend: Backend) {
    let chain = DevChain::start(&[]).await.unwrap();
    let app = app_on(backend, &chain, "confirmations = 4").await;
    let rpc = EvmClient::new(&chain.url).unwrap();
    let account = funded_partner(&app, "deep", "USDT", "1000").await;
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    let to = crate::engine::destination(0xdee9);
    let id = crate::engine::request(&app, &account, to, "25", "deep-1").await;
    crate::engine::wait_state(&app, &id, "confirmed").await;
    miner.abort();
    let (_, p) = app.get(&format!("/v1/payouts/{id}"), ADMIN).await;
    let hash: alloy::primitives::B256 = p["chunks"][0]["attempts"][0]["hash"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let paid_in = rpc.inclusion(hash).await.unwrap().expect("mined");
    let head = rpc.head().await.unwrap();
    assert!(head + 1 >= paid_in.block_number + 4, "confirmed at depth 4");
    // Replace everything from the paid block on, without the transfer.
    let depth = head - paid_in.block_number + 1;
    chain.reorg(depth, &[]).await.unwrap();
    assert_ne!(
        rpc.block_hash(paid_in.block_number).await.unwrap(),
        Some(paid_in.block_hash)
    );

    let mut audit = Value::Null;
    for _ in 0..400 {
        let (_, page) = app.get("/v1/audit?limit=500", ADMIN).await;
        if let Some(entry) = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["action"] == "safe_mode.enter")
        {
            audit = entry.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(audit["actor"], "treasuryd", "safe-mode entered: {audit}");
    let evidence = &audit["evidence"];
    assert_eq!(evidence["cause"], "deep_reorg", "{audit}");
    assert_eq!(evidence["block"], paid_in.block_number, "{audit}");
    assert_eq!(evidence["payout"], id.as_str(), "{audit}");
    assert_eq!(evidence["tx"], format!("{hash}"), "{audit}");
    assert_eq!(
        evidence["paid_in_block_hash"],
        format!("{}", paid_in.block_hash),
        "{audit}"
    );
    assert_ne!(
        evidence["canonical_block_hash"], evidence["paid_in_block_hash"],
        "{audit}"
    );
    let (_, nets) = app.get("/v1/networks", ADMIN).await;
    assert!(
        nets[0]["safe_mode"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("automatic:")),
        "{nets}"
    );
    // The event raised by the audit row carries the same evidence.
    let event_id = uuid::Uuid::parse_str(audit["id"].as_str().unwrap()).unwrap();
    let mut body = Value::Null;
    for _ in 0..400 {
        let event = app.store.webhook_event(event_id).await.unwrap();
        if let Some(b) = event.body {
            body = serde_json::from_str(&b).unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(body["type"], "safe_mode.entered", "{body}");
    assert_eq!(&body["data"]["evidence"], evidence, "{body}");
    app.stop().await.unwrap();
}
