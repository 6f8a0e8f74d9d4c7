//! The caller guard: who presents which API key, whether its scopes cover
//! the route, and whether its rate allows one more request.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpRequest, ResponseError, web};

use super::error::ratelimit_headers;
use super::{ApiError, AppState};
use crate::keys::{Quota, Scope};

pub const API_KEY_HEADER: &str = "x-api-key";

/// Paths that need no key: probes, docs, the dashboard page (it asks for
/// one) and public key material. The OAuth2
/// token endpoint checks its client itself, because clients send the key as
/// the client secret rather than as a header.
pub(crate) fn is_exempt(path: &str) -> bool {
    path == "/"
        || path == "/auth/token"
        || path == "/health"
        || path.starts_with("/health/")
        || path == "/docs"
        || path.starts_with("/docs/")
        || path == "/openapi.json"
        || path.starts_with("/.well-known/")
        || super::dashboard::is_page(path)
}

/// The scope a route needs; `None` for exempt and unknown paths.
pub(crate) fn scope_for(method: &Method, path: &str) -> Option<Scope> {
    const LEGACY_AUTH: [&str; 4] = ["/register", "/login", "/verify", "/profile"];
    if is_exempt(path) {
        return None;
    }
    let ingest_path = path == "/analytics/events"
        || path == "/analytics/events/batch"
        || path == "/analytics/metrics"
        || path == "/analytics/metrics/batch"
        || path == "/events";
    if path.starts_with("/auth/users")
        || path.starts_with("/admin/")
        || path.starts_with("/analytics/jobs/")
    {
        Some(Scope::Admin)
    } else if path.starts_with("/auth/") || LEGACY_AUTH.contains(&path) {
        Some(Scope::Auth)
    } else if ingest_path && method == Method::POST {
        Some(Scope::Ingest)
    } else if path.starts_with("/analytics/")
        || path == "/metrics"
        || path == "/costs"
        || path.starts_with("/usage/")
        || ingest_path
    {
        Some(Scope::Read)
    } else {
        None
    }
}

/// Where the caller's rate stood when this request was admitted.
#[derive(Clone, Copy, Debug)]
struct Admitted(Quota);

/// Guards every route but the exempt ones, legacy aliases included.
pub async fn authorize_caller(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("AppState is registered")
        .clone();
    let keys = &state.keys;
    // Every path but the exempt ones needs a key, unknown ones included, so
    // a 404 tells nothing to a caller without one.
    let guarded = req.method() != Method::OPTIONS && !is_exempt(req.path());
    let scope = if guarded {
        scope_for(req.method(), req.path())
    } else {
        None
    };
    let presented = req.headers().get(API_KEY_HEADER).map(|v| v.as_bytes());
    let outcome: Result<Option<Quota>, ApiError> = async {
        let caller = match presented {
            Some(key) => match keys.authenticate(key).await {
                Ok(caller) => caller,
                // Without a requirement, or where no key is needed, a bad
                // key is ignored as the original did.
                Err(_) if !guarded || !keys.required() => return Ok(None),
                Err(e) => return Err(e.into()),
            },
            None if guarded && keys.required() => {
                return Err(ApiError::Unauthorized("Missing API key".into()));
            }
            None => return Ok(None),
        };
        if let Some(scope) = scope {
            keys.require(&caller, scope)?;
        }
        // Exempt paths count nothing here: the token endpoint admits its
        // client itself, whichever way the key came.
        let admitted = if guarded {
            keys.admit(&caller).await?
        } else {
            None
        };
        req.extensions_mut().insert(caller);
        Ok(admitted)
    }
    .await;
    let admitted = match outcome {
        Ok(admitted) => admitted,
        Err(err) => {
            let (http_req, _) = req.into_parts();
            return Ok(ServiceResponse::new(http_req, err.error_response()));
        }
    };
    if let Some(q) = admitted {
        req.extensions_mut().insert(Admitted(q));
    }
    let mut res = next.call(req).await?.map_into_boxed_body();
    // A handler that set its own (a quota closer to its end) keeps them.
    if let Some(q) = admitted
        && !res.headers().contains_key("ratelimit-limit")
    {
        for (name, value) in ratelimit_headers(&q) {
            res.headers_mut().insert(name, value);
        }
    }
    Ok(res)
}

/// Of the rate and the quota, the one closer to its end, for the headers.
pub fn tighter(req: &HttpRequest, quota: Option<Quota>) -> Option<Quota> {
    let rate = req.extensions().get::<Admitted>().map(|a| a.0);
    match (rate, quota) {
        (Some(r), Some(q)) if q.remaining < r.remaining => Some(q),
        (Some(_), Some(_)) => None,
        (None, q) => q,
        (Some(_), None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_probes_docs_token_and_well_known_are_exempt() {
        for p in [
            "/health",
            "/health/ready",
            "/docs",
            "/docs/index.html",
            "/openapi.json",
            "/.well-known/jwks.json",
            "/auth/token",
            "/dashboard",
            "/dashboard/app.js",
        ] {
            assert!(is_exempt(p), "{p}");
        }
        for p in [
            "/auth/login",
            "/analytics/events",
            "/metrics",
            "/login",
            "/healthz",
            "/docsx",
            "/dashboard/other",
        ] {
            assert!(!is_exempt(p), "{p}");
        }
    }

    #[test]
    fn every_documented_operation_needs_its_scope() {
        let doc = crate::http::openapi::document();
        let mut seen = 0;
        for (path, item) in &doc.paths.paths {
            // Path parameters as a request would carry them.
            let concrete = path.replace("{user_id}", "7").replace("{id}", "7");
            for (method, op) in [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ] {
                if op.is_none() {
                    continue;
                }
                seen += 1;
                let scope = scope_for(&method, &concrete);
                assert_eq!(scope.is_none(), is_exempt(path), "{method} {path}");
            }
        }
        assert!(seen > 40, "{seen} operations");
        use Scope::*;
        for (m, p, s) in [
            (Method::POST, "/auth/login", Auth),
            (Method::GET, "/auth/profile", Auth),
            (Method::GET, "/verify", Auth),
            (Method::GET, "/auth/users", Admin),
            (Method::POST, "/admin/api-keys", Admin),
            (Method::POST, "/analytics/jobs/rollup", Admin),
            (Method::POST, "/analytics/events", Ingest),
            (Method::POST, "/analytics/metrics/batch", Ingest),
            (Method::POST, "/events", Ingest),
            (Method::GET, "/analytics/events", Read),
            (Method::GET, "/analytics/costs", Read),
            (Method::GET, "/usage/3", Read),
            (Method::GET, "/metrics", Read),
        ] {
            assert_eq!(scope_for(&m, p), Some(s), "{m} {p}");
        }
    }
}
