//! The EVM client against a real anvil with the real test tokens: transfers on both token
//! styles land exactly, reverts show in the receipt, a same-nonce replacement needs a real
//! bump and only one of the two can be mined, and node errors are classified.

use alloy::primitives::{Address, U256};
use treasuryd::chains::evm::{
    EvmClient, FeeMode, Fees, RpcErrorClass, TransferTx, sign_cancel, sign_transfer,
};
use treasuryd::dev::chain::{DevChain, TestToken};

const GWEI: u128 = 1_000_000_000;

pub(crate) async fn setup(
    args: &[&str],
) -> (DevChain, EvmClient, alloy::signers::local::PrivateKeySigner) {
    let chain = DevChain::start(args)
        .await
        .expect("anvil starts and tokens deploy");
    let hot = chain.dev_key(1).unwrap();
    for token in [TestToken::Usdc, TestToken::Usdt] {
        chain
            .mint(token, hot.address(), 1_000_000_000_000)
            .await
            .unwrap();
    }
    let client = EvmClient::new(&chain.url).unwrap();
    (chain, client, hot)
}

fn transfer(
    chain: &DevChain,
    token: TestToken,
    nonce: u64,
    to: Address,
    units: u64,
    fees: Fees,
) -> TransferTx {
    TransferTx {
        chain_id: chain.chain_id,
        nonce,
        token: chain.token(token),
        to,
        value: U256::from(units),
        gas_limit: 100_000,
        fees,
    }
}

async fn wait_inclusion(
    client: &EvmClient,
    hash: alloy::primitives::B256,
) -> treasuryd::chains::evm::Inclusion {
    for _ in 0..100 {
        if let Some(i) = client.inclusion(hash).await.unwrap() {
            return i;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{hash} was not mined");
}

#[tokio::test]
async fn transfers_on_both_token_styles_land_exactly() {
    let (chain, client, hot) = setup(&[]).await;
    assert_eq!(client.chain_id().await.unwrap(), chain.chain_id);
    let fees = client
        .suggest_fees(FeeMode::Normal, GWEI, 500 * GWEI)
        .await
        .unwrap();
    assert!(
        fees.max_fee_per_gas >= fees.max_priority_fee_per_gas
            && fees.max_priority_fee_per_gas >= GWEI
    );

    let dest: Address = "0x1000000000000000000000000000000000000001"
        .parse()
        .unwrap();
    let mut nonce = client.nonce(hot.address(), true).await.unwrap();
    for (token, units) in [
        (TestToken::Usdc, 1_500_000u64),
        (TestToken::Usdt, 2_250_000),
    ] {
        let signed =
            sign_transfer(&hot, &transfer(&chain, token, nonce, dest, units, fees)).unwrap();
        let hash = client.broadcast(&signed.raw).await.unwrap();
        assert_eq!(hash, signed.hash, "our hash is the network's hash");
        let inclusion = wait_inclusion(&client, hash).await;
        assert!(inclusion.success, "{token:?} transfer succeeds");
        assert_eq!(
            client
                .token_balance(chain.token(token), dest)
                .await
                .unwrap(),
            U256::from(units)
        );
        assert_eq!(
            client.block_hash(inclusion.block_number).await.unwrap(),
            Some(inclusion.block_hash)
        );

        // The same signed bytes again: the nonce is spent, nothing moves twice.
        let again = client.broadcast(&signed.raw).await;
        let class = again.as_ref().map_err(|e| e.class);
        assert!(
            matches!(
                class,
                Ok(_) | Err(RpcErrorClass::NonceTooLow | RpcErrorClass::AlreadyKnown)
            ),
            "{again:?}"
        );
        assert_eq!(
            client
                .token_balance(chain.token(token), dest)
                .await
                .unwrap(),
            U256::from(units)
        );
        nonce += 1;
    }
    assert_eq!(client.nonce(hot.address(), false).await.unwrap(), nonce);
}

#[tokio::test]
async fn a_paused_token_reverts_and_the_receipt_says_so() {
    let (chain, client, hot) = setup(&[]).await;
    chain.pause_usdt(true).await.unwrap();
    let fees = client
        .suggest_fees(FeeMode::Normal, GWEI, 500 * GWEI)
        .await
        .unwrap();
    let dest: Address = "0x2000000000000000000000000000000000000002"
        .parse()
        .unwrap();
    let nonce = client.nonce(hot.address(), true).await.unwrap();
    let signed = sign_transfer(
        &hot,
        &transfer(&chain, TestToken::Usdt, nonce, dest, 5, fees),
    )
    .unwrap();
    client.broadcast(&signed.raw).await.unwrap();
    let inclusion = wait_inclusion(&client, signed.hash).await;
    assert!(!inclusion.success, "a paused transfer is mined as a revert");
    assert!(
        inclusion.gas_used > 0 && inclusion.effective_gas_price > 0,
        "gas is still paid"
    );
    assert_eq!(
        client.token_balance(chain.usdt, dest).await.unwrap(),
        U256::ZERO
    );
}

#[tokio::test]
async fn a_replacement_needs_a_real_bump_and_only_one_attempt_is_mined() {
    let (chain, client, hot) = setup(&[]).await;
    chain.set_automine(false).await.unwrap();
    let dest: Address = "0x3000000000000000000000000000000000000003"
        .parse()
        .unwrap();
    let nonce = client.nonce(hot.address(), true).await.unwrap();
    let first_fees = Fees {
        max_fee_per_gas: 3 * GWEI,
        max_priority_fee_per_gas: GWEI,
    };
    let first = sign_transfer(
        &hot,
        &transfer(&chain, TestToken::Usdc, nonce, dest, 7_000_000, first_fees),
    )
    .unwrap();
    client.broadcast(&first.raw).await.unwrap();
    assert_eq!(
        client.inclusion(first.hash).await.unwrap(),
        None,
        "automine is off: still pending"
    );

    // The same fees with other content: refused as underpriced.
    let same = sign_transfer(
        &hot,
        &transfer(&chain, TestToken::Usdc, nonce, dest, 7_000_001, first_fees),
    )
    .unwrap();
    let err = client.broadcast(&same.raw).await.unwrap_err();
    assert_eq!(err.class, RpcErrorClass::Underpriced, "{err}");

    let bumped = first_fees.bumped(1_250, first_fees, 500 * GWEI);
    let second = sign_transfer(
        &hot,
        &transfer(&chain, TestToken::Usdc, nonce, dest, 7_000_000, bumped),
    )
    .unwrap();
    assert_ne!(second.hash, first.hash);
    client.broadcast(&second.raw).await.unwrap();
    chain.mine(1).await.unwrap();

    let mined = [
        client.inclusion(first.hash).await.unwrap(),
        client.inclusion(second.hash).await.unwrap(),
    ];
    assert_eq!(
        mined.iter().filter(|m| m.is_some()).count(),
        1,
        "exactly one attempt of a nonce is mined"
    );
    assert!(
        mined[1].as_ref().is_some_and(|m| m.success),
        "the replacement won"
    );
    assert_eq!(
        client.token_balance(chain.usdc, dest).await.unwrap(),
        U256::from(7_000_000u64)
    );

    // A cancel is a zero-value self-transfer on a pending nonce.
    let next = sign_transfer(
        &hot,
        &transfer(&chain, TestToken::Usdc, nonce + 1, dest, 1, first_fees),
    )
    .unwrap();
    client.broadcast(&next.raw).await.unwrap();
    let cancel = sign_cancel(
        &hot,
        chain.chain_id,
        nonce + 1,
        first_fees.bumped(1_250, first_fees, 500 * GWEI),
    )
    .unwrap();
    client.broadcast(&cancel.raw).await.unwrap();
    chain.mine(1).await.unwrap();
    assert!(client.inclusion(cancel.hash).await.unwrap().is_some());
    assert_eq!(client.inclusion(next.hash).await.unwrap(), None);
    assert_eq!(
        client.token_balance(chain.usdc, dest).await.unwrap(),
        U256::from(7_000_000u64),
        "the cancelled transfer never landed"
    );
}

#[tokio::test]
async fn an_unreachable_node_is_a_transient_error() {
    let client = EvmClient::new("http://127.0.0.1:9").unwrap();
    let err = client.head().await.unwrap_err();
    assert_eq!(err.class, RpcErrorClass::Transient, "{err}");
}
