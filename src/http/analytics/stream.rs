//! `/analytics/events/stream`: committed events as Server-Sent Events.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use tokio::time::{Instant, Interval, MissedTickBehavior, interval_at};
use utoipa::IntoParams;

use super::dto::EventQuery;
use crate::analytics::domain::EventFilter;
use crate::analytics::live::{LiveEvent, Next, REPLAY_BATCH, Subscription};
use crate::analytics::{Invalid, QueryError};
use crate::http::error::ErrorBody;
use crate::http::net::client_info;
use crate::http::{ApiError, AppState};
use crate::keys::Caller;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Resume after this event id, for clients that cannot send the
    /// `Last-Event-ID` header (the header wins when both are present).
    pub last_event_id: Option<i64>,
}

/// How long a browser waits before reconnecting, in milliseconds.
const RETRY_MS: u32 = 2000;

/// Committed events as they are stored, on every replica, filtered like
/// `GET /analytics/events`.
///
/// Each message is `data: <the event as JSON>` and `id:` the largest event
/// id sent so far (replicas commit in their own order, so events do not
/// arrive in id order; this is the point to resume from). With
/// `Last-Event-ID` (or `last_event_id`) the stored events after that id are
/// sent first, in id order, then the live ones, each once. A comment line
/// comes every `STREAM_HEARTBEAT` seconds. A subscriber that falls
/// `STREAM_BUFFER` events behind gets `event: dropped` and the stream ends;
/// it resumes with the last id it received. At most
/// `STREAM_MAX_PER_CALLER` streams are open per API key (or address).
#[utoipa::path(
    get, path = "/analytics/events/stream", tag = "analytics",
    params(
        EventQuery, StreamQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "The last event id received: resume after it"),
    ),
    responses(
        (status = 200, description = "An endless stream of events", content_type = "text/event-stream", body = String),
        (status = 422, description = "A filter or the resume id out of range", body = ErrorBody),
        (status = 429, description = "Too many open streams for this caller", body = ErrorBody),
    )
)]
pub async fn stream_events(
    state: web::Data<AppState>,
    req: HttpRequest,
    filter: web::Query<EventQuery>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = filter.into_inner().parse()?;
    let resume = resume_after(&req, query.last_event_id)?;
    let sub = state.live.subscribe(caller_key(&state, &req))?;
    let heartbeat = state.live.settings.heartbeat;
    let mut ticks = interval_at(Instant::now() + heartbeat, heartbeat);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let conn = Conn {
        sub,
        filter,
        state: state.clone(),
        phase: Phase::Start(resume),
        heartbeat: ticks,
        sent_through: resume.unwrap_or(0),
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        // nginx would otherwise buffer the stream.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(futures_util::stream::unfold(conn, |mut conn| async move {
            let bytes = conn.step().await?;
            Some((Ok::<_, actix_web::Error>(web::Bytes::from(bytes)), conn))
        })))
}

fn resume_after(req: &HttpRequest, query: Option<i64>) -> Result<Option<i64>, Invalid> {
    let header = match req.headers().get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| Invalid::new("Last-Event-ID must be an event id"))?,
        ),
        None => None,
    };
    match header.or(query) {
        Some(id) if id < 0 => Err(Invalid::new("last_event_id must be at least 0")),
        id => Ok(id),
    }
}

/// Whose bound a stream counts against: the API key, else the address.
fn caller_key(state: &AppState, req: &HttpRequest) -> String {
    use actix_web::HttpMessage;
    if let Some(c) = req.extensions().get::<Caller>() {
        return match c.key_id {
            Some(id) => format!("key:{id}"),
            None => format!("key:{}", c.name),
        };
    }
    match client_info(&state.settings.http, req).ip {
        Some(ip) => format!("ip:{ip}"),
        None => "anonymous".into(),
    }
}

enum Phase {
    Start(Option<i64>),
    Replay(i64),
    Live,
    Done,
}

struct Conn {
    /// The largest event id sent: each message's `id:`, so the resume point.
    /// Replicas commit in an order of their own, so events do not arrive in
    /// id order, and the last id received would replay the higher ones
    /// already sent.
    sent_through: i64,
    sub: Subscription,
    filter: EventFilter,
    state: web::Data<AppState>,
    phase: Phase,
    heartbeat: Interval,
}

fn notice(event: &str, detail: &str) -> String {
    format!(
        "event: {event}\ndata: {}\n\n",
        serde_json::json!({ "detail": detail })
    )
}

impl Conn {
    fn frame(&mut self, e: &LiveEvent) -> String {
        self.sent_through = self.sent_through.max(e.id);
        format!("id: {}\ndata: {}\n\n", self.sent_through, e.json)
    }

    /// The next bytes to send; `None` ends the stream.
    async fn step(&mut self) -> Option<String> {
        match self.phase {
            Phase::Start(resume) => {
                self.phase = resume.map_or(Phase::Live, Phase::Replay);
                Some(format!("retry: {RETRY_MS}\n: connected\n\n"))
            }
            Phase::Replay(after) => match self.replay(after).await {
                Ok(events) => {
                    self.phase = match events.last() {
                        Some(last) if events.len() as u64 == REPLAY_BATCH => Phase::Replay(last.id),
                        _ => Phase::Live,
                    };
                    let frames: String = events.iter().map(|e| self.frame(e)).collect();
                    Some(frames + ": replayed\n\n")
                }
                Err(e) => {
                    tracing::warn!(error = %e, after, "stream replay failed");
                    self.phase = Phase::Done;
                    Some(notice(
                        "error",
                        "The stored events could not be read; reconnect to resume",
                    ))
                }
            },
            Phase::Live => tokio::select! {
                next = self.sub.next(&self.filter) => match next {
                    Next::Event(e) => Some(self.frame(&e)),
                    Next::Behind => {
                        self.phase = Phase::Done;
                        Some(notice(
                            "dropped",
                            "This stream fell too far behind and was closed; reconnect with the last id received to resume",
                        ))
                    }
                    Next::Closed => None,
                },
                _ = self.heartbeat.tick() => Some(": heartbeat\n\n".into()),
            },
            Phase::Done => None,
        }
    }

    /// Replays from the primary: a replica could lag behind events the
    /// subscription began after, and they would be lost.
    async fn replay(&mut self, after: i64) -> Result<Vec<LiveEvent>, QueryError> {
        self.sub.replay(&self.state.db, &self.filter, after).await
    }
}
