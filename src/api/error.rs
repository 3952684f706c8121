//! The one error type of the control API. Every refusal is
//! `{"error": {"code", "message", "field"}}` with a stable snake_case code; 4xx means nothing
//! changed, 5xx is ours and never carries internal detail to the caller.

use crate::domain::AmountError;
use crate::ledger::LedgerError;
use crate::store::StoreError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{message}")]
    Invalid {
        code: &'static str,
        field: String,
        message: String,
    },
    #[error("the body must be a JSON object")]
    BodyNotObject,
    #[error("send Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("the body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("a valid bearer token is required")]
    Unauthenticated,
    #[error("this action needs the role {0}")]
    Forbidden(&'static str),
    /// A role refusal that names what the caller may do instead.
    #[error("{0}")]
    ForbiddenAction(String),
    #[error("{}{what} {id} does not exist", field.map(|f| format!("{f}: ")).unwrap_or_default())]
    NotFound {
        what: &'static str,
        id: String,
        field: Option<&'static str>,
    },
    #[error("{message}")]
    Conflict {
        code: &'static str,
        field: Option<&'static str>,
        message: String,
    },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A limit of the tier table, on a field other than a payout's amount.
    #[error("{field} is {refusal}")]
    TierLimit {
        field: &'static str,
        refusal: Box<crate::domain::tiers::TierRefusal>,
    },
    #[error("internal error")]
    Internal(#[source] StoreError),
    #[error("the service is not ready")]
    Unavailable,
    /// Too many wrong tokens or codes from this source or for this user: try again later.
    #[error("too many failed attempts; retry after {0} s")]
    TooManyAttempts(u64),
}

impl ApiError {
    pub fn invalid(
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ApiError::Invalid {
            code,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn amount(field: &str, e: AmountError) -> Self {
        Self::invalid("invalid_amount", field, format!("{field} {e}"))
    }

    /// The body's `error`: what a caller reads of this refusal.
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code().to_owned(),
            message: self.to_string(),
            field: self.field(),
            headroom: match self {
                ApiError::Ledger(LedgerError::TierLimit(r))
                | ApiError::TierLimit { refusal: r, .. } => Some(r.spec.format(r.headroom)),
                _ => None,
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid { .. } | ApiError::BodyNotObject => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::ForbiddenAction(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound { field: None, .. } => StatusCode::NOT_FOUND,
            ApiError::NotFound { field: Some(_), .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Ledger(e) => ledger_status(e),
            ApiError::TierLimit { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::Invalid { code, .. } => code,
            ApiError::BodyNotObject => "invalid_body",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::Forbidden(_) | ApiError::ForbiddenAction(_) => "forbidden",
            ApiError::NotFound { what, .. } => match *what {
                "account" => "account_not_found",
                "hold" => "hold_not_found",
                "transaction" => "transaction_not_found",
                "payout" => "payout_not_found",
                "network" => "network_not_found",
                "asset" => "unknown_asset",
                "template" => "template_not_found",
                "deal" => "deal_not_found",
                "endpoint" => "endpoint_not_found",
                "evidence" => "evidence_not_found",
                _ => "not_found",
            },
            ApiError::Conflict { code, .. } => code,
            ApiError::Ledger(e) => e.code(),
            ApiError::TierLimit { .. } => "tier_limit_exceeded",
            ApiError::Internal(_) => "internal_error",
            ApiError::Unavailable => "not_ready",
            ApiError::TooManyAttempts(_) => "too_many_attempts",
        }
    }

    fn field(&self) -> Option<String> {
        match self {
            ApiError::Invalid { field, .. } => Some(field.clone()),
            ApiError::NotFound { field, .. } | ApiError::Conflict { field, .. } => {
                field.map(str::to_owned)
            }
            ApiError::TierLimit { field, .. } => Some((*field).to_owned()),
            ApiError::Ledger(e) => match e {
                LedgerError::InsufficientFunds { .. }
                | LedgerError::HoldExceeded { .. }
                | LedgerError::TierLimit(_)
                | LedgerError::BalanceOutOfRange(_) => Some("amount".into()),
                LedgerError::DestinationRequired => Some("destination".into()),
                LedgerError::IdempotencyConflict(_) => Some("Idempotency-Key".into()),
                _ => None,
            },
            _ => None,
        }
    }
}

fn ledger_status(e: &LedgerError) -> StatusCode {
    match e {
        LedgerError::AccountNotFound(_)
        | LedgerError::UnknownAsset(_)
        | LedgerError::AssetMismatch { .. }
        | LedgerError::WrongAccountKind { .. }
        | LedgerError::DestinationRequired
        | LedgerError::TierLimit(_)
        | LedgerError::BalanceOutOfRange(_) => StatusCode::UNPROCESSABLE_ENTITY,
        LedgerError::HoldNotFound(_) => StatusCode::NOT_FOUND,
        LedgerError::InsufficientFunds { .. }
        | LedgerError::HoldExceeded { .. }
        | LedgerError::HoldResolved(_)
        | LedgerError::IdempotencyConflict(_) => StatusCode::CONFLICT,
    }
}

/// The store's answers that are the caller's business, mapped once: what does not exist is a
/// 404, a write that lost to a concurrent change or meets an existing row is a 409. The rest
/// is ours (500, logged whole).
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound {
                what: "object",
                id: "asked for".into(),
                field: None,
            },
            StoreError::Conflict(_, message) => ApiError::Conflict {
                code: "conflict",
                field: None,
                message,
            },
            e => ApiError::Internal(e),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `insufficient_funds`.
    pub code: String,
    pub message: String,
    /// The request field the error is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// With `tier_limit_exceeded`: the largest amount (a decimal string in token units) that
    /// would pass now; "0" when none would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headroom: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // Full chain in our logs; a generic message for the caller.
            tracing::error!(error = ?self, "request failed");
        }
        let body = ErrorBody {
            error: self.detail(),
        };
        let mut response = (status, Json(body)).into_response();
        if matches!(self, ApiError::Unauthenticated) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::TooManyAttempts(seconds) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_answers_map_to_their_status_once() {
        let not_found = ApiError::from(StoreError::NotFound);
        assert_eq!(
            (not_found.status(), not_found.code()),
            (StatusCode::NOT_FOUND, "not_found")
        );
        let conflict = ApiError::from(StoreError::Conflict(
            crate::store::ConflictKind::StateChanged,
            "payout p is no longer queued".into(),
        ));
        assert_eq!(
            (conflict.status(), conflict.code()),
            (StatusCode::CONFLICT, "conflict")
        );
        assert_eq!(conflict.to_string(), "payout p is no longer queued");
        let ours = ApiError::from(StoreError::Invariant("broken row".into()));
        assert_eq!(ours.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
