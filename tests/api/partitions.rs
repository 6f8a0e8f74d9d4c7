//! Time partitions on Postgres: made ahead, stray rows drained into
//! partitions of their own, `event_id` kept once across partitions,
//! retention by whole partitions, and a populated database migrated with
//! every row and id.

use chrono::{Duration, NaiveDateTime, Utc};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use serde_json::{Value, json};

use crate::helpers::*;

const EVENTS: &str = "platform_analytics_events";
const METRICS: &str = "platform_analytics_metrics";
const KEYS: &str = "platform_analytics_event_keys";

/// `(name, bound)` of each partition of `table`, by name.
pub(crate) async fn partitions(db: &DatabaseConnection, table: &str) -> Vec<(String, String)> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT c.relname::text AS name, pg_get_expr(c.relpartbound, c.oid) AS bound \
                 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = '{table}'::regclass ORDER BY 1"
            ),
        ))
        .await
        .unwrap();
    rows.into_iter()
        .map(|r| {
            (
                r.try_get("", "name").unwrap(),
                r.try_get("", "bound").unwrap(),
            )
        })
        .collect()
}

pub(crate) async fn partition_names(db: &DatabaseConnection, table: &str) -> Vec<String> {
    partitions(db, table)
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

/// Hour buckets before `horizon` in both counter tables.
async fn old_hour_buckets(app: &TestApp, horizon: &str) -> [i64; 2] {
    [
        app.count_where("platform_analytics_event_hours", horizon)
            .await,
        app.count_where("platform_analytics_metric_hours", horizon)
            .await,
    ]
}

fn day(t: NaiveDateTime) -> String {
    t.format("%Y%m%d").to_string()
}

pub(crate) fn iso(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Which partition holds the event `id`.
async fn home(app: &TestApp, id: i64) -> String {
    let row = app
        .db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT tableoid::regclass::text AS t FROM {EVENTS} WHERE id = {id}"),
        ))
        .await
        .unwrap()
        .expect("the row is stored");
    row.try_get("", "t").unwrap()
}

pub(crate) async fn run_job(app: &TestApp, job: &str) -> Value {
    let (status, body) = app
        .post_json(&format!("/analytics/jobs/{job}"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
#[ignore = "needs Postgres"]
async fn partitions_are_made_ahead_of_the_furthest_client_timestamp() {
    require_postgres();
    // Clients may be two days ahead; one more day beyond that.
    let app = spawn_app_with(&[
        ("INGEST_CLOCK_SKEW", "172800"),
        ("ANALYTICS_PARTITIONS_AHEAD", "1"),
    ])
    .await;
    let today = Utc::now().naive_utc();
    for table in [EVENTS, METRICS] {
        let names = partition_names(&app.db, table).await;
        let mut expected: Vec<String> = (0..=3)
            .map(|d| format!("{table}_p{}", day(today + Duration::days(d))))
            .collect();
        expected.push(format!("{table}_default"));
        expected.sort();
        assert_eq!(names, expected, "{table}");
    }
    // An event two days ahead lands in its own day's partition.
    let ahead = Utc::now() + Duration::days(2) - Duration::minutes(5);
    let (status, event) = app
        .post_json(
            "/analytics/events",
            json!({"event_type": "a", "timestamp": iso(ahead)}),
        )
        .await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(
        home(&app, event["id"].as_i64().unwrap()).await,
        format!("{EVENTS}_p{}", day(ahead.naive_utc()))
    );
    // Running again makes nothing new.
    assert_eq!(run_job(&app, "partitions").await["rows"], 0);
    // The gauge is the process's, shared by every test's server: each has at
    // least today and three days ahead (more when it started before midnight).
    let metrics = app.metrics_text().await;
    let gauge = format!("analytics_partitions{{table=\"{EVENTS}\"}} ");
    let value: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(gauge.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(value >= 4.0, "{value}");
}

#[tokio::test]
#[ignore = "needs Postgres"]
async fn rows_outside_every_partition_are_kept_and_drained_into_their_own() {
    require_postgres();
    let app = spawn_app_with(&[("ANALYTICS_RETENTION_DAYS", "400")]).await;
    // Far past, through the API (inside the retention window).
    let past = Utc::now() - Duration::days(200);
    let (status, old) = app
        .post_json(
            "/analytics/events",
            json!({"event_type": "old", "timestamp": iso(past), "event_id": "far-past"}),
        )
        .await;
    assert_eq!(status, 200, "{old}");
    let old_id = old["id"].as_i64().unwrap();
    assert_eq!(home(&app, old_id).await, format!("{EVENTS}_default"));
    // Far future, as another writer (a bulk load, an older replica) might
    // store it: Postgres takes it into the default partition too.
    let future = (Utc::now() + Duration::days(300)).naive_utc();
    app.execute(&format!(
        "INSERT INTO {EVENTS} (event_type, event_data, \"timestamp\") \
         VALUES ('future', '{{}}', '{}')",
        future.format("%Y-%m-%d %H:%M:%S")
    ))
    .await;
    let future_id = app
        .scalar(&format!(
            "SELECT id AS n FROM {EVENTS} WHERE event_type = 'future'"
        ))
        .await;
    let before = app.count(EVENTS).await;

    let report = run_job(&app, "partitions").await;
    assert_eq!(report["rows"], 2, "{report}");
    assert_eq!(
        home(&app, old_id).await,
        format!("{EVENTS}_p{}", day(past.naive_utc()))
    );
    assert_eq!(
        home(&app, future_id).await,
        format!("{EVENTS}_p{}", day(future))
    );
    assert_eq!(app.count(&format!("{EVENTS}_default")).await, 0);
    assert_eq!(app.count(EVENTS).await, before);
    // The moved row keeps its id and answers a retry of its event_id.
    let (status, again) = app
        .post_json(
            "/analytics/events",
            json!({"event_type": "old", "timestamp": iso(Utc::now()), "event_id": "far-past"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again, old);
}

#[tokio::test]
#[ignore = "needs Postgres"]
async fn a_retried_event_id_is_stored_once_across_partitions() {
    require_postgres();
    let app = spawn_app().await;
    let yesterday = Utc::now() - Duration::days(1);
    let (status, first) = app
        .post_json(
            "/analytics/events",
            json!({"event_type": "order", "event_id": "o-1", "timestamp": iso(yesterday)}),
        )
        .await;
    assert_eq!(status, 200);
    run_job(&app, "partitions").await;
    let first_home = home(&app, first["id"].as_i64().unwrap()).await;
    assert_eq!(
        first_home,
        format!("{EVENTS}_p{}", day(yesterday.naive_utc()))
    );
    // The retry carries today's time: another partition, the same row.
    retries_answer(&app, &first, "o-1", "o-2").await;
    assert_eq!(app.count("platform_analytics_event_keys").await, 2);
}

/// A retry of `id`, alone and in a batch beside the new `other`, answers
/// the stored `first` row, which stays the only one.
pub(crate) async fn retries_answer(app: &TestApp, first: &Value, id: &str, other: &str) {
    let (status, again) = app
        .post_json(
            "/analytics/events",
            json!({"event_type": "order", "event_id": id}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(&again, first);
    let (status, batch) = app
        .post_json(
            "/analytics/events/batch",
            json!({"events": [{"event_type": "order", "event_id": id}, {"event_type": "order", "event_id": other}]}),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["ids"][0], first["id"]);
    assert_eq!(
        app.count_where(EVENTS, &format!("event_id = '{id}'")).await,
        1
    );
}

#[tokio::test]
#[ignore = "needs Postgres"]
async fn retention_drops_whole_partitions_and_their_buckets() {
    require_postgres();
    let backend = fresh_backend().await;
    let env = backend.env.clone();
    let app = spawn_on(backend, &[("ANALYTICS_RETENTION_DAYS", "30")]).await;
    let old = Utc::now() - Duration::days(20);
    let mut ids = vec![];
    for (ts, id) in [(old, "old-1"), (Utc::now(), "new-1")] {
        let (status, stored) = app
            .post_json(
                "/analytics/events",
                json!({"event_type": "t", "event_id": id, "timestamp": iso(ts)}),
            )
            .await;
        assert_eq!(status, 200);
        ids.push(stored["id"].as_i64().unwrap());
        app.post_metrics(vec![
            json!({"metric_name": "m", "metric_value": 1, "timestamp": iso(ts)}),
        ])
        .await;
    }
    run_job(&app, "partitions").await;
    let old_day = day(old.naive_utc());
    for table in [EVENTS, METRICS] {
        let names = partition_names(&app.db, table).await;
        assert!(names.contains(&format!("{table}_p{old_day}")), "{names:?}");
    }
    let old_hours = format!(
        "bucket < '{}'",
        (Utc::now() - Duration::days(15)).naive_utc()
    );
    assert_eq!(old_hour_buckets(&app, &old_hours).await, [1, 1]);
    app.stop(true).await;

    // The horizon moves to ten days: the twenty-day-old partitions go whole.
    let app = spawn_on(Backend::share(&env), &[("ANALYTICS_RETENTION_DAYS", "10")]).await;
    let report = run_job(&app, "retention").await;
    assert_eq!(report["ran"], true);
    for table in [EVENTS, METRICS] {
        let names = partition_names(&app.db, table).await;
        assert!(!names.contains(&format!("{table}_p{old_day}")), "{names:?}");
        assert!(
            names.contains(&format!("{table}_p{}", day(Utc::now().naive_utc()))),
            "{names:?}"
        );
        assert_eq!(app.count(table).await, 1, "{table}");
    }
    assert_eq!(old_hour_buckets(&app, &old_hours).await, [0, 0]);
    // old-1's key arrived this month: its generation stays, its row went.
    // A retry (its old time is now refused, so it carries none) is stored
    // again, as with no key, and the key replaced.
    let this_month = "gen = date_trunc('month', timezone('UTC', now()))";
    assert_eq!(
        app.count_where(KEYS, &format!("event_id = 'old-1' AND {this_month}"))
            .await,
        1
    );
    let (status, again) = app
        .post_json(
            "/analytics/events",
            json!({"event_type": "t", "event_id": "old-1"}),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert!(
        again["id"].as_i64().unwrap() > ids[1],
        "{again} after {ids:?}"
    );
    assert_eq!(app.count_where(EVENTS, "event_id = 'old-1'").await, 1);
    let key_pk = app
        .scalar(&format!(
            "SELECT event_pk AS n FROM {KEYS} WHERE event_id = 'old-1' AND {this_month}"
        ))
        .await;
    assert_eq!(key_pk, again["id"].as_i64().unwrap());
    assert_eq!(
        app.count_where(KEYS, &format!("event_id = 'new-1' AND {this_month}"))
            .await,
        1
    );
}

/// A digest of every row, ids included, to compare before and after.
async fn digest(db: &DatabaseConnection, table: &str) -> (i64, String) {
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT COUNT(*) AS n, md5(string_agg(t::text, '|' ORDER BY id)) AS d FROM {table} t"
            ),
        ))
        .await
        .unwrap()
        .unwrap();
    (row.try_get("", "n").unwrap(), row.try_get("", "d").unwrap())
}

#[tokio::test]
#[ignore = "needs Postgres"]
async fn a_populated_database_is_partitioned_with_every_row_and_id() {
    use migration::{Migrator, MigratorTrait};
    require_postgres();
    let backend = fresh_backend().await;
    let url = backend.env["DATABASE_URL"].clone();
    {
        // The schema before partitions, holding ten days of rows.
        let db = Database::connect(&url).await.unwrap();
        let before = Migrator::migrations()
            .iter()
            .position(|m| m.name() == "m20250111_000001_partitions")
            .expect("the partitions migration") as u32;
        Migrator::up(&db, Some(before)).await.unwrap();
        db.execute_unprepared(&format!(
            "INSERT INTO {EVENTS} (event_type, event_data, \"timestamp\", event_id) \
             SELECT 'e' || (g % 7), json_build_object('g', g), \
                    timezone('UTC', now()) - (g || ' seconds')::interval, \
                    CASE WHEN g % 3 = 0 THEN 'k-' || g END \
             FROM generate_series(1, 20000) g;
             INSERT INTO {METRICS} (metric_name, metric_value, metric_type, labels, \"timestamp\") \
             SELECT 'm', g, 'counter', '{{}}', timezone('UTC', now()) - (g * 40 || ' seconds')::interval \
             FROM generate_series(1, 20000) g;"
        ))
        .await
        .unwrap();
        let mut digests = vec![];
        for table in [EVENTS, METRICS] {
            digests.push(digest(&db, table).await);
        }
        db.close().await.unwrap();
        let app = spawn_on(backend, &[]).await;
        for (table, before) in [EVENTS, METRICS].into_iter().zip(digests) {
            assert_eq!(digest(&app.db, table).await, before, "{table}");
            let bounds = partitions(&app.db, table).await;
            let legacy = bounds
                .iter()
                .find(|(n, _)| *n == format!("{table}_legacy"))
                .expect("the old table is the first partition");
            assert!(
                legacy.1.starts_with("FOR VALUES FROM (MINVALUE)"),
                "{legacy:?}"
            );
        }
        // Stored event_ids still answer retries; new ids go on from the old.
        let (status, again) = app
            .post_json(
                "/analytics/events",
                json!({"event_type": "x", "event_id": "k-300"}),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(again["event_data"], json!({"g": 300}));
        let (status, new) = app
            .post_json("/analytics/events", json!({"event_type": "x"}))
            .await;
        assert_eq!(status, 200);
        assert!(new["id"].as_i64().unwrap() > 20000, "{new}");
        assert_eq!(app.count(KEYS).await, 6666);
        // The key table is partitioned by generation too, its keys kept in
        // the first one.
        let legacy = partitions(&app.db, KEYS).await;
        let legacy = legacy
            .iter()
            .find(|(n, _)| *n == format!("{KEYS}_legacy"))
            .unwrap_or_else(|| panic!("{legacy:?}"));
        assert!(
            legacy.1.starts_with("FOR VALUES FROM (MINVALUE)"),
            "{legacy:?}"
        );
        assert_eq!(app.count(&format!("{KEYS}_legacy")).await, 6666);
    }
}
