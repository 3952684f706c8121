//! The tier table: what a partner company of each tier (S, M, L, XL) may move per asset. Its
//! payout limits are checked where a payout's hold is placed (`ledger::batch`), under a lock on
//! the company, so concurrent requests cannot pass a limit together; its credit limit bounds
//! what a trust pair may let the company owe.

use super::trust::Tier;
use super::{AssetKey, AssetSpec, UnixMicros};
use std::collections::HashMap;

/// One tier's limits for one asset, in base units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierLimits {
    /// The largest single payout.
    pub max_payout: i128,
    /// Payout volume per calendar day and per calendar month, in the table's timezone.
    pub daily_volume: i128,
    pub monthly_volume: i128,
    /// The most a trust pair may let a company of this tier owe its partner in one session.
    pub max_credit_limit: i128,
}

/// A versioned table of limits per tier and asset. An empty table sets no limits; once it has
/// rows, a tier without a row for an asset may not pay out in that asset at all (a missing
/// row is a gap in the table, never an open door).
#[derive(Debug, Clone)]
pub struct TierTable {
    pub version: String,
    pub timezone: chrono_tz::Tz,
    rows: HashMap<(Tier, AssetKey), TierLimits>,
}

impl Default for TierTable {
    fn default() -> Self {
        Self {
            version: String::new(),
            timezone: chrono_tz::UTC,
            rows: HashMap::new(),
        }
    }
}

impl TierTable {
    pub fn new(
        version: String,
        timezone: chrono_tz::Tz,
        rows: impl IntoIterator<Item = (Tier, AssetKey, TierLimits)>,
    ) -> Self {
        Self {
            version,
            timezone,
            rows: rows.into_iter().map(|(t, a, l)| ((t, a), l)).collect(),
        }
    }

    /// Whether the table sets limits at all.
    pub fn is_active(&self) -> bool {
        !self.rows.is_empty()
    }

    /// `tier`'s row for `asset`; None when the table is inactive or has no such row.
    pub fn limits(&self, tier: Tier, asset: &AssetKey) -> Option<TierLimits> {
        self.rows.get(&(tier, asset.clone())).copied()
    }

    /// Every row, smallest tier first, then by asset.
    pub fn rows(&self) -> Vec<(Tier, &AssetKey, TierLimits)> {
        let mut rows: Vec<_> = self.rows.iter().map(|((t, a), l)| (*t, a, *l)).collect();
        rows.sort_by_key(|r| (r.0, r.1.to_string()));
        rows
    }

    /// Whether a trust pair may let a company of `tier` owe up to `limit` of `spec` in a
    /// session; Ok when the table is inactive.
    pub fn check_credit(
        &self,
        tier: Tier,
        spec: &AssetSpec,
        limit: i128,
    ) -> Result<(), Box<TierRefusal>> {
        if !self.is_active() {
            return Ok(());
        }
        let max = self.limits(tier, &spec.key).map(|l| l.max_credit_limit);
        if max.is_some_and(|max| limit <= max) {
            return Ok(());
        }
        Err(Box::new(TierRefusal {
            kind: if max.is_some() {
                LimitKind::MaxCreditLimit
            } else {
                LimitKind::NoRow
            },
            tier,
            version: self.version.clone(),
            spec: spec.clone(),
            limit: max.unwrap_or(0),
            headroom: max.unwrap_or(0),
        }))
    }

    /// The check a payout of `amount` by `company` (of `tier`) must pass at `now`; None when the
    /// table is inactive.
    pub fn quota(
        &self,
        company: uuid::Uuid,
        tier: Tier,
        spec: &AssetSpec,
        amount: i128,
        now: UnixMicros,
    ) -> Option<Quota> {
        if !self.is_active() {
            return None;
        }
        let day = crate::clock::day_start(now, self.timezone);
        Some(Quota {
            company,
            tier,
            version: self.version.clone(),
            spec: spec.clone(),
            limits: self.limits(tier, &spec.key),
            amount,
            day_start: day,
            month_start: crate::clock::month_start(now, self.timezone),
        })
    }
}

/// What a company's payouts in one asset have reserved so far in the current day and month
/// (cancelled, rejected and failed payouts count only what they paid).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Used {
    pub day: i128,
    pub month: i128,
}

/// The tier check one payout carries into the ledger batch that places its hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub company: uuid::Uuid,
    pub tier: Tier,
    pub version: String,
    pub spec: AssetSpec,
    /// None: the table has no row for this tier and asset.
    pub limits: Option<TierLimits>,
    pub amount: i128,
    pub day_start: UnixMicros,
    pub month_start: UnixMicros,
}

/// Which limit a payout would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    NoRow,
    MaxPayout,
    DailyVolume,
    MonthlyVolume,
    MaxCreditLimit,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::NoRow => "no_row",
            LimitKind::MaxPayout => "max_payout",
            LimitKind::DailyVolume => "daily_volume",
            LimitKind::MonthlyVolume => "monthly_volume",
            LimitKind::MaxCreditLimit => "max_credit_limit",
        }
    }
}

/// A payout refused by the tier table: which limit, and how much one payout may still be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierRefusal {
    pub kind: LimitKind,
    pub tier: Tier,
    pub version: String,
    pub spec: AssetSpec,
    pub limit: i128,
    pub headroom: i128,
}

impl std::fmt::Display for TierRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (tier, version, asset) = (self.tier.as_str(), &self.version, &self.spec.key);
        match self.kind {
            LimitKind::NoRow => write!(
                f,
                "not allowed: tier {tier} has no limits for {asset} in tier table {version}, \
                 so it may not pay out or owe in it; headroom 0"
            ),
            kind => write!(
                f,
                "over tier {tier}'s {} of {} {asset} (tier table {version}); headroom {}",
                kind.as_str().replace('_', " "),
                self.spec.format(self.limit),
                self.spec.format(self.headroom)
            ),
        }
    }
}

impl Quota {
    /// Judges the payout against what the company used before it.
    pub fn check(&self, used: Used) -> Result<(), Box<TierRefusal>> {
        let refuse = |kind, limit| {
            Box::new(TierRefusal {
                kind,
                tier: self.tier,
                version: self.version.clone(),
                spec: self.spec.clone(),
                limit,
                headroom: self.headroom(used),
            })
        };
        let Some(l) = self.limits else {
            return Err(refuse(LimitKind::NoRow, 0));
        };
        for (kind, limit, after) in [
            (LimitKind::MaxPayout, l.max_payout, self.amount),
            (
                LimitKind::DailyVolume,
                l.daily_volume,
                used.day.saturating_add(self.amount),
            ),
            (
                LimitKind::MonthlyVolume,
                l.monthly_volume,
                used.month.saturating_add(self.amount),
            ),
        ] {
            if after > limit {
                return Err(refuse(kind, limit));
            }
        }
        Ok(())
    }

    /// What is left, by window: `payout` (the largest payout that would pass now), `day` and
    /// `month` (of the volumes), each at least 0.
    pub fn windows(&self, used: Used) -> [(&'static str, i128); 3] {
        let (day, month) = self.limits.map_or((0, 0), |l| {
            (
                l.daily_volume.saturating_sub(used.day).max(0),
                l.monthly_volume.saturating_sub(used.month).max(0),
            )
        });
        [
            ("payout", self.headroom(used)),
            ("day", day),
            ("month", month),
        ]
    }

    /// The largest payout that would pass now.
    pub fn headroom(&self, used: Used) -> i128 {
        self.limits.map_or(0, |l| {
            l.max_payout
                .min(l.daily_volume.saturating_sub(used.day))
                .min(l.monthly_volume.saturating_sub(used.month))
                .max(0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(amount: i128, limits: Option<TierLimits>) -> Quota {
        Quota {
            company: uuid::Uuid::nil(),
            tier: Tier::S,
            version: "v2".into(),
            spec: AssetSpec {
                key: AssetKey::new("anvil", "USDC"),
                decimals: 6,
            },
            limits,
            amount,
            day_start: 0,
            month_start: 0,
        }
    }

    const LIMITS: TierLimits = TierLimits {
        max_payout: 100,
        daily_volume: 250,
        monthly_volume: 1_000,
        max_credit_limit: 500,
    };

    #[test]
    fn each_limit_refuses_with_the_headroom_left() {
        let used = |day, month| Used { day, month };
        assert_eq!(quota(100, Some(LIMITS)).check(used(150, 150)), Ok(()));
        let single = quota(101, Some(LIMITS)).check(used(0, 0)).unwrap_err();
        assert_eq!((single.kind, single.headroom), (LimitKind::MaxPayout, 100));
        let daily = quota(60, Some(LIMITS)).check(used(200, 900)).unwrap_err();
        assert_eq!((daily.kind, daily.headroom), (LimitKind::DailyVolume, 50));
        let monthly = quota(60, Some(LIMITS)).check(used(0, 950)).unwrap_err();
        assert_eq!(
            (monthly.kind, monthly.headroom),
            (LimitKind::MonthlyVolume, 50)
        );
        // Past a limit (a tier lowered mid-day), the headroom is 0, never negative.
        let over = quota(1, Some(LIMITS)).check(used(300, 300)).unwrap_err();
        assert_eq!(over.headroom, 0);
        assert!(over.to_string().contains("headroom 0.000000"), "{over}");
    }

    #[test]
    fn a_tier_without_a_row_pays_nothing() {
        let refusal = quota(1, None).check(Used::default()).unwrap_err();
        assert_eq!((refusal.kind, refusal.headroom), (LimitKind::NoRow, 0));
        let table = TierTable::new(
            "v2".into(),
            chrono_tz::UTC,
            [(Tier::M, AssetKey::new("anvil", "USDC"), LIMITS)],
        );
        let spec = AssetSpec {
            key: AssetKey::new("anvil", "USDC"),
            decimals: 6,
        };
        let q = table.quota(uuid::Uuid::nil(), Tier::S, &spec, 1, 0);
        assert_eq!(q.and_then(|q| q.limits), None);
        assert!(
            TierTable::default()
                .quota(uuid::Uuid::nil(), Tier::S, &spec, 1, 0)
                .is_none()
        );
        // Credit: within the row passes, above it or without a row is refused.
        assert_eq!(table.check_credit(Tier::M, &spec, 500), Ok(()));
        let over = table.check_credit(Tier::M, &spec, 501).unwrap_err();
        assert_eq!((over.kind, over.headroom), (LimitKind::MaxCreditLimit, 500));
        assert_eq!(
            table.check_credit(Tier::S, &spec, 1).unwrap_err().kind,
            LimitKind::NoRow
        );
        assert_eq!(
            TierTable::default().check_credit(Tier::S, &spec, i128::MAX),
            Ok(())
        );
    }
}
