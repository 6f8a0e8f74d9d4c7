//! Extractor settings: body limits and `{"detail": …}` for every malformed input.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError, UrlencodedError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, web};

use crate::error::json_error;

fn reject(status: StatusCode, detail: String) -> actix_web::Error {
    actix_web::error::InternalError::from_response(detail.clone(), json_error(status, detail))
        .into()
}

fn json_error_handler(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    match &err {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body exceeds the limit of {limit} bytes"),
        ),
        JsonPayloadError::ContentType => reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Expected a JSON body (Content-Type: application/json)".into(),
        ),
        JsonPayloadError::Deserialize(e) => reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Invalid JSON body: {e}"),
        ),
        other => reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Invalid JSON body: {other}"),
        ),
    }
}

fn query_error_handler(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    reject(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("Invalid query parameters: {err}"),
    )
}

fn path_error_handler(err: PathError, _req: &HttpRequest) -> actix_web::Error {
    reject(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("Invalid path parameter: {err}"),
    )
}

fn form_error_handler(err: UrlencodedError, _req: &HttpRequest) -> actix_web::Error {
    match err {
        UrlencodedError::Overflow { limit, .. } => reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body exceeds the limit of {limit} bytes"),
        ),
        other => reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Invalid form body: {other}"),
        ),
    }
}

/// Registers extractor configs on the app.
pub fn extractors(limit: usize) -> impl Fn(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(
            web::JsonConfig::default()
                .limit(limit)
                .error_handler(json_error_handler),
        )
        .app_data(web::PayloadConfig::default().limit(limit))
        .app_data(
            web::FormConfig::default()
                .limit(limit.min(64 * 1024))
                .error_handler(form_error_handler),
        )
        .app_data(web::QueryConfig::default().error_handler(query_error_handler))
        .app_data(web::PathConfig::default().error_handler(path_error_handler));
    }
}
