//! The `event_id` key table's monthly arrival generations on Postgres: made
//! ahead, read whole by a retry, and dropped whole by retention with the
//! keys of kept events carried forward.

use chrono::{Duration, Utc};
use serde_json::json;

use crate::helpers::*;
use crate::partitions::{iso, partition_names, retries_answer, run_job};

const EVENTS: &str = "platform_analytics_events";
const KEYS: &str = "platform_analytics_event_keys";
const THIS_MONTH: &str = "date_trunc('month', timezone('UTC', now()))";

/// The month `months` from this one as a partition name's suffix (`YYYYMM`).
async fn month(app: &TestApp, months: i64) -> String {
    app.scalar(&format!(
        "SELECT to_char({THIS_MONTH} + interval '{months} months', 'YYYYMM')::int8 AS n"
    ))
    .await
    .to_string()
}

/// A generation made by hand, `months` from this one.
async fn make_generation(app: &TestApp, months: i64) -> String {
    let name = format!("{KEYS}_g{}", month(app, months).await);
    app.execute(&format!(
        "CREATE TABLE {name} PARTITION OF {KEYS} FOR VALUES \
         FROM ({THIS_MONTH} + interval '{months} months') \
         TO ({THIS_MONTH} + interval '{} months')",
        months + 1
    ))
    .await;
    name
}

#[tokio::test]
#[ignore = "needs Postgres"]
async fn this_and_next_months_generations_are_made_ahead() {
    require_postgres();
    let app = spawn_app().await;
    let mut expected = vec![
        format!("{KEYS}_default"),
        format!("{KEYS}_g{}", month(&app, 0).await),
        format!("{KEYS}_g{}", month(&app, 1).await),
    ];
    expected.sort();
    assert_eq!(partition_names(&app.db, KEYS).await, expected);
    let (status, stored) = app
        .post_json(
            "/analytics/events",
            json!({"event_type": "t", "event_id": "w-1"}),
        )
        .await;
    assert_eq!(status, 200, "{stored}");
    let home = app
        .scalar(&format!(
            "SELECT COUNT(*) AS n FROM {KEYS}_g{} WHERE event_id = 'w-1' AND event_pk = {}",
            month(&app, 0).await,
            stored["id"]
        ))
        .await;
    assert_eq!(home, 1);
    assert_eq!(run_job(&app, "partitions").await["rows"], 0);
}

#[tokio::test]
#[ignore = "needs Postgres"]
async fn a_retry_finds_its_key_in_an_older_generation() {
    require_postgres();
    let app = spawn_app().await;
    let (status, first) = app
        .post_json(
            "/analytics/events",
            json!({"event_type": "order", "event_id": "g-1"}),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    // As if it had arrived three months ago.
    let old = make_generation(&app, -3).await;
    app.execute(&format!(
        "UPDATE {KEYS} SET gen = gen - interval '3 months' WHERE event_id = 'g-1'"
    ))
    .await;
    assert_eq!(app.count_where(&old, "event_id = 'g-1'").await, 1);
    retries_answer(&app, &first, "g-1", "g-2").await;
    assert_eq!(app.count_where(KEYS, "event_id = 'g-1'").await, 1);
}

#[tokio::test]
#[ignore = "needs Postgres"]
async fn retention_drops_old_generations_and_carries_kept_keys_forward() {
    require_postgres();
    let app = spawn_app_with(&[
        ("ANALYTICS_RETENTION_DAYS", "10"),
        ("INGEST_CLOCK_SKEW", "172800"),
    ])
    .await;
    let (status, future) = app
        .post_json(
            "/analytics/events",
            json!({"event_type": "t", "event_id": "far-1",
                   "timestamp": iso(Utc::now() + Duration::days(1))}),
        )
        .await;
    assert_eq!(status, 200, "{future}");
    // Three months ago: more keys than one batch of 10,000, and far-1's key,
    // whose event is kept (as when a client's clock ran ahead).
    let old = make_generation(&app, -3).await;
    app.execute(&format!(
        "UPDATE {KEYS} SET gen = gen - interval '3 months' WHERE event_id = 'far-1'"
    ))
    .await;
    app.execute(&format!(
        "INSERT INTO {KEYS} (event_id, event_pk, \"timestamp\", gen) \
         SELECT 'old-' || i, i, now() - interval '20 days', {THIS_MONTH} - interval '3 months' \
         FROM generate_series(1, 25000) i \
         UNION ALL SELECT 'new-' || i, i, now(), {THIS_MONTH} FROM generate_series(1, 300) i \
         UNION ALL SELECT 'stray-' || i, i, now() - interval '60 days', \
                          {THIS_MONTH} - interval '9 months' FROM generate_series(1, 5) i"
    ))
    .await;
    app.execute(&format!("ANALYZE {KEYS}")).await;
    assert_eq!(app.count(&format!("{KEYS}_default")).await, 5);
    // Event rows older than the horizon that no partition holds.
    let past = (Utc::now() - Duration::days(300)).naive_utc();
    app.execute(&format!(
        "INSERT INTO {EVENTS} (event_type, event_data, \"timestamp\") \
         SELECT 'stray', '{{}}', '{}' FROM generate_series(1, 3)",
        past.format("%Y-%m-%d %H:%M:%S")
    ))
    .await;
    let kept = app.count(EVENTS).await - 3;

    let report = run_job(&app, "retention").await;
    assert_eq!(report["ran"], true, "{report}");
    assert!(report["rows"].as_i64().unwrap() >= 25_008, "{report}");
    assert!(!partition_names(&app.db, KEYS).await.contains(&old));
    assert_eq!(app.count_where(KEYS, "event_id LIKE 'old-%'").await, 0);
    assert_eq!(app.count(&format!("{KEYS}_default")).await, 0);
    assert_eq!(app.count_where(KEYS, "event_id LIKE 'new-%'").await, 300);
    assert_eq!(
        app.count_where(KEYS, &format!("event_id = 'far-1' AND gen = {THIS_MONTH}"))
            .await,
        1
    );
    assert_eq!(app.count(&format!("{EVENTS}_default")).await, 0);
    assert_eq!(app.count(EVENTS).await, kept);
    // The carried key still answers a retry with the stored row.
    let (status, again) = app
        .post_json(
            "/analytics/events",
            json!({"event_type": "t", "event_id": "far-1"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again, future);
}
