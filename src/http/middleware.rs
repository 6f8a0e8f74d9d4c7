//! Cross-cutting HTTP layers: request ids, spans and access logs, route
//! metrics, panic containment and JSON error bodies.

use std::cell::RefCell;
use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use futures_util::FutureExt;
use tracing::Instrument;

use super::json_error;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id, stored in request extensions for handlers and logs.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

fn incoming_request_id(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(&REQUEST_ID)?.to_str().ok()?;
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| value.to_string())
}

thread_local! {
    /// Paths that are their own route pattern (the static routes), as this
    /// worker has met them. Only a path equal to a pattern enters, so the
    /// set holds at most one entry per route.
    static STATIC_ROUTES: RefCell<HashSet<Box<str>>> = RefCell::default();
}

/// The request's route pattern, or "unmatched". actix finds it by trying
/// every route in turn, regular expressions included (3% of the server's
/// CPU on single events), so static routes are looked up once per worker.
fn route_pattern(req: &ServiceRequest) -> String {
    let path = req.path();
    if STATIC_ROUTES.with_borrow(|known| known.contains(path)) {
        return path.to_string();
    }
    let Some(pattern) = req.match_pattern() else {
        return "unmatched".to_string();
    };
    if pattern == path {
        STATIC_ROUTES.with_borrow_mut(|known| known.insert(path.into()));
    }
    pattern
}

/// Outermost layer: gives every request an id, a span and an access log line,
/// counts it by route pattern, turns panics into 500 JSON, and makes sure
/// every error body is `{"detail": …}`.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let start = Instant::now();
    let request_id = incoming_request_id(&req).unwrap_or_else(new_request_id);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = req.method().to_string();
    let route = route_pattern(&req);
    let span = tracing::info_span!(
        "http_request",
        request_id = %request_id,
        method = %method,
        route = %route,
    );

    let outcome = AssertUnwindSafe(next.call(req).instrument(span.clone()))
        .catch_unwind()
        .await;
    // Routing needs the only reference to the request, so failures that come
    // back without a response are answered as errors, which actix renders.
    let result: Result<ServiceResponse<BoxBody>, Error> = match outcome {
        Ok(Ok(res)) => {
            let res = res.map_into_boxed_body();
            let status = res.status();
            if (status.is_client_error() || status.is_server_error()) && !is_json(&res) {
                Ok(replace_body_with_detail(res))
            } else {
                Ok(res)
            }
        }
        Ok(Err(err)) => Err(err),
        Err(_) => {
            metrics::counter!("http_panics_total").increment(1);
            span.in_scope(|| tracing::error!("handler panicked"));
            Err(actix_web::error::InternalError::from_response(
                "handler panicked",
                json_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error"),
            )
            .into())
        }
    };
    let status = match &result {
        Ok(res) => res.status(),
        Err(err) => err.as_response_error().status_code(),
    };
    let elapsed = start.elapsed().as_secs_f64();
    let code = status.as_u16().to_string();
    // The line first: the metrics below take the strings.
    if tracing::enabled!(tracing::Level::INFO) {
        let line = crate::telemetry::AccessLine {
            request_id: &request_id,
            method: &method,
            route: &route,
            status: status.as_u16(),
            latency_ms: elapsed * 1000.0,
        };
        if !crate::telemetry::write_access_line(&line) {
            span.in_scope(|| {
                tracing::info!(
                    status = status.as_u16(),
                    latency_ms = elapsed * 1000.0,
                    "request"
                )
            });
        }
    }
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => code).increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed);
    let mut res = result?;
    res.headers_mut().insert(
        REQUEST_ID,
        HeaderValue::from_str(&request_id).expect("request ids are visible ASCII"),
    );
    Ok(res)
}

fn is_json(res: &ServiceResponse<BoxBody>) -> bool {
    res.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

fn replace_body_with_detail(res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let status = res.status();
    let detail = match status {
        StatusCode::NOT_FOUND => "Not Found".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "Method Not Allowed".to_string(),
        other => other.canonical_reason().unwrap_or("Error").to_string(),
    };
    let (req, old) = res.into_parts();
    let mut fresh = json_error(status, detail);
    // Keep headers such as Allow, Retry-After and WWW-Authenticate.
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    ServiceResponse::new(req, fresh)
}

/// A random (v4) UUID from the thread's generator: `Uuid::new_v4` asks the
/// kernel for every one, a system call per request.
fn new_request_id() -> String {
    let bytes: [u8; 16] = rand::Rng::random(&mut rand::rng());
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}
