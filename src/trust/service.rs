//! Trust sessions at work: obligations under the credit limit, closing at cut-off (or by hand),
//! and settlement, each step a guarded database transaction so a crash or a second instance
//! repeats nothing.
//!
//! Settlement of a net amount (all internal: both companies are custodial here):
//! 1. HOLD what the plan settles on the debtor's account, keyed `eod-hold:{session}`, with the
//!    session moving closed → settling and its outcome and any T+1 carry written alongside;
//! 2. RELEASE the hold to the creditor's account, keyed `eod-release:{session}`, with the
//!    session moving settling → settled.
//!
//! A crash between the two leaves the session `settling` with its hold; the next pass releases
//! it. Nothing owed, or all carried (T+1), settles with no posting; short in `full` mode leaves
//! it `unsettled` and it is retried on every pass. Safe-mode on the pair's network holds
//! settlement back (sessions still close and net).

use super::netting::{self, Netted, Obligation, Outcome, Plan};
use super::{
    Closing, NextSession, Session, SessionState, SessionStep, StoredObligation, TrustPair,
};
use crate::clock::DynClock;
use crate::domain::{Amount, UnixMicros};
use crate::ledger::{Command, Effect, Ledger, ReleaseKind};
use crate::metrics::TrustMetrics;
use crate::store::{AuditRecord, ConflictKind, LedgerStore, PayoutStore, StoreError, TrustStore};
use serde::Serialize;

/// How many times a close is tried again when an obligation slipped in meanwhile.
const CLOSE_ATTEMPTS: usize = 5;

#[derive(Clone)]
pub struct Trust {
    pub ledger: Ledger,
    pub sessions: std::sync::Arc<dyn TrustStore>,
    /// Safe-mode on the pair's network holds settlement back.
    pub controls: std::sync::Arc<dyn PayoutStore>,
    pub networks: std::sync::Arc<crate::payouts::networks::PayoutNetworks>,
    pub clock: DynClock,
    pub metrics: TrustMetrics,
    /// `debug.pause_at` (`trust.before_release`), for crash tests.
    pub pause_at: Option<String>,
}

/// What closing a session would do (the dry run), or did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preview {
    pub session: uuid::Uuid,
    pub obligations: usize,
    /// The last obligation sequence number included.
    pub frozen_seq: i64,
    pub gross_a_to_b: i128,
    pub gross_b_to_a: i128,
    /// "A", "B" or none.
    pub debtor: Option<super::Side>,
    pub net_amount: i128,
    /// The debtor's available balance now.
    pub available: i128,
    pub outcome: &'static str,
    pub settle: i128,
    pub carry: i128,
    /// Settlement waits: the pair's network is in safe-mode.
    pub safe_mode: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("{0}")]
    Amount(#[from] crate::domain::AmountError),
    #[error("session {0} is {1}")]
    NotOpen(uuid::Uuid, &'static str),
}

fn obligations_of(list: &[StoredObligation]) -> Vec<Obligation> {
    list.iter()
        .map(|o| Obligation {
            debtor: o.debtor,
            amount: o.amount,
        })
        .collect()
}

/// What closing `session` now would freeze, net and settle, read from the database alone
/// (the API's `?dry_run=true` and `treasuryd eod dry-run`).
pub async fn preview(
    sessions: &dyn TrustStore,
    accounts: &dyn LedgerStore,
    controls: &dyn PayoutStore,
    session: &Session,
) -> Result<Preview, StoreError> {
    let pair = sessions
        .trust_pairs(Some(session.pair))
        .await?
        .into_iter()
        .next()
        .ok_or(StoreError::NotFound)?;
    let (netted, frozen_seq) = if session.state == SessionState::Open {
        let list = sessions.trust_obligations(session.id, None).await?;
        (
            netting::net(&obligations_of(&list)),
            list.last().map_or(0, |o| o.seq),
        )
    } else {
        (session.netted, session.frozen_seq.unwrap_or(0))
    };
    let (debtor, amount) = match netted.debtor() {
        Some((d, a)) => (Some(d), a),
        None => (None, 0),
    };
    let available = match debtor {
        Some(d) => accounts.get_account(pair.account(d)).await?.available,
        None => 0,
    };
    let plan = netting::plan(amount, available, session.mode(&pair));
    Ok(Preview {
        session: session.id,
        obligations: netted.obligations,
        frozen_seq,
        gross_a_to_b: netted.gross_a_to_b,
        gross_b_to_a: netted.gross_b_to_a,
        debtor,
        net_amount: amount,
        available,
        outcome: plan.outcome.as_str(),
        settle: plan.settle,
        carry: plan.carry,
        safe_mode: controls.safe_mode(&pair.asset.network).await?.is_some(),
    })
}

impl Trust {
    pub fn now(&self) -> UnixMicros {
        self.clock.now()
    }

    /// The session a pair opens with: the one whose cut-off is the next after `now`.
    pub fn first_session(pair: &TrustPair, now: UnixMicros) -> NextSession {
        let (business_date, cutoff_at) =
            super::cutoff::next_cutoff(pair.timezone, pair.cutoff, now);
        NextSession {
            id: uuid::Uuid::now_v7(),
            business_date,
            cutoff_at,
        }
    }

    async fn pair(&self, id: uuid::Uuid) -> Result<TrustPair, StoreError> {
        self.sessions
            .trust_pairs(Some(id))
            .await?
            .into_iter()
            .next()
            .ok_or(StoreError::NotFound)
    }

    async fn available(&self, account: crate::domain::AccountId) -> Result<i128, StoreError> {
        Ok(self.ledger.store().get_account(account).await?.available)
    }

    /// The figures and the plan for `session` as things stand: nothing is written.
    pub async fn preview(&self, session: &Session) -> Result<Preview, StoreError> {
        preview(
            self.sessions.as_ref(),
            self.ledger.store(),
            self.controls.as_ref(),
            session,
        )
        .await
    }

    /// Closes an open session: freezes and nets its obligations, opens the pair's next
    /// session, then settles. `Conflict`/`NotOpen` when it is no longer open.
    pub async fn close(
        &self,
        id: uuid::Uuid,
        by: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<Session, TrustError> {
        let store = self.sessions.as_ref();
        for attempt in 1..=CLOSE_ATTEMPTS {
            let session = store.trust_session(id).await?;
            if session.state != SessionState::Open {
                return Err(TrustError::NotOpen(id, session.state.as_str()));
            }
            let pair = self.pair(session.pair).await?;
            let list = store.trust_obligations(id, None).await?;
            let netted: Netted = netting::net(&obligations_of(&list));
            // The next business date's cut-off. After a change of cut-off or time zone the
            // first cut-off past this one can fall on the date just closed (18:00 moved to
            // 20:00): that date is settled, so the next session takes the one after.
            let (mut business_date, mut cutoff_at) =
                super::cutoff::next_cutoff(pair.timezone, pair.cutoff, session.cutoff_at);
            while business_date <= session.business_date {
                (business_date, cutoff_at) =
                    super::cutoff::next_cutoff(pair.timezone, pair.cutoff, cutoff_at);
            }
            let step = SessionStep {
                session: id,
                from: vec![SessionState::Open],
                to: SessionState::Closed,
                at: self.now(),
                close: Some(Closing {
                    frozen_seq: list.last().map_or(0, |o| o.seq),
                    netted,
                    by: by.to_owned(),
                    next: NextSession {
                        id: uuid::Uuid::now_v7(),
                        business_date,
                        cutoff_at,
                    },
                }),
                takes_hold: false,
                outcome: None,
                settled_amount: 0,
                carry: None,
                payout: None,
            };
            match store.apply_session_step(&step, audit).await {
                Ok(()) => {
                    self.metrics.closed(
                        &pair.asset,
                        netted.gross_a_to_b + netted.gross_b_to_a,
                        &self.ledger,
                    );
                    tracing::info!(session = %id, pair = %pair.id, by, obligations = netted.obligations, net = netted.net(), "trust session closed");
                    return self.settle(id).await;
                }
                // An obligation came in between the read and the close: read again.
                Err(StoreError::Conflict(ConflictKind::StateChanged, _))
                    if attempt < CLOSE_ATTEMPTS =>
                {
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(TrustError::NotOpen(id, "busy"))
    }

    /// Settles a closed, settling or unsettled session as far as it can now; returns it.
    pub async fn settle(&self, id: uuid::Uuid) -> Result<Session, TrustError> {
        let store = self.sessions.as_ref();
        let session = store.trust_session(id).await?;
        let pair = self.pair(session.pair).await?;
        match session.state {
            SessionState::Closed | SessionState::Unsettled => {
                if self
                    .controls
                    .safe_mode(&pair.asset.network)
                    .await?
                    .is_some()
                {
                    return Ok(session);
                }
                self.start_settlement(&pair, &session).await?;
            }
            SessionState::Settling => self.finish_settlement(&pair, &session).await?,
            SessionState::Open | SessionState::Settled => return Ok(session),
        }
        let done = store.trust_session(id).await?;
        if done.state == SessionState::Settled && session.state != SessionState::Settled {
            self.metrics.settled(&pair.asset, &done);
        }
        Ok(done)
    }

    async fn start_settlement(&self, pair: &TrustPair, s: &Session) -> Result<(), TrustError> {
        let store = self.sessions.as_ref();
        let (debtor, amount) = s.netted.debtor().unwrap_or((super::Side::A, 0));
        let available = self.available(pair.account(debtor)).await?;
        let plan: Plan = netting::plan(amount, available, s.mode(pair));
        let at = self.now();
        let step = |to: SessionState| SessionStep {
            session: s.id,
            from: vec![SessionState::Closed, SessionState::Unsettled],
            to,
            at,
            close: None,
            takes_hold: false,
            outcome: Some(plan.outcome),
            settled_amount: plan.settle,
            carry: (plan.carry > 0).then_some((debtor, plan.carry)),
            payout: None,
        };
        match plan.outcome {
            Outcome::Nothing | Outcome::Carried => {
                store
                    .apply_session_step(&step(SessionState::Settled), None)
                    .await?;
            }
            Outcome::Unsettled => {
                if s.state != SessionState::Unsettled {
                    store
                        .apply_session_step(&step(SessionState::Unsettled), None)
                        .await?;
                    tracing::warn!(session = %s.id, pair = %pair.id, owed = amount, available, "trust session unsettled: the debtor is short and the pair settles in full only");
                }
            }
            Outcome::Full | Outcome::Partial => {
                let account = self
                    .ledger
                    .store()
                    .get_account(pair.account(debtor))
                    .await?;
                let op = crate::ledger::Operation::Hold {
                    account: account.id,
                    amount: Amount::new(plan.settle)?,
                };
                let mut cmd = Command::new(format!("eod-hold:{}", s.id), pair.asset.clone(), op);
                cmd.reference = Some(format!("EOD {} {}", pair.id, s.business_date));
                cmd.actor = Some("treasuryd".into());
                let mut holding = step(SessionState::Settling);
                holding.takes_hold = true;
                cmd.effects.push(Effect::SessionStep(Box::new(holding)));
                self.ledger.post_one(cmd).await??;
                let s = store.trust_session(s.id).await?;
                self.finish_settlement(pair, &s).await?;
            }
        }
        Ok(())
    }

    async fn finish_settlement(&self, pair: &TrustPair, s: &Session) -> Result<(), TrustError> {
        if self.pause_at.as_deref() == Some("trust.before_release") {
            tracing::warn!(point = "trust.before_release", "pause point reached");
            std::future::pending::<()>().await;
        }
        let hold_id = s.hold.ok_or_else(|| {
            StoreError::Invariant(format!("settling session {} has no hold", s.id))
        })?;
        let hold = self.ledger.hold(hold_id).await?;
        let (debtor, _) = s.netted.debtor().unwrap_or((super::Side::A, 0));
        let creditor = debtor.other();
        let op = self.ledger.release(
            &hold,
            Amount::new(s.settled_amount)?,
            ReleaseKind::Release,
            Some(pair.account(creditor)),
        )?;
        let reference = format!("EOD {} {}", pair.id, s.business_date);
        let mut release = Command::new(format!("eod-release:{}", s.id), pair.asset.clone(), op);
        release.reference = Some(reference.clone());
        release.actor = Some("treasuryd".into());
        let step = |from: SessionState, payout| SessionStep {
            session: s.id,
            from: vec![from],
            to: SessionState::Settled,
            at: self.now(),
            close: None,
            takes_hold: false,
            outcome: None,
            settled_amount: 0,
            carry: None,
            payout,
        };
        release.effects.push(Effect::SessionStep(Box::new(step(
            SessionState::Settling,
            None,
        ))));
        let mut commands = vec![release];
        // A creditor with a payout address is paid on chain from its account, in the same
        // database transaction; the payout records itself on the session only if accepted.
        let token = self
            .networks
            .get(&pair.asset.network)
            .and_then(|n| n.tokens.get(&pair.asset.code));
        if let (Some(address), Some(token)) = (pair.payout_address(creditor), token) {
            let (id, mut payout) = crate::payouts::request_command(
                token,
                crate::payouts::PayoutRequest {
                    account: pair.account(creditor),
                    destination: address,
                    amount: Amount::new(s.settled_amount)?,
                    created_by: "treasuryd",
                    reference: Some(reference),
                    metadata: None,
                    company: None,
                    cap: self.networks.cap(token),
                },
            );
            payout.idempotency_key = format!("eod-payout:{}", s.id);
            payout.actor = Some("treasuryd".into());
            payout.effects.push(Effect::SessionStep(Box::new(step(
                SessionState::Settled,
                Some(id),
            ))));
            commands.push(payout);
        }
        let results = self.ledger.post(commands).await?;
        let mut results = results.into_iter();
        if let Some(moved) = results.next() {
            moved?;
        }
        if let Some(Err(e)) = results.next() {
            tracing::error!(session = %s.id, error = %e, "the creditor's settlement payout was refused; the funds stay on its account");
        }
        Ok(())
    }

    /// One pass of the runner: closes sessions whose cut-off has come and settles what waits.
    pub async fn run_pass(&self) -> Result<(), TrustError> {
        let store = self.sessions.as_ref();
        for s in store.due_trust_sessions(self.now(), 100).await? {
            match self.close(s.id, "cut-off", None).await {
                Ok(_) | Err(TrustError::NotOpen(..)) => {}
                Err(e) => {
                    tracing::warn!(session = %s.id, error = %e, "closing a trust session failed; retrying")
                }
            }
        }
        let waiting = store.unsettled_trust_sessions().await?;
        for s in &waiting {
            if let Err(e) = self.settle(s.id).await {
                tracing::warn!(session = %s.id, error = %e, "settling a trust session failed; retrying");
            }
        }
        let still = store.unsettled_trust_sessions().await?;
        // What is still owed net, per asset: the rollback criterion asks whether it falls.
        let mut owed: std::collections::BTreeMap<crate::domain::AssetKey, i128> =
            std::collections::BTreeMap::new();
        for s in &still {
            let pair = self.pair(s.pair).await?;
            let net = (s.netted.gross_a_to_b - s.netted.gross_b_to_a).abs();
            *owed.entry(pair.asset).or_default() += net.saturating_sub(s.settled_amount);
        }
        self.metrics
            .set_unsettled(&still, &owed, &self.ledger, self.now());
        Ok(())
    }
}
