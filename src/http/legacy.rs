//! The original's unprefixed routes. They call the same handlers behind the
//! same API-key guard (the original left them open), announce their
//! successor, and are counted so their last callers can be found.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{Error, HttpRequest, HttpResponse, web};

use super::analytics::dto::{EventIn, MetricQuery, PageQuery};
use super::analytics::routes as analytics;
use super::analytics::usage::{self, CostsQuery, UsageQuery};
use super::auth::dto::{
    LoginRequest, ProfileUpdate, RegisterRequest, TokenResponse, UserResponse, VerifyResponse,
};
use super::auth::extract::{AuthenticatedUser, MaybeUser};
use super::auth::routes as auth;
use super::{ApiError, AppState, ErrorBody};
use crate::analytics::views::{CostsResponse, EventResponse, MetricList, UsageRow};

/// `/login` → `/auth/login`, `/events` → `/analytics/events`, …
pub(crate) fn successor(path: &str) -> String {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "register" | "login" | "verify" | "profile" => format!("/auth{path}"),
        _ => format!("/analytics{path}"),
    }
}

async fn deprecated(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let route = req
        .match_pattern()
        .unwrap_or_else(|| req.path().to_string());
    let link = format!("<{}>; rel=\"successor-version\"", successor(req.path()));
    metrics::counter!("legacy_requests_total", "route" => route).increment(1);
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    headers.insert(
        HeaderName::from_static("deprecation"),
        HeaderValue::from_static("true"),
    );
    if let Ok(v) = HeaderValue::from_str(&link) {
        headers.insert(HeaderName::from_static("link"), v);
    }
    Ok(res)
}

/// Deprecated alias of `POST /auth/register`.
#[utoipa::path(post, path = "/register", operation_id = "legacy_post_register", tag = "legacy", request_body = RegisterRequest,
    responses((status = 201, description = "Registered", body = TokenResponse),
              (status = 409, description = "Email already registered", body = ErrorBody)))]
#[deprecated]
pub async fn register(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: super::body::Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    auth::register(state, req, body).await
}

/// Deprecated alias of `POST /auth/login`.
#[utoipa::path(post, path = "/login", operation_id = "legacy_post_login", tag = "legacy", request_body = LoginRequest,
    responses((status = 200, description = "Logged in", body = TokenResponse),
              (status = 401, description = "Invalid credentials", body = ErrorBody)))]
#[deprecated]
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: super::body::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    auth::login(state, req, body).await
}

/// Deprecated alias of `GET /auth/verify`.
#[utoipa::path(get, path = "/verify", operation_id = "legacy_get_verify", tag = "legacy", security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses((status = 200, description = "Valid token", body = VerifyResponse),
              (status = 401, description = "Invalid token", body = ErrorBody)))]
#[deprecated]
pub async fn verify(user: AuthenticatedUser) -> HttpResponse {
    auth::verify(user).await
}

/// Deprecated alias of `GET /auth/profile`.
#[utoipa::path(get, path = "/profile", operation_id = "legacy_get_profile", tag = "legacy", security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses((status = 200, description = "Profile", body = UserResponse),
              (status = 401, description = "Invalid token", body = ErrorBody)))]
#[deprecated]
pub async fn get_profile(user: AuthenticatedUser) -> HttpResponse {
    auth::get_profile(user).await
}

/// Deprecated alias of `PUT /auth/profile`.
#[utoipa::path(put, path = "/profile", operation_id = "legacy_put_profile", tag = "legacy", request_body = ProfileUpdate,
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses((status = 200, description = "Updated profile", body = UserResponse),
              (status = 401, description = "Invalid token", body = ErrorBody)))]
#[deprecated]
pub async fn put_profile(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    body: super::body::Json<ProfileUpdate>,
) -> Result<HttpResponse, ApiError> {
    auth::put_profile(state, user, body).await
}

/// Deprecated alias of `POST /analytics/events`.
#[utoipa::path(post, path = "/events", operation_id = "legacy_post_events", tag = "legacy", request_body = EventIn,
    responses((status = 200, description = "Stored", body = EventResponse),
              (status = 422, description = "Invalid event", body = ErrorBody)))]
#[deprecated]
pub async fn post_event(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: super::body::Json<EventIn>,
) -> Result<HttpResponse, ApiError> {
    analytics::post_event(state, req, body).await
}

/// Deprecated alias of `GET /analytics/metrics`.
#[utoipa::path(get, path = "/metrics", operation_id = "legacy_get_metrics", tag = "legacy", params(MetricQuery, PageQuery),
    responses((status = 200, description = "A page of metrics", body = MetricList),
              (status = 422, description = "A parameter out of range", body = ErrorBody)))]
#[deprecated]
pub async fn list_metrics(
    state: web::Data<AppState>,
    filter: web::Query<MetricQuery>,
    page: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    analytics::list_metrics(state, filter, page).await
}

/// Deprecated alias of `GET /analytics/usage/{user_id}`.
#[utoipa::path(get, path = "/usage/{user_id}", operation_id = "legacy_get_usage", tag = "legacy",
    params(("user_id" = i64, Path, description = "User id"), UsageQuery),
    responses((status = 200, description = "Usage rows", body = Vec<UsageRow>),
              (status = 403, description = "Another user's usage", body = ErrorBody)))]
#[deprecated]
pub async fn get_usage(
    state: web::Data<AppState>,
    caller: MaybeUser,
    user_id: web::Path<i64>,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    usage::get_usage(state, caller, user_id, query).await
}

/// Deprecated alias of `GET /analytics/costs`.
#[utoipa::path(get, path = "/costs", operation_id = "legacy_get_costs", tag = "legacy", params(CostsQuery),
    responses((status = 200, description = "Cost report", body = CostsResponse),
              (status = 403, description = "Another user's costs", body = ErrorBody)))]
#[deprecated]
pub async fn get_costs(
    state: web::Data<AppState>,
    caller: MaybeUser,
    query: web::Query<CostsQuery>,
) -> Result<HttpResponse, ApiError> {
    usage::get_costs(state, caller, query).await
}

#[allow(deprecated)]
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/register")
            .wrap(from_fn(deprecated))
            .route(web::post().to(register)),
    )
    .service(
        web::resource("/login")
            .wrap(from_fn(deprecated))
            .route(web::post().to(login)),
    )
    .service(
        web::resource("/verify")
            .wrap(from_fn(deprecated))
            .route(web::get().to(verify)),
    )
    .service(
        web::resource("/profile")
            .wrap(from_fn(deprecated))
            .route(web::get().to(get_profile))
            .route(web::put().to(put_profile)),
    )
    .service(
        web::resource("/events")
            .wrap(from_fn(deprecated))
            .route(web::post().to(post_event)),
    )
    .service(
        web::resource("/metrics")
            .wrap(from_fn(deprecated))
            .route(web::get().to(list_metrics)),
    )
    .service(
        web::resource("/usage/{user_id}")
            .wrap(from_fn(deprecated))
            .route(web::get().to(get_usage)),
    )
    .service(
        web::resource("/costs")
            .wrap(from_fn(deprecated))
            .route(web::get().to(get_costs)),
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn successors() {
        assert_eq!(super::successor("/login"), "/auth/login");
        assert_eq!(super::successor("/usage/7"), "/analytics/usage/7");
        assert_eq!(super::successor("/metrics"), "/analytics/metrics");
    }
}
