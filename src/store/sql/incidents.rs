//! The incident register on both databases: incidents, their timeline of notes, their links.

use super::*;
use crate::domain::incidents::{
    Incident, IncidentLink, IncidentNote, IncidentRecord, IncidentStatus, IncidentUpdate, LinkKind,
};

const INCIDENT_COLUMNS: &str =
    "id, severity, summary, status, at, recorded_by, updated_at, resolved_at";

fn incident_from_row(r: &DbRow) -> StoreResult<Incident> {
    Ok(Incident {
        id: r.try_get("id")?,
        severity: r.try_get("severity")?,
        summary: r.try_get("summary")?,
        status: r.try_get("status")?,
        at: r.try_get("at")?,
        recorded_by: r.try_get("recorded_by")?,
        updated_at: r.try_get("updated_at")?,
        resolved_at: r.try_get("resolved_at")?,
    })
}

pub(crate) async fn insert_incident(
    conn: &mut DbConnection,
    i: &Incident,
    links: &[IncidentLink],
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO incidents (id, severity, summary, status, at, recorded_by, updated_at, resolved_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(i.id)
    .bind(&i.severity)
    .bind(&i.summary)
    .bind(i.status.as_str())
    .bind(i.at)
    .bind(&i.recorded_by)
    .bind(i.updated_at)
    .bind(i.resolved_at)
    .execute(&mut *conn)
    .await?;
    insert_links(conn, i.id, links).await
}

/// Adds links to an incident; one it already has is kept once.
async fn insert_links(
    conn: &mut DbConnection,
    incident: Uuid,
    links: &[IncidentLink],
) -> StoreResult<()> {
    for link in links {
        sqlx::query(
            "INSERT INTO incident_links (incident, kind, target) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(incident)
        .bind(link.kind.as_str())
        .bind(&link.id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Incidents that began in `[from, to)`, oldest first.
pub(crate) async fn incidents_between(
    conn: &mut DbConnection,
    from: i64,
    to: i64,
) -> StoreResult<Vec<Incident>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE at >= $1 AND at < $2 ORDER BY at, id"
    )))
    .bind(from)
    .bind(to)
    .fetch_all(conn)
    .await?;
    rows.iter().map(incident_from_row).collect()
}

/// A page of incidents, newest first, optionally of one status; `before` is the last id of
/// the previous page.
pub(crate) async fn list_incidents(
    conn: &mut DbConnection,
    status: Option<IncidentStatus>,
    before: Option<Uuid>,
    limit: i64,
) -> StoreResult<Vec<Incident>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents \
         WHERE ($1 IS NULL OR status = $1) \
           AND ($2 IS NULL OR at < (SELECT at FROM incidents WHERE id = $2) \
                OR (at = (SELECT at FROM incidents WHERE id = $2) AND id < $2)) \
         ORDER BY at DESC, id DESC LIMIT $3"
    )))
    .bind(status.map(|s| s.as_str()))
    .bind(before)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(incident_from_row).collect()
}

pub(crate) async fn incident_record(
    conn: &mut DbConnection,
    id: Uuid,
) -> StoreResult<IncidentRecord> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    let incident = incident_from_row(&row)?;
    let notes = sqlx::query(
        "SELECT at, author, note, status, severity FROM incident_notes WHERE incident = $1 ORDER BY at, id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(IncidentNote {
            at: r.try_get("at")?,
            author: r.try_get("author")?,
            note: r.try_get("note")?,
            status: r.try_get("status")?,
            severity: r.try_get("severity")?,
        })
    })
    .collect::<StoreResult<Vec<_>>>()?;
    let links = sqlx::query(
        "SELECT kind, target FROM incident_links WHERE incident = $1 ORDER BY kind, target",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok(IncidentLink {
            kind: r.try_get::<LinkKind, _>("kind")?,
            id: r.try_get("target")?,
        })
    })
    .collect::<StoreResult<Vec<_>>>()?;
    Ok(IncidentRecord {
        incident,
        notes,
        links,
    })
}

/// Appends a note and applies the status or severity it sets. A resolved incident takes
/// notes but no more changes of status or severity.
pub(crate) async fn update_incident(
    conn: &mut DbConnection,
    id: Uuid,
    update: &IncidentUpdate,
    links: &[IncidentLink],
) -> StoreResult<()> {
    let status: IncidentStatus = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT status FROM incidents WHERE id = $1{FOR_UPDATE}"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    if status == IncidentStatus::Resolved && (update.status.is_some() || update.severity.is_some())
    {
        return Err(StoreError::Conflict(
            ConflictKind::StateChanged,
            format!("incident {id} is resolved: it takes notes, not changes"),
        ));
    }
    sqlx::query(
        "INSERT INTO incident_notes (id, incident, at, author, note, status, severity) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(id)
    .bind(update.at)
    .bind(&update.author)
    .bind(&update.note)
    .bind(update.status.map(|s| s.as_str()))
    .bind(update.severity.as_deref())
    .execute(&mut *conn)
    .await?;
    let resolved_at = (update.status == Some(IncidentStatus::Resolved)).then_some(update.at);
    sqlx::query(
        "UPDATE incidents SET status = COALESCE($1, status), severity = COALESCE($2, severity), \
         updated_at = $3, resolved_at = COALESCE($4, resolved_at) WHERE id = $5",
    )
    .bind(update.status.map(|s| s.as_str()))
    .bind(update.severity.as_deref())
    .bind(update.at)
    .bind(resolved_at)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    insert_links(conn, id, links).await
}

/// Incidents not yet resolved, counted by severity and status.
pub(crate) async fn unresolved_counts(
    conn: &mut DbConnection,
) -> StoreResult<Vec<(String, IncidentStatus, i64)>> {
    let rows = sqlx::query(
        "SELECT severity, status, COUNT(*) AS n FROM incidents WHERE status <> 'resolved' GROUP BY severity, status",
    )
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("severity")?,
                r.try_get("status")?,
                r.try_get("n")?,
            ))
        })
        .collect()
}
