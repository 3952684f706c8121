//! `treasuryd demo`: a newcomer's tour on embedded defaults. A fresh SQLite database in a
//! temporary directory, a local anvil chain with the test tokens and the local Tron node
//! stand-in with its TRC-20 token, a hot and a canary wallet on each (anvil's public development
//! keys #1 and #2) and funded partners. Then, through the control API as a treasury desk would:
//! a canary payout per network, a split payout per network (approved by a second person), an
//! escrow deal through the happy path (its AUTO_APPROVE timer fires) and one through a dispute
//! resolved by an Operator, and an end-of-day session between two trust partners. It prints
//! what it does, then a summary whose balances are read from the ledger, and stays up until
//! Ctrl-C. Rather than wait days for a deal's timer or hours for a cut-off, the daemon's clock
//! skips ahead to it (`SkippingClock`), for every part of the daemon at once.

use crate::api::auth::{Caller, new_token};
use crate::app::App;
use crate::chains::evm::EvmClient;
use crate::chains::tron::TronAddress;
use crate::clock::{Clock, SkippingClock};
use crate::config::{Config, NetworkConfig};
use crate::dev::chain::{DevChain, TestToken};
use crate::dev::tron::DevTron;
use crate::domain::{Amount, AssetKey, Role};
use crate::ledger::{AccountKind, Command, NewAccount};
use crate::store::AuditRecord;
use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const HOT_KEY_VAR: &str = "TREASURYD_DEMO_HOT_KEY";
const CANARY_KEY_VAR: &str = "TREASURYD_DEMO_CANARY_KEY";

pub struct Demo {
    pub app: App,
    /// The daemon's clock: the tour skips it ahead to timers and cut-offs.
    pub clock: Arc<SkippingClock>,
    pub chain: DevChain,
    pub tron: DevTron,
    pub dir: PathBuf,
    pub admin_token: SecretString,
    pub trader_token: SecretString,
    /// Beta Logistics' trader in the tour's trust pair (a debt is recorded by its debtor).
    pub beta_trader_token: SecretString,
    pub approver_token: SecretString,
    pub operator_token: SecretString,
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
        let (hot, canary) = (chain.dev_key(1)?, chain.dev_key(2)?);
        for who in [hot.address(), canary.address()] {
            for token in [TestToken::Usdc, TestToken::Usdt] {
                chain.mint(token, who, 10_000_000_000_000).await?;
            }
        }
        // A block a second, final three blocks later (mainnet: 3 s and 19).
        let tron = DevTron::start(Duration::from_secs(1), 3)
            .await
            .context("starting the local Tron node stand-in")?;
        let (tron_hot, tron_canary) = (
            TronAddress::from_signer(&hot),
            TronAddress::from_signer(&canary),
        );
        for who in [&tron_hot, &tron_canary] {
            tron.fund_trx(who, 10_000_000_000);
            tron.mint(who, 10_000_000_000_000);
        }
        let canary_target = chain.dev_key(5)?;

        let mut c = Config::defaults();
        c.data_dir = dir.clone();
        c.server.listen = "127.0.0.1:0".parse()?;
        c.server.metrics_listen = "127.0.0.1:0".parse()?;
        c.wallets_dir = wallets_dir.clone();
        c.escrow.timer_poll_ms = 200;
        c.canary.interval_seconds = 0;
        c.canary.timeout_seconds = 60;
        c.pilot = Some(crate::scope::PilotScope {
            enabled: true,
            country_allowlist: vec!["MN".into()],
            category_allowlist: vec!["USED_CAR_PRIVATE".into()],
            template_version: "v1".into(),
        });
        let network = format!(
            "name = \"ethereum\"\nchain_id = {}\nrpc_urls = [\"{}\"]\nconfirmations = 1\napproval_threshold = \"100000\"\n\
             poll_interval_ms = 200\ncanary_address = \"{}\"\n\
             [[tokens]]\ncode = \"USDT\"\naddress = \"{}\"\ndecimals = 6\n[[tokens]]\ncode = \"USDC\"\naddress = \"{}\"\ndecimals = 6\n",
            chain.chain_id,
            chain.url,
            canary_target.address().to_checksum(None),
            chain.usdt.to_checksum(None),
            chain.usdc.to_checksum(None)
        );
        let tron_network = format!(
            "name = \"tron\"\nkind = \"tron\"\nrpc_urls = [\"{}\"]\napproval_threshold = \"100000\"\npoll_interval_ms = 500\n\
             canary_address = \"{}\"\n[[tokens]]\ncode = \"USDT\"\naddress = \"{}\"\ndecimals = 6\n",
            tron.url,
            TronAddress::from_signer(&canary_target).to_base58(),
            tron.token.to_base58()
        );
        c.networks = vec![
            toml::from_str::<NetworkConfig>(&network)?,
            toml::from_str::<NetworkConfig>(&tron_network)?,
        ];
        std::fs::write(
            wallets_dir.join("ethereum.toml"),
            format!(
                "# The demo's wallets: anvil's public development keys #1 (hot) and #2 (canary).\n\
                 [[wallets]]\nnetwork = \"ethereum\"\nrole = \"hot\"\naddress = \"{}\"\nkey_env = \"{HOT_KEY_VAR}\"\nmin_gas_wei = 10000000000000000\n\
                 [[wallets]]\nnetwork = \"ethereum\"\nrole = \"canary\"\naddress = \"{}\"\nkey_env = \"{CANARY_KEY_VAR}\"\n",
                hot.address().to_checksum(None),
                canary.address().to_checksum(None)
            ),
        )?;
        std::fs::write(
            wallets_dir.join("tron.toml"),
            format!(
                "# The same development keys on the Tron stand-in.\n\
                 [[wallets]]\nnetwork = \"tron\"\nrole = \"hot\"\naddress = \"{}\"\nkey_env = \"{HOT_KEY_VAR}\"\nmin_trx_sun = 100000000\n\
                 [[wallets]]\nnetwork = \"tron\"\nrole = \"canary\"\naddress = \"{}\"\nkey_env = \"{CANARY_KEY_VAR}\"\n",
                tron_hot.to_base58(),
                tron_canary.to_base58()
            ),
        )?;
        for (var, key) in [(HOT_KEY_VAR, &hot), (CANARY_KEY_VAR, &canary)] {
            c.secrets.insert(
                var.into(),
                SecretString::from(format!("0x{}", hex::encode(key.to_bytes()))),
            );
        }
        // The console's key, fresh for this demo (TOTP secrets derive from it).
        c.secrets.insert(
            c.console.secret_env.clone(),
            SecretString::from(hex::encode(crate::api::auth::random_bytes::<32>())),
        );
        crate::telemetry::init(&c.log);

        let (admin_token, trader_token, approver_token, operator_token) =
            (new_token(), new_token(), new_token(), new_token());
        let beta_trader_token = new_token();
        let callers = [
            (&approver_token, "demo-approver", Role::Approver),
            (&admin_token, "demo-admin", Role::Admin),
            (&trader_token, "demo-trader", Role::Trader),
            (&beta_trader_token, "demo-trader-beta", Role::Trader),
            (&operator_token, "demo-operator", Role::Operator),
        ]
        .into_iter()
        .map(|(token, name, role)| (token.clone(), Caller::staff(name, role)))
        .collect();
        let clock = SkippingClock::new();
        let app = App::build_with_clock(c, callers, clock.clone()).await?;
        let partner_account = funded_partner(&app, "acme", "ethereum").await?;
        let tron_partner_account = funded_partner(&app, "acme", "tron").await?;
        Ok(Self {
            app,
            clock,
            chain,
            tron,
            dir,
            admin_token,
            trader_token,
            beta_trader_token,
            approver_token,
            operator_token,
            partner_account,
            hot_wallet: hot.address().to_checksum(None),
            tron_partner_account,
            tron_hot_wallet: tron_hot.to_base58(),
        })
    }

    /// Where everything is and the tokens to call it with.
    pub fn where_things_are(&self) -> String {
        let api = self.app.api_addr();
        format!(
            "treasuryd demo\n\
             \x20 data directory : {dir}\n\
             \x20 database       : sqlite://{db}\n\
             \x20 control API    : http://{api}   (OpenAPI at http://{api}/openapi.json)\n\
             \x20 metrics        : http://{metrics}/metrics\n\
             \x20 admin console  : http://{api}/admin   (sign in with a token below; Admins and Approvers enrol TOTP)\n\
             \x20 local chain    : {chain} (anvil, chain id {chain_id}); USDT {usdt}, USDC {usdc}\n\
             \x20 hot wallet     : {hot} (10,000,000 USDT and USDC)\n\
             \x20 partner acme   : account {acct} with 1,000,000.000000 USDT\n\
             \x20 tron node      : {tron} (local stand-in, a block a second); USDT {tron_usdt}\n\
             \x20 tron wallet    : {tron_hot} (10,000,000 USDT, 10,000 TRX)\n\
             \x20 partner tron   : account {tron_acct} with 1,000,000.000000 USDT on tron\n\
             \x20 admin token    : {a}\n\
             \x20 trader token   : {t}\n\
             \x20 approver token : {p}\n\
             \x20 operator token : {o}\n\
             \x20 clock          : skips ahead to deal timers and EOD cut-offs in the tour\n",
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
            a = self.admin_token.expose_secret(),
            t = self.trader_token.expose_secret(),
            p = self.approver_token.expose_secret(),
            o = self.operator_token.expose_secret(),
        )
    }

    /// What to try by hand once the tour is done.
    pub fn try_it(&self) -> String {
        let api = self.app.api_addr();
        format!(
            "Try:\n\
             \x20 export A={a} T={t} P={p}\n\
             \x20 curl -s -H \"Authorization: Bearer $A\" http://{api}/v1/accounts/{acct}\n\
             \x20 curl -s -H \"Authorization: Bearer $T\" -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' \\\n\
             \x20   -d '{{\"account\":\"{acct}\",\"network\":\"ethereum\",\"asset\":\"USDT\",\"destination\":\"{evm_dest}\",\"amount\":\"600000\"}}' \\\n\
             \x20   http://{api}/v1/payouts\n\
             \x20 curl -s -H \"Authorization: Bearer $P\" -H 'Content-Type: application/json' -d '{{\"reason\":\"checked\"}}' \\\n\
             \x20   http://{api}/v1/payouts/<id>/approve      # then watch it confirm on the local chain\n\
             \x20 curl -s -H \"Authorization: Bearer $T\" -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-2' \\\n\
             \x20   -d '{{\"account\":\"{tron_acct}\",\"network\":\"tron\",\"asset\":\"USDT\",\"destination\":\"{tron_dest}\",\"amount\":\"25000\"}}' \\\n\
             \x20   http://{api}/v1/payouts                  # a TRC-20 payout, final once solidified\n\
             \x20 curl -s -H \"Authorization: Bearer $A\" -H 'Content-Type: application/json' -d '{{\"reason\":\"check\"}}' \\\n\
             \x20   http://{api}/v1/canary/tron               # a canary payout, green or red\n\
             \x20 curl -s -H \"Authorization: Bearer $A\" http://{api}/v1/journal\n\
             \n\
             Ctrl-C stops it; `TREASURYD__DATA_DIR={dir} treasuryd ledger verify` checks the ledger.\n",
            a = self.admin_token.expose_secret(),
            t = self.trader_token.expose_secret(),
            p = self.approver_token.expose_secret(),
            acct = self.partner_account,
            tron_acct = self.tron_partner_account,
            tron_dest = TronAddress::from_evm([0x2a; 20]).to_base58(),
            evm_dest = demo_destination(),
            dir = self.dir.display(),
        )
    }

    /// Serves, runs the tour while printing what happens, prints the summary, and keeps
    /// serving until `shutdown`.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        println!("{}", self.where_things_are());
        let try_it = self.try_it();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let api = format!("http://{}", self.app.api_addr());
        let Demo {
            app,
            clock,
            chain,
            tron,
            admin_token,
            trader_token,
            beta_trader_token,
            approver_token,
            operator_token,
            partner_account,
            tron_partner_account,
            ..
        } = self;
        let ledger = app.state().ledger.clone();
        let rest = Demo::describe_rest(&chain, &tron);
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let tour = Tour {
            http: reqwest::Client::new(),
            api,
            admin: admin_token.expose_secret().to_owned(),
            trader: trader_token.expose_secret().to_owned(),
            beta_trader: beta_trader_token.expose_secret().to_owned(),
            approver: approver_token.expose_secret().to_owned(),
            operator: operator_token.expose_secret().to_owned(),
            evm: EvmClient::new(&chain.url)?,
            chain: &chain,
            tron: &tron,
            clock,
            lines: Vec::new(),
            accounts: vec![partner_account, tron_partner_account],
        };
        match tour.run(&ledger).await {
            Ok(summary) => println!("{summary}"),
            Err(e) => println!("The tour stopped: {e:#}\n"),
        }
        println!("{rest}\n{try_it}");
        shutdown.await;
        let _ = stop.send(());
        server.await??;
        // The chains stop with their handles, after the daemon.
        drop((chain, tron));
        Ok(())
    }

    fn describe_rest(chain: &DevChain, tron: &DevTron) -> String {
        format!(
            "The chains stay up with the daemon: anvil at {}, the Tron stand-in at {}.\n",
            chain.url, tron.url
        )
    }
}

/// The tour's steps through the control API, and what it found.
struct Tour<'a> {
    http: reqwest::Client,
    api: String,
    admin: String,
    trader: String,
    beta_trader: String,
    approver: String,
    operator: String,
    evm: EvmClient,
    chain: &'a DevChain,
    tron: &'a DevTron,
    /// The daemon's clock, skipped ahead to timers and cut-offs.
    clock: Arc<SkippingClock>,
    /// What happened, for the summary.
    lines: Vec<String>,
    /// Accounts whose balances the summary shows.
    accounts: Vec<String>,
}

impl Tour<'_> {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(token);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{path} answered {status}: {v}");
        Ok(v)
    }

    async fn post(
        &self,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: Value,
    ) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, token, key, Some(body))
            .await
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, &self.admin, None, None)
            .await
    }

    /// Polls `path` until `field` is one of `states` (or 120 s).
    async fn until(&self, path: &str, field: &str, states: &[&str]) -> anyhow::Result<Value> {
        for _ in 0..1200 {
            let v = self.get(path).await?;
            if states.iter().any(|s| v[field] == *s) {
                return Ok(v);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("{path} did not reach {states:?}")
    }

    /// Skips the daemon's clock ahead to `at` (an RFC 3339 time from the API).
    fn skip_to(&self, what: &str, at: &Value) -> anyhow::Result<()> {
        let text = at
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no time for {what}: {at}"))?;
        let at = chrono::DateTime::parse_from_rfc3339(text)
            .with_context(|| format!("{what} at {text}"))?
            .timestamp_micros();
        let days = (at - self.clock.now()) as f64 / 86_400e6;
        println!("  the clock skips {days:.2} days ahead to {what} ({text})");
        self.clock.skip_to(at);
        Ok(())
    }

    fn step(&mut self, text: String) {
        println!("  {text}");
        self.lines.push(text);
    }

    async fn account(
        &mut self,
        owner: &str,
        network: &str,
        funds: &str,
        company: Option<&str>,
    ) -> anyhow::Result<String> {
        let a = self
            .post(
                "/v1/accounts",
                &self.admin,
                None,
                json!({"owner": owner, "network": network, "asset": "USDT", "kind": "partner",
                "company": company, "reason": "demo"}),
            )
            .await?;
        let id = a["id"].as_str().unwrap_or_default().to_owned();
        if funds != "0" {
            self.post(
                "/v1/deposits",
                &self.admin,
                Some(&format!("demo-fund-{owner}-{network}")),
                json!({"account": id, "amount": funds, "reason": "demo funding"}),
            )
            .await?;
        }
        self.accounts.push(id.clone());
        Ok(id)
    }

    async fn run(mut self, ledger: &crate::ledger::Ledger) -> anyhow::Result<String> {
        println!("The tour:");
        self.canaries().await?;
        self.payouts().await?;
        self.deals().await?;
        self.eod().await?;
        let mut out = String::from("\nSummary\n");
        for l in &self.lines {
            out.push_str(&format!("  - {l}\n"));
        }
        out.push_str("  balances in the ledger:\n");
        for id in &self.accounts {
            let a = self.get(&format!("/v1/accounts/{id}")).await?;
            out.push_str(&format!(
                "    account {id} {:<8} {}:{} available {} held {}\n",
                a["owner"].as_str().unwrap_or_default(),
                a["network"].as_str().unwrap_or_default(),
                a["asset"].as_str().unwrap_or_default(),
                a["available"].as_str().unwrap_or_default(),
                a["held"].as_str().unwrap_or_default(),
            ));
        }
        let report = crate::ledger::verify::verify(ledger.store()).await?;
        out.push_str(&format!(
            "  ledger verify: {} ({} journal transactions)\n",
            if report.is_clean() {
                "clean"
            } else {
                "PROBLEMS"
            },
            report.transactions
        ));
        out.push_str(&format!(
            "  API {api} (OpenAPI {api}/openapi.json); metrics as shown above\n",
            api = self.api
        ));
        Ok(out)
    }

    async fn canaries(&mut self) -> anyhow::Result<()> {
        for network in ["ethereum", "tron"] {
            let mut run = self
                .post(
                    &format!("/v1/canary/{network}?wait_seconds=25"),
                    &self.operator,
                    None,
                    json!({"reason": "demo: go-live check"}),
                )
                .await?;
            if run.get("result").is_none() {
                run = self.wait_canary(network).await?;
            }
            self.step(format!(
                "canary {network}: {} ({})",
                run["result"].as_str().unwrap_or("?"),
                run["reason"].as_str().unwrap_or_default()
            ));
        }
        Ok(())
    }

    async fn wait_canary(&self, network: &str) -> anyhow::Result<Value> {
        for _ in 0..600 {
            let status = self.get(&format!("/v1/canary/{network}")).await?;
            if status["runs"][0].get("result").is_some() {
                return Ok(status["runs"][0].clone());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the {network} canary has no result")
    }

    async fn payouts(&mut self) -> anyhow::Result<()> {
        let evm_to = demo_destination();
        let tron_to = TronAddress::from_evm([0x2a; 20]);
        for (network, account, to, amount) in [
            (
                "ethereum",
                self.accounts[0].clone(),
                evm_to.to_owned(),
                "600000",
            ),
            (
                "tron",
                self.accounts[1].clone(),
                tron_to.to_base58(),
                "250000",
            ),
        ] {
            let p = self
                .post("/v1/payouts", &self.trader, Some(&format!("demo-payout-{network}")), json!({"account": account, "network": network, "asset": "USDT", "destination": to, "amount": amount, "reference": "demo"}))
                .await?;
            let id = p["id"].as_str().unwrap_or_default().to_owned();
            println!(
                "  payout of {amount} USDT on {network}: {} transfers under the cap, {}",
                p["chunks"].as_array().map_or(0, Vec::len),
                p["state"].as_str().unwrap_or_default()
            );
            self.post(
                &format!("/v1/payouts/{id}/approve"),
                &self.approver,
                None,
                json!({"reason": "demo: second pair of eyes"}),
            )
            .await?;
            let done = self
                .until(
                    &format!("/v1/payouts/{id}"),
                    "state",
                    &["confirmed", "failed"],
                )
                .await?;
            let on_chain = match network {
                "ethereum" => crate::domain::format_units(
                    i128::try_from(
                        self.evm
                            .token_balance(self.chain.usdt, evm_to.parse()?)
                            .await?,
                    )
                    .unwrap_or(-1),
                    6,
                ),
                _ => crate::domain::format_units(
                    i128::try_from(self.tron.token_balance(&tron_to)).unwrap_or(-1),
                    6,
                ),
            };
            let chunks: Vec<&str> = done["chunks"]
                .as_array()
                .map(|c| c.iter().filter_map(|c| c["amount"].as_str()).collect())
                .unwrap_or_default();
            self.step(format!(
                "payout {amount} USDT on {network}: {} in {} transfer(s) ({}) after approval; {to} holds {on_chain} on chain",
                done["state"].as_str().unwrap_or_default(),
                chunks.len(),
                chunks.join(" + ")
            ));
        }
        Ok(())
    }

    async fn evidence(&self, deal: &str, kind: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .post(format!("{}/v1/deals/{deal}/evidence", self.api))
            .bearer_auth(&self.trader)
            .header("content-type", "image/png")
            .header("x-evidence-type", kind)
            .body(format!("demo {kind} of deal {deal}"))
            .send()
            .await?;
        let v: Value = r.json().await?;
        v["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("evidence upload: {v}"))
    }

    async fn deals(&mut self) -> anyhow::Result<()> {
        let buyer = self.account("buyer", "ethereum", "20000", None).await?;
        let seller = self.account("seller", "ethereum", "0", None).await?;
        // Happy path: funded, delivered, and approved by its AUTO_APPROVE timer.
        let happy = self
            .post("/v1/deals", &self.trader, None, json!({"buyer_account": buyer, "seller_account": seller, "country": "MN", "category": "USED_CAR_PRIVATE", "amount": "10000", "reference": "demo car 1"}))
            .await?;
        let id = happy["id"].as_str().unwrap_or_default().to_owned();
        self.post(
            &format!("/v1/deals/{id}/fund"),
            &self.trader,
            None,
            json!({}),
        )
        .await?;
        let photo = self.evidence(&id, "PHOTO").await?;
        self.post(
            &format!("/v1/deals/{id}/deliver"),
            &self.trader,
            None,
            json!({"evidence": [photo]}),
        )
        .await?;
        println!("  deal {id}: funded, delivered (85% released), inspection timer set");
        let timer = self.get(&format!("/v1/deals/{id}")).await?;
        self.skip_to("the AUTO_APPROVE timer", &timer["timers"][0]["due_at"])?;
        let done = self
            .until(&format!("/v1/deals/{id}"), "state", &["SETTLED"])
            .await?;
        self.step(format!(
            "deal {id} (MN used car, 10000 USDT): {} after AUTO_APPROVE fired; released {}",
            done["state"].as_str().unwrap_or_default(),
            done["money"]["released"].as_str().unwrap_or_default()
        ));
        // A dispute resolved by an Operator with an offset within the reason code's cap.
        let disputed = self
            .post("/v1/deals", &self.trader, None, json!({"buyer_account": buyer, "seller_account": seller, "country": "MN", "category": "USED_CAR_PRIVATE", "amount": "8000", "reference": "demo car 2"}))
            .await?;
        let id = disputed["id"].as_str().unwrap_or_default().to_owned();
        self.post(
            &format!("/v1/deals/{id}/fund"),
            &self.trader,
            None,
            json!({}),
        )
        .await?;
        let photo = self.evidence(&id, "PHOTO").await?;
        self.post(
            &format!("/v1/deals/{id}/deliver"),
            &self.trader,
            None,
            json!({"evidence": [photo]}),
        )
        .await?;
        let report = self.evidence(&id, "INSPECTION_REPORT").await?;
        self.post(&format!("/v1/deals/{id}/issue"), &self.trader, None, json!({"reason_code": "MILEAGE_MISMATCH", "detail": "odometer shows 40,000 km more", "evidence": [report]}))
            .await?;
        println!(
            "  deal {id}: delivered, then an issue raised (MILEAGE_MISMATCH); DISPUTE_TTL set"
        );
        let resolved = self
            .post(&format!("/v1/deals/{id}/resolve"), &self.operator, None, json!({"outcome": "OFFSET", "offset": "500", "reason": "demo: mileage verified at the inspection centre"}))
            .await?;
        self.step(format!(
            "deal {id} (MN used car, 8000 USDT): disputed and resolved by an Operator with an OFFSET of 500 to the buyer: {}",
            resolved["state"].as_str().unwrap_or_default()
        ));
        Ok(())
    }

    async fn eod(&mut self) -> anyhow::Result<()> {
        let mut companies = Vec::new();
        for (name, tier) in [("Alpha Trading", "S"), ("Beta Logistics", "M")] {
            let c = self
                .post(
                    "/v1/companies",
                    &self.admin,
                    None,
                    json!({"name": name, "tier": tier, "reason": "demo partner"}),
                )
                .await?;
            companies.push(c["id"].as_str().unwrap_or_default().to_owned());
        }
        let a = self
            .account("alpha", "ethereum", "5000", Some(&companies[0]))
            .await?;
        let b = self
            .account("beta", "ethereum", "5000", Some(&companies[1]))
            .await?;
        for (company, user, desk) in [
            (&companies[0], "demo-trader", "Alpha's desk"),
            (&companies[1], "demo-trader-beta", "Beta's desk"),
        ] {
            self.post(
                &format!("/v1/companies/{company}/members"),
                &self.admin,
                None,
                json!({"user": user, "role": "trader", "reason": desk}),
            )
            .await?;
        }
        let pair = self
            .post("/v1/trust/pairs", &self.admin, None, json!({"company_a": companies[0], "company_b": companies[1], "account_a": a, "account_b": b,
                "limit_a_to_b": "2000", "limit_b_to_a": "2000", "timezone": "Europe/Warsaw", "cutoff": "17:00", "mode": "partial", "reason": "demo pair"}))
            .await?;
        let pair_id = pair["id"].as_str().unwrap_or_default().to_owned();
        let session = pair["open_session"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        // Each debt is recorded by the company that owes it.
        for (debtor, trader, amount, key) in [
            (&companies[0], &self.trader, "500", "demo-ob-1"),
            (&companies[1], &self.beta_trader, "150.25", "demo-ob-2"),
        ] {
            self.post(
                &format!("/v1/trust/pairs/{pair_id}/obligations"),
                trader,
                Some(key),
                json!({"debtor": debtor, "amount": amount, "reference": key}),
            )
            .await?;
        }
        println!("  trust pair {pair_id}: Alpha owes 500, Beta owes 150.25 today");
        self.skip_to(
            "the 17:00 Warsaw cut-off",
            &pair["open_session"]["cutoff_at"],
        )?;
        let s = self
            .until(
                &format!("/v1/trust/sessions/{session}"),
                "state",
                &["settled", "unsettled"],
            )
            .await?;
        self.step(format!(
            "EOD session {session}: closed at its cut-off, gross 500.000000 and 150.250000 netted to {}, {} settled ({}) from Alpha to Beta",
            s["net_amount"].as_str().unwrap_or_default(),
            s["settled_amount"].as_str().unwrap_or_default(),
            s["outcome"].as_str().unwrap_or_default()
        ));
        Ok(())
    }
}

/// Where the tour's payouts go: an address no wallet of the demo holds.
fn demo_destination() -> String {
    alloy::primitives::Address::from([0x2a; 20]).to_checksum(None)
}

/// A partner `owner` on `network` with 1,000,000 USDT to pay out from.
async fn funded_partner(app: &App, owner: &str, network: &str) -> anyhow::Result<String> {
    let ledger = &app.state().ledger;
    let asset = AssetKey::new(network, "USDT");
    let audit = AuditRecord {
        actor: "demo".into(),
        role: Role::Admin,
        action: "account.create".into(),
        target: String::new(),
        reason: Some("demo set-up".into()),
        request_id: String::new(),
        at: app.state().clock.now(),
        evidence: None,
    };
    let account = ledger
        .store()
        .create_account(
            &NewAccount {
                owner: owner.into(),
                company: None,
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
