//! Bearer-token authentication with static tokens whose SHA-256 is in the config.
//!
//! Tokens are 256 random bits, so an unsalted SHA-256 is enough to make the config file
//! useless to a thief, and lookup by digest leaks nothing about other tokens' values.

use super::AppState;
use super::error::ApiError;
use crate::config::TokenConfig;
use crate::domain::Role;
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// The authenticated caller of a request: the operator's staff, or a partner company's user
/// (`company`), who sees and moves only that company's money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    pub company: Option<uuid::Uuid>,
}

impl Caller {
    pub fn staff(name: impl Into<String>, role: Role) -> Self {
        Self {
            name: name.into(),
            role,
            company: None,
        }
    }

    /// Whether the caller may act on an object owned by `owner` (None: the operator's).
    /// Staff may act on any; a company only on its own.
    pub fn owns(&self, owner: Option<uuid::Uuid>) -> bool {
        self.company.is_none() || self.company == owner
    }

    pub fn require(&self, allowed: &[Role]) -> Result<(), ApiError> {
        if allowed.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                allowed.first().map_or("none", |r| r.as_str()),
            ))
        }
    }
}

/// The tokens in force, by SHA-256 digest: those of `[[auth.tokens]]`, replaced as a whole on
/// each reload (SIGHUP), and those added at run time (the demo's), which reloads keep.
#[derive(Debug, Default)]
pub struct Authenticator {
    configured: std::sync::RwLock<HashMap<[u8; 32], Caller>>,
    run_time: HashMap<[u8; 32], Caller>,
}

fn by_digest(tokens: &[TokenConfig]) -> HashMap<[u8; 32], Caller> {
    tokens
        .iter()
        .filter_map(|t| {
            let digest: [u8; 32] = hex::decode(&t.sha256).ok()?.try_into().ok()?;
            Some((
                digest,
                Caller {
                    name: t.name.clone(),
                    role: t.role,
                    company: t.company,
                },
            ))
        })
        .collect()
}

impl Authenticator {
    pub fn from_config(tokens: &[TokenConfig]) -> Self {
        Self {
            configured: std::sync::RwLock::new(by_digest(tokens)),
            run_time: HashMap::new(),
        }
    }

    /// Adds a token at run time (the demo mints one for the operator at start).
    pub fn insert(&mut self, token: &SecretString, caller: Caller) {
        self.run_time
            .insert(token_digest(token.expose_secret()), caller);
    }

    /// Puts `tokens` in force instead of the configured ones: a token left out stops working
    /// at once, and so do the console sessions signed in with it. Returns how many are in
    /// force, and how many of the previous ones went.
    pub fn reload(&self, tokens: &[TokenConfig]) -> (usize, usize) {
        let fresh = by_digest(tokens);
        let mut configured = self
            .configured
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let removed = configured
            .iter()
            .filter(|(d, c)| fresh.get(*d) != Some(*c))
            .count();
        *configured = fresh;
        (configured.len(), removed)
    }

    /// The caller a token speaks for, with the token's digest.
    pub(crate) fn authenticate(&self, token: &str) -> Option<(Caller, [u8; 32])> {
        let digest = token_digest(token);
        self.caller_of(&digest).map(|c| (c, digest))
    }

    /// Who the token with `digest` speaks for, if it is still in force (a console session is
    /// bound to the digest of the token it signed in with).
    pub(crate) fn caller_of(&self, digest: &[u8]) -> Option<Caller> {
        let digest: &[u8; 32] = digest.try_into().ok()?;
        let configured = self
            .configured
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        configured
            .get(digest)
            .or_else(|| self.run_time.get(digest))
            .cloned()
    }
}

/// Names the daemon itself writes as the actor in audit rows and timelines; no token may take
/// one, or anything starting `treasuryd`, to pass for it.
pub const RESERVED_NAMES: &[&str] = &["config", "console", "demo", "migration", "system", "timer"];

/// A token's name, as it appears in every audit row: 1-64 characters of lowercase ASCII
/// letters, digits, `-`, `_` and `.`, starting with a letter or digit, so that two names that
/// look alike are the same name; never a system actor's.
pub fn check_token_name(name: &str) -> Result<(), String> {
    let well_formed = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if !well_formed {
        return Err(format!(
            "{name:?} must be 1-64 characters of a-z, 0-9, '-', '_' and '.', starting with a letter or digit"
        ));
    }
    if RESERVED_NAMES.contains(&name) || name.starts_with("treasuryd") {
        return Err(format!(
            "{name:?} is the daemon's own name in audit rows: pick another"
        ));
    }
    Ok(())
}

/// The routes a company's user may call, each scoped to the company's own objects in its
/// handler. Every other route answers 403 to a company token: a new route is staff-only until
/// it is scoped and listed here.
pub const COMPANY_ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/accounts"),
    ("POST", "/v1/accounts"),
    ("GET", "/v1/accounts/{id}"),
    ("GET", "/v1/accounts/{id}/allowlist"),
    ("GET", "/v1/accounts/{id}/deposit-addresses"),
    ("GET", "/v1/journal"),
    ("GET", "/v1/journal/{id}"),
    ("GET", "/v1/holds/{id}"),
    ("GET", "/v1/payouts"),
    ("POST", "/v1/payouts"),
    ("POST", "/v1/payouts/batch"),
    ("GET", "/v1/payouts/{id}"),
    ("POST", "/v1/payouts/{id}/approve"),
    ("POST", "/v1/payouts/{id}/reject"),
    ("POST", "/v1/payouts/{id}/cancel"),
    ("GET", "/v1/deals"),
    ("POST", "/v1/deals"),
    ("GET", "/v1/deals/{id}"),
    ("POST", "/v1/deals/{id}/fund"),
    ("POST", "/v1/deals/{id}/deliver"),
    ("POST", "/v1/deals/{id}/approve"),
    ("POST", "/v1/deals/{id}/issue"),
    ("POST", "/v1/deals/{id}/evidence"),
    ("GET", "/v1/deals/{id}/evidence/{evidence}"),
    ("GET", "/v1/deals/{id}/timeline"),
    ("GET", "/v1/companies/{id}/headroom"),
    ("GET", "/v1/tiers"),
    ("GET", "/v1/trust/pairs"),
    ("GET", "/v1/trust/pairs/{id}"),
    ("POST", "/v1/trust/pairs/{id}/obligations"),
    ("GET", "/v1/trust/sessions"),
    ("GET", "/v1/trust/sessions/{id}"),
    ("POST", "/v1/deeplinks"),
    ("GET", "/v1/webhooks/endpoints"),
    ("POST", "/v1/webhooks/endpoints"),
    ("GET", "/v1/webhooks/endpoints/{id}"),
];

/// `N` bytes of OS randomness (uuid's v4 generator draws from the OS RNG).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(16) {
        let r = uuid::Uuid::new_v4();
        chunk.copy_from_slice(&r.as_bytes()[..chunk.len()]);
    }
    out
}

pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh token: `tdk_` and 64 hex characters of OS randomness.
pub fn new_token() -> SecretString {
    let mut bytes = [0u8; 32];
    // uuid's v4 generator draws from the OS RNG; two of them give 256 random bits minus the
    // 12 fixed version/variant bits, 244 bits, far beyond guessing.
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    SecretString::from(format!("tdk_{}", hex::encode(bytes)))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthenticated)?;
        let source = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| super::throttle::source_key(c.0.ip()));
        let (caller, _) = state.authenticate_from(source, token.trim())?;
        if caller.company.is_some() {
            let route = parts
                .extensions
                .get::<axum::extract::MatchedPath>()
                .map(|p| p.as_str())
                .unwrap_or_default();
            if !COMPANY_ROUTES.contains(&(parts.method.as_str(), route)) {
                return Err(ApiError::ForbiddenAction(format!(
                    "{} {route} is for the operator's staff, not a company's users",
                    parts.method
                )));
            }
        }
        Ok(caller)
    }
}
