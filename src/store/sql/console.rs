//! Console sessions and second factors, on both databases.

use super::*;
use crate::domain::console::{Deeplink, MfaEnrolment, SessionRecord};

pub(crate) async fn session(
    conn: &mut DbConnection,
    id_hash: &[u8; 32],
) -> StoreResult<Option<SessionRecord>> {
    Ok(
        sqlx::query_as("SELECT * FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash.to_vec())
            .fetch_optional(conn)
            .await?,
    )
}

pub(crate) async fn put_session(conn: &mut DbConnection, s: &SessionRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO console_sessions (id_hash, user_name, role, csrf, mfa_ok, created_at, expires_at, company_id, token_sha256) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (id_hash) DO UPDATE SET mfa_ok = excluded.mfa_ok, expires_at = excluded.expires_at",
    )
    .bind(s.id_hash.to_vec())
    .bind(&s.user)
    .bind(s.role.as_str())
    .bind(&s.csrf)
    .bind(s.mfa_ok)
    .bind(s.created_at)
    .bind(s.expires_at)
    .bind(s.company)
    .bind(&s.token_sha256)
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn delete_session(
    conn: &mut DbConnection,
    id_hash: &[u8; 32],
    now: UnixMicros,
) -> StoreResult<()> {
    // Expired sessions go with it.
    sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1 OR expires_at < $2")
        .bind(id_hash.to_vec())
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

pub(crate) async fn mfa(conn: &mut DbConnection, user: &str) -> StoreResult<Option<MfaEnrolment>> {
    let row = sqlx::query("SELECT * FROM console_mfa WHERE user_name = $1")
        .bind(user)
        .fetch_optional(conn)
        .await?;
    row.map(|r| {
        let codes: String = r.try_get("recovery_codes")?;
        Ok(MfaEnrolment {
            user: user.to_owned(),
            enrolment: r.try_get("enrolment")?,
            confirmed_at: r.try_get("confirmed_at")?,
            last_step: r.try_get("last_step")?,
            recovery_codes: serde_json::from_str(&codes)
                .map_err(|e| StoreError::Invariant(format!("recovery codes: {e}")))?,
        })
    })
    .transpose()
}

pub(crate) async fn put_mfa(
    conn: &mut DbConnection,
    m: &MfaEnrolment,
    now: UnixMicros,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO console_mfa (user_name, enrolment, confirmed_at, last_step, recovery_codes, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (user_name) DO UPDATE SET enrolment = excluded.enrolment, confirmed_at = excluded.confirmed_at, \
         last_step = excluded.last_step, recovery_codes = excluded.recovery_codes",
    )
    .bind(&m.user)
    .bind(&m.enrolment)
    .bind(m.confirmed_at)
    .bind(m.last_step)
    .bind(serde_json::to_string(&m.recovery_codes).unwrap_or_else(|_| "[]".into()))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records that `step` was used, only if it is later than the last one: a code is good once.
pub(crate) async fn advance_step(
    conn: &mut DbConnection,
    user: &str,
    step: i64,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE console_mfa SET last_step = $1 WHERE user_name = $2 AND last_step < $3",
    )
    .bind(step)
    .bind(user)
    .bind(step)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Spends one recovery code (removes the one with this hash); false when it is not, or no
/// longer, there. The list is read under the write lock of `conn`'s transaction (the row
/// locked on PostgreSQL, the database's one writer on SQLite), so concurrent spends of the
/// same or of different codes queue instead of racing, and a spent code never comes back.
pub(crate) async fn spend_recovery_code(
    conn: &mut DbConnection,
    user: &str,
    hash: &str,
) -> StoreResult<bool> {
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT recovery_codes FROM console_mfa WHERE user_name = $1{FOR_UPDATE}"
    )))
    .bind(user)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(false);
    };
    let before: String = row.try_get("recovery_codes")?;
    let mut codes: Vec<String> = serde_json::from_str(&before)
        .map_err(|e| StoreError::Invariant(format!("recovery codes: {e}")))?;
    let count = codes.len();
    codes.retain(|c| c != hash);
    if codes.len() == count {
        return Ok(false);
    }
    let after = serde_json::to_string(&codes)
        .map_err(|e| StoreError::Invariant(format!("recovery codes: {e}")))?;
    sqlx::query("UPDATE console_mfa SET recovery_codes = $1 WHERE user_name = $2")
        .bind(after)
        .bind(user)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

#[async_trait]
impl ConsoleStore for DbStore {
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
        console::put_mfa(&mut conn, mfa, self.clock.now()).await
    }

    async fn advance_totp_step(&self, user: &str, step: i64) -> StoreResult<bool> {
        let mut conn = self.pool.acquire().await?;
        console::advance_step(&mut conn, user, step).await
    }

    async fn spend_recovery_code(&self, user: &str, hash: &str) -> StoreResult<bool> {
        let (_writing, mut tx) = self.begin_write().await?;
        let spent = console::spend_recovery_code(&mut tx, user, hash).await?;
        tx.commit().await?;
        Ok(spent)
    }

    async fn lock_console_session(
        &self,
        id_hash: &[u8; 32],
        audit: &AuditRecord,
    ) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(id_hash.to_vec())
            .execute(&mut *tx)
            .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn mint_deeplink(&self, link: &Deeplink, audit: &AuditRecord) -> StoreResult<()> {
        let (_writing, mut tx) = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO deeplinks (jti, target, company_id, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&link.jti)
        .bind(&link.target)
        .bind(link.company)
        .bind(&link.created_by)
        .bind(link.created_at)
        .bind(link.expires_at)
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn use_deeplink(&self, jti: &str, audit: &AuditRecord) -> StoreResult<bool> {
        let (_writing, mut tx) = self.begin_write().await?;
        let used = sqlx::query(
            "UPDATE deeplinks SET used_by = $1, used_at = $2 WHERE jti = $3 AND used_at IS NULL \
             AND expires_at > $2",
        )
        .bind(&audit.actor)
        .bind(audit.at)
        .bind(jti)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() == 0 {
            return Ok(false);
        }
        insert_audit(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }
}
