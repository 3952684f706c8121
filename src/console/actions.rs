//! The console's forms. Each checks the session's CSRF token, then calls the control API's own
//! handler as the viewer (same checks, same audit row), and redirects back with what happened:
//! the API's refusal message is shown on the page.

use super::pages::refusal;
use super::{Console, Refusal, Viewer, back};
use crate::api::error::ApiError;
use crate::api::extract::{ApiJson, ApiQuery, IdempotencyKey, RequestId};
use axum::Form;
use axum::Json;
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::HashMap;

type Fields = HashMap<String, String>;

fn request_id() -> RequestId {
    RequestId(format!("console-{}", uuid::Uuid::now_v7()))
}

/// A request body for an API handler from form fields; an incomplete form goes back to `to`
/// with the reason.
fn body<T: serde::de::DeserializeOwned>(to: &str, v: Value) -> Result<T, Refusal> {
    serde_json::from_value(v).map_err(|e| Refusal::Back {
        to: to.to_owned(),
        error: format!("the form is incomplete: {e}"),
    })
}

/// Query parameters for an API handler, built here (never from the viewer's input).
fn query<T: serde::de::DeserializeOwned>(v: Value) -> Result<ApiQuery<T>, Refusal> {
    serde_json::from_value(v)
        .map(ApiQuery)
        .map_err(|e| Refusal::Internal(e.to_string()))
}

fn field(f: &Fields, name: &str) -> Option<String> {
    f.get(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The audit reason as typed, empty when none: the API's own check names the missing field.
fn reason(f: &Fields) -> String {
    field(f, "reason").unwrap_or_default()
}

/// A yes/no form field: `true` is yes, anything else or nothing is no.
fn is_true(f: &Fields, name: &str) -> bool {
    f.get(name).map(String::as_str) == Some("true")
}

/// The outcome of an API call as a page notice, or the API's own message.
fn outcome<T>(
    r: Result<T, ApiError>,
    done: impl FnOnce(T) -> String,
) -> Result<Result<String, String>, Refusal> {
    match r {
        Ok(v) => Ok(Ok(done(v))),
        // A session the API does not know (it cannot happen: same identities) or our bug.
        Err(e) if e.status().is_server_error() => Err(refusal(e)),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// Resolves a dispute (Operator): the outcome select offers only the template's outcomes, and
/// the API refuses anything else, an offset over the cap included.
pub(super) async fn resolve(
    viewer: Viewer,
    State(c): State<Console>,
    Path(id): Path<String>,
    Form(f): Form<Fields>,
) -> Result<Response, Refusal> {
    viewer.check_csrf(&f)?;
    viewer.require(&[crate::domain::Role::Operator])?;
    let to = format!("/admin/deals/{id}");
    let mut b = json!({"outcome": field(&f, "outcome"), "reason": field(&f, "reason")});
    if let Some(offset) = field(&f, "offset") {
        b["offset"] = Value::String(offset);
    }
    let b = body(&to, b)?;
    let r = crate::api::deals::resolve(
        State(c.app.clone()),
        viewer.caller.clone(),
        request_id(),
        Path(id.clone()),
        Some(ApiJson(b)),
    )
    .await;
    Ok(back(
        &to,
        outcome(r, |_| "Resolved: the deal is settled.".into())?,
    ))
}

/// Approve, reject (Approvers, never their own) or cancel (Operators, Admins) a payout.
pub(super) async fn payout_decision(
    viewer: Viewer,
    State(c): State<Console>,
    Path((id, decision)): Path<(String, String)>,
    Form(f): Form<Fields>,
) -> Result<Response, Refusal> {
    viewer.check_csrf(&f)?;
    let to = format!("/admin/payouts/{id}");
    let app = c.app.clone();
    let reason = field(&f, "reason");
    let r = match decision.as_str() {
        "approve" => {
            let b = body(&to, json!({"reason": reason}))?;
            outcome(
                crate::api::payouts::approve(
                    State(app),
                    viewer.caller.clone(),
                    request_id(),
                    Path(id.clone()),
                    ApiJson(b),
                )
                .await,
                |_| "Approved: the payout is queued.".into(),
            )?
        }
        "reject" => {
            let b = body(&to, json!({"reason": reason}))?;
            let key = IdempotencyKey(format!("console-reject-{id}"));
            outcome(
                crate::api::payouts::reject(
                    State(app),
                    viewer.caller.clone(),
                    request_id(),
                    key,
                    Path(id.clone()),
                    ApiJson(b),
                )
                .await,
                |_| "Rejected: the hold went back.".into(),
            )?
        }
        "cancel" => {
            let b = body(&to, json!({"reason": reason.unwrap_or_default()}))?;
            outcome(
                crate::api::payouts::cancel(
                    State(app),
                    viewer.caller.clone(),
                    request_id(),
                    Path(id.clone()),
                    ApiJson(b),
                )
                .await,
                |_| "Cancel recorded.".into(),
            )?
        }
        other => return Err(Refusal::NotFound(format!("no payout action {other}"))),
    };
    Ok(back(&to, r))
}

pub(super) async fn safe_mode(
    viewer: Viewer,
    State(c): State<Console>,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Result<Response, Refusal> {
    viewer.check_csrf(&f)?;
    let enabled = is_true(&f, "enabled");
    let b = body(
        "/admin/treasury",
        json!({"enabled": enabled, "reason": reason(&f)}),
    )?;
    let r = crate::api::networks::set_safe_mode(
        State(c.app.clone()),
        viewer.caller.clone(),
        request_id(),
        Path(name.clone()),
        ApiJson(b),
    )
    .await;
    let done = if enabled {
        format!("{name} is in safe-mode: payouts queue, nothing is broadcast.")
    } else {
        format!("{name} left safe-mode: queued payouts go out.")
    };
    Ok(back("/admin/treasury", outcome(r, |_| done)?))
}

pub(super) async fn freeze(
    viewer: Viewer,
    State(c): State<Console>,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Result<Response, Refusal> {
    viewer.check_csrf(&f)?;
    let frozen = is_true(&f, "frozen");
    let b = body(
        "/admin/treasury",
        json!({"asset": field(&f, "asset"), "frozen": frozen, "reason": reason(&f)}),
    )?;
    let r = crate::api::networks::set_freeze(
        State(c.app.clone()),
        viewer.caller.clone(),
        request_id(),
        Path(name),
        ApiJson(b),
    )
    .await;
    Ok(back(
        "/admin/treasury",
        outcome(r, |_| if frozen { "Frozen." } else { "Unfrozen." }.into())?,
    ))
}

pub(super) async fn rollout(
    viewer: Viewer,
    State(c): State<Console>,
    Path(name): Path<String>,
    Form(f): Form<Fields>,
) -> Result<Response, Refusal> {
    viewer.check_csrf(&f)?;
    let b = body(
        "/admin/treasury",
        json!({"phase": field(&f, "phase"), "reason": reason(&f)}),
    )?;
    let r = crate::api::networks::set_rollout(
        State(c.app.clone()),
        viewer.caller.clone(),
        request_id(),
        Path(name),
        ApiJson(b),
    )
    .await;
    Ok(back(
        "/admin/treasury",
        outcome(r, |_| "Rollout phase set.".into())?,
    ))
}

pub(super) async fn canary(
    viewer: Viewer,
    State(c): State<Console>,
    Path(network): Path<String>,
    Form(f): Form<Fields>,
) -> Result<Response, Refusal> {
    viewer.check_csrf(&f)?;
    let b = body("/admin/treasury", json!({"reason": reason(&f)}))?;
    let q = query(json!({"wait_seconds": 20}))?;
    let r = crate::api::operations::run_canary(
        State(c.app.clone()),
        viewer.caller.clone(),
        request_id(),
        Path(network.clone()),
        q,
        ApiJson(b),
    )
    .await;
    let said = outcome(r, |(_, Json(run))| match run.result {
        Some(result) => format!(
            "Canary on {network}: {} ({})",
            result.as_str(),
            run.reason.unwrap_or_default()
        ),
        None => {
            format!("Canary on {network} still running; its result shows below when it has one.")
        }
    })?;
    Ok(back("/admin/treasury", said))
}

pub(super) async fn replay(
    viewer: Viewer,
    State(c): State<Console>,
    Path(id): Path<String>,
    Form(f): Form<Fields>,
) -> Result<Response, Refusal> {
    viewer.check_csrf(&f)?;
    let mut b = json!({"reason": reason(&f)});
    if let Some(event) = field(&f, "event_id") {
        b["event_id"] = Value::String(event);
    }
    if is_true(&f, "dead_lettered") {
        b["dead_lettered"] = Value::Bool(true);
    }
    let b = body("/admin/webhooks", b)?;
    let r = crate::api::webhooks::replay(
        State(c.app.clone()),
        viewer.caller.clone(),
        request_id(),
        Path(id),
        ApiJson(b),
    )
    .await;
    Ok(back(
        "/admin/webhooks",
        outcome(r, |_| "Queued for redelivery, in order.".into())?,
    ))
}

/// Closes a session now, or (`dry_run`) says what closing would settle and changes nothing.
pub(super) async fn close_session(
    viewer: Viewer,
    State(c): State<Console>,
    Path(id): Path<String>,
    Form(f): Form<Fields>,
) -> Result<Response, Refusal> {
    viewer.check_csrf(&f)?;
    let dry_run = is_true(&f, "dry_run");
    let q = query(json!({"dry_run": dry_run}))?;
    let b = body("/admin/trust", json!({"reason": reason(&f)}))?;
    let r = crate::api::trust::close(
        State(c.app.clone()),
        viewer.caller.clone(),
        request_id(),
        Path(id.clone()),
        q,
        ApiJson(b),
    )
    .await;
    let said = outcome(r, |Json(v)| {
        if !dry_run {
            return format!("Session {id} closed, netted and settling.");
        }
        format!(
            "Dry run of session {id} (nothing changed): net {} owed by {}, plan {}",
            v["net_amount"]
                .as_str()
                .or(v["preview"]["net_amount"].as_str())
                .unwrap_or("?"),
            v["debtor"]
                .as_str()
                .or(v["preview"]["debtor"].as_str())
                .unwrap_or("nobody"),
            v["plan"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v["plan"].to_string())
        )
    })?;
    Ok(back("/admin/trust", said))
}
