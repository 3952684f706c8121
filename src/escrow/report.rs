//! The pilot's figures and the Go/No-Go report (seeds 002/003): settlement completion rate,
//! average and p95 time to settle, dispute rate, evidence completeness, admin intervention
//! rate and disputes resolved within their TTL, over the deals created in a period, overall and
//! by (country × category × template version); then the plan's decision lines with pass/fail.
//!
//! Definitions (each rate is over the deals created in the period):
//! - completion: SETTLED / created;
//! - time to settle: settled_at − created_at over the settled ones (p95 by nearest rank);
//! - dispute rate: deals that ever entered ISSUE / created;
//! - evidence completeness: disputed deals with evidence / disputed deals;
//! - admin intervention: deals resolved by an Operator / created;
//! - within TTL: disputes an Operator resolved before DISPUTE_TTL / disputed deals.
pub use crate::domain::escrow::DealFacts;
pub use crate::domain::incidents::Incident;

use crate::domain::UnixMicros;
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;

/// A share with its parts, so a reader can check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Share {
    pub count: u64,
    pub of: u64,
    /// count / of to 4 places; absent when `of` is 0.
    #[schema(value_type = Option<String>)]
    pub ratio: Option<Decimal>,
}

impl Share {
    fn new(count: u64, of: u64) -> Self {
        let ratio = (of > 0).then(|| {
            (Decimal::from(count) / Decimal::from(of))
                .round_dp(4)
                .normalize()
        });
        Self { count, of, ratio }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Figures {
    pub deals: u64,
    pub by_state: BTreeMap<String, u64>,
    pub settlement_completion: Share,
    /// Seconds; absent when nothing settled.
    pub average_time_to_settle_seconds: Option<i64>,
    pub p95_time_to_settle_seconds: Option<i64>,
    pub dispute_rate: Share,
    pub evidence_completeness: Share,
    pub admin_intervention: Share,
    pub disputes_within_ttl: Share,
}

pub fn figures<'a>(deals: impl IntoIterator<Item = &'a DealFacts>) -> Figures {
    let deals: Vec<&DealFacts> = deals.into_iter().collect();
    let total = deals.len() as u64;
    let mut by_state = BTreeMap::new();
    for d in &deals {
        *by_state.entry(d.state.as_str().to_owned()).or_insert(0) += 1;
    }
    let mut settle: Vec<i64> = deals
        .iter()
        .filter_map(|d| d.settled_at.map(|s| (s - d.created_at) / 1_000_000))
        .collect();
    settle.sort_unstable();
    let average = (!settle.is_empty()).then(|| settle.iter().sum::<i64>() / settle.len() as i64);
    // Nearest rank: the smallest value at or above 95% of the sorted list.
    let p95 = (!settle.is_empty()).then(|| {
        let rank = (settle.len() * 95).div_ceil(100).max(1);
        settle[rank - 1]
    });
    let disputed: Vec<&&DealFacts> = deals.iter().filter(|d| d.disputed).collect();
    let by_operator = |d: &DealFacts| d.resolved_by.as_deref().is_some_and(|b| b != "timer");
    let within = disputed
        .iter()
        .filter(|d| {
            by_operator(d)
                && matches!((d.issue_at, d.resolved_at), (Some(i), Some(r))
                    if r <= i + i64::from(d.dispute_ttl_hours) * 3_600_000_000)
        })
        .count() as u64;
    Figures {
        deals: total,
        by_state,
        settlement_completion: Share::new(
            deals
                .iter()
                .filter(|d| d.state == super::DealState::Settled)
                .count() as u64,
            total,
        ),
        average_time_to_settle_seconds: average,
        p95_time_to_settle_seconds: p95,
        dispute_rate: Share::new(disputed.len() as u64, total),
        evidence_completeness: Share::new(
            disputed.iter().filter(|d| d.has_evidence).count() as u64,
            disputed.len() as u64,
        ),
        admin_intervention: Share::new(
            deals.iter().filter(|d| by_operator(d)).count() as u64,
            total,
        ),
        disputes_within_ttl: Share::new(within, disputed.len() as u64),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ScopeFigures {
    pub country: String,
    pub category: String,
    pub template_version: u32,
    pub figures: Figures,
}

/// One decision line of the pilot plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Criterion {
    pub name: String,
    pub target: String,
    pub actual: String,
    pub pass: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GoNoGo {
    pub from: String,
    pub to: String,
    pub overall: Figures,
    pub by_scope: Vec<ScopeFigures>,
    pub critical_incidents: u64,
    pub criteria: Vec<Criterion>,
    /// Every criterion passed.
    pub go: bool,
}

fn percent(share: &Share) -> String {
    share.ratio.map_or("n/a (no deals)".into(), |r| {
        format!(
            "{}% ({}/{})",
            (r * Decimal::from(100)).round_dp(2),
            share.count,
            share.of
        )
    })
}

/// Partners' answers to "would you use it again?" (seed 002: more than 70% yes for GO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Survey {
    pub respondents: u64,
    pub would_use_again: u64,
}

impl Survey {
    /// The survey from its two counts, given both or neither; `Err` names what is wrong.
    pub fn from_counts(
        respondents: Option<u64>,
        would_use_again: Option<u64>,
    ) -> Result<Option<Self>, &'static str> {
        match (respondents, would_use_again) {
            (None, None) => Ok(None),
            (Some(respondents), Some(would_use_again)) if would_use_again <= respondents => {
                Ok(Some(Self {
                    respondents,
                    would_use_again,
                }))
            }
            (Some(_), Some(_)) => Err("survey_would_use_again cannot exceed survey_respondents"),
            _ => Err("give survey_respondents and survey_would_use_again together"),
        }
    }
}

/// What a report is judged on: one country and/or category or all, each category's settle
/// time target, and the survey when one was run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judging {
    pub country: Option<String>,
    pub category: Option<String>,
    /// Days by category; a category not listed is held to `DEFAULT_SETTLE_DAYS`.
    pub settle_target_days: BTreeMap<String, u32>,
    pub survey: Option<Survey>,
}

/// Seed 003's "< 7 days", written for used cars: the target of a category with none of its own.
pub const DEFAULT_SETTLE_DAYS: u32 = 7;

impl Judging {
    /// Every scope, no survey.
    pub fn all(settle_target_days: &BTreeMap<String, u32>) -> Self {
        Self {
            country: None,
            category: None,
            settle_target_days: settle_target_days.clone(),
            survey: None,
        }
    }

    fn target_days(&self, category: &str) -> u32 {
        self.settle_target_days
            .get(category)
            .copied()
            .unwrap_or(DEFAULT_SETTLE_DAYS)
    }

    fn admits(&self, d: &DealFacts) -> bool {
        self.country.as_ref().is_none_or(|c| *c == d.country)
            && self.category.as_ref().is_none_or(|c| *c == d.category)
    }
}

fn days(seconds: i64) -> String {
    format!(
        "{}.{:02} days ({seconds} s)",
        seconds / 86_400,
        (seconds % 86_400) * 100 / 86_400
    )
}

/// The report over the deals `judging` admits; each category is held to its own settle time
/// target, and GO needs the survey (seed 002).
pub fn go_no_go(
    from: UnixMicros,
    to: UnixMicros,
    deals: &[DealFacts],
    critical_incidents: u64,
    judging: &Judging,
) -> GoNoGo {
    let deals: Vec<DealFacts> = deals
        .iter()
        .filter(|d| judging.admits(d))
        .cloned()
        .collect();
    let deals = deals.as_slice();
    let overall = figures(deals);
    let mut groups: BTreeMap<(String, String, u32), Vec<&DealFacts>> = BTreeMap::new();
    let mut categories: BTreeMap<&str, Vec<&DealFacts>> = BTreeMap::new();
    for d in deals {
        groups
            .entry((d.country.clone(), d.category.clone(), d.template_version))
            .or_default()
            .push(d);
        categories.entry(d.category.as_str()).or_default().push(d);
    }
    let by_scope = groups
        .into_iter()
        .map(|((country, category, template_version), ds)| ScopeFigures {
            country,
            category,
            template_version,
            figures: figures(ds),
        })
        .collect();
    let ninety = Decimal::new(90, 2);
    let seventy = Decimal::new(70, 2);
    let ten = Decimal::new(10, 2);
    let mut criteria = vec![Criterion {
        name: "Settlement completion rate".into(),
        target: "> 90%".into(),
        actual: percent(&overall.settlement_completion),
        pass: overall
            .settlement_completion
            .ratio
            .is_some_and(|r| r > ninety),
    }];
    if categories.is_empty() {
        criteria.push(Criterion {
            name: "Average time to settle".into(),
            target: format!("< {DEFAULT_SETTLE_DAYS} days"),
            actual: "n/a (nothing settled)".into(),
            pass: false,
        });
    }
    for (category, ds) in &categories {
        let target = judging.target_days(category);
        let average = figures(ds.iter().copied()).average_time_to_settle_seconds;
        criteria.push(Criterion {
            name: format!("Average time to settle ({category})"),
            target: format!("< {target} days"),
            actual: average.map_or("n/a (nothing settled)".into(), days),
            pass: average.is_some_and(|s| s < i64::from(target) * 86_400),
        });
    }
    let survey_share = judging
        .survey
        .map(|s| Share::new(s.would_use_again, s.respondents));
    criteria.extend([
        Criterion {
            name: "Dispute rate".into(),
            target: "< 10%".into(),
            actual: percent(&overall.dispute_rate),
            pass: overall.dispute_rate.ratio.is_some_and(|r| r < ten),
        },
        Criterion {
            name: "No critical incidents (SEV0/SEV1) recorded".into(),
            target: "0".into(),
            actual: critical_incidents.to_string(),
            pass: critical_incidents == 0,
        },
        Criterion {
            name: "Would use again (survey)".into(),
            target: "> 70%".into(),
            actual: survey_share
                .as_ref()
                .map_or("n/a (no survey given)".into(), |s| match s.ratio {
                    Some(_) => percent(s),
                    None => "n/a (no respondents)".into(),
                }),
            pass: survey_share
                .as_ref()
                .and_then(|s| s.ratio)
                .is_some_and(|r| r > seventy),
        },
    ]);
    let go = criteria.iter().all(|c| c.pass);
    GoNoGo {
        from: crate::domain::micros_to_rfc3339(from),
        to: crate::domain::micros_to_rfc3339(to),
        overall,
        by_scope,
        critical_incidents,
        criteria,
        go,
    }
}

impl GoNoGo {
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "# Go/No-Go report\n\nDeals created from {} to {}: {}. Decision: **{}**.\n\n| criterion | target | actual | result |\n|---|---|---|---|\n",
            self.from,
            self.to,
            self.overall.deals,
            if self.go { "GO" } else { "NO-GO" }
        );
        for c in &self.criteria {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                c.name,
                c.target,
                c.actual,
                if c.pass { "PASS" } else { "FAIL" }
            ));
        }
        out.push_str("\n## By scope\n\n| country | category | version | deals | completion | avg settle (s) | p95 settle (s) | disputes | evidence | interventions | within TTL |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
        for s in &self.by_scope {
            let f = &s.figures;
            let opt = |v: Option<i64>| v.map_or("n/a".into(), |v| v.to_string());
            out.push_str(&format!(
                "| {} | {} | v{} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                s.country,
                s.category,
                s.template_version,
                f.deals,
                percent(&f.settlement_completion),
                opt(f.average_time_to_settle_seconds),
                opt(f.p95_time_to_settle_seconds),
                percent(&f.dispute_rate),
                percent(&f.evidence_completeness),
                percent(&f.admin_intervention),
                percent(&f.disputes_within_ttl)
            ));
        }
        out
    }
}

/// Per scope (country, category, template version): of the deals created long enough ago to
/// have settled under their category's target, how many did. Completion over every deal
/// counts the young ones as failures; the rollback trigger "completion < 50%" asks this.
pub fn completion_when_due(
    deals: &[DealFacts],
    judging: &Judging,
    now: UnixMicros,
) -> BTreeMap<(String, String, u32), Share> {
    let mut due: BTreeMap<(String, String, u32), (u64, u64)> = BTreeMap::new();
    for d in deals {
        let target = i64::from(judging.target_days(&d.category)) * 86_400_000_000;
        if d.created_at + target > now {
            continue;
        }
        let entry = due
            .entry((d.country.clone(), d.category.clone(), d.template_version))
            .or_default();
        entry.1 += 1;
        if d.state == super::DealState::Settled {
            entry.0 += 1;
        }
    }
    due.into_iter()
        .map(|(scope, (settled, of))| (scope, Share::new(settled, of)))
        .collect()
}

/// An instant given as RFC 3339 or as a date (its UTC midnight).
pub fn parse_instant(text: &str) -> Option<UnixMicros> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_micros());
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
}

/// The report over `[from, to)`, from the database.
pub async fn build(
    store: &dyn crate::store::Store,
    from: UnixMicros,
    to: UnixMicros,
    judging: &Judging,
) -> Result<GoNoGo, crate::store::StoreError> {
    let deals = store.deal_facts(from, to).await?;
    let critical = store
        .incidents(from, to)
        .await?
        .iter()
        .filter(|i| i.is_critical())
        .count() as u64;
    Ok(go_no_go(from, to, &deals, critical, judging))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escrow::DealState;

    fn deal(created: i64, settled: Option<i64>, disputed: bool) -> DealFacts {
        DealFacts {
            country: "MN".into(),
            category: "USED_CAR_PRIVATE".into(),
            template_version: 1,
            state: if settled.is_some() {
                DealState::Settled
            } else {
                DealState::Inspection
            },
            created_at: created * 1_000_000,
            settled_at: settled.map(|s| s * 1_000_000),
            disputed,
            issue_at: disputed.then_some(created * 1_000_000),
            dispute_ttl_hours: 48,
            has_evidence: disputed,
            resolved_by: None,
            resolved_at: None,
        }
    }

    #[test]
    fn p95_is_the_nearest_rank_and_rates_keep_their_parts() {
        // Settle times 1..=20 s: p95 is the 19th, the average 10 (10.5 rounded down).
        let deals: Vec<DealFacts> = (1..=20).map(|i| deal(0, Some(i), false)).collect();
        let f = figures(&deals);
        assert_eq!(
            (
                f.average_time_to_settle_seconds,
                f.p95_time_to_settle_seconds
            ),
            (Some(10), Some(19))
        );
        assert_eq!(
            f.settlement_completion,
            Share {
                count: 20,
                of: 20,
                ratio: Some(Decimal::ONE)
            }
        );
        let mut deals = deals;
        deals.push(deal(0, None, true));
        let f = figures(&deals);
        assert_eq!(f.dispute_rate.ratio, Some(Decimal::new(476, 4)));
        assert_eq!(f.settlement_completion.ratio, Some(Decimal::new(9524, 4)));
        let survey = Some(Survey {
            respondents: 10,
            would_use_again: 8,
        });
        let judging = Judging {
            survey,
            ..Judging::all(&BTreeMap::new())
        };
        let r = go_no_go(0, 1, &deals, 1, &judging);
        assert_eq!(
            r.criteria.iter().map(|c| c.pass).collect::<Vec<_>>(),
            [true, true, true, false, true]
        );
        assert!(!r.go);
        assert!(
            r.markdown()
                .contains("| No critical incidents (SEV0/SEV1) recorded | 0 | 1 | FAIL |")
        );
        // Without incidents GO still needs the survey.
        assert!(go_no_go(0, 1, &deals, 0, &judging).go);
        assert!(!go_no_go(0, 1, &deals, 0, &Judging::all(&BTreeMap::new())).go);
    }

    #[test]
    fn completion_when_due_leaves_out_deals_younger_than_their_target() {
        let day = 86_400;
        // Used cars (7 days): one settled and one stuck, both 10 days old; one 2 days old.
        let deals = [
            deal(0, Some(3 * day), false),
            deal(0, None, false),
            deal(8 * day, None, false),
        ];
        let due = completion_when_due(
            &deals,
            &Judging::all(&BTreeMap::new()),
            10 * day * 1_000_000,
        );
        let share = &due[&("MN".to_owned(), "USED_CAR_PRIVATE".to_owned(), 1)];
        assert_eq!((share.count, share.of), (1, 2));
    }

    #[test]
    fn each_category_is_held_to_its_own_settle_target() {
        // A real-estate sale settled in 9 days and a used car in 2.
        let mut house = deal(0, Some(9 * 86_400), false);
        house.category = "REAL_ESTATE_SALE".into();
        let car = deal(0, Some(2 * 86_400), false);
        let deals = [house.clone(), car];
        let targets: BTreeMap<String, u32> = [("REAL_ESTATE_SALE".to_owned(), 30)].into();
        let judged = |targets: &BTreeMap<String, u32>, category: Option<&str>| {
            let judging = Judging {
                category: category.map(str::to_owned),
                ..Judging::all(targets)
            };
            go_no_go(0, 1, &deals, 0, &judging)
                .criteria
                .into_iter()
                .filter(|c| c.name.starts_with("Average time to settle"))
                .map(|c| (c.name, c.target, c.pass))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            judged(&targets, None),
            [
                (
                    "Average time to settle (REAL_ESTATE_SALE)".to_owned(),
                    "< 30 days".to_owned(),
                    true
                ),
                (
                    "Average time to settle (USED_CAR_PRIVATE)".to_owned(),
                    "< 7 days".to_owned(),
                    true
                ),
            ],
            "nine days pass under real estate's own target"
        );
        // Held to the used-car target (7 days, the default), the same deal fails.
        assert_eq!(
            judged(&BTreeMap::new(), Some("REAL_ESTATE_SALE")),
            [(
                "Average time to settle (REAL_ESTATE_SALE)".to_owned(),
                "< 7 days".to_owned(),
                false
            )]
        );
        // One scope judged alone: the other's deals are not in its figures.
        let judging = Judging {
            category: Some("REAL_ESTATE_SALE".into()),
            ..Judging::all(&targets)
        };
        assert_eq!(go_no_go(0, 1, &deals, 0, &judging).overall.deals, 1);
    }
}
