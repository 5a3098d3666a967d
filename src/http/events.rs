//! Event feeds: `GET /v1/byok/events/{id}` (one credential), `GET /v1/events` (the account), and
//! `GET /v1/events/stream` (Server-Sent Events, resuming from `Last-Event-ID`), and their part of
//! the OpenAPI document.

use std::collections::VecDeque;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::AppState;
use super::auth::{Authed, Read};
use super::error::{
    ApiError, AuthErrors, BadRequest, ErrorCode, Forbidden, NotFound, Unauthorized,
};
use super::views::Event;
use crate::es::StreamId;
use crate::service::events::{Events, Feed, FeedError, FeedQuery, MAX_WAIT, Reader};

/// Quiet SSE connections get a comment this often, so proxies keep them open.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Events read per SSE step.
const SSE_BATCH: usize = 100;

pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::resource;
    cfg.service(resource("/v1/byok/events/{id}").get(credential_events))
        .service(resource("/v1/events").get(account_events))
        .service(resource("/v1/events/stream").get(stream_events));
}

/// The feed operations and the schemas they use.
#[derive(OpenApi)]
#[openapi(
    paths(credential_events, account_events, stream_events),
    tags((name = "events", description = "Event feeds: pages, long poll and Server-Sent Events")),
)]
pub struct EventsApi;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeedParams {
    /// `next_cursor` of a previous page; absent starts from the first event.
    pub cursor: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// Comma-separated event types to keep, for example `byok.updated,byok.revoked`.
    pub types: Option<String>,
    /// Long poll: when nothing is there yet, wait up to this many seconds (at most 30) for the
    /// next event.
    #[param(minimum = 0, maximum = 30)]
    pub wait: Option<u64>,
}

/// The headers of `stream_events`.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct StreamHeaders {
    /// Resume after this event: the `id` of the last event received (its position), as a
    /// reconnecting client sends it.
    #[param(rename = "Last-Event-ID", nullable = false)]
    last_event_id: Option<String>,
}

/// One Server-Sent Event of `stream_events`, as the OpenAPI document describes the stream: `id`
/// is the event's position (for `Last-Event-ID`), `event` its type, `data` the event as JSON.
pub struct SseEvent;

impl utoipa::PartialSchema for SseEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let text = || ObjectBuilder::new().schema_type(Type::String);
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("id", text().pattern(Some("^[0-9]+$")))
            .required("id")
            .property("event", text().description(Some("The event's type.")))
            .required("event")
            .property(
                "data",
                text()
                    .content_media_type("application/json")
                    .content_schema(Some(utoipa::openapi::Ref::from_schema_name("Event"))),
            )
            .required("data")
            .into()
    }
}

impl ToSchema for SseEvent {}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Where to start when there is no `Last-Event-ID`: a `next_cursor`; absent starts from
    /// the first event.
    pub cursor: Option<String>,
    /// Comma-separated event types to keep.
    pub types: Option<String>,
}

/// A page of events. `next_cursor` is always there: pass it to read on, now or later.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"items": [{"event_id": "01JD5Q3M8X2Y4Z6A7B8C9D0E1J", "position": 42,
    "stream": "byok:byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H", "stream_version": 3,
    "type": "byok.disabled",
    "schema": 1, "occurred_at": "2026-11-23T10:05:00Z", "actor": "kl_3f9a0c1b2",
    "request_id": "req_01JD5Q3M8X2Y4Z6A7B8C9D0E1K",
    "data": {"byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H", "disabled_at": "2026-11-23T10:05:00Z"}}], "next_cursor": "ATQyqLut9hnGtdfUXJ-oty8L_Q", "has_more": false}))]
pub struct EventPage {
    /// In log order. Payloads never carry a secret, ciphertext or token hash.
    pub items: Vec<Event>,
    pub next_cursor: String,
    /// Whether more events were already there when this page filled.
    pub has_more: bool,
}

fn invalid(param: &str, message: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, message).with_param(param)
}

/// The ordinal a cursor issued for `feed` resumes after; no cursor starts from the first event.
fn after(events: &Events, feed: &Feed<'_>, cursor: Option<&str>) -> Result<u64, ApiError> {
    cursor.map_or(Ok(0), |c| Ok(events.resume_after(feed, c)?))
}

/// An event id as the stream sends it (its position in decimal), as `Last-Event-ID` brings it
/// back: 1 to 19 ASCII digits and nothing else, as the contract's pattern says.
fn event_id(text: &str) -> Option<u64> {
    let digits = (1..=19).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| text.parse().ok()).flatten()
}

fn types(raw: Option<&str>) -> Vec<String> {
    raw.map(|t| {
        t.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

fn feed_query(
    events: &Events,
    feed: &Feed<'_>,
    params: &FeedParams,
) -> Result<FeedQuery, ApiError> {
    let limit = super::cursor::limit(params.limit)?;
    let wait = Duration::from_secs(params.wait.unwrap_or(0));
    if wait > MAX_WAIT {
        return Err(invalid("wait", "wait must be at most 30 seconds"));
    }
    Ok(FeedQuery {
        after: after(events, feed, params.cursor.as_deref())?,
        limit,
        types: types(params.types.as_deref()),
        wait,
    })
}

/// The key a feed request authenticated with.
fn reader<S>(caller: &Authed<S>) -> Reader {
    Reader {
        account_id: caller.account_id.clone(),
        key_id: caller.key_id.clone(),
    }
}

async fn page(
    events: &Events,
    reader: &Reader,
    feed: Feed<'_>,
    params: &FeedParams,
) -> Result<EventPage, ApiError> {
    let query = feed_query(events, &feed, params)?;
    let page = events
        .page(reader, &feed, &query)
        .await
        .map_err(|e| match e {
            // Revoked while the request waited: answered as if it had come after.
            FeedError::KeyRevoked => {
                ApiError::new(ErrorCode::InvalidToken, "the API key is unknown or revoked")
            }
            FeedError::Store(e) => {
                tracing::error!(error = %e, "reading a feed failed");
                ApiError::internal()
            }
        })?;
    Ok(EventPage {
        items: page.events.into_iter().map(Event::from).collect(),
        next_cursor: events.cursor(&feed, page.resume_after),
        has_more: page.has_more,
    })
}

/// One credential's events, oldest first.
#[utoipa::path(
    get, path = "/v1/byok/events/{id}", operation_id = "list_credential_events", tag = "events",
    params(("id" = String, Path, description = "The credential's id (`byok_…`)"), FeedParams),
    responses(
        (status = 200, description = "A page of the credential's events", body = EventPage,
            links(("next_page" = (operation_id = "list_credential_events",
                parameters(("id" = "$request.path.id"),
                    ("cursor" = "$response.body#/next_cursor")),
                description = "Read on after this page")))),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn credential_events(
    state: web::Data<AppState>,
    caller: Authed<Read>,
    id: web::Path<String>,
    params: web::Query<FeedParams>,
) -> Result<web::Json<EventPage>, ApiError> {
    // Another account's credential is answered like a missing one.
    let id = super::path::credential_id(&id)?;
    state.credentials.get(&caller.account_id, &id)?;
    let stream = StreamId::new(crate::domain::credential::KIND, id.as_str());
    Ok(web::Json(
        page(
            &state.events,
            &reader(&caller),
            Feed::Stream(&stream),
            &params,
        )
        .await?,
    ))
}

/// Every event of the account, in log order.
#[utoipa::path(
    get, path = "/v1/events", operation_id = "list_events", tag = "events",
    params(FeedParams),
    responses(
        (status = 200, description = "A page of the account's events", body = EventPage,
            links(
                ("next_page" = (operation_id = "list_events",
                    parameters(("cursor" = "$response.body#/next_cursor")),
                    description = "Read on after this page")),
                ("stream_events" = (operation_id = "stream_events",
                    parameters(("cursor" = "$response.body#/next_cursor")),
                    description = "Tail the feed from here as Server-Sent Events")),
            )),
        (status = 400, response = BadRequest),
        AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn account_events(
    state: web::Data<AppState>,
    caller: Authed<Read>,
    params: web::Query<FeedParams>,
) -> Result<web::Json<EventPage>, ApiError> {
    let feed = Feed::Account(&caller.account_id);
    Ok(web::Json(
        page(&state.events, &reader(&caller), feed, &params).await?,
    ))
}

/// The account's events as Server-Sent Events: each has `id` (its position, for
/// `Last-Event-ID`), `event` (its type) and `data` (the event as JSON). Resumes after
/// `Last-Event-ID` when a reconnecting client sends it. The stream never ends: read it with a
/// streaming HTTP client (generated clients that read whole bodies cannot use this operation).
#[utoipa::path(
    get, path = "/v1/events/stream", operation_id = "stream_events", tag = "events",
    params(StreamParams, StreamHeaders),
    responses(
        (status = 200, description = "An endless `text/event-stream`; the schema describes one event",
            content_type = "text/event-stream", body = inline(SseEvent)),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    ),
    security(("bearer" = []))
)]
pub async fn stream_events(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Authed<Read>,
    params: web::Query<StreamParams>,
) -> Result<HttpResponse, ApiError> {
    let resume = match req.headers().get("last-event-id") {
        Some(value) => value.to_str().ok().and_then(event_id).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidHeader,
                "Last-Event-ID must be an event id: 1 to 19 digits",
            )
            .with_param("Last-Event-ID")
        })?,
        None => after(
            &state.events,
            &Feed::Account(&caller.account_id),
            params.cursor.as_deref(),
        )?,
    };
    let tail = Tail {
        events: state.events.clone(),
        reader: reader(&caller),
        query: FeedQuery {
            after: resume,
            limit: SSE_BATCH,
            types: types(params.types.as_deref()),
            wait: KEEPALIVE,
        },
        pending: VecDeque::new(),
    };
    let body = futures_util::stream::unfold(tail, |mut tail| async move {
        let chunk = tail.next_chunk().await?;
        Some((Ok::<_, actix_web::Error>(chunk), tail))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(body))
}

/// The state of one SSE connection.
struct Tail {
    events: Events,
    /// The key the stream authenticated with; the stream ends when it is revoked.
    reader: Reader,
    query: FeedQuery,
    pending: VecDeque<Bytes>,
}

impl Tail {
    /// The next piece of the stream: an event, or a keep-alive comment after a quiet spell;
    /// `None` ends the stream (the store failed or shut down, or the key was revoked).
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(chunk) = self.pending.pop_front() {
            return Some(chunk);
        }
        if self.events.is_closing() {
            return None;
        }
        let feed = Feed::Account(&self.reader.account_id);
        let page = match self.events.page(&self.reader, &feed, &self.query).await {
            Ok(page) => page,
            Err(FeedError::KeyRevoked) => {
                tracing::info!("event stream ended: its API key was revoked");
                return None;
            }
            Err(FeedError::Store(error)) => {
                tracing::error!(%error, "reading the event stream failed");
                return None;
            }
        };
        self.query.after = page.resume_after;
        for event in page.events.into_iter().map(Event::from) {
            let data = serde_json::to_string(&event).ok()?;
            self.pending.push_back(Bytes::from(format!(
                "id: {}\nevent: {}\ndata: {data}\n\n",
                event.position, event.event_type
            )));
        }
        Some(
            self.pending
                .pop_front()
                .unwrap_or_else(|| Bytes::from_static(b": keep-alive\n\n")),
        )
    }
}
