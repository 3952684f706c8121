//! The console's pages. Each reads through the control API's own handlers, as the viewer, and
//! renders what they answer; forms post to `actions`.

use super::format::{countdown, group, money, time};
use super::{Console, Flash, Refusal, Viewer, page};
use crate::api::error::ApiError;
use crate::api::extract::ApiQuery;
use crate::domain::Role;
use axum::Json;
use axum::extract::{Path, Query, State};
use maud::{Markup, html};
use serde::Serialize;
use serde_json::Value;

const STAFF: &[Role] = &[Role::Admin, Role::Operator, Role::Approver];

/// What an API handler answered, as JSON, or why it refused.
pub(super) fn answer<T: Serialize>(r: Result<Json<T>, ApiError>) -> Result<Value, Refusal> {
    match r {
        Ok(Json(v)) => serde_json::to_value(v).map_err(|e| Refusal::Internal(e.to_string())),
        Err(e) => Err(refusal(e)),
    }
}

pub(super) fn refusal(e: ApiError) -> Refusal {
    match e.status().as_u16() {
        401 => Refusal::SignIn,
        403 => Refusal::Forbidden(e.to_string()),
        404 => Refusal::NotFound(e.to_string()),
        s if s >= 500 => Refusal::Internal(e.to_string()),
        _ => Refusal::Forbidden(e.to_string()),
    }
}

/// Typed query parameters of an API list, from the page's own query.
fn query<T: serde::de::DeserializeOwned>(v: Value) -> Result<ApiQuery<T>, Refusal> {
    serde_json::from_value(v)
        .map(ApiQuery)
        .map_err(|e| Refusal::Forbidden(format!("bad filter: {e}")))
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

fn items(v: &Value) -> &[Value] {
    v["items"].as_array().map(Vec::as_slice).unwrap_or_default()
}

pub(super) async fn home(
    viewer: Viewer,
    State(c): State<Console>,
    Query(flash): Query<Flash>,
) -> Result<Markup, Refusal> {
    if viewer.caller.company.is_some() {
        return Ok(page(
            &viewer,
            "Console",
            &flash,
            html! {
                p { "Signed in as " strong { (viewer.caller.name) } " (" (viewer.caller.role.as_str()) ") for your company." }
                p { "Open the links sent to you (a deal, a payout awaiting approval): each opens its page here once." }
            },
        ));
    }
    viewer.require(STAFF)?;
    let nets =
        answer(crate::api::networks::list(State(c.app.clone()), viewer.caller.clone()).await)?;
    let body = html! {
        p { "Signed in as " strong { (viewer.caller.name) } " (" (viewer.caller.role.as_str()) ")." }
        table {
            thead { tr { th { "Network" } th { "Kind" } th { "Safe-mode" } th { "Rollout" } } }
            tbody {
                @for n in nets.as_array().map(Vec::as_slice).unwrap_or_default() {
                    tr {
                        td { (s(n, "name")) } td { (s(n, "kind")) }
                        td { @if n.get("safe_mode").is_some() { span.bad { "ON" } } @else { "off" } }
                        td { (s(&n["rollout"], "phase")) " (" (n["rollout"]["percent"]) "%)" }
                    }
                }
            }
        }
    };
    Ok(page(&viewer, "treasuryd console", &flash, body))
}

/// Open disputes, the nearest DISPUTE_TTL first, each with its live countdown.
pub(super) async fn disputes(
    viewer: Viewer,
    State(c): State<Console>,
    Query(flash): Query<Flash>,
) -> Result<Markup, Refusal> {
    viewer.require(&[Role::Operator, Role::Admin])?;
    let list =
        answer(crate::api::deals::disputes(State(c.app.clone()), viewer.caller.clone()).await)?;
    let body = html! {
        p.hint { "Most urgent first: sorted by the time left before DISPUTE_TTL." }
        table #disputes {
            thead { tr { th { "Deal" } th { "Scope" } th { "Reason" } th { "Time left" } th { "Held" } th { "Evidence" } } }
            tbody {
                @for d in items(&list) {
                    @let deal = &d["deal"];
                    @let locale = s(&deal["template"]["currency"], "locale");
                    tr data-remaining=(d["remaining_seconds"]) {
                        td { a href={ "/admin/deals/" (s(deal, "id")) } { (s(deal, "id")) } }
                        td { (s(&deal["template"], "id")) }
                        td { (s(&deal["issue"], "reason_code")) }
                        td.timer {
                            @if let Some(due) = d["due_at"].as_str() { (countdown(due)) }
                            @else { "escalated" }
                        }
                        td { (money(s(&deal["money"], "held"), s(deal, "asset"), locale)) }
                        td {
                            @for e in deal["evidence"].as_array().map(Vec::as_slice).unwrap_or_default() {
                                a href={ "/admin/deals/" (s(deal, "id")) "/evidence/" (s(e, "id")) } { (s(e, "type")) } " "
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&viewer, "Disputes", &flash, body))
}

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct DealFilter {
    state: Option<String>,
    country: Option<String>,
    category: Option<String>,
    template_version: Option<String>,
    notice: Option<String>,
    error: Option<String>,
}

pub(super) async fn deals(
    viewer: Viewer,
    State(c): State<Console>,
    Query(f): Query<DealFilter>,
) -> Result<Markup, Refusal> {
    viewer.require(STAFF)?;
    let nonempty = |v: &Option<String>| v.clone().filter(|x| !x.is_empty());
    let mut q = serde_json::Map::new();
    for (k, v) in [
        ("state", nonempty(&f.state)),
        ("country", nonempty(&f.country)),
        ("category", nonempty(&f.category)),
    ] {
        if let Some(v) = v {
            q.insert(k.into(), Value::String(v));
        }
    }
    if let Some(v) = nonempty(&f.template_version) {
        let n: u32 = v
            .parse()
            .map_err(|_| Refusal::Forbidden("template_version is a number".into()))?;
        q.insert("template_version".into(), n.into());
    }
    let list = answer(
        crate::api::deals::list(
            State(c.app.clone()),
            viewer.caller.clone(),
            query(Value::Object(q))?,
        )
        .await,
    )?;
    let flash = Flash {
        notice: f.notice.clone(),
        error: f.error.clone(),
    };
    let body = html! {
        form.filters method="get" action="/admin/deals" {
            label { "State" select name="state" {
                option value="" { "any" }
                @for st in ["CREATED", "FUNDED", "DELIVERED", "INSPECTION", "APPROVED", "ISSUE", "SETTLED"] {
                    option value=(st) selected[f.state.as_deref() == Some(st)] { (st) }
                }
            } }
            label { "Country" input name="country" value=(f.country.clone().unwrap_or_default()); }
            label { "Category" input name="category" value=(f.category.clone().unwrap_or_default()); }
            label { "Template version" input name="template_version" value=(f.template_version.clone().unwrap_or_default()); }
            button type="submit" { "Filter" }
        }
        table {
            thead { tr { th { "Deal" } th { "State" } th { "Template" } th { "Amount" } th { "Created" } } }
            tbody {
                @for d in items(&list) {
                    tr {
                        td { a href={ "/admin/deals/" (s(d, "id")) } { (s(d, "id")) } }
                        td { (s(d, "state")) }
                        td { (s(&d["template"], "id")) }
                        td { (money(s(&d["money"], "total"), s(d, "asset"), s(&d["template"]["currency"], "locale"))) }
                        td { (time(s(d, "created_at"))) }
                    }
                }
            }
        }
    };
    Ok(page(&viewer, "Deals", &flash, body))
}

/// One piece of a deal's evidence, downloaded in the viewer's console session (the API's
/// route wants a bearer token a browser does not send).
pub(super) async fn evidence(
    viewer: Viewer,
    State(c): State<Console>,
    Path((id, evidence)): Path<(String, String)>,
) -> Result<axum::response::Response, Refusal> {
    viewer.require_page(STAFF)?;
    crate::api::deals::download_evidence(
        State(c.app.clone()),
        viewer.caller.clone(),
        Path((id, evidence)),
    )
    .await
    .map_err(refusal)
}

/// One deal: state, timers with deadlines, money, evidence, timeline, and the resolution form
/// offering only the template's outcomes (Operators, while in ISSUE).
pub(super) async fn deal(
    viewer: Viewer,
    State(c): State<Console>,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Result<Markup, Refusal> {
    viewer.require_page(STAFF)?;
    let d = answer(
        crate::api::deals::get_one(
            State(c.app.clone()),
            viewer.caller.clone(),
            Path(id.clone()),
        )
        .await,
    )?;
    let timeline = answer(
        crate::api::deals::timeline(
            State(c.app.clone()),
            viewer.caller.clone(),
            Path(id.clone()),
        )
        .await,
    )?;
    let cur = &d["template"]["currency"];
    let locale = s(cur, "locale");
    let asset = s(&d, "asset");
    let m = &d["money"];
    let allowed: Vec<&str> = d["allowed_actions"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let issue = &d["issue"];
    let body = html! {
        dl.facts {
            dt { "State" } dd #deal-state { (s(&d, "state")) }
            dt { "Template" } dd { (s(&d["template"], "id")) " (prices shown to parties in " (s(cur, "code")) " " (s(cur, "symbol")) ", " (locale) ")" }
            dt { "Buyer" } dd { (s(&d, "buyer_account")) }
            dt { "Seller" } dd { (s(&d, "seller_account")) }
            dt { "Created" } dd { (time(s(&d, "created_at"))) }
        }
        h2 { "Timers" }
        table #timers {
            thead { tr { th { "Timer" } th { "State" } th { "Deadline" } } }
            tbody {
                @for t in d["timers"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    tr {
                        td { (s(t, "kind")) } td { (s(t, "state")) }
                        td { @if s(t, "state") == "pending" { (countdown(s(t, "due_at"))) } @else { (time(s(t, "due_at"))) } }
                    }
                }
            }
        }
        h2 { "Money" }
        table.money {
            @for (label, key) in [("Total", "total"), ("Immediate", "immediate"), ("Holdback", "holdback"), ("Released to the seller", "released"), ("Offset to the buyer", "offset"), ("Refunded", "refunded"), ("Still held", "held")] {
                tr { th { (label) } td { (money(s(m, key), asset, locale)) } }
            }
        }
        @if !issue.is_null() {
            h2 { "Dispute" }
            p { "Reason code " strong { (s(issue, "reason_code")) } ": " (s(issue, "detail")) " — raised " (time(s(issue, "raised_at"))) }
            p { "Offset cap for this reason code: " strong #offset-cap { (money(s(issue, "offset_cap"), asset, locale)) } }
            @if allowed.contains(&"resolve") && viewer.caller.role == Role::Operator {
                form #resolve method="post" action={ "/admin/deals/" (id) "/resolve" } data-confirm="Resolve this dispute? It settles the deal." {
                    (viewer.csrf_field())
                    label { "Outcome" select name="outcome" required {
                        @for o in issue["allowed_outcomes"].as_array().map(Vec::as_slice).unwrap_or_default() {
                            option value=(o.as_str().unwrap_or_default()) { (o.as_str().unwrap_or_default()) }
                        }
                    } }
                    label { "Offset to the buyer (OFFSET only, at most the cap)" input name="offset" inputmode="decimal"; }
                    label { "Reason (audited)" textarea name="reason" required {} }
                    button type="submit" { "Resolve" }
                }
            }
        }
        h2 { "Evidence" }
        ul { @for e in d["evidence"].as_array().map(Vec::as_slice).unwrap_or_default() {
            li { a href={ "/admin/deals/" (id) "/evidence/" (s(e, "id")) } { (s(e, "type")) } " " (s(e, "content_type")) " " (e["size"]) " bytes" }
        } }
        h2 { "Timeline" }
        table #timeline {
            thead { tr { th { "When" } th { "Event" } th { "By" } th { "Detail" } } }
            tbody { @for t in items(&timeline) { tr { td { (time(s(t, "at"))) } td { (s(t, "kind")) } td { (s(t, "actor")) } td { (s(t, "detail")) } } } }
        }
    };
    Ok(page(&viewer, &format!("Deal {id}"), &flash, body))
}

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct PayoutFilter {
    state: Option<String>,
    notice: Option<String>,
    error: Option<String>,
}

pub(super) async fn payouts(
    viewer: Viewer,
    State(c): State<Console>,
    Query(f): Query<PayoutFilter>,
) -> Result<Markup, Refusal> {
    viewer.require(STAFF)?;
    let state = f.state.clone().filter(|x| !x.is_empty());
    let q = match &state {
        Some(st) => serde_json::json!({"state": st, "limit": 200}),
        None => serde_json::json!({"limit": 200}),
    };
    let list = answer(
        crate::api::payouts::list(State(c.app.clone()), viewer.caller.clone(), query(q)?).await,
    )?;
    let flash = Flash {
        notice: f.notice.clone(),
        error: f.error.clone(),
    };
    let body = html! {
        p.tabs {
            @for st in ["", "pending_approval", "queued", "broadcast", "confirmed", "failed", "cancelled", "rejected"] {
                a href={ "/admin/payouts?state=" (st) } class=[(state.as_deref().unwrap_or("") == st).then_some("current")] {
                    @if st.is_empty() { "all" } @else { (st) }
                }
            }
        }
        table #payouts {
            thead { tr { th { "Payout" } th { "State" } th { "Network" } th { "Amount" } th { "Destination" } th { "By" } th { "Created" } } }
            tbody { @for p in items(&list) { tr {
                td { a href={ "/admin/payouts/" (s(p, "id")) } { (s(p, "id")) } }
                td { (s(p, "state")) } td { (s(p, "network")) }
                td { (money(s(p, "amount"), s(p, "asset"), "en")) }
                td { code { (s(p, "destination")) } }
                td { (s(p, "created_by")) } td { (time(s(p, "created_at"))) }
            } } }
        }
    };
    Ok(page(&viewer, "Payouts", &flash, body))
}

/// One payout: its chunks and every transaction, approve/reject (Approvers, never the
/// creator), cancel (Operators, Admins).
pub(super) async fn payout(
    viewer: Viewer,
    State(c): State<Console>,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Result<Markup, Refusal> {
    viewer.require_page(STAFF)?;
    let p = answer(
        crate::api::payouts::get_one(
            State(c.app.clone()),
            viewer.caller.clone(),
            Path(id.clone()),
        )
        .await,
    )?;
    let pending = s(&p, "state") == "pending_approval";
    let may_decide = pending
        && viewer.caller.role == Role::Approver
        && s(&p, "created_by") != viewer.caller.name;
    let may_cancel = matches!(s(&p, "state"), "queued" | "broadcast" | "pending_approval")
        && matches!(viewer.caller.role, Role::Operator | Role::Admin);
    let body = html! {
        dl.facts {
            dt { "State" } dd #payout-state { (s(&p, "state")) }
            dt { "Amount" } dd { (money(s(&p, "amount"), s(&p, "asset"), "en")) " on " (s(&p, "network")) }
            dt { "Destination" } dd { code { (s(&p, "destination")) } }
            dt { "Requested by" } dd { (s(&p, "created_by")) " " (time(s(&p, "created_at"))) }
        }
        @if pending && !may_decide && viewer.caller.role == Role::Approver {
            p.hint { "You requested this payout: another Approver must decide it." }
        }
        @if may_decide {
            div.actions {
                form #approve method="post" action={ "/admin/payouts/" (id) "/approve" } data-confirm="Approve this payout?" {
                    (viewer.csrf_field())
                    label { "Reason" input name="reason" value="checked"; }
                    button type="submit" { "Approve" }
                }
                form #reject method="post" action={ "/admin/payouts/" (id) "/reject" } data-confirm="Reject this payout? Its hold goes back." {
                    (viewer.csrf_field())
                    label { "Reason (required)" input name="reason" required; }
                    button.danger type="submit" { "Reject" }
                }
            }
        }
        @if may_cancel {
            form #cancel method="post" action={ "/admin/payouts/" (id) "/cancel" } data-confirm="Cancel what is not yet mined?" {
                (viewer.csrf_field())
                label { "Reason (required)" input name="reason" required; }
                button.danger type="submit" { "Cancel" }
            }
        }
        h2 { "Chunks" }
        @for ch in p["chunks"].as_array().map(Vec::as_slice).unwrap_or_default() {
            h3 { "Chunk " (ch["index"]) ": " (money(s(ch, "amount"), s(&p, "asset"), "en")) " — " (s(ch, "state")) }
            table.attempts {
                thead { tr { th { "Transaction" } th { "Kind" } th { "Nonce/seq" } th { "Fees" } th { "Signed" } th { "Broadcast" } } }
                tbody { @for a in ch["attempts"].as_array().map(Vec::as_slice).unwrap_or_default() { tr {
                    td { code { (s(a, "hash")) } } td { (s(a, "kind")) } td { (a["nonce"]) }
                    td { @if let Some(f) = a["fee_limit_sun"].as_str() { "fee limit " (group(f, "en")) " sun, expires " (time(s(a, "expires_at"))) }
                         @else { "max " (group(s(a, "max_fee_per_gas"), "en")) " wei/gas, tip " (group(s(a, "max_priority_fee_per_gas"), "en")) } }
                    td { (time(s(a, "signed_at"))) }
                    td { @if let Some(b) = a["broadcast_at"].as_str() { (time(b)) } @else { "not yet" } }
                } } }
            }
        }
        h2 { "Story" }
        table { tbody { @for e in p["events"].as_array().map(Vec::as_slice).unwrap_or_default() {
            tr { td { (time(s(e, "at"))) } td { (s(e, "kind")) } td { (s(e, "detail")) } }
        } } }
    };
    Ok(page(&viewer, &format!("Payout {id}"), &flash, body))
}

/// A wallet gauge's value, if the engine has set it.
fn wallet_gauge(
    c: &Console,
    name: &str,
    network: &str,
    wallet: &str,
    asset: Option<&str>,
) -> Option<f64> {
    let mut labels = vec![("network", network), ("wallet", wallet)];
    labels.extend(asset.map(|a| ("asset", a)));
    c.app.metrics.read_gauge(name, &labels)
}

/// Per network: safe-mode and freeze switches with a reason, rollout phase, hot and canary
/// wallets with balances, buffers and runway, RPC health, and the canary button.
pub(super) async fn treasury(
    viewer: Viewer,
    State(c): State<Console>,
    Query(flash): Query<Flash>,
) -> Result<Markup, Refusal> {
    viewer.require(STAFF)?;
    let nets =
        answer(crate::api::networks::list(State(c.app.clone()), viewer.caller.clone()).await)?;
    let admin = viewer.caller.role == Role::Admin;
    let may_canary = matches!(viewer.caller.role, Role::Admin | Role::Operator);
    let mut sections = Vec::new();
    for n in nets.as_array().map(Vec::as_slice).unwrap_or_default() {
        let name = s(n, "name").to_owned();
        let runs = c.app.store.canary_runs(&name, 5).await?;
        let wallets: Vec<_> = c
            .app
            .wallets
            .iter()
            .filter(|w| w.network == name)
            .cloned()
            .collect();
        let safe = n.get("safe_mode").filter(|v| !v.is_null());
        let body = html! {
            section.network id={ "network-" (name) } {
                h2 { (name) " (" (s(n, "kind")) ")" }
                p { "Safe-mode: " @if let Some(sm) = safe { strong.bad.safe-mode { "ON" } " — " (s(sm, "reason")) " (" (s(sm, "actor")) ", " (time(s(sm, "since"))) ")" } @else { strong.safe-mode { "off" } } }
                @if admin {
                    form.safe-mode method="post" action={ "/admin/networks/" (name) "/safe-mode" } data-confirm="Change safe-mode on this network?" {
                        (viewer.csrf_field())
                        input type="hidden" name="enabled" value=(if safe.is_some() { "false" } else { "true" });
                        label { "Reason (audited)" input name="reason" required; }
                        button.danger type="submit" { @if safe.is_some() { "Leave safe-mode" } @else { "Enter safe-mode" } }
                    }
                }
                p { "Rollout phase: " strong { (s(&n["rollout"], "phase")) } " (" (n["rollout"]["percent"]) "% of the daily target)" }
                @if admin {
                    form.inline method="post" action={ "/admin/networks/" (name) "/rollout" } {
                        (viewer.csrf_field())
                        select name="phase" { @for ph in ["pilot", "canary", "full"] { option value=(ph) { (ph) } } }
                        input name="reason" placeholder="reason" required;
                        button type="submit" { "Set phase" }
                    }
                }
                h3 { "Tokens" }
                table { tbody { @for t in n["tokens"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    @let code = t.as_str().unwrap_or_default();
                    @let frozen = n["frozen"].as_array().is_some_and(|f| f.iter().any(|x| x["asset"] == code));
                    tr { td { (code) } td { @if frozen { span.bad { "frozen" } } @else { "sending" } }
                        td { @if admin {
                            form.inline method="post" action={ "/admin/networks/" (name) "/freezes" } {
                                (viewer.csrf_field())
                                input type="hidden" name="asset" value=(code);
                                input type="hidden" name="frozen" value=(if frozen { "false" } else { "true" });
                                input name="reason" placeholder="reason" required;
                                button type="submit" { @if frozen { "Unfreeze" } @else { "Freeze" } }
                            }
                        } }
                    }
                } } }
                h3 { "Wallets" }
                table { thead { tr { th { "Wallet" } th { "Role" } th { "Balances" } th { "Gas / energy" } th { "Runway (payouts)" } th { "Below buffer" } } }
                    tbody { @for w in &wallets {
                        @let g = |metric: &str, asset: Option<&str>| wallet_gauge(&c, metric, &name, &w.id, asset);
                        tr {
                            td { code { (w.id) } } td { (format!("{:?}", w.role).to_lowercase()) }
                            td { @for t in n["tokens"].as_array().map(Vec::as_slice).unwrap_or_default() {
                                @let code = t.as_str().unwrap_or_default();
                                @if let Some(v) = g("treasuryd_wallet_token_balance", Some(code)) { (code) " " (v) br; }
                            } }
                            td { @if let Some(v) = g("treasuryd_wallet_trx_balance", None) {
                                    "TRX " (v) " · energy " (g("treasuryd_wallet_energy_available", None).unwrap_or(0.0))
                                    " · bandwidth " (g("treasuryd_wallet_bandwidth_available", None).unwrap_or(0.0)) }
                                 @else if let Some(v) = g("treasuryd_wallet_native_balance_wei", None) { (v) " wei" } }
                            td { (g("treasuryd_wallet_runway_payouts", None).map(|v| v.to_string()).unwrap_or_else(|| "—".into())) }
                            td { @match g("treasuryd_wallet_below_gas_buffer", None) { Some(v) if v >= 1.0 => span.bad { "yes" }, Some(_) => "no", None => "—" } }
                        }
                    } }
                }
                h3 { "RPC endpoints" }
                p { @for i in 0..8usize {
                    @let e = i.to_string();
                    @let labels = [("endpoint", e.as_str()), ("network", name.as_str())];
                    @if let Some(up) = c.app.metrics.read_gauge("treasuryd_rpc_up", &labels) {
                        "#" (i) ": " @if up >= 1.0 { "up" } @else { span.bad { "down" } }
                        @if c.app.metrics.read_gauge("treasuryd_rpc_selected", &labels) == Some(1.0) { " (in use)" } " · "
                    }
                } }
                h3 { "Canary" }
                @if may_canary {
                    form.canary method="post" action={ "/admin/canary/" (name) } {
                        (viewer.csrf_field())
                        input name="reason" value="console canary" required;
                        button type="submit" { "Send a canary payout" }
                    }
                }
                table.canaries { tbody { @for r in &runs { tr {
                    td { (time(&crate::domain::micros_to_rfc3339(r.started_at))) }
                    td { @match r.result { Some(crate::operations::CanaryResult::Green) => span.good { "green" }, Some(crate::operations::CanaryResult::Red) => span.bad { "red" }, None => "running" } }
                    td { (r.reason.clone().unwrap_or_default()) }
                } } } }
            }
        };
        sections.push(body);
    }
    Ok(page(
        &viewer,
        "Treasury",
        &flash,
        html! { @for s in sections { (s) } },
    ))
}

/// Endpoints, the 15-minute success ratio, and the dead-letter list with replay buttons.
pub(super) async fn webhooks(
    viewer: Viewer,
    State(c): State<Console>,
    Query(flash): Query<Flash>,
) -> Result<Markup, Refusal> {
    viewer.require(&[Role::Admin])?;
    let list =
        answer(crate::api::webhooks::list(State(c.app.clone()), viewer.caller.clone()).await)?;
    let ratio = c.app.metrics.webhooks.success_ratio_15m.get();
    let mut dead = Vec::new();
    for e in items(&list) {
        let id = s(e, "id").to_owned();
        let d = answer(
            crate::api::webhooks::deliveries(
                State(c.app.clone()),
                viewer.caller.clone(),
                Path(id.clone()),
                query(serde_json::json!({"state": "dead"}))?,
            )
            .await,
        )?;
        dead.push((id, d));
    }
    let body = html! {
        p { "Delivery success over the last 15 minutes: " strong #success-ratio { (format!("{:.2}%", ratio * 100.0)) } " (SLO 99%; rollback below 98% with dead-letter growing)" }
        @for e in items(&list) {
            @let id = s(e, "id");
            section.endpoint {
                h2 { code { (s(e, "url")) } }
                p { @if e["active"].as_bool() == Some(true) { "active" } @else { span.bad { "off" } " — " (s(e, "disabled_reason")) } " · events: " (e["event_types"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()) }
                @let dl = dead.iter().find(|(i, _)| i == id).map(|(_, d)| d.clone()).unwrap_or(Value::Null);
                h3 { "Dead-lettered (" (items(&dl).len()) ")" }
                @if !items(&dl).is_empty() {
                    form.replay-all method="post" action={ "/admin/webhooks/" (id) "/replay" } {
                        (viewer.csrf_field())
                        input type="hidden" name="dead_lettered" value="true";
                        input name="reason" placeholder="reason" required;
                        button type="submit" { "Replay all dead-lettered" }
                    }
                }
                table.dead { thead { tr { th { "Event" } th { "Type" } th { "Attempts" } th { "Last error" } th {} } }
                    tbody { @for d in items(&dl) { tr {
                        td { code { (s(d, "event_id")) } } td { (s(d, "event_type")) } td { (d["attempts"]) }
                        td { (s(d, "last_error")) }
                        td { form.inline.replay method="post" action={ "/admin/webhooks/" (id) "/replay" } {
                            (viewer.csrf_field())
                            input type="hidden" name="event_id" value=(s(d, "event_id"));
                            input type="hidden" name="reason" value="replayed from the console";
                            button type="submit" { "Replay" }
                        } }
                    } } }
                }
            }
        }
    };
    Ok(page(&viewer, "Webhooks", &flash, body))
}

/// Pairs, sessions with cut-off countdowns, dry-run and close, partial/T+1 carry-forwards.
pub(super) async fn trust(
    viewer: Viewer,
    State(c): State<Console>,
    Query(flash): Query<Flash>,
) -> Result<Markup, Refusal> {
    viewer.require(STAFF)?;
    let pairs =
        answer(crate::api::trust::pairs(State(c.app.clone()), viewer.caller.clone()).await)?;
    let settled = answer(
        crate::api::trust::sessions(
            State(c.app.clone()),
            viewer.caller.clone(),
            query(serde_json::json!({"state": "settled", "limit": 50}))?,
        )
        .await,
    )?;
    let may_close = matches!(viewer.caller.role, Role::Admin | Role::Operator);
    let body = html! {
        table #pairs {
            thead { tr { th { "Pair" } th { "Mode" } th { "Cut-off" } th { "Open session" } th { "Gross A→B / B→A" } th {} } }
            tbody { @for p in items(&pairs) {
                @let sess = &p["open_session"];
                tr {
                    td { (s(p, "id")) } td { (s(p, "mode")) }
                    td { (s(p, "cutoff")) " " (s(p, "timezone")) }
                    td { @if sess.is_object() { (countdown(s(sess, "cutoff_at"))) } }
                    td { @if sess.is_object() { (money(s(sess, "gross_a_to_b"), s(p, "asset"), "en")) " / " (money(s(sess, "gross_b_to_a"), s(p, "asset"), "en")) } }
                    td { @if may_close && sess.is_object() {
                        form.inline.dry-run method="post" action={ "/admin/trust/sessions/" (s(sess, "id")) "/close" } {
                            (viewer.csrf_field())
                            input type="hidden" name="dry_run" value="true";
                            input type="hidden" name="reason" value="console dry run";
                            button type="submit" { "Dry run" }
                        }
                        form.inline.close method="post" action={ "/admin/trust/sessions/" (s(sess, "id")) "/close" } data-confirm="Close, net and settle this session now?" {
                            (viewer.csrf_field())
                            input name="reason" placeholder="reason" required;
                            button.danger type="submit" { "Close now" }
                        }
                    } }
                }
            } }
        }
        h2 { "Settled sessions" }
        table #settled {
            thead { tr { th { "Session" } th { "Outcome" } th { "Net" } th { "Settled" } th { "Carried to T+1" } th { "At" } } }
            tbody { @for x in items(&settled) { tr {
                td { (s(x, "id")) } td { (s(x, "outcome")) }
                td { (group(s(x, "net_amount"), "en")) } td { (group(s(x, "settled_amount"), "en")) }
                td { @if s(x, "carried_amount") != "0" && !s(x, "carried_amount").trim_start_matches(['0', '.']).is_empty() { span.bad { (group(s(x, "carried_amount"), "en")) } } @else { "—" } }
                td { @if let Some(at) = x["settled_at"].as_str() { (time(at)) } }
            } } }
        }
    };
    Ok(page(&viewer, "Trust pairs and EOD", &flash, body))
}

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct PilotPeriod {
    from: Option<String>,
    to: Option<String>,
}

/// The pilot's figures and the Go/No-Go report for a period, with its pass/fail lines.
pub(super) async fn pilot(
    viewer: Viewer,
    State(c): State<Console>,
    Query(p): Query<PilotPeriod>,
) -> Result<Markup, Refusal> {
    viewer.require(&[Role::Operator, Role::Admin])?;
    let today = chrono::DateTime::from_timestamp_micros(c.app.clock.now())
        .unwrap_or_default()
        .date_naive();
    let from = p
        .from
        .unwrap_or_else(|| (today - chrono::Days::new(14)).to_string());
    let to =
        p.to.unwrap_or_else(|| (today + chrono::Days::new(1)).to_string());
    let response = crate::api::reports::go_no_go(
        State(c.app.clone()),
        viewer.caller.clone(),
        query(serde_json::json!({"from": from, "to": to}))?,
    )
    .await
    .map_err(refusal)?;
    let bytes = axum::body::to_bytes(
        axum::response::IntoResponse::into_response(response).into_body(),
        1 << 20,
    )
    .await
    .map_err(|e| Refusal::Internal(e.to_string()))?;
    let report: Value =
        serde_json::from_slice(&bytes).map_err(|e| Refusal::Internal(e.to_string()))?;
    let body = html! {
        form.filters method="get" action="/admin/pilot" {
            label { "From" input type="date" name="from" value=(from); }
            label { "To" input type="date" name="to" value=(to); }
            button type="submit" { "Report" }
        }
        p #verdict { "Decision: " @if report["go"].as_bool() == Some(true) { strong.good { "GO" } } @else { strong.bad { "NO-GO" } }
            " · critical incidents (SEV0/SEV1): " (report["critical_incidents"]) }
        table #criteria {
            thead { tr { th { "Criterion" } th { "Target" } th { "Actual" } th { "Result" } } }
            tbody { @for cr in report["criteria"].as_array().map(Vec::as_slice).unwrap_or_default() { tr {
                td { (s(cr, "name")) } td { (s(cr, "target")) } td { (s(cr, "actual")) }
                td { @if cr["pass"].as_bool() == Some(true) { span.good { "pass" } } @else { span.bad { "fail" } } }
            } } }
        }
        h2 { "By scope" }
        table { thead { tr { th { "Scope" } th { "Figures" } } }
            tbody { @for sc in report["by_scope"].as_array().map(Vec::as_slice).unwrap_or_default() { tr {
                td { (s(sc, "country")) " × " (s(sc, "category")) " v" (sc["template_version"]) }
                td { pre { (serde_json::to_string_pretty(&sc["figures"]).unwrap_or_default()) } }
            } } }
        }
    };
    Ok(page(&viewer, "Pilot: Go / No-Go", &Flash::default(), body))
}
