//! The `Store` trait over both databases: every operation written once, the dialect's
//! differences behind the hooks `sql/mod.rs` lists.

use super::*;

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

    async fn register_asset(&self, spec: &AssetSpec) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO assets (network, code, decimals) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(&spec.key.network)
        .bind(&spec.key.code)
        .bind(i32::from(spec.decimals))
        .execute(&mut *tx)
        .await?;
        let stored: i32 = sqlx::query_scalar(
            "SELECT CAST(decimals AS INTEGER) FROM assets WHERE network = $1 AND code = $2",
        )
        .bind(&spec.key.network)
        .bind(&spec.key.code)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        if stored != i32::from(spec.decimals) {
            return Err(StoreError::AssetDecimalsChanged {
                asset: spec.key.clone(),
                stored: u8::try_from(stored).unwrap_or(u8::MAX),
                configured: spec.decimals,
            });
        }
        Ok(())
    }

    async fn ensure_system_account(
        &self,
        asset: &AssetKey,
        kind: AccountKind,
    ) -> StoreResult<Account> {
        let (_writing, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO accounts (id, owner, network, asset, kind, allow_negative, created_at) \
             VALUES ($1, 'system', $2, $3, $4, $5, $6) ON CONFLICT (owner, network, asset, kind) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(&asset.network)
        .bind(&asset.code)
        .bind(kind.as_str())
        .bind(kind.system_allows_negative())
        .bind(now_micros())
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE owner = 'system' AND network = $1 AND asset = $2 AND kind = $3"
        )))
        .bind(&asset.network)
        .bind(&asset.code)
        .bind(kind.as_str())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        account_from_row(&row)
    }

    async fn create_account(&self, new: &NewAccount, audit: &AuditRecord) -> StoreResult<Account> {
        let (_writing, mut tx) = self.begin_write().await?;
        let id = AccountId::new();
        let inserted = sqlx::query(
            "INSERT INTO accounts (id, owner, network, asset, kind, allow_negative, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (owner, network, asset, kind) DO NOTHING",
        )
        .bind(id.0)
        .bind(&new.owner)
        .bind(&new.asset.network)
        .bind(&new.asset.code)
        .bind(new.kind.as_str())
        .bind(new.allow_negative)
        .bind(audit.at)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                ConflictKind::Exists,
                format!(
                    "owner {} already has a {} account for {}",
                    new.owner,
                    new.kind.as_str(),
                    new.asset
                ),
            ));
        }
        let mut audit = audit.clone();
        audit.target = format!("account:{id}");
        insert_audit(&mut tx, &audit).await?;
        tx.commit().await?;
        self.get_account(id).await
    }

    async fn get_account(&self, id: AccountId) -> StoreResult<Account> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"
        )))
        .bind(id.0)
        .fetch_one(&self.pool)
        .await?;
        account_from_row(&row)
    }

    async fn list_accounts(&self, f: &AccountFilter) -> StoreResult<Vec<Account>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE (CAST($1 AS TEXT) IS NULL OR owner = $1) AND (CAST($2 AS TEXT) IS NULL OR network = $2) \
             AND (CAST($3 AS TEXT) IS NULL OR asset = $3) AND (CAST($4 AS TEXT) IS NULL OR kind = $4) AND (CAST($5 AS UUID) IS NULL OR id > $5) \
             ORDER BY id LIMIT $6"
        )))
        .bind(&f.owner)
        .bind(f.asset.as_ref().map(|a| a.network.clone()))
        .bind(f.asset.as_ref().map(|a| a.code.clone()))
        .bind(f.kind.map(|k| k.as_str()))
        .bind(f.after.map(|a| a.0))
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(account_from_row).collect()
    }

    async fn post_batch(
        &self,
        commands: &[Command],
    ) -> StoreResult<Vec<Result<Posted, LedgerError>>> {
        (|| self.post_once(commands))
            .retry(retry_policy())
            .when(StoreError::is_retryable)
            .await
    }

    async fn get_transaction(&self, id: TxId) -> StoreResult<JournalTx> {
        let mut conn = self.pool.acquire().await?;
        load_transaction(&mut conn, id).await
    }

    async fn list_journal(&self, f: &JournalFilter) -> StoreResult<Vec<JournalTx>> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOURNAL_COLUMNS} FROM journal_transactions WHERE seq > $1 \
             AND (CAST($2 AS UUID) IS NULL OR seq IN (SELECT seq FROM postings WHERE account_id = $2 AND seq > $1)) \
             AND (CAST($3 AS TEXT) IS NULL OR kind = $3) AND (CAST($4 AS BIGINT) IS NULL OR created_at >= $4) \
             AND (CAST($5 AS BIGINT) IS NULL OR created_at < $5) ORDER BY seq LIMIT $6"
        )))
        .bind(f.after_seq)
        .bind(f.account.map(|a| a.0))
        .bind(f.kind.map(|k| k.as_str()))
        .bind(f.from)
        .bind(f.to)
        .bind(f.limit)
        .fetch_all(&mut *conn)
        .await?;
        let mut txs = rows
            .iter()
            .map(journal_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        attach_postings(&mut conn, &mut txs).await?;
        Ok(txs)
    }

    async fn get_hold(&self, id: HoldId) -> StoreResult<Hold> {
        let mut conn = self.pool.acquire().await?;
        load_hold(&mut conn, id).await
    }

    async fn list_holds(&self, after: Option<HoldId>, limit: i64) -> StoreResult<Vec<Hold>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{HOLD_SELECT} WHERE (CAST($1 AS UUID) IS NULL OR h.id > $1) ORDER BY h.id LIMIT $2"
        )))
        .bind(after.map(|h| h.0))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(hold_from_row).collect()
    }

    async fn journal_head(&self) -> StoreResult<(i64, [u8; 32])> {
        let row = sqlx::query("SELECT seq, hash FROM ledger_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok((row.try_get("seq")?, hash32(row.try_get("hash")?)?))
    }

    async fn get_payout(&self, id: PayoutId) -> StoreResult<Payout> {
        let mut conn = self.pool.acquire().await?;
        load_payout(&mut conn, "id", id.0).await
    }

    async fn payout_for_hold(&self, hold: HoldId) -> StoreResult<Payout> {
        let mut conn = self.pool.acquire().await?;
        load_payout(&mut conn, "hold_id", hold.0).await
    }

    async fn list_payouts(&self, f: &PayoutFilter) -> StoreResult<Vec<Payout>> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PAYOUT_COLUMNS} FROM payouts WHERE (CAST($1 AS TEXT) IS NULL OR state = $1) \
             AND (CAST($2 AS UUID) IS NULL OR account_id = $2) AND (CAST($3 AS TEXT) IS NULL OR network = $3) \
             AND (CAST($4 AS UUID) IS NULL OR id > $4) ORDER BY id LIMIT $5"
    )))
    .bind(f.state.map(|s| s.as_str()))
    .bind(f.account.map(|a| a.0))
    .bind(&f.network)
    .bind(f.after.map(|p| p.0))
    .bind(f.limit)
    .fetch_all(&mut *conn)
    .await?;
        let mut payouts = rows
            .iter()
            .map(payout_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        attach_chunks(&mut conn, &mut payouts).await?;
        Ok(payouts)
    }

    async fn payouts_by_id(&self, ids: &[PayoutId]) -> StoreResult<Vec<Payout>> {
        let mut conn = self.pool.acquire().await?;
        let ids: Vec<Uuid> = ids.iter().map(|p| p.0).collect();
        let mut payouts = Vec::with_capacity(ids.len());
        for part in ids.chunks(ROWS_PER_STATEMENT) {
            let mut qb =
                QueryBuilder::new(format!("SELECT {PAYOUT_COLUMNS} FROM payouts WHERE id"));
            any_of(&mut qb, part);
            for row in qb.build().fetch_all(&mut *conn).await? {
                payouts.push(payout_from_row(&row)?);
            }
        }
        attach_chunks(&mut conn, &mut payouts).await?;
        Ok(payouts)
    }

    async fn next_nonce(&self, network: &str, wallet: &str) -> StoreResult<Option<u64>> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT next_nonce FROM wallet_nonces WHERE network = $1 AND address = $2",
        )
        .bind(network)
        .bind(wallet)
        .fetch_optional(&self.pool)
        .await?;
        Ok(n.map(|n| n as u64))
    }

    async fn queued_chunks(&self, network: &str, limit: i64) -> StoreResult<Vec<ChunkWork>> {
        let rows = sqlx::query(
            "SELECT c.id, c.payout_id, p.account_id, p.hold_id, c.idx, p.created_at, p.network, p.asset, p.destination, c.amount FROM payout_chunks c \
             JOIN payouts p ON p.id = c.payout_id WHERE c.state = 'queued' AND p.network = $1 \
             AND p.state IN ('queued', 'broadcast') \
             AND NOT EXISTS (SELECT 1 FROM asset_freezes f WHERE f.network = p.network AND f.asset = p.asset) \
             AND NOT EXISTS (SELECT 1 FROM destination_allowlists l WHERE l.account_id = p.account_id AND l.enforced \
                 AND NOT EXISTS (SELECT 1 FROM allowed_destinations d WHERE d.account_id = p.account_id \
                     AND d.network = p.network AND d.address = p.destination)) \
             ORDER BY c.id LIMIT $2",
        )
        .bind(network)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ChunkWork {
                    chunk: ChunkId(r.try_get("id")?),
                    payout: PayoutId(r.try_get("payout_id")?),
                    account: AccountId(r.try_get("account_id")?),
                    hold: HoldId(r.try_get("hold_id")?),
                    index: u32::try_from(r.try_get::<i32, _>("idx")?).unwrap_or(u32::MAX),
                    accepted_at: r.try_get("created_at")?,
                    asset: AssetKey::new(
                        r.try_get::<String, _>("network")?,
                        r.try_get::<String, _>("asset")?,
                    ),
                    destination: r.try_get("destination")?,
                    amount: units(r.try_get("amount")?)?,
                })
            })
            .collect()
    }

    async fn record_signed(
        &self,
        network: &str,
        wallet: &str,
        fence: u64,
        first_nonce: u64,
        signed: &[(ChunkId, Attempt)],
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        // The wallet row is the nonce lock: a second writer for the wallet waits here, then
        // finds the nonce moved and gets a Conflict.
        sqlx::query("INSERT INTO wallet_nonces (network, address, next_nonce) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(network)
            .bind(wallet)
            .bind(first_nonce as i64)
            .execute(&mut *tx)
            .await?;
        let stored: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT next_nonce FROM wallet_nonces WHERE network = $1 AND address = $2{FOR_UPDATE}"
        )))
        .bind(network)
        .bind(wallet)
        .fetch_one(&mut *tx)
        .await?;
        if stored as u64 != first_nonce {
            return Err(StoreError::Conflict(
                ConflictKind::NonceMoved,
                format!("{wallet} next nonce is {stored}, not {first_nonce}"),
            ));
        }
        // Safe-mode entered after this round was planned still stops it from being stored,
        // and so from ever being broadcast.
        let safe: Option<String> =
            sqlx::query_scalar("SELECT reason FROM network_safe_mode WHERE network = $1")
                .bind(network)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(reason) = safe {
            return Err(StoreError::Conflict(
                ConflictKind::Halted,
                format!("{network} is in safe-mode: {reason}"),
            ));
        }
        let current: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT fence FROM engine_leases WHERE network = $1{FOR_UPDATE}"
        )))
        .bind(network)
        .fetch_optional(&mut *tx)
        .await?;
        if current != Some(fence as i64) {
            return Err(StoreError::Conflict(
                ConflictKind::Fenced,
                format!("the engine lease on {network} is at fence {current:?}, not {fence}"),
            ));
        }
        let ids: Vec<Uuid> = signed.iter().map(|(c, _)| c.0).collect();
        for part in ids.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::new(
                "SELECT f.asset FROM payout_chunks c JOIN payouts p ON p.id = c.payout_id \
                 JOIN asset_freezes f ON f.network = p.network AND f.asset = p.asset WHERE c.id",
            );
            any_of(&mut qb, part);
            qb.push(" LIMIT 1");
            if let Some(row) = qb.build().fetch_optional(&mut *tx).await? {
                let asset: String = row.try_get("asset")?;
                return Err(StoreError::Conflict(
                    ConflictKind::Halted,
                    format!("{asset} is frozen on {network}"),
                ));
            }
        }
        sqlx::query("UPDATE wallet_nonces SET next_nonce = $3 WHERE network = $1 AND address = $2")
            .bind(network)
            .bind(wallet)
            .bind((first_nonce + signed.len() as u64) as i64)
            .execute(&mut *tx)
            .await?;
        let at = now_micros();
        let attempts = BulkRows::new()
            .col("id", signed.iter().map(|(_, a)| a.id))
            .col("chunk_id", signed.iter().map(|(c, _)| c.0))
            .col("wallet", signed.iter().map(|_| wallet))
            .col("nonce", signed.iter().map(|(_, a)| a.nonce as i64))
            .col("hash", signed.iter().map(|(_, a)| Some(a.hash.to_vec())))
            .col("raw", signed.iter().map(|(_, a)| Some(a.raw.clone())))
            .col(
                "max_fee_per_gas",
                signed.iter().map(|(_, a)| Some(a.max_fee_per_gas as i128)),
            )
            .col(
                "max_priority_fee_per_gas",
                signed
                    .iter()
                    .map(|(_, a)| Some(a.max_priority_fee_per_gas as i128)),
            )
            .col("gas_limit", signed.iter().map(|(_, a)| a.gas_limit as i64))
            .col("created_at", signed.iter().map(|(_, a)| a.created_at))
            .col("kind", signed.iter().map(|(_, a)| a.kind.as_str()));
        let insert = format!("INSERT INTO tx_attempts ({}) ", attempts.names());
        bulk(&mut tx, &insert, attempts, "").await?;
        let chunks = BulkRows::new()
            .col("id", signed.iter().map(|(c, _)| c.0))
            .col("nonce", signed.iter().map(|(_, a)| a.nonce as i64))
            .col("wallet", signed.iter().map(|_| wallet))
            .col("at", signed.iter().map(|_| at));
        let updated = bulk(
            &mut tx,
            "UPDATE payout_chunks SET state = 'signed', wallet = u.wallet, nonce = u.nonce, updated_at = u.at, \
             signed_at = u.at FROM (",
            chunks,
            ") AS u WHERE payout_chunks.id = u.id AND payout_chunks.state = 'queued' \
             RETURNING payout_chunks.id, payout_chunks.payout_id",
        )
        .await?;
        if updated.len() != signed.len() {
            return Err(StoreError::Conflict(
                ConflictKind::StateChanged,
                format!(
                    "{} of {} chunks are no longer queued",
                    signed.len() - updated.len(),
                    signed.len()
                ),
            ));
        }
        let payout_of = payouts_of(&updated)?;
        let payouts: Vec<Uuid> = signed
            .iter()
            .map(|(c, _)| payout_of.get(&c.0).copied().unwrap_or_default())
            .collect();
        for part in payouts.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::new("UPDATE payouts SET state = 'broadcast', updated_at = ");
            qb.push_bind(at);
            qb.push(" WHERE state = 'queued' AND id");
            any_of(&mut qb, part);
            qb.build().execute(&mut *tx).await?;
        }
        let events = signed.iter().zip(&payouts).map(|((chunk, a), payout)| {
            let detail = format!(
                "chunk {chunk}: nonce {} from {wallet}, tx 0x{}",
                a.nonce,
                hex::encode(a.hash)
            );
            (*payout, "signed", detail)
        });
        insert_events(&mut tx, at, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_replacement(
        &self,
        chunk: ChunkId,
        attempt: &Attempt,
        event: &str,
        detail: &str,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        let row = sqlx::query("SELECT payout_id, wallet FROM payout_chunks WHERE id = $1")
            .bind(chunk.0)
            .fetch_one(&mut *tx)
            .await?;
        let (payout, wallet): (Uuid, String) = (row.try_get("payout_id")?, row.try_get("wallet")?);
        insert_attempt(&mut tx, chunk, &wallet, attempt).await?;
        insert_event(&mut tx, PayoutId(payout), attempt.created_at, event, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn mark_broadcast(&self, attempts: &[Uuid], head: u64, at: i64) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        for part in attempts.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::new("UPDATE tx_attempts SET broadcast_at = ");
            qb.push_bind(at);
            qb.push(", head_at_broadcast = ");
            qb.push_bind(head as i64);
            qb.push(" WHERE broadcast_at IS NULL AND id");
            any_of(&mut qb, part);
            qb.build().execute(&mut *tx).await?;
            let mut qb =
                QueryBuilder::new("UPDATE payout_chunks SET state = 'broadcast', updated_at = ");
            qb.push_bind(at);
            qb.push(" WHERE state = 'signed' AND id IN (SELECT chunk_id FROM tx_attempts WHERE id");
            any_of(&mut qb, part);
            qb.push(")");
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn in_flight(&self, network: &str) -> StoreResult<Vec<InFlight>> {
        let mut conn = self.pool.acquire().await?;
        load_in_flight(&mut conn, network, None).await
    }

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
            .filter(|f| f.mined.is_some())
            .map(|f| (format!("payout-chunk:{}:gas", f.chunk), f.chunk))
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
        tx.rollback().await?;
        Ok(CustodySnapshot {
            next_block: next_block.map(|n| n as u64),
            accounts,
            in_flight,
            settled_ahead,
            fee_posted,
        })
    }

    async fn record_mined(&self, chunks: &[(ChunkId, Option<Mined>)]) -> StoreResult<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let mut last: std::collections::HashMap<ChunkId, Option<&Mined>> =
            std::collections::HashMap::with_capacity(chunks.len());
        for (chunk, mined) in chunks {
            last.insert(*chunk, mined.as_ref());
        }
        let last: Vec<(ChunkId, Option<&Mined>)> = last.into_iter().collect();
        let (_writing, mut tx) = self.begin_write().await?;
        let at = now_micros();
        let rows = BulkRows::new()
            .col("id", last.iter().map(|(c, _)| c.0))
            .col(
                "state",
                last.iter()
                    .map(|(_, m)| if m.is_some() { "mined" } else { "broadcast" }),
            )
            .col("hash", last.iter().map(|(_, m)| m.map(|m| m.hash.to_vec())))
            .col("block", last.iter().map(|(_, m)| m.map(|m| m.block as i64)))
            .col(
                "block_hash",
                last.iter().map(|(_, m)| m.map(|m| m.block_hash.to_vec())),
            )
            .col("success", last.iter().map(|(_, m)| m.map(|m| m.success)))
            .col(
                "fee",
                last.iter().map(|(_, m)| m.map(|m| m.fee_wei as i128)),
            )
            .col("at", last.iter().map(|_| at));
        let updated = bulk(
            &mut tx,
            "UPDATE payout_chunks SET state = u.state, mined_hash = u.hash, mined_block = u.block, \
             mined_block_hash = u.block_hash, mined_success = u.success, mined_fee = u.fee, updated_at = u.at FROM (",
            rows,
            ") AS u WHERE payout_chunks.id = u.id RETURNING payout_chunks.id, payout_chunks.payout_id",
        )
        .await?;
        let payout_of = payouts_of(&updated)?;
        let mut events = Vec::with_capacity(chunks.len());
        for (chunk, mined) in chunks {
            let payout = *payout_of.get(&chunk.0).ok_or(StoreError::NotFound)?;
            events.push(match mined {
                Some(m) => (
                    payout,
                    "mined",
                    format!(
                        "chunk {chunk}: tx 0x{} in block {} ({})",
                        hex::encode(m.hash),
                        m.block,
                        if m.success { "success" } else { "reverted" }
                    ),
                ),
                None => (
                    payout,
                    "reorged",
                    format!("chunk {chunk}: its block left the chain; tracking again"),
                ),
            });
        }
        insert_events(&mut tx, at, events.into_iter()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn close_chunk(
        &self,
        chunk: ChunkId,
        state: ChunkState,
        detail: &str,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        let at = now_micros();
        let payout = chunk_payout(&mut tx, chunk).await?;
        sqlx::query(
        "UPDATE payout_chunks SET state = $1, updated_at = $2 WHERE id = $3 AND state = 'mined'",
    )
    .bind(state.as_str())
    .bind(at)
    .bind(chunk.0)
    .execute(&mut *tx)
    .await?;
        if state == ChunkState::Failed {
            sqlx::query("UPDATE payout_chunks SET state = 'cancelled', updated_at = $1 WHERE payout_id = $2 AND state = 'queued'")
                .bind(at)
                .bind(payout)
                .execute(&mut *tx)
                .await?;
        }
        let kind = match state {
            ChunkState::Failed => "chunk_failed",
            _ => "chunk_cancelled",
        };
        insert_event(
            &mut tx,
            PayoutId(payout),
            at,
            kind,
            &format!("chunk {chunk}: {detail}"),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn request_cancel(&self, payout: PayoutId, audit: &AuditRecord) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        let state: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT state FROM payouts WHERE id = $1{FOR_UPDATE}"
        )))
        .bind(payout.0)
        .fetch_one(&mut *tx)
        .await?;
        if state != PayoutState::Broadcast.as_str() {
            return Err(StoreError::Conflict(
                ConflictKind::StateChanged,
                format!("payout {payout} is {state}"),
            ));
        }
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM payout_chunks WHERE payout_id = $1 AND state IN ('queued', 'signed', 'broadcast')",
        )
        .bind(payout.0)
        .fetch_one(&mut *tx)
        .await?;
        if open == 0 {
            return Err(StoreError::Conflict(
                ConflictKind::StateChanged,
                format!("every chunk of payout {payout} is mined or final"),
            ));
        }
        let reason = audit.reason.clone().unwrap_or_default();
        sqlx::query("UPDATE payouts SET cancel_reason = COALESCE(cancel_reason, $1), cancel_by = COALESCE(cancel_by, $2), updated_at = $3 WHERE id = $4")
            .bind(&reason)
            .bind(&audit.actor)
            .bind(audit.at)
            .bind(payout.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE payout_chunks SET state = 'cancelled', updated_at = $1 WHERE payout_id = $2 AND state = 'queued'")
            .bind(audit.at)
            .bind(payout.0)
            .execute(&mut *tx)
            .await?;
        insert_event(
            &mut tx,
            payout,
            audit.at,
            "cancel_requested",
            &format!("by {}: {reason}", audit.actor),
        )
        .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn add_payout_event(
        &self,
        payout: PayoutId,
        kind: &str,
        detail: &str,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        insert_event(&mut tx, payout, now_micros(), kind, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn approve_payout(
        &self,
        payout: PayoutId,
        approver: &str,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        let at = audit.at;
        let updated = sqlx::query("UPDATE payouts SET state = 'queued', updated_at = $1 WHERE id = $2 AND state = 'pending_approval' AND created_by <> $3")
            .bind(at)
            .bind(payout.0)
            .bind(approver)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::Conflict(
                ConflictKind::StateChanged,
                format!("payout {payout} is not pending an approval by {approver}"),
            ));
        }
        insert_event(
            &mut tx,
            payout,
            at,
            "approved",
            &format!("approved by {approver}"),
        )
        .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn safe_mode(&self, network: &str) -> StoreResult<Option<SafeMode>> {
        let row =
            sqlx::query("SELECT reason, actor, since FROM network_safe_mode WHERE network = $1")
                .bind(network)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(SafeMode {
                reason: r.try_get("reason")?,
                actor: r.try_get("actor")?,
                since: r.try_get("since")?,
            })
        })
        .transpose()
    }

    async fn set_safe_mode(
        &self,
        network: &str,
        mode: Option<&SafeMode>,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        match mode {
            Some(m) => {
                sqlx::query("INSERT INTO network_safe_mode (network, reason, actor, since) VALUES ($1, $2, $3, $4) ON CONFLICT (network) DO UPDATE SET reason = EXCLUDED.reason, actor = EXCLUDED.actor")
                    .bind(network)
                    .bind(&m.reason)
                    .bind(&m.actor)
                    .bind(m.since)
                    .execute(&mut *tx)
                    .await?;
            }
            None => {
                sqlx::query("DELETE FROM network_safe_mode WHERE network = $1")
                    .bind(network)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_deal(
        &self,
        deal: &crate::domain::escrow::Deal,
        detail: &str,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        escrow::insert_deal(&mut tx, deal, detail).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_deal(
        &self,
        id: crate::domain::DealId,
    ) -> StoreResult<crate::domain::escrow::Deal> {
        let mut conn = self.pool.acquire().await?;
        escrow::get_deal(&mut conn, id).await
    }

    async fn list_deals(
        &self,
        filter: &DealFilter,
    ) -> StoreResult<Vec<crate::domain::escrow::Deal>> {
        let mut conn = self.pool.acquire().await?;
        escrow::list_deals(&mut conn, filter).await
    }

    async fn deal_events(
        &self,
        id: crate::domain::DealId,
    ) -> StoreResult<Vec<crate::domain::escrow::DealEvent>> {
        let mut conn = self.pool.acquire().await?;
        escrow::deal_events(&mut conn, id).await
    }

    async fn deal_timers(
        &self,
        id: crate::domain::DealId,
    ) -> StoreResult<Vec<crate::timers::Timer>> {
        let mut conn = self.pool.acquire().await?;
        escrow::deal_timers(&mut conn, id).await
    }

    async fn deal_facts(
        &self,
        from: UnixMicros,
        to: UnixMicros,
    ) -> StoreResult<Vec<crate::domain::escrow::DealFacts>> {
        let mut conn = self.pool.acquire().await?;
        escrow::deal_facts(&mut conn, from, to).await
    }

    async fn console_session(
        &self,
        id_hash: &[u8; 32],
    ) -> StoreResult<Option<crate::domain::console::SessionRecord>> {
        let mut conn = self.pool.acquire().await?;
        console::session(&mut conn, id_hash).await
    }

    async fn put_console_session(
        &self,
        session: &crate::domain::console::SessionRecord,
    ) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        console::put_session(&mut conn, session).await
    }

    async fn delete_console_session(&self, id_hash: &[u8; 32], now: UnixMicros) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        console::delete_session(&mut conn, id_hash, now).await
    }

    async fn console_mfa(
        &self,
        user: &str,
    ) -> StoreResult<Option<crate::domain::console::MfaEnrolment>> {
        let mut conn = self.pool.acquire().await?;
        console::mfa(&mut conn, user).await
    }

    async fn put_console_mfa(&self, mfa: &crate::domain::console::MfaEnrolment) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        console::put_mfa(&mut conn, mfa).await
    }

    async fn advance_totp_step(&self, user: &str, step: i64) -> StoreResult<bool> {
        let mut conn = self.pool.acquire().await?;
        console::advance_step(&mut conn, user, step).await
    }

    async fn spend_recovery_code(&self, user: &str, hash: &str) -> StoreResult<bool> {
        let mut conn = self.pool.acquire().await?;
        console::spend_recovery_code(&mut conn, user, hash).await
    }

    async fn record_canary_start(
        &self,
        run: &crate::domain::operations::CanaryRun,
    ) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        operations::insert_canary_run(&mut conn, run).await
    }

    async fn finish_canary(
        &self,
        id: uuid::Uuid,
        result: crate::domain::operations::CanaryResult,
        reason: &str,
        at: UnixMicros,
    ) -> StoreResult<bool> {
        let mut conn = self.pool.acquire().await?;
        operations::finish_canary_run(&mut conn, id, result, reason, at).await
    }

    async fn canary_runs(
        &self,
        network: &str,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::operations::CanaryRun>> {
        let mut conn = self.pool.acquire().await?;
        operations::canary_runs(&mut conn, network, limit).await
    }

    async fn config_freeze(&self) -> StoreResult<Option<crate::domain::operations::ConfigFreeze>> {
        let mut conn = self.pool.acquire().await?;
        operations::config_freeze(&mut conn).await
    }

    async fn set_config_freeze(
        &self,
        freeze: Option<&crate::domain::operations::ConfigFreeze>,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        operations::set_config_freeze(&mut tx, freeze).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn overdue_timers(&self, before: UnixMicros) -> StoreResult<(i64, Option<UnixMicros>)> {
        let mut conn = self.pool.acquire().await?;
        operations::overdue(&mut conn, before).await
    }

    async fn record_incident(
        &self,
        incident: &crate::domain::escrow::Incident,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        escrow::insert_incident(&mut tx, incident).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn incidents(
        &self,
        from: UnixMicros,
        to: UnixMicros,
    ) -> StoreResult<Vec<crate::domain::escrow::Incident>> {
        let mut conn = self.pool.acquire().await?;
        escrow::incidents(&mut conn, from, to).await
    }

    async fn add_evidence(
        &self,
        evidence: &crate::domain::escrow::Evidence,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        escrow::insert_evidence(&mut tx, evidence).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn evidence(
        &self,
        deal: crate::domain::DealId,
    ) -> StoreResult<Vec<crate::domain::escrow::Evidence>> {
        let mut conn = self.pool.acquire().await?;
        escrow::list_evidence(&mut conn, deal).await
    }

    async fn apply_deal_step(
        &self,
        step: &crate::domain::escrow::DealStep,
        audit: Option<&AuditRecord>,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        escrow::write_deal_step(&mut tx, step, None).await?;
        if let Some(a) = audit {
            insert_audit(&mut tx, a).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn claim_due_timers(
        &self,
        now: UnixMicros,
        claimer: &str,
        limit: i64,
    ) -> StoreResult<Vec<crate::timers::Timer>> {
        let (_writing, mut tx) = self.begin_write().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE timers SET claimed_by = $1, claimed_until = $2 WHERE id IN (\
             SELECT id FROM timers WHERE state = 'pending' AND due_at <= $3 AND (claimed_until IS NULL OR claimed_until < $3) \
             ORDER BY due_at, id LIMIT $4{SKIP_LOCKED}) RETURNING id, kind, deal_id, due_at, state, fired_at"
        )))
        .bind(claimer)
        .bind(now + crate::timers::CLAIM_MICROS)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut timers: Vec<crate::timers::Timer> = rows
            .iter()
            .map(escrow::timer_from_row)
            .collect::<StoreResult<_>>()?;
        // RETURNING gives no order: the runner fires them as they came due.
        timers.sort_by_key(|t| (t.due_at, t.id.0));
        Ok(timers)
    }

    async fn create_endpoint(
        &self,
        endpoint: &crate::domain::webhooks::Endpoint,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        webhooks::insert_endpoint(&mut tx, endpoint).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn endpoints(&self) -> StoreResult<Vec<crate::domain::webhooks::Endpoint>> {
        let mut conn = self.pool.acquire().await?;
        webhooks::endpoints(&mut conn).await
    }

    async fn endpoint(&self, id: uuid::Uuid) -> StoreResult<crate::domain::webhooks::Endpoint> {
        let mut conn = self.pool.acquire().await?;
        webhooks::endpoint(&mut conn, id).await
    }

    async fn rotate_endpoint_secret(
        &self,
        id: uuid::Uuid,
        secret: &secrecy::SecretString,
        previous_until: UnixMicros,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        webhooks::rotate_secret(&mut tx, id, secret, previous_until, audit.at).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_endpoint_active(
        &self,
        id: uuid::Uuid,
        active: bool,
        reason: Option<&str>,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        webhooks::set_endpoint_active(&mut tx, id, active, reason, audit.at).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn undispatched_webhook_events(
        &self,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::webhooks::OutboxEvent>> {
        let mut conn = self.pool.acquire().await?;
        webhooks::undispatched_events(&mut conn, limit).await
    }

    async fn dispatch_webhook_events(
        &self,
        bodies: &[(i64, String)],
        deliveries: &[(uuid::Uuid, i64)],
        at: UnixMicros,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        webhooks::dispatch(&mut tx, bodies, deliveries, at).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn webhook_event(
        &self,
        id: uuid::Uuid,
    ) -> StoreResult<crate::domain::webhooks::OutboxEvent> {
        let mut conn = self.pool.acquire().await?;
        webhooks::event_by_id(&mut conn, id).await
    }

    async fn webhook_events_between(
        &self,
        from: UnixMicros,
        to: UnixMicros,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::webhooks::OutboxEvent>> {
        let mut conn = self.pool.acquire().await?;
        webhooks::events_between(&mut conn, from, to, limit).await
    }

    async fn webhook_deliveries(
        &self,
        endpoint: uuid::Uuid,
        state: Option<crate::domain::webhooks::DeliveryState>,
        after_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::webhooks::Delivery>> {
        let mut conn = self.pool.acquire().await?;
        webhooks::deliveries(&mut conn, endpoint, state, after_seq, limit).await
    }

    async fn record_webhook_attempts(
        &self,
        outcomes: &[crate::domain::webhooks::AttemptOutcome],
    ) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let (_writing, mut tx) = self.begin_write().await?;
        for outcome in outcomes {
            webhooks::record_attempt(&mut tx, outcome).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn replay_webhook_events(
        &self,
        endpoint: uuid::Uuid,
        seqs: &[i64],
        audit: &AuditRecord,
    ) -> StoreResult<u64> {
        let (_writing, mut tx) = self.begin_write().await?;
        let changed = webhooks::replay(&mut tx, endpoint, seqs, audit.at).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(changed)
    }

    async fn prune_webhooks(&self, before: UnixMicros) -> StoreResult<(u64, u64)> {
        let (_writing, mut tx) = self.begin_write().await?;
        let pruned = webhooks::prune(&mut tx, before).await?;
        tx.commit().await?;
        Ok(pruned)
    }

    async fn webhook_backlog(&self) -> StoreResult<crate::domain::webhooks::Backlog> {
        let mut conn = self.pool.acquire().await?;
        webhooks::backlog(&mut conn).await
    }

    async fn create_company(
        &self,
        company: &crate::domain::trust::Company,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        trust::insert_company(&mut tx, company).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn companies(&self) -> StoreResult<Vec<crate::domain::trust::Company>> {
        let mut conn = self.pool.acquire().await?;
        trust::companies(&mut conn).await
    }

    async fn set_company_member(
        &self,
        member: &crate::domain::trust::Member,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        trust::insert_member(&mut tx, member).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn company_members(
        &self,
        company: Option<uuid::Uuid>,
        user: Option<&str>,
    ) -> StoreResult<Vec<crate::domain::trust::Member>> {
        let mut conn = self.pool.acquire().await?;
        trust::members(&mut conn, company, user).await
    }

    async fn create_trust_pair(
        &self,
        pair: &crate::domain::trust::TrustPair,
        first: &crate::domain::trust::NextSession,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        trust::insert_pair(&mut tx, pair, first).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn trust_pairs(
        &self,
        id: Option<uuid::Uuid>,
    ) -> StoreResult<Vec<crate::domain::trust::TrustPair>> {
        let mut conn = self.pool.acquire().await?;
        trust::pairs(&mut conn, id).await
    }

    async fn trust_session(&self, id: uuid::Uuid) -> StoreResult<crate::domain::trust::Session> {
        let mut conn = self.pool.acquire().await?;
        trust::session(&mut conn, id).await
    }

    async fn trust_sessions(
        &self,
        pair: Option<uuid::Uuid>,
        state: Option<crate::domain::trust::SessionState>,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::trust::Session>> {
        let mut conn = self.pool.acquire().await?;
        trust::sessions(&mut conn, pair, state, limit).await
    }

    async fn due_trust_sessions(
        &self,
        now: UnixMicros,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::trust::Session>> {
        let mut conn = self.pool.acquire().await?;
        trust::due_sessions(&mut conn, now, limit).await
    }

    async fn unsettled_trust_sessions(&self) -> StoreResult<Vec<crate::domain::trust::Session>> {
        let mut conn = self.pool.acquire().await?;
        trust::unsettled_sessions(&mut conn).await
    }

    async fn trust_obligations(
        &self,
        session: uuid::Uuid,
        through: Option<i64>,
    ) -> StoreResult<Vec<crate::domain::trust::StoredObligation>> {
        let mut conn = self.pool.acquire().await?;
        trust::obligations(&mut conn, session, through).await
    }

    async fn record_trust_obligation(
        &self,
        pair: uuid::Uuid,
        obligation: &crate::domain::trust::StoredObligation,
        headroom: &Headroom,
        audit: &AuditRecord,
    ) -> StoreResult<crate::domain::trust::StoredObligation> {
        let (_writing, mut tx) = self.begin_write().await?;
        let stored = trust::record_obligation(&mut tx, pair, obligation, headroom).await?;
        if stored.id == obligation.id {
            insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    async fn apply_session_step(
        &self,
        step: &crate::domain::trust::SessionStep,
        audit: Option<&AuditRecord>,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        trust::write_session_step(&mut tx, step, None).await?;
        if let Some(a) = audit {
            insert_audit(&mut tx, a).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn pilot_scope(&self) -> StoreResult<Option<crate::scope::ScopeSetting>> {
        let row = sqlx::query(
            "SELECT enabled, country_allowlist, category_allowlist, template_version, actor, reason, since FROM pilot_scope WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let list = |text: String| {
            serde_json::from_str::<Vec<String>>(&text)
                .map_err(|e| StoreError::Invariant(format!("pilot_scope list: {e}")))
        };
        row.map(|r| {
            Ok(crate::scope::ScopeSetting {
                scope: crate::scope::PilotScope {
                    enabled: r.try_get::<bool, _>("enabled")?,
                    country_allowlist: list(r.try_get("country_allowlist")?)?,
                    category_allowlist: list(r.try_get("category_allowlist")?)?,
                    template_version: r.try_get("template_version")?,
                },
                actor: r.try_get("actor")?,
                reason: r.try_get("reason")?,
                since: r.try_get("since")?,
            })
        })
        .transpose()
    }

    async fn set_pilot_scope(
        &self,
        setting: &crate::scope::ScopeSetting,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let list = |l: &Vec<String>| serde_json::to_string(l).unwrap_or_else(|_| "[]".into());
        let (_writing, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO pilot_scope (id, enabled, country_allowlist, category_allowlist, template_version, actor, reason, since) \
             VALUES (1, $1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET enabled = excluded.enabled, \
             country_allowlist = excluded.country_allowlist, category_allowlist = excluded.category_allowlist, \
             template_version = excluded.template_version, actor = excluded.actor, reason = excluded.reason, since = excluded.since",
        )
        .bind(setting.scope.enabled)
        .bind(list(&setting.scope.country_allowlist))
        .bind(list(&setting.scope.category_allowlist))
        .bind(&setting.scope.template_version)
        .bind(&setting.actor)
        .bind(&setting.reason)
        .bind(setting.since)
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn acquire_lease(
        &self,
        network: &str,
        owner: &str,
        _now: UnixMicros,
        ttl_micros: i64,
    ) -> StoreResult<Option<Lease>> {
        super::acquire_lease(self, network, owner, _now, ttl_micros).await
    }

    async fn release_lease(&self, network: &str, owner: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM engine_leases WHERE network = $1 AND owner = $2")
            .bind(network)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn lease(&self, network: &str) -> StoreResult<Option<Lease>> {
        let row =
            sqlx::query("SELECT owner, fence, expires_at FROM engine_leases WHERE network = $1")
                .bind(network)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(lease_from_row).transpose()
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
            .map(|r| {
                Ok(DepositAddress {
                    account: AccountId(r.try_get("account_id")?),
                    asset: AssetKey::new(
                        r.try_get::<String, _>("network")?,
                        r.try_get::<String, _>("asset")?,
                    ),
                    address: r.try_get("address")?,
                    added_by: r.try_get("added_by")?,
                    added_at: r.try_get("added_at")?,
                })
            })
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

    async fn cancelling_payouts(&self, network: &str) -> StoreResult<Vec<PayoutId>> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM payouts WHERE cancel_reason IS NOT NULL AND state = 'broadcast' AND network = $1",
        )
        .bind(network)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(PayoutId).collect())
    }

    async fn active_payouts(&self, network: &str) -> StoreResult<Vec<(PayoutState, i64)>> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM payouts WHERE network = $1 \
             AND state IN ('pending_approval', 'queued', 'broadcast') GROUP BY state",
        )
        .bind(network)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                let state = PayoutState::parse(&state)
                    .ok_or_else(|| StoreError::Invariant(format!("payout state {state:?}")))?;
                Ok((state, r.try_get("n")?))
            })
            .collect()
    }

    async fn rollout_phase(&self, network: &str) -> StoreResult<Option<RolloutSetting>> {
        let row = sqlx::query(
            "SELECT phase, actor, reason, since FROM network_rollout WHERE network = $1",
        )
        .bind(network)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let phase: String = r.try_get("phase")?;
            Ok(RolloutSetting {
                phase: RolloutPhase::parse(&phase)
                    .ok_or_else(|| StoreError::Invariant(format!("rollout phase {phase:?}")))?,
                actor: r.try_get("actor")?,
                reason: r.try_get("reason")?,
                since: r.try_get("since")?,
            })
        })
        .transpose()
    }

    async fn set_rollout_phase(
        &self,
        network: &str,
        setting: &RolloutSetting,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO network_rollout (network, phase, actor, reason, since) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (network) DO UPDATE SET phase = excluded.phase, actor = excluded.actor, \
             reason = excluded.reason, since = excluded.since",
        )
        .bind(network)
        .bind(setting.phase.as_str())
        .bind(&setting.actor)
        .bind(&setting.reason)
        .bind(setting.since)
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn freezes(&self, network: &str) -> StoreResult<Vec<AssetFreeze>> {
        let rows = sqlx::query("SELECT asset, reason, actor, since FROM asset_freezes WHERE network = $1 ORDER BY asset")
            .bind(network)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AssetFreeze {
                    asset: r.try_get("asset")?,
                    reason: r.try_get("reason")?,
                    actor: r.try_get("actor")?,
                    since: r.try_get("since")?,
                })
            })
            .collect()
    }

    async fn set_freeze(
        &self,
        network: &str,
        asset: &str,
        freeze: Option<&AssetFreeze>,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        match freeze {
            Some(f) => {
                sqlx::query(
                    "INSERT INTO asset_freezes (network, asset, reason, actor, since) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (network, asset) DO UPDATE SET reason = excluded.reason, actor = excluded.actor",
                )
                .bind(network)
                .bind(asset)
                .bind(&f.reason)
                .bind(&f.actor)
                .bind(f.since)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM asset_freezes WHERE network = $1 AND asset = $2")
                    .bind(network)
                    .bind(asset)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn signed_volume_since(
        &self,
        network: &str,
        since: UnixMicros,
    ) -> StoreResult<Vec<(String, i128)>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT p.asset, {} AS total FROM payout_chunks c JOIN payouts p ON p.id = c.payout_id \
             WHERE c.signed_at >= $1 AND p.network = $2 GROUP BY p.asset",
            sum_amount("c.amount")
        )))
        .bind(since)
        .bind(network)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("asset")?, amount_from(r, "total")?)))
            .collect()
    }

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
                .map(|r| {
                    Ok(AllowedDestination {
                        network: r.try_get("network")?,
                        address: r.try_get("address")?,
                        label: r.try_get("label")?,
                        added_by: r.try_get("added_by")?,
                        added_at: r.try_get("added_at")?,
                    })
                })
                .collect::<StoreResult<_>>()?,
        })
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

    async fn list_audit(&self, after: Option<Uuid>, limit: i64) -> StoreResult<Vec<StoredAudit>> {
        let mut qb = QueryBuilder::new(
            "SELECT id, at, actor, role, action, target, reason, request_id, evidence FROM audit_log",
        );
        if let Some(after) = after {
            qb.push(" WHERE id > ").push_bind(after);
        }
        qb.push(" ORDER BY id LIMIT ").push_bind(limit);
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let role: String = r.try_get("role")?;
                Ok(StoredAudit {
                    id: r.try_get("id")?,
                    record: AuditRecord {
                        actor: r.try_get("actor")?,
                        role: parse_role(&role)?,
                        action: r.try_get("action")?,
                        target: r.try_get("target")?,
                        reason: r.try_get("reason")?,
                        request_id: r.try_get("request_id")?,
                        at: r.try_get("at")?,
                        evidence: r
                            .try_get::<Option<String>, _>("evidence")?
                            .map(|e| serde_json::from_str(&e))
                            .transpose()
                            .map_err(|e| StoreError::Invariant(format!("audit evidence: {e}")))?,
                    },
                })
            })
            .collect()
    }
}
