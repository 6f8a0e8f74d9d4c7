//! Bounds on what one request may take: the size of its head, and the time
//! its body may take to arrive. actix bounds only the head's arrival (408
//! after `client_request_timeout`) and refuses heads only past 128 KiB; once
//! the head is parsed, nothing bounds how slowly a body comes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::{ConnectionType, StatusCode, header};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{Error, HttpMessage, HttpResponse, web};
use futures_util::Stream;
use tokio::time::{Instant, Sleep, sleep_until};

use super::json_error;
use crate::config::HttpSettings;

#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_header_bytes: usize,
    pub body_idle: Duration,
    pub body_total: Duration,
}

impl RequestLimits {
    pub fn new(http: &HttpSettings) -> Self {
        RequestLimits {
            max_header_bytes: http.max_header_bytes,
            body_idle: http.body_idle_timeout,
            body_total: http.body_timeout,
        }
    }
}

/// An error answer after which the connection is closed: the rest of what
/// the client sends is not read.
pub fn closing_error(status: StatusCode, detail: impl Into<String>) -> HttpResponse {
    let mut resp = json_error(status, detail);
    resp.head_mut().set_connection_type(ConnectionType::Close);
    resp
}

/// What a body that took too long fails with; the extractors answer it 408.
pub fn is_body_timeout(err: &PayloadError) -> bool {
    matches!(err, PayloadError::Io(e) if e.kind() == io::ErrorKind::TimedOut)
}

/// Refuses oversized heads (431) and puts the body under its deadlines.
pub async fn bound_request(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let limits = *req
        .app_data::<web::Data<RequestLimits>>()
        .expect("RequestLimits is registered as app data")
        .get_ref();
    let head: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if head > limits.max_header_bytes {
        let (http_req, _) = req.into_parts();
        return Ok(ServiceResponse::new(
            http_req,
            closing_error(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "Request headers exceed the limit of {} bytes",
                    limits.max_header_bytes
                ),
            ),
        ));
    }
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        let timed = TimedBody {
            inner: Some(req.take_payload()),
            idle: limits.body_idle,
            total: limits.body_total,
            timers: None,
            park: park_payload,
        };
        req.set_payload(Payload::Stream {
            payload: Box::pin(timed),
        });
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

type Deadline = Pin<Box<Sleep>>;

/// How long a timed-out body is held after its 408 is sent.
const PARK: Duration = Duration::from_secs(5);

/// Holds a timed-out body while its 408 goes out. actix keeps reading an
/// unfinished chunked body once the handler has dropped it (to reuse the
/// connection), so a stalled one would hold the connection for good; a body
/// still held when the answer is sent makes it close the connection instead.
fn park_payload(payload: Payload) {
    actix_web::rt::spawn(async move {
        tokio::time::sleep(PARK).await;
        drop(payload);
    });
}

/// A body stream that fails once no byte has come for `idle`, or the whole
/// body has not come within `total` of the first read.
struct TimedBody<S> {
    /// Taken (and parked) when the body times out.
    inner: Option<S>,
    idle: Duration,
    total: Duration,
    /// (idle deadline, total deadline), started at the first poll.
    timers: Option<(Deadline, Deadline)>,
    park: fn(S),
}

impl<S> Stream for TimedBody<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let now = Instant::now();
        let (idle, total) = this.timers.get_or_insert_with(|| {
            (
                Box::pin(sleep_until(now + this.idle)),
                Box::pin(sleep_until(now + this.total)),
            )
        });
        let expired = if total.as_mut().poll(cx).is_ready() {
            true
        } else {
            match Pin::new(inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    idle.as_mut().reset(Instant::now() + this.idle);
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Pending => idle.as_mut().poll(cx).is_ready(),
                done => return done,
            }
        };
        if !expired {
            return Poll::Pending;
        }
        if let Some(inner) = this.inner.take() {
            (this.park)(inner);
        }
        Poll::Ready(Some(Err(PayloadError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "request body timed out",
        )))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    // Real time, short deadlines, asserted by which one ended the body (a
    // paused clock needs tokio's test-util, which split the dependency
    // build in two: `cargo build` after `cargo test` rebuilt the tree).
    #[tokio::test]
    async fn a_stalled_body_fails_at_its_idle_deadline() {
        let stalled = futures_util::stream::pending::<Result<Bytes, PayloadError>>();
        let mut body = TimedBody {
            inner: Some(stalled),
            idle: Duration::from_millis(50),
            total: Duration::from_secs(30),
            timers: None,
            park: drop,
        };
        let started = Instant::now();
        let err = body.next().await.unwrap().unwrap_err();
        assert!(is_body_timeout(&err));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        assert!(waited < Duration::from_secs(30), "{waited:?}");
    }

    #[tokio::test]
    async fn a_trickling_body_fails_at_its_total_deadline() {
        // A byte every 20 ms keeps resetting the 500 ms idle deadline; the
        // total one (1.5 s) ends it. Were idle not reset, it would end at 500 ms.
        let trickle = futures_util::stream::unfold((), |_| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Some((Ok(Bytes::from_static(b"x")), ()))
        });
        let mut body = TimedBody {
            inner: Some(Box::pin(trickle)),
            idle: Duration::from_millis(500),
            total: Duration::from_millis(1500),
            timers: None,
            park: drop,
        };
        let started = Instant::now();
        let mut bytes = 0;
        let err = loop {
            match body.next().await.unwrap() {
                Ok(b) => bytes += b.len(),
                Err(e) => break e,
            }
        };
        assert!(is_body_timeout(&err));
        assert!(bytes >= 2, "{bytes} bytes");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(1500), "{waited:?}");
        assert!(waited < Duration::from_secs(30), "{waited:?}");
    }
}
