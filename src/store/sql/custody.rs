//! What the watcher needs to hold the ledger against the chain, on both databases: deposit
//! addresses, its cursor, wallet openings and the custody snapshot.

use super::*;

#[async_trait]
impl CustodyStore for DbStore {
    async fn wallet_openings(
        &self,
        network: &str,
    ) -> StoreResult<std::collections::HashMap<(String, String), u64>> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT wallet, asset, block FROM wallet_openings WHERE network = $1")
                .bind(network)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(wallet, asset, block)| ((wallet, asset), block.max(0) as u64))
            .collect())
    }

    async fn record_wallet_opening(
        &self,
        network: &str,
        wallet: &str,
        asset: &str,
        block: u64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO wallet_openings (network, wallet, asset, block) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(network)
        .bind(wallet)
        .bind(asset)
        .bind(block as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn custody_snapshot(&self, network: &str) -> StoreResult<CustodySnapshot> {
        let mut tx = self.begin_snapshot().await?;
        let next_block: Option<i64> =
            sqlx::query_scalar("SELECT next_block FROM deposit_cursors WHERE network = $1")
                .bind(network)
                .fetch_optional(&mut *tx)
                .await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE network = $1 AND owner LIKE 'wallet:%' ORDER BY owner, asset, kind"
        )))
        .bind(network)
        .fetch_all(&mut *tx)
        .await?;
        let accounts = rows
            .iter()
            .map(account_from_row)
            .collect::<StoreResult<_>>()?;
        let in_flight = load_in_flight(&mut tx, network, None).await?;
        // Settled after the block the comparison reads: in the ledger, not yet on that block.
        let settled_ahead = match next_block {
            Some(next) => load_in_flight(&mut tx, network, Some(next as u64)).await?,
            None => Vec::new(),
        };
        let mined: Vec<(String, ChunkId)> = in_flight
            .iter()
            .chain(&settled_ahead)
            .filter_map(|f| Some((f.gas_key()?, f.chunk)))
            .collect();
        let chunk_of: std::collections::HashMap<&str, ChunkId> =
            mined.iter().map(|(k, c)| (k.as_str(), *c)).collect();
        let mut fee_posted = std::collections::HashSet::new();
        for part in mined.chunks(ROWS_PER_STATEMENT) {
            let keys: Vec<String> = part.iter().map(|(k, _)| k.clone()).collect();
            let mut qb = QueryBuilder::new(
                "SELECT idempotency_key FROM journal_transactions WHERE idempotency_key",
            );
            any_of(&mut qb, &keys);
            for row in qb.build().fetch_all(&mut *tx).await? {
                let key: String = row.try_get("idempotency_key")?;
                fee_posted.extend(chunk_of.get(key.as_str()));
            }
        }
        let wallet_call_fees = wallet_call_fees(&mut tx, network).await?;
        tx.rollback().await?;
        Ok(CustodySnapshot {
            next_block: next_block.map(|n| n as u64),
            accounts,
            in_flight,
            settled_ahead,
            fee_posted,
            wallet_call_fees,
        })
    }

    async fn add_deposit_address(
        &self,
        entry: &DepositAddress,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        let added = sqlx::query(
            "INSERT INTO deposit_addresses (account_id, network, address, added_by, added_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING",
        )
        .bind(entry.account.0)
        .bind(&entry.asset.network)
        .bind(&entry.address)
        .bind(&entry.added_by)
        .bind(entry.added_at)
        .execute(&mut *tx)
        .await?;
        if added.rows_affected() == 1 {
            insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn deposit_addresses(
        &self,
        network: &str,
        account: Option<AccountId>,
    ) -> StoreResult<Vec<DepositAddress>> {
        let rows = sqlx::query(
            "SELECT d.account_id, a.network, a.asset, d.address, d.added_by, d.added_at FROM deposit_addresses d \
             JOIN accounts a ON a.id = d.account_id WHERE d.network = $1 AND (CAST($2 AS UUID) IS NULL OR d.account_id = $2) \
             ORDER BY d.address, d.account_id",
        )
        .bind(network)
        .bind(account.map(|a| a.0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(DepositAddress::from_row(r)?))
            .collect()
    }

    async fn known_attempts(
        &self,
        hashes: &[[u8; 32]],
    ) -> StoreResult<std::collections::HashSet<[u8; 32]>> {
        let mut known = std::collections::HashSet::new();
        let owned: Vec<Vec<u8>> = hashes.iter().map(|h| h.to_vec()).collect();
        for part in owned.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::new("SELECT hash FROM tx_attempts WHERE hash");
            any_of(&mut qb, part);
            for row in qb.build().fetch_all(&self.pool).await? {
                known.insert(hash32(&row.try_get::<Vec<u8>, _>("hash")?)?);
            }
        }
        Ok(known)
    }

    async fn deposit_cursor(&self, network: &str) -> StoreResult<Option<u64>> {
        let next: Option<i64> =
            sqlx::query_scalar("SELECT next_block FROM deposit_cursors WHERE network = $1")
                .bind(network)
                .fetch_optional(&self.pool)
                .await?;
        Ok(next.map(|n| n as u64))
    }

    async fn set_deposit_cursor(&self, network: &str, next_block: u64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO deposit_cursors (network, next_block) VALUES ($1, $2) \
             ON CONFLICT (network) DO UPDATE SET next_block = excluded.next_block",
        )
        .bind(network)
        .bind(next_block as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// The gas of each of the network's wallet calls as its FEE posted it (the wallet's gas
/// account went down by it); calls whose FEE is not posted yet are left out. Found by the
/// FEE's idempotency key, one indexed lookup per call.
async fn wallet_call_fees(
    conn: &mut DbConnection,
    network: &str,
) -> StoreResult<Vec<WalletCallFee>> {
    let calls: Vec<(Vec<u8>, String)> = sqlx::query_as(
        "SELECT hash, wallet FROM wallet_calls WHERE network = $1 ORDER BY wallet, nonce",
    )
    .bind(network)
    .fetch_all(&mut *conn)
    .await?;
    let key = |hash: &[u8]| format!("wallet-call:0x{}:gas", hex::encode(hash));
    let mut out = Vec::new();
    for part in calls.chunks(ROWS_PER_STATEMENT) {
        let keys: Vec<String> = part.iter().map(|(h, _)| key(h)).collect();
        let mut qb = QueryBuilder::new(
            "SELECT j.idempotency_key, p.amount FROM journal_transactions j JOIN postings p ON p.seq = j.seq \
             JOIN accounts a ON a.id = p.account_id WHERE a.owner LIKE 'wallet:%' AND j.idempotency_key",
        );
        any_of(&mut qb, &keys);
        let mut spent: std::collections::HashMap<String, i128> = std::collections::HashMap::new();
        for row in qb.build().fetch_all(&mut *conn).await? {
            let k: String = row.try_get("idempotency_key")?;
            *spent.entry(k).or_default() -= amount_from(&row, "amount")?;
        }
        for (hash, wallet) in part {
            let Some(fee) = spent.get(&key(hash)) else {
                continue;
            };
            out.push(WalletCallFee {
                wallet: wallet.clone(),
                hash: hash32(hash)?,
                fee: *fee,
                mined_block: None,
            });
        }
    }
    Ok(out)
}
