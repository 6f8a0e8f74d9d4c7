//! Hostile traffic: bodies that never finish, oversized heads, login bursts
//! sent in parallel, JSON built to cost memory.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the server closes the connection (or `limit` passes);
/// answers what came and whether the server closed.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into(), false),
        }
    }
}

fn head(path: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {API_KEY}\r\nContent-Type: application/json\r\n{extra}\r\n"
    )
}

const FAST_BODIES: [(&str, &str); 2] = [("BODY_IDLE_TIMEOUT", "1"), ("BODY_TIMEOUT", "3")];

#[tokio::test]
async fn a_stalled_body_is_cut_at_its_idle_bound() {
    let app = spawn_app_with(&FAST_BODIES).await;
    for framing in ["Content-Length: 1000\r\n", "Transfer-Encoding: chunked\r\n"] {
        let mut s = connect(&app).await;
        let start = Instant::now();
        s.write_all(head("/analytics/events", framing).as_bytes())
            .await
            .unwrap();
        let partial: &[u8] = if framing.starts_with("Content") {
            b"{\"event_type\":"
        } else {
            b"40\r\n{\"event_type\":"
        };
        s.write_all(partial).await.unwrap();
        let (answer, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
        let took = start.elapsed();
        assert!(answer.starts_with("HTTP/1.1 408"), "{framing}: {answer}");
        assert!(answer.contains("\"detail\""), "{answer}");
        assert!(closed, "the connection is closed after 408");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "{framing}: {took:?}"
        );
    }
    assert_eq!(app.count("platform_analytics_events").await, 0);
}

#[tokio::test]
async fn a_trickling_body_is_cut_at_its_total_bound() {
    let app = spawn_app_with(&FAST_BODIES).await;
    let mut s = connect(&app).await;
    let start = Instant::now();
    s.write_all(head("/analytics/events", "Content-Length: 1000\r\n").as_bytes())
        .await
        .unwrap();
    // A byte every 400 ms never trips the idle bound (1 s).
    let mut answer = String::new();
    while start.elapsed() < Duration::from_secs(8) {
        if s.write_all(b" ").await.is_err() {
            break;
        }
        let mut buf = [0u8; 1024];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(400), s.read(&mut buf)).await
        {
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
            break;
        }
    }
    let took = start.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn an_oversized_head_is_refused_with_431() {
    let app = spawn_app_with(&[("MAX_HEADER_BYTES", "8192")]).await;
    let send = |size: usize| {
        app.post("/analytics/events")
            .header("X-Padding", "a".repeat(size))
            .json(&json!({"event_type": "padded"}))
            .send()
    };
    let resp = send(64 * 1024).await.unwrap();
    let detail = expect_error(resp, 431).await;
    assert!(detail.contains("8192"), "{detail}");
    expect_error(send(9000).await.unwrap(), 431).await;
    assert_eq!(app.count("platform_analytics_events").await, 0);
    // Under the bound it is served as before.
    let (status, _) = json(send(6000).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(app.count("platform_analytics_events").await, 1);
}

async fn burst(app: &TestApp, n: usize, email: impl Fn(usize) -> String) -> (usize, usize) {
    let attempts = (0..n).map(|i| {
        let (client, url, email) = (app.client.clone(), app.url("/auth/login"), email(i));
        tokio::spawn(async move {
            client
                .post(url)
                .header("X-API-Key", API_KEY)
                .json(&json!({"email": email, "password": "wrong-password"}))
                .send()
                .await
                .unwrap()
        })
    });
    let mut counts = (0, 0);
    for a in attempts.collect::<Vec<_>>() {
        let resp = a.await.unwrap();
        match resp.status().as_u16() {
            401 => counts.0 += 1,
            429 => {
                assert!(resp.headers().contains_key("retry-after"));
                counts.1 += 1
            }
            other => panic!("unexpected {other}"),
        }
    }
    counts
}

#[tokio::test]
async fn a_parallel_burst_of_failed_logins_cannot_pass_the_limit() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES", "5"), ("LOGIN_IP_MAX_FAILURES", "20")]).await;
    // One address, many emails: the IP's limit holds.
    let (failed, throttled) = burst(&app, 100, |i| format!("u{i}@example.com")).await;
    assert_eq!((failed, throttled), (20, 80));

    // One email from many places is held by the email's limit.
    let app = spawn_app_with(&[
        ("LOGIN_MAX_FAILURES", "5"),
        ("LOGIN_IP_MAX_FAILURES", "1000"),
    ])
    .await;
    let (failed, throttled) = burst(&app, 60, |_| "victim@example.com".into()).await;
    assert_eq!((failed, throttled), (5, 55));
}

#[tokio::test]
async fn a_successful_login_gives_its_attempt_back() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES", "2"), ("LOGIN_IP_MAX_FAILURES", "3")]).await;
    app.register("ada@example.com", "password123").await;
    for _ in 0..5 {
        let resp = app.login("ada@example.com", "password123").await;
        assert_eq!(resp.status(), 200);
    }
    expect_error(app.login("x@example.com", "wrong-password").await, 401).await;
    expect_error(app.login("ada@example.com", "wrong-password").await, 401).await;
    assert_eq!(
        app.login("ada@example.com", "password123").await.status(),
        200
    );
}

/// Posts `body` and requires a 422 whose detail names `expected`.
async fn refused(app: &TestApp, path: &str, body: Value, expected: &str) {
    let (status, answer) = app.post_json(path, body).await;
    assert_eq!(status, 422, "{answer}");
    let detail = answer["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(expected), "{answer}");
}

#[tokio::test]
async fn hostile_json_is_refused_before_it_is_built() {
    let app = spawn_app_with(&[("JSON_BODY_LIMIT", "8388608")]).await;
    let many_keys: serde_json::Map<String, Value> =
        (0..5000).map(|i| (format!("k{i}"), json!(0))).collect();
    refused(
        &app,
        "/analytics/events",
        json!({"event_type": "e", "event_data": many_keys}),
        "more than 1000 keys",
    )
    .await;
    refused(
        &app,
        "/analytics/metrics",
        json!({"metric_name": "m", "metric_value": 1, "labels": {"a": vec![0; 20_000]}}),
        "more than 10000 items",
    )
    .await;
    assert_eq!(app.count("platform_analytics_events").await, 0);
    assert_eq!(app.count("platform_analytics_metrics").await, 0);
    // Within the limits, nested objects are stored as sent.
    let data = json!({"a": {"b": [1, 2, {"c": "d"}]}, "e": null});
    let (status, body) = app
        .post_json(
            "/analytics/events",
            json!({"event_type": "e", "event_data": data}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event_data"], data);
}

/// The body is read in one pass, while the configured limits are in force
/// (they are set around the extractor's polls, not around a second parse).
#[tokio::test]
async fn configured_json_limits_hold_in_single_items_and_batches() {
    let app = spawn_app_with(&[("JSON_MAX_KEYS", "3")]).await;
    let four: serde_json::Map<String, Value> =
        (0..4).map(|i| (format!("k{i}"), json!(i))).collect();
    let three: serde_json::Map<String, Value> =
        (0..3).map(|i| (format!("k{i}"), json!(i))).collect();
    refused(
        &app,
        "/analytics/events",
        json!({"event_type": "e", "event_data": four}),
        "more than 3 keys",
    )
    .await;
    refused(
        &app,
        "/analytics/metrics/batch",
        json!({"metrics": [
            {"metric_name": "m", "metric_value": 1, "labels": three},
            {"metric_name": "m", "metric_value": 2, "labels": four},
        ]}),
        "more than 3 keys",
    )
    .await;
    assert_eq!(app.count("platform_analytics_events").await, 0);
    assert_eq!(app.count("platform_analytics_metrics").await, 0);
    let (status, body) = app
        .post_json(
            "/analytics/metrics/batch",
            json!({"metrics": [{"metric_name": "m", "metric_value": 1, "labels": three}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.count("platform_analytics_metrics").await, 1);
}
