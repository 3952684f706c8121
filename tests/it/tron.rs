//! The Tron client against the local node stand-in, which enforces what a real node does:
//! locally built and signed TRC-20 transfers execute and solidify; wrong signer, stale TAPOS,
//! expiration outside the window, duplicates, a busy node, a dropped broadcast, OUT_OF_ENERGY
//! under a low fee limit, a revert; failover past a dead endpoint; block scans for deposits.

use alloy::primitives::U256;
use std::time::Duration;
use treasuryd::chains::tron::TronAddress;
use treasuryd::chains::tron::client::{TronClient, TxInfo};
use treasuryd::chains::tron::tx::{
    Envelope, RefBlock, SignedTx, sign, transfer_call_data, trigger_raw,
};
use treasuryd::dev::tron::{DevTron, ENERGY_FEE, ENERGY_NEW_HOLDER, Fault};

fn key(n: u8) -> alloy::signers::local::PrivateKeySigner {
    // Anvil's well-known development keys double as Tron test keys.
    [
        "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
        "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    ][n as usize]
        .parse()
        .unwrap()
}

struct Rig {
    node: DevTron,
    client: TronClient,
    hot: alloy::signers::local::PrivateKeySigner,
    from: TronAddress,
    to: TronAddress,
}

async fn rig() -> Rig {
    rig_solidifying(3).await
}

/// A node solidifying `solid_lag` 100 ms blocks behind its head.
async fn rig_solidifying(solid_lag: u64) -> Rig {
    let node = DevTron::start(Duration::from_millis(100), solid_lag)
        .await
        .unwrap();
    // A dead endpoint first: every call fails over to the node.
    let client = TronClient::new(
        &["http://127.0.0.1:9/".to_owned(), node.url.clone()],
        Some("test-api-key".to_owned().into()),
        Duration::from_secs(2),
    )
    .unwrap();
    let hot = key(0);
    let from = TronAddress::from_signer(&hot);
    let to = TronAddress::from_signer(&key(1));
    node.fund_trx(&from, 100_000_000);
    node.mint(&from, 1_000_000_000);
    Rig {
        node,
        client,
        hot,
        from,
        to,
    }
}

impl Rig {
    async fn transfer(&self, units: u64, fee_limit: i64, expires_in: i64) -> SignedTx {
        let head = self.client.now_block().await.unwrap();
        let envelope = Envelope {
            ref_block: RefBlock::from_block_id(&head.id),
            timestamp: head.timestamp,
            expiration: head.timestamp + expires_in,
            fee_limit,
        };
        let raw = trigger_raw(
            &self.from,
            &self.node.token,
            transfer_call_data(&self.to, U256::from(units)),
            &envelope,
        );
        sign(&raw, &self.hot).unwrap()
    }

    async fn solid_info(&self, tx: &SignedTx) -> TxInfo {
        for _ in 0..800 {
            if let Some(info) = self.client.transaction_info(&tx.txid, true).await.unwrap() {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{tx:?} never solidified");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locally_signed_trc20_transfer_executes_and_solidifies() {
    // Two seconds between execution and solidity: the solid view is seen without the transfer.
    let r = rig_solidifying(20).await;
    assert_eq!(r.client.energy_price().await.unwrap(), ENERGY_FEE);
    let data = transfer_call_data(&r.to, U256::from(5_000_000u64));
    let estimate = r
        .client
        .estimate_energy(&r.from, &r.node.token, &data)
        .await
        .unwrap();
    assert_eq!(estimate, ENERGY_NEW_HOLDER);
    let tx = r
        .transfer(5_000_000, estimate * ENERGY_FEE * 12 / 10, 60_000)
        .await;
    let answer = r.client.broadcast(&tx).await.unwrap();
    assert_eq!(answer.code, None, "{answer:?}");
    // Executed first, final only once its block is behind the solidified head.
    let mut executed = None;
    for _ in 0..100 {
        executed = r.client.transaction_info(&tx.txid, false).await.unwrap();
        if executed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let executed = executed.expect("executed");
    let unsolid = r.client.transaction_info(&tx.txid, true).await.unwrap();
    let solid_after = r.client.solid_block().await.unwrap().number;
    assert!(
        executed.block_number > solid_after,
        "block {} solidified within {solid_after} already: the lag is too short to see it unsolid",
        executed.block_number
    );
    assert_eq!(unsolid, None, "not final before its block is solid");
    let info = r.solid_info(&tx).await;
    assert_eq!(info.result, "SUCCESS");
    assert!(info.block_number <= r.client.solid_block().await.unwrap().number);
    assert_eq!(info.energy_used, ENERGY_NEW_HOLDER);
    assert_eq!(
        info.fee,
        ENERGY_NEW_HOLDER * ENERGY_FEE,
        "no staked energy: all burned"
    );
    assert_eq!(r.node.token_balance(&r.to), U256::from(5_000_000u64));
    assert_eq!(r.node.token_balance(&r.from), U256::from(995_000_000u64));
    assert_eq!(r.node.trx_balance(&r.from), 100_000_000 - info.fee);
    // The Transfer log, as a deposit scan of the block sees it.
    let block = r
        .client
        .block_transactions(info.block_number)
        .await
        .unwrap();
    let log = &block.iter().find(|t| t.txid == tx.txid).unwrap().logs[0];
    assert_eq!(log.address, r.node.token.evm_bytes());
    assert_eq!(&log.topics[2][12..], &r.to.evm_bytes());
    assert_eq!(U256::from_be_slice(&log.data), U256::from(5_000_000u64));
    // Resources: staked energy is used before TRX is burned.
    r.node.set_energy(&r.from, 100_000);
    let res = r.client.resources(&r.from).await.unwrap();
    assert_eq!(res.energy_available, 100_000);
    assert_eq!(res.balance_sun, 100_000_000 - info.fee);
    let tx = r.transfer(1, 1_000_000, 60_000).await;
    assert_eq!(r.client.broadcast(&tx).await.unwrap().code, None);
    let info = r.solid_info(&tx).await;
    assert_eq!((info.result.as_str(), info.fee), ("SUCCESS", 0));
    assert!(
        r.client
            .resources(&r.from)
            .await
            .unwrap()
            .bandwidth_available
            < 5000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_refuses_what_a_real_node_refuses() {
    let r = rig().await;
    let code = |tx: SignedTx| {
        let client = r.client.clone();
        async move { client.broadcast(&tx).await.unwrap().code }
    };
    // Signed by a key that does not own the sending account.
    let head = r.client.now_block().await.unwrap();
    let envelope = Envelope {
        ref_block: RefBlock::from_block_id(&head.id),
        timestamp: head.timestamp,
        expiration: head.timestamp + 60_000,
        fee_limit: 30_000_000,
    };
    let raw = trigger_raw(
        &r.from,
        &r.node.token,
        transfer_call_data(&r.to, U256::from(1u64)),
        &envelope,
    );
    assert_eq!(
        code(sign(&raw, &key(2)).unwrap()).await.as_deref(),
        Some("SIGERROR")
    );
    // A reference block the node never had.
    let mut stale = envelope;
    stale.ref_block.hash = [0xab; 8];
    let raw = trigger_raw(
        &r.from,
        &r.node.token,
        transfer_call_data(&r.to, U256::from(1u64)),
        &stale,
    );
    assert_eq!(
        code(sign(&raw, &r.hot).unwrap()).await.as_deref(),
        Some("TAPOS_ERROR")
    );
    // Expiration already past, and more than 24 h ahead.
    for expires_in in [-1, 86_400_001 + 3_000] {
        let tx = r.transfer(1, 30_000_000, expires_in).await;
        assert_eq!(
            code(tx).await.as_deref(),
            Some("TRANSACTION_EXPIRATION_ERROR"),
            "{expires_in}"
        );
    }
    // The same transaction twice.
    let tx = r.transfer(1, 30_000_000, 60_000).await;
    assert_eq!(code(tx.clone()).await, None);
    assert_eq!(code(tx).await.as_deref(), Some("DUP_TRANSACTION_ERROR"));
    // Busy, then accepted; dropped: "success" but it never executes.
    r.node.fail_next(Fault::Busy);
    let tx = r.transfer(2, 30_000_000, 60_000).await;
    assert_eq!(code(tx.clone()).await.as_deref(), Some("SERVER_BUSY"));
    assert_eq!(code(tx).await, None);
    r.node.fail_next(Fault::Drop);
    let dropped = r.transfer(3, 30_000_000, 60_000).await;
    assert_eq!(code(dropped.clone()).await, None);
    let executed = r.transfer(4, 30_000_000, 60_000).await;
    assert_eq!(code(executed.clone()).await, None);
    r.solid_info(&executed).await;
    assert_eq!(
        r.client
            .transaction_info(&dropped.txid, false)
            .await
            .unwrap(),
        None
    );
    // Not enough TRX to pay for bandwidth once the free allowance is gone: an empty account.
    let poor = key(2);
    let poor_address = TronAddress::from_signer(&poor);
    r.node.mint(&poor_address, 10);
    let mut sent = 0;
    let mut refused = None;
    while refused.is_none() && sent < 40 {
        let head = r.client.now_block().await.unwrap();
        let envelope = Envelope {
            ref_block: RefBlock::from_block_id(&head.id),
            timestamp: head.timestamp + sent,
            expiration: head.timestamp + 60_000,
            fee_limit: 0,
        };
        let raw = trigger_raw(
            &poor_address,
            &r.node.token,
            transfer_call_data(&r.to, U256::from(1u64)),
            &envelope,
        );
        refused = code(sign(&raw, &poor).unwrap()).await;
        sent += 1;
        r.node.produce_block();
    }
    assert_eq!(refused.as_deref(), Some("BANDWITH_ERROR"), "after {sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_energy_burns_the_fee_limit_and_a_revert_moves_nothing() {
    let r = rig().await;
    // A fee limit below energy × price: OUT_OF_ENERGY, the whole limit burned, nothing moved.
    let tx = r.transfer(7, 1_000_000, 60_000).await;
    assert_eq!(r.client.broadcast(&tx).await.unwrap().code, None);
    let info = r.solid_info(&tx).await;
    assert_eq!(
        (info.result.as_str(), info.fee),
        ("OUT_OF_ENERGY", 1_000_000)
    );
    assert_eq!(r.node.token_balance(&r.to), U256::ZERO);
    // Rebuilt with a raised limit, it goes through.
    let tx = r
        .transfer(7, ENERGY_NEW_HOLDER * ENERGY_FEE * 2, 60_000)
        .await;
    assert_eq!(r.client.broadcast(&tx).await.unwrap().code, None);
    assert_eq!(r.solid_info(&tx).await.result, "SUCCESS");
    assert_eq!(r.node.token_balance(&r.to), U256::from(7u64));
    // A revert: energy burned, tokens unchanged.
    r.node.fail_next(Fault::Revert);
    let tx = r.transfer(9, 30_000_000, 60_000).await;
    assert_eq!(r.client.broadcast(&tx).await.unwrap().code, None);
    let info = r.solid_info(&tx).await;
    assert_eq!(info.result, "REVERT");
    assert!(info.fee > 0);
    assert_eq!(r.node.token_balance(&r.to), U256::from(7u64));
    assert!(info.logs.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_transaction_is_rebuilt_only_once_it_cannot_land() {
    use treasuryd::chains::tron::rules::{Reaction, expired_for_good, reaction};
    let r = rig().await;
    // The first broadcast is lost on the way (the node says yes and drops it).
    r.node.fail_next(Fault::Drop);
    let first = r.transfer(11, 30_000_000, 6_000).await;
    let expiration = {
        use prost::Message;
        treasuryd::chains::tron::tx::Transaction::decode(first.bytes.as_slice())
            .unwrap()
            .raw_data
            .unwrap()
            .expiration
    };
    assert_eq!(
        reaction(r.client.broadcast(&first).await.unwrap().code.as_deref()),
        Reaction::Track
    );
    // While the solidified head has not passed its expiration it might still land: no rebuild.
    let solid = r.client.solid_block().await.unwrap();
    assert!(!expired_for_good(expiration, solid.timestamp));
    let mut waited = 0;
    while !expired_for_good(expiration, r.client.solid_block().await.unwrap().timestamp) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
        assert!(
            waited < 200,
            "the solidified head never passed the expiration"
        );
    }
    assert_eq!(
        r.client.transaction_info(&first.txid, false).await.unwrap(),
        None
    );
    // Now it can never land: the same bytes are refused, and a rebuild pays once.
    let again = r.client.broadcast(&first).await.unwrap();
    assert_eq!(
        reaction(again.code.as_deref()),
        Reaction::RebuildAfterExpiry,
        "{again:?}"
    );
    let rebuilt = r.transfer(11, 30_000_000, 60_000).await;
    assert_ne!(rebuilt.txid, first.txid);
    assert_eq!(r.client.broadcast(&rebuilt).await.unwrap().code, None);
    assert_eq!(r.solid_info(&rebuilt).await.result, "SUCCESS");
    assert_eq!(
        r.node.token_balance(&r.to),
        U256::from(11u64),
        "paid exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposits_are_found_in_solidified_blocks_once_per_log() {
    use std::collections::HashSet;
    use treasuryd::chains::tron::deposits::scan;
    let r = rig().await;
    let start = r.client.now_block().await.unwrap().number;
    // To the watched address: 5 and (after a revert that moves nothing) 6; to another: 7.
    let watched_tx = r.transfer(5, 30_000_000, 60_000).await;
    assert_eq!(r.client.broadcast(&watched_tx).await.unwrap().code, None);
    // The fault hits the next execution: let the first one execute before arming it.
    r.solid_info(&watched_tx).await;
    r.node.fail_next(Fault::Revert);
    let reverted = r.transfer(8, 30_000_000, 60_000).await;
    assert_eq!(r.client.broadcast(&reverted).await.unwrap().code, None);
    r.solid_info(&reverted).await;
    let second = r.transfer(6, 30_000_000, 60_000).await;
    assert_eq!(r.client.broadcast(&second).await.unwrap().code, None);
    let other = {
        let head = r.client.now_block().await.unwrap();
        let raw = trigger_raw(
            &r.from,
            &r.node.token,
            transfer_call_data(&TronAddress::from_signer(&key(2)), U256::from(7u64)),
            &Envelope {
                ref_block: RefBlock::from_block_id(&head.id),
                timestamp: head.timestamp,
                expiration: head.timestamp + 60_000,
                fee_limit: 30_000_000,
            },
        );
        sign(&raw, &r.hot).unwrap()
    };
    assert_eq!(r.client.broadcast(&other).await.unwrap().code, None);
    r.solid_info(&second).await;
    r.solid_info(&other).await;
    let solid = r.client.solid_block().await.unwrap().number;
    let tokens = HashSet::from([r.node.token]);
    let watched = HashSet::from([r.to]);
    let found = scan(&r.client, start, solid, &tokens, &watched)
        .await
        .unwrap();
    let summary: Vec<(String, u64)> = found
        .iter()
        .map(|i| (hex::encode(i.txid), i.amount.to::<u64>()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (hex::encode(watched_tx.txid), 5),
            (hex::encode(second.txid), 6)
        ]
    );
    assert_eq!(found[0].from, r.from);
    assert_eq!(found[0].to, r.to);
    assert_eq!(
        found[0].key("deposit", "tron"),
        format!("deposit:tron:{}:0", hex::encode(watched_tx.txid))
    );
    // Another token is not ours to credit.
    let none = scan(&r.client, start, solid, &HashSet::new(), &watched)
        .await
        .unwrap();
    assert!(none.is_empty());
}
