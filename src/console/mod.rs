//! The admin console at `/admin`: server-rendered pages for operators and treasury that call
//! exactly what the control API does (the same handlers, so the same checks and audit rows),
//! with a little script for countdowns, local times and confirmations. No external assets.
//!
//! Sign-in is with an API token (the same identities and roles); Admins, Approvers and
//! Operators then need a TOTP second factor (enrolment with recovery codes). A session is a random cookie —
//! `Secure`, `HttpOnly`, `SameSite=Strict`, scoped to `/admin`, expiring — of which the
//! database keeps only the SHA-256. Every form carries the session's CSRF token; a session ends
//! when its token leaves the configuration.
pub use crate::domain::console::{MfaEnrolment, SessionRecord};

mod actions;
mod auth;
pub mod deeplink;
mod format;
mod pages;
pub mod totp;

use crate::api::AppState;
use crate::api::auth::Caller;
use crate::domain::Role;
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use secrecy::SecretString;
use std::time::Duration;

/// The session cookie's name: `__Host-` makes the browser refuse it unless it is `Secure`,
/// for this host only and `Path=/`, so no sibling domain or path can plant or shadow it.
pub const COOKIE: &str = "__Host-treasuryd_session";

#[derive(Clone)]
pub struct Console {
    pub app: AppState,
    /// Derives TOTP secrets; without it Admins, Approvers and Operators cannot sign in.
    key: Option<SecretString>,
    session_ttl: Duration,
}

impl Console {
    pub fn new(app: AppState, key: Option<SecretString>, session_ttl: Duration) -> Self {
        Self {
            app,
            key,
            session_ttl,
        }
    }
}

/// Roles that need the second factor: every role that may sign in, but a company's traders
/// (who come only for the pages their deeplinks open, which show, never move, money).
pub fn needs_mfa(role: Role) -> bool {
    matches!(role, Role::Admin | Role::Approver | Role::Operator)
}

/// The signed-in viewer of a page.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub caller: Caller,
    pub session: SessionRecord,
}

/// Why a request is refused.
#[derive(Debug)]
pub enum Refusal {
    /// No (valid, complete) session: sign in first.
    SignIn,
    /// Signed in but the second factor is not done.
    SecondFactor,
    Forbidden(String),
    /// A form without the session's CSRF token.
    Csrf,
    NotFound(String),
    /// Too many wrong tokens or codes: wait this many seconds.
    TooMany(u64),
    Internal(String),
    /// A form that cannot become a request: back to the page with the reason.
    Back {
        to: String,
        error: String,
    },
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, title, text) = match self {
            Refusal::SignIn => return Redirect::to("/admin/login").into_response(),
            Refusal::SecondFactor => return Redirect::to("/admin/2fa").into_response(),
            Refusal::Back { to, error } => return back(&to, Err(error)),
            Refusal::Forbidden(why) => (StatusCode::FORBIDDEN, "Not allowed", why),
            Refusal::Csrf => (
                StatusCode::FORBIDDEN,
                "Form refused",
                "The form did not carry this session's token (CSRF). Reload the page and try again.".into(),
            ),
            Refusal::NotFound(what) => (StatusCode::NOT_FOUND, "Not found", what),
            Refusal::TooMany(seconds) => {
                let page = bare(
                    "Too many attempts",
                    html! { p.error role="alert" { "Too many wrong attempts from here or for this user. Try again in " (seconds) " s." } },
                );
                let mut res = (StatusCode::TOO_MANY_REQUESTS, page).into_response();
                res.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
                return res;
            }
            Refusal::Internal(why) => {
                tracing::error!(error = %why, "console page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something failed",
                    "The page could not be built; the log has the details.".into(),
                )
            }
        };
        (status, bare(title, html! { p.error { (text) } })).into_response()
    }
}

impl From<crate::store::StoreError> for Refusal {
    fn from(e: crate::store::StoreError) -> Self {
        Refusal::Internal(e.to_string())
    }
}

impl Viewer {
    fn of(session: SessionRecord) -> Self {
        Self {
            caller: Caller {
                name: session.user.clone(),
                role: session.role,
                company: session.company,
            },
            session,
        }
    }

    pub fn require(&self, roles: &[Role]) -> Result<(), Refusal> {
        if roles.contains(&self.caller.role) {
            Ok(())
        } else {
            Err(Refusal::Forbidden(format!(
                "This needs the role {}; you are signed in as {} ({}).",
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
                self.caller.name,
                self.caller.role.as_str()
            )))
        }
    }

    /// For the pages a company's users may open too (`COMPANY_PAGES`, checked when the viewer
    /// was admitted): staff need one of `roles`; a company's users any role, as the API
    /// handlers behind the page show them only their company's objects.
    pub fn require_page(&self, roles: &[Role]) -> Result<(), Refusal> {
        if self.caller.company.is_some() {
            Ok(())
        } else {
            self.require(roles)
        }
    }

    /// Refuses a form that does not echo the session's CSRF token.
    pub fn check_csrf(
        &self,
        form: &std::collections::HashMap<String, String>,
    ) -> Result<(), Refusal> {
        check_csrf(&self.session, form)
    }

    /// The hidden CSRF field of a form.
    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.session.csrf); }
    }
}

/// Refuses a form that does not echo `session`'s CSRF token (compared in constant time).
pub fn check_csrf(
    session: &SessionRecord,
    form: &std::collections::HashMap<String, String>,
) -> Result<(), Refusal> {
    let sent = form.get("csrf").map(String::as_bytes).unwrap_or_default();
    let expected = session.csrf.as_bytes();
    let same = sent.len() == expected.len()
        && sent
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same { Ok(()) } else { Err(Refusal::Csrf) }
}

/// The value of cookie `name` in the request.
fn cookie<'a>(headers: &'a header::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The stored session of the request's cookie, if it is current.
async fn current_session(
    parts: &Parts,
    console: &Console,
) -> Result<Option<SessionRecord>, Refusal> {
    let Some(value) = cookie(&parts.headers, COOKIE) else {
        return Ok(None);
    };
    let hash = auth::session_hash(value);
    let Some(s) = console.app.store.console_session(&hash).await? else {
        return Ok(None);
    };
    if s.expires_at <= console.app.clock.now() {
        return Ok(None);
    }
    // The session lives only as long as the very token it signed in with: removed from the
    // configuration (SIGHUP), or given to someone else, it ends the session.
    if console.app.auth.caller_of(&s.token_sha256) != Some(Viewer::of(s.clone()).caller) {
        return Ok(None);
    }
    Ok(Some(s))
}

/// A session that has passed sign-in but perhaps not the second factor.
pub struct Pending(pub SessionRecord);

impl FromRequestParts<Console> for Pending {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Refusal> {
        current_session(parts, console)
            .await?
            .map(Pending)
            .ok_or(Refusal::SignIn)
    }
}

impl FromRequestParts<Console> for Viewer {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Refusal> {
        let s = current_session(parts, console)
            .await?
            .ok_or(Refusal::SignIn)?;
        if !s.mfa_ok {
            return Err(Refusal::SecondFactor);
        }
        let viewer = Viewer::of(s);
        if viewer.caller.company.is_some() {
            let route = parts
                .extensions
                .get::<axum::extract::MatchedPath>()
                .map_or("", |p| p.as_str());
            if !COMPANY_PAGES.contains(&(parts.method.as_str(), route)) {
                return Err(Refusal::Forbidden(
                    "A company's users see here only the pages their links open.".into(),
                ));
            }
        }
        Ok(viewer)
    }
}

/// What a company's user may open in the console: the pages deeplinks lead to, each showing
/// only the company's own objects (the API handlers behind them scope by company), and the
/// approval of a payout awaiting it.
const COMPANY_PAGES: &[(&str, &str)] = &[
    ("GET", "/admin"),
    ("GET", "/admin/deals/{id}"),
    ("GET", "/admin/deals/{id}/evidence/{evidence}"),
    ("GET", "/admin/payouts/{id}"),
    ("POST", "/admin/payouts/{id}/{decision}"),
];

const STYLE: &str = include_str!("console.css");
const SCRIPT: &str = include_str!("console.js");

/// A page without navigation (sign-in, errors).
fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · treasuryd" }
                link rel="stylesheet" href="/admin/static/console.css";
            }
            body {
                main.narrow { h1 { (title) } (body) }
                script src="/admin/static/console.js" {}
            }
        }
    }
}

/// A page with the navigation of the signed-in viewer; `notice`/`error` from a form's redirect.
fn page(viewer: &Viewer, title: &str, flash: &Flash, body: Markup) -> Markup {
    let links: [(&str, &str, &[Role]); 8] = [
        (
            "/admin/disputes",
            "Disputes",
            &[Role::Operator, Role::Admin],
        ),
        (
            "/admin/deals",
            "Deals",
            &[Role::Operator, Role::Admin, Role::Approver],
        ),
        (
            "/admin/payouts",
            "Payouts",
            &[Role::Operator, Role::Admin, Role::Approver],
        ),
        (
            "/admin/treasury",
            "Treasury",
            &[Role::Operator, Role::Admin, Role::Approver],
        ),
        ("/admin/webhooks", "Webhooks", &[Role::Admin]),
        (
            "/admin/trust",
            "Trust / EOD",
            &[Role::Operator, Role::Admin, Role::Approver],
        ),
        ("/admin/pilot", "Pilot", &[Role::Operator, Role::Admin]),
        (
            "/admin",
            "Home",
            &[Role::Operator, Role::Admin, Role::Approver],
        ),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · treasuryd" }
                link rel="stylesheet" href="/admin/static/console.css";
            }
            body {
                nav {
                    strong { "treasuryd" }
                    @for (href, label, roles) in links {
                        // A company's users have only the pages their links open, and home.
                        @if (roles.contains(&viewer.caller.role) && viewer.caller.company.is_none())
                            || (viewer.caller.company.is_some() && href == "/admin") { a href=(href) { (label) } }
                    }
                    span.who { (viewer.caller.name) " (" (viewer.caller.role.as_str()) ")" }
                    form.inline method="post" action="/admin/logout" {
                        (viewer.csrf_field())
                        button type="submit" { "Sign out" }
                    }
                }
                main {
                    h1 { (title) }
                    @if let Some(n) = &flash.notice { p.notice role="status" { (n) } }
                    @if let Some(e) = &flash.error { p.error role="alert" { (e) } }
                    (body)
                }
                script src="/admin/static/console.js" {}
            }
        }
    }
}

/// What a form's redirect says happened.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Flash {
    pub notice: Option<String>,
    pub error: Option<String>,
}

/// A redirect to `to` carrying a notice or an error for the page.
fn back(to: &str, outcome: Result<String, String>) -> Response {
    let (key, text) = match outcome {
        Ok(n) => ("notice", n),
        Err(e) => ("error", e),
    };
    let sep = if to.contains('?') { '&' } else { '?' };
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair(key, &text)
        .finish();
    Redirect::to(&format!("{to}{sep}{query}")).into_response()
}

async fn static_file(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "console.css" => (STYLE, "text/css; charset=utf-8"),
        "console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// Headers every console answer carries: no framing, no sniffing, nothing from elsewhere, no
/// caching of pages with money on them.
async fn hardening(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (name, value) in [
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        h.insert(name, header::HeaderValue::from_static(value));
    }
    res
}

/// The console's routes, under `/admin`.
pub fn router(console: Console) -> Router {
    Router::new()
        .route("/admin", get(pages::home))
        .route("/admin/static/{name}", get(static_file))
        .route("/admin/login", get(auth::login_form).post(auth::login))
        .route("/admin/logout", post(auth::logout))
        .route(
            "/admin/2fa",
            get(auth::second_factor_form).post(auth::second_factor),
        )
        .route("/admin/2fa/enrol", get(auth::enrol_form).post(auth::enrol))
        .route("/admin/open", get(deeplink::open))
        .route("/admin/disputes", get(pages::disputes))
        .route("/admin/deals", get(pages::deals))
        .route("/admin/deals/{id}", get(pages::deal))
        .route("/admin/deals/{id}/resolve", post(actions::resolve))
        .route(
            "/admin/deals/{id}/evidence/{evidence}",
            get(pages::evidence),
        )
        .route("/admin/payouts", get(pages::payouts))
        .route("/admin/payouts/{id}", get(pages::payout))
        .route(
            "/admin/payouts/{id}/{decision}",
            post(actions::payout_decision),
        )
        .route("/admin/treasury", get(pages::treasury))
        .route("/admin/networks/{name}/safe-mode", post(actions::safe_mode))
        .route("/admin/networks/{name}/freezes", post(actions::freeze))
        .route("/admin/networks/{name}/rollout", post(actions::rollout))
        .route("/admin/canary/{network}", post(actions::canary))
        .route("/admin/webhooks", get(pages::webhooks))
        .route("/admin/webhooks/{id}/replay", post(actions::replay))
        .route("/admin/trust", get(pages::trust))
        .route(
            "/admin/trust/sessions/{id}/close",
            post(actions::close_session),
        )
        .route("/admin/pilot", get(pages::pilot))
        .layer(axum::middleware::from_fn(hardening))
        .with_state(console)
}
