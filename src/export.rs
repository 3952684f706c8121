//! Audit exports: every deal's timeline and every ledger posting, as JSON Lines or CSV
//! (RFC 4180: fields with a comma, quote or line break are quoted, quotes doubled). Amounts are
//! base units, times RFC 3339 UTC. For `treasuryd export` and `GET /v1/exports/…`.

use crate::domain::{UnixMicros, micros_to_rfc3339};
use crate::store::{DynStore, JournalFilter, StoreError};
use futures::stream::{BoxStream, StreamExt};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    JsonLines,
    Csv,
}

impl Format {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "jsonl" => Some(Format::JsonLines),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::JsonLines => "jsonl",
            Format::Csv => "csv",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::JsonLines => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// A CSV field: quoted when it holds a comma, quote or line break (quotes doubled), and
/// prefixed with `'` when a spreadsheet would run it as a formula (it starts with `=`, `+`,
/// `-`, `@`, a tab or a carriage return and is not a plain number such as a negative amount).
fn csv_field(text: &str) -> String {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    let number = !whole.is_empty()
        && !fraction.is_empty()
        && whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit());
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']) && !number;
    let text = if formula {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// The time range an export covers: `[from, to)`, either end open.
#[derive(Debug, Clone, Copy, Default)]
pub struct Range {
    pub from: Option<UnixMicros>,
    pub to: Option<UnixMicros>,
}

impl Range {
    fn holds(&self, at: UnixMicros) -> bool {
        self.from.is_none_or(|f| at >= f) && self.to.is_none_or(|t| at < t)
    }
}

/// Rows of (column, value) written as JSON objects or CSV lines.
struct Table {
    format: Format,
    columns: &'static [&'static str],
    out: String,
}

impl Table {
    /// What comes before the rows: CSV's header line.
    fn header(format: Format, columns: &'static [&'static str]) -> String {
        match format {
            Format::Csv => format!("{}\n", columns.join(",")),
            Format::JsonLines => String::new(),
        }
    }

    fn new(format: Format, columns: &'static [&'static str]) -> Self {
        Self {
            format,
            columns,
            out: String::new(),
        }
    }

    fn row(&mut self, values: &[String]) {
        match self.format {
            Format::Csv => {
                let line: Vec<String> = values.iter().map(|v| csv_field(v)).collect();
                self.out.push_str(&line.join(","));
            }
            Format::JsonLines => {
                let object: serde_json::Map<String, serde_json::Value> = self
                    .columns
                    .iter()
                    .zip(values)
                    .map(|(c, v)| ((*c).to_owned(), json!(v)))
                    .collect();
                self.out
                    .push_str(&serde_json::Value::Object(object).to_string());
            }
        }
        self.out.push('\n');
    }
}

/// An export as text chunks: the header, then one chunk per page of the store, so neither
/// the daemon nor the CLI ever holds a whole export in memory.
pub type Chunks = BoxStream<'static, Result<String, StoreError>>;

const PAGE: i64 = 500;

const TIMELINE_COLUMNS: &[&str] = &["deal_id", "template", "at", "kind", "actor", "detail"];

/// Every line of every deal's timeline within `range`, deal by deal in creation order.
pub fn timelines(store: DynStore, format: Format, range: Range) -> Chunks {
    let header = Table::header(format, TIMELINE_COLUMNS);
    let pages = futures::stream::try_unfold(Some(None), move |after| {
        let store = store.clone();
        async move {
            let Some(after) = after else {
                return Ok(None);
            };
            let page = store
                .list_deals(&crate::store::DealFilter {
                    after,
                    limit: PAGE,
                    ..Default::default()
                })
                .await?;
            let mut table = Table::new(format, TIMELINE_COLUMNS);
            for deal in &page {
                for e in store.deal_events(deal.id).await? {
                    if range.holds(e.at) {
                        table.row(&[
                            deal.id.to_string(),
                            deal.template.id.clone(),
                            micros_to_rfc3339(e.at),
                            e.kind,
                            e.actor,
                            e.detail,
                        ]);
                    }
                }
            }
            let next = (page.len() as i64 == PAGE).then(|| page.last().map(|d| d.id));
            Ok(Some((table.out, next)))
        }
    });
    futures::stream::once(async move { Ok(header) })
        .chain(pages)
        .boxed()
}

const JOURNAL_COLUMNS: &[&str] = &[
    "seq",
    "tx_id",
    "at",
    "kind",
    "network",
    "asset",
    "account",
    "bucket",
    "amount",
    "reference",
    "memo",
    "actor",
    "hash",
];

/// Every posting of the journal within `range`, in sequence, with its transaction's fields.
pub fn journal(store: DynStore, format: Format, range: Range) -> Chunks {
    let header = Table::header(format, JOURNAL_COLUMNS);
    let pages = futures::stream::try_unfold(Some(0), move |after| {
        let store = store.clone();
        async move {
            let Some(after_seq) = after else {
                return Ok(None);
            };
            let page = store
                .list_journal(&JournalFilter {
                    company: None,
                    account: None,
                    kind: None,
                    from: range.from,
                    to: range.to,
                    after_seq,
                    limit: PAGE,
                })
                .await?;
            let mut table = Table::new(format, JOURNAL_COLUMNS);
            for tx in &page {
                for p in &tx.postings {
                    table.row(&[
                        tx.seq.to_string(),
                        tx.id.to_string(),
                        micros_to_rfc3339(tx.created_at),
                        tx.kind.as_str().to_owned(),
                        tx.asset.network.clone(),
                        tx.asset.code.clone(),
                        p.account.to_string(),
                        p.bucket.as_str().to_owned(),
                        p.amount.to_string(),
                        tx.reference.clone().unwrap_or_default(),
                        tx.memo.clone().unwrap_or_default(),
                        tx.actor.clone().unwrap_or_default(),
                        hex::encode(tx.hash),
                    ]);
                }
            }
            let next =
                (page.len() as i64 == PAGE).then(|| page.last().map_or(after_seq, |t| t.seq));
            Ok(Some((table.out, next)))
        }
    });
    futures::stream::once(async move { Ok(header) })
        .chain(pages)
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_only_what_needs_it() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        let mut t = Table::new(Format::Csv, &["a", "b"]);
        t.row(&["1".into(), "x,y".into()]);
        assert_eq!(
            Table::header(Format::Csv, &["a", "b"]) + &t.out,
            "a,b\n1,\"x,y\"\n"
        );
        let mut t = Table::new(Format::JsonLines, &["a", "b"]);
        t.row(&["1".into(), "x,y".into()]);
        assert_eq!(t.out, "{\"a\":\"1\",\"b\":\"x,y\"}\n");
    }

    #[test]
    fn a_spreadsheet_never_runs_an_exported_field() {
        for (field, written) in [
            (
                "=HYPERLINK(\"http://evil\",\"x\")",
                "\"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\"",
            ),
            ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("-2+3", "'-2+3"),
            ("\tTAB", "'\tTAB"),
        ] {
            assert_eq!(csv_field(field), written, "{field}");
        }
        // Amounts stay numbers.
        for number in ["-5000000", "-12.5", "42", "0.000001"] {
            assert_eq!(csv_field(number), number);
        }
    }
}
