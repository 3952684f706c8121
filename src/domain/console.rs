//! Console records: sign-in sessions and second-factor enrolments, as stored.

use crate::domain::{Role, UnixMicros};

/// A console session as stored (by the SHA-256 of its cookie).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionRecord {
    #[sqlx(try_from = "Vec<u8>")]
    pub id_hash: [u8; 32],
    #[sqlx(rename = "user_name")]
    pub user: String,
    pub role: Role,
    /// Every form must echo it.
    pub csrf: String,
    /// The second factor is done (or not needed for the role).
    pub mfa_ok: bool,
    pub created_at: UnixMicros,
    pub expires_at: UnixMicros,
    /// The company the user acts for; None: the operator's staff.
    #[sqlx(rename = "company_id")]
    pub company: Option<uuid::Uuid>,
    /// The SHA-256 of the token signed in with: the session ends with that token.
    pub token_sha256: Vec<u8>,
}

/// A signed link to one console page, as minted: it opens its page once, before it expires,
/// for a user of `company` (None: staff).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deeplink {
    pub jti: String,
    /// What it opens, e.g. `payout:<id>`.
    pub target: String,
    pub company: Option<uuid::Uuid>,
    pub created_by: String,
    pub created_at: UnixMicros,
    pub expires_at: UnixMicros,
}

/// A user's TOTP enrolment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaEnrolment {
    pub user: String,
    /// Random; with the console key it gives the TOTP secret.
    pub enrolment: String,
    /// Set once a first code was entered.
    pub confirmed_at: Option<UnixMicros>,
    /// The last time step used (each code works once).
    pub last_step: i64,
    /// SHA-256 (hex) of the recovery codes not yet used.
    pub recovery_codes: Vec<String>,
}
