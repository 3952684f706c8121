//! What every network's engine does the same way whatever the chain: the engine lease, safe-mode
//! on the engine's own findings, the rollout guardrail, the payouts-by-state and freeze gauges,
//! pause points for crash tests, and the end of a payout once its chunks are final.

use super::{EngineInstance, PayoutToken};
use crate::clock::DynClock;
use crate::clock::day_start;
use crate::config::NetworkConfig;
use crate::domain::{AccountId, Amount, AssetKey, PayoutId, UnixMicros};
use crate::ledger::Ledger;
use crate::metrics::PayoutMetrics;
use crate::payouts::policy::RolloutPhase;
use crate::payouts::{PayoutState, close_unpaid};
use crate::store::{
    AllowlistStore, ConflictKind, CustodyStore, LeaseStore, PayoutStore, StoreError,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the lease leaves this instance for the tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaseState {
    /// This instance runs the network; `fresh` when the fence is new (another instance may
    /// have run it meanwhile: reload everything from the database).
    Running { fresh: bool },
    /// Another instance holds it; `lost` when this one held it until now.
    Standby,
}

/// Why a tick ended early, for `run_ticks` to decide what comes next.
#[derive(Debug, thiserror::Error)]
pub(super) enum TickError {
    /// The engine lease is at another fence: another instance runs the network now, and this
    /// one stands by at once rather than when it would next renew.
    #[error("the engine lease moved to another instance")]
    Fenced,
    /// Safe-mode or a freeze came on while the tick signed: nothing was written, and the next
    /// tick sees the halt. Not a failure.
    #[error("signing halted: {0}")]
    Halted(String),
    /// Anything else (a node down, a database error): logged, and the next tick starts over
    /// from the database.
    #[error(transparent)]
    Failed(anyhow::Error),
}

impl From<StoreError> for TickError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(ConflictKind::Fenced, _) => TickError::Fenced,
            StoreError::Conflict(ConflictKind::Halted, reason) => TickError::Halted(reason),
            e => TickError::Failed(e.into()),
        }
    }
}

impl From<anyhow::Error> for TickError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<StoreError>() {
            Ok(store) => store.into(),
            Err(e) => TickError::Failed(e),
        }
    }
}

/// What the engine keeps between ticks is dropped, so the next tick reloads it from the
/// database and the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Forget {
    /// The lease is new: another instance may have run the network meanwhile.
    FreshLease,
    /// Another instance runs the network.
    Standby,
    /// The tick failed part way: what it held may be stale.
    FailedTick,
}

/// A chain's engine as the shared loop drives it.
pub(super) trait ChainEngine {
    fn core(&mut self) -> &mut EngineCore;
    /// One pass: settle what is in flight, send what is queued.
    async fn tick(&mut self) -> Result<(), TickError>;
    fn forget(&mut self, after: Forget);
}

/// Ticks `engine` every `poll` while this instance holds the network's lease, until cancelled;
/// a failed tick is logged and retried from a clean slate, and the lease is handed back at the
/// end.
pub(super) async fn run_ticks<E: ChainEngine>(
    engine: &mut E,
    poll: Duration,
    cancel: &tokio_util::sync::CancellationToken,
) {
    loop {
        let started = Instant::now();
        let lease = engine.core().hold_lease().await;
        let mut phase = started;
        engine.core().phase_done("lease", &mut phase);
        let ticked = match lease {
            Ok(LeaseState::Running { fresh }) => {
                if fresh {
                    engine.forget(Forget::FreshLease);
                }
                match engine.core().refresh_controls().await {
                    Ok(()) => engine.tick().await,
                    Err(e) => Err(TickError::from(e)),
                }
            }
            Ok(LeaseState::Standby) => {
                engine.forget(Forget::Standby);
                Ok(())
            }
            Err(e) => Err(TickError::from(e)),
        };
        let core = engine.core();
        core.metrics
            .tick_seconds
            .with_label_values(&[core.name.as_str()])
            .observe(started.elapsed().as_secs_f64());
        match ticked {
            Ok(()) => {}
            Err(TickError::Fenced) => {
                core.stand_by();
                engine.forget(Forget::Standby);
            }
            Err(TickError::Halted(reason)) => {
                tracing::info!(network = %core.name, %reason, "signing halted mid-tick");
            }
            Err(TickError::Failed(e)) => {
                tracing::warn!(network = %core.name, error = format!("{e:#}"), "payout engine tick failed; retrying");
                core.renew_soon();
                engine.forget(Forget::FailedTick);
            }
        }
        tokio::select! {
            () = cancel.cancelled() => {
                engine.core().release_lease().await;
                return;
            }
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// A network's ledger accounts for its hot wallets: the native (gas) account by wallet
/// address, and the custody account by (wallet address, token code).
#[derive(Default)]
pub(super) struct WalletAccounts {
    pub(super) gas: HashMap<String, AccountId>,
    pub(super) custody: HashMap<(String, String), AccountId>,
}

pub(super) struct EngineCore {
    pub(super) name: String,
    pub(super) payouts: Arc<dyn PayoutStore>,
    pub(super) custody: Arc<dyn CustodyStore>,
    pub(super) allowlists: Arc<dyn AllowlistStore>,
    pub(super) leases: Arc<dyn LeaseStore>,
    operations: Arc<dyn crate::store::OperationsStore>,
    /// Caps, fee modes and wallet pauses set at runtime, shared with the API.
    pub(super) controls: crate::operations::controls::Controls,
    pub(super) clock: DynClock,
    pub(super) ledger: Ledger,
    pub(super) metrics: PayoutMetrics,
    pub(super) tokens: HashMap<String, PayoutToken>,
    /// This instance's name in the engine lease.
    owner: String,
    /// The lease fence while this instance runs the network's engine; None on standby.
    pub(super) fence: Option<u64>,
    renewed_at: Option<Instant>,
    /// How long the engine lease lasts without renewal: the takeover time when an owner dies.
    lease_ttl: Duration,
    /// The phase until one is set through the API.
    default_phase: RolloutPhase,
    /// Token units per asset per day at 100%, by asset code.
    daily_targets: HashMap<String, i128>,
    timezone: chrono_tz::Tz,
    /// Payouts whose wait on the rollout guardrail is already recorded (once per process).
    guardrail_noted: HashSet<PayoutId>,
    /// When the payouts-by-state gauge was last refreshed.
    counted_at: Option<Instant>,
    /// `debug.pause_at`, for crash tests.
    pause_at: Option<String>,
    /// The accounts canary payouts are drawn on (one per token): their chunks go only to
    /// canary wallets, and canary wallets send nothing else.
    canary_accounts: HashSet<crate::domain::AccountId>,
}

impl EngineCore {
    /// Re-reads the runtime controls when this process's copy is a second old: another
    /// instance may have paused a wallet or changed the fee mode.
    pub(super) async fn refresh_controls(&self) -> Result<(), StoreError> {
        self.controls
            .refresh_if_older(self.operations.as_ref(), Duration::from_secs(1))
            .await
    }

    /// Whether the wallet `id` (as its network writes it) is paused: it signs nothing new.
    pub(super) fn wallet_paused(&self, id: &str) -> bool {
        self.controls.is_paused(&self.name, id)
    }

    /// Records the time since `since` as the tick's `phase` and starts the next phase.
    pub(super) fn phase_done(&self, phase: &str, since: &mut Instant) {
        self.metrics
            .tick_phase_seconds
            .with_label_values(&[self.name.as_str(), phase])
            .observe(since.elapsed().as_secs_f64());
        *since = Instant::now();
    }

    pub(super) fn new(
        network: &NetworkConfig,
        tokens: HashMap<String, PayoutToken>,
        ledger: Ledger,
        metrics: PayoutMetrics,
        instance: &EngineInstance,
    ) -> anyhow::Result<Self> {
        let daily_targets = tokens
            .iter()
            .filter_map(|(code, t)| {
                let target = network.rollout.daily_volume_target.as_deref()?;
                let units = Amount::parse_decimal(target, &t.spec).ok()?.units();
                Some((code.clone(), units))
            })
            .collect();
        Ok(Self {
            name: network.name.clone(),
            payouts: instance.store.clone(),
            custody: instance.store.clone(),
            allowlists: instance.store.clone(),
            leases: instance.store.clone(),
            operations: instance.store.clone(),
            controls: instance.controls.clone(),
            clock: instance.clock.clone(),
            ledger,
            metrics,
            tokens,
            owner: instance.id.clone(),
            fence: None,
            renewed_at: None,
            lease_ttl: Duration::from_secs(network.lease_seconds),
            default_phase: network.rollout.phase,
            daily_targets,
            timezone: network
                .rollout
                .timezone
                .parse()
                .map_err(|_| anyhow::anyhow!("network {}: bad rollout.timezone", network.name))?,
            guardrail_noted: HashSet::new(),
            counted_at: None,
            pause_at: instance.pause_at.clone(),
            canary_accounts: HashSet::new(),
        })
    }

    /// Looks up (creating them on first use) the gas and custody accounts of the wallets at
    /// `addresses`.
    pub(super) async fn wallet_accounts(
        &self,
        native: &AssetKey,
        addresses: Vec<String>,
    ) -> anyhow::Result<WalletAccounts> {
        let mut accounts = WalletAccounts::default();
        for address in addresses {
            let gas = self.ledger.wallet_gas_account(native, &address).await?;
            for code in self.tokens.keys() {
                let asset = AssetKey::new(self.name.clone(), code.clone());
                let custody = self.ledger.wallet_custody_account(&asset, &address).await?;
                accounts
                    .custody
                    .insert((address.clone(), code.clone()), custody);
            }
            accounts.gas.insert(address, gas);
        }
        Ok(accounts)
    }

    /// Looks up (creating them on first use) the canary accounts of the network's tokens, and
    /// exports what each wallet keeps of each token.
    pub(super) async fn prepare(
        &mut self,
        wallets: &[std::sync::Arc<crate::wallets::Wallet>],
        wallet_metrics: &crate::metrics::WalletMetrics,
    ) -> anyhow::Result<()> {
        for t in self.tokens.values() {
            let account = self.ledger.canary_account(&t.spec.key).await?;
            self.canary_accounts.insert(account);
        }
        for w in wallets {
            for (code, t) in &self.tokens {
                let keep = w.min_token_units.get(code).copied().unwrap_or(0);
                wallet_metrics
                    .token_balance_min
                    .with_label_values(&[self.name.as_str(), w.id.as_str(), code.as_str()])
                    .set(t.spec.units_as_f64(keep));
            }
        }
        Ok(())
    }

    /// Splits queued chunks into those for hot wallets and those for canary wallets, each in
    /// queue order.
    pub(super) fn route(
        &self,
        queued: Vec<crate::payouts::ChunkWork>,
    ) -> (
        Vec<crate::payouts::ChunkWork>,
        Vec<crate::payouts::ChunkWork>,
    ) {
        queued
            .into_iter()
            .partition(|w| !self.canary_accounts.contains(&w.account))
    }

    /// Takes or renews the network's engine lease. Renewed when a third of its time has passed.
    pub(super) async fn hold_lease(&mut self) -> anyhow::Result<LeaseState> {
        let ttl = self.lease_ttl;
        if self.fence.is_some() && self.renewed_at.is_some_and(|at| at.elapsed() < ttl / 3) {
            return Ok(LeaseState::Running { fresh: false });
        }
        let ttl_micros = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
        let lease = self
            .leases
            .acquire_lease(&self.name, &self.owner, self.clock.now(), ttl_micros)
            .await?;
        let gauge = self
            .metrics
            .engine_lease
            .with_label_values(&[self.name.as_str()]);
        match lease {
            Some(l) => {
                let fresh = self.fence != Some(l.fence);
                if fresh {
                    tracing::info!(network = %self.name, owner = %self.owner, fence = l.fence, "running the payout engine");
                }
                self.fence = Some(l.fence);
                self.renewed_at = Some(Instant::now());
                gauge.set(1);
                Ok(LeaseState::Running { fresh })
            }
            None => {
                self.stand_by();
                Ok(LeaseState::Standby)
            }
        }
    }

    /// Another instance holds the lease: this one signs nothing until it wins it back.
    pub(super) fn stand_by(&mut self) {
        if self.fence.take().is_some() {
            tracing::warn!(network = %self.name, owner = %self.owner, "engine lease lost to another instance; standing by");
        }
        self.renewed_at = None;
        self.metrics
            .engine_lease
            .with_label_values(&[self.name.as_str()])
            .set(0);
    }

    /// After a failed tick the lease is renewed before the next one.
    pub(super) fn renew_soon(&mut self) {
        self.renewed_at = None;
    }

    /// Hands the lease back at shutdown, so a standby takes over at once.
    pub(super) async fn release_lease(&self) {
        if self.fence.is_some()
            && let Err(e) = self.leases.release_lease(&self.name, &self.owner).await
        {
            tracing::warn!(network = %self.name, error = %e, "could not release the engine lease; it expires on its own");
        }
    }

    /// Puts the network in safe-mode on the engine's own finding, recorded with the reason and
    /// audited as `treasuryd` with the `evidence` it rests on (the event carries it too), so
    /// on-call can tell a real mismatch from a bug; an Admin leaves it. Nothing if it is in
    /// safe-mode already.
    pub(super) async fn enter_safe_mode(
        &self,
        cause: &str,
        reason: String,
        evidence: serde_json::Value,
    ) -> anyhow::Result<()> {
        if self.payouts.safe_mode(&self.name).await?.is_some() {
            return Ok(());
        }
        let mut evidence = evidence;
        if let Some(fields) = evidence.as_object_mut() {
            fields.insert("cause".into(), cause.into());
        }
        tracing::error!(network = %self.name, cause, %reason, %evidence, "entering safe-mode");
        let at = self.clock.now();
        let audit = crate::store::AuditRecord {
            actor: "treasuryd".into(),
            role: crate::domain::Role::Admin,
            action: "safe_mode.enter".into(),
            target: format!("network:{}", self.name),
            reason: Some(reason.clone()),
            request_id: "engine".into(),
            at,
            evidence: Some(evidence),
        };
        let mode = crate::store::SafeMode {
            reason,
            actor: "treasuryd".into(),
            since: at,
        };
        self.payouts
            .set_safe_mode(&self.name, Some(&mode), &audit)
            .await?;
        self.metrics
            .auto_safe_mode_total
            .with_label_values(&[self.name.as_str(), cause])
            .inc();
        Ok(())
    }

    /// Whether the network is in safe-mode, exported as the gauge.
    pub(super) async fn in_safe_mode(&self) -> anyhow::Result<bool> {
        let safe = self.payouts.safe_mode(&self.name).await?.is_some();
        self.metrics
            .safe_mode
            .with_label_values(&[self.name.as_str()])
            .set(i64::from(safe));
        Ok(safe)
    }

    /// The rollout phase set through the API, else the configured one.
    pub(super) async fn rollout_phase(&self) -> anyhow::Result<RolloutPhase> {
        Ok(self
            .payouts
            .rollout_phase(&self.name)
            .await?
            .map_or(self.default_phase, |s| s.phase))
    }

    /// Refreshes the payouts-by-state, freeze and rollout gauges at most once a second: one
    /// grouped count over the payouts not yet final.
    pub(super) async fn count_payouts(&mut self) -> anyhow::Result<()> {
        if self
            .counted_at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return Ok(());
        }
        self.counted_at = Some(Instant::now());
        let frozen = self.payouts.freezes(&self.name).await?;
        for code in self.tokens.keys() {
            let on = frozen.iter().any(|f| &f.asset == code);
            self.metrics
                .frozen
                .with_label_values(&[self.name.as_str(), code.as_str()])
                .set(i64::from(on));
        }
        let phase = self.rollout_phase().await?;
        self.metrics
            .rollout_percent
            .with_label_values(&[self.name.as_str()])
            .set(i64::try_from(phase.percent()).unwrap_or(100));
        for p in RolloutPhase::ALL {
            self.metrics
                .rollout_phase
                .with_label_values(&[self.name.as_str(), p.as_str()])
                .set(i64::from(p == phase));
        }
        let counts = self.payouts.active_payouts(&self.name).await?;
        for state in [
            PayoutState::PendingApproval,
            PayoutState::Queued,
            PayoutState::Broadcast,
        ] {
            let n = counts
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.metrics
                .by_state
                .with_label_values(&[self.name.as_str(), state.as_str()])
                .set(n);
        }
        Ok(())
    }

    /// `debug.pause_at`: where a crash test stops the engine.
    pub(super) fn pause_at(&self) -> Option<&str> {
        self.pause_at.as_deref()
    }

    /// Stops here for good when configured to (crash tests kill the process at this point).
    pub(super) async fn pause_point(&self, name: &str) {
        if self.pause_at.as_deref() == Some(name) {
            tracing::warn!(point = name, "pause point reached");
            std::future::pending::<()>().await;
        }
    }

    /// What the rollout guardrail still lets out today, per asset with a daily target.
    pub(super) async fn rollout_allowance(&self) -> anyhow::Result<HashMap<String, i128>> {
        // No target, no limit: nothing to read on the sending path.
        if self.daily_targets.is_empty() {
            return Ok(HashMap::new());
        }
        let phase = self.rollout_phase().await?;
        let since = day_start(self.clock.now(), self.timezone);
        let used: HashMap<String, i128> = self
            .payouts
            .signed_volume_since(&self.name, since)
            .await?
            .into_iter()
            .collect();
        let mut left = HashMap::new();
        for (code, target) in &self.daily_targets {
            let remaining =
                (phase.allowance(*target) - used.get(code).copied().unwrap_or(0)).max(0);
            if let Some(t) = self.tokens.get(code) {
                self.metrics
                    .rollout_remaining_units
                    .with_label_values(&[self.name.as_str(), code.as_str()])
                    .set(remaining as f64 / 10f64.powi(i32::from(t.spec.decimals)));
            }
            left.insert(code.clone(), remaining);
        }
        Ok(left)
    }

    /// Takes `amount` of `asset` from today's `allowance`; false (and every later chunk of
    /// the asset waits too, in order) when it does not fit, the wait recorded on the payout.
    pub(super) async fn within_allowance(
        &mut self,
        allowance: &mut HashMap<String, i128>,
        payout: PayoutId,
        asset: &str,
        amount: i128,
    ) -> anyhow::Result<bool> {
        let Some(left) = allowance.get_mut(asset) else {
            return Ok(true);
        };
        if *left < amount {
            *left = -1;
            self.note_guardrail_wait(payout, asset).await?;
            return Ok(false);
        }
        *left -= amount;
        Ok(true)
    }

    async fn note_guardrail_wait(&mut self, payout: PayoutId, asset: &str) -> anyhow::Result<()> {
        if self.guardrail_noted.insert(payout) {
            self.payouts
                .add_payout_event(
                    payout,
                    "rollout_wait",
                    &format!(
                        "waits: today's rollout share of {asset} on {} is used up",
                        self.name
                    ),
                )
                .await?;
        }
        Ok(())
    }

    /// Counts a payout that reached a final state, and its pass-through time once confirmed.
    pub(super) fn finished(&self, state: PayoutState, created_at: UnixMicros) {
        let network = self.name.as_str();
        self.metrics
            .finished_total
            .with_label_values(&[network, state.as_str()])
            .inc();
        if state == PayoutState::Confirmed {
            let seconds = (self.clock.now() - created_at).max(0) as f64 / 1e6;
            self.metrics
                .pass_through_seconds
                .with_label_values(&[network])
                .observe(seconds);
        }
    }

    /// After a settlement batch: counts the payouts `paid_now` completed, and closes those
    /// whose chunks are all final with something unpaid (the rest of the hold goes back).
    pub(super) async fn close_payouts(
        &self,
        touched: &[PayoutId],
        paid_now: &[PayoutId],
    ) -> anyhow::Result<()> {
        for p in self.payouts.payouts_by_id(touched).await? {
            if p.state == PayoutState::Confirmed {
                if paid_now.contains(&p.id) {
                    self.finished(PayoutState::Confirmed, p.created_at);
                }
                continue;
            }
            // A sibling may have failed or been cancelled: once all are final, the unpaid
            // remainder goes back.
            if p.all_chunks_final()
                && let Some(closed) =
                    close_unpaid(&self.ledger, self.payouts.as_ref(), p.id).await?
            {
                self.finished(closed.state, closed.created_at);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(kind: ConflictKind) -> StoreError {
        StoreError::Conflict(kind, "test".into())
    }

    #[test]
    fn a_tick_error_is_told_apart_by_the_store_conflict_under_it() {
        // As a tick sees them: straight from the store, and wrapped in anyhow by a helper.
        for wrap in [false, true] {
            let of = |e: StoreError| {
                if wrap {
                    TickError::from(anyhow::Error::from(e).context("sending"))
                } else {
                    TickError::from(e)
                }
            };
            assert!(matches!(
                of(conflict(ConflictKind::Fenced)),
                TickError::Fenced
            ));
            assert!(matches!(
                of(conflict(ConflictKind::Halted)),
                TickError::Halted(r) if r == "test"
            ));
            assert!(matches!(
                of(conflict(ConflictKind::NonceMoved)),
                TickError::Failed(_)
            ));
            assert!(matches!(of(StoreError::NotFound), TickError::Failed(_)));
        }
        assert!(matches!(
            TickError::from(anyhow::anyhow!("node down")),
            TickError::Failed(_)
        ));
    }
}
