//! Unique users and funnels, checked against answers computed here from the
//! rows the test stored.

use chrono::{Duration, Timelike, Utc};
use serde_json::{Value, json};

use crate::helpers::*;

/// Stores events `(user, type, minutes before now)`.
async fn store(app: &TestApp, rows: &[(Option<i64>, &str, i64)]) {
    let now = Utc::now();
    let rows: Vec<_> = rows
        .iter()
        .map(|&(user, t, ago)| (user, t, now - Duration::minutes(ago)))
        .collect();
    store_at(app, &rows).await;
}

/// Stores events `(user, type, timestamp)` in one batch.
async fn store_at(app: &TestApp, rows: &[(Option<i64>, &str, chrono::DateTime<Utc>)]) {
    let events: Vec<Value> = rows
        .iter()
        .map(
            |(user, t, at)| json!({"event_type": t, "user_id": user, "timestamp": at.to_rfc3339()}),
        )
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
    let body = uniques(&app, &[("from", from.clone())]).await;
    assert_eq!(body["unique_users"], 3);
    let body = uniques(&app, &[("from", from), ("event_type", "buy".into())]).await;
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

    expect_422_for(
        &app,
        "/analytics/funnels",
        &[
            "steps=signup",
            "within_seconds=60",
            "steps=signup,,pay",
            "steps=a,b&within_seconds=0",
            "steps=a,b&from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "steps=a,b&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        ],
    )
    .await;
}

async fn uniques(app: &TestApp, query: &[(&str, String)]) -> Value {
    let (status, body) = json(
        app.get("/analytics/uniques")
            .query(query)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Whole hours come from the presence tables and the partial ones from raw
/// rows: windows cut anywhere give the answers counted from the rows.
#[tokio::test]
async fn uniques_equal_the_rows_for_windows_cut_anywhere() {
    let app = spawn_app().await;
    let now = Utc::now().with_nanosecond(0).unwrap();
    let types = ["view", "click", "buy"];
    // A fixed pseudo-random spread over three days: (seconds ago, user, type).
    let mut seed: u64 = 42;
    let mut next = |m: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % m
    };
    let rows: Vec<(i64, Option<i64>, &str)> = (0..1500)
        .map(|_| {
            let user = next(60);
            (
                next(3 * 86_400) as i64,
                (user != 0).then_some(user as i64),
                types[next(3) as usize],
            )
        })
        .collect();
    for chunk in rows.chunks(500) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|&(ago, user, t)| (user, t, now - Duration::seconds(ago)))
            .collect();
        store_at(&app, &batch).await;
    }
    let half = Duration::milliseconds(500);
    let windows = [
        // Partial hours at both ends, many whole hours between.
        (
            now - Duration::seconds(50 * 3600 + 1017) + half,
            now - Duration::seconds(3 * 3600 + 311) + half,
        ),
        // Less than an hour, inside one.
        (
            now - Duration::seconds(2 * 3600 + 1500) + half,
            now - Duration::seconds(2 * 3600 + 200) + half,
        ),
        // Exactly on hour boundaries.
        {
            let h = now.with_minute(0).unwrap().with_second(0).unwrap();
            (h - Duration::hours(30), h - Duration::hours(2))
        },
        (
            now - Duration::hours(72) - Duration::minutes(1),
            now + Duration::seconds(1),
        ),
    ];
    for (from, to) in windows {
        let inside: Vec<&(i64, Option<i64>, &str)> = rows
            .iter()
            .filter(|(ago, user, _)| {
                let at = now - Duration::seconds(*ago);
                user.is_some() && at >= from && at < to
            })
            .collect();
        let distinct = |t: Option<&str>| {
            inside
                .iter()
                .filter(|r| t.is_none_or(|t| r.2 == t))
                .map(|r| r.1)
                .collect::<std::collections::BTreeSet<_>>()
                .len() as i64
        };
        let query = [("from", from.to_rfc3339()), ("to", to.to_rfc3339())];
        let body = uniques(&app, &query).await;
        assert_eq!(body["unique_users"], distinct(None), "{from}..{to}");
        for t in types {
            let got = body["by_event_type"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["event_type"] == t)
                .map_or(0, |x| x["unique_users"].as_i64().unwrap());
            assert_eq!(got, distinct(Some(t)), "{t} in {from}..{to}");
            let mut one = query.to_vec();
            one.push(("event_type", t.to_string()));
            assert_eq!(uniques(&app, &one).await["unique_users"], distinct(Some(t)));
        }
        assert!(distinct(None) > 0, "the window holds events");
    }
}

/// The dashboard's active users count a user whose only event in the
/// window lies in its ragged first hour, and not one whose events there
/// come just before the window starts, whatever else they did.
#[tokio::test]
async fn active_users_count_the_ragged_first_hour_exactly() {
    let app = spawn_app().await;
    let since = Utc::now() - Duration::hours(3);
    let at = |secs: i64| (since + Duration::seconds(secs)).to_rfc3339();
    let events: Vec<Value> = [
        (10, 20),  // only just inside
        (11, -20), // only just before
        (12, -30), // before, and later in a whole hour
        (12, 7200),
        (13, 30), // inside the ragged hour and in a whole hour
        (13, 7300),
        (14, -40), // before and inside the same hour
        (14, 40),
        (15, -4000), // an hour and more before
    ]
    .into_iter()
    .map(|(user, secs)| json!({"event_type": "seen", "user_id": user, "timestamp": at(secs)}))
    .collect();
    let (status, body) = app
        .post_json("/analytics/events/batch", json!({"events": events}))
        .await;
    assert_eq!(status, 200, "{body}");
    let d = app.get_ok("/analytics/dashboard?hours=3").await;
    assert_eq!(d["active_users"], 4, "users 10, 12, 13 and 14: {d}");
    assert_eq!(d["total_events"], 5);
}

/// Each ragged end is probed over its own part of the window: a user whose
/// events in the first and last partial hours all fall outside the window
/// is not counted; one with an event inside either part is, per type too.
#[tokio::test]
async fn uniques_probe_each_ragged_end_within_its_part_of_the_window() {
    let app = spawn_app().await;
    let h = Utc::now()
        .with_nanosecond(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_minute(0))
        .unwrap()
        - Duration::hours(6);
    let m = |minutes: i64| h + Duration::minutes(minutes);
    store_at(
        &app,
        &[
            (Some(1), "view", m(10)),  // first hour, before the window
            (Some(1), "view", m(220)), // last hour, after it: not counted
            (Some(2), "view", m(10)),
            (Some(2), "view", m(200)), // last hour, inside
            (Some(3), "view", m(40)),  // first hour, inside
            (Some(3), "view", m(230)),
            (Some(4), "click", m(20)), // before: click not counted
            (Some(4), "view", m(45)),
            (Some(5), "view", m(90)), // a whole hour
        ],
    )
    .await;
    let query = [("from", m(30).to_rfc3339()), ("to", m(210).to_rfc3339())];
    let body = uniques(&app, &query).await;
    assert_eq!(body["unique_users"], 4, "users 2, 3, 4 and 5: {body}");
    let of = |t: &str| {
        body["by_event_type"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["event_type"] == t)
            .map_or(0, |x| x["unique_users"].as_i64().unwrap())
    };
    assert_eq!((of("view"), of("click")), (4, 0), "{body}");
    let mut clicks = query.to_vec();
    clicks.push(("event_type", "click".to_string()));
    assert_eq!(uniques(&app, &clicks).await["unique_users"], 0);
}
