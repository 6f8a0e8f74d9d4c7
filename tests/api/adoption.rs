//! A database the original service created (its tables, no migration
//! history) is adopted: migrations bring it forward and every row survives.

use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::json;

use crate::helpers::*;

/// "original-password", hashed by Python's bcrypt as the original did.
const HASH: &str = "$2b$12$8m5o8s6i0HV8U2vmOT7zQOK7wRUHI76p8XXQSIP91RviXQDlxaSB6";

/// The tables as SQLAlchemy's `create_all` made them.
fn original_schema(postgres: bool) -> Vec<String> {
    let (serial, json_t) = if postgres {
        ("SERIAL PRIMARY KEY", "JSON")
    } else {
        ("INTEGER PRIMARY KEY AUTOINCREMENT", "JSON")
    };
    vec![
        format!("CREATE TABLE platform_users (id {serial}, email VARCHAR(255) NOT NULL, password_hash VARCHAR(255) NOT NULL, is_active BOOLEAN NOT NULL, created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, first_name VARCHAR(100), last_name VARCHAR(100), meta_data {json_t} NOT NULL, UNIQUE (email))"),
        format!("CREATE TABLE platform_analytics_events (id {serial}, user_id INTEGER, event_type VARCHAR(100) NOT NULL, event_data {json_t} NOT NULL, timestamp TIMESTAMP WITHOUT TIME ZONE NOT NULL, session_id VARCHAR(255), ip_address VARCHAR(45), user_agent TEXT)"),
        format!("CREATE TABLE platform_analytics_metrics (id {serial}, metric_name VARCHAR(100) NOT NULL, metric_value DOUBLE PRECISION NOT NULL, metric_type VARCHAR(50) NOT NULL, user_id INTEGER, service_name VARCHAR(100), endpoint VARCHAR(255), labels {json_t} NOT NULL, timestamp TIMESTAMP WITHOUT TIME ZONE NOT NULL)"),
        format!("CREATE TABLE platform_analytics_usage (id {serial}, user_id INTEGER NOT NULL, api_calls_count INTEGER NOT NULL, tokens_used INTEGER NOT NULL, cost_usd DOUBLE PRECISION NOT NULL, date TIMESTAMP WITHOUT TIME ZONE NOT NULL, period_type VARCHAR(20) NOT NULL, created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL, updated_at TIMESTAMP WITHOUT TIME ZONE NOT NULL)"),
        format!("INSERT INTO platform_users (email, password_hash, is_active, created_at, updated_at, first_name, last_name, meta_data) VALUES ('legacy@example.com', '{HASH}', true, '2024-05-01 10:00:00', '2024-05-01 10:00:00', 'Leg', 'Acy', '{{\"plan\": \"pro\"}}')"),
        "INSERT INTO platform_analytics_events (user_id, event_type, event_data, timestamp, session_id, ip_address, user_agent) VALUES (1, 'user_login', '{\"source\": \"web\"}', '2024-05-01 10:00:01', 's1', '10.0.0.1', 'curl/8')".into(),
        "INSERT INTO platform_analytics_metrics (metric_name, metric_value, metric_type, user_id, service_name, endpoint, labels, timestamp) VALUES ('api_calls', 1.0, 'counter', 1, 'gateway', '/x', '{}', '2024-05-01 10:00:02')".into(),
        "INSERT INTO platform_analytics_usage (user_id, api_calls_count, tokens_used, cost_usd, date, period_type, created_at, updated_at) VALUES (1, 10, 2000, 0.5, '2024-05-01 00:00:00', 'daily', '2024-05-02 00:00:00', '2024-05-02 00:00:00')".into(),
    ]
}

async fn count(db: &sea_orm::DatabaseConnection, table: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM {table}"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get("", "n").unwrap()
}

#[tokio::test]
async fn a_database_made_by_the_original_is_adopted() {
    let backend = fresh_backend().await;
    let url = match backend.env.get("DATABASE_URL") {
        Some(url) => url.clone(),
        None => format!("sqlite://{}?mode=rwc", backend.env["SQLITE_PATH"]),
    };
    {
        let db = Database::connect(&url).await.unwrap();
        for stmt in original_schema(using_postgres()) {
            db.execute_unprepared(&stmt).await.unwrap();
        }
        db.close().await.unwrap();
    }
    let app = spawn_on(backend, &[]).await;
    for table in [
        "platform_users",
        "platform_analytics_events",
        "platform_analytics_metrics",
    ] {
        assert_eq!(count(&app.db, table).await, 1, "{table} keeps its row");
    }
    // Usage is derived: the rollup may add a monthly row and recompute the
    // day from the metric, but the original's row itself stays.
    let kept = app
        .db
        .query_one_raw(Statement::from_string(
            app.db.get_database_backend(),
            "SELECT user_id, period_type FROM platform_analytics_usage WHERE id = 1".to_string(),
        ))
        .await
        .unwrap()
        .expect("the original's usage row");
    assert_eq!(kept.try_get::<String>("", "period_type").unwrap(), "daily");
    let resp = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "every migration applied");

    // The original's user logs in with the original's password and hash.
    let (status, body) = json(app.login("legacy@example.com", "original-password").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["first_name"], "Leg");
    assert_eq!(body["user"]["role"], "user");
    assert_eq!(body["user"]["created_at"], "2024-05-01T10:00:00Z");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(app.verify(token).await.status(), 200);
    // New rows continue the original's id sequence.
    let (status, body) = json(
        app.post("/auth/register")
            .json(&json!({"email": "new@example.com", "password": "password123"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(body["user"]["id"], 2);
}

#[tokio::test]
async fn migrations_go_down_and_up_again() {
    use migration::{Migrator, MigratorTrait};
    let app = spawn_app().await;
    let applied = Migrator::get_applied_migrations(&app.db)
        .await
        .unwrap()
        .len();
    assert_eq!(applied, Migrator::migrations().len());
    Migrator::down(&app.db, None).await.unwrap();
    assert!(
        Migrator::get_applied_migrations(&app.db)
            .await
            .unwrap()
            .is_empty()
    );
    Migrator::up(&app.db, None).await.unwrap();
    assert_eq!(count(&app.db, "platform_users").await, 0);
}

/// During a rolling upgrade a replica that predates the latest-hours table
/// still writes presence rows but not latest hours: the next usage rollup
/// moves those users' latest hours up, so they count as active users.
#[tokio::test]
async fn presence_rows_from_an_older_replica_count_after_the_rollup() {
    let app = spawn_app().await;
    let (status, body) = app
        .post_json(
            "/analytics/events",
            json!({"event_type": "new", "user_id": 3}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.rollup().await;
    // What an older replica writes for user 4's event: the presence row only.
    app.execute(
        "INSERT INTO platform_analytics_event_user_hours (bucket, user_id) \
         SELECT bucket, 4 FROM platform_analytics_event_user_hours WHERE user_id = 3",
    )
    .await;
    let dash = app.get_ok("/analytics/dashboard?hours=24").await;
    assert_eq!(dash["active_users"], 1, "{dash}");

    app.rollup().await;
    let dash = app.get_ok("/analytics/dashboard?hours=24").await;
    assert_eq!(dash["active_users"], 2, "{dash}");
    let current =
        "bucket = (SELECT bucket FROM platform_analytics_event_user_hours WHERE user_id = 3)";
    assert_eq!(
        app.count_where("platform_analytics_user_last_hours", current)
            .await,
        2
    );
    // Nothing stale is left: another run moves nothing and no row is added.
    app.rollup().await;
    assert_eq!(app.count("platform_analytics_user_last_hours").await, 2);
}
