//! The audit log's record: who did what, and on what evidence when a machine decided.

use crate::domain::{Role, UnixMicros};

/// Who did what, written in the same database transaction as the change it describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub actor: String,
    pub role: Role,
    pub action: String,
    pub target: String,
    pub reason: Option<String>,
    pub request_id: String,
    pub at: UnixMicros,
    /// What an automatic decision saw (JSON): blocks, balances, transfers counted.
    pub evidence: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAudit {
    pub id: uuid::Uuid,
    pub record: AuditRecord,
}
