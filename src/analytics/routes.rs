//! HTTP handlers of `/analytics/*`.

use actix_web::{HttpRequest, HttpResponse, web};

use super::dto::*;
use super::ingest::{Rows, Stored};
use super::queries;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

fn limits(state: &AppState) -> Limits {
    let now = super::ingest::now();
    Limits {
        json_max_bytes: state.settings.analytics_json_max_bytes,
        // One day inside the horizon: an accepted row is not deleted by the
        // next retention run before reads and rollups have seen it.
        oldest: now
            - chrono::Duration::days(i64::from(
                state.settings.analytics_retention_days.max(2) - 1,
            )),
        newest: now + chrono::Duration::seconds(state.settings.ingest_clock_skew as i64),
    }
}

/// Where the request came from, recorded on events.
fn stamp_client(state: &AppState, req: &HttpRequest, rows: &mut [crate::entity::events::Model]) {
    let ip = crate::net::client_ip(req, &state.trusted_proxies).map(|ip| ip.to_string());
    let ua: Option<String> = req
        .headers()
        .get(actix_web::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(1024).collect());
    for row in rows {
        row.ip_address = ip.clone();
        row.user_agent = ua.clone();
    }
}

fn check_batch(state: &AppState, n: usize) -> Result<(), ApiError> {
    let max = state.settings.analytics_batch_limit;
    if n > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "Batch exceeds the limit of {max} items"
        )));
    }
    Ok(())
}

fn indexed(field: &str, i: usize, e: ApiError) -> ApiError {
    match e {
        ApiError::Unprocessable(m) => ApiError::Unprocessable(format!("{field}[{i}]: {m}")),
        other => other,
    }
}

async fn store_events(
    state: &AppState,
    req: &HttpRequest,
    items: Vec<EventIn>,
) -> Result<Vec<crate::entity::events::Model>, ApiError> {
    let limits = limits(state);
    let mut rows = items
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.validate(&limits).map_err(|err| indexed("events", i, err)))
        .collect::<Result<Vec<_>, _>>()?;
    stamp_client(state, req, &mut rows);
    match state.ingest.submit(Rows::Events(rows)).await? {
        Stored::Events(v) => Ok(v),
        Stored::Metrics(_) => Err(ApiError::internal(anyhow::anyhow!(
            "writer answered metrics for events"
        ))),
    }
}

async fn store_metrics(
    state: &AppState,
    items: Vec<MetricIn>,
) -> Result<Vec<crate::entity::metrics::Model>, ApiError> {
    let limits = limits(state);
    let rows = items
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.validate(&limits)
                .map_err(|err| indexed("metrics", i, err))
        })
        .collect::<Result<Vec<_>, _>>()?;
    match state.ingest.submit(Rows::Metrics(rows)).await? {
        Stored::Metrics(v) => Ok(v),
        Stored::Events(_) => Err(ApiError::internal(anyhow::anyhow!(
            "writer answered events for metrics"
        ))),
    }
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
    body: crate::http::Json<EventIn>,
) -> Result<HttpResponse, ApiError> {
    let stored = store_events(&state, &req, vec![body.into_inner()]).await?;
    Ok(HttpResponse::Ok().json(EventResponse::from(&stored[0])))
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
    body: crate::http::Json<EventBatch>,
) -> Result<HttpResponse, ApiError> {
    let items = body.into_inner().events;
    check_batch(&state, items.len())?;
    let stored = store_events(&state, &req, items).await?;
    Ok(HttpResponse::Ok().json(BatchResponse::new("events", stored.iter().map(|e| e.id))))
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
    body: crate::http::Json<MetricIn>,
) -> Result<HttpResponse, ApiError> {
    let stored = store_metrics(&state, vec![body.into_inner()]).await?;
    Ok(HttpResponse::Ok().json(MetricResponse::from(&stored[0])))
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
    body: crate::http::Json<MetricBatch>,
) -> Result<HttpResponse, ApiError> {
    let items = body.into_inner().metrics;
    check_batch(&state, items.len())?;
    let stored = store_metrics(&state, items).await?;
    Ok(HttpResponse::Ok().json(BatchResponse::new("metrics", stored.iter().map(|m| m.id))))
}

/// Metrics, newest first, with keyset pagination.
#[utoipa::path(
    get, path = "/analytics/metrics", tag = "analytics",
    params(MetricQuery),
    responses(
        (status = 200, description = "A page of metrics", body = MetricList),
        (status = 422, description = "A parameter out of range", body = ErrorBody),
    )
)]
pub async fn list_metrics(
    state: web::Data<AppState>,
    query: web::Query<MetricQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(queries::list_metrics(&state.db, query.into_inner()).await?))
}

/// Events, newest first, with keyset pagination.
#[utoipa::path(
    get, path = "/analytics/events", tag = "analytics",
    params(EventQuery),
    responses(
        (status = 200, description = "A page of events", body = EventList),
        (status = 422, description = "A parameter out of range", body = ErrorBody),
    )
)]
pub async fn list_events(
    state: web::Data<AppState>,
    query: web::Query<EventQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(queries::list_events(&state.db, query.into_inner()).await?))
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
    let q = query.into_inner();
    let query = EventQuery {
        event_type: None,
        user_id: Some(user_id.into_inner()),
        session_id: None,
        from: q.from,
        to: q.to,
        limit: q.limit,
        cursor: q.cursor,
    };
    Ok(HttpResponse::Ok().json(queries::list_events(&state.db, query).await?))
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
    let hours = queries::hours(query.hours)?;
    let since = super::ingest::now() - chrono::Duration::hours(hours);
    Ok(HttpResponse::Ok().json(ByType {
        event_types: queries::event_types(&state.db, since, None).await?,
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
    let interval = queries::Interval::parse(q.interval.as_deref())?;
    let hours = queries::hours(q.hours)?;
    if q.event_type
        .as_ref()
        .is_some_and(|t| t.chars().count() > 100)
    {
        return Err(ApiError::unprocessable(
            "event_type must be at most 100 characters",
        ));
    }
    let buckets = queries::timeseries(&state.db, interval, hours, q.event_type.as_deref()).await?;
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
    let hours = queries::hours(query.hours)?;
    Ok(HttpResponse::Ok().json(queries::dashboard(&state.db, hours).await?))
}

/// Platform totals: users, and the last 24 hours of activity.
#[utoipa::path(
    get, path = "/analytics/summary", tag = "analytics",
    responses((status = 200, description = "Summary", body = Summary))
)]
pub async fn summary(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(queries::summary(&state.db).await?))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/analytics/events")
            .route(web::post().to(post_event))
            .route(web::get().to(list_events)),
    )
    .service(web::resource("/analytics/events/batch").route(web::post().to(post_events_batch)))
    .service(web::resource("/analytics/events/by-type").route(web::get().to(by_type)))
    .service(web::resource("/analytics/events/timeseries").route(web::get().to(timeseries)))
    .service(
        web::resource("/analytics/metrics")
            .route(web::post().to(post_metric))
            .route(web::get().to(list_metrics)),
    )
    .service(web::resource("/analytics/metrics/batch").route(web::post().to(post_metrics_batch)))
    .service(web::resource("/analytics/users/{user_id}/events").route(web::get().to(user_events)))
    .service(web::resource("/analytics/dashboard").route(web::get().to(dashboard)))
    .service(web::resource("/analytics/summary").route(web::get().to(summary)));
}
