//! Payout requests: accept (validate, apply policy, split, hold and store atomically), read the
//! whole story, list.

use super::accounts::{load_account, parse_amount};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, IdempotencyKey, RequestId};
use super::views::Page;
use super::{AppState, Mutation, optional_text, page_limit};
use crate::api::auth::Caller;
use crate::domain::{AccountId, AssetKey, PayoutId, Role, micros_to_rfc3339};
use crate::ledger::{Command, Effect, Operation};
use crate::payouts::{AttemptKind, ChunkState, Payout, PayoutState, close_unpaid};
use crate::store::{ConflictKind, PayoutFilter, StoreError};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Largest `metadata` object, serialised.
pub const MAX_METADATA_BYTES: usize = 4096;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayout {
    /// The partner account paying.
    pub account: String,
    pub network: String,
    pub asset: String,
    /// EIP-55 checksummed address.
    pub destination: String,
    /// Decimal string in token units.
    pub amount: String,
    pub reference: Option<String>,
    /// Free-form JSON object, echoed back, at most 4096 bytes.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// The answer to an accepted payout request. It is the same for every replay of the request.
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedPayout {
    pub id: String,
    /// `queued` or `pending_approval`.
    pub state: PayoutState,
    pub account: String,
    pub network: String,
    pub asset: String,
    pub destination: String,
    pub amount: String,
    /// Chunk amounts, in order: the payout split under the per-transaction cap.
    pub chunks: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    pub hold_id: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChunkView {
    pub index: u32,
    pub amount: String,
    pub state: ChunkState,
    /// Every signed transaction of the chunk, oldest first (absent in lists).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    /// `transfer` pays the chunk; `cancel` is a same-nonce self-transfer that cancels it.
    pub kind: AttemptKind,
    /// The transaction hash (`0x…` on EVM; the txID in plain hex on Tron).
    pub hash: String,
    /// The nonce on EVM; on Tron, the wallet's local signing sequence number.
    pub nonce: u64,
    /// EVM: wei per gas, as decimal strings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_fee_per_gas: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_priority_fee_per_gas: Option<String>,
    /// Tron: the most TRX (in sun) the transaction may burn for energy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fee_limit_sun: Option<String>,
    /// Tron: when a node stops accepting the transaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub signed_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broadcast_at: Option<String>,
    /// Present when the transaction pays several chunks at once (a `disperse` call of the
    /// network's batching contract): this chunk's 0-based place among its payments.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub batch_index: Option<u32>,
    /// With `batch_index`: how many payments the transaction carries.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub batch_size: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CancelView {
    pub reason: String,
    pub by: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub at: String,
    pub kind: String,
    pub detail: String,
}

/// A payout's whole story.
#[derive(Debug, Serialize, ToSchema)]
pub struct PayoutView {
    pub id: String,
    pub state: PayoutState,
    pub account: String,
    pub network: String,
    pub asset: String,
    pub destination: String,
    pub amount: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    pub hold_id: String,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    pub chunks: Vec<ChunkView>,
    /// Present once an Operator asked to cancel the payout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel: Option<CancelView>,
    /// Policy decisions and steps, oldest first (absent in lists).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventView>,
}

fn format(state: &AppState, asset: &AssetKey, units: i128) -> String {
    state
        .ledger
        .asset(asset)
        .map_or_else(|| units.to_string(), |s| s.format(units))
}

impl AcceptedPayout {
    /// The answer from the payout as it was just written in `posted`'s transaction.
    fn written(
        state: &AppState,
        p: &crate::domain::payouts::NewPayout,
        written: PayoutState,
        posted: &crate::ledger::Posted,
    ) -> Self {
        Self {
            id: p.id.to_string(),
            state: written,
            account: p.account.to_string(),
            network: p.asset.network.clone(),
            asset: p.asset.code.clone(),
            destination: p.destination.clone(),
            amount: format(state, &p.asset, p.amount),
            chunks: p
                .chunks
                .iter()
                .map(|c| format(state, &p.asset, *c))
                .collect(),
            reference: p.reference.clone(),
            metadata: p.metadata.clone(),
            hold_id: posted
                .hold
                .as_ref()
                .map_or_else(String::new, |h| h.id.to_string()),
            created_at: micros_to_rfc3339(posted.tx.created_at),
        }
    }

    fn new(state: &AppState, p: &Payout) -> Self {
        Self {
            id: p.id.to_string(),
            state: p.initial_state,
            account: p.account.to_string(),
            network: p.asset.network.clone(),
            asset: p.asset.code.clone(),
            destination: p.destination.clone(),
            amount: format(state, &p.asset, p.amount),
            chunks: p
                .chunks
                .iter()
                .map(|c| format(state, &p.asset, c.amount))
                .collect(),
            reference: p.reference.clone(),
            metadata: p.metadata.clone(),
            hold_id: p.hold.to_string(),
            created_at: micros_to_rfc3339(p.created_at),
        }
    }
}

impl AttemptView {
    fn new(kind: crate::payouts::networks::ChainKind, a: &crate::payouts::Attempt) -> Self {
        use crate::payouts::networks::ChainKind;
        let (hash, evm, tron) = match kind {
            ChainKind::Evm => (
                format!("0x{}", hex::encode(a.hash)),
                Some((
                    a.max_fee_per_gas.to_string(),
                    a.max_priority_fee_per_gas.to_string(),
                )),
                None,
            ),
            ChainKind::Tron => (
                hex::encode(a.hash),
                None,
                crate::chains::tron::tx::transfer_parts(&a.raw)
                    .map(|t| (t.fee_limit.to_string(), t.expiration * 1000)),
            ),
        };
        Self {
            kind: a.kind,
            hash,
            nonce: a.nonce,
            max_fee_per_gas: evm.as_ref().map(|e| e.0.clone()),
            max_priority_fee_per_gas: evm.map(|e| e.1),
            fee_limit_sun: tron.as_ref().map(|t| t.0.clone()),
            expires_at: tron.map(|t| micros_to_rfc3339(t.1)),
            signed_at: micros_to_rfc3339(a.created_at),
            broadcast_at: a.broadcast_at.map(micros_to_rfc3339),
            batch_index: a.batch.map(|b| b.index),
            batch_size: a.batch.map(|b| b.size),
        }
    }
}

impl PayoutView {
    fn new(state: &AppState, p: &Payout) -> Self {
        let kind = state
            .networks
            .get(&p.asset.network)
            .map_or(crate::payouts::networks::ChainKind::Evm, |n| n.kind);
        Self {
            id: p.id.to_string(),
            state: p.state,
            account: p.account.to_string(),
            network: p.asset.network.clone(),
            asset: p.asset.code.clone(),
            destination: p.destination.clone(),
            amount: format(state, &p.asset, p.amount),
            reference: p.reference.clone(),
            metadata: p.metadata.clone(),
            hold_id: p.hold.to_string(),
            created_by: p.created_by.clone(),
            created_at: micros_to_rfc3339(p.created_at),
            updated_at: micros_to_rfc3339(p.updated_at),
            chunks: p
                .chunks
                .iter()
                .map(|c| ChunkView {
                    index: c.index,
                    amount: format(state, &p.asset, c.amount),
                    state: c.state,
                    attempts: c
                        .attempts
                        .iter()
                        .map(|a| AttemptView::new(kind, a))
                        .collect(),
                })
                .collect(),
            cancel: p.cancel.as_ref().map(|c| CancelView {
                reason: c.reason.clone(),
                by: c.by.clone(),
            }),
            events: p
                .events
                .iter()
                .map(|e| EventView {
                    at: micros_to_rfc3339(e.at),
                    kind: e.kind.clone(),
                    detail: e.detail.clone(),
                })
                .collect(),
        }
    }
}

/// Request a payout (Trader). It is validated, split under the per-transaction cap, held in
/// the ledger and stored before `202` is answered.
#[utoipa::path(post, tag = "payouts", path = "/v1/payouts", request_body = CreatePayout, security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "unique per intended payout")),
    responses((status = 202, body = AcceptedPayout), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(body): ApiJson<CreatePayout>,
) -> ApiResult<(StatusCode, Json<AcceptedPayout>)> {
    caller.require(&[Role::Trader])?;
    let Prepared {
        command,
        company,
        payout,
    } = payout_command(
        &state,
        &caller,
        request_id,
        key,
        body,
        &mut AccountReads::One,
    )
    .await?;
    let posted = state.ledger.post_one(command).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(accepted(&state, company, &payout, posted).await?),
    ))
}

/// What a posted payout command answers: the accepted payout (read back by its hold), or the
/// refusal; a tier refusal first refreshes the company's headroom so on-call sees it at its
/// limit without waiting for the refresh.
async fn accepted(
    state: &AppState,
    company: Option<uuid::Uuid>,
    payout: &crate::domain::payouts::NewPayout,
    posted: Result<crate::ledger::Posted, crate::ledger::LedgerError>,
) -> ApiResult<AcceptedPayout> {
    let posted = match posted {
        Err(e @ crate::ledger::LedgerError::TierLimit(_)) => {
            if let Err(m) = state.refresh_tier_headroom(company).await {
                tracing::warn!(error = %m, "tier headroom not refreshed");
            }
            return Err(e.into());
        }
        other => other?,
    };
    let hold = posted.hold.as_ref().ok_or_else(|| {
        ApiError::Internal(StoreError::Invariant(
            "a payout hold returned no hold".into(),
        ))
    })?;
    match posted.payout_state.filter(|_| !posted.replayed) {
        Some(written) => Ok(AcceptedPayout::written(state, payout, written, &posted)),
        None => {
            let stored = state.store.payout_for_hold(hold.id).await?;
            Ok(AcceptedPayout::new(state, &stored))
        }
    }
}

/// A payout request ready to post, with the payout it writes (to answer from).
struct Prepared {
    command: crate::ledger::Command,
    company: Option<uuid::Uuid>,
    payout: crate::domain::payouts::NewPayout,
}

/// Most payouts one batch request may carry.
pub const MAX_BATCH: usize = 500;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    /// This payout's own idempotency key (1-255 visible ASCII characters): a replay of the
    /// batch, or of this payout alone through `POST /v1/payouts`, answers it again.
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    pub idempotency_key: String,
    /// As in `POST /v1/payouts`.
    pub account: String,
    pub network: String,
    pub asset: String,
    pub destination: String,
    pub amount: String,
    pub reference: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

impl BatchItem {
    fn payout(self) -> CreatePayout {
        CreatePayout {
            account: self.account,
            network: self.network,
            asset: self.asset,
            destination: self.destination,
            amount: self.amount,
            reference: self.reference,
            metadata: self.metadata,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    #[schema(min_items = 1, max_items = 500)]
    pub payouts: Vec<BatchItem>,
}

/// One payout's answer in a batch: `status` 202 with the payout, or the refusal it would have
/// had alone.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult {
    pub idempotency_key: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payout: Option<AcceptedPayout>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<super::error::ErrorDetail>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAnswer {
    /// In the order of the request.
    pub results: Vec<BatchResult>,
}

/// Request up to 500 payouts at once (Trader), as payroll-style partners submit. Each is judged
/// as `POST /v1/payouts` would judge it alone, with its own idempotency key; all that pass are
/// held and stored in one database transaction before the answer, and each answers for itself
/// (all-or-nothing is not promised).
#[utoipa::path(post, tag = "payouts", path = "/v1/payouts/batch", request_body = CreateBatch, security(("bearer" = [])),
    responses((status = 200, body = BatchAnswer), (status = 422, body = ErrorBody)))]
pub async fn create_batch(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<CreateBatch>,
) -> ApiResult<Json<BatchAnswer>> {
    caller.require(&[Role::Trader])?;
    if body.payouts.is_empty() || body.payouts.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "invalid_field",
            "payouts",
            format!("payouts must hold 1 to {MAX_BATCH} payouts"),
        ));
    }
    // Every payout checked alone; those that pass are posted together. Each paying account
    // (and its allowlist) is read once for the whole request.
    let (mut slots, mut commands, mut written) = (Vec::new(), Vec::new(), Vec::new());
    let mut reads = AccountReads::Many(Default::default());
    for item in body.payouts {
        let key = item.idempotency_key.clone();
        let prepared = match super::extract::check_idempotency_key(&key) {
            Ok(()) => {
                payout_command(
                    &state,
                    &caller,
                    request_id.clone(),
                    key.clone(),
                    item.payout(),
                    &mut reads,
                )
                .await
            }
            Err(e) => Err(e),
        };
        slots.push((
            key,
            prepared.map(|p| {
                commands.push(p.command);
                written.push((p.company, p.payout));
                commands.len() - 1
            }),
        ));
    }
    let mut posted: Vec<_> = state
        .ledger
        .post(commands)
        .await?
        .into_iter()
        .map(Some)
        .collect();
    let mut results = Vec::with_capacity(slots.len());
    for (key, slot) in slots {
        let answer = match slot {
            Ok(i) => match posted.get_mut(i).and_then(Option::take) {
                Some(result) => accepted(&state, written[i].0, &written[i].1, result).await,
                None => Err(ApiError::Internal(StoreError::Invariant(
                    "the batch answered fewer results than it posted".into(),
                ))),
            },
            Err(e) => Err(e),
        };
        results.push(match answer {
            Ok(payout) => BatchResult {
                idempotency_key: key,
                status: StatusCode::ACCEPTED.as_u16(),
                payout: Some(payout),
                error: None,
            },
            Err(e) => BatchResult {
                idempotency_key: key,
                status: e.status().as_u16(),
                payout: None,
                error: Some(e.detail()),
            },
        });
    }
    Ok(Json(BatchAnswer { results }))
}

/// A payout request checked and made into its ledger command (the hold, with the payout as its
/// effect, the tier quota and the caller's audit record): everything short of posting it.
/// How a request reads its paying accounts: a single payout reads its account and the
/// allowlist's word on its destination in one query; a batch reads each paying account and its
/// whole allowlist once for all its payouts.
enum AccountReads {
    One,
    Many(std::collections::HashMap<String, (crate::ledger::Account, crate::store::Allowlist)>),
}

impl AccountReads {
    /// The account named by `text`, and whether it may pay `destination` (when valid) on
    /// `network`.
    async fn paying(
        &mut self,
        state: &AppState,
        caller: &Caller,
        text: &str,
        network: &str,
        destination: Option<&str>,
    ) -> ApiResult<(crate::ledger::Account, bool)> {
        match (self, destination) {
            (AccountReads::One, Some(d)) => {
                super::accounts::load_paying_account(state, caller, text, network, d).await
            }
            (AccountReads::One, None) => Ok((
                load_account(state, caller, text, Some("account")).await?,
                true,
            )),
            (AccountReads::Many(read), destination) => {
                if !read.contains_key(text) {
                    let account = load_account(state, caller, text, Some("account")).await?;
                    let allowlist = state.store.allowlist(account.id).await?;
                    read.insert(text.to_owned(), (account, allowlist));
                }
                let (account, allowlist) = read.get(text).ok_or_else(|| {
                    ApiError::Internal(StoreError::Invariant("an account read vanished".into()))
                })?;
                let allowed = destination.is_none_or(|d| allowlist.allows(network, d));
                Ok((account.clone(), allowed))
            }
        }
    }
}

async fn payout_command(
    state: &AppState,
    caller: &Caller,
    request_id: String,
    key: String,
    body: CreatePayout,
    reads: &mut AccountReads,
) -> ApiResult<Prepared> {
    let network = state.networks.get(&body.network).ok_or_else(|| {
        ApiError::invalid(
            "unknown_network",
            "network",
            format!("network {:?} is not configured for payouts", body.network),
        )
    })?;
    let token = network.tokens.get(&body.asset).ok_or_else(|| {
        ApiError::invalid(
            "unknown_asset",
            "asset",
            format!("asset {:?} is not paid out on {}", body.asset, network.name),
        )
    })?;
    let destination = crate::payouts::networks::canonical_address(network.kind, &body.destination)
        .map_err(|message| {
            ApiError::invalid(
                "invalid_address",
                "destination",
                format!("destination {message}"),
            )
        });
    let (account, allowed) = reads
        .paying(
            state,
            caller,
            &body.account,
            &network.name,
            destination.as_deref().ok(),
        )
        .await?;
    if account.asset != token.spec.key {
        return Err(ApiError::invalid(
            "asset_mismatch",
            "account",
            format!(
                "account holds {}, the payout is in {}",
                account.asset, token.spec.key
            ),
        ));
    }
    if !account.kind.holds_customer_funds() {
        return Err(ApiError::invalid(
            "wrong_account_kind",
            "account",
            "account must be a partner or operating account",
        ));
    }
    let checksummed = destination?;
    if !allowed {
        return Err(ApiError::invalid(
            "destination_not_allowed",
            "destination",
            format!(
                "destination {checksummed} is not on the allowlist of account {} for {}",
                account.id, network.name
            ),
        ));
    }
    let amount = parse_amount(state, &token.spec.key, "amount", &body.amount)?;
    if let Some(min) = token.min_payout.filter(|min| amount.units() < *min) {
        return Err(ApiError::invalid(
            "amount_below_minimum",
            "amount",
            format!(
                "amount is below the smallest payout of {} on {}",
                token.spec.format(min),
                network.name
            ),
        ));
    }
    let reference = optional_text("reference", body.reference, 128)?;
    if let Some(m) = &body.metadata
        && (!m.is_object() || m.to_string().len() > MAX_METADATA_BYTES)
    {
        return Err(ApiError::invalid(
            "invalid_field",
            "metadata",
            format!("metadata must be a JSON object of at most {MAX_METADATA_BYTES} bytes"),
        ));
    }

    let destination = checksummed;
    let (id, mut cmd) = crate::payouts::request_command(
        token,
        crate::payouts::PayoutRequest {
            account: account.id,
            destination: &destination,
            amount,
            created_by: &caller.name,
            reference,
            metadata: body.metadata.clone(),
            company: account.company,
            cap: state.networks.cap(token),
        },
    );
    // Everything the caller sent is part of the request hash, so a replay must match it all.
    cmd.context = Some(serde_json::json!({
        "payout": {"destination": destination, "metadata": body.metadata}
    }));
    cmd.quota = state
        .tier_quota(account.company, &token.spec, amount.units())
        .await?;
    let m = Mutation {
        caller,
        request_id,
        idempotency_key: key,
        action: "payout.create",
        target: format!("payout:{id}"),
        reason: None,
    };
    let payout = cmd.effects.iter().find_map(|e| match e {
        crate::ledger::Effect::NewPayout(p) => Some(p.as_ref().clone()),
        _ => None,
    });
    Ok(Prepared {
        command: state.on_behalf(m, cmd),
        company: account.company,
        payout: payout.ok_or_else(|| {
            ApiError::Internal(StoreError::Invariant(
                "a payout command without its payout".into(),
            ))
        })?,
    })
}

/// One payout: state, chunks and every decision and step.
#[utoipa::path(get, tag = "payouts", path = "/v1/payouts/{id}", security(("bearer" = [])),
    responses((status = 200, body = PayoutView), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<PayoutView>> {
    Ok(Json(PayoutView::new(
        &state,
        &load_payout(&state, &caller, &id).await?,
    )))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListPayouts {
    pub state: Option<PayoutState>,
    pub account: Option<String>,
    pub network: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// Payouts, oldest first, with filters.
#[utoipa::path(get, tag = "payouts", path = "/v1/payouts", params(ListPayouts), security(("bearer" = [])),
    responses((status = 200, body = Page<PayoutView>), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListPayouts>,
) -> ApiResult<Json<Page<PayoutView>>> {
    let limit = page_limit(q.limit)?;
    let account = q
        .account
        .map(|a| {
            AccountId::parse(&a).ok_or_else(|| {
                ApiError::invalid(
                    "invalid_field",
                    "account",
                    "account must be an account id (UUID)",
                )
            })
        })
        .transpose()?;
    let after = q
        .cursor
        .map(|c| {
            PayoutId::parse(&c).ok_or_else(|| {
                ApiError::invalid("invalid_cursor", "cursor", "cursor is not one we issued")
            })
        })
        .transpose()?;
    let payouts = state
        .store
        .list_payouts(&PayoutFilter {
            state: q.state,
            account,
            company: caller.company,
            network: q.network,
            after,
            limit,
        })
        .await?;
    let next_cursor = (payouts.len() as i64 == limit)
        .then(|| payouts.last().map(|p| p.id.to_string()))
        .flatten();
    Ok(Json(Page {
        items: payouts.iter().map(|p| PayoutView::new(&state, p)).collect(),
        next_cursor,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Why; required to reject.
    pub reason: Option<String>,
}

/// The payout `id` if `caller` may see it: another company's answers exactly as a missing one.
pub(super) async fn load_payout(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Payout> {
    let not_found = || ApiError::NotFound {
        what: "payout",
        id: id.to_owned(),
        field: None,
    };
    let payout_id = PayoutId::parse(id).ok_or_else(not_found)?;
    let payout = match state.store.get_payout(payout_id).await {
        Ok(p) => p,
        Err(StoreError::NotFound) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    if !state.sees_account(caller, payout.account).await? {
        return Err(not_found());
    }
    Ok(payout)
}

fn not_pending(p: &Payout) -> ApiError {
    ApiError::Conflict {
        code: "invalid_state",
        field: None,
        message: format!(
            "payout {} is {}, not pending_approval",
            p.id,
            p.state.as_str()
        ),
    }
}

/// Approve a payout waiting for four eyes (Approver; never its creator).
#[utoipa::path(post, tag = "payouts", path = "/v1/payouts/{id}/approve", request_body = Decision, security(("bearer" = [])),
    responses((status = 200, body = PayoutView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Decision>,
) -> ApiResult<Json<PayoutView>> {
    caller.require(&[Role::Approver])?;
    let reason = optional_text("reason", body.reason, 500)?;
    let payout = load_payout(&state, &caller, &id).await?;
    if payout.created_by == caller.name {
        return Err(ApiError::Forbidden("approver other than the creator"));
    }
    if payout.state != PayoutState::PendingApproval {
        return Err(not_pending(&payout));
    }
    let audit = state.audit_record(
        &caller,
        request_id,
        "payout.approve",
        format!("payout:{}", payout.id),
        reason,
    );
    match state
        .store
        .approve_payout(payout.id, &caller.name, &audit)
        .await
    {
        Ok(()) => {}
        Err(StoreError::Conflict(ConflictKind::StateChanged, _)) => {
            return Err(not_pending(&load_payout(&state, &caller, &id).await?));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Json(PayoutView::new(
        &state,
        &load_payout(&state, &caller, &id).await?,
    )))
}

/// Reject a payout waiting for four eyes (Approver): its hold goes back to the account.
#[utoipa::path(post, tag = "payouts", path = "/v1/payouts/{id}/reject", request_body = Decision, security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "unique per intended rejection")),
    responses((status = 200, body = PayoutView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn reject(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    IdempotencyKey(key): IdempotencyKey,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Decision>,
) -> ApiResult<Json<PayoutView>> {
    caller.require(&[Role::Approver])?;
    let reason = super::require_reason(body.reason.as_deref().unwrap_or(""))?;
    let payout = load_payout(&state, &caller, &id).await?;
    if payout.state != PayoutState::PendingApproval && payout.state != PayoutState::Rejected {
        return Err(not_pending(&payout));
    }
    let mut cmd = Command::new(
        "",
        payout.asset.clone(),
        Operation::Void { hold: payout.hold },
    );
    cmd.effects.push(Effect::PayoutClosed {
        payout: payout.id,
        from: vec![PayoutState::PendingApproval],
        state: PayoutState::Rejected,
        detail: format!("rejected by {}: {reason}", caller.name),
    });
    let m = Mutation {
        caller: &caller,
        request_id,
        idempotency_key: key,
        action: "payout.reject",
        target: format!("payout:{}", payout.id),
        reason: Some(reason),
    };
    match state.post_alone(m, cmd).await {
        Ok(posted) if !posted.replayed => {
            finished(&state, &payout.asset.network, PayoutState::Rejected);
        }
        Ok(_) => {}
        Err(ApiError::Conflict {
            code: "conflict", ..
        }) => {
            return Err(not_pending(&load_payout(&state, &caller, &id).await?));
        }
        Err(e) => return Err(e),
    }
    Ok(Json(PayoutView::new(
        &state,
        &load_payout(&state, &caller, &id).await?,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequestBody {
    /// Why; required.
    pub reason: String,
}

fn not_cancellable(p: &Payout, why: &str) -> ApiError {
    ApiError::Conflict {
        code: "not_cancellable",
        field: None,
        message: format!("payout {} is {}: {why}", p.id, p.state.as_str()),
    }
}

/// Cancel a payout (Operator or Admin, reason required). What was never signed is cancelled at
/// once and its amount goes back to the account. A chunk signed or broadcast but not mined is
/// replaced on chain by a zero-value self-transfer with the same nonce and higher fees;
/// whichever of the two is mined decides that chunk, so a transfer already on its way may
/// still pay. Mined chunks are not touched. Repeating a cancel answers the payout as it is.
#[utoipa::path(post, tag = "payouts", path = "/v1/payouts/{id}/cancel", request_body = CancelRequestBody, security(("bearer" = [])),
    responses((status = 200, body = PayoutView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CancelRequestBody>,
) -> ApiResult<Json<PayoutView>> {
    caller.require(&[Role::Operator, Role::Admin])?;
    let reason = super::require_reason(&body.reason)?;
    let payout = load_payout(&state, &caller, &id).await?;
    if payout.cancel.is_some() || payout.state == PayoutState::Cancelled {
        return Ok(Json(PayoutView::new(&state, &payout)));
    }
    let network = payout.asset.network.clone();
    let audit = state.audit_record(
        &caller,
        request_id.clone(),
        "payout.cancel",
        format!("payout:{}", payout.id),
        Some(reason.clone()),
    );
    if matches!(
        payout.state,
        PayoutState::PendingApproval | PayoutState::Queued
    ) {
        // Nothing signed yet: void the hold and end the payout in one database transaction,
        // unless the engine signed a chunk in the meantime (then the payout is broadcast).
        let mut cmd = Command::new(
            "",
            payout.asset.clone(),
            Operation::Void { hold: payout.hold },
        );
        cmd.effects.push(Effect::PayoutClosed {
            payout: payout.id,
            from: vec![PayoutState::PendingApproval, PayoutState::Queued],
            state: PayoutState::Cancelled,
            detail: format!(
                "cancelled by {} before anything was signed: {reason}",
                caller.name
            ),
        });
        let m = Mutation {
            caller: &caller,
            request_id: request_id.clone(),
            idempotency_key: format!("payout:{}:cancel", payout.id),
            action: "payout.cancel",
            target: format!("payout:{}", payout.id),
            reason: Some(reason.clone()),
        };
        match state.post_alone(m, cmd).await {
            Ok(posted) => {
                if !posted.replayed {
                    finished(&state, &network, PayoutState::Cancelled);
                }
                return Ok(Json(PayoutView::new(
                    &state,
                    &load_payout(&state, &caller, &id).await?,
                )));
            }
            Err(ApiError::Conflict {
                code: "conflict", ..
            }) => {}
            Err(e) => return Err(e),
        }
    }
    let payout = load_payout(&state, &caller, &id).await?;
    match state.store.request_cancel(payout.id, &audit).await {
        Ok(()) => {}
        Err(StoreError::Conflict(ConflictKind::StateChanged, _)) => {
            let current = load_payout(&state, &caller, &id).await?;
            if current.cancel.is_some() || current.state == PayoutState::Cancelled {
                return Ok(Json(PayoutView::new(&state, &current)));
            }
            return Err(not_cancellable(
                &current,
                "it is final, or every chunk is already mined",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    // Queued chunks were the only ones left: the payout can close now.
    if let Some(closed) = close_unpaid(&state.ledger, state.store.as_ref(), payout.id).await? {
        finished(&state, &network, closed.state);
    }
    Ok(Json(PayoutView::new(
        &state,
        &load_payout(&state, &caller, &id).await?,
    )))
}

fn finished(state: &AppState, network: &str, outcome: PayoutState) {
    state
        .metrics
        .payouts
        .finished_total
        .with_label_values(&[network, outcome.as_str()])
        .inc();
}
