//! The pilot's Go/No-Go report and the exports.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiQuery;
use crate::api::auth::Caller;
use crate::domain::Role;
use crate::escrow::report::{GoNoGo, parse_instant};
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Period {
    /// RFC 3339 or YYYY-MM-DD (UTC midnight), inclusive.
    pub from: String,
    /// RFC 3339 or YYYY-MM-DD (UTC midnight), exclusive.
    pub to: String,
    /// `json` (default) or `markdown`.
    pub format: Option<String>,
    /// Judge one country's deals only (e.g. MN).
    pub country: Option<String>,
    /// Judge one category's deals only (e.g. REAL_ESTATE_SALE).
    pub category: Option<String>,
    /// Partners who answered the survey, and of them how many would use it again (both or
    /// neither; "> 70% would use again" is a GO criterion).
    pub survey_respondents: Option<u64>,
    pub survey_would_use_again: Option<u64>,
}

fn period(p: &Period) -> ApiResult<(i64, i64)> {
    let at = |field: &str, text: &str| {
        parse_instant(text).ok_or_else(|| {
            ApiError::invalid(
                "invalid_field",
                field,
                format!("{field} must be RFC 3339 or YYYY-MM-DD"),
            )
        })
    };
    let (from, to) = (at("from", &p.from)?, at("to", &p.to)?);
    if from >= to {
        return Err(ApiError::invalid(
            "invalid_field",
            "to",
            "to must be after from",
        ));
    }
    Ok((from, to))
}

/// The pilot plan's Go/No-Go report over deals created in a period (Admin, Operator).
#[utoipa::path(get, tag = "escrow", path = "/v1/reports/go-no-go", params(Period), security(("bearer" = [])),
    responses((status = 200, body = GoNoGo), (status = 422, body = ErrorBody)))]
pub async fn go_no_go(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<Period>,
) -> ApiResult<Response> {
    caller.require(&[Role::Admin, Role::Operator])?;
    let (from, to) = period(&q)?;
    let survey =
        crate::escrow::report::Survey::from_counts(q.survey_respondents, q.survey_would_use_again)
            .map_err(|message| {
                if q.survey_respondents.is_some() && q.survey_would_use_again.is_some() {
                    ApiError::invalid("invalid_field", "survey_would_use_again", message)
                } else {
                    ApiError::invalid("missing_field", "survey_respondents", message)
                }
            })?;
    let judging = crate::escrow::report::Judging {
        country: q.country.clone(),
        category: q.category.clone(),
        settle_target_days: state.escrow.settle_targets.as_ref().clone(),
        survey,
    };
    let report = crate::escrow::report::build(state.store.as_ref(), from, to, &judging).await?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(report).into_response()),
        Some("markdown") => Ok((
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            report.markdown(),
        )
            .into_response()),
        Some(_) => Err(ApiError::invalid(
            "invalid_field",
            "format",
            "format is json or markdown",
        )),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `jsonl` (default) or `csv`.
    pub format: Option<String>,
    /// RFC 3339; only what happened at or after it. Absent: from the start.
    pub from: Option<String>,
    /// RFC 3339; only what happened before it. Absent: up to now.
    pub to: Option<String>,
}

/// Streams an export (Admin): the body is written page by page as the store is read, never
/// built whole. A CSV field a spreadsheet would run as a formula is defused (`export`).
async fn export(
    state: &AppState,
    caller: &Caller,
    q: &ExportQuery,
    what: fn(
        crate::store::DynStore,
        crate::export::Format,
        crate::export::Range,
    ) -> crate::export::Chunks,
) -> ApiResult<Response> {
    caller.require(&[Role::Admin])?;
    let format = crate::export::Format::parse(q.format.as_deref().unwrap_or("jsonl"))
        .ok_or_else(|| ApiError::invalid("invalid_field", "format", "format is jsonl or csv"))?;
    let at = |field: &'static str, text: &Option<String>| {
        text.as_deref()
            .map(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .map(|d| d.timestamp_micros())
                    .map_err(|_| {
                        ApiError::invalid(
                            "invalid_field",
                            field,
                            format!("{field} must be RFC 3339"),
                        )
                    })
            })
            .transpose()
    };
    let range = crate::export::Range {
        from: at("from", &q.from)?,
        to: at("to", &q.to)?,
    };
    if let (Some(from), Some(to)) = (range.from, range.to)
        && from >= to
    {
        return Err(ApiError::invalid(
            "invalid_field",
            "to",
            "to must be after from",
        ));
    }
    let chunks = futures::StreamExt::map(what(state.store.clone(), format, range), |chunk| {
        chunk.map(axum::body::Bytes::from).map_err(|e| {
            // The status line is gone by now: the body ends short, and the log says why.
            tracing::error!(error = %e, "export stopped part way");
            e
        })
    });
    Ok((
        [(header::CONTENT_TYPE, format.content_type())],
        axum::body::Body::from_stream(chunks),
    )
        .into_response())
}

/// Every deal's timeline for audit, as JSON Lines or CSV (Admin), optionally within a time
/// range; streamed.
#[utoipa::path(get, tag = "escrow", path = "/v1/exports/timelines", params(ExportQuery), security(("bearer" = [])),
    responses((status = 200, description = "JSON Lines or CSV")))]
pub async fn export_timelines(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<Response> {
    export(&state, &caller, &q, crate::export::timelines).await
}

/// Every ledger posting for audit, as JSON Lines or CSV (Admin), optionally within a time
/// range; streamed.
#[utoipa::path(get, tag = "ledger", path = "/v1/exports/journal", params(ExportQuery), security(("bearer" = [])),
    responses((status = 200, description = "JSON Lines or CSV")))]
pub async fn export_journal(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<Response> {
    export(&state, &caller, &q, crate::export::journal).await
}
