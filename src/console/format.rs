//! How the console shows money and time: exact decimal strings as the API gives them (never
//! through a float), grouped and punctuated as the locale writes numbers; times as RFC 3339
//! UTC that the page's script turns into the viewer's time zone, with UTC on hover.

use maud::{Markup, html};

/// Thousands and decimal separators of a BCP 47 locale.
fn separators(locale: &str) -> (&'static str, &'static str) {
    match locale {
        // Mongolian: narrow no-break space between groups, comma for decimals.
        "mn-MN" => ("\u{202f}", ","),
        // Korean and the default (English) write 1,234.56.
        _ => (",", "."),
    }
}

/// `amount` (a decimal string like `"1234567.500000"`, possibly signed) grouped for `locale`,
/// every digit kept.
pub fn group(amount: &str, locale: &str) -> String {
    let (thousands, decimal) = separators(locale);
    let (sign, digits) = match amount.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", amount),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push_str(thousands);
        }
        grouped.push(c);
    }
    if fraction.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}{decimal}{fraction}")
    }
}

/// An amount of `asset` (USDT, USDC, …) for `locale`.
pub fn money(amount: &str, asset: &str, locale: &str) -> Markup {
    html! { span.money data-exact=(amount) { (group(amount, locale)) " " (asset) } }
}

/// A moment: UTC in the page, the viewer's zone once the script runs, UTC on hover.
pub fn time(rfc3339: &str) -> Markup {
    html! { time datetime=(rfc3339) title={ (rfc3339) " UTC" } data-local { (rfc3339) } }
}

/// A live countdown to `deadline` (RFC 3339), with the deadline itself.
pub fn countdown(deadline: &str) -> Markup {
    html! {
        span.countdown data-deadline=(deadline) { "until " }
        " (" (time(deadline)) ")"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_keep_every_digit_and_group_by_locale() {
        assert_eq!(group("1234567.500000", "en"), "1,234,567.500000");
        assert_eq!(group("1234567.500000", "ko-KR"), "1,234,567.500000");
        assert_eq!(
            group("1234567.500000", "mn-MN"),
            "1\u{202f}234\u{202f}567,500000"
        );
        assert_eq!(group("-1000", "en"), "-1,000");
        assert_eq!(group("999.000001", "en"), "999.000001");
        assert_eq!(group("0.000001", "mn-MN"), "0,000001");
        // A 28-digit amount, as the ledger allows, is not rounded.
        assert_eq!(
            group("1234567890123456789012.123456", "en"),
            "1,234,567,890,123,456,789,012.123456"
        );
    }
}
