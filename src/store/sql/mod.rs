//! The SQL both backends share, each query written once. `sqlite.rs` and `postgres.rs` each
//! load this module (`#[path]`), so it compiles once per backend against that backend's names:
//! `Db`, `DbRow`, `DbConnection`, `DbStore`, the amount codec (`amount_from`,
//! `opt_amount_from`, `amount_to_db`, `sum_amount`) and the hooks: how a write or a snapshot
//! read starts (`begin_write`, `begin_snapshot`), row locks (`FOR_UPDATE`, `for_update_of`,
//! `SKIP_LOCKED`), list filters (`any_of`), many rows in one statement (`bulk`, over
//! `store::bulk::BulkRows`), `UNIQUE_VIOLATION`, and the two statements each writes its own
//! way: `find_idempotency_keys` and `acquire_lease` (the lease clock).

mod allowlists;
mod console;
mod custody;
pub(super) mod escrow;
mod incidents;
pub(super) mod ledger;
mod operations;
pub(super) mod payouts;
mod trust;
mod webhooks;

use super::*;
use sqlx::FromRow;

/// The database's own operations; each area's are in its module.
#[async_trait]
impl Store for DbStore {
    fn backend(&self) -> Backend {
        BACKEND
    }

    async fn migrate(&self) -> StoreResult<()> {
        super::migrate(self).await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
