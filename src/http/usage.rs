//! Quotas and usage: `POST /v1/byok/quota/set/{id}` (scope `write`, `If-Match` and idempotency
//! like every credential mutation), `POST /v1/byok/usage/report` (scope `resolve` only: the
//! gateway's) and `GET /v1/byok/usage/{id}` (scope `read`). Money crosses the API as JSON numbers
//! of dollars and is whole micro-dollars inside (docs/usage.md). Declares its part of the OpenAPI
//! document.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use futures_util::future::LocalBoxFuture;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, OpenApi, PartialSchema, ToSchema};

use super::AppState;
use super::auth::{Authed, Read, Resolve, Write};
use super::byok::{ChangeErrors, ConditionalHeaders, IfMatch, config_response};
use super::error::{ApiError, AuthErrors, BodyErrors, ErrorCode, NotFound};
use super::idempotency::{KeyScope, idempotent};
use super::json::Json;
use crate::domain::usage::{
    self, MAX_CALLS, MAX_RECORDS, MoneyError, Outcome, Quota, QuotaExceeded, QuotaWindow, Refusal,
};
use crate::service::usage::{Reported, UsageInWindow};

pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::resource;
    cfg.service(resource("/v1/byok/quota/set/{id}").post(set_quota))
        .service(resource("/v1/byok/usage/report").post(report))
        .service(resource("/v1/byok/usage/{id}").get(get_usage));
}

/// The quota and usage operations and the schemas they use.
#[derive(OpenApi)]
#[openapi(paths(set_quota, report, get_usage), tags((name = "usage",
    description = "Quotas and usage: limits per credential, usage reports from gateways")))]
pub struct UsageApi;

/// Largest usage report body: 1,000 records with long request ids.
const MAX_REPORT_BODY: usize = 1024 * 1024;

/// A quota window: `1d`, `7d`, `30d` roll over whole hours; `mtd`, `ytd` are the UTC month and
/// year so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = QuotaWindow)]
pub enum QuotaWindowView {
    #[serde(rename = "1d")]
    Day1,
    #[serde(rename = "7d")]
    Day7,
    #[serde(rename = "30d")]
    Day30,
    #[serde(rename = "mtd")]
    Mtd,
    #[serde(rename = "ytd")]
    Ytd,
}

impl From<QuotaWindowView> for QuotaWindow {
    fn from(w: QuotaWindowView) -> Self {
        match w {
            QuotaWindowView::Day1 => Self::Day1,
            QuotaWindowView::Day7 => Self::Day7,
            QuotaWindowView::Day30 => Self::Day30,
            QuotaWindowView::Mtd => Self::Mtd,
            QuotaWindowView::Ytd => Self::Ytd,
        }
    }
}

impl From<QuotaWindow> for QuotaWindowView {
    fn from(w: QuotaWindow) -> Self {
        match w {
            QuotaWindow::Day1 => Self::Day1,
            QuotaWindow::Day7 => Self::Day7,
            QuotaWindow::Day30 => Self::Day30,
            QuotaWindow::Mtd => Self::Mtd,
            QuotaWindow::Ytd => Self::Ytd,
        }
    }
}

/// A credential's quota: at least one limit, over a window.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(as = Quota,
    example = json!({"spend_limit_usd": 250.0, "call_limit": 100000, "window": "mtd"}))]
pub struct QuotaView {
    /// Dollars (whole micro-dollars).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spend_limit_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_limit: Option<u64>,
    pub window: QuotaWindowView,
}

impl From<Quota> for QuotaView {
    fn from(q: Quota) -> Self {
        Self {
            spend_limit_usd: q.spend_limit_micros.map(usage::usd_from_micros),
            call_limit: q.call_limit,
            window: q.window.into(),
        }
    }
}

/// The last time the quota was found reached: resolve leaves the credential out until `until`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(as = QuotaExceeded)]
pub struct QuotaExceededView {
    pub window_start: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl From<QuotaExceeded> for QuotaExceededView {
    fn from(e: QuotaExceeded) -> Self {
        Self {
            window_start: e.window_start,
            until: e.until,
        }
    }
}

/// A field that is present deserialises to `Some`, even when it is `null` (`Some(None)`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<serde_json::Value>>, D::Error> {
    Option::<serde_json::Value>::deserialize(d).map(Some)
}

/// The quota to set: `window` and at least one limit; or `{"quota": null}` alone to remove the
/// quota. Setting a quota clears the credential's last exceedance and checks the new quota
/// against the usage recorded already. Its schema (`QuotaSet`: one variant to set, one to
/// remove) is written out below.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSetBody {
    pub spend_limit_usd: Option<serde_json::Number>,
    pub call_limit: Option<serde_json::Number>,
    pub window: Option<QuotaWindowView>,
    #[serde(default, deserialize_with = "present")]
    pub quota: Option<Option<serde_json::Value>>,
}

/// The variants of `QuotaSet`, by name: a spend limit (and perhaps a call limit), a call limit
/// alone, or the removal. Exactly one matches any valid body.
fn quota_set_variants() -> Vec<(&'static str, Schema)> {
    let spend = || {
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .description(Some(
                "Dollars, above 0, at most 1000000000, with at most 6 decimals \
                 (whole micro-dollars; more decimals are a 422).",
            ))
            .exclusive_minimum(Some(0.0))
            .maximum(Some(usage::MAX_USD as f64))
    };
    let calls = || {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .description(Some("Whole calls, 1 to 1000000000."))
            .minimum(Some(1.0))
            .maximum(Some(MAX_CALLS as f64))
    };
    let object = |title: &str, description: &str| {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .title(Some(title))
            .description(Some(description))
            .property("idempotency_key", super::schema::idempotency_key_field())
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
    };
    let window = || Ref::from_schema_name(QuotaWindowView::name());
    vec![
        (
            "QuotaSetSpend",
            object(
                "QuotaSetSpend",
                "A spend limit, and perhaps a call limit, over a window.",
            )
            .property("spend_limit_usd", spend())
            .property("call_limit", calls())
            .property("window", window())
            .required("spend_limit_usd")
            .required("window")
            .into(),
        ),
        (
            "QuotaSetCalls",
            object("QuotaSetCalls", "A call limit alone, over a window.")
                .property("call_limit", calls())
                .property("window", window())
                .required("call_limit")
                .required("window")
                .into(),
        ),
        (
            "QuotaRemove",
            object("QuotaRemove", "Removes the quota: `quota: null`, alone.")
                .property("quota", ObjectBuilder::new().schema_type(Type::Null))
                .required("quota")
                .into(),
        ),
    ]
}

impl PartialSchema for QuotaSetBody {
    fn schema() -> RefOr<Schema> {
        let mut one_of = OneOfBuilder::new().description(Some(
            "Set a quota (`window` and at least one limit), or remove it with `{\"quota\": null}`.",
        ));
        for (name, _) in quota_set_variants() {
            one_of = one_of.item(Ref::from_schema_name(name));
        }
        let example = json!({"spend_limit_usd": 250, "call_limit": 100000, "window": "mtd"});
        RefOr::T(one_of.examples([example]).into())
    }
}

impl ToSchema for QuotaSetBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "QuotaSet".into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        for (name, schema) in quota_set_variants() {
            schemas.push((name.into(), RefOr::T(schema)));
        }
        schemas.push((QuotaWindowView::name().into(), QuotaWindowView::schema()));
    }
}

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidParameter, message).with_param(param)
}

impl QuotaSetBody {
    fn into_quota(self) -> Result<Option<Quota>, ApiError> {
        if let Some(quota) = self.quota {
            if quota.is_some() {
                return Err(invalid(
                    "quota",
                    "send the quota's fields at the top level; `quota` is only ever null, to remove it",
                ));
            }
            if self.spend_limit_usd.is_some() || self.call_limit.is_some() || self.window.is_some()
            {
                return Err(invalid(
                    "quota",
                    "`quota: null` removes the quota and comes alone",
                ));
            }
            return Ok(None);
        }
        let window = self
            .window
            .ok_or_else(|| invalid("window", "window is one of 1d, 7d, 30d, mtd, ytd"))?;
        let spend = self
            .spend_limit_usd
            .map(|n| {
                usage::micros_from_usd(&n)
                    .map_err(|e| invalid("spend_limit_usd", format!("spend_limit_usd: {e}")))
            })
            .transpose()?;
        let calls = self
            .call_limit
            .map(|n| {
                whole_calls(&n).ok_or_else(|| {
                    invalid(
                        "call_limit",
                        format!("call_limit is a whole number from 1 to {MAX_CALLS}"),
                    )
                })
            })
            .transpose()?;
        Quota::new(spend, calls, window.into())
            .map(Some)
            .map_err(|e| invalid(&e.param, e.message))
    }
}

/// A whole number of calls from 0 to [`MAX_CALLS`], however JSON spells it (`3` or `3.0`).
fn whole_calls(n: &serde_json::Number) -> Option<u64> {
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=MAX_CALLS as f64).contains(f))
                .map(|f| f as u64)
        })
        .filter(|c| *c <= MAX_CALLS)
}

/// Set or remove a credential's quota.
#[utoipa::path(
    post, path = "/v1/byok/quota/set/{id}", operation_id = "set_quota", tag = "usage",
    params(("id" = String, Path, description = "The credential's id (`byok_…`)"), ConditionalHeaders),
    request_body = QuotaSetBody,
    responses(
        (status = 200, description = "The credential, with its quota",
            body = super::byok::ByokConfig,
            headers(("ETag" = String, description = "The credential's revision"),
                ("Idempotent-Replayed" = String, description = "`true` on a replayed response")),
            links(("get_usage" = (operation_id = "get_usage",
                parameters(("id" = "$response.body#/byok_id")),
                description = "Its usage in the quota's window")))),
        ChangeErrors, BodyErrors, AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn set_quota(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Authed<Write>,
    id: web::Path<String>,
    IfMatch(if_match): IfMatch,
    Json(body): Json<QuotaSetBody>,
) -> Result<HttpResponse, ApiError> {
    let scope = KeyScope::account(&caller.account_id);
    idempotent(&req, scope, config_response, move |recording| async move {
        let id = super::path::credential_id(&id)?;
        let quota = body.into_quota()?;
        let (account_id, meta) = (&caller.account_id, &caller.meta);
        Ok(state
            .usage
            .set_quota(account_id, &id, quota, if_match, meta, &recording)
            .await?)
    })
    .await
}

/// What a provider call ended with.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = Outcome)]
pub enum OutcomeView {
    Ok,
    InvalidCredentials,
    RateLimited,
    ProviderError,
}

impl From<OutcomeView> for Outcome {
    fn from(o: OutcomeView) -> Self {
        match o {
            OutcomeView::Ok => Self::Ok,
            OutcomeView::InvalidCredentials => Self::InvalidCredentials,
            OutcomeView::RateLimited => Self::RateLimited,
            OutcomeView::ProviderError => Self::ProviderError,
        }
    }
}

/// One provider call (or several, with `calls`) made with a credential.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UsageRecord)]
pub struct UsageRecordBody {
    /// The credential the call used; one that is not the account's refuses the record
    /// (`unknown_credential`), not the report.
    pub byok_id: String,
    /// Dollars, not negative, at most 6 decimals, at most 1000000000 (otherwise the record is
    /// refused with `negative_spend` or `invalid_spend`; the report is still answered 200).
    #[schema(value_type = f64)]
    pub spend_usd: serde_json::Number,
    /// Whole calls from 0 to 1000000000 (default 1; otherwise the record is refused with
    /// `invalid_calls`).
    #[schema(value_type = Option<f64>)]
    pub calls: Option<serde_json::Number>,
    /// When the call happened (default: when the report arrives); at most 5 minutes ahead, and
    /// not before every window.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The gateway's id of the call: 1 to 128 printable ASCII characters (otherwise the record
    /// is refused with `invalid_request_id`), recorded once per account.
    pub request_id: String,
    pub outcome: Option<OutcomeView>,
}

/// Up to 1,000 records.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UsageReport,
    example = json!({"records": [{"byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H",
    "spend_usd": 0.0042, "request_id": "gw-7f3a9c", "outcome": "ok"}]}))]
pub struct UsageReportBody {
    #[schema(max_items = 1000)]
    pub records: Vec<UsageRecordBody>,
    /// An idempotency key, as an alternative to the `Idempotency-Key` header: 1 to 255
    /// characters. With both, they must be the same key. (The JSON extractor takes it out before
    /// this type reads the body: it is here for the schema.)
    #[schema(min_length = 1, max_length = 255, nullable = false)]
    #[serde(default)]
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

/// The report body, read with its own, larger size bound.
pub struct ReportJson(UsageReportBody);

impl FromRequest for ReportJson {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let body = super::body::read_up_to(&mut payload, MAX_REPORT_BODY).await?;
            super::json::decode(&req, body).map(ReportJson)
        })
    }
}

/// A refused record.
#[derive(Serialize, ToSchema)]
pub struct RejectedRecord {
    /// Its place in `records`, from 0.
    pub index: usize,
    pub request_id: String,
    /// `unknown_credential`, `negative_spend`, `invalid_spend`, `invalid_calls`,
    /// `invalid_request_id`, `occurred_in_future`, `occurred_too_long_ago`, `duplicate`
    /// (recorded by an earlier report) or `duplicate_in_batch`.
    #[schema(value_type = String)]
    pub reason: Refusal,
}

/// What became of a report: every record is accepted, a duplicate, or refused with a reason.
#[derive(Serialize, ToSchema)]
#[schema(as = UsageReportResult,
    example = json!({"accepted": 499, "duplicates": 1, "rejected": [
    {"index": 17, "request_id": "gw-7f3a9c", "reason": "duplicate"}]}))]
pub struct UsageReportAnswer {
    pub accepted: usize,
    pub duplicates: usize,
    /// Every record not accepted, duplicates included, in report order.
    pub rejected: Vec<RejectedRecord>,
}

fn reported(r: UsageRecordBody) -> Reported {
    let spend_micros = usage::micros_from_usd(&r.spend_usd).map_err(|e| match e {
        MoneyError::Negative => Refusal::NegativeSpend,
        _ => Refusal::InvalidSpend,
    });
    let calls = match &r.calls {
        None => Ok(1),
        Some(n) => whole_calls(n).ok_or(Refusal::InvalidCalls),
    };
    Reported {
        byok_id: r.byok_id,
        request_id: r.request_id,
        spend_micros,
        calls,
        occurred_at: r.occurred_at,
        outcome: r.outcome.map(Into::into),
    }
}

/// Report usage: the gateway's records of provider calls, deduplicated by `request_id`.
#[utoipa::path(
    post, path = "/v1/byok/usage/report", operation_id = "report_usage", tag = "usage",
    params(super::idempotency::IdempotencyHeader),
    request_body = UsageReportBody,
    responses(
        (status = 200, description = "What became of each record (200 even when some are refused)",
            body = UsageReportAnswer,
            links(("get_usage" = (operation_id = "get_usage",
                parameters(("id" = "$request.body#/records/0/byok_id")),
                description = "The first record's credential: its spend and calls in its quota's \
                    window (a key with the `read` scope)")))),
        BodyErrors, AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn report(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Authed<Resolve>,
    ReportJson(body): ReportJson,
) -> Result<HttpResponse, ApiError> {
    if body.records.len() > MAX_RECORDS {
        return Err(invalid(
            "records",
            format!("a report holds at most {MAX_RECORDS} records; send the rest in another"),
        ));
    }
    // With a key, a retry is answered the first answer; without one, request ids already make
    // a retry harmless (its records are duplicates).
    let scope = KeyScope::account(&caller.account_id);
    idempotent(&req, scope, report_response, move |_| async move {
        let records = body.records.into_iter().map(reported).collect();
        let outcome = state
            .usage
            .report(&caller.account_id, records, &caller.meta)
            .await?;
        Ok(UsageReportAnswer {
            accepted: outcome.accepted,
            duplicates: outcome.duplicates,
            rejected: outcome
                .rejected
                .into_iter()
                .map(|(index, request_id, reason)| RejectedRecord {
                    index,
                    request_id,
                    reason,
                })
                .collect(),
        })
    })
    .await
}

fn report_response(answer: &UsageReportAnswer) -> HttpResponse {
    HttpResponse::Ok().json(answer)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// The window (default: the quota's, else `30d`).
    pub period: Option<QuotaWindowView>,
}

/// What is left under the quota (never below 0).
#[derive(Serialize, ToSchema)]
#[schema(as = UsageRemaining)]
pub struct Remaining {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spend_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls: Option<u64>,
}

/// A credential's usage in a window.
#[derive(Serialize, ToSchema)]
#[schema(as = Usage,
    example = json!({"byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H", "spend_usd": 12.5,
    "call_count": 3120, "period": "mtd", "window_start": "2026-12-01T00:00:00Z",
    "window_end": "2027-01-01T00:00:00Z",
    "quota": {"spend_limit_usd": 250.0, "window": "mtd"}, "remaining": {"spend_usd": 237.5}}))]
pub struct UsageAnswer {
    pub byok_id: String,
    pub spend_usd: f64,
    pub call_count: u64,
    pub period: QuotaWindowView,
    pub window_start: DateTime<Utc>,
    /// The end of the window: the end of the current hour for rolling windows.
    pub window_end: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaView>,
    /// Under the quota, in this period (absent without a quota).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<Remaining>,
}

impl From<UsageInWindow> for UsageAnswer {
    fn from(u: UsageInWindow) -> Self {
        let remaining = u.quota.as_ref().map(|q| Remaining {
            spend_usd: q
                .spend_limit_micros
                .map(|l| usage::usd_from_micros(l.saturating_sub(u.totals.spend_micros))),
            calls: q.call_limit.map(|l| l.saturating_sub(u.totals.calls)),
        });
        Self {
            byok_id: u.byok_id.into(),
            spend_usd: usage::usd_from_micros(u.totals.spend_micros),
            call_count: u.totals.calls,
            period: u.period.into(),
            window_start: u.window_start,
            window_end: u.window_end,
            quota: u.quota.map(QuotaView::from),
            remaining,
        }
    }
}

/// A credential's spend and calls in a window, with its quota and what is left under it.
#[utoipa::path(
    get, path = "/v1/byok/usage/{id}", operation_id = "get_usage", tag = "usage",
    params(("id" = String, Path, description = "The credential's id (`byok_…`)"), UsageQuery),
    responses(
        (status = 200, description = "The usage", body = UsageAnswer,
            links(("set_quota" = (operation_id = "set_quota",
                parameters(("id" = "$request.path.id")),
                description = "Set or remove the credential's quota (a key with the `write` scope)")))),
        (status = 400, response = super::error::BadRequest),
        (status = 404, response = NotFound),
        AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn get_usage(
    state: web::Data<AppState>,
    caller: Authed<Read>,
    id: web::Path<String>,
    query: web::Query<UsageQuery>,
) -> Result<web::Json<UsageAnswer>, ApiError> {
    let id = super::path::credential_id(&id)?;
    let period = query.into_inner().period.map(Into::into);
    let answer = state.usage.usage(&caller.account_id, &id, period)?;
    Ok(web::Json(answer.into()))
}
