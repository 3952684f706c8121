//! TRC-20 payouts and deposits through the whole daemon against the local Tron node stand-in
//! (which checks signer, TAPOS, expiration, duplicates, bandwidth and energy as a node does):
//! a split payout over the 200,000 cap pays every destination exactly; a dropped transaction
//! is rebuilt only once it can no longer land and pays once; OUT_OF_ENERGY is retried with a
//! raised fee limit; a revert fails the payout and returns the hold; buffers and safe-mode hold
//! payouts back; deposits are credited once however often blocks are read; and the ledger's
//! accounts of the hot wallet equal what the node says it holds (tokens and TRX).

use crate::harness::*;
use crate::on_both_backends;
use alloy::primitives::U256;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use treasuryd::chains::tron::TronAddress;
use treasuryd::chains::tron::client::TronClient;
use treasuryd::chains::tron::tx::{Envelope, RefBlock, sign, transfer_call_data, trigger_raw};
use treasuryd::dev::tron::{DevTron, Fault};

on_both_backends!(
    a_split_payout_pays_every_destination_exactly,
    a_dropped_transaction_is_rebuilt_once_it_has_expired_and_pays_once,
    deposits_are_credited_once_however_often_blocks_are_read
);

const HOT_KEY_VAR: &str = "TREASURYD_TEST_TRON_HOT_KEY";
/// 5,000 TRX and 10,000,000 USDT in the hot wallet at the start.
pub(crate) const HOT_TRX_SUN: i64 = 5_000_000_000;
pub(crate) const HOT_USDT_UNITS: u128 = 10_000_000_000_000;

/// Anvil's well-known development keys double as Tron test keys.
pub(crate) fn dev_key(n: usize) -> alloy::signers::local::PrivateKeySigner {
    [
        "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
        "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    ][n]
        .parse()
        .unwrap()
}

/// A destination that holds nothing yet.
pub(crate) fn destination(n: u8) -> TronAddress {
    let mut bytes = [0xD5u8; 20];
    bytes[19] = n;
    TronAddress::from_evm(bytes)
}

pub(crate) struct Rig {
    pub node: DevTron,
    pub hot: TronAddress,
    pub key: String,
}

/// A node producing a block every 100 ms (3 s of chain time), solidifying 3 behind, with the
/// hot wallet (dev key 1) funded.
pub(crate) async fn rig() -> Rig {
    let node = DevTron::start(Duration::from_millis(100), 3).await.unwrap();
    let signer = dev_key(1);
    let hot = TronAddress::from_signer(&signer);
    node.fund_trx(&hot, HOT_TRX_SUN);
    node.mint(&hot, HOT_USDT_UNITS);
    Rig {
        node,
        hot,
        key: format!("0x{}", hex::encode(signer.to_bytes())),
    }
}

/// The `[[networks]]` entry of the stand-in, with `extra` keys.
pub(crate) fn network_toml(node: &DevTron, extra: &str) -> String {
    network_toml_with(node, &format!("\"{}\"", node.url), extra)
}

/// Like `network_toml`, with the `rpc_urls` list given.
pub(crate) fn network_toml_with(node: &DevTron, urls: &str, extra: &str) -> String {
    format!(
        "name = \"tron\"\nkind = \"tron\"\nrpc_urls = [{urls}]\npoll_interval_ms = 50\n{extra}\n\
         [[tokens]]\ncode = \"USDT\"\naddress = \"{}\"\ndecimals = 6\n",
        node.token.to_base58()
    )
}

pub(crate) fn wallet_toml(hot: &TronAddress, key_var: &str, extra: &str) -> String {
    format!(
        "[[wallets]]\nnetwork = \"tron\"\nrole = \"hot\"\naddress = \"{}\"\nkey_env = \"{key_var}\"\n{extra}\n",
        hot.to_base58()
    )
}

async fn app_on_db(db: Arc<TestDb>, r: &Rig, extra: &str, wallet_extra: &str) -> TestApp {
    // A dead endpoint first: the engine fails over to the node and stays there.
    let urls = format!("\"http://127.0.0.1:9/\", \"{}\"", r.node.url);
    let network = network_toml_with(&r.node, &urls, extra);
    let wallet = wallet_toml(&r.hot, HOT_KEY_VAR, wallet_extra);
    let key = r.key.clone();
    TestApp::spawn_on(db, move |c, dir| {
        c.networks.push(toml::from_str(&network).unwrap());
        let wallets = dir.join("wallets");
        std::fs::create_dir_all(&wallets).unwrap();
        std::fs::write(wallets.join("tron.toml"), wallet).unwrap();
        c.wallets_dir = wallets;
        c.secrets.insert(HOT_KEY_VAR.into(), key.into());
    })
    .await
}

async fn app(backend: Backend, r: &Rig, extra: &str, wallet_extra: &str) -> TestApp {
    app_on_db(Arc::new(TestDb::new(backend).await), r, extra, wallet_extra).await
}

/// A Tron USDT partner account holding `amount`.
async fn partner(app: &TestApp, owner: &str, amount: &str) -> String {
    let (s, body) = app
        .post(
            "/v1/accounts",
            ADMIN,
            None,
            &json!({"owner": owner, "network": "tron", "asset": "USDT", "kind": "partner", "reason": "test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    if amount != "0" {
        let (s, body) = app
            .post(
                "/v1/deposits",
                ADMIN,
                Some(&format!("fund-{owner}")),
                &json!({"account": id, "amount": amount, "reason": "test"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    id
}

async fn pay(app: &TestApp, account: &str, to: &TronAddress, amount: &str, key: &str) -> String {
    let (s, body) = app
        .post(
            "/v1/payouts",
            TRADER,
            Some(key),
            &json!({"account": account, "network": "tron", "asset": "USDT", "destination": to.to_base58(), "amount": amount}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Waits until payout `id` is in `state` (or 30 s, then fails with what it is).
async fn until(app: &TestApp, id: &str, state: &str) -> Value {
    let mut p = Value::Null;
    for _ in 0..600 {
        p = app.get(&format!("/v1/payouts/{id}"), ADMIN).await.1;
        if p["state"] == state {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("payout {id} is not {state}: {p}");
}

/// The hot wallet's ledger accounts: (TRX gas account, USDT custody account) balances in base
/// units, as decimal strings' units.
async fn wallet_accounts(app: &TestApp, hot: &TronAddress) -> (i128, i128) {
    let (_, page) = app
        .get(
            &format!("/v1/accounts?owner=wallet:{}&limit=10", hot.to_base58()),
            ADMIN,
        )
        .await;
    let units = |code: &str| {
        let a = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["asset"] == code)
            .unwrap_or_else(|| panic!("no {code} account of the wallet: {page}"));
        let text = a["total"].as_str().unwrap();
        rust_decimal::Decimal::from_str_exact(text).unwrap()
            * rust_decimal::Decimal::from(1_000_000)
    };
    use rust_decimal::prelude::ToPrimitive;
    (
        units("TRX").to_i128().unwrap(),
        units("USDT").to_i128().unwrap(),
    )
}

/// Invariant 5 on Tron: the gas account holds exactly the TRX the node says the wallet has,
/// and the custody account minus what the wallet holds of USDT (its outside-world side).
async fn assert_wallet_matches_chain(app: &TestApp, r: &Rig) {
    // Settlement is posted after the block is read; give the last one a moment.
    let mut seen = (0, 0);
    for _ in 0..100 {
        seen = wallet_accounts(app, &r.hot).await;
        let chain = (
            i128::from(r.node.trx_balance(&r.hot)),
            -i128::try_from(r.node.token_balance(&r.hot)).unwrap(),
        );
        if seen == chain {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "ledger {seen:?} vs chain TRX {} USDT {}",
        r.node.trx_balance(&r.hot),
        r.node.token_balance(&r.hot)
    );
}

fn usdt(units: u64) -> U256 {
    U256::from(units) * U256::from(1_000_000u64)
}

async fn a_split_payout_pays_every_destination_exactly(backend: Backend) {
    let r = rig().await;
    let app = app(backend, &r, "", "").await;
    let account = partner(&app, "acme", "1000000").await;

    // Addresses are checked in the network's own form: an EIP-55 address, a broken checksum
    // and the zero address are refused naming the field, and nothing is held.
    let good = destination(1).to_base58();
    let mut broken = good.clone().into_bytes();
    broken[10] = if broken[10] == b'a' { b'b' } else { b'a' };
    for bad in [
        DESTINATION.to_owned(),
        String::from_utf8(broken).unwrap(),
        TronAddress::from_evm([0; 20]).to_base58(),
        "T".into(),
    ] {
        let (s, body) = app
            .post(
                "/v1/payouts",
                TRADER,
                Some(&format!("bad-{bad}")),
                &json!({"account": account, "network": "tron", "asset": "USDT", "destination": bad, "amount": "1"}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_address", "{body}");
        assert_eq!(body["error"]["field"], "destination", "{body}");
    }
    assert_eq!(app.account(&account).await["available"], "1000000.000000");

    let big = pay(&app, &account, &destination(1), "450000", "split-1").await;
    let small = pay(&app, &account, &destination(2), "1.5", "small-1").await;
    let tiny = pay(&app, &account, &destination(3), "0.000001", "tiny-1").await;
    let p = until(&app, &big, "confirmed").await;
    until(&app, &small, "confirmed").await;
    until(&app, &tiny, "confirmed").await;

    let chunks: Vec<&str> = p["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["amount"].as_str().unwrap())
        .collect();
    assert_eq!(chunks, ["200000.000000", "200000.000000", "50000.000000"]);
    for c in p["chunks"].as_array().unwrap() {
        assert_eq!(c["state"], "confirmed", "{p}");
        let attempts = c["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "one transaction per chunk: {c}");
        assert_eq!(attempts[0]["hash"].as_str().unwrap().len(), 64);
        assert!(attempts[0]["fee_limit_sun"].is_string(), "{c}");
        assert!(attempts[0].get("max_fee_per_gas").is_none(), "{c}");
    }
    assert_eq!(r.node.token_balance(&destination(1)), usdt(450_000));
    assert_eq!(
        r.node.token_balance(&destination(2)),
        U256::from(1_500_000u64)
    );
    assert_eq!(r.node.token_balance(&destination(3)), U256::from(1u64));
    assert_eq!(
        r.node.token_balance(&r.hot),
        U256::from(HOT_USDT_UNITS) - usdt(450_000) - U256::from(1_500_001u64)
    );
    // Every hold resolved: the account keeps exactly what was not paid.
    let left = app.account(&account).await;
    assert_eq!(left["available"], "549998.499999", "{left}");
    assert_eq!(left["held"], "0.000000", "{left}");
    let (_, paid) = app.get("/v1/journal?kind=PAYOUT&limit=50", ADMIN).await;
    assert_eq!(
        paid["items"].as_array().unwrap().len(),
        5,
        "one PAYOUT per chunk"
    );
    // The TRX the transfers burned is posted as FEE, so the gas account equals the chain.
    assert!(r.node.trx_balance(&r.hot) < HOT_TRX_SUN);
    assert_wallet_matches_chain(&app, &r).await;
    app.verify_clean().await;

    let text = app.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_payouts_finished_total{network=\"tron\",state=\"confirmed\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_payouts_pass_through_seconds_count{network=\"tron\"}"
        ),
        Some(3.0)
    );
    let hot = r.hot.to_base58();
    for series in [
        "treasuryd_wallet_trx_balance",
        "treasuryd_wallet_energy_available",
        "treasuryd_wallet_bandwidth_available",
        "treasuryd_wallet_runway_payouts",
    ] {
        let value = metric_value(
            &text,
            &format!("{series}{{network=\"tron\",wallet=\"{hot}\"}}"),
        );
        assert!(value.is_some(), "{series} is exported");
    }
    assert_eq!(
        metric_value(
            &text,
            &format!("treasuryd_wallet_below_gas_buffer{{network=\"tron\",wallet=\"{hot}\"}}")
        ),
        Some(0.0)
    );
    // It went through the second endpoint, the first counted down.
    for (series, value) in [
        ("treasuryd_rpc_up{endpoint=\"0\",network=\"tron\"}", 0.0),
        ("treasuryd_rpc_up{endpoint=\"1\",network=\"tron\"}", 1.0),
        (
            "treasuryd_rpc_selected{endpoint=\"1\",network=\"tron\"}",
            1.0,
        ),
        ("treasuryd_rpc_failovers_total{network=\"tron\"}", 1.0),
    ] {
        assert_eq!(metric_value(&text, series), Some(value), "{series}");
    }
    let (_, nets) = app.get("/v1/networks", ADMIN).await;
    let tron = nets
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "tron")
        .unwrap();
    assert_eq!(
        (&tron["kind"], &tron["native_asset"]),
        (&json!("tron"), &json!("TRX"))
    );
    app.stop().await.unwrap();
}

async fn a_dropped_transaction_is_rebuilt_once_it_has_expired_and_pays_once(backend: Backend) {
    let r = rig().await;
    // The node answers the first broadcast with success and loses it.
    r.node.fail_next(Fault::Drop);
    let app = app(backend, &r, "", "").await;
    let account = partner(&app, "acme", "1000").await;
    let id = pay(&app, &account, &destination(7), "10", "dropped-1").await;
    let p = until(&app, &id, "confirmed").await;
    let attempts = p["chunks"][0]["attempts"].as_array().unwrap().clone();
    assert_eq!(attempts.len(), 2, "rebuilt exactly once: {p}");
    assert!(event_kinds(&p).contains(&"rebuilt".to_owned()), "{p}");
    assert_eq!(r.node.token_balance(&destination(7)), usdt(10), "paid once");
    // The rebuild waited until the first transaction could never land: it was decided on a
    // solidified head past the first one's expiry (`rules::expired_for_good`), so the head it
    // was built on (its expiry less the 60 s window), at or after that solidified head, is past
    // it too. Never two live transactions for the chunk. (Not "9 s past": a block can land
    // between reading the solidified head and building, so the two heads are not always
    // exactly the 3-block lag apart; seen once under load.)
    let expiry = |i: usize| {
        chrono::DateTime::parse_from_rfc3339(attempts[i]["expires_at"].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let rebuilt_on = expiry(1) - 60_000;
    assert!(
        rebuilt_on > expiry(0),
        "rebuilt on {rebuilt_on}, first expired {}",
        expiry(0)
    );
    let text = app.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_payouts_rebuilds_total{network=\"tron\",reason=\"expired\"}"
        ),
        Some(1.0)
    );
    assert_wallet_matches_chain(&app, &r).await;
    app.verify_clean().await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_energy_is_retried_with_a_raised_fee_limit() {
    let r = rig().await;
    // The first estimate is half of what the transfer uses: its fee limit runs out of energy.
    r.node.fail_next(Fault::LowEstimate);
    let app = app(Backend::Sqlite, &r, "", "").await;
    let account = partner(&app, "acme", "1000").await;
    let id = pay(&app, &account, &destination(8), "25", "ooe-1").await;
    let p = until(&app, &id, "confirmed").await;
    let attempts = p["chunks"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{p}");
    let limit = |i: usize| {
        attempts[i]["fee_limit_sun"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    assert_eq!(limit(1), limit(0) * 2, "doubled within the cap");
    assert_eq!(r.node.token_balance(&destination(8)), usdt(25), "paid once");
    let text = app.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_payouts_rebuilds_total{network=\"tron\",reason=\"out_of_energy\"}"
        ),
        Some(1.0)
    );
    // Both transactions burned TRX (the first all of its fee limit): two FEEs, and the gas
    // account still equals the chain.
    let (_, fees) = app.get("/v1/journal?kind=FEE&limit=50", ADMIN).await;
    let fees = fees["items"].as_array().unwrap();
    assert_eq!(fees.len(), 2, "{fees:?}");
    assert_wallet_matches_chain(&app, &r).await;
    app.verify_clean().await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revert_fails_the_payout_and_returns_the_hold() {
    let r = rig().await;
    r.node.fail_next(Fault::Revert);
    let app = app(Backend::Sqlite, &r, "", "").await;
    let account = partner(&app, "acme", "1000").await;
    let id = pay(&app, &account, &destination(9), "40", "revert-1").await;
    let p = until(&app, &id, "failed").await;
    assert_eq!(p["chunks"][0]["state"], "failed", "{p}");
    assert_eq!(r.node.token_balance(&destination(9)), U256::ZERO);
    let a = app.account(&account).await;
    assert_eq!(
        (a["available"].as_str(), a["held"].as_str()),
        (Some("1000.000000"), Some("0.000000")),
        "{a}"
    );
    let (_, hold) = app
        .get(
            &format!("/v1/holds/{}", p["hold_id"].as_str().unwrap()),
            ADMIN,
        )
        .await;
    assert_eq!(
        (&hold["state"], &hold["voided"]),
        (&json!("resolved"), &json!("40.000000")),
        "{hold}"
    );
    // The energy the revert burned is still a FEE of the wallet.
    assert_wallet_matches_chain(&app, &r).await;
    app.verify_clean().await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffers_and_safe_mode_hold_tron_payouts_back() {
    let r = rig().await;
    // The wallet must keep 6,000 TRX and has 5,000: below its buffer, it sends nothing.
    let app = app(Backend::Sqlite, &r, "", "min_trx_sun = 6000000000").await;
    let account = partner(&app, "acme", "1000").await;
    let id = pay(&app, &account, &destination(10), "5", "buffer-1").await;
    let hot = r.hot.to_base58();
    wait_metric(
        &app,
        &format!("treasuryd_wallet_below_gas_buffer{{network=\"tron\",wallet=\"{hot}\"}}"),
        1.0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = app.get(&format!("/v1/payouts/{id}"), ADMIN).await.1;
    assert_eq!(p["state"], "queued", "{p}");
    // A top-up lifts it above the buffer: the payout goes.
    r.node.fund_trx(&r.hot, 2_000_000_000);
    until(&app, &id, "confirmed").await;

    // Safe-mode: accepted and queued, nothing broadcast; leaving it sends.
    let (s, body) = app
        .post(
            "/v1/networks/tron/safe-mode",
            ADMIN,
            None,
            &json!({"enabled": true, "reason": "drill"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let id = pay(&app, &account, &destination(11), "6", "safe-1").await;
    wait_metric(&app, "treasuryd_payouts_safe_mode{network=\"tron\"}", 1.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = app.get(&format!("/v1/payouts/{id}"), ADMIN).await.1;
    assert_eq!(p["state"], "queued", "{p}");
    assert!(
        p["chunks"][0].get("attempts").is_none(),
        "nothing signed: {p}"
    );
    let (s, _) = app
        .post(
            "/v1/networks/tron/safe-mode",
            ADMIN,
            None,
            &json!({"enabled": false, "reason": "drill over"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    until(&app, &id, "confirmed").await;
    assert_eq!(r.node.token_balance(&destination(11)), usdt(6));
    // The TRX top-up is not a transfer the ledger sees: it shows as the gas account being
    // short by exactly the top-up (a deposit to record), nothing else.
    let (gas, _) = wallet_accounts(&app, &r.hot).await;
    assert_eq!(i128::from(r.node.trx_balance(&r.hot)) - gas, 2_000_000_000);
    app.stop().await.unwrap();
}

/// Signs a TRC-20 transfer from `from` (its key) to `to` on the node's head.
async fn transfer(
    client: &TronClient,
    node: &DevTron,
    key: usize,
    to: &TronAddress,
    units: u64,
) -> [u8; 32] {
    let signer = dev_key(key);
    let head = client.now_block().await.unwrap();
    let envelope = Envelope {
        ref_block: RefBlock::from_block_id(&head.id),
        timestamp: head.timestamp,
        expiration: head.timestamp + 60_000,
        fee_limit: 100_000_000,
    };
    let raw = trigger_raw(
        &TronAddress::from_signer(&signer),
        &node.token,
        transfer_call_data(to, U256::from(units)),
        &envelope,
    );
    let tx = sign(&raw, &signer).unwrap();
    let answer = client.broadcast(&tx).await.unwrap();
    assert_eq!(answer.code, None, "{answer:?}");
    // Executed before the next one is sent, so an injected fault hits the one meant.
    for _ in 0..100 {
        if client
            .transaction_info(&tx.txid, false)
            .await
            .unwrap()
            .is_some()
        {
            return tx.txid;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("transfer {} never executed", hex::encode(tx.txid));
}

async fn deposits_are_credited_once_however_often_blocks_are_read(backend: Backend) {
    let r = rig().await;
    let client = TronClient::new(
        std::slice::from_ref(&r.node.url),
        None,
        Duration::from_secs(2),
    )
    .unwrap();
    let sender = TronAddress::from_signer(&dev_key(2));
    r.node.fund_trx(&sender, 1_000_000_000);
    r.node.mint(&sender, 1_000_000_000);
    let db = Arc::new(TestDb::new(backend).await);
    let app = app_on_db(db.clone(), &r, "", "").await;
    let account = partner(&app, "acme", "0").await;
    let deposit = destination(20);
    // An EIP-55 address is not a Tron deposit address.
    let (s, body) = app
        .post(
            &format!("/v1/accounts/{account}/deposit-addresses"),
            ADMIN,
            None,
            &json!({"address": DESTINATION, "reason": "t"}),
        )
        .await;
    assert_eq!(
        (s, body["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("address")),
        "{body}"
    );
    let (s, body) = app
        .post(
            &format!("/v1/accounts/{account}/deposit-addresses"),
            ADMIN,
            None,
            &json!({"address": deposit.to_base58(), "reason": "t"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let start = client.now_block().await.unwrap().number;
    // The engine's cursor is set (it starts reading after the solidified head) before the
    // transfers.
    let mut set = false;
    for _ in 0..600 {
        set = app.store.deposit_cursor("tron").await.unwrap().is_some();
        if set {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(set, "the watcher set its cursor");

    transfer(&client, &r.node, 2, &deposit, 1_250_000).await;
    transfer(&client, &r.node, 2, &destination(21), 9_000_000).await; // not a deposit address
    r.node.fail_next(Fault::Revert);
    transfer(&client, &r.node, 2, &deposit, 5_000_000).await; // reverts: never credited
    transfer(&client, &r.node, 2, &deposit, 750_000).await;
    transfer(&client, &r.node, 2, &r.hot, 3_000_000).await; // into the hot wallet
    let credited = || async {
        let a = app.account(&account).await;
        a["available"].as_str().unwrap().to_owned()
    };
    for _ in 0..200 {
        if credited().await == "2.000000" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(credited().await, "2.000000");
    assert_wallet_matches_chain(&app, &r).await;
    let text = app.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_deposits_credited_total{asset=\"USDT\",network=\"tron\"}"
        ),
        Some(2.0)
    );
    // Read every block again from before the transfers, after a restart: nothing twice. The
    // cursor is rewound once the daemon has stopped, so no tick of it moves it on again.
    let last_transfer = client.now_block().await.unwrap().number;
    app.stop().await.unwrap();
    let store = treasuryd::store::open(&db.url, 1, treasuryd::clock::SystemClock::shared())
        .await
        .unwrap();
    store.set_deposit_cursor("tron", start).await.unwrap();
    store.close().await;
    let app = app_on_db(db, &r, "", "").await;
    let cursor = || async { app.store.deposit_cursor("tron").await.unwrap().unwrap() };
    for _ in 0..200 {
        if cursor().await > last_transfer {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cursor().await > last_transfer,
        "the watcher read again from block {start} past the last transfer's block {last_transfer}"
    );
    // Read again, not skipped: this process read every block from the rewound cursor on.
    let read = metric_value(
        &app.metrics_text().await,
        "treasuryd_deposit_blocks_read_total{network=\"tron\"}",
    )
    .unwrap_or(0.0);
    assert!(
        read >= (last_transfer - start + 1) as f64,
        "read {read} blocks since the restart, from {start} to {last_transfer} at least"
    );
    let a = app.account(&account).await;
    assert_eq!(a["available"], "2.000000", "{a}");
    // The two deposits and the inflow into the hot wallet, each once (the opening balances and
    // the test's funding are deposits too).
    let (_, deposits) = app.get("/v1/journal?kind=DEPOSIT&limit=100", ADMIN).await;
    let memos: Vec<&str> = deposits["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["memo"].as_str())
        .collect();
    let count = |prefix: &str| memos.iter().filter(|m| m.starts_with(prefix)).count();
    assert_eq!(count("on-chain deposit from"), 2, "{memos:?}");
    assert_eq!(count("USDT into hot wallet"), 1, "{memos:?}");
    assert_wallet_matches_chain(&app, &r).await;
    app.verify_clean().await;
    app.stop().await.unwrap();
}

on_both_backends!(
    killed_after_signing_pays_once,
    killed_after_broadcast_pays_once,
    killed_before_confirming_pays_once
);

/// The real binary on the stand-in, SIGKILLed at `point` with a split payout in flight, then
/// restarted: every destination holds exactly its amount, one PAYOUT per chunk, the hot
/// wallet's ledger accounts equal the chain, and the ledger verifies.
async fn killed_at(backend: Backend, point: &str) {
    use crate::engine_crash::{ADMIN_TOKEN, KEY_VAR, TRADER_TOKEN, call, start, stop};
    let r = rig().await;
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let wallets = dir.path().join("wallets");
    std::fs::create_dir_all(&wallets).unwrap();
    std::fs::write(wallets.join("tron.toml"), wallet_toml(&r.hot, KEY_VAR, "")).unwrap();
    let digest = |t: &str| hex::encode(treasuryd::api::auth::token_digest(t));
    let config = dir.path().join("treasuryd.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nwallets_dir = {:?}\n[server]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n\
             [log]\nformat = \"json\"\n\
             [[auth.tokens]]\nname = \"admin\"\nrole = \"admin\"\nsha256 = \"{}\"\n\
             [[auth.tokens]]\nname = \"trader\"\nrole = \"trader\"\nsha256 = \"{}\"\n\
             [[networks]]\n{}",
            dir.path().display().to_string(),
            wallets.display().to_string(),
            digest(ADMIN_TOKEN),
            digest(TRADER_TOKEN),
            network_toml(&r.node, "").replace("[[tokens]]", "[[networks.tokens]]"),
        ),
    )
    .unwrap();
    let client = reqwest::Client::new();
    let (mut child, api, logs) = start(&config, &db.url, &r.key, Some(point));
    let (s, acct) = call(&client, &api, ADMIN_TOKEN, "/v1/accounts", None, Some(json!({"owner": "acme", "network": "tron", "asset": "USDT", "kind": "partner", "reason": "t"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{acct}");
    let account = acct["id"].as_str().unwrap().to_owned();
    let (s, _) = call(
        &client,
        &api,
        ADMIN_TOKEN,
        "/v1/deposits",
        Some("fund"),
        Some(json!({"account": account, "amount": "1000000", "reason": "t"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let to = destination(30);
    let (s, payout) = call(&client, &api, TRADER_TOKEN, "/v1/payouts", Some("crash-1"), Some(json!({"account": account, "network": "tron", "asset": "USDT", "destination": to.to_base58(), "amount": "450000"}))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{payout}");
    let id = payout["id"].as_str().unwrap().to_owned();
    crate::engine_crash::kill_at_point(&mut child, &logs, point);

    let (mut child, api, _logs) = start(&config, &db.url, &r.key, None);
    let mut state = Value::Null;
    for _ in 0..600 {
        state = call(
            &client,
            &api,
            ADMIN_TOKEN,
            &format!("/v1/payouts/{id}"),
            None,
            None,
        )
        .await
        .1;
        if state["state"] == "confirmed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state["state"], "confirmed", "after the restart: {state}");
    assert_eq!(
        r.node.token_balance(&to),
        usdt(450_000),
        "paid exactly once"
    );
    let (_, paid) = call(
        &client,
        &api,
        ADMIN_TOKEN,
        "/v1/journal?kind=PAYOUT",
        None,
        None,
    )
    .await;
    assert_eq!(
        paid["items"].as_array().unwrap().len(),
        3,
        "one PAYOUT per chunk"
    );
    // The wallet's TRX in the ledger equals the chain: every burn posted once.
    let mut gas = None;
    for _ in 0..100 {
        let (_, page) = call(
            &client,
            &api,
            ADMIN_TOKEN,
            &format!(
                "/v1/accounts?owner=wallet:{}&asset=TRX&network=tron",
                r.hot.to_base58()
            ),
            None,
            None,
        )
        .await;
        gas = page["items"][0]["total"].as_str().map(str::to_owned);
        let chain = format!(
            "{}.{:06}",
            r.node.trx_balance(&r.hot) / 1_000_000,
            r.node.trx_balance(&r.hot) % 1_000_000
        );
        if gas.as_deref() == Some(chain.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let chain_sun = r.node.trx_balance(&r.hot);
    assert_eq!(
        gas,
        Some(format!(
            "{}.{:06}",
            chain_sun / 1_000_000,
            chain_sun % 1_000_000
        ))
    );
    // And its USDT custody account is minus what the wallet holds on chain.
    let (_, page) = call(
        &client,
        &api,
        ADMIN_TOKEN,
        &format!(
            "/v1/accounts?owner=wallet:{}&asset=USDT&network=tron",
            r.hot.to_base58()
        ),
        None,
        None,
    )
    .await;
    let custody =
        rust_decimal::Decimal::from_str_exact(page["items"][0]["total"].as_str().unwrap()).unwrap()
            * rust_decimal::Decimal::from(1_000_000);
    let held =
        rust_decimal::Decimal::from_str_exact(&r.node.token_balance(&r.hot).to_string()).unwrap();
    assert_eq!(custody, -held, "custody account vs the chain");
    stop(&mut child);
    let (clean, report) = crate::crash::verify_cli(&config, &db.url);
    assert!(clean, "{report}");
}

async fn killed_after_signing_pays_once(backend: Backend) {
    killed_at(backend, "engine.after_sign").await
}

async fn killed_after_broadcast_pays_once(backend: Backend) {
    killed_at(backend, "engine.after_broadcast").await
}

async fn killed_before_confirming_pays_once(backend: Backend) {
    killed_at(backend, "engine.before_confirm").await
}

/// Four-eyes, freezes and the rollout guardrail hold Tron payouts back exactly as on EVM: they
/// are the same policy code around a different chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_eyes_freezes_and_the_guardrail_apply_on_tron() {
    let r = rig().await;
    // Four-eyes from 100,000; a pilot phase lets out 10% of 1,000,000 a day.
    let extra = "approval_threshold = \"100000\"\n[rollout]\nphase = \"pilot\"\ndaily_volume_target = \"1000000\"\n";
    let app = app(Backend::Sqlite, &r, extra, "").await;
    let account = partner(&app, "acme", "1000000").await;

    let big = pay(&app, &account, &destination(40), "100000", "eyes-1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = app.get(&format!("/v1/payouts/{big}"), ADMIN).await.1;
    assert_eq!(p["state"], "pending_approval", "{p}");
    let (s, _) = app
        .post(
            &format!("/v1/payouts/{big}/approve"),
            TRADER_AS_APPROVER,
            None,
            &json!({"reason": "mine"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "never the creator");
    let (s, body) = app
        .post(
            &format!("/v1/payouts/{big}/approve"),
            APPROVER,
            None,
            &json!({"reason": "checked"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    until(&app, &big, "confirmed").await;

    // The day's pilot share (100,000) is used up: the next one waits, with the reason.
    let over = pay(&app, &account, &destination(41), "1", "over-1").await;
    for _ in 0..100 {
        let p = app.get(&format!("/v1/payouts/{over}"), ADMIN).await.1;
        if event_kinds(&p).contains(&"rollout_wait".to_owned()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let p = app.get(&format!("/v1/payouts/{over}"), ADMIN).await.1;
    assert_eq!(p["state"], "queued", "{p}");
    assert!(event_kinds(&p).contains(&"rollout_wait".to_owned()), "{p}");

    // Canary (30%) lets it out, unless USDT is frozen on tron.
    let (s, body) = app
        .post(
            "/v1/networks/tron/freezes",
            ADMIN,
            None,
            &json!({"asset": "USDT", "frozen": true, "reason": "issuer incident"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = app
        .post(
            "/v1/networks/tron/rollout",
            ADMIN,
            None,
            &json!({"phase": "canary", "reason": "pilot green"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = app.get(&format!("/v1/payouts/{over}"), ADMIN).await.1;
    assert_eq!(p["state"], "queued", "frozen: {p}");
    assert_eq!(r.node.token_balance(&destination(41)), U256::ZERO);
    let (s, _) = app
        .post(
            "/v1/networks/tron/freezes",
            ADMIN,
            None,
            &json!({"asset": "USDT", "frozen": false, "reason": "resolved"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    until(&app, &over, "confirmed").await;
    assert_eq!(r.node.token_balance(&destination(41)), usdt(1));
    app.stop().await.unwrap();
}
