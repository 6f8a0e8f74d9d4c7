//! Streamed export of events and metrics (NDJSON, CSV, gzip, resuming).

use std::io::Read;

use serde_json::{Value, json};

use crate::helpers::*;

/// Stores `n` events of `event_type` (alternating users 1 and 2), in batches.
async fn ingest(app: &TestApp, event_type: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"event_type": event_type, "user_id": 1 + i % 2, "event_id": format!("{event_type}-{i}"), "event_data": {"i": i}}))
            .collect();
        let (status, body) = app
            .post_json("/analytics/events/batch", json!({"events": events}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

async fn export(app: &TestApp, query: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = app
        .get(&format!("/analytics/events/export?{query}"))
        .send()
        .await
        .unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, resp.text().await.unwrap())
}

fn header(headers: &reqwest::header::HeaderMap, name: &str) -> i64 {
    headers[name].to_str().unwrap().parse().unwrap()
}

/// More rows than one batch (5,000) go out in id order, filtered, counted,
/// each exactly once; a resumed export delivers exactly the rest of the set
/// first counted, not rows stored since.
#[tokio::test]
async fn ndjson_export_is_ordered_counted_and_resumable() {
    let app = spawn_app().await;
    ingest(&app, "export", 12_000).await;
    ingest(&app, "other", 50).await;
    let (status, headers, body) = export(&app, "event_type=export").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/x-ndjson");
    assert_eq!(header(&headers, "x-total-count"), 12_000);
    let rows: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 12_000);
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids ascend");
    assert!(rows.iter().all(|r| r["event_type"] == "export"));
    let mut seen: Vec<i64> = rows
        .iter()
        .map(|r| r["event_data"]["i"].as_i64().unwrap())
        .collect();
    seen.sort();
    assert_eq!(seen, (0..12_000).collect::<Vec<i64>>());
    let through = header(&headers, "x-export-through-id");
    assert_eq!(through, *ids.last().unwrap());

    // Interrupted after 7,000 rows: resume from the last id received.
    ingest(&app, "export-late", 10).await;
    let after = ids[6_999];
    let (_, headers, rest) = export(
        &app,
        &format!("event_type=export&after_id={after}&through_id={through}"),
    )
    .await;
    assert_eq!(header(&headers, "x-total-count"), 5_000);
    let rest_ids: Vec<i64> = rest
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(rest_ids, ids[7_000..]);

    // A user filter and a window that holds nothing.
    let (_, headers, body) = export(&app, "event_type=export&user_id=2").await;
    assert_eq!(header(&headers, "x-total-count"), 6_000);
    assert_eq!(body.lines().count(), 6_000);
    let (_, headers, body) =
        export(&app, "from=2001-01-01T00:00:00Z&to=2001-01-02T00:00:00Z").await;
    assert_eq!(header(&headers, "x-total-count"), 0);
    assert!(!headers.contains_key("x-export-through-id"));
    assert_eq!(body, "");
}

#[tokio::test]
async fn csv_export_has_a_header_and_quoted_fields_and_gzips() {
    let app = spawn_app().await;
    let (status, _) = app
        .post_json(
            "/analytics/events",
            json!({"event_type": "csv", "session_id": "a,b", "event_data": {"text": "say \"hi\"\nbye"}}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, headers, body) = export(&app, "format=csv&event_type=csv").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    let mut lines = body.splitn(2, '\n');
    assert_eq!(
        lines.next().unwrap(),
        "id,event_id,event_type,user_id,session_id,api_key_id,timestamp,event_data"
    );
    assert!(lines.next().unwrap().contains("\"a,b\""), "{body}");

    let resp = app
        .get("/analytics/events/export?format=csv&event_type=csv")
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let zipped = resp.bytes().await.unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, body);
}

#[tokio::test]
async fn metrics_export_and_bad_parameters() {
    let app = spawn_app().await;
    app.post_metrics(vec![
        json!({"metric_name": "tokens", "metric_value": 5, "labels": {"model": "m"}}),
        json!({"metric_name": "tokens", "metric_value": 7}),
        json!({"metric_name": "other", "metric_value": 1}),
    ])
    .await;
    let resp = app
        .get("/analytics/metrics/export?metric_name=tokens")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-total-count"], "2");
    let rows: Vec<Value> = resp
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let values: Vec<f64> = rows
        .iter()
        .map(|r| r["metric_value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [5.0, 7.0]);
    assert_eq!(rows[0]["labels"]["model"], "m");

    expect_422_for(
        &app,
        "/analytics/metrics/export",
        &[
            "format=xml",
            "after_id=-1",
            "through_id=0",
            "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "user_id=0",
        ],
    )
    .await;
}
