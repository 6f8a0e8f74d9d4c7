//! Analytics: durable ingestion, validation, idempotency and every query's numbers.

use chrono::{Duration, DurationRound, Utc};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::helpers::*;

fn before(base: chrono::DateTime<Utc>, minutes: i64) -> String {
    (base - Duration::minutes(minutes)).to_rfc3339()
}

#[tokio::test]
async fn an_event_is_stored_and_answered_as_committed() {
    let app = spawn_app().await;
    let resp = app
        .post("/analytics/events")
        .header("User-Agent", "probe/1.0")
        .json(&json!({"event_type": "user_login", "user_id": 7, "session_id": "s-1", "event_data": {"source": "web", "n": [1, 2]}}))
        .send()
        .await
        .unwrap();
    let (status, ev) = json(resp).await;
    assert_eq!(status, 200, "{ev}");
    assert!(ev["id"].as_i64().unwrap() > 0);
    assert_eq!(ev["event_type"], "user_login");
    assert_eq!(ev["event_data"], json!({"source": "web", "n": [1, 2]}));
    assert_eq!(ev["user_id"], 7);
    assert_eq!(ev["session_id"], "s-1");
    assert!(ev["timestamp"].as_str().unwrap().ends_with('Z'));

    let row = app
        .db
        .query_one_raw(Statement::from_string(
            app.db.get_database_backend(),
            format!(
                "SELECT ip_address, user_agent FROM platform_analytics_events WHERE id = {}",
                ev["id"]
            ),
        ))
        .await
        .unwrap()
        .expect("committed before the answer");
    assert_eq!(
        row.try_get::<String>("", "ip_address").unwrap(),
        "127.0.0.1"
    );
    assert_eq!(
        row.try_get::<String>("", "user_agent").unwrap(),
        "probe/1.0"
    );

    let list = app.get_ok("/analytics/events").await;
    assert_eq!(list["count"], 1);
    assert_eq!(list["events"][0], ev);
    assert_eq!(list["next_cursor"], Value::Null);
}

#[tokio::test]
async fn a_metric_is_stored_with_its_defaults() {
    let app = spawn_app().await;
    let (status, m) = app.post_json("/analytics/metrics",
        json!({"metric_name": "api_calls", "metric_value": 1, "service_name": "gw", "endpoint": "/auth/login", "labels": {"region": "eu"}}),
    )
    .await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["metric_type"], "counter");
    assert_eq!(m["metric_value"], 1.0);
    assert_eq!(m["labels"], json!({"region": "eu"}));
    assert_eq!(m["user_id"], Value::Null);
    let list = app.get_ok("/analytics/metrics").await;
    assert_eq!(list["metrics"][0], m);
}

/// Limits count characters, as a UTF8 database does (found by the fuzzer
/// when CI's Postgres had been created as SQL_ASCII, counting bytes).
#[tokio::test]
async fn length_limits_count_characters() {
    let app = spawn_app().await;
    let wide = "\u{1D413}".repeat(100);
    let (status, body) = app
        .post_json("/analytics/events", json!({"event_type": wide}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event_type"], wide);
}

#[tokio::test]
async fn bad_input_is_422_and_stores_nothing() {
    let app = spawn_app().await;
    let long = "x".repeat(101);
    let events = vec![
        json!({"event_type": ""}),
        json!({"event_type": "   "}),
        json!({"event_type": long}),
        json!({"event_type": "a", "user_id": 2147483648i64}),
        json!({"event_type": "a", "user_id": 0}),
        json!({"event_type": "a", "user_id": -1}),
        json!({"event_type": "a", "user_id": "7"}),
        json!({"event_type": "a", "event_data": "text"}),
        json!({"event_type": "a", "event_data": [1, 2]}),
        json!({"event_type": "a", "event_data": {"big": "y".repeat(70_000)}}),
        json!({"event_type": "a", "session_id": "s".repeat(256)}),
        json!({"event_type": "a", "event_id": "e".repeat(129)}),
        json!({"event_type": "a", "timestamp": (Utc::now() + Duration::hours(1)).to_rfc3339()}),
        json!({"event_type": "a", "timestamp": (Utc::now() - Duration::days(91)).to_rfc3339()}),
        json!({"event_type": "a", "timestamp": "yesterday"}),
        json!({"event_type": "nul\u{0}byte"}),
        // Stored, it could not be read back: lists of events failed (fuzzer).
        json!({"event_type": "a", "event_data": {"n": [1.0e308]}}),
        json!({"event_type": 5}),
        json!({}),
    ];
    for body in events {
        let (status, err) = app.post_json("/analytics/events", body.clone()).await;
        assert_eq!(status, 422, "{body} -> {err}");
        assert!(err["detail"].is_string());
    }
    let metrics = vec![
        json!({"metric_name": "m", "metric_value": "NaN"}),
        json!({"metric_name": "m", "metric_value": null}),
        json!({"metric_name": "", "metric_value": 1}),
        json!({"metric_name": long, "metric_value": 1}),
        json!({"metric_name": "m", "metric_value": 1, "metric_type": "summary"}),
        json!({"metric_name": "m", "metric_value": 1, "service_name": "s".repeat(101)}),
        json!({"metric_name": "m", "metric_value": 1, "endpoint": "e".repeat(256)}),
        json!({"metric_name": "m", "metric_value": 1, "labels": "x"}),
        json!({"metric_name": "m", "metric_value": 1, "user_id": 99999999999i64}),
        // Found by the spec fuzzer: a finite but huge value overflowed its
        // rollup bucket's sum, failing every later write to that bucket.
        json!({"metric_name": "m", "metric_value": -1.7976931348623157e308}),
        json!({"metric_name": "m", "metric_value": 1.0000001e15}),
        json!({"metric_name": "m", "metric_value": 1, "labels": {"x": -1.0e300}}),
        json!([{"metric_name": "m", "metric_value": 1}]),
    ];
    for body in metrics {
        let (status, err) = app.post_json("/analytics/metrics", body.clone()).await;
        assert_eq!(status, 422, "{body} -> {err}");
    }
    // Bodies JSON cannot even express: NaN, Infinity, 1e400, absurd nesting.
    for raw in [
        r#"{"metric_name": "m", "metric_value": NaN}"#.to_string(),
        r#"{"metric_name": "m", "metric_value": Infinity}"#.to_string(),
        r#"{"metric_name": "m", "metric_value": 1e400}"#.to_string(),
        format!(
            r#"{{"metric_name": "m", "metric_value": 1, "labels": {{"a": {}{}}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    ] {
        let resp = app.post_raw_json("/analytics/metrics", raw).await;
        expect_error(resp, 422).await;
    }
    let resp = app
        .post_raw_json("/analytics/events", vec![b' '; 10 * 1024 * 1024])
        .await;
    expect_error(resp, 413).await;
    assert_eq!(app.count("platform_analytics_events").await, 0);
    assert_eq!(app.count("platform_analytics_metrics").await, 0);
    // The list still works for everyone afterwards (the original broke here).
    assert_eq!(app.get_ok("/analytics/metrics").await["count"], 0);
}

#[tokio::test]
async fn batches_are_all_or_nothing_and_bounded() {
    let app = spawn_app_with(&[("ANALYTICS_BATCH_LIMIT", "50")]).await;
    let good: Vec<Value> = (0..50)
        .map(|i| json!({"metric_name": "api_calls", "metric_value": i, "user_id": 1}))
        .collect();
    let (status, body) = app
        .post_json("/analytics/metrics/batch", json!({"metrics": good}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Created 50 metrics successfully");
    assert_eq!(body["count"], 50);
    let ids: Vec<i64> = body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 50);
    assert!(ids.windows(2).all(|w| w[1] > w[0]), "ids in request order");

    let mut one_bad = good_metrics(10);
    one_bad[7]["metric_value"] = json!("oops");
    let (status, _) = app
        .post_json("/analytics/metrics/batch", json!({"metrics": one_bad}))
        .await;
    assert_eq!(status, 422);
    let mut one_bad = good_metrics(10);
    one_bad[3]["metric_type"] = json!("bogus");
    let (status, err) = app
        .post_json("/analytics/metrics/batch", json!({"metrics": one_bad}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        err["detail"],
        "metrics[3]: metric_type must be one of counter, gauge, histogram"
    );
    let (status, _) = app
        .post_json(
            "/analytics/metrics/batch",
            json!({"metrics": good_metrics(51)}),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(app.count("platform_analytics_metrics").await, 50);

    let events: Vec<Value> = (0..20)
        .map(|i| json!({"event_type": format!("t{}", i % 3)}))
        .collect();
    let (status, body) = app
        .post_json("/analytics/events/batch", json!({"events": events}))
        .await;
    assert_eq!((status, body["count"].as_i64()), (200, Some(20)));
    assert_eq!(body["message"], "Created 20 events successfully");
    let (status, _) = app
        .post_json(
            "/analytics/events/batch",
            json!({"events": [{"event_type": "ok"}, {"event_type": ""}]}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(app.count("platform_analytics_events").await, 20);
}

fn good_metrics(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"metric_name": "m", "metric_value": i}))
        .collect()
}

#[tokio::test]
async fn a_retried_event_id_is_stored_once() {
    let app = spawn_app().await;
    let body =
        json!({"event_type": "purchase", "event_id": "order-42", "event_data": {"total": 10}});
    let (_, first) = app.post_json("/analytics/events", body.clone()).await;
    let (status, again) = app
        .post_json(
            "/analytics/events",
            json!({"event_type": "purchase", "event_id": "order-42", "event_data": {"total": 99}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again, first, "the stored row, not the retry's data");
    // Duplicates inside one batch, and against the stored row.
    let (_, batch) = app.post_json("/analytics/events/batch",
        json!({"events": [{"event_type": "x", "event_id": "b-1"}, {"event_type": "x", "event_id": "b-1"}, {"event_type": "x", "event_id": "order-42"}]}),
    )
    .await;
    let ids = batch["ids"].as_array().unwrap();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[2], first["id"]);
    assert_eq!(app.count("platform_analytics_events").await, 2);
}

/// Concurrent requests share commit groups (one statement on Postgres): each
/// answer names its own stored row, an `event_id` sent many times is stored
/// once, and the minute and hour counters equal what the raw rows say.
#[tokio::test]
async fn concurrent_groups_answer_their_own_rows_and_keep_counters_exact() {
    let app = spawn_app().await;
    // Half past the hour before last: the singles' 60 minutes then always
    // straddle an hour boundary, whatever the clock says.
    let base = Utc::now().duration_trunc(Duration::hours(1)).unwrap() - Duration::minutes(30);
    let mut singles = vec![];
    for i in 0..60 {
        let mut body = json!({
            "event_type": format!("t{}", i % 3),
            "user_id": 1 + i % 7,
            "event_data": {"i": i, "quote": "a\"b"},
            "timestamp": before(base, i % 150),
        });
        if i % 2 == 0 {
            // Ten ids, each sent three times.
            body["event_id"] = json!(format!("dup-{}", (i / 2) % 10));
        }
        singles.push(app.post_json("/analytics/events", body));
    }
    let batches = (0..6).map(|b| {
        let metrics: Vec<Value> = (0..50)
            .map(|i| {
                json!({
                    "metric_name": format!("m{}", i % 2),
                    "metric_value": b * 100 + i,
                    "endpoint": if i % 3 == 0 { Value::Null } else { json!(format!("/e{}", i % 3)) },
                    "user_id": 1 + i % 5,
                    "timestamp": before(base, i * 2),
                })
            })
            .collect();
        app.post_json("/analytics/metrics/batch", json!({"metrics": metrics}))
    });
    let (singles, batches) = tokio::join!(
        futures_util::future::join_all(singles),
        futures_util::future::join_all(batches)
    );

    let mut by_event_id: std::collections::HashMap<String, Value> = Default::default();
    for (status, ev) in &singles {
        assert_eq!(*status, 200, "{ev}");
        let stored = app
            .scalar(&format!(
                "SELECT COUNT(*) AS n FROM platform_analytics_events WHERE id = {} AND event_type = '{}'",
                ev["id"], ev["event_type"].as_str().unwrap()
            ))
            .await;
        assert_eq!(stored, 1, "the answer names its own row: {ev}");
        if let Some(id) = ev["event_id"].as_str() {
            let first = by_event_id.entry(id.to_string()).or_insert(ev.clone());
            assert_eq!(first["id"], ev["id"], "one row per event_id");
        } else {
            assert_eq!(ev["event_data"]["quote"], "a\"b");
        }
    }
    assert_eq!(by_event_id.len(), 10);
    assert_eq!(app.count("platform_analytics_events").await, 30 + 10);
    for (b, (status, body)) in batches.iter().enumerate() {
        assert_eq!(*status, 200, "{body}");
        let ids = body["ids"].as_array().unwrap();
        assert_eq!(ids.len(), 50);
        // Each id holds the value sent at its position.
        for (i, id) in ids.iter().enumerate() {
            let value = app
                .scalar(&format!(
                    "SELECT CAST(metric_value AS BIGINT) AS n FROM platform_analytics_metrics WHERE id = {id}"
                ))
                .await;
            assert_eq!(value, (b * 100 + i) as i64);
        }
    }

    let total = |table: &str, column: &str| {
        format!("SELECT CAST(COALESCE(SUM({column}), 0) AS BIGINT) AS n FROM {table}")
    };
    for table in [
        "platform_analytics_event_minutes",
        "platform_analytics_event_hours",
    ] {
        assert_eq!(app.scalar(&total(table, "events")).await, 40, "{table}");
    }
    let per_type = app
        .scalar(
            "SELECT COUNT(*) AS n FROM (SELECT event_type, SUM(events) AS s \
             FROM platform_analytics_event_hours GROUP BY event_type) h WHERE s <> \
             (SELECT COUNT(*) FROM platform_analytics_events e WHERE e.event_type = h.event_type)",
        )
        .await;
    assert_eq!(per_type, 0, "each type's buckets add up to its rows");
    let hour = match app.db.get_database_backend() {
        sea_orm::DbBackend::Postgres => "date_trunc('hour', timestamp)",
        _ => "strftime('%Y-%m-%d %H', timestamp)",
    };
    let active = app
        .scalar(&format!(
            "SELECT COUNT(*) AS n FROM (SELECT DISTINCT user_id, {hour} AS h \
             FROM platform_analytics_events WHERE user_id IS NOT NULL) x"
        ))
        .await;
    assert_eq!(active, 14, "seven users in each of two hours");
    assert_eq!(
        app.count("platform_analytics_event_user_hours").await,
        active
    );
    // Each user's latest hour, written by concurrent groups, is the hour of
    // their latest row.
    let latest = app
        .scalar(&format!(
            "SELECT COUNT(*) AS n FROM platform_analytics_user_last_hours l JOIN \
             (SELECT user_id, MAX({hour}) AS h FROM platform_analytics_events \
              WHERE user_id IS NOT NULL GROUP BY user_id) e ON e.user_id = l.user_id \
             WHERE {} = e.h",
            hour.replace("timestamp", "l.bucket")
        ))
        .await;
    assert_eq!(
        latest, 7,
        "one latest hour per user, the hour of their last row"
    );
    assert_eq!(app.count("platform_analytics_user_last_hours").await, 7);
    let metric_sum: i64 = (0..6)
        .map(|b| (0..50).map(|i| b * 100 + i).sum::<i64>())
        .sum();
    for table in [
        "platform_analytics_metric_minutes",
        "platform_analytics_metric_hours",
    ] {
        assert_eq!(app.scalar(&total(table, "row_count")).await, 300, "{table}");
        assert_eq!(
            app.scalar(&total(table, "value_sum")).await,
            metric_sum,
            "{table}"
        );
    }
    // Metrics without an endpoint count under "".
    assert_eq!(
        app.scalar(&total(
            "platform_analytics_metric_hours WHERE endpoint = ''",
            "row_count"
        ))
        .await,
        6 * 17
    );
}

#[tokio::test]
async fn metric_lists_filter_and_page_without_gaps() {
    let app = spawn_app().await;
    let base = Utc::now();
    let mut batch = vec![];
    for i in 0..25 {
        batch.push(json!({
            "metric_name": if i % 5 == 0 { "tokens_used" } else { "api_calls" },
            "metric_value": i,
            "metric_type": if i % 2 == 0 { "counter" } else { "gauge" },
            "user_id": 1 + i % 2,
            "service_name": if i < 10 { "gateway" } else { "worker" },
            "endpoint": format!("/e{}", i % 3),
            "timestamp": before(base, 100 - i),
        }));
    }
    let (status, _) = app
        .post_json("/analytics/metrics/batch", json!({"metrics": batch}))
        .await;
    assert_eq!(status, 200);

    let mut seen = vec![];
    let mut path = "/analytics/metrics?limit=10".to_string();
    loop {
        let page = app.get_ok(&path).await;
        for m in page["metrics"].as_array().unwrap() {
            seen.push(m["metric_value"].as_f64().unwrap() as i64);
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/analytics/metrics?limit=10&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..25).rev().collect::<Vec<_>>(),
        "newest first, each once"
    );

    let checks: Vec<(&str, usize)> = vec![
        ("metric_name=tokens_used", 5),
        ("service_name=gateway", 10),
        ("user_id=2", 12),
        ("endpoint=/e0", 9),
        ("metric_type=gauge", 12),
        ("metric_name=api_calls&service_name=worker&user_id=1", 6),
    ];
    for (q, n) in checks {
        let page = app.get_ok(&format!("/analytics/metrics?{q}")).await;
        assert_eq!(page["count"], n, "{q}");
    }
    let from = before(base, 90);
    let to = before(base, 80);
    let url = format!(
        "/analytics/metrics?from={}&to={}",
        urlenc(&from),
        urlenc(&to)
    );
    let page = app.get_ok(&url).await;
    let values: Vec<i64> = page["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["metric_value"].as_f64().unwrap() as i64)
        .collect();
    assert_eq!(values, (10..20).rev().collect::<Vec<_>>());

    for bad in [
        "limit=0",
        "limit=1001",
        "limit=-5",
        "limit=x",
        "cursor=nope!",
        "user_id=0",
        "metric_type=summary",
        "from=2026-13-01T00:00:00Z",
        &format!("from={}&to={}", urlenc(&to), urlenc(&from)),
    ] {
        let resp = app
            .get(&format!("/analytics/metrics?{bad}"))
            .send()
            .await
            .unwrap();
        expect_error(resp, 422).await;
    }
}

fn urlenc(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn event_queries_count_exactly() {
    let app = spawn_app().await;
    let hour = |h: i64| Utc::now().duration_trunc(Duration::hours(1)).unwrap() - Duration::hours(h);
    let mut events = vec![];
    // 3 logins two hours back, 2 purchases one hour back, 1 view now, 1 old (30 h).
    for i in 0..3 {
        events.push(json!({"event_type": "login", "user_id": 1 + i, "timestamp": (hour(2) + Duration::minutes(5)).to_rfc3339()}));
    }
    for _ in 0..2 {
        events.push(json!({"event_type": "purchase", "user_id": 1, "session_id": "s9", "timestamp": (hour(1) + Duration::minutes(1)).to_rfc3339()}));
    }
    events.push(json!({"event_type": "view"}));
    events.push(json!({"event_type": "old", "user_id": 50, "timestamp": (Utc::now() - Duration::hours(30)).to_rfc3339()}));
    let (status, _) = app
        .post_json("/analytics/events/batch", json!({"events": events}))
        .await;
    assert_eq!(status, 200);

    let by_type = app.get_ok("/analytics/events/by-type?hours=24").await;
    assert_eq!(
        by_type["event_types"],
        json!([{"event_type": "login", "count": 3}, {"event_type": "purchase", "count": 2}, {"event_type": "view", "count": 1}])
    );
    let ts = app
        .get_ok("/analytics/events/timeseries?interval=hour&hours=3")
        .await;
    assert_eq!(ts["interval"], "hour");
    let buckets = ts["buckets"].as_array().unwrap();
    let find = |t: chrono::DateTime<Utc>| {
        buckets
            .iter()
            .find(|b| {
                b["start"].as_str().unwrap() == t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            })
            .map(|b| b["count"].as_i64().unwrap())
    };
    assert_eq!(find(hour(2)), Some(3));
    assert_eq!(find(hour(1)), Some(2));
    assert_eq!(find(hour(0)), Some(1));
    assert_eq!(
        buckets
            .iter()
            .map(|b| b["count"].as_i64().unwrap())
            .sum::<i64>(),
        6
    );
    let only = app
        .get_ok("/analytics/events/timeseries?interval=day&hours=48&event_type=old")
        .await;
    assert_eq!(
        only["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_i64().unwrap())
            .sum::<i64>(),
        1
    );
    let minutes = app
        .get_ok("/analytics/events/timeseries?interval=minute&hours=1")
        .await;
    assert_eq!(minutes["buckets"].as_array().unwrap().len(), 61);

    let user = app.get_ok("/analytics/users/1/events").await;
    assert_eq!(user["count"], 3);
    let session = app.get_ok("/analytics/events?session_id=s9").await;
    assert_eq!(session["count"], 2);
    let typed = app
        .get_ok("/analytics/events?event_type=login&user_id=2")
        .await;
    assert_eq!(typed["count"], 1);

    for bad in [
        "/analytics/events/by-type?hours=0",
        "/analytics/events/by-type?hours=100000",
        "/analytics/events/timeseries?interval=week",
        "/analytics/events/timeseries?interval=minute&hours=500",
        "/analytics/events?limit=0",
        "/analytics/users/0/events",
        "/analytics/users/abc/events",
    ] {
        let resp = app.get(bad).send().await.unwrap();
        expect_error(resp, 422).await;
    }
}

#[tokio::test]
async fn dashboard_and_summary_numbers() {
    let app = spawn_app().await;
    let events = vec![
        json!({"event_type": "login", "user_id": 1}),
        json!({"event_type": "login", "user_id": 2}),
        json!({"event_type": "login", "user_id": 2}),
        json!({"event_type": "view"}),
        json!({"event_type": "old", "user_id": 9, "timestamp": (Utc::now() - Duration::hours(5)).to_rfc3339()}),
    ];
    app.post_json("/analytics/events/batch", json!({"events": events}))
        .await;
    let mut metrics = vec![];
    for (endpoint, n) in [
        ("/a", 6),
        ("/b", 5),
        ("/c", 4),
        ("/d", 3),
        ("/e", 2),
        ("/f", 1),
    ] {
        for _ in 0..n {
            metrics
                .push(json!({"metric_name": "api_calls", "metric_value": 2, "endpoint": endpoint}));
        }
    }
    metrics.push(json!({"metric_name": "cost_usd", "metric_value": 0.25, "user_id": 1}));
    metrics.push(json!({"metric_name": "cost_usd", "metric_value": 0.5, "user_id": 2}));
    // No user: not in /analytics/costs, so not in the dashboard's cost either.
    metrics.push(json!({"metric_name": "cost_usd", "metric_value": 9.0}));
    metrics.push(json!({"metric_name": "api_calls", "metric_value": 100, "timestamp": (Utc::now() - Duration::hours(5)).to_rfc3339()}));
    app.post_json("/analytics/metrics/batch", json!({"metrics": metrics}))
        .await;

    let d = app.get_ok("/analytics/dashboard?hours=2").await;
    assert_eq!(d["total_events"], 4);
    assert_eq!(d["active_users"], 2);
    assert_eq!(d["total_api_calls"], 42.0);
    assert_eq!(d["total_cost"], 0.75);
    assert_eq!(
        d["top_endpoints"],
        json!([{"endpoint": "/a", "count": 6}, {"endpoint": "/b", "count": 5}, {"endpoint": "/c", "count": 4}, {"endpoint": "/d", "count": 3}, {"endpoint": "/e", "count": 2}])
    );
    assert_eq!(d["recent_events"].as_array().unwrap().len(), 4);
    assert_eq!(d["recent_events"][0]["event_type"], "view");
    assert_eq!(
        d["event_types"][0],
        json!({"event_type": "login", "count": 3})
    );
    assert_eq!(
        d["hourly"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_i64().unwrap())
            .sum::<i64>(),
        4
    );

    let wide = app.get_ok("/analytics/dashboard?hours=24").await;
    assert_eq!(wide["total_events"], 5);
    assert_eq!(wide["active_users"], 3);
    assert_eq!(wide["total_api_calls"], 142.0);
    for bad in ["hours=0", "hours=8785", "hours=-1", "hours=abc"] {
        expect_error(
            app.get(&format!("/analytics/dashboard?{bad}"))
                .send()
                .await
                .unwrap(),
            422,
        )
        .await;
    }

    app.register("a@example.com", "password123").await;
    let s = app.get_ok("/analytics/summary").await;
    assert_eq!(s["total_users"], 1);
    assert_eq!(s["events_24h"], 5);
    assert_eq!(s["active_users_24h"], 3);
    assert_eq!(
        s["top_event_types"][0],
        json!({"event_type": "login", "count": 3})
    );

    let text = app.metrics_text().await;
    // The recorder is process-wide, so other tests add to these counters.
    assert!(
        text.contains(r#"ingest_rows_total{kind="event"}"#),
        "{text}"
    );
    assert!(text.contains("ingest_commit_duration_seconds_bucket"));
}

#[tokio::test]
async fn legacy_analytics_aliases() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(app.url("/events"))
        .json(&json!({"event_type": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(expect_error(resp, 401).await, "Missing API key");
    let resp = app
        .post("/events")
        .json(&json!({"event_type": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["deprecation"], "true");
    assert_eq!(
        resp.headers()["link"],
        "</analytics/events>; rel=\"successor-version\""
    );
    let (status, ev) = json(resp).await;
    assert_eq!((status, ev["event_type"].as_str()), (200, Some("x")));
    app.post_json(
        "/analytics/metrics",
        json!({"metric_name": "m", "metric_value": 3}),
    )
    .await;
    let resp = app.get("/metrics?metric_name=m").send().await.unwrap();
    assert_eq!(
        resp.headers()["link"],
        "</analytics/metrics>; rel=\"successor-version\""
    );
    let (_, list) = json(resp).await;
    assert_eq!(list["count"], 1);
    assert_eq!(list["metrics"][0]["metric_value"], 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_loses_no_acknowledged_event() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let app = spawn_app().await;
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = vec![];
    for i in 0..400 {
        let req = app
            .post("/analytics/events")
            .json(&json!({"event_type": "load", "event_id": format!("e{i}")}));
        let answered = answered.clone();
        tasks.push(tokio::spawn(async move {
            let resp = req.send().await;
            answered.fetch_add(1, Ordering::SeqCst);
            resp
        }));
    }
    // Stop while requests are in flight, as SIGTERM would.
    for _ in 0..2000 {
        if answered.load(Ordering::SeqCst) >= 20 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    app.stop(true).await;
    let mut acked = vec![];
    for t in tasks {
        if let Ok(Ok(resp)) = t.await
            && resp.status() == 200
        {
            let body: Value = resp.json().await.unwrap();
            acked.push(body["id"].as_i64().unwrap());
        }
    }
    assert!(acked.len() >= 20, "{} acknowledged", acked.len());
    for id in acked {
        let row = app
            .db
            .query_one_raw(Statement::from_string(
                app.db.get_database_backend(),
                format!("SELECT id FROM platform_analytics_events WHERE id = {id}"),
            ))
            .await
            .unwrap();
        assert!(row.is_some(), "acknowledged event {id} is stored");
    }
}

#[tokio::test]
async fn window_edges_count_each_event_once() {
    // Wherever the window starts relative to minute and hour boundaries, its
    // raw edge, minute buckets and hour buckets must add up exactly.
    let app = spawn_app().await;
    let at = |secs: i64| (Utc::now() - Duration::hours(1) + Duration::seconds(secs)).to_rfc3339();
    let events = json!({"events": [
        {"event_type": "edge", "user_id": 1, "timestamp": at(90)},
        {"event_type": "edge", "user_id": 2, "timestamp": at(150)},
        {"event_type": "edge", "user_id": 3, "timestamp": at(-60)},
        {"event_type": "edge", "user_id": 1, "timestamp": at(1800)},
    ]});
    app.post_json("/analytics/events/batch", events).await;
    app.post_json("/analytics/metrics/batch", json!({"metrics": [
        {"metric_name": "api_calls", "metric_value": 2, "endpoint": "/x", "timestamp": at(100)},
        {"metric_name": "api_calls", "metric_value": 5, "endpoint": "/x", "timestamp": at(2000)},
        {"metric_name": "api_calls", "metric_value": 7, "endpoint": "/y", "timestamp": at(-100)},
    ]})).await;
    let by_type = app.get_ok("/analytics/events/by-type?hours=1").await;
    assert_eq!(
        by_type["event_types"],
        json!([{"event_type": "edge", "count": 3}])
    );
    let d = app.get_ok("/analytics/dashboard?hours=1").await;
    assert_eq!(d["total_events"], 3);
    assert_eq!(d["active_users"], 2);
    assert_eq!(d["total_api_calls"], 7.0);
    assert_eq!(d["top_endpoints"], json!([{"endpoint": "/x", "count": 2}]));
    for interval in ["minute", "hour"] {
        let ts = app
            .get_ok(&format!(
                "/analytics/events/timeseries?interval={interval}&hours=1"
            ))
            .await;
        let sum: i64 = ts["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_i64().unwrap())
            .sum();
        assert_eq!(sum, 3, "{interval}");
    }
    let d2 = app.get_ok("/analytics/dashboard?hours=2").await;
    assert_eq!(
        (d2["total_events"].as_i64(), d2["active_users"].as_i64()),
        (Some(4), Some(3))
    );
    assert_eq!(d2["total_api_calls"], 14.0);
}

/// A batch spanning several INSERT statements carries every JSON value
/// through, escapes included, and answers the ids in request order.
#[tokio::test]
async fn batches_keep_json_escapes_and_request_order() {
    // Past one statement's 1000 rows.
    let app = spawn_app_with(&[("ANALYTICS_BATCH_LIMIT", "2000")]).await;
    let data = serde_json::json!({"ctl": "a\tb\nc\\d", "quote": "\"", "emoji": "🦀", "n": 1e100});
    let events: Vec<_> = (0..1500)
        .map(|i| serde_json::json!({"event_type": format!("order-{i}"), "event_data": data, "event_id": format!("ord-{i}")}))
        .collect();
    let (status, body) = app
        .post_json(
            "/analytics/events/batch",
            serde_json::json!({"events": events}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<i64> = body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 1500);
    for i in [0usize, 999, 1000, 1499] {
        let listed = app
            .get_ok(&format!("/analytics/events?event_type=order-{i}"))
            .await;
        let e = &listed["events"][0];
        assert_eq!(e["id"].as_i64(), Some(ids[i]), "row {i}");
        assert_eq!(e["event_data"], data);
        assert_eq!(e["event_id"], format!("ord-{i}"));
    }
    let metrics: Vec<_> = (0..1200)
        .map(|i| serde_json::json!({"metric_name": format!("m{i}"), "metric_value": i, "labels": {"k": "\u{1}"}}))
        .collect();
    let (status, body) = app
        .post_json(
            "/analytics/metrics/batch",
            serde_json::json!({"metrics": metrics}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<i64> = body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let listed = app.get_ok("/analytics/metrics?metric_name=m1100").await;
    assert_eq!(listed["metrics"][0]["id"].as_i64(), Some(ids[1100]));
    assert_eq!(listed["metrics"][0]["metric_value"], 1100.0);
    assert_eq!(listed["metrics"][0]["labels"]["k"], "\u{1}");
}

/// A large batch and a small one store every field exactly as sent (NULL
/// and empty text apart, escapes, numbers and microseconds included) and
/// the same way, and answer the ids in request order. It guarded a `COPY`
/// path for large batches, tried and measured no faster than the arrays.
#[tokio::test]
async fn large_and_small_metric_batches_store_the_same_fields() {
    let app = spawn_app().await;
    let at = Utc::now().duration_trunc(Duration::seconds(1)).unwrap() - Duration::minutes(5);
    let variants = [
        json!({"metric_value": 0.1, "endpoint": "a\tb\nc\rd\\e", "service_name": ""}),
        json!({"metric_value": -2.5e-7, "endpoint": "\\N", "service_name": null, "user_id": 7}),
        json!({"metric_value": 9.99e14, "endpoint": null, "labels": {"k": "\\\t\"🦀"}}),
        json!({"metric_value": 123456789.125, "endpoint": "", "metric_type": "gauge"}),
        json!({"metric_value": 0, "service_name": "svc\\x", "timestamp": (at + Duration::microseconds(123_456)).to_rfc3339()}),
    ];
    let batch = |prefix: &str, n: usize| {
        let metrics: Vec<Value> = (0..n)
            .map(|i| {
                let mut m = variants[i % variants.len()].clone();
                m["metric_name"] = json!(format!("{prefix}-{i}"));
                if m.get("timestamp").is_none() {
                    m["timestamp"] = json!(at.to_rfc3339());
                }
                m
            })
            .collect();
        json!({"metrics": metrics})
    };
    let mut answered = vec![];
    for (prefix, n) in [("large", 250), ("small", variants.len())] {
        let (status, body) = app
            .post_json("/analytics/metrics/batch", batch(prefix, n))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["ids"].as_array().unwrap().len(), n);
        answered.push(body["ids"].clone());
    }
    for i in 0..variants.len() {
        let mut rows = vec![];
        for (k, prefix) in ["large", "small"].iter().enumerate() {
            // The last of each variant in the large batch, too.
            for j in [i, i + 245 - 245 % variants.len()]
                .into_iter()
                .filter(|j| k == 0 || *j == i)
            {
                let listed = app
                    .get_ok(&format!("/analytics/metrics?metric_name={prefix}-{j}"))
                    .await;
                let mut row = listed["metrics"][0].clone();
                assert_eq!(row["id"], answered[k][j], "{prefix}-{j}");
                let sent = &variants[i];
                for field in ["endpoint", "service_name", "user_id"] {
                    assert_eq!(
                        row[field],
                        sent.get(field).cloned().unwrap_or(Value::Null),
                        "{prefix}-{j} {field}"
                    );
                }
                assert_eq!(
                    row["metric_value"].as_f64(),
                    sent["metric_value"].as_f64(),
                    "{prefix}-{j}"
                );
                assert_eq!(
                    row["labels"],
                    sent.get("labels").cloned().unwrap_or(json!({})),
                    "{prefix}-{j}"
                );
                for field in ["id", "metric_name", "created_at"] {
                    row.as_object_mut().unwrap().remove(field);
                }
                rows.push(row);
            }
        }
        assert_eq!(
            rows[0], rows[1],
            "variant {i}: both ends of the large batch"
        );
        assert_eq!(rows[0], rows[2], "variant {i}: large and small batches");
    }
    let micros = app.get_ok("/analytics/metrics?metric_name=large-4").await;
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(
            micros["metrics"][0]["timestamp"]
                .as_str()
                .unwrap_or_default()
        )
        .map(|t| t.timestamp_subsec_micros())
        .ok(),
        Some(123_456),
        "{micros}"
    );
}
