//! The live feed: events, once committed, handed to stream subscribers on
//! every replica. With Redis, the committing replica publishes each group
//! on one channel that every replica follows (itself included), so each
//! subscriber sees each event once; without it, delivery stays in process.
//!
//! Delivery never waits for a subscriber: each replica keeps one bounded
//! ring (`tokio::sync::broadcast`), and a subscriber that falls a whole
//! ring behind is told so and dropped. What it missed is in the database,
//! and a reconnect with the last id it received replays it from there.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use sea_orm::{ColumnTrait, DatabaseConnection, QueryFilter, QueryOrder, QuerySelect};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc, watch};

use super::domain::EventFilter;
use super::queries::events_matching;
use super::views::EventResponse;
use super::{Event, QueryError};
use crate::cache::{Follower, SharedCache};
use crate::config::StreamSettings;
use crate::entity::events;

/// The channel the groups travel on (the cache prefixes it).
const CHANNEL: &str = "live:events";
/// Committed groups waiting for the publisher; past this, a group is
/// delivered on this replica only (the others can replay it).
const RELAY_BACKLOG: usize = 1024;
/// Events a replay reads per query.
pub const REPLAY_BATCH: u64 = 500;
/// Replayed ids remembered to drop their live copies: the live copies of a
/// replay are the events committed while it ran, so the newest suffice.
const REPLAYED_KEPT: usize = 10_000;

/// One committed event, ready to send.
#[derive(Debug)]
pub struct LiveEvent {
    pub id: i64,
    event_type: String,
    user_id: Option<i32>,
    session_id: Option<String>,
    api_key_id: Option<i32>,
    /// The event as the API answers it (`EventResponse`).
    pub json: String,
}

/// The fields a filter reads, parsed from a published event.
#[derive(Deserialize)]
struct Head {
    id: i64,
    event_type: String,
    user_id: Option<i32>,
    session_id: Option<String>,
    api_key_id: Option<i32>,
}

impl LiveEvent {
    fn from_event(e: &Event) -> Self {
        LiveEvent {
            id: e.id,
            event_type: e.event_type.clone(),
            user_id: e.user_id,
            session_id: e.session_id.clone(),
            api_key_id: e.api_key_id,
            json: serde_json::to_string(&EventResponse::from(e)).expect("serializable"),
        }
    }

    fn from_published(raw: &RawValue) -> Option<Self> {
        let head: Head = serde_json::from_str(raw.get()).ok()?;
        Some(LiveEvent {
            id: head.id,
            event_type: head.event_type,
            user_id: head.user_id,
            session_id: head.session_id,
            api_key_id: head.api_key_id,
            json: raw.get().to_string(),
        })
    }

    pub fn matches(&self, f: &EventFilter) -> bool {
        f.event_type.as_ref().is_none_or(|t| *t == self.event_type)
            && f.user_id.is_none_or(|u| Some(u) == self.user_id)
            && f.session_id
                .as_ref()
                .is_none_or(|s| Some(s) == self.session_id.as_ref())
            && f.api_key_id.is_none_or(|k| Some(k) == self.api_key_id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("Too many open streams for this caller (at most {max})")]
    TooManyStreams { max: usize },
}

pub struct LiveFeed {
    ring: broadcast::Sender<Arc<LiveEvent>>,
    /// Set when a shared store carries the groups to every replica.
    relay: OnceLock<mpsc::Sender<Vec<Event>>>,
    open: Mutex<HashMap<String, usize>>,
    /// True once the server is stopping: every stream ends.
    closing: watch::Sender<bool>,
    pub settings: StreamSettings,
}

impl LiveFeed {
    pub fn new(settings: StreamSettings) -> Arc<Self> {
        Arc::new(LiveFeed {
            ring: broadcast::channel(settings.buffer.max(1)).0,
            relay: OnceLock::new(),
            open: Mutex::new(HashMap::new()),
            closing: watch::channel(false).0,
            settings,
        })
    }

    /// Ends every stream, now and from now on (the server is stopping and
    /// its drain would otherwise wait for them); clients resume elsewhere.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Follows the shared channel and starts the publisher, when the cache
    /// is shared between replicas; otherwise delivery stays in process.
    pub fn start(
        self: &Arc<Self>,
        cache: SharedCache,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let follower: Arc<dyn Follower> = Arc::new(Inbox(self.clone()));
        let Some(following) = cache.follow(CHANNEL, follower, shutdown.clone()) else {
            return vec![];
        };
        let (tx, rx) = mpsc::channel(RELAY_BACKLOG);
        let _ = self.relay.set(tx);
        vec![
            following,
            tokio::spawn(publish(self.clone(), cache, rx, shutdown)),
        ]
    }

    /// Whether committed events are wanted: someone may be listening.
    pub fn wanted(&self) -> bool {
        self.relay.get().is_some() || self.ring.receiver_count() > 0
    }

    /// Hands on a committed group; never waits.
    pub fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        match self.relay.get() {
            Some(relay) => {
                if let Err(e) = relay.try_send(events) {
                    ::metrics::counter!("stream_relay_overflow_total").increment(1);
                    let events = match e {
                        mpsc::error::TrySendError::Full(v)
                        | mpsc::error::TrySendError::Closed(v) => v,
                    };
                    self.deliver(events.iter().map(LiveEvent::from_event));
                }
            }
            None => self.deliver(events.iter().map(LiveEvent::from_event)),
        }
    }

    fn deliver(&self, events: impl Iterator<Item = LiveEvent>) {
        for e in events {
            // No receiver is not an error: nobody is listening here.
            let _ = self.ring.send(Arc::new(e));
        }
    }

    /// Opens a stream for `caller`, within its bound. The subscription
    /// starts now: events committed from here on reach it.
    pub fn subscribe(self: &Arc<Self>, caller: String) -> Result<Subscription, LiveError> {
        let max = self.settings.max_per_caller;
        {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let n = open.entry(caller.clone()).or_default();
            if *n >= max {
                return Err(LiveError::TooManyStreams { max });
            }
            *n += 1;
        }
        ::metrics::gauge!("stream_connections").increment(1.0);
        Ok(Subscription {
            rx: self.ring.subscribe(),
            closing: self.closing.subscribe(),
            replayed: Replayed::default(),
            _slot: Slot {
                feed: self.clone(),
                caller,
            },
        })
    }
}

/// Publishes committed groups in commit order; a group the store cannot
/// take is delivered on this replica only. At shutdown it publishes what
/// is waiting and stops (the feed, and so the sender, lives on).
async fn publish(
    feed: Arc<LiveFeed>,
    cache: SharedCache,
    mut rx: mpsc::Receiver<Vec<Event>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let events = tokio::select! {
            events = rx.recv() => events,
            // The guard `wait_for` answers is not Send: dropped in here.
            _ = async { drop(shutdown.wait_for(|stop| *stop).await) } => {
                rx.close();
                rx.recv().await
            }
        };
        let Some(events) = events else { return };
        let body: Vec<EventResponse> = events.iter().map(EventResponse::from).collect();
        let payload = serde_json::to_string(&body).expect("serializable");
        match cache.publish(CHANNEL, &payload).await {
            Ok(true) => {}
            Ok(false) | Err(_) => feed.deliver(events.iter().map(LiveEvent::from_event)),
        }
    }
}

/// Groups arriving on the shared channel.
struct Inbox(Arc<LiveFeed>);

impl Follower for Inbox {
    fn message(&self, payload: String) {
        match serde_json::from_str::<Vec<&RawValue>>(&payload) {
            Ok(list) => self
                .0
                .deliver(list.into_iter().filter_map(LiveEvent::from_published)),
            Err(e) => tracing::warn!(error = %e, "unreadable message on the live channel"),
        }
    }
}

/// A caller's place among its open streams, given back on drop.
struct Slot {
    feed: Arc<LiveFeed>,
    caller: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.feed.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.caller);
            }
        }
        ::metrics::gauge!("stream_connections").decrement(1.0);
    }
}

#[derive(Default)]
struct Replayed {
    ids: HashSet<i64>,
    order: VecDeque<i64>,
}

impl Replayed {
    fn add(&mut self, id: i64) {
        if self.ids.insert(id) {
            self.order.push_back(id);
            if self.order.len() > REPLAYED_KEPT
                && let Some(old) = self.order.pop_front()
            {
                self.ids.remove(&old);
            }
        }
    }
}

/// What one stream receives next.
pub enum Next {
    Event(Arc<LiveEvent>),
    /// The subscriber fell a whole ring behind: it is dropped.
    Behind,
    Closed,
}

pub struct Subscription {
    rx: broadcast::Receiver<Arc<LiveEvent>>,
    closing: watch::Receiver<bool>,
    replayed: Replayed,
    _slot: Slot,
}

impl Subscription {
    /// The next live event matching `filter` that was not replayed.
    pub async fn next(&mut self, filter: &EventFilter) -> Next {
        loop {
            let received = tokio::select! {
                r = self.rx.recv() => r,
                _ = self.closing.wait_for(|c| *c) => return Next::Closed,
            };
            match received {
                Ok(e) if e.matches(filter) && !self.replayed.ids.contains(&e.id) => {
                    return Next::Event(e);
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    ::metrics::counter!("stream_dropped_total").increment(1);
                    tracing::info!(missed = n, "stream subscriber fell behind; dropped");
                    return Next::Behind;
                }
                Err(broadcast::error::RecvError::Closed) => return Next::Closed,
            }
        }
    }

    /// Stored events matching `filter` with ids above `after`, in id order,
    /// one batch; remembered so their live copies are not sent twice.
    pub async fn replay(
        &mut self,
        db: &DatabaseConnection,
        filter: &EventFilter,
        after: i64,
    ) -> Result<Vec<LiveEvent>, QueryError> {
        let rows = events_matching(filter.clone())
            .filter(events::Column::Id.gt(after))
            .order_by_asc(events::Column::Id)
            .limit(REPLAY_BATCH)
            .all(db)
            .await?;
        Ok(rows
            .iter()
            .map(|e| {
                self.replayed.add(e.id);
                LiveEvent::from_event(e)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, event_type: &str, user_id: Option<i32>) -> Event {
        Event {
            id,
            event_type: event_type.into(),
            event_data: serde_json::json!({"n": id}),
            user_id,
            session_id: None,
            event_id: None,
            timestamp: crate::time::now(),
            ip_address: None,
            user_agent: None,
            api_key_id: None,
        }
    }

    fn feed(buffer: usize) -> Arc<LiveFeed> {
        LiveFeed::new(StreamSettings {
            buffer,
            max_per_caller: 2,
            heartbeat: std::time::Duration::from_secs(15),
        })
    }

    #[tokio::test]
    async fn subscribers_get_matching_events_once_in_order() {
        let feed = feed(16);
        let mut all = feed.subscribe("a".into()).unwrap();
        let mut logins = feed.subscribe("b".into()).unwrap();
        feed.publish(vec![event(1, "login", Some(7)), event(2, "view", None)]);
        feed.publish(vec![event(3, "login", None)]);
        let login = EventFilter {
            event_type: Some("login".into()),
            ..Default::default()
        };
        let mut ids = vec![];
        for _ in 0..3 {
            match all.next(&EventFilter::default()).await {
                Next::Event(e) => ids.push(e.id),
                _ => panic!("an event"),
            }
        }
        assert_eq!(ids, [1, 2, 3]);
        for want in [1, 3] {
            match logins.next(&login).await {
                Next::Event(e) => {
                    assert_eq!(e.id, want);
                    let body: serde_json::Value = serde_json::from_str(&e.json).unwrap();
                    assert_eq!(body["event_type"], "login");
                    assert_eq!(body["event_data"]["n"], want);
                }
                _ => panic!("an event"),
            }
        }
    }

    #[tokio::test]
    async fn a_subscriber_a_ring_behind_is_told_and_publishing_never_waits() {
        let feed = feed(4);
        let mut slow = feed.subscribe("a".into()).unwrap();
        for id in 1..=10 {
            feed.publish(vec![event(id, "x", None)]);
        }
        assert!(matches!(
            slow.next(&EventFilter::default()).await,
            Next::Behind
        ));
    }

    #[tokio::test]
    async fn closing_ends_every_stream() {
        let feed = feed(4);
        let mut sub = feed.subscribe("a".into()).unwrap();
        feed.close();
        assert!(matches!(
            sub.next(&EventFilter::default()).await,
            Next::Closed
        ));
        let mut late = feed.subscribe("b".into()).unwrap();
        assert!(matches!(
            late.next(&EventFilter::default()).await,
            Next::Closed
        ));
    }

    #[test]
    fn streams_per_caller_are_bounded_and_given_back() {
        let feed = feed(4);
        let a1 = feed.subscribe("a".into()).unwrap();
        let _a2 = feed.subscribe("a".into()).unwrap();
        assert!(matches!(
            feed.subscribe("a".into()),
            Err(LiveError::TooManyStreams { max: 2 })
        ));
        let _b = feed.subscribe("b".into()).unwrap();
        drop(a1);
        assert!(feed.subscribe("a".into()).is_ok());
    }

    #[test]
    fn published_events_parse_back_with_their_filter_fields() {
        let e = event(9, "login", Some(3));
        let payload = serde_json::to_string(&[EventResponse::from(&e)]).unwrap();
        let list: Vec<&RawValue> = serde_json::from_str(&payload).unwrap();
        let back = LiveEvent::from_published(list[0]).unwrap();
        assert_eq!((back.id, back.user_id), (9, Some(3)));
        assert!(back.matches(&EventFilter {
            user_id: Some(3),
            event_type: Some("login".into()),
            ..Default::default()
        }));
        assert!(!back.matches(&EventFilter {
            user_id: Some(4),
            ..Default::default()
        }));
    }
}
