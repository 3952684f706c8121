//! The payout engine end to end against anvil: payouts are signed, stored, broadcast, mined,
//! confirmed and paid in the ledger; destination balances on chain are exact; a reverting
//! token fails the payout and returns its hold; a stuck transaction is replaced with the same
//! nonce and exactly one transfer lands. Both database backends.

use crate::harness::*;
use crate::on_both_backends;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use treasuryd::chains::evm::EvmClient;
use treasuryd::dev::chain::{DevChain, TestToken};

on_both_backends!(
    fifty_payouts_confirm_and_pay_exactly,
    fifty_payouts_confirm_and_pay_exactly_through_rpc_batches,
    a_reverting_transfer_fails_and_returns_the_hold
);

const HOT_KEY_VAR: &str = "TREASURYD_TEST_HOT_KEY";

/// A TestApp whose `ethereum` network is `chain`, with anvil dev account 1 as its hot wallet.
pub(crate) async fn app_on(backend: Backend, chain: &DevChain, extra: &str) -> TestApp {
    app_with_wallet(backend, chain, extra, "").await
}

/// Like `app_on`, with extra lines for the hot wallet's declaration.
pub(crate) async fn app_with_wallet(
    backend: Backend,
    chain: &DevChain,
    extra: &str,
    wallet_extra: &str,
) -> TestApp {
    app_with(
        backend,
        chain,
        std::slice::from_ref(&chain.url),
        extra,
        wallet_extra,
    )
    .await
}

/// Like `app_on`, with the network's `rpc_urls` given.
pub(crate) async fn app_with(
    backend: Backend,
    chain: &DevChain,
    rpc_urls: &[String],
    extra: &str,
    wallet_extra: &str,
) -> TestApp {
    let hot = chain.dev_key(1).unwrap();
    for token in [TestToken::Usdc, TestToken::Usdt] {
        chain
            .mint(token, hot.address(), 10_000_000_000_000)
            .await
            .unwrap();
    }
    let db = std::sync::Arc::new(TestDb::new(backend).await);
    app_on_db(db, chain, rpc_urls, extra, wallet_extra).await
}

/// The app of `app_with` on an existing database (a restart), minting nothing.
pub(crate) async fn app_on_db(
    db: std::sync::Arc<TestDb>,
    chain: &DevChain,
    rpc_urls: &[String],
    extra: &str,
    wallet_extra: &str,
) -> TestApp {
    let hot = chain.dev_key(1).unwrap();
    let urls = rpc_urls
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    // `extra` may set its own depth.
    let depth = if extra.contains("confirmations") {
        ""
    } else {
        "confirmations = 2\n"
    };
    let network = format!(
        "name = \"ethereum\"\nchain_id = {}\nrpc_urls = [{urls}]\n{depth}poll_interval_ms = 50\n{extra}\n\
         [[tokens]]\ncode = \"USDT\"\naddress = \"{}\"\ndecimals = 6\n[[tokens]]\ncode = \"USDC\"\naddress = \"{}\"\ndecimals = 6\n",
        chain.chain_id,
        chain.usdt.to_checksum(None),
        chain.usdc.to_checksum(None),
    );
    let key = format!("0x{}", hex::encode(hot.to_bytes()));
    let address = hot.address().to_checksum(None);
    let wallet_extra = wallet_extra.to_owned();
    TestApp::spawn_on(db, move |c, dir| {
        c.networks = vec![toml::from_str(&network).unwrap()];
        let wallets = dir.join("wallets");
        std::fs::create_dir_all(&wallets).unwrap();
        std::fs::write(
            wallets.join("ethereum.toml"),
            format!("[[wallets]]\nnetwork = \"ethereum\"\nrole = \"hot\"\naddress = \"{address}\"\nkey_env = \"{HOT_KEY_VAR}\"\n{wallet_extra}\n"),
        )
        .unwrap();
        c.wallets_dir = wallets;
        c.secrets.insert(HOT_KEY_VAR.into(), key.into());
    })
    .await
}

/// Waits until every payout is in a final state; returns them by id.
pub(crate) async fn settled(app: &TestApp, expected: usize) -> HashMap<String, Value> {
    for _ in 0..1200 {
        let (_, page) = app.get("/v1/payouts?limit=500", ADMIN).await;
        let items = page["items"].as_array().unwrap();
        let done = items
            .iter()
            .filter(|p| ["confirmed", "failed"].contains(&p["state"].as_str().unwrap()))
            .count();
        if done == expected && items.len() == expected {
            return items
                .iter()
                .map(|p| (p["id"].as_str().unwrap().to_owned(), p.clone()))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, page) = app.get("/v1/payouts?limit=500", ADMIN).await;
    let states: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}:{}", p["state"], p["chunks"]))
        .collect();
    panic!("payouts did not settle: {states:?}");
}

/// Mines a block every `every` while the test runs, as a live chain would.
pub(crate) fn spawn_miner(chain: &DevChain, every: Duration) -> tokio::task::JoinHandle<()> {
    let client = EvmClient::new(&chain.url).unwrap();
    tokio::spawn(async move {
        loop {
            let _ = client
                .provider()
                .raw_request::<_, ()>("evm_mine".into(), ())
                .await;
            tokio::time::sleep(every).await;
        }
    })
}

pub(crate) fn destination(i: u64) -> Address {
    Address::from_word(U256::from(0xD000_0000u64 + i).into())
}

async fn fifty_payouts_confirm_and_pay_exactly(backend: Backend) {
    fifty_payouts(backend, "").await
}

/// The same with broadcasts, receipts and block hashes sent as JSON-RPC batches.
async fn fifty_payouts_confirm_and_pay_exactly_through_rpc_batches(backend: Backend) {
    fifty_payouts(backend, "rpc_batch_calls = 100").await
}

async fn fifty_payouts(backend: Backend, network_extra: &str) {
    let chain = DevChain::start(&[]).await.unwrap();
    let app = app_on(backend, &chain, network_extra).await;
    let miner = spawn_miner(&chain, Duration::from_millis(200));
    let acme_usdt = funded_partner(&app, "acme", "USDT", "2000000").await;
    let acme_usdc = funded_partner(&app, "acme", "USDC", "100000").await;
    let beta_usdt = funded_partner(&app, "beta", "USDT", "100000").await;

    let hot = chain.dev_key(1).unwrap().address();
    let client = EvmClient::new(&chain.url).unwrap();
    let eth_before = client.native_balance(hot).await.unwrap();
    let mut expected: HashMap<(Address, TestToken), u128> = HashMap::new();
    let mut requests = Vec::new();
    for i in 0..49u64 {
        let (account, asset, token) = match i % 3 {
            0 => (&acme_usdt, "USDT", TestToken::Usdt),
            1 => (&acme_usdc, "USDC", TestToken::Usdc),
            _ => (&beta_usdt, "USDT", TestToken::Usdt),
        };
        let units = 1_000_000 + u128::from(i) * 12_345;
        requests.push((account.clone(), asset, destination(i % 7), units, token));
    }
    // And one above the cap: three transfers of 250,000 / 250,000 / 100,000.
    requests.push((
        acme_usdt.clone(),
        "USDT",
        destination(100),
        600_000_000_000,
        TestToken::Usdt,
    ));
    for (i, (account, asset, to, units, token)) in requests.iter().enumerate() {
        let amount = format!("{}.{:06}", units / 1_000_000, units % 1_000_000);
        let body = json!({"account": account, "network": "ethereum", "asset": asset, "destination": to.to_checksum(None), "amount": amount});
        let (s, answer) = app
            .post("/v1/payouts", TRADER, Some(&format!("p-{i}")), &body)
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{answer}");
        *expected.entry((*to, *token)).or_default() += units;
    }

    let payouts = settled(&app, 50).await;
    miner.abort();
    assert!(
        payouts.values().all(|p| p["state"] == "confirmed"),
        "{payouts:?}"
    );
    for ((to, token), units) in &expected {
        let balance = client
            .token_balance(chain.token(*token), *to)
            .await
            .unwrap();
        assert_eq!(balance, U256::from(*units), "{to} in {token:?}");
    }
    let big = payouts
        .values()
        .find(|p| p["amount"] == "600000.000000")
        .unwrap();
    assert_eq!(big["chunks"].as_array().unwrap().len(), 3);
    let (_, story) = app
        .get(
            &format!("/v1/payouts/{}", big["id"].as_str().unwrap()),
            ADMIN,
        )
        .await;
    let kinds: Vec<&str> = story["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "signed").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "chunk_confirmed").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"confirmed"));
    // Each chunk's receipt carries its Transfer event as signed, which is what settles it.
    for chunk in story["chunks"].as_array().unwrap() {
        let hash: alloy::primitives::B256 = chunk["attempts"][0]["hash"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let included = client.inclusion(hash).await.unwrap().unwrap();
        let units: u128 = chunk["amount"]
            .as_str()
            .unwrap()
            .replace('.', "")
            .parse()
            .unwrap();
        assert!(
            included.moved(chain.usdt, hot, destination(100), U256::from(units)),
            "{:?}",
            included.transfers
        );
    }
    let outbox =
        crate::webhook_delivery::outbox_types(&app.store, big["id"].as_str().unwrap()).await;
    assert_eq!(outbox.first().map(String::as_str), Some("payout.accepted"));
    assert_eq!(outbox.last().map(String::as_str), Some("payout.confirmed"));
    assert!(outbox.iter().any(|t| t == "payout.broadcast"), "{outbox:?}");
    assert_eq!(
        outbox.iter().filter(|t| *t == "payout.broadcast").count(),
        kinds.iter().filter(|k| **k == "signed").count(),
        "{outbox:?}"
    );

    // Every hold is fully paid out, the journal has one PAYOUT per chunk, and it verifies.
    for p in payouts.values() {
        let (_, hold) = app
            .get(
                &format!("/v1/holds/{}", p["hold_id"].as_str().unwrap()),
                ADMIN,
            )
            .await;
        assert_eq!(
            (hold["state"].as_str(), hold["remaining"].as_str()),
            (Some("resolved"), Some("0.000000")),
            "{hold}"
        );
    }
    let (_, paid) = app.get("/v1/journal?kind=PAYOUT&limit=500", ADMIN).await;
    assert_eq!(paid["items"].as_array().unwrap().len(), 52);
    // Gas: one FEE per transfer, and the wallet's gas account moved by exactly what the chain
    // took from the wallet.
    let (_, fees) = app.get("/v1/journal?kind=FEE&limit=500", ADMIN).await;
    assert_eq!(fees["items"].as_array().unwrap().len(), 52);
    let burned = eth_before - client.native_balance(hot).await.unwrap();
    assert_eq!(
        crate::policy::gas_spent(&app, &hot.to_checksum(None)).await,
        i128::try_from(burned).unwrap()
    );
    let acme = app.account(&acme_usdt).await;
    assert_eq!(acme["held"], "0.000000");
    let text = app.metrics_text().await;
    for histogram in ["first_broadcast", "pass_through"] {
        let series = format!("treasuryd_payouts_{histogram}_seconds_count{{network=\"ethereum\"}}");
        assert_eq!(metric_value(&text, &series), Some(50.0), "{series}");
    }
    app.verify_clean().await;
    app.stop().await.unwrap();
}

async fn a_reverting_transfer_fails_and_returns_the_hold(backend: Backend) {
    let chain = DevChain::start(&[]).await.unwrap();
    let app = app_on(backend, &chain, "").await;
    let acme = funded_partner(&app, "acme", "USDT", "1000").await;
    chain.pause_usdt(true).await.unwrap();
    let body = json!({"account": acme, "network": "ethereum", "asset": "USDT", "destination": destination(1).to_checksum(None), "amount": "250"});
    let (s, _) = app
        .post("/v1/payouts", TRADER, Some("will-revert"), &body)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    // Blocks keep coming so the revert reaches its confirmation depth.
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    let payouts = settled(&app, 1).await;
    miner.abort();
    let p = payouts.values().next().unwrap();
    assert_eq!(p["state"], "failed", "{p}");
    let acct = app.account(&acme).await;
    assert_eq!(
        (acct["available"].as_str(), acct["held"].as_str()),
        (Some("1000.000000"), Some("0.000000"))
    );
    let client = EvmClient::new(&chain.url).unwrap();
    assert_eq!(
        client
            .token_balance(chain.usdt, destination(1))
            .await
            .unwrap(),
        U256::ZERO
    );
    let (_, refunds) = app.get("/v1/journal?kind=REFUND", ADMIN).await;
    assert_eq!(refunds["items"].as_array().unwrap().len(), 1);
    app.verify_clean().await;
    app.stop().await.unwrap();
}

on_both_backends!(
    four_eyes_and_safe_mode_hold_payouts_back,
    a_stuck_transfer_is_replaced_and_lands_once,
    a_queue_that_moves_is_not_replaced,
    a_wallet_below_its_gas_buffer_waits_for_a_top_up
);

pub(crate) async fn wait_state(app: &TestApp, id: &str, state: &str) -> Value {
    for _ in 0..600 {
        let (_, p) = app.get(&format!("/v1/payouts/{id}"), ADMIN).await;
        if p["state"] == state {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, p) = app.get(&format!("/v1/payouts/{id}"), ADMIN).await;
    panic!("payout {id} never reached {state}: {p}");
}

pub(crate) async fn request(
    app: &TestApp,
    account: &str,
    to: Address,
    amount: &str,
    key: &str,
) -> String {
    let body = json!({"account": account, "network": "ethereum", "asset": "USDT", "destination": to.to_checksum(None), "amount": amount});
    let (s, answer) = app.post("/v1/payouts", TRADER, Some(key), &body).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{answer}");
    answer["id"].as_str().unwrap().to_owned()
}

async fn four_eyes_and_safe_mode_hold_payouts_back(backend: Backend) {
    let chain = DevChain::start(&[]).await.unwrap();
    let app = app_on(backend, &chain, "approval_threshold = \"100\"").await;
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    let acme = funded_partner(&app, "acme", "USDT", "1000").await;
    let client = EvmClient::new(&chain.url).unwrap();

    // Four eyes: nothing is sent before an approval, and never on the creator's own say-so.
    let big = request(&app, &acme, destination(1), "150", "big").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        client
            .token_balance(chain.usdt, destination(1))
            .await
            .unwrap(),
        U256::ZERO
    );
    let (s, body) = app
        .post(
            &format!("/v1/payouts/{big}/approve"),
            TRADER_AS_APPROVER,
            None,
            &json!({}),
        )
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{body}"
    );
    let (s, _) = app
        .post(
            &format!("/v1/payouts/{big}/approve"),
            TRADER,
            None,
            &json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body) = app
        .post(
            &format!("/v1/payouts/{big}/approve"),
            APPROVER,
            None,
            &json!({"reason": "checked"}),
        )
        .await;
    assert_eq!(
        (s, body["state"].as_str()),
        (StatusCode::OK, Some("queued")),
        "{body}"
    );
    let (s, body) = app
        .post(
            &format!("/v1/payouts/{big}/approve"),
            APPROVER,
            None,
            &json!({}),
        )
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("invalid_state"))
    );
    wait_state(&app, &big, "confirmed").await;
    assert_eq!(
        client
            .token_balance(chain.usdt, destination(1))
            .await
            .unwrap(),
        U256::from(150_000_000u64)
    );

    // A rejected payout never moves and its hold goes back.
    let other = request(&app, &acme, destination(2), "200", "other").await;
    let (s, body) = app
        .post(
            &format!("/v1/payouts/{other}/reject"),
            APPROVER,
            Some("rej-1"),
            &json!({}),
        )
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("reason_required"))
    );
    let (s, body) = app
        .post(
            &format!("/v1/payouts/{other}/reject"),
            APPROVER,
            Some("rej-1"),
            &json!({"reason": "unknown beneficiary"}),
        )
        .await;
    assert_eq!(
        (s, body["state"].as_str()),
        (StatusCode::OK, Some("rejected")),
        "{body}"
    );
    let (s, body) = app
        .post(
            &format!("/v1/payouts/{other}/approve"),
            APPROVER,
            None,
            &json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert_eq!(app.account(&acme).await["available"], "850.000000");

    // Safe-mode: accepted and queued, nothing broadcast; leaving it sends the queue.
    let (s, net) = app
        .post(
            "/v1/networks/ethereum/safe-mode",
            ADMIN,
            None,
            &json!({"enabled": true, "reason": "incident 42"}),
        )
        .await;
    assert_eq!(
        (s, net["safe_mode"]["reason"].as_str()),
        (StatusCode::OK, Some("incident 42")),
        "{net}"
    );
    let (s, _) = app
        .post(
            "/v1/networks/ethereum/safe-mode",
            TRADER,
            None,
            &json!({"enabled": false, "reason": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let queued = request(&app, &acme, destination(3), "50", "during-safe-mode").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, p) = app.get(&format!("/v1/payouts/{queued}"), ADMIN).await;
    assert_eq!(p["state"], "queued", "{p}");
    assert_eq!(
        client
            .token_balance(chain.usdt, destination(3))
            .await
            .unwrap(),
        U256::ZERO
    );
    let text = app.metrics_text().await;
    assert_eq!(
        metric_value(&text, "treasuryd_payouts_safe_mode{network=\"ethereum\"}"),
        Some(1.0)
    );
    let (s, net) = app
        .post(
            "/v1/networks/ethereum/safe-mode",
            ADMIN,
            None,
            &json!({"enabled": false, "reason": "resolved"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(net.get("safe_mode").is_none(), "{net}");
    wait_state(&app, &queued, "confirmed").await;
    assert_eq!(
        client
            .token_balance(chain.usdt, destination(3))
            .await
            .unwrap(),
        U256::from(50_000_000u64)
    );
    miner.abort();

    let (_, audit) = app.get("/v1/audit?limit=500", ADMIN).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    for action in [
        "payout.approve",
        "payout.reject",
        "safe_mode.enter",
        "safe_mode.leave",
    ] {
        assert!(
            actions.contains(&action),
            "{action} not audited: {actions:?}"
        );
    }
    let text = app.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_payouts_finished_total{network=\"ethereum\",state=\"rejected\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_payouts_finished_total{network=\"ethereum\",state=\"confirmed\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_payouts_pass_through_seconds_count{network=\"ethereum\"}"
        ),
        Some(2.0)
    );
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// Transfers that wait behind their wallet's earlier nonces while those are mined are queued,
/// not stuck: blocks here hold one transfer each, so the last of eight waits seven blocks with
/// "stuck after 2 blocks", and none of them may be replaced (a higher fee could not pass its
/// predecessors; a replacement only costs a signature, a write and a broadcast). The daemon is
/// also stopped while three are mined and restarted: the queue it finds moved while it was
/// down, and it must not take the transfers' ages since broadcast for a stall.
async fn a_queue_that_moves_is_not_replaced(backend: Backend) {
    const CONFIG: &str = "stuck_after_blocks = 2\nstuck_after_seconds = 600";
    let chain = DevChain::start(&[]).await.unwrap();
    let app = app_on(backend, &chain, CONFIG).await;
    let acme = funded_partner(&app, "acme", "USDT", "1000").await;
    chain.set_automine(false).await.unwrap();
    let client = EvmClient::new(&chain.url).unwrap();
    let hot = chain.dev_key(1).unwrap().address();
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(request(&app, &acme, destination(40 + i), "3", &format!("queue-{i}")).await);
    }
    for id in &ids {
        wait_state(&app, id, "broadcast").await;
    }
    // A block has room for one transfer (gas limit 100,000; each uses over 21,000).
    client
        .provider()
        .raw_request::<_, bool>("evm_setBlockGasLimit".into(), (U256::from(120_000u64),))
        .await
        .unwrap();
    let first = client.nonce(hot, false).await.unwrap();
    let mine_one_by_one = |from: u64, to: u64| {
        let (chain, client) = (&chain, &client);
        async move {
            for mined in from..=to {
                chain.mine(1).await.unwrap();
                assert_eq!(client.nonce(hot, false).await.unwrap(), first + mined);
                // Long enough for the engine to see each step of the queue.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    mine_one_by_one(1, 3).await;
    let db = app.db();
    app.stop().await.unwrap();
    mine_one_by_one(4, 6).await;
    let app = app_on_db(db, &chain, std::slice::from_ref(&chain.url), CONFIG, "").await;
    // Let the restarted engine look at its queue (every transfer left has waited 3+ blocks
    // since its broadcast) before anything else is mined.
    let ticks = "treasuryd_payouts_engine_tick_seconds_count{network=\"ethereum\"}";
    for _ in 0..200 {
        if metric_value(&app.metrics_text().await, ticks).unwrap_or(0.0) >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mine_one_by_one(7, 8).await;
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    for (i, id) in ids.iter().enumerate() {
        let p = wait_state(&app, id, "confirmed").await;
        let attempts = p["chunks"][0]["attempts"].as_array().unwrap().len();
        assert_eq!(attempts, 1, "payout {i} was re-signed: {p}");
        assert_eq!(
            client
                .token_balance(chain.usdt, destination(40 + i as u64))
                .await
                .unwrap(),
            U256::from(3_000_000u64)
        );
    }
    miner.abort();
    let text = app.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_payouts_speedups_total{network=\"ethereum\"}"
        )
        .unwrap_or(0.0),
        0.0
    );
    app.verify_clean().await;
    app.stop().await.unwrap();
}

async fn a_stuck_transfer_is_replaced_and_lands_once(backend: Backend) {
    let chain = DevChain::start(&[]).await.unwrap();
    // Replace after a second; a low fee cap.
    let app = app_on(
        backend,
        &chain,
        "stuck_after_seconds = 1\nstuck_after_blocks = 1000\nmax_fee_per_gas = 5000000000",
    )
    .await;
    let acme = funded_partner(&app, "acme", "USDT", "1000").await;
    // From here nothing is mined until the test says so.
    chain.set_automine(false).await.unwrap();
    let client = EvmClient::new(&chain.url).unwrap();
    let hot = chain.dev_key(1).unwrap().address();
    let nonce_before = client.nonce(hot, false).await.unwrap();

    let id = request(&app, &acme, destination(9), "12.5", "stuck").await;
    // Wait until a replacement was signed, then until the cap stops further bumps.
    let mut attempts = 0;
    for _ in 0..200 {
        let (_, p) = app.get(&format!("/v1/payouts/{id}"), ADMIN).await;
        attempts = p["chunks"][0]["attempts"].as_array().map_or(0, Vec::len);
        let rebroadcasts = metric_value(
            &app.metrics_text().await,
            "treasuryd_payouts_fee_cap_rebroadcasts_total{network=\"ethereum\"}",
        );
        if attempts >= 2 && rebroadcasts.unwrap_or(0.0) >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(attempts >= 2, "no replacement was sent");
    // Unmined and at the fee cap, it is stuck again a second after each rebroadcast: the gauge
    // shows it on the tick after that (read until then, however loaded the machine).
    let mut text = String::new();
    for _ in 0..100 {
        text = app.metrics_text().await;
        if metric_value(&text, "treasuryd_payouts_stuck{network=\"ethereum\"}") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric_value(&text, "treasuryd_payouts_stuck{network=\"ethereum\"}"),
        Some(1.0)
    );
    assert!(
        metric_value(
            &text,
            "treasuryd_payouts_oldest_stuck_seconds{network=\"ethereum\"}"
        )
        .unwrap()
            >= 1.0
    );
    let (_, p) = app.get(&format!("/v1/payouts/{id}"), ADMIN).await;
    let fees: Vec<u128> = p["chunks"][0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["max_fee_per_gas"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        fees.windows(2)
            .all(|w| w[1] * 10_000 >= w[0] * 11_250 || w[1] == 5_000_000_000),
        "each bump ≥ 12.5% or at the cap: {fees:?}"
    );
    assert!(
        fees.iter().all(|f| *f <= 5_000_000_000),
        "never above the cap: {fees:?}"
    );
    let nonces: Vec<u64> = p["chunks"][0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["nonce"].as_u64().unwrap())
        .collect();
    assert!(
        nonces.iter().all(|n| *n == nonce_before),
        "every attempt reuses the nonce: {nonces:?}"
    );
    let text = app.metrics_text().await;
    assert!(
        metric_value(
            &text,
            "treasuryd_payouts_speedups_total{network=\"ethereum\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        metric_value(
            &text,
            "treasuryd_payouts_fee_cap_rebroadcasts_total{network=\"ethereum\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "at the cap it keeps re-broadcasting"
    );

    chain.set_automine(true).await.unwrap();
    chain.mine(2).await.unwrap();
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    let done = wait_state(&app, &id, "confirmed").await;
    miner.abort();
    assert_eq!(
        client
            .token_balance(chain.usdt, destination(9))
            .await
            .unwrap(),
        U256::from(12_500_000u64),
        "exactly one transfer landed"
    );
    assert_eq!(
        client.nonce(hot, false).await.unwrap(),
        nonce_before + 1,
        "one nonce used"
    );
    let kinds: Vec<&str> = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"replaced"), "{kinds:?}");
    app.verify_clean().await;
    app.stop().await.unwrap();
}

async fn a_wallet_below_its_gas_buffer_waits_for_a_top_up(backend: Backend) {
    const ETH: u128 = 1_000_000_000_000_000_000;
    let chain = DevChain::start(&[]).await.unwrap();
    let app = app_with_wallet(backend, &chain, "", "min_gas_wei = 1000000000000000000").await;
    let acme = funded_partner(&app, "acme", "USDT", "100").await;
    let hot = chain.dev_key(1).unwrap().address();
    chain
        .set_native_balance(hot, U256::from(ETH / 2))
        .await
        .unwrap();
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    let client = EvmClient::new(&chain.url).unwrap();
    let wallet = format!("network=\"ethereum\",wallet=\"{}\"", hot.to_checksum(None));

    let id = request(&app, &acme, destination(5), "10", "gas").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, p) = app.get(&format!("/v1/payouts/{id}"), ADMIN).await;
    assert_eq!(p["state"], "queued", "{p}");
    assert_eq!(
        client
            .token_balance(chain.usdt, destination(5))
            .await
            .unwrap(),
        U256::ZERO
    );
    let text = app.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            &format!("treasuryd_wallet_below_gas_buffer{{{wallet}}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &text,
            &format!("treasuryd_wallet_runway_payouts{{{wallet}}}")
        ),
        Some(0.0)
    );

    chain
        .set_native_balance(hot, U256::from(100 * ETH))
        .await
        .unwrap();
    wait_state(&app, &id, "confirmed").await;
    miner.abort();
    assert_eq!(
        client
            .token_balance(chain.usdt, destination(5))
            .await
            .unwrap(),
        U256::from(10_000_000u64)
    );
    let text = app.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            &format!("treasuryd_wallet_below_gas_buffer{{{wallet}}}")
        ),
        Some(0.0)
    );
    assert!(
        metric_value(
            &text,
            &format!("treasuryd_wallet_runway_payouts{{{wallet}}}")
        )
        .unwrap()
            > 100.0
    );
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// With `use_finalized_tag` a mined transfer is paid only once the chain's `finalized` block
/// reaches it, however deep it already is. (Storage plays no part: SQLite only.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finality_by_tag_waits_for_the_finalized_block() {
    let chain = DevChain::start(&[]).await.unwrap();
    let app = app_on(Backend::Sqlite, &chain, "use_finalized_tag = true").await;
    let acme = funded_partner(&app, "acme", "USDT", "100").await;
    let client = EvmClient::new(&chain.url).unwrap();
    let id = request(&app, &acme, destination(6), "10", "finalized").await;
    let mut mined_at = None;
    for _ in 0..200 {
        let (_, p) = app.get(&format!("/v1/payouts/{id}"), ADMIN).await;
        if p["chunks"][0]["state"] == "mined" {
            mined_at = Some(client.head().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mined_at = mined_at.expect("the transfer was mined");
    // Deeper than any depth setting would ask, yet not finalized.
    chain.mine(20).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let finalized = client.finalized_head().await.unwrap().unwrap_or(0);
    assert!(
        finalized < mined_at,
        "anvil finalizes {finalized} at head {mined_at}+20"
    );
    let (_, p) = app.get(&format!("/v1/payouts/{id}"), ADMIN).await;
    assert_eq!(p["state"], "broadcast", "{p}");
    chain.mine(100).await.unwrap();
    wait_state(&app, &id, "confirmed").await;
    assert!(client.finalized_head().await.unwrap().unwrap() >= mined_at);
    app.verify_clean().await;
    app.stop().await.unwrap();
}
