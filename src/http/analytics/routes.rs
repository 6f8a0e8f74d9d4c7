//! HTTP handlers of `/analytics/*` ingestion and queries.

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};

use super::dto::*;
use crate::analytics::audience::{self, Steps, Window};
use crate::analytics::domain::filter;
use crate::analytics::domain::{Limits, hours};
use crate::analytics::export::{Export, Rows};
use crate::analytics::queue::StoredMetrics;
use crate::analytics::views::*;
use crate::analytics::{IngestError, Invalid, NewEvent, NewMetric, queries};
use crate::http::callers::tighter;
use crate::http::error::ratelimit_headers;
use crate::http::net::client_info;
use crate::http::{ApiError, AppState, ErrorBody};
use crate::keys::{Caller, Quota};
use crate::time::Grain;

/// Parses a batch's items, naming the first bad one.
fn parse_items<T, N>(
    state: &AppState,
    field: &str,
    items: Vec<T>,
    parse: impl Fn(T, &Limits) -> Result<N, Invalid>,
) -> Result<Vec<N>, IngestError> {
    let max = state.settings.analytics.batch_limit;
    if items.len() > max {
        return Err(IngestError::BatchTooLarge { max });
    }
    let limits = Limits::now(&state.settings.analytics);
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, item)| parse(item, &limits).map_err(|e| e.at(field, i)))
        .collect::<Result<Vec<_>, _>>()?)
}

/// Takes the rows from the caller's daily quota, stores them, and gives
/// them back if the store failed. Answers the quota for the headers.
async fn charged<T>(
    state: &AppState,
    caller: Option<&Caller>,
    rows: usize,
    store: impl Future<Output = Result<T, IngestError>>,
) -> Result<(T, Option<Quota>), ApiError> {
    let quota = match caller {
        Some(c) => state.keys.charge_ingest(c, rows).await?,
        None => None,
    };
    match store.await {
        Ok(stored) => Ok((stored, quota)),
        Err(e) => {
            if let (Some(c), Some(_)) = (caller, quota) {
                state.keys.refund_ingest(c, rows).await;
            }
            Err(e.into())
        }
    }
}

/// The key the request came with, if any.
fn caller(req: &HttpRequest) -> Option<Caller> {
    req.extensions().get::<Caller>().cloned()
}

async fn store_events(
    state: &AppState,
    req: &HttpRequest,
    items: Vec<EventIn>,
) -> Result<(Vec<crate::analytics::Event>, Option<Quota>), ApiError> {
    let mut rows: Vec<NewEvent> = parse_items(state, "events", items, EventIn::parse)?;
    // Where the request came from, recorded on events.
    let client = client_info(&state.settings.http, req);
    let ip = client.ip.map(|ip| ip.to_string());
    let caller = caller(req);
    let key = caller.as_ref().and_then(|c| c.key_id);
    for row in &mut rows {
        row.ip_address = ip.clone();
        row.user_agent = client.user_agent.clone();
        row.api_key_id = key;
    }
    let n = rows.len();
    charged(state, caller.as_ref(), n, state.ingest.submit_events(rows)).await
}

async fn store_metrics(
    state: &AppState,
    req: &HttpRequest,
    items: Vec<MetricIn>,
) -> Result<(StoredMetrics, Option<Quota>), ApiError> {
    let mut rows: Vec<NewMetric> = parse_items(state, "metrics", items, MetricIn::parse)?;
    let caller = caller(req);
    let key = caller.as_ref().and_then(|c| c.key_id);
    for row in &mut rows {
        row.api_key_id = key;
    }
    let n = rows.len();
    charged(state, caller.as_ref(), n, state.ingest.submit_metrics(rows)).await
}

/// An ingest answer with the RateLimit headers of the caller's quota, when
/// that is closer to its end than the rate the guard reports.
fn answer(req: &HttpRequest, quota: Option<Quota>, body: impl serde::Serialize) -> HttpResponse {
    let mut resp = HttpResponse::Ok();
    if let Some(q) = tighter(req, quota) {
        for header in ratelimit_headers(&q) {
            resp.insert_header(header);
        }
    }
    resp.json(body)
}

/// Record an event. Answered once committed; a retry with the same
/// `event_id` answers the stored row.
#[utoipa::path(
    post, path = "/analytics/events", tag = "analytics",
    request_body = EventIn,
    responses(
        (status = 200, description = "Stored", body = EventResponse),
        (status = 422, description = "Invalid event", body = ErrorBody),
        (status = 503, description = "Queue full or database unavailable; see Retry-After", body = ErrorBody),
    )
)]
pub async fn post_event(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: crate::http::body::Json<EventIn>,
) -> Result<HttpResponse, ApiError> {
    let (stored, quota) = store_events(&state, &req, vec![body.into_inner()]).await?;
    Ok(answer(&req, quota, EventResponse::from(&stored[0])))
}

/// Record many events at once, all or nothing.
#[utoipa::path(
    post, path = "/analytics/events/batch", tag = "analytics",
    request_body = EventBatch,
    responses(
        (status = 200, description = "Stored", body = BatchResponse),
        (status = 413, description = "More items than ANALYTICS_BATCH_LIMIT", body = ErrorBody),
        (status = 422, description = "An invalid item; nothing stored", body = ErrorBody),
        (status = 503, description = "Queue full or database unavailable", body = ErrorBody),
    )
)]
pub async fn post_events_batch(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: crate::http::body::Json<EventBatch>,
) -> Result<HttpResponse, ApiError> {
    let (stored, quota) = store_events(&state, &req, body.into_inner().events).await?;
    Ok(answer(
        &req,
        quota,
        BatchResponse::new("events", stored.iter().map(|e| e.id)),
    ))
}

/// Record a metric.
#[utoipa::path(
    post, path = "/analytics/metrics", tag = "analytics",
    request_body = MetricIn,
    responses(
        (status = 200, description = "Stored", body = MetricResponse),
        (status = 422, description = "Invalid metric", body = ErrorBody),
        (status = 503, description = "Queue full or database unavailable", body = ErrorBody),
    )
)]
pub async fn post_metric(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: crate::http::body::Json<MetricIn>,
) -> Result<HttpResponse, ApiError> {
    let (stored, quota) = store_metrics(&state, &req, vec![body.into_inner()]).await?;
    let stored = stored.into_metrics();
    Ok(answer(&req, quota, MetricResponse::from(&stored[0])))
}

/// Record many metrics at once, all or nothing.
#[utoipa::path(
    post, path = "/analytics/metrics/batch", tag = "analytics",
    request_body = MetricBatch,
    responses(
        (status = 200, description = "Stored", body = BatchResponse),
        (status = 413, description = "More items than ANALYTICS_BATCH_LIMIT", body = ErrorBody),
        (status = 422, description = "An invalid item; nothing stored", body = ErrorBody),
        (status = 503, description = "Queue full or database unavailable", body = ErrorBody),
    )
)]
pub async fn post_metrics_batch(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: crate::http::body::Json<MetricBatch>,
) -> Result<HttpResponse, ApiError> {
    let (stored, quota) = store_metrics(&state, &req, body.into_inner().metrics).await?;
    Ok(answer(
        &req,
        quota,
        BatchResponse::new("metrics", stored.ids.iter().copied()),
    ))
}

/// Metrics, newest first, with keyset pagination.
#[utoipa::path(
    get, path = "/analytics/metrics", tag = "analytics",
    params(MetricQuery, PageQuery),
    responses(
        (status = 200, description = "A page of metrics", body = MetricList),
        (status = 422, description = "A parameter out of range", body = ErrorBody),
    )
)]
pub async fn list_metrics(
    state: web::Data<AppState>,
    filter: web::Query<MetricQuery>,
    page: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (filter, page) = (filter.into_inner().parse()?, page.into_inner().parse()?);
    let (rows, next_cursor) = state
        .reads
        .run(|db| {
            let (filter, page) = (filter.clone(), page.clone());
            async move { queries::list_metrics(&db, filter, &page).await }
        })
        .await?;
    Ok(HttpResponse::Ok().json(MetricList::new(&rows, next_cursor)))
}

/// Events, newest first, with keyset pagination.
#[utoipa::path(
    get, path = "/analytics/events", tag = "analytics",
    params(EventQuery, PageQuery),
    responses(
        (status = 200, description = "A page of events", body = EventList),
        (status = 422, description = "A parameter out of range", body = ErrorBody),
    )
)]
pub async fn list_events(
    state: web::Data<AppState>,
    filter: web::Query<EventQuery>,
    page: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let (filter, page) = (filter.into_inner().parse()?, page.into_inner().parse()?);
    events_page(&state, filter, &page).await
}

async fn events_page(
    state: &AppState,
    filter: crate::analytics::domain::EventFilter,
    page: &crate::analytics::domain::Page,
) -> Result<HttpResponse, ApiError> {
    let (rows, next_cursor) = state
        .reads
        .run(|db| {
            let filter = filter.clone();
            async move { queries::list_events(&db, filter, page).await }
        })
        .await?;
    Ok(HttpResponse::Ok().json(EventList::new(&rows, next_cursor)))
}

/// A user's events, newest first.
#[utoipa::path(
    get, path = "/analytics/users/{user_id}/events", tag = "analytics",
    params(("user_id" = i64, Path, description = "User id"), PageQuery),
    responses(
        (status = 200, description = "A page of events", body = EventList),
        (status = 422, description = "A parameter out of range", body = ErrorBody),
    )
)]
pub async fn user_events(
    state: web::Data<AppState>,
    user_id: web::Path<i64>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = query.into_inner().parse()?;
    let filter = crate::analytics::domain::EventFilter {
        user_id: crate::analytics::domain::user_id(Some(user_id.into_inner()))?,
        ..Default::default()
    };
    events_page(&state, filter, &page).await
}

/// Event counts by type over the last `hours`, most first.
#[utoipa::path(
    get, path = "/analytics/events/by-type", tag = "analytics",
    params(HoursQuery),
    responses(
        (status = 200, description = "Counts", body = ByType),
        (status = 422, description = "hours out of range", body = ErrorBody),
    )
)]
pub async fn by_type(
    state: web::Data<AppState>,
    query: web::Query<HoursQuery>,
) -> Result<HttpResponse, ApiError> {
    let hours = hours(query.hours)?;
    let since = crate::time::now() - chrono::Duration::hours(hours);
    Ok(HttpResponse::Ok().json(ByType {
        event_types: state
            .reads
            .run(|db| async move { queries::event_types(&db, since, None).await })
            .await?,
    }))
}

/// Event counts per aligned minute, hour or day over the last `hours`.
#[utoipa::path(
    get, path = "/analytics/events/timeseries", tag = "analytics",
    params(TimeseriesQuery),
    responses(
        (status = 200, description = "Buckets, oldest first, empty ones included", body = Timeseries),
        (status = 422, description = "Bad interval, hours out of range, or too many buckets", body = ErrorBody),
    )
)]
pub async fn timeseries(
    state: web::Data<AppState>,
    query: web::Query<TimeseriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let interval = Grain::parse(q.interval.as_deref().unwrap_or("hour"))
        .ok_or_else(|| Invalid::new("interval must be minute, hour or day"))?;
    let hours = hours(q.hours)?;
    let event_type = crate::analytics::domain::filter("event_type", q.event_type, 100)?;
    let buckets = state
        .reads
        .run(|db| {
            let event_type = event_type.clone();
            async move { queries::timeseries(&db, interval, hours, event_type.as_deref()).await }
        })
        .await?;
    Ok(HttpResponse::Ok().json(Timeseries {
        interval: interval.name().into(),
        buckets,
    }))
}

/// The original's dashboard over the last `hours`, plus event types and hourly counts.
#[utoipa::path(
    get, path = "/analytics/dashboard", tag = "analytics",
    params(HoursQuery),
    responses(
        (status = 200, description = "Dashboard", body = Dashboard),
        (status = 422, description = "hours out of range", body = ErrorBody),
    )
)]
pub async fn dashboard(
    state: web::Data<AppState>,
    query: web::Query<HoursQuery>,
) -> Result<HttpResponse, ApiError> {
    let hours = hours(query.hours)?;
    let jobs = state.jobs.clone();
    let dashboard = state
        .reads
        .run(|db| {
            let jobs = jobs.clone();
            async move { queries::dashboard(&db, jobs.prices(), hours).await }
        })
        .await?;
    Ok(HttpResponse::Ok().json(dashboard))
}

/// Platform totals: users, and the last 24 hours of activity.
#[utoipa::path(
    get, path = "/analytics/summary", tag = "analytics",
    responses((status = 200, description = "Summary", body = Summary))
)]
pub async fn summary(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let summary = state
        .reads
        .run(|db| async move { queries::summary(&db).await })
        .await?;
    Ok(HttpResponse::Ok().json(summary))
}

/// Events of a window as NDJSON (default) or CSV, streamed in id order
/// with flat memory; gzip when the client accepts it.
///
/// `X-Total-Count` is the number of rows the answer carries, and
/// `X-Export-Through-Id` the largest id among them: rows stored later are
/// not included. To resume an interrupted export, repeat the request with
/// `after_id` = the last id received and `through_id` = that header.
#[utoipa::path(
    get, path = "/analytics/events/export", tag = "analytics",
    params(EventQuery, ExportQuery),
    responses(
        (status = 200, description = "The rows, one per line (CSV: after a header line)",
            content((String = "application/x-ndjson"), (String = "text/csv")),
            headers(
                ("X-Total-Count" = u64, description = "Rows in this answer"),
                ("X-Export-Through-Id" = i64, description = "Largest id in the export (absent when empty)"),
            )),
        (status = 422, description = "A parameter out of range", body = ErrorBody),
    )
)]
pub async fn export_events(
    state: web::Data<AppState>,
    filter: web::Query<EventQuery>,
    query: web::Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    let export = query
        .into_inner()
        .parse(Rows::Events(filter.into_inner().parse()?))?;
    exported(state, export).await
}

/// Metrics of a window as NDJSON (default) or CSV; as the events' export.
#[utoipa::path(
    get, path = "/analytics/metrics/export", tag = "analytics",
    params(MetricQuery, ExportQuery),
    responses(
        (status = 200, description = "The rows, one per line (CSV: after a header line)",
            content((String = "application/x-ndjson"), (String = "text/csv")),
            headers(
                ("X-Total-Count" = u64, description = "Rows in this answer"),
                ("X-Export-Through-Id" = i64, description = "Largest id in the export (absent when empty)"),
            )),
        (status = 422, description = "A parameter out of range", body = ErrorBody),
    )
)]
pub async fn export_metrics(
    state: web::Data<AppState>,
    filter: web::Query<MetricQuery>,
    query: web::Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    let export = query
        .into_inner()
        .parse(Rows::Metrics(filter.into_inner().parse()?))?;
    exported(state, export).await
}

/// Counts the export, then streams it a batch at a time. A batch that fails
/// ends the body early: the client sees a short count and resumes.
async fn exported(state: web::Data<AppState>, export: Export) -> Result<HttpResponse, ApiError> {
    let snapshot = state
        .reads
        .run(|db| {
            let export = export.clone();
            async move { export.snapshot(&db).await }
        })
        .await?;
    let mut answer = HttpResponse::Ok();
    answer
        .content_type(export.format().content_type())
        .insert_header(("X-Total-Count", snapshot.rows.to_string()));
    if let Some(through) = snapshot.through_id {
        answer.insert_header(("X-Export-Through-Id", through.to_string()));
    }
    let header = futures_util::stream::iter(
        export
            .header()
            .map(|h| Ok::<_, actix_web::Error>(web::Bytes::from(h))),
    );
    let start = snapshot.through_id.map(|t| (export.after_id(), t));
    let rows = futures_util::stream::unfold(start, move |next| {
        let (state, export) = (state.clone(), export.clone());
        async move {
            let (after, through) = next?;
            let batch = state
                .reads
                .run(|db| {
                    let export = export.clone();
                    async move { export.batch(&db, after, through).await }
                })
                .await;
            match batch {
                Ok(Some((bytes, last))) => {
                    Some((Ok(web::Bytes::from(bytes)), Some((last, through))))
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(error = %e, after, "export interrupted");
                    Some((
                        Err(actix_web::error::ErrorServiceUnavailable(
                            "export interrupted",
                        )),
                        None,
                    ))
                }
            }
        }
    });
    Ok(answer.streaming(futures_util::StreamExt::chain(header, rows)))
}

/// Distinct users of a window (events with a `user_id`), overall and per
/// event type; exact, counted from the stored events.
#[utoipa::path(
    get, path = "/analytics/uniques", tag = "analytics",
    params(UniquesQuery),
    responses(
        (status = 200, description = "Distinct users", body = Uniques),
        (status = 422, description = "A parameter out of range", body = ErrorBody),
    )
)]
pub async fn uniques(
    state: web::Data<AppState>,
    query: web::Query<UniquesQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let window = Window::parse(q.from, q.to)?;
    let event_type = filter("event_type", q.event_type, 100)?;
    let answer = state
        .reads
        .run(|db| {
            let event_type = event_type.clone();
            async move { audience::uniques(&db, window, event_type).await }
        })
        .await?;
    Ok(HttpResponse::Ok().json(answer))
}

/// A funnel: how many users did the steps' event types in order, each
/// within `within_seconds` of their first step, in the window. Exact,
/// computed from the stored events.
#[utoipa::path(
    get, path = "/analytics/funnels", tag = "analytics",
    params(FunnelQuery),
    responses(
        (status = 200, description = "Users per step", body = Funnel),
        (status = 422, description = "A parameter out of range", body = ErrorBody),
    )
)]
pub async fn funnel(
    state: web::Data<AppState>,
    query: web::Query<FunnelQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let window = Window::parse(q.from, q.to)?;
    let steps = Steps::parse(&q.steps, q.within_seconds)?;
    let answer = state
        .reads
        .run(|db| {
            let steps = steps.clone();
            async move { audience::funnel(&db, window, steps).await }
        })
        .await?;
    Ok(HttpResponse::Ok().json(answer))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/analytics/events")
            .route(web::post().to(post_event))
            .route(web::get().to(list_events)),
    )
    .service(web::resource("/analytics/events/batch").route(web::post().to(post_events_batch)))
    .service(
        web::resource("/analytics/events/stream")
            .route(web::get().to(super::stream::stream_events)),
    )
    .service(web::resource("/analytics/events/by-type").route(web::get().to(by_type)))
    .service(
        web::resource("/analytics/events/export")
            .wrap(actix_web::middleware::Compress::default())
            .route(web::get().to(export_events)),
    )
    .service(
        web::resource("/analytics/metrics/export")
            .wrap(actix_web::middleware::Compress::default())
            .route(web::get().to(export_metrics)),
    )
    .service(web::resource("/analytics/events/timeseries").route(web::get().to(timeseries)))
    .service(
        web::resource("/analytics/metrics")
            .route(web::post().to(post_metric))
            .route(web::get().to(list_metrics)),
    )
    .service(web::resource("/analytics/metrics/batch").route(web::post().to(post_metrics_batch)))
    .service(web::resource("/analytics/users/{user_id}/events").route(web::get().to(user_events)))
    .service(web::resource("/analytics/dashboard").route(web::get().to(dashboard)))
    .service(web::resource("/analytics/uniques").route(web::get().to(uniques)))
    .service(web::resource("/analytics/funnels").route(web::get().to(funnel)))
    .service(web::resource("/analytics/summary").route(web::get().to(summary)));
}
