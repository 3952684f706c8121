//! A local EVM dev chain for the demo and the tests: anvil as pinned in `tools/package.json`
//! (installed with `npm ci` on first use) and the test tokens compiled into `contracts/out/`.
//! Nothing here is used by `treasuryd run`.

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::SolCall;
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

const USDC_BIN: &str = include_str!("../../contracts/out/TestUSDC.bin");
const USDT_BIN: &str = include_str!("../../contracts/out/TestUSDT.bin");
const DISPERSE_BIN: &str = include_str!("../../contracts/out/Disperse.bin");

sol! {
    /// Owner functions of the test tokens in `contracts/`.
    interface TestTokenAdmin {
        function mint(address to, uint256 value) external;
        function issue(address to, uint256 value) external;
        function pause() external;
        function unpause() external;
        function addBlackList(address user) external;
    }
}

fn tools_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools")
}

/// The anvil binary from `tools/node_modules`, running `npm ci` there first if it is missing.
pub fn anvil_binary() -> anyhow::Result<PathBuf> {
    static INSTALL: Mutex<()> = Mutex::new(());
    let binary = tools_dir().join("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    let _once = INSTALL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !binary.exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(tools_dir())
            .status()
            .context("running `npm ci` in tools/ to install anvil (is Node.js installed?)")?;
        if !status.success() || !binary.exists() {
            bail!(
                "`npm ci` in {} did not install anvil at {}",
                tools_dir().display(),
                binary.display()
            );
        }
    }
    Ok(binary)
}

/// Which test token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TestToken {
    /// Standard ERC-20, 6 decimals, `transfer` returns bool.
    Usdc,
    /// USDT-style: `transfer` returns nothing; can be paused and blacklist addresses.
    Usdt,
}

/// A running anvil with both test tokens deployed by its first dev account.
pub struct DevChain {
    pub anvil: AnvilInstance,
    pub url: String,
    pub chain_id: u64,
    pub usdc: Address,
    pub usdt: Address,
    /// Anvil's first well-known dev account: deploys and owns the tokens.
    pub owner: PrivateKeySigner,
    owner_provider: DynProvider,
}

impl DevChain {
    /// Starts anvil (extra command-line arguments allowed, e.g. `--no-mining`) and deploys the
    /// tokens.
    pub async fn start(args: &[&str]) -> anyhow::Result<Self> {
        let anvil = Anvil::new()
            .path(anvil_binary()?)
            .args(args.iter().copied())
            .try_spawn()?;
        let owner: PrivateKeySigner = anvil
            .keys()
            .first()
            .context("anvil has no dev accounts")?
            .clone()
            .into();
        let url = anvil.endpoint_url();
        let owner_provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(owner.clone()))
            .connect_http(url.clone())
            .erased();
        let chain_id = anvil.chain_id();
        let mut chain = Self {
            url: url.to_string(),
            anvil,
            chain_id,
            usdc: Address::ZERO,
            usdt: Address::ZERO,
            owner,
            owner_provider,
        };
        chain.usdc = chain.deploy(USDC_BIN).await.context("deploying TestUSDC")?;
        chain.usdt = chain.deploy(USDT_BIN).await.context("deploying TestUSDT")?;
        Ok(chain)
    }

    /// The anvil dev key at `index` (0 owns the tokens).
    pub fn dev_key(&self, index: usize) -> anyhow::Result<PrivateKeySigner> {
        Ok(self
            .anvil
            .keys()
            .get(index)
            .context("no such dev account")?
            .clone()
            .into())
    }

    pub fn token(&self, token: TestToken) -> Address {
        match token {
            TestToken::Usdc => self.usdc,
            TestToken::Usdt => self.usdt,
        }
    }

    /// Deploys `contracts/Disperse.sol` (on request: most tests never batch, and an extra
    /// block at start would move the block numbers they expect).
    pub async fn deploy_disperse(&self) -> anyhow::Result<Address> {
        self.deploy(DISPERSE_BIN)
            .await
            .context("deploying Disperse")
    }

    async fn deploy(&self, bin_hex: &str) -> anyhow::Result<Address> {
        let code: Bytes = hex::decode(bin_hex.trim())?.into();
        let tx = TransactionRequest::default().with_deploy_code(code);
        let receipt = self
            .owner_provider
            .send_transaction(tx)
            .await?
            .get_receipt()
            .await?;
        receipt
            .contract_address
            .context("deployment has no contract address")
    }

    async fn owner_call(&self, token: Address, data: Vec<u8>) -> anyhow::Result<()> {
        let tx = TransactionRequest::default()
            .with_to(token)
            .with_input(data);
        let receipt = self
            .owner_provider
            .send_transaction(tx)
            .await?
            .get_receipt()
            .await?;
        if !receipt.status() {
            bail!("owner call to {token} reverted");
        }
        Ok(())
    }

    /// The token owner's next nonce on the chain as mined (its pending transactions aside).
    pub async fn owner_nonce(&self) -> anyhow::Result<u64> {
        let owner = self.dev_key(0)?.address();
        Ok(self
            .owner_provider
            .get_transaction_count(owner)
            .latest()
            .await?)
    }

    /// Sends a mint of `units` of `token` to `to` with the owner's `nonce`, without waiting
    /// for it to be mined (for tests that mine blocks by hand; anvil's own pending nonce can
    /// count transactions a reorg dropped); returns its hash.
    pub async fn send_mint(
        &self,
        token: TestToken,
        to: Address,
        units: u128,
        nonce: u64,
    ) -> anyhow::Result<alloy::primitives::B256> {
        let value = U256::from(units);
        let data = match token {
            TestToken::Usdc => TestTokenAdmin::mintCall { to, value }.abi_encode(),
            TestToken::Usdt => TestTokenAdmin::issueCall { to, value }.abi_encode(),
        };
        let tx = TransactionRequest::default()
            .with_to(self.token(token))
            .with_input(data)
            .with_gas_limit(200_000)
            .with_nonce(nonce);
        Ok(*self.owner_provider.send_transaction(tx).await?.tx_hash())
    }

    /// The signed bytes of a transaction the node knows (eth_getRawTransactionByHash).
    pub async fn raw_transaction(&self, hash: alloy::primitives::B256) -> anyhow::Result<Bytes> {
        self.owner_provider
            .raw_request::<_, Option<Bytes>>("eth_getRawTransactionByHash".into(), (hash,))
            .await?
            .with_context(|| format!("the node does not know {hash}"))
    }

    /// Replaces the last `depth` blocks with as many new ones (anvil_reorg), as a competing
    /// branch would: the transactions in them are gone unless listed in `reincluded`, each
    /// as its signed bytes with the offset of the new block (0 = the first) to put it in.
    pub async fn reorg(&self, depth: u64, reincluded: &[(Bytes, u64)]) -> anyhow::Result<()> {
        self.owner_provider
            .raw_request::<_, ()>("anvil_reorg".into(), (depth, reincluded.to_vec()))
            .await?;
        Ok(())
    }

    /// Creates `units` base units of `token` in `to`'s balance.
    pub async fn mint(&self, token: TestToken, to: Address, units: u128) -> anyhow::Result<()> {
        let value = U256::from(units);
        let data = match token {
            TestToken::Usdc => TestTokenAdmin::mintCall { to, value }.abi_encode(),
            TestToken::Usdt => TestTokenAdmin::issueCall { to, value }.abi_encode(),
        };
        self.owner_call(self.token(token), data).await
    }

    /// Pauses the USDT-style token: every transfer reverts until `unpause`.
    pub async fn pause_usdt(&self, paused: bool) -> anyhow::Result<()> {
        let data = if paused {
            TestTokenAdmin::pauseCall {}.abi_encode()
        } else {
            TestTokenAdmin::unpauseCall {}.abi_encode()
        };
        self.owner_call(self.usdt, data).await
    }

    pub async fn blacklist_usdt(&self, user: Address) -> anyhow::Result<()> {
        self.owner_call(
            self.usdt,
            TestTokenAdmin::addBlackListCall { user }.abi_encode(),
        )
        .await
    }

    /// Sets the native balance of `who` (anvil_setBalance).
    pub async fn set_native_balance(&self, who: Address, wei: U256) -> anyhow::Result<()> {
        self.owner_provider
            .raw_request::<_, ()>("anvil_setBalance".into(), (who, wei))
            .await?;
        Ok(())
    }

    /// Switches automatic mining on or off (evm_setAutomine).
    pub async fn set_automine(&self, on: bool) -> anyhow::Result<()> {
        self.owner_provider
            .raw_request::<_, ()>("evm_setAutomine".into(), (on,))
            .await?;
        Ok(())
    }

    /// Mines `blocks` blocks now (anvil_mine).
    pub async fn mine(&self, blocks: u64) -> anyhow::Result<()> {
        self.owner_provider
            .raw_request::<_, ()>("anvil_mine".into(), (U256::from(blocks),))
            .await?;
        Ok(())
    }

    /// Remembers the chain as it is now (evm_snapshot), for `revert_to`.
    pub async fn snapshot(&self) -> anyhow::Result<U256> {
        Ok(self
            .owner_provider
            .raw_request::<_, U256>("evm_snapshot".into(), ())
            .await?)
    }

    /// Takes the chain back to a snapshot (evm_revert): every block since is gone, as in a
    /// reorg to a shorter branch.
    pub async fn revert_to(&self, snapshot: U256) -> anyhow::Result<()> {
        let done = self
            .owner_provider
            .raw_request::<_, bool>("evm_revert".into(), (snapshot,))
            .await?;
        anyhow::ensure!(done, "evm_revert refused snapshot {snapshot}");
        Ok(())
    }
}
