//! The deal operations, shared by the API and the timer runner. Each builds its ledger
//! postings and the guarded deal step they carry, so money, state, timers and timeline change
//! in one database transaction or not at all. Postings are keyed by deal and step
//! (`deal:{id}:fund`, …) or by timer (`timer:{id}`), so a repeated call replays.

use super::{Deal, DealState, DealStep, Evidence, Issue, Resolution};
use crate::clock::DynClock;
use crate::domain::{AccountId, Amount, DealId, UnixMicros};
use crate::ledger::{Command, Effect, Ledger, LedgerError, Operation, ReleaseKind};
use crate::scope::ScopeRefusal;
use crate::store::{AllowlistStore, AuditRecord, EscrowStore, OperationsStore, StoreError};
use crate::templates::{DisputeExpiry, DisputeOutcome, TemplateCatalog};
use crate::timers::{Timer, TimerKind};
use std::sync::Arc;

const DAY_MICROS: i64 = 86_400_000_000;
const HOUR_MICROS: i64 = 3_600_000_000;

#[derive(Debug, thiserror::Error)]
pub enum EscrowError {
    #[error("deal {0} does not exist")]
    NotFound(DealId),
    #[error("{message}")]
    Invalid {
        code: &'static str,
        field: String,
        message: String,
    },
    #[error(transparent)]
    OutOfScope(#[from] ScopeRefusal),
    /// Another step got there first (the deal or timer moved on).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for EscrowError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(_, m) => EscrowError::Conflict(m),
            other => EscrowError::Store(other),
        }
    }
}

fn invalid(code: &'static str, field: &str, message: impl Into<String>) -> EscrowError {
    EscrowError::Invalid {
        code,
        field: field.to_owned(),
        message: message.into(),
    }
}

/// A deal as a partner asks for it.
#[derive(Debug, Clone)]
pub struct NewDeal {
    pub buyer: AccountId,
    pub seller: AccountId,
    pub country: String,
    pub category: String,
    pub amount: Amount,
    pub reference: Option<String>,
    /// EIP-55; releases to the seller are paid out there on chain.
    pub seller_payout: Option<String>,
    /// EIP-55; offsets and refunds to the buyer are paid out there on chain.
    pub buyer_refund: Option<String>,
}

#[derive(Clone)]
pub struct Escrow {
    pub ledger: Ledger,
    pub deals: Arc<dyn EscrowStore>,
    /// The seller's allowlist decides where a deal may pay out.
    pub allowlists: Arc<dyn AllowlistStore>,
    /// The pilot scope decides which templates may open deals.
    pub operations: Arc<dyn OperationsStore>,
    pub templates: Arc<TemplateCatalog>,
    pub clock: DynClock,
    /// The payout networks, for deals that pay out on chain.
    pub networks: Arc<crate::payouts::networks::PayoutNetworks>,
    /// Days to settle the Go/No-Go report holds each category to (`escrow.settle_target_days`).
    pub settle_targets: Arc<std::collections::BTreeMap<String, u32>>,
}

/// A ledger posting of a deal step, and where what it moves goes on chain afterwards.
struct Posting {
    key: String,
    op: Operation,
    /// Pay the amount out from this account to this address (a payout request).
    payout: Option<(AccountId, String, i128)>,
}

fn posting(key: String, op: Operation) -> Posting {
    Posting {
        key,
        op,
        payout: None,
    }
}

impl Escrow {
    pub async fn get(&self, id: DealId) -> Result<Deal, EscrowError> {
        match self.deals.get_deal(id).await {
            Err(StoreError::NotFound) => Err(EscrowError::NotFound(id)),
            other => Ok(other?),
        }
    }

    /// A new deal on the template the scope admits for its country and category.
    pub async fn create(
        &self,
        req: NewDeal,
        actor: &str,
        audit: &AuditRecord,
    ) -> Result<Deal, EscrowError> {
        let scope = crate::scope::current(self.operations.as_ref()).await?;
        let templates = self.templates.snapshot();
        let template = scope
            .admit(&templates, &req.country, &req.category)?
            .clone();
        if req.buyer == req.seller {
            return Err(invalid(
                "invalid_field",
                "seller_account",
                "buyer and seller must be different accounts",
            ));
        }
        let mut asset = None;
        for (field, id) in [("buyer_account", req.buyer), ("seller_account", req.seller)] {
            let account = match self.ledger.store().get_account(id).await {
                Ok(a) => a,
                Err(StoreError::NotFound) => {
                    return Err(invalid(
                        "account_not_found",
                        field,
                        format!("{field}: account {id} does not exist"),
                    ));
                }
                Err(e) => return Err(e.into()),
            };
            if !account.kind.holds_customer_funds() {
                return Err(invalid(
                    "wrong_account_kind",
                    field,
                    format!(
                        "{field}: a {} account cannot take part in a deal",
                        account.kind.as_str()
                    ),
                ));
            }
            match &asset {
                None => asset = Some(account.asset),
                Some(a) if *a != account.asset => {
                    return Err(invalid(
                        "asset_mismatch",
                        field,
                        format!("buyer and seller accounts must hold the same asset ({a})"),
                    ));
                }
                Some(_) => {}
            }
        }
        let asset = asset.ok_or_else(|| invalid("invalid_field", "buyer_account", "missing"))?;
        for (field, address, account) in [
            ("seller_payout_address", &req.seller_payout, req.seller),
            ("buyer_refund_address", &req.buyer_refund, req.buyer),
        ] {
            if let Some(address) = address {
                self.check_payout_address(field, address, account, &asset)
                    .await?;
            }
        }
        let total = req.amount.units();
        let (immediate, holdback) = template.split(total);
        let at = self.clock.now();
        let spec = self.ledger.asset(&asset).cloned();
        let show = |u: i128| spec.as_ref().map_or(u.to_string(), |s| s.format(u));
        let detail = format!(
            "{} {asset} on template {} (immediate {}, holdback {})",
            show(total),
            template.id,
            show(immediate),
            show(holdback)
        );
        let deal = Deal {
            id: DealId::new(),
            template,
            buyer: req.buyer,
            seller: req.seller,
            asset,
            amount: total,
            immediate,
            holdback,
            state: DealState::Created,
            hold: None,
            released: 0,
            offset: 0,
            refunded: 0,
            issue: None,
            escalated: false,
            resolution: None,
            reference: req.reference,
            created_by: actor.to_owned(),
            created_at: at,
            updated_at: at,
            settled_at: None,
            seller_payout: req.seller_payout,
            buyer_refund: req.buyer_refund,
        };
        self.deals.create_deal(&deal, &detail, audit).await?;
        Ok(deal)
    }

    /// Holds the whole amount on the buyer's account.
    pub async fn fund(
        &self,
        id: DealId,
        actor: &str,
        audit: AuditRecord,
    ) -> Result<Deal, EscrowError> {
        let deal = self.get(id).await?;
        let mut step = DealStep::new(&deal, DealState::Funded, actor, self.clock.now()).event(
            "FUNDED",
            format!("{} held on the buyer's account", deal.amount),
        );
        step.from = vec![DealState::Created];
        step.takes_hold = true;
        let op = Operation::Hold {
            account: deal.buyer,
            amount: Amount::new(deal.amount)
                .map_err(|_| invalid("invalid_amount", "amount", "deal amount"))?,
        };
        self.post(
            &deal,
            vec![posting(format!("deal:{id}:fund"), op)],
            step,
            Some(audit),
        )
        .await?;
        self.get(id).await
    }

    /// The seller delivered: the immediate part is released to the seller and the inspection
    /// period starts (AUTO_APPROVE).
    pub async fn deliver(
        &self,
        id: DealId,
        evidence: &[uuid::Uuid],
        actor: &str,
        audit: AuditRecord,
    ) -> Result<Deal, EscrowError> {
        let deal = self.get(id).await?;
        self.check_evidence(&deal, evidence).await?;
        let at = self.clock.now();
        let due = at + i64::from(deal.template.inspection_ttl_days) * DAY_MICROS;
        let mut step = DealStep::new(&deal, DealState::Inspection, actor, at)
            .event("DELIVERED", evidence_note(evidence))
            .event(
                "INSPECTION",
                format!("{} day(s) to inspect", deal.template.inspection_ttl_days),
            );
        step.from = vec![DealState::Funded];
        step.released = deal.immediate;
        step.set_timer = Some((TimerKind::AutoApprove, due));
        let postings = match (deal.hold, deal.immediate) {
            (Some(hold), units) if units > 0 => vec![deal.to_seller(
                format!("deal:{id}:deliver"),
                release(hold, units, ReleaseKind::Release, deal.seller)?,
                units,
            )],
            _ => Vec::new(),
        };
        self.post(&deal, postings, step, Some(audit)).await?;
        self.get(id).await
    }

    /// The buyer approves: the holdback goes to the seller and the deal settles.
    pub async fn approve(
        &self,
        id: DealId,
        actor: &str,
        audit: AuditRecord,
    ) -> Result<Deal, EscrowError> {
        let deal = self.get(id).await?;
        self.settle_to_seller(
            &deal,
            actor,
            None,
            format!("deal:{id}:approve"),
            Some(audit),
        )
        .await?;
        self.get(id).await
    }

    async fn settle_to_seller(
        &self,
        deal: &Deal,
        actor: &str,
        timer: Option<&Timer>,
        key: String,
        audit: Option<AuditRecord>,
    ) -> Result<(), EscrowError> {
        let mut step = DealStep::new(deal, DealState::Settled, actor, self.clock.now());
        if let Some(t) = timer {
            step.fire_timer = Some(t.id);
            step = step.event("TIMER_FIRED", t.kind.as_str());
        }
        step = step
            .event(
                "APPROVED",
                if timer.is_some() {
                    "inspection period over (AUTO_APPROVE)"
                } else {
                    "approved by the buyer"
                },
            )
            .event("SETTLED", "holdback released to the seller");
        step.from = vec![DealState::Inspection];
        step.cancel_timers = true;
        let held = deal.held();
        step.released = held;
        let postings = match deal.hold {
            Some(hold) if held > 0 => {
                vec![deal.to_seller(
                    key,
                    release(hold, held, ReleaseKind::Release, deal.seller)?,
                    held,
                )]
            }
            _ => Vec::new(),
        };
        self.post(deal, postings, step, audit).await
    }

    /// The buyer disputes the delivery within the inspection period.
    pub async fn raise_issue(
        &self,
        id: DealId,
        reason_code: &str,
        detail: &str,
        evidence: &[uuid::Uuid],
        actor: &str,
        audit: AuditRecord,
    ) -> Result<Deal, EscrowError> {
        let deal = self.get(id).await?;
        if !deal.template.offset_caps_bps.contains_key(reason_code) {
            let codes: Vec<&str> = deal
                .template
                .offset_caps_bps
                .keys()
                .map(String::as_str)
                .collect();
            return Err(invalid(
                "invalid_reason_code",
                "reason_code",
                format!("reason_code must be one of {}", codes.join(", ")),
            ));
        }
        self.check_evidence(&deal, evidence).await?;
        let at = self.clock.now();
        let due = at + i64::from(deal.template.dispute_ttl_hours) * HOUR_MICROS;
        let mut step = DealStep::new(&deal, DealState::Issue, actor, at).event(
            "ISSUE_RAISED",
            format!("{reason_code}: {detail} {}", evidence_note(evidence)),
        );
        step.from = vec![DealState::Inspection];
        step.cancel_timers = true;
        step.set_timer = Some((TimerKind::DisputeTtl, due));
        step.issue = Some(Issue {
            reason_code: reason_code.to_owned(),
            detail: detail.to_owned(),
            raised_at: at,
        });
        self.deals.apply_deal_step(&step, Some(&audit)).await?;
        self.get(id).await
    }

    /// An Operator's decision on an issue: only the template's outcomes; an offset at most the
    /// reason code's cap (and what is held); every unit still held goes somewhere.
    pub async fn resolve(
        &self,
        id: DealId,
        outcome: DisputeOutcome,
        offset: Option<Amount>,
        reason: &str,
        actor: &str,
        audit: AuditRecord,
    ) -> Result<Deal, EscrowError> {
        let deal = self.get(id).await?;
        if !deal.template.dispute_outcomes.contains(&outcome) {
            let allowed: Vec<&str> = deal
                .template
                .dispute_outcomes
                .iter()
                .map(|o| o.as_str())
                .collect();
            return Err(invalid(
                "outcome_not_allowed",
                "outcome",
                format!(
                    "{} does not allow {}; allowed: {}",
                    deal.template.id,
                    outcome.as_str(),
                    allowed.join(", ")
                ),
            ));
        }
        let offset = match (outcome, offset) {
            (DisputeOutcome::Offset, Some(o)) => o.units(),
            (DisputeOutcome::Offset, None) => {
                return Err(invalid(
                    "missing_field",
                    "offset",
                    "an OFFSET needs the offset amount",
                ));
            }
            (_, Some(_)) => {
                return Err(invalid(
                    "invalid_field",
                    "offset",
                    "offset is only for the OFFSET outcome",
                ));
            }
            (_, None) => 0,
        };
        if outcome == DisputeOutcome::Offset {
            let reason_code = deal
                .issue
                .as_ref()
                .map(|i| i.reason_code.clone())
                .unwrap_or_default();
            let cap = deal
                .template
                .offset_cap(&reason_code, deal.amount)
                .unwrap_or(0)
                .min(deal.held());
            if offset > cap {
                return Err(invalid(
                    "offset_above_cap",
                    "offset",
                    format!(
                        "an offset for {reason_code} is at most {cap} base units (the cap, within what is held)"
                    ),
                ));
            }
        }
        self.settle_dispute(&deal, outcome, offset, reason, actor, None, Some(audit))
            .await?;
        self.get(id).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn settle_dispute(
        &self,
        deal: &Deal,
        outcome: DisputeOutcome,
        offset: i128,
        reason: &str,
        actor: &str,
        timer: Option<&Timer>,
        audit: Option<AuditRecord>,
    ) -> Result<(), EscrowError> {
        let at = self.clock.now();
        let held = deal.held();
        let id = deal.id;
        let mut step = DealStep::new(deal, DealState::Settled, actor, at);
        if let Some(t) = timer {
            step.fire_timer = Some(t.id);
            step = step.event("TIMER_FIRED", t.kind.as_str());
        }
        step = step.event(
            "RESOLVED",
            format!("{} by {actor}: {reason}", outcome.as_str()),
        );
        step.from = vec![DealState::Issue];
        step.cancel_timers = true;
        step.resolution = Some(Resolution {
            outcome,
            offset,
            by: actor.to_owned(),
            reason: reason.to_owned(),
            at,
        });
        let key = |part: &str| match timer {
            Some(t) => format!("timer:{}:{part}", t.id),
            None => format!("deal:{id}:resolve:{part}"),
        };
        let mut postings = Vec::new();
        if let Some(hold) = deal.hold.filter(|_| held > 0) {
            match outcome {
                DisputeOutcome::ReleaseFull => {
                    step.released = held;
                    postings.push(deal.to_seller(
                        key("release"),
                        release(hold, held, ReleaseKind::Release, deal.seller)?,
                        held,
                    ));
                }
                DisputeOutcome::RefundFull => {
                    step.refunded = held;
                    postings.push(deal.to_buyer(key("refund"), Operation::Void { hold }, held));
                }
                DisputeOutcome::Offset => {
                    step.offset = offset;
                    step.released = held - offset;
                    if offset > 0 {
                        postings.push(deal.to_buyer(
                            key("offset"),
                            release(hold, offset, ReleaseKind::Offset, deal.buyer)?,
                            offset,
                        ));
                    }
                    if held > offset {
                        postings.push(deal.to_seller(
                            key("release"),
                            release(hold, held - offset, ReleaseKind::Release, deal.seller)?,
                            held - offset,
                        ));
                    }
                }
            }
        }
        let summary = format!(
            "to the seller {}, offset to the buyer {}, refunded to the buyer {}",
            step.released, step.offset, step.refunded
        );
        step = step.event("SETTLED", summary);
        self.post(deal, postings, step, audit).await
    }

    /// Fires a due timer: AUTO_APPROVE approves; DISPUTE_TTL does what the template says.
    pub async fn fire(&self, timer: &Timer) -> Result<(), EscrowError> {
        let deal = self.get(timer.deal).await?;
        match timer.kind {
            TimerKind::AutoApprove => {
                self.settle_to_seller(
                    &deal,
                    "timer",
                    Some(timer),
                    format!("timer:{}", timer.id),
                    None,
                )
                .await
            }
            TimerKind::DisputeTtl => {
                match deal.template.on_dispute_ttl_expiry {
                    DisputeExpiry::Escalate => {
                        let mut step = DealStep::new(&deal, DealState::Issue, "timer", self.clock.now())
                        .event("TIMER_FIRED", timer.kind.as_str())
                        .event(
                            "ESCALATED",
                            "the dispute TTL ran out: funds stay held until an Operator resolves it",
                        );
                        step.from = vec![DealState::Issue];
                        step.fire_timer = Some(timer.id);
                        step.escalate = true;
                        Ok(self.deals.apply_deal_step(&step, None).await?)
                    }
                    DisputeExpiry::ReleaseFull | DisputeExpiry::RefundFull => {
                        let outcome =
                            if deal.template.on_dispute_ttl_expiry == DisputeExpiry::ReleaseFull {
                                DisputeOutcome::ReleaseFull
                            } else {
                                DisputeOutcome::RefundFull
                            };
                        self.settle_dispute(
                            &deal,
                            outcome,
                            0,
                            "the dispute TTL ran out; the template decides",
                            "timer",
                            Some(timer),
                            None,
                        )
                        .await
                    }
                }
            }
        }
    }

    /// An address a deal pays out to: canonical on its network (EIP-55, or base58check on
    /// Tron), not zero, on a payout network that pays this
    /// asset, and on the account's allowlist when that is enforced.
    pub async fn check_payout_address(
        &self,
        field: &str,
        address: &str,
        account: AccountId,
        asset: &crate::domain::AssetKey,
    ) -> Result<(), EscrowError> {
        let kind = self
            .networks
            .get(&asset.network)
            .map_or(crate::payouts::networks::ChainKind::Evm, |n| n.kind);
        if let Err(message) = crate::payouts::networks::canonical_address(kind, address) {
            return Err(invalid(
                "invalid_address",
                field,
                format!("{field} {message}"),
            ));
        }
        if self
            .networks
            .get(&asset.network)
            .and_then(|n| n.tokens.get(&asset.code))
            .is_none()
        {
            return Err(invalid(
                "unknown_asset",
                field,
                format!("{asset} is not paid out on chain; leave {field} out"),
            ));
        }
        let allowlist = self.allowlists.allowlist(account).await?;
        if !allowlist.allows(&asset.network, address) {
            return Err(invalid(
                "destination_not_allowed",
                field,
                format!("{address} is not on the allowlist of account {account}"),
            ));
        }
        Ok(())
    }

    /// Evidence the template requires: at least one piece, each uploaded to this deal.
    async fn check_evidence(&self, deal: &Deal, ids: &[uuid::Uuid]) -> Result<(), EscrowError> {
        if deal.template.evidence_required && ids.is_empty() {
            return Err(invalid(
                "evidence_required",
                "evidence",
                format!(
                    "{} requires evidence: upload it to /v1/deals/{}/evidence and name its id",
                    deal.template.id, deal.id
                ),
            ));
        }
        if ids.is_empty() {
            return Ok(());
        }
        let known: Vec<Evidence> = self.deals.evidence(deal.id).await?;
        for (i, id) in ids.iter().enumerate() {
            if !known.iter().any(|e| e.id == *id) {
                return Err(invalid(
                    "evidence_not_found",
                    &format!("evidence[{i}]"),
                    format!("evidence {id} was not uploaded to this deal"),
                ));
            }
        }
        Ok(())
    }

    /// Posts `postings` in one database transaction, the step riding on the last of them,
    /// followed by the payout requests of what they moved (each its own HOLD, keyed after its
    /// posting); with no posting the step is applied on its own.
    async fn post(
        &self,
        deal: &Deal,
        postings: Vec<Posting>,
        mut step: DealStep,
        audit: Option<AuditRecord>,
    ) -> Result<(), EscrowError> {
        if postings.is_empty() {
            return Ok(self.deals.apply_deal_step(&step, audit.as_ref()).await?);
        }
        let token = self
            .networks
            .get(&deal.asset.network)
            .and_then(|n| n.tokens.get(&deal.asset.code));
        let mut payouts = Vec::new();
        for p in &postings {
            let (Some((account, address, units)), Some(token)) = (&p.payout, token) else {
                continue;
            };
            let Ok(amount) = Amount::new(*units) else {
                continue;
            };
            let (id, mut cmd) = crate::payouts::request_command(
                token,
                crate::payouts::PayoutRequest {
                    account: *account,
                    destination: address,
                    amount,
                    created_by: &step.actor,
                    reference: Some(format!("deal:{}", deal.id)),
                    metadata: None,
                    company: None,
                    cap: self.networks.cap(token),
                },
            );
            cmd.idempotency_key = format!("{}:payout", p.key);
            cmd.actor = Some(step.actor.clone());
            step = step.event(
                "PAYOUT_REQUESTED",
                format!("payout {id}: {units} base units to {address}"),
            );
            payouts.push(cmd);
        }
        let last = postings.len() - 1;
        let mut commands: Vec<Command> = postings
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let mut cmd = Command::new(p.key, deal.asset.clone(), p.op);
                cmd.reference = Some(format!("deal:{}", deal.id));
                cmd.actor = Some(step.actor.clone());
                if i == last {
                    cmd.effects.push(Effect::DealStep(Box::new(step.clone())));
                    cmd.audit = audit.clone();
                }
                cmd
            })
            .collect();
        let moves = commands.len();
        commands.extend(payouts);
        let keys: Vec<String> = commands.iter().map(|c| c.idempotency_key.clone()).collect();
        for (i, result) in self.ledger.post(commands).await?.into_iter().enumerate() {
            match result {
                Ok(_) => {}
                Err(e) if i < moves => return Err(e.into()),
                // The step and its releases stand; the money waits on the party's account.
                Err(e) => {
                    tracing::error!(deal = %deal.id, key = %keys[i], error = %e, "a deal's payout request was refused; the funds stay on the account")
                }
            }
        }
        Ok(())
    }
}

impl Deal {
    /// A posting that moves `units` to the seller, paid out on chain when the deal says where.
    fn to_seller(&self, key: String, op: Operation, units: i128) -> Posting {
        Posting {
            key,
            op,
            payout: self.seller_payout.clone().map(|a| (self.seller, a, units)),
        }
    }

    /// A posting that returns `units` to the buyer, paid out on chain when the deal says where.
    fn to_buyer(&self, key: String, op: Operation, units: i128) -> Posting {
        Posting {
            key,
            op,
            payout: self.buyer_refund.clone().map(|a| (self.buyer, a, units)),
        }
    }
}

fn release(
    hold: crate::domain::HoldId,
    units: i128,
    kind: ReleaseKind,
    destination: AccountId,
) -> Result<Operation, EscrowError> {
    Ok(Operation::Release {
        hold,
        amount: Amount::new(units)
            .map_err(|_| invalid("invalid_amount", "amount", "release amount"))?,
        kind,
        destination,
    })
}

fn evidence_note(ids: &[uuid::Uuid]) -> String {
    if ids.is_empty() {
        "no evidence".into()
    } else {
        format!(
            "evidence {}",
            ids.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// When the timer runner last looked, for tests and metrics: how many fired and failed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunnerPass {
    pub fired: usize,
    pub failed: usize,
}

impl Escrow {
    /// One pass of the timer runner: claims what is due now and fires it. A timer whose
    /// firing is refused (its deal moved on) is left to the step that moved it, which
    /// cancelled it.
    pub async fn fire_due(&self, claimer: &str) -> Result<RunnerPass, EscrowError> {
        let now: UnixMicros = self.clock.now();
        let due = self.deals.claim_due_timers(now, claimer, 50).await?;
        let mut pass = RunnerPass::default();
        for timer in due {
            match self.fire(&timer).await {
                Ok(()) => pass.fired += 1,
                Err(e) => {
                    pass.failed += 1;
                    tracing::warn!(timer = %timer.id, kind = timer.kind.as_str(), deal = %timer.deal, error = %e, "a timer did not fire; it stays claimed until its claim runs out");
                }
            }
        }
        Ok(pass)
    }
}
