//! Pure domain types shared by every part: money, assets, ids, roles, and the records each
//! part stores (`store` reads and writes these, never a feature module's own types). No I/O
//! here.

pub mod audit;
pub mod console;
pub mod escrow;
pub mod ids;
pub mod incidents;
pub mod money;
pub mod operations;
pub mod payouts;
pub mod tiers;
pub mod trust;
pub mod webhooks;

pub use ids::{AccountId, ChunkId, DealId, HoldId, PayoutId, TimerId, TxId};
pub use money::{Amount, AmountError, AssetKey, AssetSpec, format_units};

use serde::{Deserialize, Serialize};

/// Who may call what on the control API. Kept closed: a new role is a code change, not config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Trader,
    Approver,
    Operator,
}

/// Enums stored as their text: a row decodes them (and `Option`s of them) through their
/// `parse`, on either database; a text no variant has is a decode error naming it.
macro_rules! stored_as_text {
    ($($t:ty),* $(,)?) => {$(
        impl<DB: sqlx::Database> sqlx::Type<DB> for $t
        where
            String: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $t
        where
            String: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <String as sqlx::Decode<'r, DB>>::decode(value)?;
                <$t>::parse(&text).ok_or_else(|| format!("{} {text:?}", stringify!($t)).into())
            }
        }
    )*};
}
pub(crate) use stored_as_text;

stored_as_text!(Role);

impl Role {
    pub fn parse(text: &str) -> Option<Self> {
        [Role::Admin, Role::Trader, Role::Approver, Role::Operator]
            .into_iter()
            .find(|r| r.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Trader => "trader",
            Role::Approver => "approver",
            Role::Operator => "operator",
        }
    }
}

/// Microseconds since the Unix epoch, UTC. Stored as a 64-bit integer in both databases so that
/// ordering and range filters behave identically on SQLite and PostgreSQL.
pub type UnixMicros = i64;

pub fn micros_to_rfc3339(micros: UnixMicros) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub fn rfc3339_to_micros(text: &str) -> Option<UnixMicros> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_micros())
}
