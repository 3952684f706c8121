//! `treasuryd backup`: an online, consistent copy of the embedded SQLite database while the
//! daemon runs. `VACUUM INTO` reads one snapshot (WAL lets the daemon keep writing meanwhile)
//! and writes a compacted database file; the copy is then opened and verified like the live
//! ledger (`ledger verify`), so a backup that would not restore is known at once. PostgreSQL is
//! backed up with its own tools (base backups and WAL archiving for point-in-time recovery;
//! see `runbooks/backup-and-restore.md`).

use crate::store::StoreError;
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "online backup is for the embedded SQLite database; back PostgreSQL up with pg_basebackup and WAL archiving (runbooks/backup-and-restore.md)"
    )]
    NotSqlite,
    #[error("{0} exists already; a backup never overwrites a file")]
    Exists(PathBuf),
    #[error("the backup could not be written: {0}")]
    Write(#[from] sqlx::Error),
    #[error("the backup was written but does not verify: {0}")]
    Verify(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// The journal head the copy holds: its last sequence number and chain hash.
    pub journal_seq: i64,
    pub journal_hash: [u8; 32],
}

/// Copies the SQLite database at `url` to the new file `out` and verifies the copy.
pub async fn sqlite(url: &str, out: &Path) -> Result<BackupReport, BackupError> {
    if !url.starts_with("sqlite:") {
        return Err(BackupError::NotSqlite);
    }
    if out.exists() {
        return Err(BackupError::Exists(out.to_owned()));
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
        .read_only(true)
        .busy_timeout(std::time::Duration::from_secs(10));
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    sqlx::query("VACUUM INTO ?")
        .bind(out.to_string_lossy().into_owned())
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let copy = crate::store::open(
        &format!("sqlite://{}", out.display()),
        1,
        crate::clock::SystemClock::shared(),
    )
    .await?;
    let report = crate::ledger::verify::verify(copy.as_ref()).await?;
    if !report.is_clean() {
        return Err(BackupError::Verify(report.to_string()));
    }
    let (journal_seq, journal_hash) = copy.journal_head().await?;
    copy.close().await;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(BackupReport {
        path: out.to_owned(),
        bytes,
        journal_seq,
        journal_hash,
    })
}
