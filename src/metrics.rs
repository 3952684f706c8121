//! Prometheus metrics, one typed struct per component, registered on a `Registry` that `App`
//! owns (no globals, so two apps can share a test process). Names follow
//! `treasuryd_<component>_<what>_<unit>`. Labels are bounded: routes are the matched route
//! templates, never raw paths or ids.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, TextEncoder,
};
use std::sync::{Arc, Mutex};

/// One metric as registered: what `docs/metrics.md` must list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MetricDescription {
    pub name: String,
    /// `counter`, `gauge`, `histogram`.
    pub kind: &'static str,
    pub labels: Vec<String>,
    pub help: String,
}

/// The Prometheus registry `App` owns, which also remembers every metric registered on it so
/// that the catalogue can be checked against what is exported (an empty labelled family does
/// not appear in `gather`).
#[derive(Clone, Default)]
pub struct Registry {
    inner: prometheus::Registry,
    described: Arc<Mutex<Vec<MetricDescription>>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) -> prometheus::Result<()> {
        use prometheus::proto::MetricType;
        let kinds: Vec<&'static str> = c
            .collect()
            .iter()
            .map(|f| match f.get_field_type() {
                MetricType::COUNTER => "counter",
                MetricType::GAUGE => "gauge",
                MetricType::HISTOGRAM => "histogram",
                MetricType::SUMMARY => "summary",
                MetricType::UNTYPED => "untyped",
            })
            .collect();
        let descriptions: Vec<MetricDescription> = c
            .desc()
            .iter()
            .zip(kinds)
            .map(|(d, kind)| MetricDescription {
                name: d.fq_name.clone(),
                kind,
                labels: d
                    .const_label_pairs
                    .iter()
                    .map(|l| l.name().to_owned())
                    .chain(d.variable_labels.iter().cloned())
                    .collect(),
                help: d.help.clone(),
            })
            .collect();
        self.inner.register(c)?;
        if let Ok(mut all) = self.described.lock() {
            all.extend(descriptions);
        }
        Ok(())
    }

    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.inner.gather()
    }

    /// Every metric registered, sorted by name.
    pub fn catalogue(&self) -> Vec<MetricDescription> {
        let mut all = self.described.lock().map(|d| d.clone()).unwrap_or_default();
        all.sort();
        all
    }
}

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub rpc: RpcMetrics,
    pub http: HttpMetrics,
    pub ledger: LedgerMetrics,
    pub payouts: PayoutMetrics,
    pub wallets: WalletMetrics,
    pub scope: ScopeMetrics,
    pub pilot: PilotMetrics,
    pub webhooks: WebhookMetrics,
    pub trust: TrustMetrics,
    pub operations: OperationsMetrics,
}

/// Canary payouts, the configuration freeze, overdue timers and disputes close to their TTL:
/// what on-call is paged on besides the payout pipeline itself.
#[derive(Clone)]
pub struct OperationsMetrics {
    pub canary: CanaryMetrics,
    /// 1 while the configuration freeze is active.
    pub config_freeze: IntGauge,
    /// Deal timers still pending and trust cut-offs still open a minute past their moment.
    pub timers_overdue: IntGauge,
    /// Seconds since the earliest such moment (0: none).
    pub timers_oldest_overdue_seconds: prometheus::Gauge,
    /// Open disputes (deals in ISSUE not escalated).
    pub disputes_open: IntGauge,
    /// Seconds until the nearest DISPUTE_TTL deadline of an open dispute (absent: none).
    pub disputes_ttl_soonest_seconds: GaugeVec,
    /// Background tasks that panicked or stopped and were restarted (ledger_writer, webhooks,
    /// canaries, timers).
    pub task_restarts_total: IntCounterVec,
    /// Incidents not yet resolved, by severity and status (open, mitigated).
    pub incidents_open: IntGaugeVec,
    /// The per-transaction cap in force per token, in token units (configured or set at runtime).
    pub per_tx_cap_units: GaugeVec,
    /// 1 for the fee mode in force on an EVM network, 0 for the others.
    pub fee_mode: IntGaugeVec,
    /// 1 while a wallet is paused (signs nothing new).
    pub wallet_paused: IntGaugeVec,
}

/// Canary payouts, by network.
#[derive(Clone)]
pub struct CanaryMetrics {
    /// 1 if the last finished canary was green, 0 if red.
    pub last_result: IntGaugeVec,
    /// When the last canary finished (unix seconds).
    pub last_finished_seconds: GaugeVec,
    /// How long the last canary took, start to result.
    pub last_duration_seconds: GaugeVec,
    /// Finished canaries by result (green, red).
    pub runs_total: IntCounterVec,
}

impl OperationsMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<GaugeVec> {
            let g = GaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let int_gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let last_result = IntGaugeVec::new(
            Opts::new(
                "treasuryd_canary_last_result",
                "1 if the network's last finished canary payout was green, 0 if red.",
            ),
            &["network"],
        )?;
        registry.register(Box::new(last_result.clone()))?;
        let runs_total = IntCounterVec::new(
            Opts::new(
                "treasuryd_canary_runs_total",
                "Finished canary payouts, by network and result (green, red).",
            ),
            &["network", "result"],
        )?;
        registry.register(Box::new(runs_total.clone()))?;
        let oldest = prometheus::Gauge::new(
            "treasuryd_timers_oldest_overdue_seconds",
            "Seconds since the earliest overdue timer or cut-off was due (0: none).",
        )?;
        registry.register(Box::new(oldest.clone()))?;
        let task_restarts_total = IntCounterVec::new(
            Opts::new(
                "treasuryd_task_restarts_total",
                "Background tasks that panicked or stopped and were restarted, by task (ledger_writer, webhooks, canaries, timers).",
            ),
            &["task"],
        )?;
        registry.register(Box::new(task_restarts_total.clone()))?;
        for task in ["ledger_writer", "webhooks", "canaries", "timers"] {
            task_restarts_total.with_label_values(&[task]);
        }
        let incidents_open = IntGaugeVec::new(
            Opts::new(
                "treasuryd_incidents_open",
                "Incidents in the register not yet resolved, by severity (SEV0-SEV3) and status (open, mitigated).",
            ),
            &["severity", "status"],
        )?;
        registry.register(Box::new(incidents_open.clone()))?;
        let int_gauge_vec =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
                let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(g.clone()))?;
                Ok(g)
            };
        Ok(Self {
            task_restarts_total,
            incidents_open,
            per_tx_cap_units: gauge_vec(
                "treasuryd_per_tx_cap_units",
                "The per-transaction cap in force per token, in token units: configured, or set at runtime (PUT /v1/networks/{name}/controls/per-tx-cap).",
                &["network", "asset"],
            )?,
            fee_mode: int_gauge_vec(
                "treasuryd_fee_mode",
                "1 for the fee mode in force on an EVM network (economy, normal, urgent), 0 for the others.",
                &["network", "mode"],
            )?,
            wallet_paused: int_gauge_vec(
                "treasuryd_wallet_paused",
                "1 while a wallet is paused: it signs nothing new and the network's other wallets carry the queue.",
                &["network", "wallet"],
            )?,
            canary: CanaryMetrics {
                last_result,
                last_finished_seconds: gauge_vec(
                    "treasuryd_canary_last_finished_timestamp_seconds",
                    "When the network's last canary payout finished, unix seconds.",
                    &["network"],
                )?,
                last_duration_seconds: gauge_vec(
                    "treasuryd_canary_last_duration_seconds",
                    "Seconds the network's last canary payout took from start to result.",
                    &["network"],
                )?,
                runs_total,
            },
            config_freeze: int_gauge(
                "treasuryd_config_freeze_active",
                "1 while the configuration freeze is active (configuration-changing calls are refused).",
            )?,
            timers_overdue: int_gauge(
                "treasuryd_timers_overdue",
                "Deal timers still pending and trust cut-offs still open more than a minute after they were due.",
            )?,
            timers_oldest_overdue_seconds: oldest,
            disputes_open: int_gauge(
                "treasuryd_disputes_open",
                "Open disputes: deals in ISSUE that have not been escalated.",
            )?,
            disputes_ttl_soonest_seconds: gauge_vec(
                "treasuryd_disputes_ttl_soonest_seconds",
                "Seconds until the nearest DISPUTE_TTL deadline of an open dispute, by country and category.",
                &["country", "category"],
            )?,
        })
    }
}

/// The pilot's figures over every deal so far, by country, category and template version
/// (`template` label = the template id), refreshed from the database every 15 s.
#[derive(Clone)]
pub struct PilotMetrics {
    pub deals: IntGaugeVec,
    /// Deals created long enough ago to have settled under their category's target.
    pub due_deals: IntGaugeVec,
    pub ratios: GaugeVec,
    pub settle_seconds: GaugeVec,
    /// Open disputes whose DISPUTE_TTL ran out and were escalated.
    pub escalated_disputes: IntGauge,
}

impl PilotMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let deals = IntGaugeVec::new(
            Opts::new("treasuryd_deals", "Deals by state and scope."),
            &["country", "category", "template", "state"],
        )?;
        let ratios = GaugeVec::new(
            Opts::new(
                "treasuryd_pilot_ratio",
                "Pilot figures by scope: completion, completion_due (of the deals old enough to have settled), dispute, evidence_completeness, admin_intervention, disputes_within_ttl (0..1).",
            ),
            &["country", "category", "template", "figure"],
        )?;
        let settle_seconds = GaugeVec::new(
            Opts::new(
                "treasuryd_pilot_time_to_settle_seconds",
                "Time from creation to SETTLED by scope: the average and the p95 (nearest rank).",
            ),
            &["country", "category", "template", "stat"],
        )?;
        let escalated_disputes = IntGauge::new(
            "treasuryd_disputes_escalated",
            "Open disputes whose DISPUTE_TTL ran out (escalated, funds held).",
        )?;
        let due_deals = IntGaugeVec::new(
            Opts::new(
                "treasuryd_pilot_deals_due",
                "Deals created long enough ago to have settled under their category's settle-time target, by scope.",
            ),
            &["country", "category", "template"],
        )?;
        registry.register(Box::new(deals.clone()))?;
        registry.register(Box::new(due_deals.clone()))?;
        registry.register(Box::new(ratios.clone()))?;
        registry.register(Box::new(settle_seconds.clone()))?;
        registry.register(Box::new(escalated_disputes.clone()))?;
        Ok(Self {
            deals,
            due_deals,
            ratios,
            settle_seconds,
            escalated_disputes,
        })
    }

    pub fn show(&self, scopes: &[crate::escrow::report::ScopeFigures], escalated: i64) {
        use rust_decimal::prelude::ToPrimitive;
        self.deals.reset();
        self.ratios.reset();
        self.settle_seconds.reset();
        for s in scopes {
            let template = format!("{}_{}_v{}", s.country, s.category, s.template_version);
            let base = [s.country.as_str(), s.category.as_str(), template.as_str()];
            for (state, n) in &s.figures.by_state {
                self.deals
                    .with_label_values(&[base[0], base[1], base[2], state.as_str()])
                    .set(i64::try_from(*n).unwrap_or(i64::MAX));
            }
            let f = &s.figures;
            for (name, share) in [
                ("completion", &f.settlement_completion),
                ("dispute", &f.dispute_rate),
                ("evidence_completeness", &f.evidence_completeness),
                ("admin_intervention", &f.admin_intervention),
                ("disputes_within_ttl", &f.disputes_within_ttl),
            ] {
                if let Some(r) = share.ratio.and_then(|r| r.to_f64()) {
                    self.ratios
                        .with_label_values(&[base[0], base[1], base[2], name])
                        .set(r);
                }
            }
            for (stat, v) in [
                ("average", f.average_time_to_settle_seconds),
                ("p95", f.p95_time_to_settle_seconds),
            ] {
                if let Some(v) = v {
                    self.settle_seconds
                        .with_label_values(&[base[0], base[1], base[2], stat])
                        .set(v as f64);
                }
            }
        }
        self.escalated_disputes.set(escalated);
    }

    /// Completion over the deals old enough to have settled (`figure="completion_due"`) and how
    /// many those are, per scope; call after `show`, which clears the ratios.
    pub fn show_due(
        &self,
        due: &std::collections::BTreeMap<(String, String, u32), crate::escrow::report::Share>,
    ) {
        use rust_decimal::prelude::ToPrimitive;
        self.due_deals.reset();
        for ((country, category, version), share) in due {
            let template = format!("{country}_{category}_v{version}");
            let labels = [country.as_str(), category.as_str(), template.as_str()];
            self.due_deals
                .with_label_values(&labels)
                .set(i64::try_from(share.of).unwrap_or(i64::MAX));
            if let Some(r) = share.ratio.and_then(|r| r.to_f64()) {
                self.ratios
                    .with_label_values(&[labels[0], labels[1], labels[2], "completion_due"])
                    .set(r);
            }
        }
    }
}

/// The pilot's scope flags in force, as this instance last read them.
#[derive(Clone)]
pub struct ScopeMetrics {
    /// 1 while new deals are accepted at all (`pilot.enabled`).
    pub enabled: IntGauge,
    /// 1 for each (country, category) the scope admits, labelled with the template a new deal
    /// there takes.
    pub admitted: IntGaugeVec,
}

impl ScopeMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let enabled = IntGauge::new(
            "treasuryd_pilot_enabled",
            "1 while the pilot accepts new deals (pilot.enabled).",
        )?;
        registry.register(Box::new(enabled.clone()))?;
        let admitted = IntGaugeVec::new(
            Opts::new(
                "treasuryd_pilot_scope",
                "1 for each country and category the pilot scope admits, with the template new deals there take.",
            ),
            &["country", "category", "template"],
        )?;
        registry.register(Box::new(admitted.clone()))?;
        Ok(Self { enabled, admitted })
    }

    pub fn show(&self, scope: &crate::scope::PilotScope, templates: &crate::templates::Templates) {
        self.enabled.set(i64::from(scope.enabled));
        self.admitted.reset();
        for t in scope.admitted(templates) {
            self.admitted
                .with_label_values(&[t.country.as_str(), t.category.as_str(), t.id.as_str()])
                .set(1);
        }
    }
}

#[derive(Clone)]
pub struct WalletMetrics {
    /// Native balance of a wallet, in wei (as read before sending).
    pub native_balance_wei: GaugeVec,
    /// Token balance of a wallet, in token units.
    pub token_balance: GaugeVec,
    /// 1 while a wallet's native balance is below its gas buffer (it sends nothing).
    pub below_gas_buffer: IntGaugeVec,
    /// How many more transfers the native balance above the buffer pays for at current fees.
    pub runway_payouts: GaugeVec,
    /// Token transfers out of a hot wallet that treasuryd never signed (a leaked key).
    pub unexpected_outflows_total: IntCounterVec,
    /// Confirmed ranges over which a hot wallet's token balance moved by something other than
    /// its transfers.
    pub balance_mismatches_total: IntCounterVec,
    /// Ranges whose balance difference a re-read has not confirmed (yet): each means the range
    /// is read again before anything is done.
    pub balance_rereads_total: IntCounterVec,
    /// Last reconciliation: on-chain balance minus the ledger's (less what is settling), in
    /// asset units, per wallet and asset (tokens and the native coin).
    pub reconcile_difference: GaugeVec,
    /// 1 while the last reconciliation found a difference nothing in flight explains.
    pub reconcile_mismatch: IntGaugeVec,
    /// Reconciliation runs by outcome: clean, mismatch, unconfirmed, error.
    pub reconcile_runs_total: IntCounterVec,
    /// The block the last reconciliation compared at.
    pub reconciled_block: IntGaugeVec,
    /// The token balance a wallet keeps (its `min_token_balance`), in token units.
    pub token_balance_min: GaugeVec,
    /// Tron: a wallet's TRX balance in TRX, its energy and bandwidth available now.
    pub trx_balance: GaugeVec,
    pub energy_available: GaugeVec,
    pub bandwidth_available: GaugeVec,
}

impl WalletMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let gauge = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<GaugeVec> {
            let g = GaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let below = IntGaugeVec::new(
            Opts::new(
                "treasuryd_wallet_below_gas_buffer",
                "1 while a wallet is below its gas buffer (EVM: native balance; Tron: TRX, energy or bandwidth) and sends nothing.",
            ),
            &["network", "wallet"],
        )?;
        registry.register(Box::new(below.clone()))?;
        let outflows = IntCounterVec::new(
            Opts::new(
                "treasuryd_wallet_unexpected_outflows_total",
                "Token transfers out of a hot wallet that treasuryd never signed; each puts the network in safe-mode.",
            ),
            &["network", "wallet"],
        )?;
        registry.register(Box::new(outflows.clone()))?;
        let mismatches = IntCounterVec::new(
            Opts::new(
                "treasuryd_wallet_balance_mismatches_total",
                "Confirmed block ranges over which a hot wallet's token balance moved by something other than its transfers; each puts the network in safe-mode.",
            ),
            &["network", "wallet"],
        )?;
        registry.register(Box::new(mismatches.clone()))?;
        let rereads = IntCounterVec::new(
            Opts::new(
                "treasuryd_wallet_balance_rereads_total",
                "Block ranges whose balance difference was not (yet) found on 3 reads in a row; each is read again before anything is done.",
            ),
            &["network", "wallet"],
        )?;
        registry.register(Box::new(rereads.clone()))?;
        let reconcile_mismatch = IntGaugeVec::new(
            Opts::new(
                "treasuryd_wallet_reconcile_mismatch",
                "1 while the last reconciliation found a hot wallet balance that differs from the ledger beyond what is in flight.",
            ),
            &["network", "wallet", "asset"],
        )?;
        registry.register(Box::new(reconcile_mismatch.clone()))?;
        let reconcile_runs_total = IntCounterVec::new(
            Opts::new(
                "treasuryd_wallet_reconcile_runs_total",
                "Reconciliations of hot wallets with the ledger, by outcome (clean, mismatch, unconfirmed, error).",
            ),
            &["network", "outcome"],
        )?;
        registry.register(Box::new(reconcile_runs_total.clone()))?;
        let reconciled_block = IntGaugeVec::new(
            Opts::new(
                "treasuryd_wallet_reconciled_block",
                "The block at which the last reconciliation compared chain and ledger.",
            ),
            &["network"],
        )?;
        registry.register(Box::new(reconciled_block.clone()))?;
        Ok(Self {
            reconcile_difference: gauge(
                "treasuryd_wallet_reconcile_difference",
                "Last reconciliation: on-chain balance minus the ledger's (less what is settling), in asset units.",
                &["network", "wallet", "asset"],
            )?,
            reconcile_mismatch,
            reconcile_runs_total,
            reconciled_block,
            balance_mismatches_total: mismatches,
            balance_rereads_total: rereads,
            unexpected_outflows_total: outflows,
            native_balance_wei: gauge(
                "treasuryd_wallet_native_balance_wei",
                "Native balance of a wallet, in wei (as read before sending).",
                &["network", "wallet"],
            )?,
            token_balance: gauge(
                "treasuryd_wallet_token_balance",
                "Token balance of a wallet, in token units.",
                &["network", "wallet", "asset"],
            )?,
            below_gas_buffer: below,
            runway_payouts: gauge(
                "treasuryd_wallet_runway_payouts",
                "How many more transfers the wallet's gas (EVM: native balance above the buffer; Tron: staked energy and bandwidth, then TRX above the buffer) pays for at current prices.",
                &["network", "wallet"],
            )?,
            token_balance_min: gauge(
                "treasuryd_wallet_token_balance_min",
                "The token balance a wallet keeps (min_token_balance), in token units; below it the wallet sends nothing of the token.",
                &["network", "wallet", "asset"],
            )?,
            trx_balance: gauge(
                "treasuryd_wallet_trx_balance",
                "Tron: a wallet's TRX balance, in TRX.",
                &["network", "wallet"],
            )?,
            energy_available: gauge(
                "treasuryd_wallet_energy_available",
                "Tron: energy a wallet has available from its stake.",
                &["network", "wallet"],
            )?,
            bandwidth_available: gauge(
                "treasuryd_wallet_bandwidth_available",
                "Tron: bandwidth (bytes) a wallet has available, free and staked.",
                &["network", "wallet"],
            )?,
        })
    }
}

impl WalletMetrics {
    pub fn record_reconciliation(&self, line: &crate::reconcile::Line) {
        let labels = [
            line.network.as_str(),
            line.wallet.as_str(),
            line.asset.as_str(),
        ];
        let units = line
            .display(line.difference)
            .parse::<f64>()
            .unwrap_or(f64::NAN);
        self.reconcile_difference
            .with_label_values(&labels)
            .set(units);
        self.reconcile_mismatch
            .with_label_values(&labels)
            .set(i64::from(
                line.verdict == crate::reconcile::Verdict::Mismatch,
            ));
        self.reconciled_block
            .with_label_values(&[line.network.as_str()])
            .set(i64::try_from(line.block).unwrap_or(i64::MAX));
    }
}

/// Health of each network's RPC endpoints, labelled by their position in `rpc_urls` (URLs may
/// carry API keys).
#[derive(Clone)]
pub struct RpcMetrics {
    /// 1 while the endpoint answers and is not behind the best head by more than allowed.
    pub up: IntGaugeVec,
    /// Blocks behind the highest head any endpoint of the network reported.
    pub head_lag_blocks: IntGaugeVec,
    /// Seconds the last head read took.
    pub latency_seconds: GaugeVec,
    /// Failed or lagging health checks and failed ticks.
    pub errors_total: IntCounterVec,
    /// 1 for the endpoint the engine works through.
    pub selected: IntGaugeVec,
    /// Switches from one endpoint to another, by network.
    pub failovers_total: IntCounterVec,
}

impl RpcMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let labels = ["network", "endpoint"];
        let int_gauge = |name: &str, help: &str| -> prometheus::Result<IntGaugeVec> {
            let g = IntGaugeVec::new(Opts::new(name, help), &labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let latency = GaugeVec::new(
            Opts::new(
                "treasuryd_rpc_latency_seconds",
                "Seconds the last head read of the endpoint took.",
            ),
            &labels,
        )?;
        registry.register(Box::new(latency.clone()))?;
        let errors = IntCounterVec::new(
            Opts::new(
                "treasuryd_rpc_errors_total",
                "Failed or lagging health checks and failed engine ticks, by endpoint.",
            ),
            &labels,
        )?;
        registry.register(Box::new(errors.clone()))?;
        let failovers = IntCounterVec::new(
            Opts::new(
                "treasuryd_rpc_failovers_total",
                "Switches of the engine from one RPC endpoint to another, by network.",
            ),
            &["network"],
        )?;
        registry.register(Box::new(failovers.clone()))?;
        Ok(Self {
            up: int_gauge(
                "treasuryd_rpc_up",
                "1 while the endpoint answers and is not too far behind the best head.",
            )?,
            head_lag_blocks: int_gauge(
                "treasuryd_rpc_head_lag_blocks",
                "Blocks the endpoint is behind the highest head of the network's endpoints.",
            )?,
            latency_seconds: latency,
            errors_total: errors,
            selected: int_gauge(
                "treasuryd_rpc_selected",
                "1 for the endpoint the payout engine works through.",
            )?,
            failovers_total: failovers,
        })
    }
}

#[derive(Clone)]
pub struct PayoutMetrics {
    /// Seconds from a payout's acceptance to its last chunk's confirmation, by network.
    pub pass_through_seconds: HistogramVec,
    /// Seconds from a payout's acceptance to its first broadcast, by network.
    pub first_broadcast_seconds: HistogramVec,
    /// Payouts that reached a final state, by network and state (confirmed, failed, rejected).
    pub finished_total: IntCounterVec,
    /// Replacements of stuck transactions (same nonce, higher fees), by network.
    pub speedups_total: IntCounterVec,
    /// Stuck transactions re-broadcast unchanged because their fees are at the cap, by network.
    pub fee_cap_rebroadcasts_total: IntCounterVec,
    /// Failed RPC calls while sending, by network and error class.
    pub rpc_errors_total: IntCounterVec,
    /// Unconfirmed transactions per wallet.
    pub in_flight: IntGaugeVec,
    /// 1 while the network is in safe-mode.
    pub safe_mode: IntGaugeVec,
    /// Cancel transactions signed for an Operator's cancel, by network.
    pub cancels_total: IntCounterVec,
    /// Chunks signed into batched (disperse) transactions, by network.
    pub batched_chunks_total: IntCounterVec,
    /// Chunks whose batch paid nobody, queued again to go out alone, by network.
    pub requeued_alone_total: IntCounterVec,
    /// Payouts not yet final, by network and state (pending_approval, queued, broadcast).
    pub by_state: IntGaugeVec,
    /// Transactions past the stuck threshold and not yet mined, by network.
    pub stuck: IntGaugeVec,
    /// Seconds since the oldest stuck transaction was first broadcast, by network (0: none).
    pub oldest_stuck_seconds: GaugeVec,
    /// Token units the rollout guardrail still lets out today, by network and asset.
    pub rollout_remaining_units: GaugeVec,
    /// The rollout phase's share of the daily volume target in percent, by network.
    pub rollout_percent: IntGaugeVec,
    /// 1 while the asset is frozen on the network.
    pub frozen: IntGaugeVec,
    /// Seconds one engine tick takes (track, settle, send), by network.
    pub tick_seconds: HistogramVec,
    /// Seconds per phase of a tick: where a slow tick's time goes.
    pub tick_phase_seconds: HistogramVec,
    /// 1 while this instance holds the network's engine lease (runs its payouts).
    pub engine_lease: IntGaugeVec,
    /// On-chain deposits credited, by network and asset.
    pub deposits_total: IntCounterVec,
    /// Blocks the deposit watcher has read; a range read again after a restart counts again.
    pub deposit_blocks_read_total: IntCounterVec,
    /// Times the engine put a network in safe-mode on its own, by cause (deep_reorg,
    /// rpc_outage).
    pub auto_safe_mode_total: IntCounterVec,
    /// Mined transactions whose block left the chain before their confirmation depth.
    pub reorgs_total: IntCounterVec,
    /// Confirmed (paid) transactions whose block left the chain afterwards: the network goes
    /// into safe-mode. Alert on any increase.
    pub deep_reorgs_total: IntCounterVec,
    /// Tron: transactions rebuilt for a chunk, by network and reason (`expired`: it can no
    /// longer land; `out_of_energy`: again with a raised fee limit).
    pub rebuilds_total: IntCounterVec,
    /// Tron: broadcasts the node refused, by network and its response code.
    pub broadcast_refusals_total: IntCounterVec,
    /// EVM: nonces missing below a wallet's lowest unmined transaction (the chain's nonce is
    /// behind it): nothing of the wallet can be mined until they are filled.
    pub nonce_gap: IntGaugeVec,
    /// 1 for the network's rollout phase (pilot, canary, full).
    pub rollout_phase: IntGaugeVec,
}

impl PayoutMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        // Resolve the launch SLOs: p95 ≤ 15 min, rollback above 30 min.
        let slo_buckets = vec![
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
            7200.0,
        ];
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let float_gauge =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<GaugeVec> {
                let g = GaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(g.clone()))?;
                Ok(g)
            };
        let histogram = |name: &str, help: &str| -> prometheus::Result<HistogramVec> {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(slo_buckets.clone()),
                &["network"],
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        // From a millisecond (an idle phase) to ten seconds (a tick stuck on a slow node).
        let tick_histogram =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<HistogramVec> {
                let h = HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0,
                    ]),
                    labels,
                )?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        Ok(Self {
            pass_through_seconds: histogram(
                "treasuryd_payouts_pass_through_seconds",
                "Seconds from a payout's acceptance to its last chunk's confirmation, by network.",
            )?,
            first_broadcast_seconds: histogram(
                "treasuryd_payouts_first_broadcast_seconds",
                "Seconds from a payout's acceptance to its first broadcast, by network.",
            )?,
            finished_total: counter(
                "treasuryd_payouts_finished_total",
                "Payouts that reached a final state, by network and state.",
                &["network", "state"],
            )?,
            speedups_total: counter(
                "treasuryd_payouts_speedups_total",
                "Replacements of stuck transactions (same nonce, higher fees), by network.",
                &["network"],
            )?,
            fee_cap_rebroadcasts_total: counter(
                "treasuryd_payouts_fee_cap_rebroadcasts_total",
                "Stuck transactions re-broadcast unchanged because their fees are at the cap, by network.",
                &["network"],
            )?,
            rpc_errors_total: counter(
                "treasuryd_payouts_rpc_errors_total",
                "Failed RPC calls while sending, by network and error class.",
                &["network", "class"],
            )?,
            in_flight: gauge(
                "treasuryd_payouts_in_flight",
                "Unconfirmed transactions per wallet.",
                &["network", "wallet"],
            )?,
            safe_mode: gauge(
                "treasuryd_payouts_safe_mode",
                "1 while the network is in safe-mode.",
                &["network"],
            )?,
            cancels_total: counter(
                "treasuryd_payouts_cancels_total",
                "Cancel transactions signed for an Operator's cancel, by network.",
                &["network"],
            )?,
            batched_chunks_total: counter(
                "treasuryd_payouts_batched_chunks_total",
                "Chunks signed into batched (disperse) transactions, by network.",
                &["network"],
            )?,
            requeued_alone_total: counter(
                "treasuryd_payouts_requeued_alone_total",
                "Chunks whose batch paid nobody, queued again to go out alone, by network.",
                &["network"],
            )?,
            by_state: gauge(
                "treasuryd_payouts_by_state",
                "Payouts not yet final, by network and state.",
                &["network", "state"],
            )?,
            stuck: gauge(
                "treasuryd_payouts_stuck",
                "Transactions past the stuck threshold and not yet mined, by network.",
                &["network"],
            )?,
            oldest_stuck_seconds: float_gauge(
                "treasuryd_payouts_oldest_stuck_seconds",
                "Seconds since the oldest stuck transaction was first broadcast, by network (0: none).",
                &["network"],
            )?,
            rollout_remaining_units: float_gauge(
                "treasuryd_payouts_rollout_remaining_units",
                "Token units the rollout guardrail still lets out today, by network and asset.",
                &["network", "asset"],
            )?,
            rollout_percent: gauge(
                "treasuryd_payouts_rollout_percent",
                "The rollout phase's share of the daily volume target in percent, by network.",
                &["network"],
            )?,
            frozen: gauge(
                "treasuryd_payouts_frozen",
                "1 while the asset is frozen on the network.",
                &["network", "asset"],
            )?,
            auto_safe_mode_total: counter(
                "treasuryd_payouts_auto_safe_mode_total",
                "Times the engine put the network in safe-mode on its own, by cause.",
                &["network", "cause"],
            )?,
            deposits_total: counter(
                "treasuryd_deposits_credited_total",
                "On-chain deposits credited, by network and asset.",
                &["network", "asset"],
            )?,
            deposit_blocks_read_total: counter(
                "treasuryd_deposit_blocks_read_total",
                "Blocks the deposit watcher has read; a range read again after a restart counts again.",
                &["network"],
            )?,
            engine_lease: gauge(
                "treasuryd_payouts_engine_lease",
                "1 while this instance holds the network's engine lease and runs its payouts.",
                &["network"],
            )?,
            reorgs_total: counter(
                "treasuryd_payouts_reorgs_total",
                "Mined transactions whose block left the chain before their confirmation depth, by network.",
                &["network"],
            )?,
            deep_reorgs_total: counter(
                "treasuryd_payouts_deep_reorgs_total",
                "Confirmed transactions whose block left the chain afterwards, by network; the network enters safe-mode.",
                &["network"],
            )?,
            rebuilds_total: counter(
                "treasuryd_payouts_rebuilds_total",
                "Tron transactions rebuilt for a chunk, by network and reason (expired, out_of_energy).",
                &["network", "reason"],
            )?,
            broadcast_refusals_total: counter(
                "treasuryd_payouts_broadcast_refusals_total",
                "Tron broadcasts the node refused, by network and response code.",
                &["network", "code"],
            )?,
            nonce_gap: gauge(
                "treasuryd_payouts_nonce_gap",
                "EVM: nonces missing below a wallet's lowest unmined transaction; while above 0 nothing of the wallet is mined.",
                &["network", "wallet"],
            )?,
            rollout_phase: gauge(
                "treasuryd_payouts_rollout_phase",
                "1 for the network's rollout phase (pilot, canary, full), 0 for the others.",
                &["network", "phase"],
            )?,
            tick_seconds: tick_histogram(
                "treasuryd_payouts_engine_tick_seconds",
                "Seconds one engine tick takes (track, settle, send), by network.",
                &["network"],
            )?,
            tick_phase_seconds: tick_histogram(
                "treasuryd_payouts_engine_tick_phase_seconds",
                "Seconds one engine tick spends in each phase (lease, choose, track, settle, send, watch), by network.",
                &["network", "phase"],
            )?,
        })
    }
}

#[derive(Clone)]
pub struct HttpMetrics {
    /// HTTP requests answered, by route template, method and status code.
    pub requests_total: IntCounterVec,
    /// HTTP request latency in seconds, by route template and method.
    pub request_duration_seconds: HistogramVec,
    /// Wrong bearer tokens (`bearer`) and second-factor codes (`totp`).
    pub auth_failures_total: IntCounterVec,
    /// Attempts refused unjudged (429) because their source or user used up its failures.
    pub auth_throttled_total: IntCounterVec,
}

#[derive(Clone)]
pub struct LedgerMetrics {
    /// Journal transactions committed, by entry kind.
    pub transactions_total: IntCounterVec,
    /// Ledger commands refused, by error code.
    pub rejections_total: IntCounterVec,
    /// Duration of one ledger database transaction (a batch), in seconds.
    pub commit_duration_seconds: Histogram,
    /// Commands carried by one ledger database transaction.
    pub batch_commands: Histogram,
    /// `treasuryd_task_restarts_total{task="ledger_writer"}`: a batch that panicked (its
    /// commands refused, the writer going on).
    pub writer_panics: prometheus::IntCounter,
}

impl LedgerMetrics {
    /// Records one committed batch.
    pub fn record<'a>(
        &self,
        results: impl Iterator<Item = &'a Result<crate::ledger::Posted, crate::ledger::LedgerError>>,
        took: std::time::Duration,
    ) {
        self.commit_duration_seconds.observe(took.as_secs_f64());
        let mut commands = 0;
        for r in results {
            commands += 1;
            match r {
                Ok(p) if !p.replayed => self
                    .transactions_total
                    .with_label_values(&[p.tx.kind.as_str()])
                    .inc(),
                Ok(_) => {}
                Err(e) => self.rejections_total.with_label_values(&[e.code()]).inc(),
            }
        }
        self.batch_commands.observe(f64::from(commands));
    }
}

/// Build information: always 1, labelled with the version.
/// Webhook deliveries. `endpoint` is the endpoint id: partners' endpoints are few (registered by
/// an Admin), so the label stays bounded.
#[derive(Clone)]
pub struct WebhookMetrics {
    /// Attempts by endpoint and outcome: `success` (2xx), `http_error` (any other status but
    /// 410), `gone` (410: endpoint disabled), `timeout`, `connect_error`, `refused` (SSRF guard).
    pub attempts_total: IntCounterVec,
    /// Deliveries that ended, by endpoint and outcome: `delivered` or `dead` (horizon passed).
    pub deliveries_total: IntCounterVec,
    /// Successful attempts / all attempts over the last 15 minutes (1 with no attempts): the
    /// launch SLO (>= 0.99) as one number.
    pub success_ratio_15m: prometheus::Gauge,
    /// From the outbox write to the 2xx, in seconds.
    pub delivery_latency_seconds: Histogram,
    pub dead_letter: IntGaugeVec,
    pub pending: IntGaugeVec,
    pub oldest_undelivered_seconds: GaugeVec,
    pub outbox_undispatched: IntGauge,
    pub outbox_oldest_undispatched_seconds: prometheus::Gauge,
    window: std::sync::Arc<std::sync::Mutex<SuccessWindow>>,
}

/// Attempts per minute over the last 15 minutes: (minute, successes, attempts).
#[derive(Default)]
struct SuccessWindow {
    minutes: std::collections::VecDeque<(i64, u64, u64)>,
}

impl SuccessWindow {
    const MINUTES: i64 = 15;

    fn ratio(&mut self, now_minute: i64) -> f64 {
        while self
            .minutes
            .front()
            .is_some_and(|(m, _, _)| *m <= now_minute - Self::MINUTES)
        {
            self.minutes.pop_front();
        }
        let (ok, all) = self
            .minutes
            .iter()
            .fold((0u64, 0u64), |(o, a), (_, s, n)| (o + s, a + n));
        if all == 0 {
            1.0
        } else {
            ok as f64 / all as f64
        }
    }

    fn record(&mut self, now_minute: i64, success: bool) {
        match self.minutes.back_mut() {
            Some((m, s, n)) if *m == now_minute => {
                *s += u64::from(success);
                *n += 1;
            }
            _ => self.minutes.push_back((now_minute, u64::from(success), 1)),
        }
    }
}

impl WebhookMetrics {
    pub const ATTEMPT_OUTCOMES: [&'static str; 6] = [
        "success",
        "http_error",
        "gone",
        "timeout",
        "connect_error",
        "refused",
    ];

    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            attempts_total: IntCounterVec::new(
                Opts::new(
                    "treasuryd_webhook_attempts_total",
                    "Webhook delivery attempts by endpoint and outcome (success, http_error, gone, timeout, connect_error, refused).",
                ),
                &["endpoint", "outcome"],
            )?,
            deliveries_total: IntCounterVec::new(
                Opts::new(
                    "treasuryd_webhook_deliveries_total",
                    "Webhook deliveries that ended, by endpoint and outcome (delivered, dead).",
                ),
                &["endpoint", "outcome"],
            )?,
            success_ratio_15m: prometheus::Gauge::new(
                "treasuryd_webhook_success_ratio_15m",
                "Successful webhook attempts over all attempts in the last 15 minutes (1 when there were none).",
            )?,
            delivery_latency_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "treasuryd_webhook_delivery_latency_seconds",
                    "From the event's outbox write to its 2xx answer, in seconds.",
                )
                .buckets(vec![
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                    21600.0, 86400.0,
                ]),
            )?,
            dead_letter: IntGaugeVec::new(
                Opts::new(
                    "treasuryd_webhook_dead_letter",
                    "Dead-lettered webhook deliveries (retry horizon passed, not replayed), by endpoint.",
                ),
                &["endpoint"],
            )?,
            pending: IntGaugeVec::new(
                Opts::new(
                    "treasuryd_webhook_pending",
                    "Webhook deliveries waiting (first try or retry), by endpoint.",
                ),
                &["endpoint"],
            )?,
            oldest_undelivered_seconds: GaugeVec::new(
                Opts::new(
                    "treasuryd_webhook_oldest_undelivered_seconds",
                    "Age of the oldest pending delivery's event, by endpoint (0 when none).",
                ),
                &["endpoint"],
            )?,
            outbox_undispatched: IntGauge::new(
                "treasuryd_webhook_outbox_undispatched",
                "Outbox events not yet rendered and queued for their endpoints.",
            )?,
            outbox_oldest_undispatched_seconds: prometheus::Gauge::new(
                "treasuryd_webhook_outbox_oldest_undispatched_seconds",
                "Age of the oldest outbox event not yet queued (0 when none).",
            )?,
            window: Default::default(),
        };
        registry.register(Box::new(m.attempts_total.clone()))?;
        registry.register(Box::new(m.deliveries_total.clone()))?;
        registry.register(Box::new(m.success_ratio_15m.clone()))?;
        registry.register(Box::new(m.delivery_latency_seconds.clone()))?;
        registry.register(Box::new(m.dead_letter.clone()))?;
        registry.register(Box::new(m.pending.clone()))?;
        registry.register(Box::new(m.oldest_undelivered_seconds.clone()))?;
        registry.register(Box::new(m.outbox_undispatched.clone()))?;
        registry.register(Box::new(m.outbox_oldest_undispatched_seconds.clone()))?;
        m.success_ratio_15m.set(1.0);
        Ok(m)
    }

    /// Counts one attempt and updates the 15-minute ratio.
    pub fn attempt(&self, endpoint: &str, outcome: &str, now_micros: i64) {
        self.attempts_total
            .with_label_values(&[endpoint, outcome])
            .inc();
        let minute = now_micros.div_euclid(60_000_000);
        if let Ok(mut w) = self.window.lock() {
            w.record(minute, outcome == "success");
            self.success_ratio_15m.set(w.ratio(minute));
        }
    }

    /// Ages the 15-minute window out when nothing is attempted.
    pub fn refresh_ratio(&self, now_micros: i64) {
        if let Ok(mut w) = self.window.lock() {
            self.success_ratio_15m
                .set(w.ratio(now_micros.div_euclid(60_000_000)));
        }
    }

    /// Publishes an endpoint's series at zero so alerts see them before the first attempt.
    pub fn publish_endpoint(&self, endpoint: &str) {
        for outcome in Self::ATTEMPT_OUTCOMES {
            self.attempts_total.with_label_values(&[endpoint, outcome]);
        }
        for outcome in ["delivered", "dead"] {
            self.deliveries_total
                .with_label_values(&[endpoint, outcome]);
        }
    }

    pub fn set_backlog(&self, backlog: &crate::webhooks::outbox::Backlog, now_micros: i64) {
        let age =
            |created: Option<i64>| created.map_or(0.0, |c| (now_micros - c).max(0) as f64 / 1e6);
        for e in &backlog.endpoints {
            let id = e.endpoint.to_string();
            self.publish_endpoint(&id);
            self.dead_letter.with_label_values(&[&id]).set(e.dead);
            self.pending.with_label_values(&[&id]).set(e.pending);
            self.oldest_undelivered_seconds
                .with_label_values(&[&id])
                .set(age(e.oldest_pending_created_at));
        }
        self.outbox_undispatched.set(backlog.undispatched);
        self.outbox_oldest_undispatched_seconds
            .set(age(backlog.oldest_undispatched_created_at));
    }
}

/// End-of-day settlement of trust sessions.
#[derive(Clone)]
pub struct TrustMetrics {
    /// From a session's cut-off to its settlement, in seconds (the p95 <= 60 min SLO).
    pub eod_duration_seconds: HistogramVec,
    /// Sessions past their cut-off and not settled (closed, settling or unsettled).
    pub unsettled_sessions: IntGauge,
    /// The oldest of those, seconds since its cut-off (0 when none): the rollback trigger is
    /// unsettled sessions 90 minutes after cut-off.
    pub oldest_unsettled_seconds: prometheus::Gauge,
    /// What those sessions still owe net, per asset, in token units: the rollback trigger
    /// asks that it has not fallen ("without improvement").
    pub unsettled_units: GaugeVec,
    /// Sessions settled, by outcome (nothing, full, partial, carried); the partial and T+1
    /// share is partial+carried over the total.
    pub settled_total: IntCounterVec,
    /// Obligations netted at close, gross, in token units.
    pub netted_amount_total: prometheus::CounterVec,
    /// Of the sessions settled with something owed, the share settled partly or carried whole
    /// to T+1 (since start).
    pub partial_t_plus_1_share: prometheus::Gauge,
    /// What a company may still pay out per asset under its tier, in token units: `payout` is
    /// the largest single payout that would pass now, `day` and `month` what is left of the
    /// volumes. Companies are created by an Admin, so the labels stay bounded.
    pub tier_headroom_units: GaugeVec,
    /// 1, labelled with the tier table's version (absent: no table).
    pub tier_table: IntGaugeVec,
}

impl TrustMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            eod_duration_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "treasuryd_trust_eod_duration_seconds",
                    "From a trust session's cut-off to its settlement, in seconds.",
                )
                .buckets(vec![
                    60.0, 300.0, 600.0, 900.0, 1800.0, 2700.0, 3600.0, 4500.0, 5400.0, 7200.0,
                    14400.0, 43200.0, 86400.0,
                ]),
                &["network", "asset"],
            )?,
            unsettled_sessions: IntGauge::new(
                "treasuryd_trust_eod_unsettled_sessions",
                "Trust sessions past their cut-off and not settled.",
            )?,
            oldest_unsettled_seconds: prometheus::Gauge::new(
                "treasuryd_trust_eod_oldest_unsettled_seconds",
                "Seconds since the cut-off of the oldest session not settled (0 when none).",
            )?,
            unsettled_units: GaugeVec::new(
                Opts::new(
                    "treasuryd_trust_eod_unsettled_units",
                    "What trust sessions past their cut-off and not settled still owe net, per asset, in token units (0 once settled).",
                ),
                &["network", "asset"],
            )?,
            settled_total: IntCounterVec::new(
                Opts::new(
                    "treasuryd_trust_sessions_settled_total",
                    "Trust sessions settled, by outcome (nothing, full, partial, carried).",
                ),
                &["outcome"],
            )?,
            netted_amount_total: prometheus::CounterVec::new(
                Opts::new(
                    "treasuryd_trust_netted_amount_total",
                    "Obligations netted at session close (both directions, gross), in token units.",
                ),
                &["network", "asset"],
            )?,
            partial_t_plus_1_share: prometheus::Gauge::new(
                "treasuryd_trust_partial_t_plus_1_share",
                "Of the sessions settled with something owed since start, the share settled partly or carried to T+1.",
            )?,
            tier_headroom_units: GaugeVec::new(
                Opts::new(
                    "treasuryd_tier_headroom_units",
                    "What a company may still pay out under its tier, in token units: the largest single payout now (payout), and what is left of the day's and the month's volume.",
                ),
                &["company", "tier", "network", "asset", "window"],
            )?,
            tier_table: IntGaugeVec::new(
                Opts::new(
                    "treasuryd_tier_table_info",
                    "1, labelled with the version of the tier table in force.",
                ),
                &["version"],
            )?,
        };
        registry.register(Box::new(m.eod_duration_seconds.clone()))?;
        registry.register(Box::new(m.unsettled_sessions.clone()))?;
        registry.register(Box::new(m.oldest_unsettled_seconds.clone()))?;
        registry.register(Box::new(m.unsettled_units.clone()))?;
        registry.register(Box::new(m.settled_total.clone()))?;
        registry.register(Box::new(m.netted_amount_total.clone()))?;
        registry.register(Box::new(m.partial_t_plus_1_share.clone()))?;
        registry.register(Box::new(m.tier_headroom_units.clone()))?;
        registry.register(Box::new(m.tier_table.clone()))?;
        for outcome in ["nothing", "full", "partial", "carried"] {
            m.settled_total.with_label_values(&[outcome]);
        }
        Ok(m)
    }

    /// Drops a company's headroom series for `asset`, under every tier.
    pub fn forget_headroom(&self, company: &str, asset: &crate::domain::AssetKey) {
        for tier in crate::domain::trust::Tier::ALL {
            for window in ["payout", "day", "month"] {
                let _ = self.tier_headroom_units.remove_label_values(&[
                    company,
                    tier.as_str(),
                    &asset.network,
                    &asset.code,
                    window,
                ]);
            }
        }
    }

    /// A company's headroom under `quota`, given what it `used`.
    pub fn show_headroom(
        &self,
        company: &str,
        q: &crate::domain::tiers::Quota,
        used: crate::domain::tiers::Used,
    ) {
        let scale = 10f64.powi(i32::from(q.spec.decimals));
        for (window, left) in q.windows(used) {
            self.tier_headroom_units
                .with_label_values(&[
                    company,
                    q.tier.as_str(),
                    &q.spec.key.network,
                    &q.spec.key.code,
                    window,
                ])
                .set(left as f64 / scale);
        }
    }

    pub fn closed(
        &self,
        asset: &crate::domain::AssetKey,
        gross: i128,
        ledger: &crate::ledger::Ledger,
    ) {
        let decimals = ledger.asset(asset).map_or(0, |a| a.decimals);
        let units = gross as f64 / 10f64.powi(i32::from(decimals));
        self.netted_amount_total
            .with_label_values(&[&asset.network, &asset.code])
            .inc_by(units);
    }

    /// Counts a settled session and observes cut-off → settlement.
    pub fn settled(&self, asset: &crate::domain::AssetKey, session: &crate::trust::Session) {
        if let Some(o) = session.outcome {
            self.settled_total.with_label_values(&[o.as_str()]).inc();
            let count = |o: &str| self.settled_total.with_label_values(&[o]).get() as f64;
            let short = count("partial") + count("carried");
            let owed = short + count("full");
            if owed > 0.0 {
                self.partial_t_plus_1_share.set(short / owed);
            }
        }
        if let Some(at) = session.settled_at {
            self.eod_duration_seconds
                .with_label_values(&[&asset.network, &asset.code])
                .observe((at - session.cutoff_at).max(0) as f64 / 1e6);
        }
    }

    /// Sessions past cut-off and not settled, and what they still owe per asset (base units).
    /// An asset once owed stays exported, at 0 when settled, so "has it fallen" has an answer.
    pub fn set_unsettled(
        &self,
        sessions: &[crate::trust::Session],
        owed: &std::collections::BTreeMap<crate::domain::AssetKey, i128>,
        ledger: &crate::ledger::Ledger,
        now: i64,
    ) {
        let exported = prometheus::core::Collector::collect(&self.unsettled_units);
        for series in exported.iter().flat_map(|f| f.get_metric()) {
            let label = |name: &str| {
                series
                    .get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default()
            };
            let asset = crate::domain::AssetKey::new(label("network"), label("asset"));
            if !owed.contains_key(&asset) {
                self.unsettled_units
                    .with_label_values(&[&asset.network, &asset.code])
                    .set(0.0);
            }
        }
        for (asset, units) in owed {
            let decimals = ledger.asset(asset).map_or(0, |a| a.decimals);
            self.unsettled_units
                .with_label_values(&[&asset.network, &asset.code])
                .set(*units as f64 / 10f64.powi(i32::from(decimals)));
        }
        self.unsettled_sessions
            .set(i64::try_from(sessions.len()).unwrap_or(i64::MAX));
        let oldest = sessions.iter().map(|s| s.cutoff_at).min();
        self.oldest_unsettled_seconds
            .set(oldest.map_or(0.0, |c| (now - c).max(0) as f64 / 1e6));
    }
}

fn build_info(registry: &Registry) -> prometheus::Result<()> {
    let g = IntGauge::with_opts(
        Opts::new("treasuryd_build_info", "Build information; always 1.")
            .const_label("version", env!("CARGO_PKG_VERSION")),
    )?;
    g.set(1);
    registry.register(Box::new(g))
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        build_info(&registry)?;
        let latency_buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let http = HttpMetrics {
            requests_total: IntCounterVec::new(
                Opts::new(
                    "treasuryd_http_requests_total",
                    "HTTP requests answered, by route template, method and status code.",
                ),
                &["route", "method", "status"],
            )?,
            request_duration_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "treasuryd_http_request_duration_seconds",
                    "HTTP request latency in seconds, by route template and method.",
                )
                .buckets(latency_buckets.clone()),
                &["route", "method"],
            )?,
            auth_failures_total: IntCounterVec::new(
                Opts::new(
                    "treasuryd_auth_failures_total",
                    "Wrong bearer tokens (bearer) and second-factor codes (totp).",
                ),
                &["kind"],
            )?,
            auth_throttled_total: IntCounterVec::new(
                Opts::new(
                    "treasuryd_auth_throttled_total",
                    "Attempts refused unjudged (429) because their source or user used up its failures (bearer, totp).",
                ),
                &["kind"],
            )?,
        };
        let operations = OperationsMetrics::new(&registry)?;
        let ledger = LedgerMetrics {
            writer_panics: operations
                .task_restarts_total
                .with_label_values(&["ledger_writer"]),
            transactions_total: IntCounterVec::new(
                Opts::new(
                    "treasuryd_ledger_transactions_total",
                    "Journal transactions committed, by entry kind.",
                ),
                &["kind"],
            )?,
            rejections_total: IntCounterVec::new(
                Opts::new(
                    "treasuryd_ledger_rejections_total",
                    "Ledger commands refused, by error code.",
                ),
                &["code"],
            )?,
            commit_duration_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "treasuryd_ledger_commit_duration_seconds",
                    "Duration of one ledger database transaction (a batch), in seconds.",
                )
                .buckets(latency_buckets),
            )?,
            batch_commands: Histogram::with_opts(
                HistogramOpts::new(
                    "treasuryd_ledger_batch_commands",
                    "Commands carried by one ledger database transaction.",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            )?,
        };
        registry.register(Box::new(http.requests_total.clone()))?;
        registry.register(Box::new(http.request_duration_seconds.clone()))?;
        registry.register(Box::new(http.auth_failures_total.clone()))?;
        registry.register(Box::new(http.auth_throttled_total.clone()))?;
        for kind in ["bearer", "totp"] {
            http.auth_failures_total.with_label_values(&[kind]);
            http.auth_throttled_total.with_label_values(&[kind]);
        }
        registry.register(Box::new(ledger.transactions_total.clone()))?;
        registry.register(Box::new(ledger.rejections_total.clone()))?;
        registry.register(Box::new(ledger.commit_duration_seconds.clone()))?;
        registry.register(Box::new(ledger.batch_commands.clone()))?;
        // Publish every kind at zero so dashboards and alerts see the series before the first write.
        for kind in crate::ledger::EntryKind::ALL {
            ledger
                .transactions_total
                .with_label_values(&[kind.as_str()]);
        }
        let payouts = PayoutMetrics::new(&registry)?;
        let wallets = WalletMetrics::new(&registry)?;
        let rpc = RpcMetrics::new(&registry)?;
        let scope = ScopeMetrics::new(&registry)?;
        let pilot = PilotMetrics::new(&registry)?;
        let webhooks = WebhookMetrics::new(&registry)?;
        let trust = TrustMetrics::new(&registry)?;
        Ok(Self {
            operations,
            trust,
            webhooks,
            pilot,
            scope,
            registry,
            rpc,
            http,
            ledger,
            payouts,
            wallets,
        })
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec only fails on a malformed metric family, which `register` rejects.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Metrics {
    /// The value of the gauge `name` with exactly these labels, if that series exists. Unlike
    /// `with_label_values` it never creates one (a page reading a value must not export a
    /// zero the daemon never set).
    pub fn read_gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let family = self
            .registry
            .gather()
            .into_iter()
            .find(|f| f.name() == name)?;
        family
            .get_metric()
            .iter()
            .find(|m| {
                m.get_label().len() == labels.len()
                    && labels.iter().all(|(k, v)| {
                        m.get_label()
                            .iter()
                            .any(|l| l.name() == *k && l.value() == *v)
                    })
            })
            .map(|m| m.get_gauge().value())
    }

    /// Every metric this daemon exports, sorted by name (what `docs/metrics.md` lists).
    pub fn catalogue(&self) -> Vec<MetricDescription> {
        self.registry.catalogue()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `| name | type | labels | meaning |` rows of a Markdown table.
    fn documented(text: &str) -> Vec<(String, String, Vec<String>, String)> {
        text.lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l
                    .trim()
                    .strip_prefix('|')?
                    .strip_suffix('|')?
                    .split('|')
                    .map(str::trim)
                    .collect();
                let [name, kind, labels, meaning] = cells.as_slice() else {
                    return None;
                };
                let name = name.trim_matches('`');
                if !name.starts_with("treasuryd_") {
                    return None;
                }
                let labels = labels
                    .split(',')
                    .map(|l| l.trim().trim_matches('`').to_owned())
                    .filter(|l| !l.is_empty() && l != "—")
                    .collect();
                Some((
                    name.to_owned(),
                    (*kind).to_owned(),
                    labels,
                    (*meaning).to_owned(),
                ))
            })
            .collect()
    }

    #[test]
    fn the_catalogue_in_docs_lists_exactly_what_is_exported() {
        let metrics = Metrics::new().unwrap();
        let exported: Vec<(String, String, Vec<String>)> = metrics
            .catalogue()
            .into_iter()
            .map(|d| (d.name, d.kind.to_owned(), d.labels))
            .collect();
        let docs = documented(include_str!("../docs/metrics.md"));
        for (_, _, _, meaning) in &docs {
            assert!(!meaning.is_empty(), "every metric says what it means");
        }
        let listed: Vec<(String, String, Vec<String>)> =
            docs.into_iter().map(|(n, k, l, _)| (n, k, l)).collect();
        let missing: Vec<String> = metrics
            .catalogue()
            .into_iter()
            .filter(|d| !listed.contains(&(d.name.clone(), d.kind.to_owned(), d.labels.clone())))
            .map(|d| {
                format!(
                    "| `{}` | {} | {} | {} |",
                    d.name,
                    d.kind,
                    if d.labels.is_empty() {
                        "—".to_owned()
                    } else {
                        d.labels
                            .iter()
                            .map(|l| format!("`{l}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                    d.help
                )
            })
            .collect();
        let stale: Vec<&(String, String, Vec<String>)> =
            listed.iter().filter(|l| !exported.contains(l)).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "docs/metrics.md is out of step with the registry.\nAdd or correct:\n{}\nRemove: {stale:?}",
            missing.join("\n")
        );
    }

    /// Labels stay bounded: nothing per payout, deal, chunk, transaction or request.
    #[test]
    fn no_label_is_unbounded() {
        let unbounded = [
            "payout",
            "payout_id",
            "deal",
            "deal_id",
            "chunk",
            "tx",
            "hash",
            "account",
            "request_id",
            "id",
            "path",
            "user",
        ];
        for d in Metrics::new().unwrap().catalogue() {
            for l in &d.labels {
                assert!(
                    !unbounded.contains(&l.as_str()),
                    "{} has the unbounded label {l}",
                    d.name
                );
            }
        }
    }
}
