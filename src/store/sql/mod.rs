//! The SQL both backends share, each query written once. `sqlite.rs` and `postgres.rs` each
//! load this module (`#[path]`), so it compiles once per backend against that backend's names:
//! `Db`, `DbRow`, `DbConnection`, `DbStore`, the amount codec (`amount_from`,
//! `opt_amount_from`, `amount_to_db`) and the hooks (`FOR_UPDATE`, `UNIQUE_VIOLATION`,
//! `any_of`, `begin_write`).

mod console;
pub(super) mod escrow;
pub(super) mod ledger;
mod operations;
pub(super) mod payouts;
mod store;
mod trust;
mod webhooks;

use super::*;
