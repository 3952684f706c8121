//! `contracts/Disperse.sol` on a real anvil with both test token styles: one transaction pays
//! every destination exactly, one failing transfer reverts the whole batch and names its
//! index, the contract moves only its caller's tokens whatever allowances it holds, malformed
//! calls are refused, and a batched transfer costs at most 0.6× the gas of a single one.

use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use treasuryd::chains::evm::{
    DisperseParts, DisperseTx, EvmClient, FeeMode, Fees, Inclusion, TransferTx, disperse_calldata,
    sign_approve, sign_disperse, sign_transfer, signed_disperse_parts,
};
use treasuryd::dev::chain::{DevChain, TestToken};

const GWEI: u128 = 1_000_000_000;

struct Setup {
    chain: DevChain,
    client: EvmClient,
    hot: PrivateKeySigner,
    disperse: Address,
    fees: Fees,
}

async fn setup() -> Setup {
    // Both test tokens, the hot wallet (dev account 1) funded with each.
    let (chain, client, hot) = crate::evm::setup(&[]).await;
    let disperse = chain.deploy_disperse().await.unwrap();
    let fees = client
        .suggest_fees(FeeMode::Normal, GWEI, 500 * GWEI)
        .await
        .unwrap();
    Setup {
        chain,
        client,
        hot,
        disperse,
        fees,
    }
}

impl Setup {
    async fn send(&self, raw: &Bytes, hash: alloy::primitives::B256) -> Inclusion {
        self.client.broadcast(raw).await.unwrap();
        for _ in 0..200 {
            if let Some(i) = self.client.inclusion(hash).await.unwrap() {
                return i;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{hash} was not mined");
    }

    async fn nonce(&self, who: Address) -> u64 {
        self.client.nonce(who, true).await.unwrap()
    }

    async fn approve(&self, owner: &PrivateKeySigner, token: TestToken, value: U256) {
        let signed = sign_approve(
            owner,
            self.chain.chain_id,
            self.nonce(owner.address()).await,
            self.chain.token(token),
            self.disperse,
            value,
            self.fees,
        )
        .unwrap();
        assert!(self.send(&signed.raw, signed.hash).await.success);
    }

    async fn disperse(
        &self,
        from: &PrivateKeySigner,
        token: TestToken,
        payments: &[(Address, U256)],
    ) -> Inclusion {
        let signed = sign_disperse(
            from,
            &DisperseTx {
                chain_id: self.chain.chain_id,
                nonce: self.nonce(from.address()).await,
                contract: self.disperse,
                token: self.chain.token(token),
                payments: payments.to_vec(),
                gas_limit: 60_000 + 40_000 * payments.len() as u64,
                fees: self.fees,
            },
        )
        .unwrap();
        let parts = signed_disperse_parts(&signed.raw).expect("a disperse decodes");
        assert_eq!(
            parts,
            DisperseParts {
                contract: self.disperse,
                token: self.chain.token(token),
                payments: payments.to_vec()
            },
            "what was signed is what was meant"
        );
        self.send(&signed.raw, signed.hash).await
    }

    async fn balance(&self, token: TestToken, who: Address) -> U256 {
        self.client
            .token_balance(self.chain.token(token), who)
            .await
            .unwrap()
    }

    /// The revert data of the call `data` from `from` to the disperse contract (eth_call).
    async fn revert_data(&self, from: Address, data: Bytes) -> Bytes {
        let request = TransactionRequest::default()
            .from(from)
            .to(self.disperse)
            .input(data.into());
        let err = self
            .client
            .provider()
            .call(request)
            .await
            .expect_err("the call reverts");
        err.as_error_resp()
            .and_then(|e| e.as_revert_data())
            .unwrap_or_else(|| panic!("no revert data in {err}"))
    }
}

fn destination(i: u64) -> Address {
    Address::from_word(U256::from(0xD15_0000u64 + i).into())
}

fn selector(signature: &str) -> [u8; 4] {
    let hash = alloy::primitives::keccak256(signature.as_bytes());
    [hash[0], hash[1], hash[2], hash[3]]
}

/// `Error(uint256)` revert data for the named custom error.
fn custom_error(signature: &str, index: u64) -> Bytes {
    let mut data = selector(signature).to_vec();
    data.extend_from_slice(&U256::from(index).to_be_bytes::<32>());
    data.into()
}

#[tokio::test]
async fn one_disperse_pays_every_destination_of_either_token_style_exactly() {
    let s = setup().await;
    for token in [TestToken::Usdc, TestToken::Usdt] {
        s.approve(&s.hot, token, U256::MAX).await;
        let before = s.balance(token, s.hot.address()).await;
        // Twenty destinations, distinct amounts, and one destination paid twice in the batch.
        let mut payments: Vec<(Address, U256)> = (0..20)
            .map(|i| (destination(i), U256::from(1_000_000 + i)))
            .collect();
        payments.push((destination(3), U256::from(7)));
        let inclusion = s.disperse(&s.hot, token, &payments).await;
        assert!(inclusion.success, "{token:?}: the batch succeeds");
        for (to, value) in &payments {
            assert!(
                inclusion.moved(s.chain.token(token), s.hot.address(), *to, *value),
                "{token:?}: a Transfer from the hot wallet to {to} of {value}"
            );
        }
        assert_eq!(inclusion.transfers.len(), payments.len());
        for i in 0..20 {
            let extra = if i == 3 { 7 } else { 0 };
            assert_eq!(
                s.balance(token, destination(i)).await,
                U256::from(1_000_000 + i + extra),
                "{token:?}: destination {i} holds exactly what it was paid"
            );
        }
        let total: U256 = payments.iter().map(|(_, v)| *v).sum();
        assert_eq!(s.balance(token, s.hot.address()).await, before - total);
        assert_eq!(s.balance(token, s.disperse).await, U256::ZERO);
        // Destinations were paid once: reset them for the next token style.
        for i in 0..20 {
            assert!(s.balance(token, destination(i)).await > U256::ZERO);
        }
    }
}

#[tokio::test]
async fn one_failing_transfer_reverts_the_whole_batch_and_names_its_index() {
    let s = setup().await;
    s.approve(&s.hot, TestToken::Usdt, U256::MAX).await;
    s.chain.blacklist_usdt(destination(7)).await.unwrap();
    let payments: Vec<(Address, U256)> = (0..10)
        .map(|i| (destination(i), U256::from(500_000u64)))
        .collect();
    let before = s.balance(TestToken::Usdt, s.hot.address()).await;
    let inclusion = s.disperse(&s.hot, TestToken::Usdt, &payments).await;
    assert!(!inclusion.success, "the batch reverts");
    assert!(
        inclusion.transfers.is_empty(),
        "no transfer survives a revert"
    );
    assert_eq!(s.balance(TestToken::Usdt, s.hot.address()).await, before);
    for i in 0..10 {
        assert_eq!(
            s.balance(TestToken::Usdt, destination(i)).await,
            U256::ZERO,
            "destination {i} before the failing one was not paid either"
        );
    }
    // The same call simulated names the failing transfer.
    let data = disperse_calldata(s.chain.usdt, &payments);
    assert_eq!(
        s.revert_data(s.hot.address(), data).await,
        custom_error("TransferFailed(uint256)", 7)
    );
    // More than the balance fails the same way, at the first transfer it cannot cover.
    let too_much = vec![(destination(1), U256::from(1u64)), (destination(2), before)];
    assert_eq!(
        s.revert_data(s.hot.address(), disperse_calldata(s.chain.usdt, &too_much))
            .await,
        custom_error("TransferFailed(uint256)", 1)
    );
    // Without an allowance nothing moves either (a token returning false counts as failed).
    s.approve(&s.hot, TestToken::Usdc, U256::ZERO).await;
    let usdc_before = s.balance(TestToken::Usdc, s.hot.address()).await;
    let inclusion = s
        .disperse(
            &s.hot,
            TestToken::Usdc,
            &[(destination(1), U256::from(1u64))],
        )
        .await;
    assert!(!inclusion.success);
    assert_eq!(
        s.balance(TestToken::Usdc, s.hot.address()).await,
        usdc_before
    );
}

#[tokio::test]
async fn the_contract_moves_only_its_callers_tokens() {
    let s = setup().await;
    // The hot wallet approved the contract for everything it has.
    s.approve(&s.hot, TestToken::Usdc, U256::MAX).await;
    let hot_before = s.balance(TestToken::Usdc, s.hot.address()).await;
    // Someone else (with gas, no tokens) asks the contract to pay them: it pays from their own
    // balance, which is empty, so the batch reverts and the hot wallet's approval is useless
    // to them.
    let stranger = s.chain.dev_key(2).unwrap();
    let inclusion = s
        .disperse(
            &stranger,
            TestToken::Usdc,
            &[(stranger.address(), U256::from(1_000_000u64))],
        )
        .await;
    assert!(
        !inclusion.success,
        "a stranger cannot spend the hot wallet's approval"
    );
    assert_eq!(
        s.balance(TestToken::Usdc, s.hot.address()).await,
        hot_before
    );
    assert_eq!(
        s.balance(TestToken::Usdc, stranger.address()).await,
        U256::ZERO
    );
    // With tokens and an approval of their own, the stranger pays from their own balance only.
    s.chain
        .mint(TestToken::Usdc, stranger.address(), 5_000_000)
        .await
        .unwrap();
    s.approve(&stranger, TestToken::Usdc, U256::from(5_000_000u64))
        .await;
    let inclusion = s
        .disperse(
            &stranger,
            TestToken::Usdc,
            &[(destination(1), U256::from(2_000_000u64))],
        )
        .await;
    assert!(inclusion.success);
    assert!(inclusion.moved(
        s.chain.usdc,
        stranger.address(),
        destination(1),
        U256::from(2_000_000u64)
    ));
    assert_eq!(
        s.balance(TestToken::Usdc, s.hot.address()).await,
        hot_before
    );
    assert_eq!(
        s.balance(TestToken::Usdc, stranger.address()).await,
        U256::from(3_000_000u64)
    );
}

#[tokio::test]
async fn malformed_calls_are_refused_not_guessed() {
    let s = setup().await;
    s.approve(&s.hot, TestToken::Usdc, U256::MAX).await;
    let from = s.hot.address();
    // A token address without code would "succeed" and pay no one.
    let no_code = disperse_calldata(destination(99), &[(destination(1), U256::from(1u64))]);
    assert_eq!(
        s.revert_data(from, no_code).await.as_ref(),
        selector("NotAContract()")
    );
    // Lists of different lengths: `disperse(token, [d1, d2], [1])` encoded by hand.
    let word = |v: U256| v.to_be_bytes::<32>().to_vec();
    let addr = |a: Address| word(U256::from_be_slice(a.as_slice()));
    let mut mismatched = selector("disperse(address,address[],uint256[])").to_vec();
    for part in [
        addr(s.chain.usdc),
        word(U256::from(0x60)),
        word(U256::from(0xC0)),
        word(U256::from(2)),
        addr(destination(1)),
        addr(destination(2)),
        word(U256::from(1)),
        word(U256::from(1)),
    ] {
        mismatched.extend(part);
    }
    assert_eq!(
        s.revert_data(from, mismatched.into()).await.as_ref(),
        selector("LengthMismatch()")
    );
    // A destination with bits above its 20 bytes is refused, never truncated to some other
    // address.
    let mut dirty = disperse_calldata(
        s.chain.usdc,
        &[
            (destination(1), U256::from(1u64)),
            (destination(2), U256::from(1u64)),
        ],
    )
    .to_vec();
    // The second `to` element: selector, 3 head words, the length word, then element 0 and 1.
    let second = 4 + 32 * 3 + 32 + 32;
    dirty[second] = 0x01;
    assert_eq!(
        s.revert_data(from, dirty.into()).await,
        custom_error("BadAddress(uint256)", 1)
    );
    assert_eq!(
        s.balance(TestToken::Usdc, destination(1)).await,
        U256::ZERO,
        "no refused call paid anyone"
    );
}

/// Gas is deterministic on a given node, so this is a property, not a timing: a transfer in a
/// batch of 100 costs at most 0.6× a single transfer, to fresh recipients (the costly case:
/// every balance slot is written from zero) and to recipients already holding the token.
#[tokio::test]
async fn a_batched_transfer_costs_at_most_six_tenths_of_a_single_one() {
    let s = setup().await;
    s.approve(&s.hot, TestToken::Usdt, U256::MAX).await;
    let k = 100u64;
    let value = U256::from(1_000u64);
    // A fresh recipient, then the same one again (already holding the token).
    let mut single = Vec::new();
    for _ in 0..2 {
        let signed = sign_transfer(
            &s.hot,
            &TransferTx {
                chain_id: s.chain.chain_id,
                nonce: s.nonce(s.hot.address()).await,
                token: s.chain.usdt,
                to: destination(1_000),
                value,
                gas_limit: 100_000,
                fees: s.fees,
            },
        )
        .unwrap();
        let inclusion = s.send(&signed.raw, signed.hash).await;
        assert!(inclusion.success);
        single.push(inclusion.gas_used);
    }
    let fresh: Vec<_> = (0..k).map(|i| (destination(i), value)).collect();
    let batch_fresh = s.disperse(&s.hot, TestToken::Usdt, &fresh).await;
    let batch_again = s.disperse(&s.hot, TestToken::Usdt, &fresh).await;
    assert!(batch_fresh.success && batch_again.success);
    let per_fresh = batch_fresh.gas_used / k;
    let per_again = batch_again.gas_used / k;
    eprintln!(
        "gas a transfer: fresh {} single, {per_fresh} batched; known {} single, {per_again} batched",
        single[0], single[1]
    );
    assert!(
        per_fresh * 10 <= single[0] * 6,
        "fresh recipients: {per_fresh} gas a transfer batched against {} single",
        single[0]
    );
    assert!(
        per_again * 10 <= single[1] * 6,
        "known recipients: {per_again} gas a transfer batched against {} single",
        single[1]
    );
}
