//! Webhook records: endpoints, outbox events and deliveries, as stored.

use crate::domain::UnixMicros;
use secrecy::SecretString;
use uuid::Uuid;

/// A partner's endpoint as stored. The secrets never leave through the API after creation or
/// rotation; `Debug` redacts them.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: uuid::Uuid,
    /// The company whose events it receives; None: staff's, it receives every event.
    pub company: Option<uuid::Uuid>,
    pub url: String,
    pub event_types: Vec<String>,
    pub active: bool,
    pub secret: SecretString,
    /// The secret before the last rotation, still signing until `previous_until`.
    pub previous_secret: Option<SecretString>,
    pub previous_until: Option<crate::domain::UnixMicros>,
    pub disabled_reason: Option<String>,
    pub created_by: String,
    pub created_at: crate::domain::UnixMicros,
    pub updated_at: crate::domain::UnixMicros,
}

/// What one attempt did to a pending delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    pub endpoint: Uuid,
    pub event_seq: i64,
    pub at: UnixMicros,
    pub status: Option<u16>,
    /// Why it did not count as delivered (bounded excerpt of the answer, or the I/O error).
    pub error: Option<String>,
    /// Delivered, pending again at `next_attempt_at`, or dead.
    pub state: DeliveryState,
    pub next_attempt_at: UnixMicros,
}

/// The outbox as a whole, for metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Backlog {
    pub endpoints: Vec<EndpointBacklog>,
    pub undispatched: i64,
    pub oldest_undispatched_created_at: Option<UnixMicros>,
}

/// One event on its way to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Delivery {
    #[sqlx(rename = "endpoint_id")]
    pub endpoint: Uuid,
    pub event_seq: i64,
    pub event_id: Uuid,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub event_created_at: UnixMicros,
    pub body: String,
    pub state: DeliveryState,
    pub attempts: i32,
    pub due_since: UnixMicros,
    pub next_attempt_at: UnixMicros,
    pub last_attempt_at: Option<UnixMicros>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<UnixMicros>,
    pub replays: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Dead,
}

/// Per endpoint: what is waiting and what was given up on.
#[derive(Debug, Clone, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct EndpointBacklog {
    #[sqlx(rename = "id")]
    pub endpoint: Uuid,
    pub active: bool,
    pub pending: i64,
    pub dead: i64,
    /// When the oldest pending event was written to the outbox.
    #[sqlx(rename = "oldest")]
    pub oldest_pending_created_at: Option<UnixMicros>,
}

/// An event as the trigger wrote it (and, once rendered, with its body).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxEvent {
    pub seq: i64,
    pub id: Uuid,
    #[sqlx(rename = "type")]
    pub event_type: String,
    /// The payout, deal or journal transaction it is about.
    pub subject_id: Option<Uuid>,
    pub network: Option<String>,
    pub actor: Option<String>,
    pub detail: Option<String>,
    /// What an automatic safe-mode saw (JSON text), as its audit row recorded it.
    pub evidence: Option<String>,
    /// When the change happened (the deal clock for deal events).
    pub occurred_at: UnixMicros,
    /// When the trigger wrote it (database clock): outbox lag is measured from here.
    pub created_at: UnixMicros,
    pub body: Option<String>,
    pub dispatched_at: Option<UnixMicros>,
}
