//! Signing in: an API token, then for Admins, Approvers and Operators a TOTP code (enrolled on first
//! sign-in, with one-time recovery codes); sessions as `Secure`, `HttpOnly`, `SameSite=Strict`
//! cookies of which only the hash is stored.

use super::totp;
use super::{COOKIE, Console, MfaEnrolment, Pending, Refusal, SessionRecord, bare, needs_mfa};
use crate::api::auth::random_bytes;
use crate::api::error::ApiError;
use crate::api::extract::SourceAddr;
use crate::domain::Role;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

const LOGIN_COOKIE: &str = "treasuryd_login";
const RECOVERY_CODES: usize = 8;

pub(super) fn session_hash(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

fn token() -> String {
    hex::encode(random_bytes::<32>())
}

pub(super) fn set_cookie(name: &str, value: &str, path: &str, max_age: u64) -> HeaderValue {
    let text = format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The sign-in form, with its own CSRF pair (a cookie and the same value in the form).
pub(super) async fn login_form(State(c): State<Console>) -> Response {
    let nonce = token();
    let mfa_note = if c.key.is_none() {
        Some(
            "Second factor unavailable: the console key (console.secret_env) is not set, so Admins, Approvers and Operators cannot sign in.",
        )
    } else {
        None
    };
    let body = html! {
        form method="post" action="/admin/login" {
            input type="hidden" name="login_csrf" value=(nonce);
            label { "API token" input type="password" name="token" autocomplete="off" required; }
            button type="submit" { "Sign in" }
        }
        p.hint { "Sign in with your API token. Admins, Approvers and Operators then enter a code from their authenticator app." }
        @if let Some(n) = mfa_note { p.error { (n) } }
    };
    let mut res = bare("Sign in", body).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &nonce, "/admin/login", 600),
    );
    res
}

fn login_refused(why: &str) -> Response {
    (
        axum::http::StatusCode::UNAUTHORIZED,
        bare(
            "Sign in",
            html! {
                p.error role="alert" { (why) }
                p { a href="/admin/login" { "Try again" } }
            },
        ),
    )
        .into_response()
}

pub(super) async fn login(
    State(c): State<Console>,
    SourceAddr(source): SourceAddr,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let sent = form
        .get("login_csrf")
        .map(String::as_str)
        .unwrap_or_default();
    if sent.is_empty() || super::cookie(&headers, LOGIN_COOKIE) != Some(sent) {
        return Refusal::Csrf.into_response();
    }
    let token = form.get("token").map(|t| t.trim()).unwrap_or_default();
    let (caller, digest) = match c.app.authenticate_from(source, token) {
        Ok(found) => found,
        Err(ApiError::TooManyAttempts(wait)) => return Refusal::TooMany(wait).into_response(),
        Err(_) => return login_refused("That token is not known."),
    };
    // A company's users (any role) come for the pages their deeplinks open.
    if caller.role == Role::Trader && caller.company.is_none() {
        return login_refused(
            "The console is for treasury, approvers and operators; traders use the API.",
        );
    }
    // A company's policy may ask a second factor of all its users.
    let company_policy = match caller.company {
        Some(id) => match c.app.store.companies().await {
            Ok(all) => all.iter().any(|co| co.id == id && co.second_factor),
            Err(e) => return Refusal::from(e).into_response(),
        },
        None => false,
    };
    let needs_mfa = needs_mfa(caller.role) || company_policy;
    if needs_mfa && c.key.is_none() {
        return login_refused(
            "Admins, Approvers and Operators need a second factor, and the console key is not set (console.secret_env).",
        );
    }
    let value = token_string();
    let now = c.app.clock.now();
    let ttl = i64::try_from(c.session_ttl.as_micros()).unwrap_or(i64::MAX);
    let session = SessionRecord {
        id_hash: session_hash(&value),
        user: caller.name.clone(),
        role: caller.role,
        csrf: self::token(),
        mfa_ok: !needs_mfa,
        created_at: now,
        expires_at: now.saturating_add(ttl),
        company: caller.company,
        token_sha256: digest.to_vec(),
    };
    if let Err(e) = c.app.store.put_console_session(&session).await {
        return Refusal::from(e).into_response();
    }
    let mut res = if session.mfa_ok {
        signed_in(&headers)
    } else {
        match c.app.store.console_mfa(&caller.name).await {
            Ok(Some(m)) if m.confirmed_at.is_some() => Redirect::to("/admin/2fa").into_response(),
            Ok(_) => Redirect::to("/admin/2fa/enrol").into_response(),
            Err(e) => return Refusal::from(e).into_response(),
        }
    };
    let h = res.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(COOKIE, &value, "/", c.session_ttl.as_secs()),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, "", "/admin/login", 0),
    );
    res
}

/// Where a user who just completed sign-in goes: back to the deeplink that sent them to sign
/// in (its cookie is then cleared), or home.
fn signed_in(headers: &HeaderMap) -> Response {
    let next = super::cookie(headers, super::deeplink::NEXT_COOKIE)
        .filter(|n| super::deeplink::resumable(n))
        .unwrap_or("/admin");
    let mut res = Redirect::to(next).into_response();
    if next != "/admin" {
        res.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(super::deeplink::NEXT_COOKIE, "", "/admin", 0),
        );
    }
    res
}

fn token_string() -> String {
    token()
}

pub(super) async fn logout(
    State(c): State<Console>,
    Pending(s): Pending,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = super::check_csrf(&s, &form) {
        return refused.into_response();
    }
    if let Err(e) = c
        .app
        .store
        .delete_console_session(&s.id_hash, c.app.clock.now())
        .await
    {
        return Refusal::from(e).into_response();
    }
    let mut res = Redirect::to("/admin/login").into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(COOKIE, "", "/", 0));
    res
}

fn secret_of(c: &Console, m: &MfaEnrolment) -> Result<[u8; 20], Refusal> {
    let key = c.key.as_ref().ok_or_else(|| {
        Refusal::Forbidden("The console key is not set (console.secret_env).".into())
    })?;
    Ok(totp::derive_secret(key, &m.user, &m.enrolment))
}

/// Enrolment: the secret to add to an authenticator app, and a first code to confirm it.
pub(super) async fn enrol_form(
    State(c): State<Console>,
    Pending(s): Pending,
) -> Result<Response, Refusal> {
    if s.mfa_ok {
        return Ok(Redirect::to("/admin").into_response());
    }
    let store = &c.app.store;
    let m = match store.console_mfa(&s.user).await? {
        Some(m) if m.confirmed_at.is_some() => {
            return Ok(Redirect::to("/admin/2fa").into_response());
        }
        Some(m) => m,
        None => {
            let m = MfaEnrolment {
                user: s.user.clone(),
                enrolment: token(),
                confirmed_at: None,
                last_step: 0,
                recovery_codes: Vec::new(),
            };
            store.put_console_mfa(&m).await?;
            m
        }
    };
    let secret = secret_of(&c, &m)?;
    let body = html! {
        p { "Add this account to your authenticator app (TOTP, SHA-1, 6 digits, 30 s), then enter the code it shows." }
        p { "Secret: " code #totp-secret { (totp::base32(&secret)) } }
        p.hint { "Or open: " code { (totp::provisioning_uri("treasuryd", &s.user, &secret)) } }
        form method="post" action="/admin/2fa/enrol" {
            input type="hidden" name="csrf" value=(s.csrf);
            label { "Code" input type="text" name="code" inputmode="numeric" autocomplete="one-time-code" required; }
            button type="submit" { "Confirm" }
        }
    };
    Ok(bare("Set up your second factor", body).into_response())
}

/// Checks `code` against `m` (each time step once).
async fn accept_code(c: &Console, m: &MfaEnrolment, code: &str) -> Result<bool, Refusal> {
    let secret = secret_of(c, m)?;
    // The authenticator app's wall clock, not the daemon's `Clock`: codes follow real time
    // whatever a test or the demo did to the daemon's.
    let now = chrono::Utc::now().timestamp();
    let Some(step) = totp::matching_step(&secret, code, now) else {
        return Ok(false);
    };
    Ok(c.app.store.advance_totp_step(&m.user, step).await?)
}

/// Judges a second-factor attempt of session `s` only while its source and its user have
/// wrong codes left (429 otherwise); a wrong one counts against both and against the
/// session, which is locked (ended, audited) at its `TOTP_TRIES_PER_SESSION`th.
async fn guarded(
    c: &Console,
    s: &SessionRecord,
    source: Option<std::net::IpAddr>,
    attempt: impl std::future::Future<Output = Result<bool, Refusal>>,
) -> Result<bool, Refusal> {
    let throttles = &c.app.throttles;
    let now = c.app.clock.now();
    let metrics = &c.app.metrics.http;
    let source_wait = source.and_then(|ip| throttles.totp_source.check(&ip, now).err());
    if let Some(wait) = source_wait.or(throttles.totp_user.check(&s.user, now).err()) {
        metrics
            .auth_throttled_total
            .with_label_values(&["totp"])
            .inc();
        return Err(Refusal::TooMany(wait));
    }
    if attempt.await? {
        return Ok(true);
    }
    metrics
        .auth_failures_total
        .with_label_values(&["totp"])
        .inc();
    if let Some(ip) = source {
        throttles.totp_source.fail(ip, now);
    }
    throttles.totp_user.fail(s.user.clone(), now);
    if throttles.totp_session.fail(s.id_hash, now) >= crate::api::throttle::TOTP_TRIES_PER_SESSION {
        let audit = crate::store::AuditRecord {
            actor: s.user.clone(),
            role: s.role,
            action: "console.session_locked".into(),
            target: format!("user:{}", s.user),
            reason: Some(format!(
                "{} wrong second-factor codes in one session",
                crate::api::throttle::TOTP_TRIES_PER_SESSION
            )),
            request_id: format!("console-{}", uuid::Uuid::now_v7()),
            at: now,
            evidence: source.map(|ip| serde_json::json!({"source": ip.to_string()})),
        };
        c.app.store.lock_console_session(&s.id_hash, &audit).await?;
        return Err(Refusal::Forbidden(
            "Too many wrong codes: this sign-in is locked. Sign in again with your token.".into(),
        ));
    }
    Ok(false)
}

/// Completes sign-in under a new session id (and CSRF token): whoever learnt the half-way
/// session's cookie holds nothing once the second factor is passed. Returns the new cookie.
async fn finish(c: &Console, s: &SessionRecord) -> Result<HeaderValue, Refusal> {
    let value = token_string();
    let done = SessionRecord {
        id_hash: session_hash(&value),
        csrf: self::token(),
        mfa_ok: true,
        ..s.clone()
    };
    let store = &c.app.store;
    store.put_console_session(&done).await?;
    store
        .delete_console_session(&s.id_hash, c.app.clock.now())
        .await?;
    let left = (s.expires_at - c.app.clock.now()).max(0) / 1_000_000;
    Ok(set_cookie(
        COOKIE,
        &value,
        "/",
        u64::try_from(left).unwrap_or(0),
    ))
}

pub(super) async fn enrol(
    State(c): State<Console>,
    SourceAddr(source): SourceAddr,
    headers: HeaderMap,
    Pending(s): Pending,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, Refusal> {
    super::check_csrf(&s, &form)?;
    let store = &c.app.store;
    let Some(m) = store.console_mfa(&s.user).await? else {
        return Ok(Redirect::to("/admin/2fa/enrol").into_response());
    };
    if m.confirmed_at.is_some() {
        return Ok(Redirect::to("/admin/2fa").into_response());
    }
    let code = form.get("code").map(String::as_str).unwrap_or_default();
    if !guarded(&c, &s, source, accept_code(&c, &m, code)).await? {
        return Ok((
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            bare("Set up your second factor", html! {
                p.error role="alert" { "That code is not right (or was used already). Check the app's clock and try the next one." }
                p { a href="/admin/2fa/enrol" { "Back" } }
            }),
        )
            .into_response());
    }
    let codes: Vec<String> = (0..RECOVERY_CODES)
        .map(|_| totp::base32(&random_bytes::<10>()))
        .collect();
    let confirmed = MfaEnrolment {
        confirmed_at: Some(c.app.clock.now()),
        recovery_codes: codes
            .iter()
            .map(|c| hex::encode(Sha256::digest(c.as_bytes())))
            .collect(),
        last_step: store
            .console_mfa(&s.user)
            .await?
            .map_or(m.last_step, |x| x.last_step),
        ..m
    };
    store.put_console_mfa(&confirmed).await?;
    let cookie = finish(&c, &s).await?;
    let mut res = bare("Second factor set", html! {
        p { "Keep these recovery codes somewhere safe. Each signs you in once without the app; they are not shown again." }
        ul #recovery-codes { @for code in &codes { li { code { (code) } } } }
        p { a href=(super::cookie(&headers, super::deeplink::NEXT_COOKIE)
            .filter(|n| super::deeplink::resumable(n))
            .unwrap_or("/admin")) { "Continue to the console" } }
    })
    .into_response();
    res.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(res)
}

pub(super) async fn second_factor_form(Pending(s): Pending) -> Response {
    if s.mfa_ok {
        return Redirect::to("/admin").into_response();
    }
    bare(
        "Second factor",
        html! {
            form method="post" action="/admin/2fa" {
                input type="hidden" name="csrf" value=(s.csrf);
                label { "Code from your authenticator app, or a recovery code"
                    input type="text" name="code" autocomplete="one-time-code" required; }
                button type="submit" { "Verify" }
            }
        },
    )
    .into_response()
}

pub(super) async fn second_factor(
    State(c): State<Console>,
    SourceAddr(source): SourceAddr,
    headers: HeaderMap,
    Pending(s): Pending,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, Refusal> {
    super::check_csrf(&s, &form)?;
    let store = &c.app.store;
    let Some(m) = store
        .console_mfa(&s.user)
        .await?
        .filter(|m| m.confirmed_at.is_some())
    else {
        return Ok(Redirect::to("/admin/2fa/enrol").into_response());
    };
    let code = form.get("code").map(|c| c.trim()).unwrap_or_default();
    let attempt = async {
        if code.len() == totp::DIGITS as usize {
            accept_code(&c, &m, code).await
        } else {
            let hash = hex::encode(Sha256::digest(code.to_ascii_uppercase().as_bytes()));
            Ok(store.spend_recovery_code(&s.user, &hash).await?)
        }
    };
    let ok = guarded(&c, &s, source, attempt).await?;
    if !ok {
        return Ok((
            axum::http::StatusCode::UNAUTHORIZED,
            bare(
                "Second factor",
                html! {
                    p.error role="alert" { "That code is not right (or was used already)." }
                    p { a href="/admin/2fa" { "Try again" } }
                },
            ),
        )
            .into_response());
    }
    let cookie = finish(&c, &s).await?;
    let mut res = signed_in(&headers);
    res.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(res)
}
