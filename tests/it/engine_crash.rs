//! Crash safety of the payout engine in the real binary: SIGKILL right after signing (before
//! broadcast), right after broadcast (before the receipt), and at confirmation (before the
//! ledger pays). After a restart every payout ends confirmed exactly once: the destination
//! holds exactly the amount, the wallet used exactly one nonce per chunk, and the ledger
//! verifies. Also SIGKILL between storing an Operator's cancel and sending it (the cancel goes
//! out after the restart and wins), and between crediting deposits and moving the watcher's
//! cursor (the range is read again and credits nothing twice).

use crate::crash::{binary, verify_cli};
use crate::harness::*;
use crate::on_both_backends;
use alloy::primitives::{Address, U256};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use treasuryd::chains::evm::EvmClient;
use treasuryd::dev::chain::{DevChain, TestToken};

on_both_backends!(
    killed_after_signing,
    killed_after_broadcast,
    killed_before_confirming,
    killed_between_storing_a_cancel_and_sending_it,
    killed_between_crediting_deposits_and_moving_the_cursor,
    a_batch_killed_after_signing,
    a_batch_killed_after_broadcast,
    a_batch_killed_before_confirming
);

/// Two daemons on one PostgreSQL: one runs the network's payouts under the engine lease, the
/// other stands by. The owner hangs right after broadcasting (and is then killed); within the
/// lease time the other takes over from the database and finishes the payout, paid exactly
/// once with one nonce per chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    treasuryd_skip_postgres,
    ignore = "built with TREASURYD_TEST_POSTGRES=skip"
)]
async fn a_standby_instance_takes_over_a_hung_owner() {
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
    } = rig(Backend::Postgres, "lease_seconds = 3", true).await;
    let nonce_before = rpc.nonce(hot.address(), false).await.unwrap();
    let miner = crate::engine::spawn_miner(&chain, Duration::from_millis(100));

    let (mut first, api_a, logs_a) = start(&config, &db.url, &key, Some("engine.after_broadcast"));
    let owner = |net: &Value| {
        net[0]["engine"]["owner"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let mut held = Value::Null;
    for _ in 0..100 {
        let (_, nets) = call(&client, &api_a, ADMIN_TOKEN, "/v1/networks", None, None).await;
        held = nets;
        if !owner(&held).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        owner(&held).contains(&format!("-{}-", first.id())),
        "the first daemon runs the network: {held}"
    );
    let (mut second, api_b, _logs_b) = start(&config, &db.url, &key, None);

    let account = funded_account(&client, &api_a).await;
    let to = Address::from_word(U256::from(0xFA11_0BE5u64).into());
    let (s, payout) = call(&client, &api_b, TRADER_TOKEN, "/v1/payouts", Some("takeover-1"), Some(json!({"account": account, "network": "ethereum", "asset": "USDT", "destination": to.to_checksum(None), "amount": "300000"}))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{payout}");
    let id = payout["id"].as_str().unwrap().to_owned();

    // The owner hangs after its first broadcast, still holding the lease until it expires.
    wait_for_point(&logs_a, "engine.after_broadcast");
    let state = confirmed_via(&client, &api_b, &id).await;
    first.kill().unwrap();
    first.wait().unwrap();
    miner.abort();
    assert_eq!(
        state["state"], "confirmed",
        "the standby finished it: {state}"
    );
    let (_, nets) = call(&client, &api_b, ADMIN_TOKEN, "/v1/networks", None, None).await;
    assert!(
        owner(&nets).contains(&format!("-{}-", second.id())),
        "{nets}"
    );
    assert_eq!(nets[0]["engine"]["fence"], 2, "{nets}");
    assert_eq!(
        rpc.token_balance(chain.usdt, to).await.unwrap(),
        U256::from(300_000_000_000u64),
        "paid exactly once"
    );
    assert_eq!(
        rpc.nonce(hot.address(), false).await.unwrap(),
        nonce_before + 2,
        "one nonce per chunk"
    );
    let (_, paid) = call(
        &client,
        &api_b,
        ADMIN_TOKEN,
        "/v1/journal?kind=PAYOUT",
        None,
        None,
    )
    .await;
    assert_eq!(paid["items"].as_array().unwrap().len(), 2);
    wait_opened(&config, &db.url).await;
    second.kill().unwrap();
    second.wait().unwrap();
    let (clean, report) = verify_cli(&config, &db.url);
    assert!(clean, "{report}");
    assert_wallet_reconciled(&config, &db.url);
}

/// Two daemons on one PostgreSQL with a stream of payouts: the owner of the engine lease is
/// SIGKILLed while payouts are in flight. The standby takes the network over within the lease
/// time and finishes every payout: each destination holds exactly its amount, the wallet used
/// one nonce per chunk, one PAYOUT per chunk, and the ledger verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    treasuryd_skip_postgres,
    ignore = "built with TREASURYD_TEST_POSTGRES=skip"
)]
async fn a_standby_takes_over_when_the_owner_is_killed_mid_stream() {
    const LEASE_SECONDS: u64 = 3;
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
        Backend::Postgres,
        &format!("lease_seconds = {LEASE_SECONDS}"),
        true,
    )
    .await;
    let nonce_before = rpc.nonce(hot.address(), false).await.unwrap();
    let miner = crate::engine::spawn_miner(&chain, Duration::from_millis(100));
    let (mut first, api_a, _logs_a) = start(&config, &db.url, &key, None);
    let owner = |net: &Value| {
        net[0]["engine"]["owner"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let mut owned = false;
    for _ in 0..1_200 {
        let (_, nets) = call(&client, &api_a, ADMIN_TOKEN, "/v1/networks", None, None).await;
        owned = owner(&nets).contains(&format!("-{}-", first.id()));
        if owned {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        owned,
        "the first daemon owns the network before the standby starts"
    );
    let (mut second, api_b, _logs_b) = start(&config, &db.url, &key, None);
    let account = funded_account(&client, &api_a).await;

    // 40 payouts, three of them split in two chunks by the 250,000 cap.
    let mut expected = Vec::new();
    let mut chunks = 0;
    for i in 0..40u64 {
        let to = Address::from_word(U256::from(0x57_0000 + i).into());
        let units: u64 = if i % 13 == 5 { 300_000 } else { 1_000 + i };
        chunks += if units > 250_000 { 2 } else { 1 };
        let api = if i % 2 == 0 { &api_a } else { &api_b };
        let (s, p) = call(&client, api, TRADER_TOKEN, "/v1/payouts", Some(&format!("stream-{i}")), Some(json!({"account": account, "network": "ethereum", "asset": "USDT", "destination": to.to_checksum(None), "amount": units.to_string()}))).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{p}");
        expected.push((to, units));
    }
    // Mid-stream: some paid, the rest queued or in flight.
    let count_confirmed = |page: &Value| {
        page["items"].as_array().map_or(0, |items| {
            items.iter().filter(|p| p["state"] == "confirmed").count()
        })
    };
    loop {
        let (_, page) = call(
            &client,
            &api_b,
            ADMIN_TOKEN,
            "/v1/payouts?limit=500",
            None,
            None,
        )
        .await;
        let done = count_confirmed(&page);
        assert!(done < 40, "the owner finished before it could be killed");
        if done >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap(); // SIGKILL
    let killed_at = std::time::Instant::now();
    first.wait().unwrap();
    // How fast is for benches/failover.rs; here only that it happens, within a ceiling far
    // above the lease so that a slow machine cannot fail it.
    let mut took_over = None;
    for _ in 0..2_400 {
        let (_, nets) = call(&client, &api_b, ADMIN_TOKEN, "/v1/networks", None, None).await;
        if owner(&nets).contains(&format!("-{}-", second.id())) {
            took_over = Some(killed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let took_over = took_over.expect("the standby takes the network over");
    eprintln!("takeover after SIGKILL: {took_over:?} (lease {LEASE_SECONDS} s)");
    let mut page = Value::Null;
    for _ in 0..600 {
        page = call(
            &client,
            &api_b,
            ADMIN_TOKEN,
            "/v1/payouts?limit=500",
            None,
            None,
        )
        .await
        .1;
        if count_confirmed(&page) == 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    miner.abort();
    assert_eq!(count_confirmed(&page), 40, "{page}");
    for (to, units) in &expected {
        assert_eq!(
            rpc.token_balance(chain.usdt, *to).await.unwrap(),
            U256::from(*units) * U256::from(1_000_000u64),
            "paid exactly once to {to}"
        );
    }
    assert_eq!(
        rpc.nonce(hot.address(), false).await.unwrap(),
        nonce_before + chunks,
        "one nonce per chunk"
    );
    let (_, paid) = call(
        &client,
        &api_b,
        ADMIN_TOKEN,
        "/v1/journal?kind=PAYOUT&limit=500",
        None,
        None,
    )
    .await;
    assert_eq!(paid["items"].as_array().unwrap().len() as u64, chunks);
    wait_opened(&config, &db.url).await;
    second.kill().unwrap();
    second.wait().unwrap();
    let (clean, report) = verify_cli(&config, &db.url);
    assert!(clean, "{report}");
    assert_wallet_reconciled(&config, &db.url);
}

/// What a crash test's daemons run against: a database, a config directory, and a dev chain
/// whose hot wallet holds 10,000,000 USDT when `funded`.
pub(crate) struct Rig {
    pub db: TestDb,
    pub _dir: tempfile::TempDir,
    pub chain: DevChain,
    pub hot: alloy::signers::local::PrivateKeySigner,
    /// The hot key, hex, for the daemon's environment.
    pub key: String,
    pub config: std::path::PathBuf,
    pub client: reqwest::Client,
    pub rpc: EvmClient,
}

pub(crate) async fn rig(backend: Backend, network_extra: &str, funded: bool) -> Rig {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let chain = DevChain::start(&[]).await.unwrap();
    let hot = chain.dev_key(1).unwrap();
    if funded {
        chain
            .mint(TestToken::Usdt, hot.address(), 10_000_000_000_000)
            .await
            .unwrap();
    }
    let key = format!("0x{}", hex::encode(hot.to_bytes()));
    let config = write_config(dir.path(), &chain, network_extra);
    let rpc = EvmClient::new(&chain.url).unwrap();
    Rig {
        db,
        _dir: dir,
        chain,
        hot,
        key,
        config,
        client: reqwest::Client::new(),
        rpc,
    }
}

pub(crate) const ADMIN_TOKEN: &str = "tdk_engine_crash_admin";
pub(crate) const TRADER_TOKEN: &str = "tdk_engine_crash_trader";
pub(crate) const KEY_VAR: &str = "TREASURYD_CRASH_HOT_KEY";

pub(crate) fn write_config(
    dir: &Path,
    chain: &DevChain,
    network_extra: &str,
) -> std::path::PathBuf {
    let hot = chain.dev_key(1).unwrap();
    let wallets = dir.join("wallets");
    std::fs::create_dir_all(&wallets).unwrap();
    std::fs::write(
        wallets.join("ethereum.toml"),
        format!(
            "[[wallets]]\nnetwork = \"ethereum\"\nrole = \"hot\"\naddress = \"{}\"\nkey_env = \"{KEY_VAR}\"\n",
            hot.address().to_checksum(None)
        ),
    )
    .unwrap();
    let digest = |t: &str| hex::encode(treasuryd::api::auth::token_digest(t));
    let path = dir.join("treasuryd.toml");
    // `network_extra` may set its own depth.
    let depth = if network_extra.contains("confirmations") {
        ""
    } else {
        "confirmations = 2\n"
    };
    std::fs::write(
        &path,
        format!(
            "data_dir = {dir:?}\nwallets_dir = {wallets:?}\n[server]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n\
             [log]\nformat = \"json\"\n\
             [[auth.tokens]]\nname = \"admin\"\nrole = \"admin\"\nsha256 = \"{}\"\n\
             [[auth.tokens]]\nname = \"trader\"\nrole = \"trader\"\nsha256 = \"{}\"\n\
             [[networks]]\nname = \"ethereum\"\nchain_id = {}\nrpc_urls = [\"{}\"]\n{depth}poll_interval_ms = 50\n{network_extra}\n\
             [[networks.tokens]]\ncode = \"USDT\"\naddress = \"{}\"\ndecimals = 6\n",
            digest(ADMIN_TOKEN),
            digest(TRADER_TOKEN),
            chain.chain_id,
            chain.url,
            chain.usdt.to_checksum(None),
            dir = dir.display().to_string(),
            wallets = wallets.display().to_string(),
        ),
    )
    .unwrap();
    path
}

/// Starts the daemon; returns it, its API address, and a receiver of its log messages.
pub(crate) fn start(
    config: &Path,
    db_url: &str,
    key: &str,
    pause_at: Option<&str>,
) -> (Child, String, std::sync::mpsc::Receiver<String>) {
    let mut cmd = Command::new(binary());
    cmd.args(["--config", config.to_str().unwrap(), "run"])
        .env("TREASURYD__DATABASE__URL", db_url)
        .env(KEY_VAR, key)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(point) = pause_at {
        cmd.env("TREASURYD__DEBUG__PAUSE_AT", point);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let message = v["message"].as_str().unwrap_or_default();
                let level = v["level"].as_str().unwrap_or_default();
                let _ = tx.send(if message == "treasuryd listening" {
                    format!("listening {}", v["api"].as_str().unwrap_or_default())
                } else if v["point"].is_null() && (level == "WARN" || level == "ERROR") {
                    // Whole, so that a failing test can show what went wrong.
                    format!("{level} {line}")
                } else {
                    format!("{message} {}", v["point"].as_str().unwrap_or_default())
                });
            } else {
                // Not a log record: an error printed on the way out, before logging started.
                let _ = tx.send(format!("STDERR {line}"));
            }
        }
    });
    let mut said = Vec::new();
    let api = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("the daemon starts ({e}): {said:#?}"));
        if let Some(api) = line.strip_prefix("listening ") {
            break api.to_owned();
        }
        said.push(line);
    };
    (child, api, rx)
}

pub(crate) async fn call(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = match &body {
        Some(b) => client.post(format!("http://{api}{path}")).json(b),
        None => client.get(format!("http://{api}{path}")),
    }
    .bearer_auth(token);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

/// A USDT partner account opened and funded with 1,000,000 through the daemon at `api`.
pub(crate) async fn funded_account(client: &reqwest::Client, api: &str) -> String {
    let (s, acct) = call(client, api, ADMIN_TOKEN, "/v1/accounts", None, Some(json!({"owner": "acme", "network": "ethereum", "asset": "USDT", "kind": "partner", "reason": "t"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{acct}");
    let account = acct["id"].as_str().unwrap().to_owned();
    let (s, _) = call(
        client,
        api,
        ADMIN_TOKEN,
        "/v1/deposits",
        Some("fund"),
        Some(json!({"account": account, "amount": "1000000", "reason": "t"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    account
}

/// The payout as the daemon at `api` tells it, once confirmed (or after 30 s, as it then is).
pub(crate) async fn confirmed_via(client: &reqwest::Client, api: &str, id: &str) -> Value {
    let mut state = Value::Null;
    for _ in 0..600 {
        let (_, p) = call(
            client,
            api,
            ADMIN_TOKEN,
            &format!("/v1/payouts/{id}"),
            None,
            None,
        )
        .await;
        state = p;
        if state["state"] == "confirmed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    state
}

async fn killed_at(backend: Backend, point: &str) {
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
    } = rig(backend, "", true).await;
    let nonce_before = rpc.nonce(hot.address(), false).await.unwrap();
    // Blocks keep coming, as on a live chain.
    let miner = crate::engine::spawn_miner(&chain, Duration::from_millis(100));

    let (mut child, api, logs) = start(&config, &db.url, &key, Some(point));
    let account = funded_account(&client, &api).await;
    let to = Address::from_word(U256::from(0xC0FFEEu64).into());
    let (s, payout) = call(
        &client,
        &api,
        TRADER_TOKEN,
        "/v1/payouts",
        Some("crash-1"),
        Some(json!({"account": account, "network": "ethereum", "asset": "USDT", "destination": to.to_checksum(None), "amount": "300000"})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{payout}");
    let id = payout["id"].as_str().unwrap().to_owned();

    // Kill it exactly at the point.
    kill_at_point(&mut child, &logs, point);

    let (mut child, api, _logs) = start(&config, &db.url, &key, None);
    let state = confirmed_via(&client, &api, &id).await;
    miner.abort();
    assert_eq!(state["state"], "confirmed", "after the restart: {state}");
    assert_eq!(
        rpc.token_balance(chain.usdt, to).await.unwrap(),
        U256::from(300_000_000_000u64),
        "paid exactly once"
    );
    assert_eq!(
        rpc.nonce(hot.address(), false).await.unwrap(),
        nonce_before + 2,
        "one nonce per chunk, none burnt or reused"
    );
    settled_cleanly(&client, &api, &config, &db.url, &mut child, 2).await;
}

/// After a restart: the ledger has `chunks` PAYOUTs (one per chunk); once the daemon has
/// posted its openings it is stopped, and the ledger verifies and the wallet reconciles.
async fn settled_cleanly(
    client: &reqwest::Client,
    api: &str,
    config: &Path,
    db_url: &str,
    child: &mut Child,
    chunks: usize,
) {
    let (_, paid) = call(
        client,
        api,
        ADMIN_TOKEN,
        "/v1/journal?kind=PAYOUT",
        None,
        None,
    )
    .await;
    assert_eq!(
        paid["items"].as_array().unwrap().len(),
        chunks,
        "one PAYOUT per chunk"
    );
    wait_opened(config, db_url).await;
    stop(child);
    let (clean, report) = verify_cli(config, db_url);
    assert!(clean, "{report}");
    assert_wallet_reconciled(config, db_url);
}

/// Waits (up to a minute per log line) for the daemon's log to say it reached `point`.
pub(crate) fn wait_for_point(logs: &std::sync::mpsc::Receiver<String>, point: &str) {
    loop {
        let line = logs
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("never reached {point}"));
        if line == format!("pause point reached {point}") {
            return;
        }
    }
}

/// Waits for the daemon to reach `point`, then SIGKILLs it.
pub(crate) fn kill_at_point(
    child: &mut Child,
    logs: &std::sync::mpsc::Receiver<String>,
    point: &str,
) {
    wait_for_point(logs, point);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// Waits until the running daemon has posted its hot wallet's opening balances (the
/// watcher's first pass as owner, which may come after the payout it settled).
pub(crate) async fn wait_opened(config: &Path, db_url: &str) {
    let mut lines = Vec::new();
    for _ in 0..600 {
        lines = crate::reconcile::reconcile_cli(config, db_url).1;
        if !lines.is_empty() && lines.iter().all(|l| l["verdict"] != "not_opened") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the daemon never posted the openings: {lines:?}");
}

/// The hot wallet's custody (token) and gas (native) accounts agree with the chain, as
/// `treasuryd reconcile` compares them.
pub(crate) fn assert_wallet_reconciled(config: &Path, db_url: &str) {
    let (code, lines) = crate::reconcile::reconcile_cli(config, db_url);
    assert_eq!(code, 0, "{lines:?}");
    for asset in ["USDT", "ETH"] {
        assert!(
            lines
                .iter()
                .any(|l| l["asset"] == asset && l["verdict"] == "ok"),
            "{asset} reconciled: {lines:?}"
        );
    }
}

/// The same three kills with USDT batched on chain: three payouts of 300,000 (six chunks)
/// requested at once go out as one disperse call after the contract's approval. After the
/// restart each destination holds exactly its amount, the wallet used one nonce for the
/// approval and one per transaction, the ledger has one PAYOUT per chunk, and the gas shares
/// and the approval's gas reconcile with the chain to the wei.
async fn a_batch_killed_at(backend: Backend, point: &str) {
    let Rig {
        db,
        _dir,
        chain,
        hot,
        key,
        client,
        rpc,
        ..
    } = rig(backend, "", true).await;
    let contract = chain.deploy_disperse().await.unwrap();
    let config = write_config(
        _dir.path(),
        &chain,
        &format!(
            "[networks.batching]\ncontract = \"{}\"\ntokens = [\"USDT\"]\n",
            contract.to_checksum(None)
        ),
    );
    let nonce_before = rpc.nonce(hot.address(), false).await.unwrap();
    let miner = crate::engine::spawn_miner(&chain, Duration::from_millis(100));
    let (mut child, api, logs) = start(&config, &db.url, &key, Some(point));
    let account = funded_account(&client, &api).await;
    let destinations: Vec<Address> = (0..3u64)
        .map(|i| Address::from_word(U256::from(0xBA7C_0000u64 + i).into()))
        .collect();
    let items: Vec<Value> = destinations
        .iter()
        .enumerate()
        .map(|(i, to)| json!({"idempotency_key": format!("crash-batch-{i}"), "account": account, "network": "ethereum", "asset": "USDT", "destination": to.to_checksum(None), "amount": "300000"}))
        .collect();
    let (s, answer) = call(
        &client,
        &api,
        TRADER_TOKEN,
        "/v1/payouts/batch",
        None,
        Some(json!({ "payouts": items })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    let ids: Vec<String> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["payout"]["id"].as_str().unwrap().to_owned())
        .collect();
    kill_at_point(&mut child, &logs, point);

    let (mut child, api, _logs) = start(&config, &db.url, &key, None);
    let mut transactions = std::collections::HashSet::new();
    for id in &ids {
        let state = confirmed_via(&client, &api, id).await;
        assert_eq!(state["state"], "confirmed", "after the restart: {state}");
        for chunk in state["chunks"].as_array().unwrap() {
            let attempts = chunk["attempts"].as_array().unwrap();
            transactions.insert(
                attempts.last().unwrap()["hash"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    miner.abort();
    for to in &destinations {
        assert_eq!(
            rpc.token_balance(chain.usdt, *to).await.unwrap(),
            U256::from(300_000_000_000u64),
            "paid exactly once"
        );
    }
    assert!(
        transactions.len() < 6,
        "the chunks went in batches: {transactions:?}"
    );
    assert_eq!(
        rpc.nonce(hot.address(), false).await.unwrap(),
        nonce_before + 1 + transactions.len() as u64,
        "the approval's nonce and one per transaction, none burnt or reused"
    );
    settled_cleanly(&client, &api, &config, &db.url, &mut child, 6).await;
}

async fn a_batch_killed_after_signing(backend: Backend) {
    a_batch_killed_at(backend, "engine.after_sign").await
}

async fn a_batch_killed_after_broadcast(backend: Backend) {
    a_batch_killed_at(backend, "engine.after_broadcast").await
}

async fn a_batch_killed_before_confirming(backend: Backend) {
    a_batch_killed_at(backend, "engine.before_confirm").await
}

async fn killed_after_signing(backend: Backend) {
    killed_at(backend, "engine.after_sign").await
}

async fn killed_after_broadcast(backend: Backend) {
    killed_at(backend, "engine.after_broadcast").await
}

async fn killed_before_confirming(backend: Backend) {
    killed_at(backend, "engine.before_confirm").await
}

/// A broadcast payout that is not mined (automine off) is cancelled; the daemon is killed right
/// after storing the signed cancel, before sending it. After the restart the stored cancel goes
/// out, outbids the transfer and is mined: the payout ends cancelled, nothing reached the
/// destination, the hold is back, one nonce was used.
async fn killed_between_storing_a_cancel_and_sending_it(backend: Backend) {
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
    } = rig(backend, "", true).await;
    let nonce_before = rpc.nonce(hot.address(), false).await.unwrap();
    let (mut child, api, logs) = start(&config, &db.url, &key, Some("engine.after_replacement"));
    let account = funded_account(&client, &api).await;
    chain.set_automine(false).await.unwrap();
    let to = Address::from_word(U256::from(0xCA9CE1u64).into());
    let (s, payout) = call(&client, &api, TRADER_TOKEN, "/v1/payouts", Some("cancel-crash"), Some(json!({"account": account, "network": "ethereum", "asset": "USDT", "destination": to.to_checksum(None), "amount": "100"}))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{payout}");
    let id = payout["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/payouts/{id}");
    for _ in 0..400 {
        let (_, p) = call(&client, &api, ADMIN_TOKEN, &path, None, None).await;
        if p["chunks"][0]["attempts"][0]["broadcast_at"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (s, body) = call(
        &client,
        &api,
        ADMIN_TOKEN,
        &format!("{path}/cancel"),
        None,
        Some(json!({"reason": "wrong beneficiary"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    kill_at_point(&mut child, &logs, "engine.after_replacement");

    // On PostgreSQL the dead daemon's engine lease runs out first (`lease_seconds`, 15 s).
    let (mut child, api, _logs) = start(&config, &db.url, &key, None);
    let mut p = Value::Null;
    for _ in 0..1200 {
        p = call(&client, &api, ADMIN_TOKEN, &path, None, None).await.1;
        if p["chunks"][0]["attempts"][1]["broadcast_at"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(p["chunks"][0]["attempts"][1]["kind"], "cancel", "{p}");
    assert!(
        p["chunks"][0]["attempts"][1]["broadcast_at"].is_string(),
        "sent after the restart: {p}"
    );
    let miner = crate::engine::spawn_miner(&chain, Duration::from_millis(100));
    let mut state = Value::Null;
    for _ in 0..600 {
        state = call(&client, &api, ADMIN_TOKEN, &path, None, None).await.1;
        if state["state"] == "cancelled" || state["state"] == "confirmed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    miner.abort();
    assert_eq!(state["state"], "cancelled", "{state}");
    assert_eq!(rpc.token_balance(chain.usdt, to).await.unwrap(), U256::ZERO);
    assert_eq!(
        rpc.nonce(hot.address(), false).await.unwrap(),
        nonce_before + 1
    );
    let (_, acct) = call(
        &client,
        &api,
        ADMIN_TOKEN,
        &format!("/v1/accounts/{account}"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (acct["available"].as_str(), acct["held"].as_str()),
        (Some("1000000.000000"), Some("0.000000")),
        "{acct}"
    );
    stop(&mut child);
    let (clean, report) = verify_cli(&config, &db.url);
    assert!(clean, "{report}");
}

/// The watcher credits a deposit (and records an inflow to the hot wallet from the same
/// range) and is killed before it moves its cursor. After the restart it reads the range
/// again: the account is credited once, and `reconcile` finds the hot wallet exact.
async fn killed_between_crediting_deposits_and_moving_the_cursor(backend: Backend) {
    let Rig {
        db,
        _dir,
        chain,
        hot,
        key,
        config,
        client,
        ..
    } = rig(backend, "", false).await;
    let (mut child, api, logs) = start(&config, &db.url, &key, Some("deposits.before_cursor"));
    let account = funded_account(&client, &api).await;
    let address = Address::from_word(U256::from(0xDE9051u64).into());
    let (s, body) = call(
        &client,
        &api,
        ADMIN_TOKEN,
        &format!("/v1/accounts/{account}/deposit-addresses"),
        None,
        Some(json!({"address": address.to_checksum(None), "reason": "collection"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // The watcher sets its cursor before the transfers.
    let store = treasuryd::store::open(&db.url, 1, treasuryd::clock::SystemClock::shared())
        .await
        .unwrap();
    let mut cursor = None;
    for _ in 0..600 {
        cursor = store.deposit_cursor("ethereum").await.unwrap();
        if cursor.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cursor.is_some(), "the watcher set its cursor");
    chain
        .mint(TestToken::Usdt, address, 4_250_000)
        .await
        .unwrap();
    chain
        .mint(TestToken::Usdt, hot.address(), 9_000_000)
        .await
        .unwrap();
    let miner = crate::engine::spawn_miner(&chain, Duration::from_millis(100));
    kill_at_point(&mut child, &logs, "deposits.before_cursor");

    let (mut child, api, _logs) = start(&config, &db.url, &key, None);
    let credited = || async {
        let (_, page) = call(
            &client,
            &api,
            ADMIN_TOKEN,
            &format!("/v1/journal?kind=DEPOSIT&account={account}"),
            None,
            None,
        )
        .await;
        page["items"].as_array().map_or(0, Vec::len)
    };
    let mut lines = Vec::new();
    for _ in 0..200 {
        let (code, found) = crate::reconcile::reconcile_cli(&config, &db.url);
        if code == 0 && credited().await == 2 && found.iter().all(|l| l["verdict"] == "ok") {
            lines = found;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // More reads of later blocks credit nothing again: wait until the watcher read past the
    // head as it is now.
    let now = treasuryd::chains::evm::EvmClient::new(&chain.url)
        .unwrap()
        .head()
        .await
        .unwrap();
    let mut read_to = 0;
    for _ in 0..600 {
        read_to = store.deposit_cursor("ethereum").await.unwrap().unwrap_or(0);
        if read_to > now {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(read_to > now, "the watcher read past block {now}");
    miner.abort();
    assert_eq!(
        credited().await,
        2,
        "the manual funding and the on-chain deposit, once"
    );
    let (_, acct) = call(
        &client,
        &api,
        ADMIN_TOKEN,
        &format!("/v1/accounts/{account}"),
        None,
        None,
    )
    .await;
    assert_eq!(acct["available"], "1000004.250000", "{acct}");
    let usdt = lines
        .iter()
        .find(|l| l["asset"] == "USDT")
        .expect("reconciled");
    assert_eq!(
        usdt["ledger"], "9.000000",
        "the hot wallet's inflow, once: {lines:?}"
    );
    assert_eq!(usdt["chain"], "9.000000");
    stop(&mut child);
    let (clean, report) = verify_cli(&config, &db.url);
    assert!(clean, "{report}");
}

/// SIGTERM, and wait for the daemon to exit.
pub(crate) fn stop(child: &mut Child) {
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    child.wait().unwrap();
}
