//! Extractor settings: body limits and `{"detail": …}` for every malformed input.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::Payload;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError, UrlencodedError};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use serde::de::{self, DeserializeOwned};

use super::bounded::{self, JsonLimits};
use super::json_error;
use super::limits::{closing_error, is_body_timeout};

fn reject(status: StatusCode, detail: String) -> actix_web::Error {
    actix_web::error::InternalError::from_response(detail.clone(), json_error(status, detail))
        .into()
}

/// 408 and a closed connection for a body that took too long to arrive.
fn body_timeout() -> actix_web::Error {
    actix_web::error::InternalError::from_response(
        "request body timed out",
        closing_error(
            StatusCode::REQUEST_TIMEOUT,
            "Request body was not received in time",
        ),
    )
    .into()
}

fn json_error_handler(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    match &err {
        JsonPayloadError::Payload(e) if is_body_timeout(e) => body_timeout(),
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body exceeds the limit of {limit} bytes"),
        ),
        JsonPayloadError::ContentType => reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Expected a JSON body (Content-Type: application/json)".into(),
        ),
        JsonPayloadError::Deserialize(e) => {
            let detail = e.to_string();
            let detail = if detail.starts_with(NOT_AN_OBJECT) {
                NOT_AN_OBJECT
            } else {
                &detail
            };
            reject(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Invalid JSON body: {detail}"),
            )
        }
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
        UrlencodedError::Payload(e) if is_body_timeout(&e) => body_timeout(),
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

/// A JSON body that must be an object. `web::Json` alone lets serde read a
/// struct from an array (`["a@b.c", "pw"]`), which no client means.
/// Limits, content type and errors are `web::Json`'s (see `extractors`).
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        // One pass over the body: `web::Json` deserializes where the body
        // completes, so the limits are in force around every poll.
        let mut body = Box::pin(web::Json::<Object<T>>::from_request(req, payload));
        let limits = req.app_data::<JsonLimits>().copied().unwrap_or_default();
        Box::pin(async move {
            let web::Json(Object(value)) =
                std::future::poll_fn(|cx| bounded::with_limits(limits, || body.as_mut().poll(cx)))
                    .await?;
            Ok(Json(value))
        })
    }
}

/// The refusal of a body that is JSON but not an object.
const NOT_AN_OBJECT: &str = "expected an object";

/// `T` read from a JSON object and from nothing else.
struct Object<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectVisitor(std::marker::PhantomData))
    }
}

struct ObjectVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: serde::Deserialize<'de>> de::Visitor<'de> for ObjectVisitor<T> {
    type Value = Object<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Object)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Object<T>, A::Error> {
        Err(de::Error::custom(NOT_AN_OBJECT))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Object<T>, E> {
        Err(E::custom(NOT_AN_OBJECT))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Object<T>, E> {
        Err(E::custom(NOT_AN_OBJECT))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Object<T>, E> {
        Err(E::custom(NOT_AN_OBJECT))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Object<T>, E> {
        Err(E::custom(NOT_AN_OBJECT))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Object<T>, E> {
        Err(E::custom(NOT_AN_OBJECT))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Object<T>, E> {
        Err(E::custom(NOT_AN_OBJECT))
    }
}

/// An optional JSON object body: absent (no bytes) is `None`; present, it
/// must be valid. `Option<Json<T>>` would turn a malformed body into `None`.
#[derive(Debug)]
pub struct MaybeJson<T>(pub Option<T>);

impl<T: DeserializeOwned + 'static> FromRequest for MaybeJson<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let headers = req.headers();
        let empty = match headers.get(header::CONTENT_LENGTH) {
            Some(len) => len.as_bytes() == b"0",
            None => !headers.contains_key(header::TRANSFER_ENCODING),
        };
        if empty {
            return Box::pin(std::future::ready(Ok(MaybeJson(None))));
        }
        let body = Json::<T>::from_request(req, payload);
        Box::pin(async move { Ok(MaybeJson(Some(body.await?.0))) })
    }
}

/// A JSON object body, or the same fields form-encoded (as OAuth2 clients
/// send them), chosen by `Content-Type`.
#[derive(Debug)]
pub struct JsonOrForm<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonOrForm<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if form {
            let body = web::Form::<T>::from_request(req, payload);
            Box::pin(async move { Ok(JsonOrForm(body.await?.into_inner())) })
        } else {
            let body = Json::<T>::from_request(req, payload);
            Box::pin(async move { Ok(JsonOrForm(body.await?.0)) })
        }
    }
}

/// Refuses a NUL character anywhere in the URL: text columns cannot hold one,
/// so it would otherwise fail deep in a query rather than as bad input.
pub async fn refuse_nul(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let uri = req.uri();
    let raw = uri.path_and_query().map_or("", |pq| pq.as_str());
    if raw.contains("%00") {
        let (http_req, _) = req.into_parts();
        return Ok(ServiceResponse::new(
            http_req,
            json_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "NUL characters (%00) are not allowed in the URL",
            ),
        ));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Registers extractor configs on the app.
pub fn extractors(limit: usize, json: JsonLimits) -> impl Fn(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(json)
            .app_data(
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
