//! `/dashboard`: the analytics page, its script and stylesheet compiled
//! into the binary (it works offline), under a strict Content-Security-Policy:
//! code and styles from this server only, requests to this server only.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};

const PAGE: &str = include_str!("../../assets/dashboard/index.html");
const SCRIPT: &str = include_str!("../../assets/dashboard/app.js");
const STYLE: &str = include_str!("../../assets/dashboard/app.css");

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        // Assets change with the binary; revalidating costs one small read.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

async fn page() -> HttpResponse {
    asset("text/html; charset=utf-8", PAGE)
}

async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/dashboard", web::get().to(page))
        .route("/dashboard/", web::get().to(page))
        .route("/dashboard/app.js", web::get().to(script))
        .route("/dashboard/app.css", web::get().to(style));
}

/// Whether `path` is one of the page's (they need no key: the page asks
/// for one).
pub fn is_page(path: &str) -> bool {
    matches!(
        path,
        "/dashboard" | "/dashboard/" | "/dashboard/app.js" | "/dashboard/app.css"
    )
}
