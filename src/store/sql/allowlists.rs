//! Per-account destination allowlists, on both databases.

use super::*;

#[async_trait]
impl AllowlistStore for DbStore {
    async fn allowlist(&self, account: AccountId) -> StoreResult<Allowlist> {
        let enforced: Option<bool> =
            sqlx::query_scalar("SELECT enforced FROM destination_allowlists WHERE account_id = $1")
                .bind(account.0)
                .fetch_optional(&self.pool)
                .await?;
        let rows = sqlx::query(
            "SELECT network, address, label, added_by, added_at FROM allowed_destinations \
             WHERE account_id = $1 ORDER BY network, address",
        )
        .bind(account.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(Allowlist {
            enforced: enforced.unwrap_or(false),
            entries: rows
                .iter()
                .map(|r| Ok(AllowedDestination::from_row(r)?))
                .collect::<StoreResult<_>>()?,
        })
    }

    async fn account_paying(
        &self,
        account: AccountId,
        network: &str,
        address: &str,
    ) -> StoreResult<(Account, bool)> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS}, \
             (NOT COALESCE((SELECT enforced FROM destination_allowlists d WHERE d.account_id = accounts.id), FALSE) \
              OR EXISTS (SELECT 1 FROM allowed_destinations x WHERE x.account_id = accounts.id \
                         AND x.network = $2 AND x.address = $3)) AS allowed \
             FROM accounts WHERE id = $1"
        )))
        .bind(account.0)
        .bind(network)
        .bind(address)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok((account_from_row(&row)?, row.try_get("allowed")?))
    }

    async fn set_allowlist_enforced(
        &self,
        account: AccountId,
        enforced: bool,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO destination_allowlists (account_id, enforced, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (account_id) DO UPDATE SET enforced = excluded.enforced, updated_at = excluded.updated_at",
        )
        .bind(account.0)
        .bind(enforced)
        .bind(audit.at)
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_allowed_destination(
        &self,
        account: AccountId,
        entry: &AllowedDestination,
        allowed: bool,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        if allowed {
            sqlx::query(
                "INSERT INTO allowed_destinations (account_id, network, address, label, added_by, added_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id, network, address) DO UPDATE SET label = excluded.label",
            )
            .bind(account.0)
            .bind(&entry.network)
            .bind(&entry.address)
            .bind(&entry.label)
            .bind(&entry.added_by)
            .bind(entry.added_at)
            .execute(&mut *tx)
            .await?;
        } else {
            let gone = sqlx::query(
                "DELETE FROM allowed_destinations WHERE account_id = $1 AND network = $2 AND address = $3",
            )
            .bind(account.0)
            .bind(&entry.network)
            .bind(&entry.address)
            .execute(&mut *tx)
            .await?;
            if gone.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn enforced_allowlists(&self, accounts: &[AccountId]) -> StoreResult<EnforcedAllowlists> {
        let mut out = EnforcedAllowlists::new();
        let ids: Vec<Uuid> = accounts.iter().map(|a| a.0).collect();
        for part in ids.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::new(
                "SELECT l.account_id, d.network, d.address FROM destination_allowlists l \
                 LEFT JOIN allowed_destinations d ON d.account_id = l.account_id WHERE l.enforced AND l.account_id",
            );
            any_of(&mut qb, part);
            for r in qb.build().fetch_all(&self.pool).await? {
                let entries = out.entry(AccountId(r.try_get("account_id")?)).or_default();
                let network: Option<String> = r.try_get("network")?;
                let address: Option<String> = r.try_get("address")?;
                if let (Some(n), Some(a)) = (network, address) {
                    entries.insert((n, a));
                }
            }
        }
        Ok(out)
    }
}
