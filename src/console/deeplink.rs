//! Deeplinks: a signed, short-lived, single-use link to one console page (a deal, or a payout
//! awaiting approval) for the users of one company, or for staff. The link is an HS256 JWT
//! whose key is derived from the console key; its `jti` is stored when it is minted and spent
//! when it is opened, so a replay is refused. Expiry is judged on the daemon's clock.

use super::{Console, Refusal, Viewer, bare};
use crate::domain::UnixMicros;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{KeyInit, Mac};
use maud::html;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};

/// The longest a link lives.
pub const MAX_TTL_SECONDS: i64 = 15 * 60;
const ISSUER: &str = "treasuryd";
const AUDIENCE: &str = "treasuryd-console";
/// Where a signed-out user's link waits while they sign in.
pub(super) const NEXT_COOKIE: &str = "treasuryd_next";

/// What a link may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Deal,
    Payout,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Deal => "deal",
            Target::Payout => "payout",
        }
    }

    fn page(self, id: &uuid::Uuid) -> String {
        format!("/admin/{}s/{id}", self.as_str())
    }
}

/// The claims a link carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// `deal:<id>` or `payout:<id>`.
    pub sub: String,
    /// The company whose users may open it; absent: staff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<uuid::Uuid>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

impl Claims {
    fn target(&self) -> Option<(Target, uuid::Uuid)> {
        let (kind, id) = self.sub.split_once(':')?;
        let target = match kind {
            "deal" => Target::Deal,
            "payout" => Target::Payout,
            _ => return None,
        };
        Some((target, uuid::Uuid::try_parse(id).ok()?))
    }
}

/// The links' signing key, derived from the console key so that no second secret is needed.
#[derive(Clone)]
pub struct DeeplinkKey(std::sync::Arc<SecretBox<[u8; 32]>>);

impl std::fmt::Debug for DeeplinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeeplinkKey([redacted])")
    }
}

/// Why a link does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefusal {
    /// Malformed, tampered with, or signed for another audience or issuer.
    Invalid,
    Expired,
}

impl DeeplinkKey {
    pub fn derive(console_key: &SecretString) -> Self {
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(
            console_key.expose_secret().as_bytes(),
        )
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"treasuryd deeplink v1");
        Self(std::sync::Arc::new(SecretBox::new(Box::new(
            mac.finalize().into_bytes().into(),
        ))))
    }

    /// A link to `target` `id` for `company`'s users (None: staff), valid `ttl` seconds from
    /// `now` (capped at 15 minutes).
    pub fn mint(
        &self,
        target: Target,
        id: uuid::Uuid,
        company: Option<uuid::Uuid>,
        now: UnixMicros,
        ttl_seconds: i64,
    ) -> Result<(String, Claims), jsonwebtoken::errors::Error> {
        let iat = now / 1_000_000;
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: format!("{}:{id}", target.as_str()),
            company,
            iat,
            exp: iat + ttl_seconds.clamp(1, MAX_TTL_SECONDS),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let key = jsonwebtoken::EncodingKey::from_secret(self.0.expose_secret());
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &key,
        )?;
        Ok((token, claims))
    }

    /// The claims of a link this key signed for the console, if it has not expired at `now`.
    pub fn verify(&self, token: &str, now: UnixMicros) -> Result<Claims, LinkRefusal> {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        // Expiry on the daemon's clock, below; the crate would read the system's.
        validation.validate_exp = false;
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        let key = jsonwebtoken::DecodingKey::from_secret(self.0.expose_secret());
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|_| LinkRefusal::Invalid)?
            .claims;
        if claims.target().is_none() || claims.exp - claims.iat > MAX_TTL_SECONDS {
            return Err(LinkRefusal::Invalid);
        }
        if claims.exp * 1_000_000 <= now {
            return Err(LinkRefusal::Expired);
        }
        Ok(claims)
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct OpenQuery {
    link: String,
}

fn refused(status: StatusCode, why: &str) -> Response {
    (
        status,
        bare("Link not opened", html! { p.error role="alert" { (why) } }),
    )
        .into_response()
}

/// Only a link's own path may be resumed after sign-in: never an address elsewhere.
pub(super) fn resumable(path: &str) -> bool {
    path.strip_prefix("/admin/open?link=").is_some_and(|t| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    })
}

/// `GET /admin/open?link=…`: checks the link, has a signed-out user sign in first, then opens
/// the page for a user of the link's company, once.
pub(super) async fn open(
    State(c): State<Console>,
    Query(q): Query<OpenQuery>,
    parts: axum::http::request::Parts,
) -> Result<Response, Refusal> {
    let Some(key) = &c.app.deeplinks else {
        return Ok(refused(
            StatusCode::NOT_FOUND,
            "Links are off: the console key is not set.",
        ));
    };
    let claims = match key.verify(&q.link, c.app.clock.now()) {
        Ok(claims) => claims,
        Err(LinkRefusal::Expired) => {
            return Ok(refused(StatusCode::GONE, "This link has expired."));
        }
        Err(LinkRefusal::Invalid) => {
            return Ok(refused(StatusCode::BAD_REQUEST, "This link is not valid."));
        }
    };
    let viewer = match super::current_session(&parts, &c).await? {
        Some(s) if s.mfa_ok => Viewer::of(s),
        signed_out_or_halfway => {
            let next = format!("/admin/open?link={}", q.link);
            let to = if signed_out_or_halfway.is_some() {
                "/admin/2fa"
            } else {
                "/admin/login"
            };
            let mut res = Redirect::to(to).into_response();
            if resumable(&next) {
                res.headers_mut().append(
                    header::SET_COOKIE,
                    super::auth::set_cookie(NEXT_COOKIE, &next, "/admin", 900),
                );
            }
            return Ok(res);
        }
    };
    if viewer.caller.company != claims.company {
        return Ok(refused(
            StatusCode::FORBIDDEN,
            "This link is for other users: sign in as a user of the company it was sent to.",
        ));
    }
    let Some((target, id)) = claims.target() else {
        return Ok(refused(StatusCode::BAD_REQUEST, "This link is not valid."));
    };
    let mut audit = c.app.audit_record(
        &viewer.caller,
        format!("console-{}", uuid::Uuid::now_v7()),
        "deeplink.open",
        claims.sub.clone(),
        None,
    );
    audit.evidence = Some(serde_json::json!({"jti": claims.jti}));
    if !c.app.store.use_deeplink(&claims.jti, &audit).await? {
        return Ok(refused(
            StatusCode::GONE,
            "This link was used already: each link opens its page once. Ask for a new one.",
        ));
    }
    Ok(Redirect::to(&target.page(&id)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> DeeplinkKey {
        DeeplinkKey::derive(&SecretString::from(text.to_owned()))
    }

    #[test]
    fn a_link_opens_only_unaltered_unexpired_and_under_its_own_key() {
        let k = key("a test console key, 32+ characters, public");
        let id = uuid::Uuid::now_v7();
        let now = 1_800_000_000_000_000;
        let (token, claims) = k.mint(Target::Payout, id, None, now, 600).unwrap();
        assert_eq!(claims.exp - claims.iat, 600);
        assert_eq!(k.verify(&token, now + 599_000_000), Ok(claims.clone()));
        assert_eq!(
            k.verify(&token, now + 600_000_000),
            Err(LinkRefusal::Expired)
        );
        assert_eq!(
            key("another console key, 32+ characters, public").verify(&token, now),
            Err(LinkRefusal::Invalid)
        );
        // Any changed character in the claims breaks the signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut body = parts[1].clone().into_bytes();
        body[5] = if body[5] == b'A' { b'B' } else { b'A' };
        parts[1] = String::from_utf8(body).unwrap();
        assert_eq!(k.verify(&parts.join("."), now), Err(LinkRefusal::Invalid));
        // A longer life than 15 minutes is capped when minting.
        let (_, long) = k.mint(Target::Deal, id, None, now, 86_400).unwrap();
        assert_eq!(long.exp - long.iat, MAX_TTL_SECONDS);
    }

    #[test]
    fn only_a_link_path_resumes_after_sign_in() {
        assert!(resumable("/admin/open?link=eyJ0.eyJz.abc-_"));
        for bad in [
            "https://evil.example/",
            "/admin/open?link=",
            "/admin/open?link=a\r\nSet-Cookie:x",
            "//evil.example/admin/open?link=a",
            "/admin/payouts",
        ] {
            assert!(!resumable(bad), "{bad}");
        }
    }
}
