//! The live event stream: filtered, committed events once each, resumed
//! from the database after a reconnect, across replicas through Redis, and
//! a stalled subscriber dropped without holding up ingest.

use std::time::Duration;

use reqwest::Response;
use serde_json::{Value, json};

use crate::helpers::*;

/// One Server-Sent Events message (comments skipped).
#[derive(Debug, Default)]
struct Message {
    id: Option<i64>,
    event: Option<String>,
    data: String,
}

struct Sse {
    resp: Response,
    buf: String,
    /// The last `id:` received: where a reconnect resumes.
    cursor: Option<i64>,
}

impl Sse {
    async fn open(app: &TestApp, query: &str, last_event_id: Option<i64>) -> Sse {
        let mut req = app.get(&format!("/analytics/events/stream{query}"));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut sse = Sse {
            resp,
            buf: String::new(),
            cursor: None,
        };
        // The greeting arrives once the subscription exists: events posted
        // after it are the stream's.
        sse.fill(Duration::from_secs(5)).await;
        assert!(sse.buf.contains("retry: "), "{}", sse.buf);
        sse
    }

    /// Reads one more chunk; false at the end of the stream.
    async fn fill(&mut self, wait: Duration) -> bool {
        match tokio::time::timeout(wait, self.resp.chunk()).await {
            Ok(Ok(Some(bytes))) => {
                self.buf.push_str(std::str::from_utf8(&bytes).unwrap());
                true
            }
            Ok(Ok(None)) => false,
            Ok(Err(e)) => panic!("stream failed: {e}"),
            Err(_) => panic!("no message within {wait:?}"),
        }
    }

    /// The next message; `None` when the stream ended.
    async fn next(&mut self) -> Option<Message> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut msg = Message::default();
                let mut any = false;
                for line in block.lines() {
                    if line.starts_with(':') {
                        continue;
                    }
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    match field {
                        "id" => msg.id = Some(value.parse().unwrap()),
                        "event" => msg.event = Some(value.into()),
                        "data" => msg.data.push_str(value),
                        _ => continue,
                    }
                    any = true;
                }
                if any && (msg.id.is_some() || msg.event.is_some()) {
                    self.cursor = msg.id.or(self.cursor);
                    return Some(msg);
                }
            }
            if !self.fill(Duration::from_secs(10)).await {
                return None;
            }
        }
    }

    /// The next `n` events, as (event id, body). Each message's `id:` is
    /// the largest event id sent so far.
    async fn events(&mut self, n: usize) -> Vec<(i64, Value)> {
        let mut out: Vec<(i64, Value)> = vec![];
        while out.len() < n {
            let msg = self.next().await.expect("stream open");
            assert_eq!(msg.event, None, "an event, not a notice: {msg:?}");
            let body: Value = serde_json::from_str(&msg.data).unwrap();
            let id = body["id"].as_i64().unwrap();
            let high = out.iter().map(|e| e.0).chain([id]).max().unwrap();
            assert!(msg.id.unwrap() >= high, "id: is the largest sent: {msg:?}");
            out.push((id, body));
        }
        out
    }
}

async fn post_events(app: &TestApp, events: Vec<Value>) -> Vec<i64> {
    let (status, body) = app
        .post_json("/analytics/events/batch", json!({ "events": events }))
        .await;
    assert_eq!(status, 200, "{body}");
    body["ids"]
        .as_array()
        .expect("stored ids")
        .iter()
        .map(|id| id.as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn the_stream_carries_each_matching_committed_event_once() {
    let app = spawn_app().await;
    let mut clicks = Sse::open(&app, "?event_type=click", None).await;
    let mut all = Sse::open(&app, "", None).await;
    let ids = post_events(
        &app,
        vec![
            json!({"event_type": "click", "user_id": 1, "event_data": {"n": 1}, "event_id": "e-1"}),
            json!({"event_type": "view", "user_id": 1}),
            json!({"event_type": "click", "user_id": 2, "event_data": {"n": 2}}),
        ],
    )
    .await;
    let got = clicks.events(2).await;
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        [ids[0], ids[2]]
    );
    assert_eq!(got[0].1["event_type"], "click");
    assert_eq!(got[0].1["event_data"]["n"], 1);
    assert_eq!(got[0].1["id"], ids[0]);
    assert_eq!(got[1].1["user_id"], 2);
    // A retry of a stored event_id stores nothing, so streams nothing.
    let retried = post_events(
        &app,
        vec![json!({"event_type": "click", "event_id": "e-1"})],
    )
    .await;
    assert_eq!(retried, [ids[0]]);
    let marker = post_events(&app, vec![json!({"event_type": "click", "user_id": 3})]).await;
    assert_eq!(clicks.events(1).await[0].0, marker[0]);
    let everything: Vec<i64> = all.events(4).await.iter().map(|g| g.0).collect();
    assert_eq!(everything, [ids[0], ids[1], ids[2], marker[0]]);
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_resumes_without_loss_or_repeats() {
    let app = spawn_app().await;
    let mut first = Sse::open(&app, "?user_id=7", None).await;
    let before = post_events(
        &app,
        (0..3)
            .map(|i| json!({"event_type": "step", "user_id": 7, "event_data": {"i": i}}))
            .collect(),
    )
    .await;
    let seen = first.events(3).await;
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), before);
    let last = first.cursor.unwrap();
    assert_eq!(last, before[2]);
    drop(first);
    // Stored while nobody listened, with another user's event among them.
    let missed = post_events(
        &app,
        vec![
            json!({"event_type": "step", "user_id": 7, "event_data": {"i": 3}}),
            json!({"event_type": "step", "user_id": 8}),
            json!({"event_type": "step", "user_id": 7, "event_data": {"i": 4}}),
        ],
    )
    .await;
    let mut again = Sse::open(&app, "?user_id=7", Some(last)).await;
    let replayed = again.events(2).await;
    assert_eq!(
        replayed.iter().map(|r| r.0).collect::<Vec<_>>(),
        [missed[0], missed[2]]
    );
    assert_eq!(replayed[1].1["event_data"]["i"], 4);
    let live = post_events(&app, vec![json!({"event_type": "step", "user_id": 7})]).await;
    assert_eq!(
        again.events(1).await[0].0,
        live[0],
        "live after replay, none twice"
    );
    // The query parameter does the same for clients that cannot set headers.
    let mut by_query = Sse::open(&app, &format!("?user_id=7&last_event_id={last}"), None).await;
    let ids: Vec<i64> = by_query.events(3).await.iter().map(|r| r.0).collect();
    assert_eq!(ids, [missed[0], missed[2], live[0]]);
}

#[tokio::test]
async fn bad_resume_ids_and_filters_are_422_and_streams_per_caller_are_bounded() {
    // Heartbeats are how a server learns a client left.
    let app = spawn_app_with(&[("STREAM_MAX_PER_CALLER", "2"), ("STREAM_HEARTBEAT", "1")]).await;
    let resp = app
        .get("/analytics/events/stream")
        .header("Last-Event-ID", "abc")
        .send()
        .await
        .unwrap();
    assert!(expect_error(resp, 422).await.contains("Last-Event-ID"));
    let resp = app
        .get("/analytics/events/stream?last_event_id=-1")
        .send()
        .await
        .unwrap();
    expect_error(resp, 422).await;
    let resp = app
        .get("/analytics/events/stream?user_id=0")
        .send()
        .await
        .unwrap();
    expect_error(resp, 422).await;
    let a = Sse::open(&app, "", None).await;
    let _b = Sse::open(&app, "", None).await;
    let resp = app.get("/analytics/events/stream").send().await.unwrap();
    assert_eq!(resp.headers()["retry-after"], "5");
    assert!(expect_error(resp, 429).await.contains("at most 2"));
    // A closed stream gives its place back (at the next write to it).
    drop(a);
    let mut reopened = None;
    for _ in 0..50 {
        let resp = app.get("/analytics/events/stream").send().await.unwrap();
        if resp.status() == 200 {
            reopened = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened.is_some(), "the slot came back after a close");
}

#[tokio::test]
async fn heartbeats_keep_an_idle_stream_talking() {
    let app = spawn_app_with(&[("STREAM_HEARTBEAT", "1")]).await;
    let mut sse = Sse::open(&app, "", None).await;
    // Nothing is posted: only heartbeats arrive.
    while sse.buf.matches(": heartbeat").count() < 2 {
        assert!(sse.fill(Duration::from_secs(5)).await, "{}", sse.buf);
    }
    assert!(!sse.buf.contains("data:"), "{}", sse.buf);
}

/// A subscriber that stops reading is dropped with a notice once it is a
/// whole buffer behind; ingest answers throughout.
#[tokio::test]
async fn a_stalled_subscriber_is_dropped_and_never_holds_up_ingest() {
    let app = spawn_app_with(&[("STREAM_BUFFER", "16")]).await;
    let mut stalled = Sse::open(&app, "", None).await;
    // More than Linux's largest socket buffers on both ends hold (6 MB + 4
    // MB by default): about 24 MB, so the server's side must stop writing.
    let blob = "x".repeat(16_000);
    let mut posted = 0;
    for _ in 0..30 {
        let batch: Vec<Value> = (0..50)
            .map(|i| json!({"event_type": "bulk", "event_data": {"i": i, "blob": blob}}))
            .collect();
        posted += post_events(&app, batch).await.len();
    }
    assert_eq!(posted, 1500);
    assert_eq!(app.count("platform_analytics_events").await, 1500);
    // Reading now drains what was buffered, then the notice, then the end.
    let mut events = 0;
    let mut notice = None;
    while let Some(msg) = stalled.next().await {
        match msg.event.as_deref() {
            None => events += 1,
            Some(kind) => {
                notice = Some((kind.to_string(), msg.data));
                break;
            }
        }
    }
    let (kind, data) = notice.expect("a final notice");
    assert_eq!(kind, "dropped");
    assert!(data.contains("last id received"), "{data}");
    assert!(
        events < 1000,
        "it was dropped, not fed everything: {events}"
    );
    assert!(
        stalled.next().await.is_none(),
        "the stream ends after the notice"
    );
    let metrics = app.metrics_text().await;
    assert!(metrics.contains("stream_dropped_total"), "{metrics}");
}

// The in-process feed is one replica's by definition.
#[tokio::test]
#[ignore = "needs TEST_REDIS_URL: replicas share the live feed through Redis"]
async fn a_subscriber_on_another_replica_gets_each_event_once() {
    require_redis();
    let a = spawn_app().await;
    let b = spawn_on(Backend::share(&a.env), &[]).await;
    let mut on_b = Sse::open(&b, "?event_type=order", None).await;
    let mut on_a = Sse::open(&a, "?event_type=order", None).await;
    // Give both replicas' channel subscriptions a moment to be in place.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let from_a = post_events(
        &a,
        (0..5)
            .map(|i| json!({"event_type": "order", "event_data": {"i": i}}))
            .collect(),
    )
    .await;
    let from_b = post_events(&b, vec![json!({"event_type": "order"})]).await;
    let want: Vec<i64> = from_a.iter().chain(&from_b).copied().collect();
    for sse in [&mut on_b, &mut on_a] {
        let got: Vec<i64> = sse.events(6).await.iter().map(|g| g.0).collect();
        assert_eq!(got, want);
    }
    // Nothing more: each event came once.
    let marker = post_events(&a, vec![json!({"event_type": "order"})]).await;
    assert_eq!(on_b.events(1).await[0].0, marker[0]);
}

/// The page and its assets come from the binary, without a key, under a
/// CSP that allows nothing from elsewhere; the page itself names nothing
/// from elsewhere either.
#[tokio::test]
async fn the_dashboard_page_is_served_from_the_binary_under_a_strict_csp() {
    let app = spawn_app().await;
    for (path, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        let body = resp.text().await.unwrap();
        // Only the SVG namespace is an absolute URL, and it is never fetched.
        let outside = body
            .matches("http://")
            .count()
            .saturating_sub(body.matches("http://www.w3.org/2000/svg").count())
            + body.matches("https://").count();
        assert_eq!(outside, 0, "{path} names no outside resource");
    }
    let page = app.text_of(app.client.get(app.url("/dashboard"))).await;
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "nothing inline"
    );
    for id in [
        "stat-events",
        "stat-users",
        "stat-calls",
        "stat-cost",
        "feed",
        "range",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "{id}");
    }
    // Only the page's own files are open: other paths under it need a key.
    let resp = app
        .client
        .get(app.url("/dashboard/other"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}
