//! Amounts in integer base units and the assets they are counted in.
//!
//! Inside the daemon every amount is an integer number of the asset's smallest unit. Decimal
//! strings exist only at the API edge, parsed and printed here with the asset's exact scale.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Largest magnitude we store: 28 decimal digits fits PostgreSQL `NUMERIC(38,0)` and
/// `rust_decimal` exactly, and is 10^10 tokens even for an 18-decimal token.
pub const MAX_UNITS: i128 = 9_999_999_999_999_999_999_999_999_999;

/// A strictly positive amount in base units, at most [`MAX_UNITS`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i128", into = "i128")]
pub struct Amount(i128);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("must be a decimal string such as \"125.50\"")]
    NotDecimal,
    #[error("must be greater than zero")]
    NotPositive,
    #[error("has more than {decimals} decimal places, the precision of {asset}")]
    TooPrecise { decimals: u8, asset: String },
    #[error("is larger than the largest amount the ledger accepts")]
    TooLarge,
}

impl Amount {
    pub fn new(units: i128) -> Result<Self, AmountError> {
        if units <= 0 {
            Err(AmountError::NotPositive)
        } else if units > MAX_UNITS {
            Err(AmountError::TooLarge)
        } else {
            Ok(Self(units))
        }
    }

    pub fn units(self) -> i128 {
        self.0
    }

    /// Parses a decimal string in token units (`"250000.5"`) into base units of `asset`.
    /// Accepts only plain digits with an optional fraction: no sign, exponent, spaces or
    /// separators, so one amount has one spelling.
    pub fn parse_decimal(text: &str, asset: &AssetSpec) -> Result<Self, AmountError> {
        let (whole, fraction) = match text.split_once('.') {
            Some((w, f)) => (w, f),
            None => (text, ""),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || (text.contains('.') && !digits(fraction)) {
            return Err(AmountError::NotDecimal);
        }
        let fraction = fraction.trim_end_matches('0');
        if fraction.len() > usize::from(asset.decimals) {
            return Err(AmountError::TooPrecise {
                decimals: asset.decimals,
                asset: asset.key.to_string(),
            });
        }
        let whole = whole.trim_start_matches('0');
        if whole.len() + usize::from(asset.decimals) > 28 {
            return Err(AmountError::TooLarge);
        }
        let mut units: i128 = 0;
        for b in whole.bytes() {
            units = units * 10 + i128::from(b - b'0');
        }
        let mut frac_digits = fraction.bytes();
        for _ in 0..asset.decimals {
            let d = frac_digits.next().map_or(0, |b| i128::from(b - b'0'));
            units = units * 10 + d;
        }
        Amount::new(units)
    }
}

impl TryFrom<i128> for Amount {
    type Error = AmountError;
    fn try_from(units: i128) -> Result<Self, Self::Error> {
        Amount::new(units)
    }
}

impl From<Amount> for i128 {
    fn from(a: Amount) -> i128 {
        a.0
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({})", self.0)
    }
}

/// Prints a signed base-unit quantity as a decimal string with exactly `decimals` places.
pub fn format_units(units: i128, decimals: u8) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let magnitude = units.unsigned_abs();
    if decimals == 0 {
        return format!("{sign}{magnitude}");
    }
    let scale = 10u128.pow(u32::from(decimals));
    format!(
        "{sign}{}.{:0width$}",
        magnitude / scale,
        magnitude % scale,
        width = usize::from(decimals)
    )
}

/// An asset is a token code on one network: `USDT` on `ethereum` and `USDT` on `tron` are
/// different assets and never mix in one posting.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::FromRow)]
pub struct AssetKey {
    pub network: String,
    #[sqlx(rename = "asset")]
    pub code: String,
}

impl AssetKey {
    pub fn new(network: impl Into<String>, code: impl Into<String>) -> Self {
        Self {
            network: network.into(),
            code: code.into(),
        }
    }
}

impl fmt::Display for AssetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.network, self.code)
    }
}

impl fmt::Debug for AssetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AssetKey({self})")
    }
}

/// An asset with its precision, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetSpec {
    pub key: AssetKey,
    pub decimals: u8,
}

impl AssetSpec {
    pub fn format(&self, units: i128) -> String {
        format_units(units, self.decimals)
    }

    /// `units` in token units as a float, for metrics only (never for money).
    pub fn units_as_f64(&self, units: i128) -> f64 {
        units as f64 / 10f64.powi(i32::from(self.decimals))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usdt() -> AssetSpec {
        AssetSpec {
            key: AssetKey::new("ethereum", "USDT"),
            decimals: 6,
        }
    }

    #[test]
    fn parses_exact_decimals() {
        let a = usdt();
        assert_eq!(
            Amount::parse_decimal("250000.5", &a).unwrap().units(),
            250_000_500_000
        );
        assert_eq!(Amount::parse_decimal("0.000001", &a).unwrap().units(), 1);
        assert_eq!(
            Amount::parse_decimal("1.500000", &a).unwrap().units(),
            1_500_000
        );
        assert_eq!(Amount::parse_decimal("007", &a).unwrap().units(), 7_000_000);
    }

    #[test]
    fn rejects_every_other_spelling() {
        let a = usdt();
        for bad in [
            "", ".5", "5.", "-1", "+1", "1e6", " 1", "1 ", "1,5", "1.2.3", "0x10", "NaN",
        ] {
            assert_eq!(
                Amount::parse_decimal(bad, &a),
                Err(AmountError::NotDecimal),
                "{bad:?}"
            );
        }
        assert_eq!(
            Amount::parse_decimal("0", &a),
            Err(AmountError::NotPositive)
        );
        assert_eq!(
            Amount::parse_decimal("0.0000000", &a),
            Err(AmountError::NotPositive)
        );
        assert!(matches!(
            Amount::parse_decimal("0.0000001", &a),
            Err(AmountError::TooPrecise { decimals: 6, .. })
        ));
        assert_eq!(
            Amount::parse_decimal("99999999999999999999999", &a),
            Err(AmountError::TooLarge)
        );
    }

    #[test]
    fn formats_with_the_asset_scale() {
        assert_eq!(format_units(1_500_000, 6), "1.500000");
        assert_eq!(format_units(-1, 6), "-0.000001");
        assert_eq!(format_units(42, 0), "42");
    }
}
