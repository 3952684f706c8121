//! Deal templates: one JSON file per (country × category × version), named
//! `{COUNTRY}_{CATEGORY}_v{N}.json`, holding every parameter a deal runs on (inspection and
//! dispute TTLs, the immediate/holdback split, evidence rules, offset caps, allowed dispute
//! outcomes, what a dispute's expiry does, the currency shown to people). A deal keeps a copy
//! of the template it was created with, so a later version never changes a running deal.
//!
//! Validation happens at load (and with `treasuryd templates check`): a template that does not
//! parse, names an unknown field, or breaks a rule (ratios not summing to one, an offset cap
//! above the holdback, a file name that disagrees with its content) never loads, and the error
//! names the file and the field. `templates/schema/deal-template.schema.json` describes the
//! same format for editors and other tools; a test keeps the two in step.
//!
//! Ratios are read as JSON numbers and turned at once into whole basis points; one that is
//! not a whole number of basis points is refused, so no float ever reaches money.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One whole, in basis points.
pub const WHOLE_BPS: u32 = 10_000;

/// What an Operator may decide for a disputed deal.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DisputeOutcome {
    /// Everything still held goes to the seller.
    ReleaseFull,
    /// Everything still held goes back to the buyer.
    RefundFull,
    /// Part goes back to the buyer (at most the reason code's cap), the rest to the seller.
    Offset,
}

impl DisputeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DisputeOutcome::ReleaseFull => "RELEASE_FULL",
            DisputeOutcome::RefundFull => "REFUND_FULL",
            DisputeOutcome::Offset => "OFFSET",
        }
    }
}

/// What happens when a dispute's TTL runs out with no Operator decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DisputeExpiry {
    /// Funds stay held, the dispute is marked escalated and counted for alerting.
    Escalate,
    /// The holdback goes to the seller.
    ReleaseFull,
    /// The holdback goes back to the buyer.
    RefundFull,
}

/// How the deal's currency is shown to people (amounts themselves are in the ledger asset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CurrencyDisplay {
    /// ISO 4217, e.g. "MNT".
    pub code: String,
    pub symbol: String,
    /// BCP 47, e.g. "mn-MN".
    pub locale: String,
    pub minor_units: u8,
}

/// A template file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TemplateFile {
    #[serde(rename = "$schema", default)]
    _schema: Option<String>,
    country: String,
    category: String,
    version: u32,
    inspection_ttl_days: u32,
    dispute_ttl_hours: u32,
    holdback_ratio: f64,
    immediate_ratio: f64,
    evidence_required: bool,
    evidence_types: Vec<String>,
    offset_caps_by_reason_code: BTreeMap<String, f64>,
    dispute_outcomes: Vec<DisputeOutcome>,
    #[serde(default = "default_expiry")]
    on_dispute_ttl_expiry: DisputeExpiry,
    currency: CurrencyDisplay,
}

fn default_expiry() -> DisputeExpiry {
    DisputeExpiry::Escalate
}

/// A validated template. Serialized (camelCase, ratios in basis points) into each deal it
/// governs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    /// `{COUNTRY}_{CATEGORY}_v{N}`.
    pub id: String,
    pub country: String,
    pub category: String,
    pub version: u32,
    pub inspection_ttl_days: u32,
    pub dispute_ttl_hours: u32,
    pub holdback_bps: u32,
    pub immediate_bps: u32,
    pub evidence_required: bool,
    pub evidence_types: Vec<String>,
    /// Reason code → the most a dispute with it may give back to the buyer, in basis points
    /// of the deal amount.
    pub offset_caps_bps: BTreeMap<String, u32>,
    pub dispute_outcomes: Vec<DisputeOutcome>,
    pub on_dispute_ttl_expiry: DisputeExpiry,
    pub currency: CurrencyDisplay,
}

impl Template {
    /// Splits `total` base units into (immediate, holdback): the holdback is rounded down, the
    /// remainder of the division goes to the immediate part, so the two always sum to `total`.
    pub fn split(&self, total: i128) -> (i128, i128) {
        let holdback = total * i128::from(self.holdback_bps) / i128::from(WHOLE_BPS);
        (total - holdback, holdback)
    }

    /// The most an offset with `reason` may return to the buyer of a deal of `total`, rounded
    /// down; None for a reason code the template does not know.
    pub fn offset_cap(&self, reason: &str, total: i128) -> Option<i128> {
        self.offset_caps_bps
            .get(reason)
            .map(|bps| total * i128::from(*bps) / i128::from(WHOLE_BPS))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}: {field}: {message}")]
pub struct TemplateError {
    pub file: String,
    /// Dotted path of the offending field ("." for the file itself).
    pub field: String,
    pub message: String,
}

fn ratio_bps(value: f64) -> Option<u32> {
    let bps = value * f64::from(WHOLE_BPS);
    let rounded = bps.round();
    ((0.0..=f64::from(WHOLE_BPS)).contains(&rounded) && (bps - rounded).abs() < 1e-6)
        .then_some(rounded as u32)
}

fn upper_snake(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && text.starts_with(|c: char| c.is_ascii_uppercase())
}

/// Parses and validates one template; `file` is its name (for errors and the name check).
pub fn parse(file: &str, text: &str) -> Result<Template, TemplateError> {
    let fail = |field: &str, message: String| TemplateError {
        file: file.to_owned(),
        field: field.to_owned(),
        message,
    };
    let de = &mut serde_json::Deserializer::from_str(text);
    let raw: TemplateFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        fail(
            if path.is_empty() { "." } else { &path },
            e.into_inner().to_string(),
        )
    })?;
    if raw.country.len() != 2 || !raw.country.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(fail(
            "country",
            "must be an ISO 3166 alpha-2 code in capitals".into(),
        ));
    }
    if !upper_snake(&raw.category) {
        return Err(fail("category", "must be UPPER_SNAKE_CASE".into()));
    }
    if raw.version == 0 {
        return Err(fail("version", "must be at least 1".into()));
    }
    let id = format!("{}_{}_v{}", raw.country, raw.category, raw.version);
    let stem = Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if stem != id {
        return Err(fail(
            ".",
            format!("the file must be named {id}.json after its country, category and version"),
        ));
    }
    if raw.inspection_ttl_days == 0 || raw.inspection_ttl_days > 90 {
        return Err(fail("inspectionTtlDays", "must be between 1 and 90".into()));
    }
    if raw.dispute_ttl_hours == 0 || raw.dispute_ttl_hours > 24 * 90 {
        return Err(fail("disputeTtlHours", "must be between 1 and 2160".into()));
    }
    let holdback_bps = ratio_bps(raw.holdback_ratio).ok_or_else(|| {
        fail(
            "holdbackRatio",
            "must be between 0 and 1 in whole basis points (0.0001)".into(),
        )
    })?;
    let immediate_bps = ratio_bps(raw.immediate_ratio).ok_or_else(|| {
        fail(
            "immediateRatio",
            "must be between 0 and 1 in whole basis points (0.0001)".into(),
        )
    })?;
    if holdback_bps + immediate_bps != WHOLE_BPS {
        return Err(fail(
            "immediateRatio",
            format!(
                "immediateRatio + holdbackRatio must be exactly 1 (they are {} + {})",
                raw.immediate_ratio, raw.holdback_ratio
            ),
        ));
    }
    if raw.evidence_required && raw.evidence_types.is_empty() {
        return Err(fail(
            "evidenceTypes",
            "evidence is required, so at least one type must be accepted".into(),
        ));
    }
    for (i, t) in raw.evidence_types.iter().enumerate() {
        if !upper_snake(t) {
            return Err(fail(
                &format!("evidenceTypes[{i}]"),
                "must be UPPER_SNAKE_CASE".into(),
            ));
        }
    }
    if raw.dispute_outcomes.is_empty() {
        return Err(fail(
            "disputeOutcomes",
            "at least one outcome must be allowed".into(),
        ));
    }
    let mut outcomes = raw.dispute_outcomes.clone();
    outcomes.sort();
    outcomes.dedup();
    if outcomes.len() != raw.dispute_outcomes.len() {
        return Err(fail("disputeOutcomes", "lists an outcome twice".into()));
    }
    let mut offset_caps_bps = BTreeMap::new();
    for (code, cap) in &raw.offset_caps_by_reason_code {
        let field = format!("offsetCapsByReasonCode.{code}");
        if !upper_snake(code) {
            return Err(fail(&field, "reason codes are UPPER_SNAKE_CASE".into()));
        }
        let bps = ratio_bps(*cap).filter(|b| *b > 0).ok_or_else(|| {
            fail(
                &field,
                "must be above 0 and at most 1, in whole basis points".into(),
            )
        })?;
        // An offset comes out of the holdback, the only part still held when a dispute opens.
        if bps > holdback_bps {
            return Err(fail(
                &field,
                format!("exceeds the holdback ratio {}", raw.holdback_ratio),
            ));
        }
        offset_caps_bps.insert(code.clone(), bps);
    }
    if raw.offset_caps_by_reason_code.is_empty() {
        return Err(fail(
            "offsetCapsByReasonCode",
            "at least one reason code is needed to raise an issue".into(),
        ));
    }
    let c = &raw.currency;
    if c.code.len() != 3 || !c.code.chars().all(|ch| ch.is_ascii_uppercase()) {
        return Err(fail("currency.code", "must be an ISO 4217 code".into()));
    }
    if c.minor_units > 4 {
        return Err(fail(
            "currency.minorUnits",
            "must be between 0 and 4".into(),
        ));
    }
    if c.locale.is_empty() || c.symbol.is_empty() {
        return Err(fail(
            "currency",
            "symbol and locale must not be empty".into(),
        ));
    }
    Ok(Template {
        id,
        country: raw.country,
        category: raw.category,
        version: raw.version,
        inspection_ttl_days: raw.inspection_ttl_days,
        dispute_ttl_hours: raw.dispute_ttl_hours,
        holdback_bps,
        immediate_bps,
        evidence_required: raw.evidence_required,
        evidence_types: raw.evidence_types,
        offset_caps_bps,
        dispute_outcomes: raw.dispute_outcomes,
        on_dispute_ttl_expiry: raw.on_dispute_ttl_expiry,
        currency: raw.currency,
    })
}

/// Every template of a directory, by id.
#[derive(Debug, Clone, Default)]
pub struct Templates {
    by_id: BTreeMap<String, Template>,
}

impl Templates {
    /// Loads every `*.json` directly in `dir` (not `schema/`). All or nothing: the first
    /// invalid file fails the load. A missing directory holds no templates.
    pub fn load(dir: &Path) -> Result<Self, TemplateError> {
        let mut by_id = BTreeMap::new();
        for path in json_files(dir)? {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let text = std::fs::read_to_string(&path).map_err(|e| TemplateError {
                file: name.clone(),
                field: ".".into(),
                message: e.to_string(),
            })?;
            let t = parse(&name, &text)?;
            by_id.insert(t.id.clone(), t);
        }
        Ok(Self { by_id })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Template> {
        self.by_id.values()
    }

    pub fn get(&self, id: &str) -> Option<&Template> {
        self.by_id.get(id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The newest version of (country, category) not above `max_version`.
    pub fn current(&self, country: &str, category: &str, max_version: u32) -> Option<&Template> {
        self.by_id
            .values()
            .filter(|t| t.country == country && t.category == category && t.version <= max_version)
            .max_by_key(|t| t.version)
    }
}

/// The templates the daemon runs with, reloadable in place (SIGHUP): readers take a snapshot,
/// a reload swaps in a fully validated new set or keeps the old one.
#[derive(Debug)]
pub struct TemplateCatalog {
    current: std::sync::RwLock<std::sync::Arc<Templates>>,
}

impl TemplateCatalog {
    pub fn load(dir: &Path) -> Result<Self, TemplateError> {
        Ok(Self {
            current: std::sync::RwLock::new(std::sync::Arc::new(Templates::load(dir)?)),
        })
    }

    pub fn snapshot(&self) -> std::sync::Arc<Templates> {
        match self.current.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Loads `dir` again; on any error the templates in use stay as they were.
    pub fn reload(&self, dir: &Path) -> Result<usize, TemplateError> {
        Ok(self.replace(Templates::load(dir)?))
    }

    /// Puts `fresh` (already loaded and validated) in use; returns how many it holds.
    pub fn replace(&self, fresh: Templates) -> usize {
        let fresh = std::sync::Arc::new(fresh);
        let count = fresh.len();
        match self.current.write() {
            Ok(mut t) => *t = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        count
    }
}

fn json_files(dir: &Path) -> Result<Vec<PathBuf>, TemplateError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(TemplateError {
                file: dir.display().to_string(),
                field: ".".into(),
                message: e.to_string(),
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates")
    }

    const GOOD: &str = r#"{
        "country": "MN", "category": "USED_CAR_PRIVATE", "version": 1,
        "inspectionTtlDays": 3, "disputeTtlHours": 48,
        "holdbackRatio": 0.15, "immediateRatio": 0.85,
        "evidenceRequired": true, "evidenceTypes": ["PHOTO"],
        "offsetCapsByReasonCode": {"UNDISCLOSED_DAMAGE": 0.15, "MISSING_DOCUMENTS": 0.05},
        "disputeOutcomes": ["RELEASE_FULL", "REFUND_FULL", "OFFSET"],
        "currency": {"code": "MNT", "symbol": "₮", "locale": "mn-MN", "minorUnits": 2}
    }"#;

    fn edited(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "{from}");
        GOOD.replacen(from, to, 1)
    }

    #[test]
    fn the_shipped_templates_load_with_the_seeds_parameters() {
        let all = Templates::load(&shipped()).unwrap();
        let ids: Vec<&str> = all.iter().map(|t| t.id.as_str()).collect();
        for id in [
            "KR_USED_CAR_PRIVATE_v1",
            "MN_REAL_ESTATE_RENTAL_v1",
            "MN_REAL_ESTATE_SALE_v1",
            "MN_USED_CAR_DEALER_v1",
            "MN_USED_CAR_PRIVATE_v1",
        ] {
            assert!(ids.contains(&id), "{id} in {ids:?}");
        }
        let t = all.get("MN_USED_CAR_PRIVATE_v1").unwrap();
        assert_eq!(
            (
                t.inspection_ttl_days,
                t.dispute_ttl_hours,
                t.holdback_bps,
                t.immediate_bps
            ),
            (3, 48, 1_500, 8_500)
        );
        let t = all.get("MN_REAL_ESTATE_SALE_v1").unwrap();
        assert_eq!(
            (t.inspection_ttl_days, t.dispute_ttl_hours, t.holdback_bps),
            (7, 72, 2_500)
        );
        let t = all.get("KR_USED_CAR_PRIVATE_v1").unwrap();
        assert_eq!(
            (t.currency.code.as_str(), t.currency.locale.as_str()),
            ("KRW", "ko-KR")
        );
        assert!(
            all.iter()
                .all(|t| t.on_dispute_ttl_expiry == DisputeExpiry::Escalate)
        );
    }

    #[test]
    fn the_split_rounds_the_holdback_down_and_sums_to_the_total() {
        let t = parse("MN_USED_CAR_PRIVATE_v1.json", GOOD).unwrap();
        assert_eq!(t.split(1_000_000), (850_000, 150_000));
        // 15% of 7 is 1.05: the holdback takes 1, the immediate part the remainder.
        assert_eq!(t.split(7), (6, 1));
        for total in [1, 3, 99, 1_234_567, 10_i128.pow(20) + 3] {
            let (i, h) = t.split(total);
            assert_eq!(i + h, total);
            assert!(h <= total * 15 / 100);
        }
        assert_eq!(t.offset_cap("MISSING_DOCUMENTS", 1_000_001), Some(50_000));
        assert_eq!(t.offset_cap("NOPE", 1_000), None);
    }

    #[test]
    fn invalid_templates_name_the_file_and_the_field() {
        let cases = [
            (
                edited("\"immediateRatio\": 0.85", "\"immediateRatio\": 0.8"),
                "immediateRatio",
            ),
            (
                edited("\"holdbackRatio\": 0.15", "\"holdbackRatio\": 0.15005"),
                "holdbackRatio",
            ),
            (
                edited(
                    "\"UNDISCLOSED_DAMAGE\": 0.15",
                    "\"UNDISCLOSED_DAMAGE\": 0.2",
                ),
                "offsetCapsByReasonCode.UNDISCLOSED_DAMAGE",
            ),
            (
                edited("\"OFFSET\"]", "\"SPLIT_EVENLY\"]"),
                "disputeOutcomes[2]",
            ),
            (
                edited(
                    "\"disputeOutcomes\": [\"RELEASE_FULL\", \"REFUND_FULL\", \"OFFSET\"]",
                    "\"disputeOutcomes\": []",
                ),
                "disputeOutcomes",
            ),
            (
                edited("\"inspectionTtlDays\": 3", "\"inspectionTtlDays\": 0"),
                "inspectionTtlDays",
            ),
            (
                edited("\"inspectionTtlDays\": 3", "\"inspectionTtlDays\": \"3\""),
                "inspectionTtlDays",
            ),
            (
                edited("\"evidenceTypes\": [\"PHOTO\"]", "\"evidenceTypes\": []"),
                "evidenceTypes",
            ),
            (
                edited("\"version\": 1", "\"version\": 1, \"holdback\": 1"),
                "holdback",
            ),
            (
                edited("\"code\": \"MNT\"", "\"code\": \"mnt\""),
                "currency.code",
            ),
            (edited("\"version\": 1", "\"version\": 2"), "."),
        ];
        for (text, field) in cases {
            let e = parse("MN_USED_CAR_PRIVATE_v1.json", &text).unwrap_err();
            assert_eq!(e.file, "MN_USED_CAR_PRIVATE_v1.json");
            assert_eq!(e.field, field, "{e}");
        }
        assert!(parse("MN_USED_CAR_PRIVATE_v1.json", GOOD).is_ok());
    }

    #[test]
    fn the_newest_version_not_above_the_scope_is_current() {
        let v1 = parse("MN_USED_CAR_PRIVATE_v1.json", GOOD).unwrap();
        let v2 = parse(
            "MN_USED_CAR_PRIVATE_v2.json",
            &edited("\"version\": 1", "\"version\": 2"),
        )
        .unwrap();
        let all = Templates {
            by_id: [(v1.id.clone(), v1), (v2.id.clone(), v2)]
                .into_iter()
                .collect(),
        };
        assert_eq!(all.current("MN", "USED_CAR_PRIVATE", 1).unwrap().version, 1);
        assert_eq!(all.current("MN", "USED_CAR_PRIVATE", 2).unwrap().version, 2);
        assert_eq!(all.current("MN", "USED_CAR_PRIVATE", 9).unwrap().version, 2);
        assert!(all.current("KR", "USED_CAR_PRIVATE", 9).is_none());
    }

    /// The committed JSON Schema describes exactly the fields the loader reads.
    #[test]
    fn the_json_schema_matches_the_loader() {
        let text =
            std::fs::read_to_string(shipped().join("schema/deal-template.schema.json")).unwrap();
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut properties: Vec<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        properties.sort();
        let mut expected: Vec<String> = serde_json::from_str::<serde_json::Value>(GOOD)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .chain(["$schema".to_owned(), "onDisputeTtlExpiry".to_owned()])
            .collect();
        expected.sort();
        assert_eq!(properties, expected);
        assert_eq!(schema["additionalProperties"], false);
        let mut required: Vec<String> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        required.sort();
        let mut needed: Vec<String> = expected
            .into_iter()
            .filter(|k| k != "$schema" && k != "onDisputeTtlExpiry")
            .collect();
        needed.sort();
        assert_eq!(required, needed);
        assert_eq!(
            schema["properties"]["disputeOutcomes"]["items"]["enum"],
            serde_json::json!(["RELEASE_FULL", "REFUND_FULL", "OFFSET"])
        );
    }
}
