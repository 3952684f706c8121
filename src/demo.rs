//! `treasuryd demo`: the daemon on embedded defaults for a first look. A fresh SQLite database
//! in a temporary directory, a local anvil chain with the test tokens and the local Tron node
//! stand-in with its TRC-20 token, a funded hot wallet on each (anvil's public development key
//! #1), a funded partner account on each, and tokens for an Admin, a Trader and an Approver;
//! then it prints where everything is and what to try.

use crate::api::auth::{Caller, new_token};
use crate::app::App;
use crate::chains::tron::TronAddress;
use crate::config::{Config, NetworkConfig};
use crate::devchain::{DevChain, TestToken};
use crate::devtron::DevTron;
use crate::domain::{Amount, AssetKey, Role};
use crate::ledger::{AccountKind, Command, NewAccount};
use crate::store::AuditRecord;
use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use std::path::PathBuf;

const HOT_KEY_VAR: &str = "TREASURYD_DEMO_HOT_KEY";

pub struct Demo {
    pub app: App,
    pub chain: DevChain,
    pub tron: DevTron,
    pub dir: PathBuf,
    pub admin_token: SecretString,
    pub trader_token: SecretString,
    pub approver_token: SecretString,
    pub partner_account: String,
    pub hot_wallet: String,
    pub tron_partner_account: String,
    pub tron_hot_wallet: String,
}

impl Demo {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("treasuryd-demo-{}", uuid::Uuid::now_v7()));
        let wallets_dir = dir.join("wallets");
        std::fs::create_dir_all(&wallets_dir)?;

        let chain = DevChain::start(&[])
            .await
            .context("starting the local anvil chain")?;
        let hot = chain.dev_key(1)?;
        for token in [TestToken::Usdc, TestToken::Usdt] {
            chain.mint(token, hot.address(), 10_000_000_000_000).await?;
        }
        // A block a second, final three blocks later (mainnet: 3 s and 19).
        let tron = DevTron::start(std::time::Duration::from_secs(1), 3)
            .await
            .context("starting the local Tron node stand-in")?;
        let tron_hot = TronAddress::from_signer(&hot);
        tron.fund_trx(&tron_hot, 10_000_000_000);
        tron.mint(&tron_hot, 10_000_000_000_000);

        let mut c = Config::defaults();
        c.data_dir = dir.clone();
        c.server.listen = "127.0.0.1:0".parse()?;
        c.server.metrics_listen = "127.0.0.1:0".parse()?;
        c.wallets_dir = wallets_dir.clone();
        let network = format!(
            "name = \"ethereum\"\nchain_id = {}\nrpc_urls = [\"{}\"]\nconfirmations = 1\napproval_threshold = \"100000\"\n\
             [[tokens]]\ncode = \"USDT\"\naddress = \"{}\"\ndecimals = 6\n[[tokens]]\ncode = \"USDC\"\naddress = \"{}\"\ndecimals = 6\n",
            chain.chain_id,
            chain.url,
            chain.usdt.to_checksum(None),
            chain.usdc.to_checksum(None)
        );
        let tron_network = format!(
            "name = \"tron\"\nkind = \"tron\"\nrpc_urls = [\"{}\"]\napproval_threshold = \"100000\"\npoll_interval_ms = 500\n\
             [[tokens]]\ncode = \"USDT\"\naddress = \"{}\"\ndecimals = 6\n",
            tron.url,
            tron.token.to_base58()
        );
        c.networks = vec![
            toml::from_str::<NetworkConfig>(&network)?,
            toml::from_str::<NetworkConfig>(&tron_network)?,
        ];
        std::fs::write(
            wallets_dir.join("ethereum.toml"),
            format!(
                "# The demo's hot wallet: anvil's public development key #1.\n[[wallets]]\nnetwork = \"ethereum\"\nrole = \"hot\"\n\
                 address = \"{}\"\nkey_env = \"{HOT_KEY_VAR}\"\nmin_gas_wei = 10000000000000000\n",
                hot.address().to_checksum(None)
            ),
        )?;
        std::fs::write(
            wallets_dir.join("tron.toml"),
            format!(
                "# The same development key on the Tron stand-in.\n[[wallets]]\nnetwork = \"tron\"\nrole = \"hot\"\n\
                 address = \"{}\"\nkey_env = \"{HOT_KEY_VAR}\"\nmin_trx_sun = 100000000\n",
                tron_hot.to_base58()
            ),
        )?;
        c.secrets.insert(
            HOT_KEY_VAR.into(),
            SecretString::from(format!("0x{}", hex::encode(hot.to_bytes()))),
        );
        crate::telemetry::init(&c.log);

        let admin_token = new_token();
        let trader_token = new_token();
        let approver_token = new_token();
        let callers = vec![
            (
                approver_token.clone(),
                Caller {
                    name: "demo-approver".into(),
                    role: Role::Approver,
                },
            ),
            (
                admin_token.clone(),
                Caller {
                    name: "demo-admin".into(),
                    role: Role::Admin,
                },
            ),
            (
                trader_token.clone(),
                Caller {
                    name: "demo-trader".into(),
                    role: Role::Trader,
                },
            ),
        ];
        let app = App::build(c, callers).await?;

        let partner_account = funded_partner(&app, "ethereum").await?;
        let tron_partner_account = funded_partner(&app, "tron").await?;
        Ok(Self {
            app,
            chain,
            tron,
            dir,
            admin_token,
            trader_token,
            approver_token,
            partner_account,
            hot_wallet: hot.address().to_checksum(None),
            tron_partner_account,
            tron_hot_wallet: tron_hot.to_base58(),
        })
    }

    /// What to look at and what to try.
    pub fn tour(&self) -> String {
        let api = self.app.api_addr();
        let a = self.admin_token.expose_secret();
        let t = self.trader_token.expose_secret();
        let p = self.approver_token.expose_secret();
        format!(
            "treasuryd demo\n\
             \x20 data directory : {dir}\n\
             \x20 database       : sqlite://{db}\n\
             \x20 control API    : http://{api}   (OpenAPI at http://{api}/openapi.json)\n\
             \x20 metrics        : http://{metrics}/metrics\n\
             \x20 local chain    : {chain} (anvil, chain id {chain_id}); USDT {usdt}, USDC {usdc}\n\
             \x20 hot wallet     : {hot} (10,000,000 USDT and USDC)\n\
             \x20 partner acme   : account {acct} with 1,000,000.000000 USDT\n\
             \x20 tron node      : {tron} (local stand-in, a block a second); USDT {tron_usdt}\n\
             \x20 tron wallet    : {tron_hot} (10,000,000 USDT, 10,000 TRX)\n\
             \x20 partner tron   : account {tron_acct} with 1,000,000.000000 USDT on tron\n\
             \x20 admin token    : {a}\n\
             \x20 trader token   : {t}\n\
             \x20 approver token : {p}\n\
             \n\
             Try:\n\
             \x20 export A={a} T={t} P={p}\n\
             \x20 curl -s -H \"Authorization: Bearer $A\" http://{api}/v1/accounts/{acct}\n\
             \x20 curl -s -H \"Authorization: Bearer $T\" -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' \\\n\
             \x20   -d '{{\"account\":\"{acct}\",\"network\":\"ethereum\",\"asset\":\"USDT\",\"destination\":\"0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC\",\"amount\":\"600000\"}}' \\\n\
             \x20   http://{api}/v1/payouts\n\
             \x20 curl -s -H \"Authorization: Bearer $A\" http://{api}/v1/payouts\n\
             \x20 curl -s -H \"Authorization: Bearer $P\" -H 'Content-Type: application/json' -d '{{\"reason\":\"checked\"}}' \\\n\
             \x20   http://{api}/v1/payouts/<id>/approve      # then watch it confirm on the local chain\n\
             \x20 curl -s -H \"Authorization: Bearer $T\" -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-2' \\\n\
             \x20   -d '{{\"account\":\"{tron_acct}\",\"network\":\"tron\",\"asset\":\"USDT\",\"destination\":\"{tron_dest}\",\"amount\":\"25000\"}}' \\\n\
             \x20   http://{api}/v1/payouts                  # a TRC-20 payout, final once solidified\n\
             \x20 curl -s -H \"Authorization: Bearer $A\" http://{api}/v1/journal\n\
             \n\
             Ctrl-C stops it; `TREASURYD__DATA_DIR={dir} treasuryd ledger verify` checks the ledger.\n",
            dir = self.dir.display(),
            db = self.dir.join("treasuryd.db").display(),
            metrics = self.app.metrics_addr(),
            chain = self.chain.url,
            chain_id = self.chain.chain_id,
            usdt = self.chain.usdt.to_checksum(None),
            usdc = self.chain.usdc.to_checksum(None),
            hot = self.hot_wallet,
            acct = self.partner_account,
            tron = self.tron.url,
            tron_usdt = self.tron.token.to_base58(),
            tron_hot = self.tron_hot_wallet,
            tron_acct = self.tron_partner_account,
            tron_dest = TronAddress::from_evm([0x2a; 20]).to_base58(),
        )
    }
}

/// A partner "acme" on `network` with 1,000,000 USDT to pay out from.
async fn funded_partner(app: &App, network: &str) -> anyhow::Result<String> {
    let ledger = &app.state().ledger;
    let asset = AssetKey::new(network, "USDT");
    let audit = AuditRecord {
        actor: "demo".into(),
        role: Role::Admin,
        action: "account.create".into(),
        target: String::new(),
        reason: Some("demo set-up".into()),
        request_id: String::new(),
        at: crate::store::now_micros(),
    };
    let account = ledger
        .store()
        .create_account(
            &NewAccount {
                owner: "acme".into(),
                asset: asset.clone(),
                kind: AccountKind::Partner,
                allow_negative: false,
            },
            &audit,
        )
        .await?;
    let mut funding = Command::new(
        format!("demo:funding:{network}"),
        asset,
        ledger.deposit(&account, Amount::new(1_000_000_000_000)?)?,
    );
    funding.memo = Some("demo funding".into());
    ledger.post_one(funding).await??;
    Ok(account.id.to_string())
}
