//! Scope flags of the pilot: whether new deals are taken at all, for which countries and
//! categories, and up to which template version. The scope lives in the database so that
//! every instance sees one answer; it is set by an Admin through the API (with a reason) or
//! from the `[pilot]` section of the config file at start and on SIGHUP. Changing it only
//! decides which *new* deals are accepted: a deal keeps the template it was created with.

use crate::templates::{Template, Templates};
use serde::{Deserialize, Serialize};

/// The flags, as the seeds write them (`pilot.enabled`, `pilot.country-allowlist`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PilotScope {
    pub enabled: bool,
    #[serde(default)]
    pub country_allowlist: Vec<String>,
    #[serde(default)]
    pub category_allowlist: Vec<String>,
    /// "v1", "v2", …: new deals take the newest template version not above it.
    pub template_version: String,
}

impl Default for PilotScope {
    /// Until someone opens it, no deal is accepted.
    fn default() -> Self {
        Self {
            enabled: false,
            country_allowlist: Vec::new(),
            category_allowlist: Vec::new(),
            template_version: "v1".into(),
        }
    }
}

/// Why a new deal is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeRefusal {
    #[error("the pilot is not taking new deals (pilot.enabled is false)")]
    Disabled,
    #[error("country {0} is not in pilot.country-allowlist")]
    Country(String),
    #[error("category {0} is not in pilot.category-allowlist")]
    Category(String),
    #[error("no template for {country} × {category} at or below {version}")]
    NoTemplate {
        country: String,
        category: String,
        version: String,
    },
}

impl ScopeRefusal {
    /// The request field the refusal is about.
    pub fn field(&self) -> &'static str {
        match self {
            ScopeRefusal::Disabled => "country",
            ScopeRefusal::Country(_) => "country",
            ScopeRefusal::Category(_) | ScopeRefusal::NoTemplate { .. } => "category",
        }
    }
}

impl PilotScope {
    /// The number in "v3".
    pub fn max_version(&self) -> Option<u32> {
        self.template_version
            .strip_prefix('v')
            .and_then(|n| n.parse().ok())
            .filter(|n| *n >= 1)
    }

    /// Format checks; with `templates`, also that every listed country and category has a
    /// template. The error is (field, message).
    pub fn validate(&self, templates: Option<&Templates>) -> Result<(), (String, String)> {
        if self.max_version().is_none() {
            return Err((
                "template-version".into(),
                "must be v1, v2, … (the newest version new deals may take)".into(),
            ));
        }
        for (i, c) in self.country_allowlist.iter().enumerate() {
            let field = format!("country-allowlist[{i}]");
            if c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_uppercase()) {
                return Err((field, "must be an ISO 3166 alpha-2 code in capitals".into()));
            }
            if let Some(t) = templates
                && !t.iter().any(|t| &t.country == c)
            {
                return Err((field, format!("no template is for country {c}")));
            }
        }
        for (i, c) in self.category_allowlist.iter().enumerate() {
            let field = format!("category-allowlist[{i}]");
            if c.is_empty()
                || !c
                    .chars()
                    .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '_')
            {
                return Err((field, "must be UPPER_SNAKE_CASE".into()));
            }
            if let Some(t) = templates
                && !t.iter().any(|t| &t.category == c)
            {
                return Err((field, format!("no template is for category {c}")));
            }
        }
        Ok(())
    }

    /// The template a new deal in (country, category) takes, or why none is allowed.
    pub fn admit<'a>(
        &self,
        templates: &'a Templates,
        country: &str,
        category: &str,
    ) -> Result<&'a Template, ScopeRefusal> {
        if !self.enabled {
            return Err(ScopeRefusal::Disabled);
        }
        if !self.country_allowlist.iter().any(|c| c == country) {
            return Err(ScopeRefusal::Country(country.to_owned()));
        }
        if !self.category_allowlist.iter().any(|c| c == category) {
            return Err(ScopeRefusal::Category(category.to_owned()));
        }
        templates
            .current(country, category, self.max_version().unwrap_or(0))
            .ok_or_else(|| ScopeRefusal::NoTemplate {
                country: country.to_owned(),
                category: category.to_owned(),
                version: self.template_version.clone(),
            })
    }

    /// Every (country, category) the scope admits that has a template, with that template.
    pub fn admitted<'a>(&self, templates: &'a Templates) -> Vec<&'a Template> {
        let mut out = Vec::new();
        for country in &self.country_allowlist {
            for category in &self.category_allowlist {
                if let Ok(t) = self.admit(templates, country, category) {
                    out.push(t);
                }
            }
        }
        out
    }
}

/// The scope in force, who set it, why and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeSetting {
    pub scope: PilotScope,
    pub actor: String,
    pub reason: String,
    pub since: crate::domain::UnixMicros,
}

/// Records `scope` as the one in force (audited with `audit`) unless it already is; returns
/// whether it changed.
pub async fn apply(
    store: &dyn crate::store::OperationsStore,
    scope: &PilotScope,
    audit: &crate::store::AuditRecord,
) -> Result<bool, crate::store::StoreError> {
    if store
        .pilot_scope()
        .await?
        .is_some_and(|current| &current.scope == scope)
    {
        return Ok(false);
    }
    let setting = ScopeSetting {
        scope: scope.clone(),
        actor: audit.actor.clone(),
        reason: audit.reason.clone().unwrap_or_default(),
        since: audit.at,
    };
    store.set_pilot_scope(&setting, audit).await?;
    Ok(true)
}

/// The scope in force: as last set, or closed when nobody has set one.
pub async fn current(
    store: &dyn crate::store::OperationsStore,
) -> Result<PilotScope, crate::store::StoreError> {
    Ok(store
        .pilot_scope()
        .await?
        .map(|s| s.scope)
        .unwrap_or_default())
}

/// How long the scope in force must have stood, without a SEV0/SEV1 incident, before a new
/// (country, category) may be admitted (seeds 000 and 001: expansion step by step).
pub const STABLE_BEFORE_EXPANSION: crate::domain::UnixMicros = 7 * 86_400 * 1_000_000;

fn admitted_pairs(
    scope: &PilotScope,
    templates: &Templates,
) -> std::collections::BTreeSet<(String, String)> {
    scope
        .admitted(templates)
        .into_iter()
        .map(|t| (t.country.clone(), t.category.clone()))
        .collect()
}

/// Whether moving from the scope in force (under the templates in use, `before`) to `next`
/// (under `after`) may happen now: a change that admits a (country, category) the scope in
/// force does not (a wider scope, or a template file for a listed pair that had none) needs
/// the scope in force to have stood `STABLE_BEFORE_EXPANSION` with no SEV0/SEV1 incident begun
/// in that time or unresolved. The first opening and narrowing are never held back. `Err`
/// says why not.
pub async fn expansion_allowed(
    store: &dyn crate::store::OperationsStore,
    now: crate::domain::UnixMicros,
    before: &Templates,
    next: &PilotScope,
    after: &Templates,
) -> Result<Result<(), String>, crate::store::StoreError> {
    let Some(current) = store.pilot_scope().await? else {
        return Ok(Ok(()));
    };
    let was = admitted_pairs(&current.scope, before);
    let new: Vec<String> = admitted_pairs(next, after)
        .difference(&was)
        .map(|(country, category)| format!("{country} × {category}"))
        .collect();
    if was.is_empty() || new.is_empty() {
        return Ok(Ok(()));
    }
    let stood = now - current.since;
    let began_since = store
        .incidents(current.since.max(now - STABLE_BEFORE_EXPANSION), now + 1)
        .await?
        .iter()
        .filter(|i| i.is_critical())
        .count();
    let unresolved: i64 = store
        .unresolved_incidents()
        .await?
        .iter()
        .filter(|(severity, _, _)| crate::domain::incidents::is_critical(severity))
        .map(|(_, _, n)| n)
        .sum();
    if stood >= STABLE_BEFORE_EXPANSION && began_since == 0 && unresolved == 0 {
        return Ok(Ok(()));
    }
    let hours = stood / 3_600_000_000;
    Ok(Err(format!(
        "admitting {} needs the scope in force stable for 7 days without SEV0/SEV1 incidents: \
         it has stood {} days {} h, with {began_since} critical incident(s) since and {unresolved} unresolved",
        new.join(", "),
        hours / 24,
        hours % 24
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn shipped() -> Templates {
        Templates::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates")).unwrap()
    }

    fn pilot() -> PilotScope {
        PilotScope {
            enabled: true,
            country_allowlist: vec!["MN".into()],
            category_allowlist: vec!["USED_CAR_PRIVATE".into()],
            template_version: "v1".into(),
        }
    }

    #[test]
    fn only_the_allowlisted_pairs_are_admitted() {
        let t = shipped();
        let s = pilot();
        assert_eq!(
            s.admit(&t, "MN", "USED_CAR_PRIVATE").unwrap().id,
            "MN_USED_CAR_PRIVATE_v1"
        );
        assert_eq!(
            s.admit(&t, "KR", "USED_CAR_PRIVATE").unwrap_err(),
            ScopeRefusal::Country("KR".into())
        );
        assert_eq!(
            s.admit(&t, "MN", "USED_CAR_DEALER").unwrap_err(),
            ScopeRefusal::Category("USED_CAR_DEALER".into())
        );
        let off = PilotScope {
            enabled: false,
            ..pilot()
        };
        assert_eq!(
            off.admit(&t, "MN", "USED_CAR_PRIVATE").unwrap_err(),
            ScopeRefusal::Disabled
        );
        // KR × REAL_ESTATE_SALE is allowlisted by the lists but has no template.
        let wide = PilotScope {
            country_allowlist: vec!["MN".into(), "KR".into()],
            category_allowlist: vec!["USED_CAR_PRIVATE".into(), "REAL_ESTATE_SALE".into()],
            ..pilot()
        };
        assert!(matches!(
            wide.admit(&t, "KR", "REAL_ESTATE_SALE"),
            Err(ScopeRefusal::NoTemplate { .. })
        ));
        let ids: Vec<&str> = wide.admitted(&t).iter().map(|t| t.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "MN_USED_CAR_PRIVATE_v1",
                "MN_REAL_ESTATE_SALE_v1",
                "KR_USED_CAR_PRIVATE_v1"
            ]
        );
    }

    #[test]
    fn a_scope_is_checked_against_the_templates() {
        let t = shipped();
        assert!(pilot().validate(Some(&t)).is_ok());
        let bad = |f: fn(&mut PilotScope)| {
            let mut s = pilot();
            f(&mut s);
            s.validate(Some(&t)).unwrap_err().0
        };
        assert_eq!(bad(|s| s.template_version = "1".into()), "template-version");
        assert_eq!(
            bad(|s| s.template_version = "v0".into()),
            "template-version"
        );
        assert_eq!(
            bad(|s| s.country_allowlist.push("mn".into())),
            "country-allowlist[1]"
        );
        assert_eq!(
            bad(|s| s.country_allowlist.push("JP".into())),
            "country-allowlist[1]"
        );
        assert_eq!(
            bad(|s| s.category_allowlist.push("BOATS".into())),
            "category-allowlist[1]"
        );
    }
}
