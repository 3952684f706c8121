//! Trust records: companies, members, pairs, sessions, obligations and netting results, as stored.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Company {
    pub id: uuid::Uuid,
    pub name: String,
    pub tier: Tier,
    pub created_by: String,
    pub created_at: crate::domain::UnixMicros,
    /// Its users need a second factor in the console, whatever their role.
    pub second_factor: bool,
}

/// A user (an API token's name) acting for a company in a role.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Member {
    #[sqlx(rename = "company_id")]
    pub company: uuid::Uuid,
    #[sqlx(rename = "user_name")]
    pub user: String,
    pub role: crate::domain::Role,
    pub added_by: String,
    pub added_at: crate::domain::UnixMicros,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ObligationKind {
    /// Recorded by a trader during the session.
    Intraday,
    /// What an earlier session could not pay, carried in.
    #[serde(rename = "t_plus_1")]
    TPlus1,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: uuid::Uuid,
    pub pair: uuid::Uuid,
    /// The local date whose cut-off closes it.
    pub business_date: chrono::NaiveDate,
    pub cutoff_at: crate::domain::UnixMicros,
    pub state: SessionState,
    /// The last obligation sequence number it took (set at close).
    pub frozen_seq: Option<i64>,
    pub netted: Netted,
    pub outcome: Option<Outcome>,
    pub settled_amount: i128,
    pub carried_amount: i128,
    pub hold: Option<crate::domain::HoldId>,
    /// The payout that took the creditor's settlement on chain, if its side has an address.
    pub payout: Option<crate::domain::PayoutId>,
    pub closed_by: Option<String>,
    pub closed_at: Option<crate::domain::UnixMicros>,
    pub settled_at: Option<crate::domain::UnixMicros>,
    /// The pair's mode and limits when the session opened (None: opened before sessions
    /// kept them; the pair's apply).
    pub mode: Option<SettlementMode>,
    pub limit_a_to_b: Option<i128>,
    pub limit_b_to_a: Option<i128>,
}

impl Session {
    /// The mode this session settles in: the pair's when it opened.
    pub fn mode(&self, pair: &TrustPair) -> SettlementMode {
        self.mode.unwrap_or(pair.mode)
    }

    /// The most `debtor` may owe net in this session: the pair's limit when it opened.
    pub fn limit(&self, pair: &TrustPair, debtor: Side) -> i128 {
        match debtor {
            Side::A => self.limit_a_to_b.unwrap_or(pair.limit_a_to_b),
            Side::B => self.limit_b_to_a.unwrap_or(pair.limit_b_to_a),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Taking obligations until its cut-off.
    Open,
    /// Frozen and netted; settlement not done yet (e.g. the network is in safe-mode).
    Closed,
    /// The debtor's funds are held for the creditor; the move is under way.
    Settling,
    /// Done: paid in full, partly with the rest carried, carried whole, or nothing owed.
    Settled,
    /// Short of funds with neither partial nor T+1 allowed: retried until funds arrive.
    Unsettled,
}

/// A guarded change of a session, written in one database transaction (with the posting that
/// carries it, when money moves). Refused whole if the session is not in one of `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStep {
    pub session: uuid::Uuid,
    pub from: Vec<SessionState>,
    pub to: SessionState,
    pub at: crate::domain::UnixMicros,
    /// Closing: the frozen figures, who closed it, and the next session to open.
    pub close: Option<Closing>,
    /// Settling: take the hold the carrying posting created.
    pub takes_hold: bool,
    /// Settled or unsettled: the result.
    pub outcome: Option<Outcome>,
    pub settled_amount: i128,
    /// A T+1 obligation of this debtor into the next session.
    pub carry: Option<(Side, i128)>,
    /// The payout requested with this step (settled, paying the creditor out on chain).
    pub payout: Option<crate::domain::PayoutId>,
}

/// What a session may do when the net debtor cannot pay in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SettlementMode {
    /// All or nothing: a short session stays unsettled (and counts as such).
    Full,
    /// Pay what is available, carry the rest into the next session as a T+1 obligation.
    Partial,
    /// Pay in full or carry the whole amount into the next session.
    #[serde(rename = "t_plus_1")]
    TPlus1,
}

/// One of the pair's two companies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Side {
    A,
    B,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObligation {
    pub seq: i64,
    pub id: uuid::Uuid,
    pub session: uuid::Uuid,
    pub debtor: Side,
    pub amount: i128,
    pub kind: ObligationKind,
    pub reference: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_by: String,
    pub created_at: crate::domain::UnixMicros,
}

/// A company's size class, which the launch plan seeds one of each of.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Tier {
    S,
    M,
    L,
    XL,
}

/// Two companies that extend each other credit in one asset, settled at a local cut-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustPair {
    pub id: uuid::Uuid,
    pub company_a: uuid::Uuid,
    pub company_b: uuid::Uuid,
    /// Each company's account in the asset (custodial here): settlement moves between them.
    pub account_a: crate::domain::AccountId,
    pub account_b: crate::domain::AccountId,
    pub asset: crate::domain::AssetKey,
    /// The most A may owe B net within a session, and the other way round.
    pub limit_a_to_b: i128,
    pub limit_b_to_a: i128,
    pub timezone: chrono_tz::Tz,
    pub cutoff: chrono::NaiveTime,
    pub mode: SettlementMode,
    /// Where each side's settlements are paid out on chain; None: they stay on its account.
    pub payout_address_a: Option<String>,
    pub payout_address_b: Option<String>,
    pub created_by: String,
    pub created_at: crate::domain::UnixMicros,
    /// Present while suspended: no new obligations; sessions close and settle as usual.
    pub suspended: Option<Suspension>,
}

/// Who suspended a trust pair, when and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspension {
    pub by: String,
    pub reason: String,
    pub at: crate::domain::UnixMicros,
}

/// A pair's terms as changed through the API: each absent one stays. Limits and mode reach
/// the sessions opened after the change, cut-off and time zone the cut-offs computed after it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PairTerms {
    pub limit_a_to_b: Option<i128>,
    pub limit_b_to_a: Option<i128>,
    pub timezone: Option<chrono_tz::Tz>,
    pub cutoff: Option<chrono::NaiveTime>,
    pub mode: Option<SettlementMode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextSession {
    pub id: uuid::Uuid,
    pub business_date: chrono::NaiveDate,
    pub cutoff_at: crate::domain::UnixMicros,
}

/// A session's obligations netted: gross per direction and one net amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Netted {
    /// What A owes B, summed.
    pub gross_a_to_b: i128,
    /// What B owes A, summed.
    pub gross_b_to_a: i128,
    pub obligations: usize,
}

/// What settling a net amount comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing owed net: settled with no movement.
    Nothing,
    /// Paid in full.
    Full,
    /// Paid what was available; the rest carried to the next session as a T+1 obligation.
    Partial,
    /// Nothing paid; the whole amount carried to the next session (T+1 mode).
    Carried,
    /// Short and neither partial nor T+1 allowed: the session stays unsettled.
    Unsettled,
}

/// Parses a cut-off time, `HH:MM` (24 h), as configured and as stored.
pub fn parse_cutoff(text: &str) -> Option<chrono::NaiveTime> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    chrono::NaiveTime::from_hms_opt(h.parse().ok()?, m.parse().ok()?, 0)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    pub frozen_seq: i64,
    pub netted: Netted,
    pub by: String,
    /// The pair's next session (opened if it does not exist yet).
    pub next: NextSession,
}
