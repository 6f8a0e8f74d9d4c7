//! Unique users and funnels, checked against answers computed here from the
//! rows the test stored.

use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::helpers::*;

/// Stores events `(user, type, minutes before now)`.
async fn store(app: &TestApp, rows: &[(Option<i64>, &str, i64)]) {
    let now = Utc::now();
    let events: Vec<Value> = rows
        .iter()
        .map(|(user, t, ago)| {
            json!({"event_type": t, "user_id": user,
                   "timestamp": (now - Duration::minutes(*ago)).to_rfc3339()})
        })
        .collect();
    let (status, body) = app
        .post_json("/analytics/events/batch", json!({"events": events}))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn uniques_count_distinct_users_per_window_and_type() {
    let app = spawn_app().await;
    store(
        &app,
        &[
            (Some(1), "view", 10),
            (Some(1), "view", 9),
            (Some(1), "buy", 8),
            (Some(2), "view", 7),
            (Some(3), "buy", 6),
            (None, "view", 5),
            (Some(4), "view", 300),
        ],
    )
    .await;
    let body = app.get_ok("/analytics/uniques").await;
    assert_eq!(body["unique_users"], 4);
    assert_eq!(body["exact"], true);
    assert_eq!(
        body["by_event_type"],
        json!([{"event_type": "view", "unique_users": 3}, {"event_type": "buy", "unique_users": 2}])
    );
    let from = (Utc::now() - Duration::minutes(60)).to_rfc3339();
    let path = format!("/analytics/uniques?from={}", urlencode(&from));
    assert_eq!(app.get_ok(&path).await["unique_users"], 3);
    let body = app.get_ok(&format!("{path}&event_type=buy")).await;
    assert_eq!(body["unique_users"], 2);
    assert_eq!(
        body["by_event_type"],
        json!([{"event_type": "buy", "unique_users": 2}])
    );
}

#[tokio::test]
async fn funnels_count_users_through_ordered_steps_within_the_limit() {
    let app = spawn_app().await;
    // Minutes before now; the limit is 10 minutes from the first step.
    store(
        &app,
        &[
            // 1: all three steps.
            (Some(1), "signup", 50),
            (Some(1), "activate", 49),
            (Some(1), "pay", 48),
            // 2: skips activate.
            (Some(2), "signup", 50),
            (Some(2), "pay", 49),
            // 3: activate before signup does not count; after it does.
            (Some(3), "activate", 50),
            (Some(3), "signup", 49),
            (Some(3), "activate", 48),
            // 4: activate too late.
            (Some(4), "signup", 50),
            (Some(4), "activate", 39),
            // 5: a second signup restarts the clock.
            (Some(5), "signup", 50),
            (Some(5), "signup", 42),
            (Some(5), "activate", 35),
            (Some(5), "pay", 34),
            // 6: never signed up; anonymous events are not users.
            (Some(6), "activate", 30),
            (None, "signup", 30),
        ],
    )
    .await;
    let body = app
        .get_ok("/analytics/funnels?steps=signup,activate,pay&within_seconds=600")
        .await;
    let users: Vec<i64> = body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["users"].as_i64().unwrap())
        .collect();
    assert_eq!(users, [5, 3, 2], "{body}");
    assert_eq!(body["steps"][1]["event_type"], "activate");
    assert_eq!(body["steps"][2]["of_first"], 0.4);
    assert_eq!(body["within_seconds"], 600);
    assert_eq!(body["exact"], true);

    for query in [
        "steps=signup",
        "within_seconds=60",
        "steps=signup,,pay",
        "steps=a,b&within_seconds=0",
        "steps=a,b&from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "steps=a,b&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
    ] {
        let (status, body) = json(
            app.get(&format!("/analytics/funnels?{query}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 422, "{query}: {body}");
        assert!(body["detail"].is_string(), "{query}: {body}");
    }
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
