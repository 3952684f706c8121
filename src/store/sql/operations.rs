//! Canary runs, the configuration freeze and overdue timers, on both databases.

use super::*;
use crate::domain::operations::{CanaryResult, CanaryRun, ConfigFreeze};

pub(crate) async fn insert_canary_run(conn: &mut DbConnection, run: &CanaryRun) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO canary_runs (id, network, payout_id, started_by, started_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(run.id)
    .bind(&run.network)
    .bind(run.payout.0)
    .bind(&run.started_by)
    .bind(run.started_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn finish_canary_run(
    conn: &mut DbConnection,
    id: Uuid,
    result: CanaryResult,
    reason: &str,
    at: UnixMicros,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE canary_runs SET result = $1, reason = $2, finished_at = $3 WHERE id = $4 AND result IS NULL",
    )
    .bind(result.as_str())
    .bind(reason)
    .bind(at)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn canary_runs(
    conn: &mut DbConnection,
    network: &str,
    limit: i64,
) -> StoreResult<Vec<CanaryRun>> {
    Ok(sqlx::query_as(
        "SELECT * FROM canary_runs WHERE network = $1 ORDER BY started_at DESC, id DESC LIMIT $2",
    )
    .bind(network)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

pub(crate) async fn config_freeze(conn: &mut DbConnection) -> StoreResult<Option<ConfigFreeze>> {
    Ok(
        sqlx::query_as("SELECT reason, actor, since, until FROM config_freeze WHERE id = 1")
            .fetch_optional(conn)
            .await?,
    )
}

pub(crate) async fn set_config_freeze(
    conn: &mut DbConnection,
    freeze: Option<&ConfigFreeze>,
) -> StoreResult<()> {
    match freeze {
        Some(f) => {
            sqlx::query(
                "INSERT INTO config_freeze (id, reason, actor, since, until) VALUES (1, $1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET reason = excluded.reason, actor = excluded.actor, since = excluded.since, until = excluded.until",
            )
            .bind(&f.reason)
            .bind(&f.actor)
            .bind(f.since)
            .bind(f.until)
            .execute(conn)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM config_freeze WHERE id = 1")
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

/// Deal timers still pending and trust sessions still open whose moment was before `before`:
/// how many, and the earliest of those moments.
pub(crate) async fn overdue(
    conn: &mut DbConnection,
    before: UnixMicros,
) -> StoreResult<(i64, Option<UnixMicros>)> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, MIN(at) AS oldest FROM ( \
           SELECT due_at AS at FROM timers WHERE state = 'pending' AND due_at < $1 \
           UNION ALL SELECT cutoff_at AS at FROM trust_sessions WHERE state = 'open' AND cutoff_at < $1) AS overdue",
    )
    .bind(before)
    .fetch_one(conn)
    .await?;
    Ok((row.try_get("n")?, row.try_get("oldest")?))
}

#[async_trait]
impl OperationsStore for DbStore {
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

    async fn record_incident(
        &self,
        incident: &crate::domain::incidents::Incident,
        links: &[crate::domain::incidents::IncidentLink],
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        incidents::insert_incident(&mut tx, incident, links).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn incidents(
        &self,
        from: UnixMicros,
        to: UnixMicros,
    ) -> StoreResult<Vec<crate::domain::incidents::Incident>> {
        let mut conn = self.pool.acquire().await?;
        incidents::incidents_between(&mut conn, from, to).await
    }

    async fn list_incidents(
        &self,
        status: Option<crate::domain::incidents::IncidentStatus>,
        before: Option<Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::incidents::Incident>> {
        let mut conn = self.pool.acquire().await?;
        incidents::list_incidents(&mut conn, status, before, limit).await
    }

    async fn incident(&self, id: Uuid) -> StoreResult<crate::domain::incidents::IncidentRecord> {
        let mut conn = self.pool.acquire().await?;
        incidents::incident_record(&mut conn, id).await
    }

    async fn update_incident(
        &self,
        id: Uuid,
        update: &crate::domain::incidents::IncidentUpdate,
        links: &[crate::domain::incidents::IncidentLink],
        audit: &AuditRecord,
    ) -> StoreResult<crate::domain::incidents::IncidentRecord> {
        let (_writing, mut tx) = self.begin_write().await?;
        incidents::update_incident(&mut tx, id, update, links).await?;
        insert_audit(&mut tx, audit).await?;
        let record = incidents::incident_record(&mut tx, id).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn treasury_controls(
        &self,
    ) -> StoreResult<Vec<crate::domain::operations::TreasuryControl>> {
        let mut conn = self.pool.acquire().await?;
        operations::treasury_controls(&mut conn).await
    }

    async fn set_treasury_control(
        &self,
        network: &str,
        kind: crate::domain::operations::ControlKind,
        target: &str,
        control: Option<&crate::domain::operations::TreasuryControl>,
        incident: Option<(Uuid, &crate::domain::incidents::IncidentUpdate)>,
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        if let Some((id, note)) = incident {
            // The note first: it locks the incident's row, so the status read next holds.
            incidents::update_incident(&mut tx, id, note, &[]).await?;
            let record = incidents::incident_record(&mut tx, id).await?;
            if record.incident.status == crate::domain::incidents::IncidentStatus::Resolved {
                return Err(StoreError::Conflict(
                    ConflictKind::StateChanged,
                    format!("incident {id} is resolved: it cannot justify a change"),
                ));
            }
        }
        operations::set_treasury_control(&mut tx, network, kind, target, control).await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn unresolved_incidents(
        &self,
    ) -> StoreResult<Vec<(String, crate::domain::incidents::IncidentStatus, i64)>> {
        let mut conn = self.pool.acquire().await?;
        incidents::unresolved_counts(&mut conn).await
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

#[async_trait]
impl LeaseStore for DbStore {
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
        Ok(
            sqlx::query_as("SELECT owner, fence, expires_at FROM engine_leases WHERE network = $1")
                .bind(network)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

pub(crate) async fn treasury_controls(
    conn: &mut DbConnection,
) -> StoreResult<Vec<crate::domain::operations::TreasuryControl>> {
    let rows = sqlx::query(
        "SELECT network, kind, target, value, actor, reason, incident, at FROM treasury_controls ORDER BY network, kind, target",
    )
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(crate::domain::operations::TreasuryControl {
                network: r.try_get("network")?,
                kind: r.try_get("kind")?,
                target: r.try_get("target")?,
                value: r.try_get("value")?,
                actor: r.try_get("actor")?,
                reason: r.try_get("reason")?,
                incident: r.try_get("incident")?,
                at: r.try_get("at")?,
            })
        })
        .collect()
}

/// Puts `control` in force (replacing the same one), or clears (network, kind, target).
pub(crate) async fn set_treasury_control(
    conn: &mut DbConnection,
    network: &str,
    kind: crate::domain::operations::ControlKind,
    target: &str,
    control: Option<&crate::domain::operations::TreasuryControl>,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM treasury_controls WHERE network = $1 AND kind = $2 AND target = $3")
        .bind(network)
        .bind(kind.as_str())
        .bind(target)
        .execute(&mut *conn)
        .await?;
    if let Some(c) = control {
        sqlx::query(
            "INSERT INTO treasury_controls (network, kind, target, value, actor, reason, incident, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&c.network)
        .bind(c.kind.as_str())
        .bind(&c.target)
        .bind(&c.value)
        .bind(&c.actor)
        .bind(&c.reason)
        .bind(c.incident)
        .bind(c.at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
