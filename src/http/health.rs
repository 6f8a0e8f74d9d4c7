//! Probes: `/health` (the original's shape, from real checks), `/health/live`
//! (no I/O) and `/health/ready` (database reachable and migrated).

use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::jobs::JobHealth;

/// A probe must answer quickly even when a dependency hangs.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Serialize, ToSchema)]
pub struct HealthResponse {
    /// `healthy`, `degraded` (Redis down) or `unhealthy` (database down).
    #[schema(example = "healthy")]
    pub status: &'static str,
    #[schema(example = "platform-services")]
    pub service: &'static str,
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub components: Components,
    pub endpoints: Endpoints,
    /// Last run of each background job (from the database, so every replica agrees).
    pub jobs: Vec<JobHealth>,
    /// Present when unhealthy, as the original answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'static str>,
}

#[derive(Serialize, ToSchema)]
pub struct Components {
    pub auth: ServiceComponent,
    pub analytics: ServiceComponent,
    pub database: DatabaseComponent,
    pub redis: RedisComponent,
}

#[derive(Serialize, ToSchema)]
pub struct ServiceComponent {
    pub status: &'static str,
    pub port: u16,
}

#[derive(Serialize, ToSchema)]
pub struct DatabaseComponent {
    pub status: &'static str,
    /// `active` or `failed`.
    pub connection: &'static str,
    /// `postgres` or `sqlite`.
    pub backend: &'static str,
    pub pool_size: u32,
    pub checked_out: u32,
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Streaming replicas serving analytics reads, as the last check (every
    /// second) found them; absent without `DATABASE_REPLICA_URLS`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaHealth>,
}

#[derive(Serialize, ToSchema)]
pub struct ReplicaHealth {
    /// `host:port/database`.
    pub name: String,
    /// `in_use`, `lagging` (past `DATABASE_REPLICA_MAX_LAG`) or `unreachable`.
    pub state: &'static str,
    /// Seconds of replay lag; null while unreachable.
    pub lag_seconds: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct RedisComponent {
    /// `healthy`, `unhealthy`, or `not_configured` (in-process cache).
    pub status: &'static str,
    /// `redis`, `redis-cluster` or `in-process`.
    pub backend: &'static str,
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Endpoints {
    pub auth: Vec<&'static str>,
    pub analytics: Vec<&'static str>,
}

#[derive(Serialize, ToSchema)]
pub struct Probe {
    #[schema(example = "ok")]
    pub status: &'static str,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

async fn check_database(state: &AppState) -> DatabaseComponent {
    let start = Instant::now();
    let result = tokio::time::timeout(CHECK_TIMEOUT, state.db.ping()).await;
    let (pool_size, checked_out) = crate::db::pool_stats(&state.db);
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("timed out".to_string()),
    };
    if let Some(e) = &error {
        tracing::warn!(error = %e, "database health check failed");
    }
    metrics::gauge!("component_up", "component" => "database")
        .set(f64::from(u8::from(error.is_none())));
    DatabaseComponent {
        status: if error.is_none() {
            "healthy"
        } else {
            "unhealthy"
        },
        connection: if error.is_none() { "active" } else { "failed" },
        backend: crate::db::backend_name(&state.db),
        pool_size,
        checked_out,
        latency_ms: error.is_none().then(|| ms(start.elapsed())),
        error: error.map(|_| "database unreachable".to_string()),
        replicas: state
            .reads
            .status()
            .into_iter()
            .map(|r| ReplicaHealth {
                name: r.name,
                state: r.state,
                lag_seconds: r.lag_seconds,
            })
            .collect(),
    }
}

async fn check_redis(state: &AppState) -> RedisComponent {
    let backend = state.cache.backend();
    let ping = state.cache.ping().await;
    if let Some(result) = &ping {
        metrics::gauge!("component_up", "component" => "redis")
            .set(f64::from(u8::from(result.is_ok())));
    }
    match ping {
        None => RedisComponent {
            status: "not_configured",
            backend,
            latency_ms: None,
            error: None,
        },
        Some(Ok(latency)) => RedisComponent {
            status: "healthy",
            backend,
            latency_ms: Some(ms(latency)),
            error: None,
        },
        Some(Err(e)) => {
            tracing::warn!(error = %e, "redis health check failed");
            RedisComponent {
                status: "unhealthy",
                backend,
                latency_ms: None,
                error: Some("redis unreachable".to_string()),
            }
        }
    }
}

/// Runs the checks behind `/health` on a schedule, so the gauges alerts read
/// (`component_up`, `job_lag_seconds`) stay current: Prometheus scrapes the
/// metrics port, not `/health`.
pub async fn watch(state: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let (database, _) = tokio::join!(check_database(&state), check_redis(&state));
                if database.connection == "active" {
                    let _ = tokio::time::timeout(CHECK_TIMEOUT, crate::jobs::status(&state.db)).await;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Overall health from real checks of the database and Redis.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "Healthy, or degraded (Redis down)", body = HealthResponse),
        (status = 503, description = "Database unreachable", body = HealthResponse),
    )
)]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let (database, redis) = tokio::join!(check_database(&state), check_redis(&state));
    let db_ok = database.connection == "active";
    let jobs = if db_ok {
        tokio::time::timeout(CHECK_TIMEOUT, crate::jobs::status(&state.db))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
            .into_iter()
            .map(JobHealth::from)
            .collect()
    } else {
        vec![]
    };
    let status = match (db_ok, redis.status) {
        (false, _) => "unhealthy",
        (true, "unhealthy") => "degraded",
        _ => "healthy",
    };
    let service_status = if db_ok { "healthy" } else { "unhealthy" };
    let port = state.settings.http.port;
    let body = HealthResponse {
        status,
        service: "platform-services",
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started_at.elapsed().as_secs(),
        components: Components {
            auth: ServiceComponent {
                status: service_status,
                port,
            },
            analytics: ServiceComponent {
                status: service_status,
                port,
            },
            database,
            redis,
        },
        endpoints: Endpoints {
            auth: vec![
                "/auth/register",
                "/auth/login",
                "/auth/verify",
                "/auth/profile",
            ],
            analytics: vec![
                "/analytics/events",
                "/analytics/metrics",
                "/analytics/usage",
                "/analytics/costs",
            ],
        },
        jobs,
        detail: (!db_ok).then_some("Service unhealthy"),
    };
    if db_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Liveness: the process serves HTTP. No I/O.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "health",
    security(()),
    responses((status = 200, description = "Alive", body = Probe))
)]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Probe { status: "ok" })
}

/// Readiness: the database answers and every migration is applied.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "Ready", body = Probe),
        (status = 503, description = "Database unreachable or not migrated", body = super::ErrorBody),
    )
)]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    match tokio::time::timeout(CHECK_TIMEOUT, crate::db::is_ready(&state.db)).await {
        Ok(Ok(true)) => HttpResponse::Ok().json(Probe { status: "ok" }),
        Ok(Ok(false)) => super::json_error(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "Database migrations pending",
        ),
        _ => super::json_error(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "Database unreachable",
        ),
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health").route(web::get().to(health)))
        .service(web::resource("/health/live").route(web::get().to(live)))
        .service(web::resource("/health/ready").route(web::get().to(ready)));
}
