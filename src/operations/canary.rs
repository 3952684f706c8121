//! Canary payouts: one unit of a network's canary asset from its canary wallet to its canary
//! address, through the whole pipeline (request, policy, signing, broadcast, confirmation, the
//! ledger). Green when it confirms within the timeout; red when it fails, is cancelled, or is
//! still not confirmed then (a canary wallet without gas, safe-mode, a node down). The launch
//! plan wants one green per network before go-live.
//!
//! A canary payout draws on the network's canary account (owner `canary:<network>`, an
//! operating account allowed to go negative: its balance is what canaries have cost), and the
//! engines send it only from a canary wallet, never from a hot wallet, and send nothing else
//! from a canary wallet. Runs are rows in the database: a pass over the unfinished ones records
//! each result once, across restarts and instances. At most one canary per network runs at a
//! time.

use super::{CanaryResult, CanaryRun};
use crate::clock::DynClock;
use crate::domain::{Amount, PayoutId, UnixMicros};
use crate::ledger::{Ledger, LedgerError};
use crate::metrics::CanaryMetrics;
use crate::payouts::networks::PayoutNetworks;
use crate::payouts::{PayoutState, request_command};
use crate::store::{DynStore, LeaseStore, OperationsStore, PayoutStore, StoreError};
use crate::wallets::{Wallet, WalletRole};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The account owner canary payouts of `network` are drawn on.
pub fn account_owner(network: &str) -> String {
    format!("canary:{network}")
}

#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    #[error("network {0:?} is not configured for payouts")]
    UnknownNetwork(String),
    #[error("{network} has no canary: {why}")]
    NotConfigured { network: String, why: String },
    #[error("a canary of {network} is still running (payout {payout})")]
    Running { network: String, payout: PayoutId },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the ledger refused the canary payout: {0}")]
    Ledger(LedgerError),
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Scheduled canaries: one per network this often; None: only on request.
    pub interval: Option<Duration>,
    /// A canary not confirmed this long after it started is red.
    pub timeout: Duration,
    /// The asset code canaries pay (1 unit).
    pub asset: String,
}

impl Settings {
    pub fn from_config(c: &crate::config::CanaryConfig) -> Self {
        Self {
            interval: (c.interval_seconds > 0).then(|| Duration::from_secs(c.interval_seconds)),
            timeout: Duration::from_secs(c.timeout_seconds),
            asset: c.asset.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Canaries {
    ledger: Ledger,
    runs: Arc<dyn OperationsStore>,
    payouts: Arc<dyn PayoutStore>,
    /// The scheduler's lease: one instance of several starts a due canary.
    leases: Arc<dyn LeaseStore>,
    clock: DynClock,
    networks: Arc<PayoutNetworks>,
    /// Network → its canary address (canonical).
    addresses: HashMap<String, String>,
    /// Networks with at least one canary wallet.
    wallets: Vec<String>,
    settings: Settings,
    metrics: CanaryMetrics,
}

impl Canaries {
    pub fn new(
        ledger: Ledger,
        store: &DynStore,
        clock: DynClock,
        networks: Arc<PayoutNetworks>,
        config: &crate::config::Config,
        wallets: &[Arc<Wallet>],
        metrics: CanaryMetrics,
    ) -> Self {
        Self {
            ledger,
            runs: store.clone(),
            payouts: store.clone(),
            leases: store.clone(),
            clock,
            networks,
            addresses: config
                .networks
                .iter()
                .filter_map(|n| Some((n.name.clone(), n.canary_address.clone()?)))
                .collect(),
            wallets: wallets
                .iter()
                .filter(|w| w.role == WalletRole::Canary)
                .map(|w| w.network.clone())
                .collect(),
            settings: Settings::from_config(&config.canary),
            metrics,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Networks a canary can run on: a canary address, a canary wallet and the canary asset.
    pub fn configured(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .addresses
            .keys()
            .filter(|n| self.check(n).is_ok())
            .cloned()
            .collect();
        names.sort();
        names
    }

    fn check(
        &self,
        network: &str,
    ) -> Result<(&String, &crate::payouts::networks::PayoutToken), CanaryError> {
        let n = self
            .networks
            .get(network)
            .ok_or_else(|| CanaryError::UnknownNetwork(network.to_owned()))?;
        let missing = |why: &str| CanaryError::NotConfigured {
            network: network.to_owned(),
            why: why.to_owned(),
        };
        let address = self
            .addresses
            .get(network)
            .ok_or_else(|| missing("no canary_address in its [[networks]] entry"))?;
        if !self.wallets.iter().any(|w| w == network) {
            return Err(missing("no wallet with role = \"canary\" in wallets/"));
        }
        let token = n
            .tokens
            .get(&self.settings.asset)
            .ok_or_else(|| missing(&format!("it pays no {}", self.settings.asset)))?;
        Ok((address, token))
    }

    /// Starts a canary on `network` for the actor of `audit` (written with the payout): the
    /// 1-unit payout is held and queued like any other, and the run recorded. Refused while the
    /// previous one still runs.
    pub async fn start(
        &self,
        network: &str,
        audit: crate::store::AuditRecord,
    ) -> Result<CanaryRun, CanaryError> {
        let actor = audit.actor.clone();
        let actor = actor.as_str();
        let (address, token) = self.check(network)?;
        if let Some(last) = self.runs.canary_runs(network, 1).await?.pop()
            && last.result.is_none()
        {
            return Err(CanaryError::Running {
                network: network.to_owned(),
                payout: last.payout,
            });
        }
        let account = self.ledger.canary_account(&token.spec.key).await?;
        let one = Amount::new(10i128.pow(u32::from(token.spec.decimals))).map_err(|e| {
            CanaryError::NotConfigured {
                network: network.to_owned(),
                why: e.to_string(),
            }
        })?;
        let (payout, mut cmd) = request_command(
            token,
            crate::payouts::PayoutRequest {
                account,
                destination: address,
                amount: one,
                created_by: actor,
                reference: Some("canary".into()),
                metadata: Some(serde_json::json!({"canary": true})),
                company: None,
                cap: self.networks.cap(token),
            },
        );
        let run_id = uuid::Uuid::now_v7();
        cmd.idempotency_key = format!("canary:{network}:{run_id}");
        cmd.memo = Some(format!("canary payout on {network}"));
        cmd.actor = Some(actor.to_owned());
        cmd.audit = Some(crate::store::AuditRecord {
            target: format!("payout:{payout}"),
            ..audit
        });
        match self.ledger.post_one(cmd).await? {
            Ok(_) => {}
            Err(e) => return Err(CanaryError::Ledger(e)),
        }
        let run = CanaryRun {
            id: run_id,
            network: network.to_owned(),
            payout,
            started_by: actor.to_owned(),
            started_at: self.clock.now(),
            result: None,
            reason: None,
            finished_at: None,
        };
        self.runs.record_canary_start(&run).await?;
        tracing::info!(network, %payout, actor, "canary payout started");
        Ok(run)
    }

    /// Records the result of every unfinished run that has one: confirmed → green; failed,
    /// cancelled, rejected, or not confirmed within the timeout → red. Each result once.
    pub async fn finish_due(&self) -> Result<(), CanaryError> {
        for network in self.addresses.keys() {
            let Some(run) = self.runs.canary_runs(network, 1).await?.pop() else {
                continue;
            };
            if run.result.is_some() {
                self.show(&run);
                continue;
            }
            let payout = self.payouts.get_payout(run.payout).await?;
            let now = self.clock.now();
            let elapsed = Duration::from_micros(u64::try_from(now - run.started_at).unwrap_or(0));
            let last = payout
                .events
                .last()
                .map(|e| e.detail.clone())
                .unwrap_or_default();
            let (result, reason) = match payout.state {
                PayoutState::Confirmed => (
                    CanaryResult::Green,
                    format!("confirmed in {:.1} s", elapsed.as_secs_f64()),
                ),
                PayoutState::Failed | PayoutState::Cancelled | PayoutState::Rejected => (
                    CanaryResult::Red,
                    format!("the canary payout is {}: {last}", payout.state.as_str()),
                ),
                state if elapsed >= self.settings.timeout => (
                    CanaryResult::Red,
                    format!(
                        "not confirmed within {} s: the canary payout is {} ({last})",
                        self.settings.timeout.as_secs(),
                        state.as_str()
                    ),
                ),
                _ => continue,
            };
            if self
                .runs
                .finish_canary(run.id, result, &reason, now)
                .await?
            {
                match result {
                    CanaryResult::Green => tracing::info!(network, %reason, "canary green"),
                    CanaryResult::Red => tracing::error!(network, %reason, "canary red"),
                }
                self.metrics
                    .runs_total
                    .with_label_values(&[network.as_str(), result.as_str()])
                    .inc();
            }
            if let Some(done) = self.runs.canary_runs(network, 1).await?.pop() {
                self.show(&done);
            }
        }
        Ok(())
    }

    fn show(&self, run: &CanaryRun) {
        let (Some(result), Some(finished)) = (run.result, run.finished_at) else {
            return;
        };
        let network = [run.network.as_str()];
        self.metrics
            .last_result
            .with_label_values(&network)
            .set(i64::from(result == CanaryResult::Green));
        self.metrics
            .last_finished_seconds
            .with_label_values(&network)
            .set(finished as f64 / 1e6);
        self.metrics
            .last_duration_seconds
            .with_label_values(&network)
            .set((finished - run.started_at).max(0) as f64 / 1e6);
    }

    /// Waits up to `wait` for `run` to have a result; the run as it then is.
    pub async fn wait(&self, run: &CanaryRun, wait: Duration) -> Result<CanaryRun, CanaryError> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            self.finish_due().await?;
            let now = self
                .runs
                .canary_runs(&run.network, 20)
                .await?
                .into_iter()
                .find(|r| r.id == run.id)
                .unwrap_or_else(|| run.clone());
            if now.result.is_some() || tokio::time::Instant::now() >= until {
                return Ok(now);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The canary loop: records results every second and, with an interval, starts a canary
    /// on each configured network when the last one is that old (under the `canary` lease, so
    /// several instances start one between them).
    pub async fn run(
        self,
        instance: String,
        lease_ttl: Duration,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        loop {
            if let Err(e) = self.finish_due().await {
                tracing::warn!(error = %e, "canary pass failed; retrying");
            }
            if let Some(interval) = self.settings.interval {
                let ttl = i64::try_from(lease_ttl.as_micros()).unwrap_or(i64::MAX);
                let leased = self
                    .leases
                    .acquire_lease("canary", &instance, self.clock.now(), ttl)
                    .await
                    .ok()
                    .flatten()
                    .is_some();
                if leased && let Err(e) = self.schedule(interval).await {
                    tracing::warn!(error = %e, "scheduled canary could not start");
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn schedule(&self, interval: Duration) -> Result<(), CanaryError> {
        let every = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX);
        for network in self.configured() {
            let last: Option<UnixMicros> = self
                .runs
                .canary_runs(&network, 1)
                .await?
                .pop()
                .map(|r| r.started_at);
            if last.is_none_or(|at| self.clock.now() - at >= every) {
                let audit = crate::store::AuditRecord {
                    actor: "treasuryd-scheduler".into(),
                    role: crate::domain::Role::Admin,
                    action: "canary.run".into(),
                    target: String::new(),
                    reason: Some("scheduled canary".into()),
                    request_id: "canary-scheduler".into(),
                    at: self.clock.now(),
                    evidence: None,
                };
                match self.start(&network, audit).await {
                    Ok(_) | Err(CanaryError::Running { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}
