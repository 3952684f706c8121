//! Audit exports: every deal's timeline and every ledger posting, as JSON Lines or CSV
//! (RFC 4180: fields with a comma, quote or line break are quoted, quotes doubled). Amounts are
//! base units, times RFC 3339 UTC. For `treasuryd export` and `GET /v1/exports/…`.

use crate::domain::micros_to_rfc3339;
use crate::store::{JournalFilter, Store, StoreError};
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

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Rows of (column, value) written as JSON objects or CSV lines under one header.
struct Table {
    format: Format,
    columns: &'static [&'static str],
    out: String,
}

impl Table {
    fn new(format: Format, columns: &'static [&'static str]) -> Self {
        let out = match format {
            Format::Csv => format!("{}\n", columns.join(",")),
            Format::JsonLines => String::new(),
        };
        Self {
            format,
            columns,
            out,
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

/// Every line of every deal's timeline, deal by deal in creation order.
pub async fn timelines(store: &dyn Store, format: Format) -> Result<String, StoreError> {
    let mut table = Table::new(
        format,
        &["deal_id", "template", "at", "kind", "actor", "detail"],
    );
    let mut after = None;
    loop {
        let page = store
            .list_deals(&crate::store::DealFilter {
                after,
                limit: 500,
                ..Default::default()
            })
            .await?;
        for deal in &page {
            for e in store.deal_events(deal.id).await? {
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
        after = page.last().map(|d| d.id);
        if page.len() < 500 {
            return Ok(table.out);
        }
    }
}

/// Every posting of the journal in sequence, with its transaction's fields.
pub async fn journal(store: &dyn Store, format: Format) -> Result<String, StoreError> {
    let mut table = Table::new(
        format,
        &[
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
        ],
    );
    let mut after_seq = 0;
    loop {
        let page = store
            .list_journal(&JournalFilter {
                company: None,
                account: None,
                kind: None,
                from: None,
                to: None,
                after_seq,
                limit: 500,
            })
            .await?;
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
        after_seq = page.last().map_or(after_seq, |t| t.seq);
        if page.len() < 500 {
            return Ok(table.out);
        }
    }
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
        assert_eq!(t.out, "a,b\n1,\"x,y\"\n");
        let mut t = Table::new(Format::JsonLines, &["a", "b"]);
        t.row(&["1".into(), "x,y".into()]);
        assert_eq!(t.out, "{\"a\":\"1\",\"b\":\"x,y\"}\n");
    }
}
