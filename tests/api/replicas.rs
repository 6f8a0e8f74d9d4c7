//! Analytics reads on a real streaming replica (pg_basebackup -R, started
//! by `.ci/services.sh`): used while in sync, left when it lags or stops,
//! used again when it recovers; auth stays on the primary throughout.

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};

use crate::helpers::*;

fn require_replica() -> (String, String) {
    require_postgres();
    let url = std::env::var("TEST_REPLICA_URL").unwrap_or_default();
    let dir = std::env::var("TEST_REPLICA_DATADIR").unwrap_or_default();
    assert!(
        !url.is_empty() && !dir.is_empty(),
        "this test needs a streaming replica: set TEST_REPLICA_URL and TEST_REPLICA_DATADIR \
         (.ci/services.sh start_replica)"
    );
    (url, dir)
}

/// Runs SQL on the replica server itself (replay control is server-wide).
async fn on_replica(url: &str, sql: &str) {
    let db = Database::connect(url).await.expect("replica reachable");
    db.execute_unprepared(sql).await.unwrap();
    db.close().await.ok();
}

/// `pg_ctl stop|start` on the replica, as the postgres user when we are root.
fn pg_ctl(dir: &str, action: &str) {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|d| d.filter_map(Result::ok).map(|e| e.path()).max())
        .map(|p| p.join("bin/pg_ctl"))
        .expect("Postgres binaries in /usr/lib/postgresql");
    let log = format!("{dir}.log");
    let mut args: Vec<String> = vec![
        bin.display().to_string(),
        "-D".into(),
        dir.into(),
        "-w".into(),
        "-l".into(),
        log,
        "-m".into(),
        "fast".into(),
        action.into(),
    ];
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root {
        args.splice(0..0, ["runuser", "-u", "postgres", "--"].map(String::from));
    }
    let status = std::process::Command::new(&args[0])
        .args(&args[1..])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "pg_ctl {action}");
}

async fn replica_state(app: &TestApp) -> Value {
    let (_, health) = json(app.client.get(app.url("/health")).send().await.unwrap()).await;
    health["components"]["database"]["replicas"][0].clone()
}

/// Waits up to 60 s for the replica to reach `state` in `/health`: under the
/// whole suite's load (every test creates a database, whose WAL the replica
/// replays) it has been seen 19 s behind.
async fn await_state(app: &TestApp, state: &str) -> Value {
    let started = Instant::now();
    loop {
        let replica = replica_state(app).await;
        if replica["state"] == state {
            return replica;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "replica never became {state}: {replica}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads served by replicas so far (this process: only this test has one).
async fn replica_reads(app: &TestApp) -> u64 {
    app.metrics_text()
        .await
        .lines()
        .find(|l| l.starts_with(r#"db_reads_total{target="replica"}"#))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0)
}

async fn event_types(app: &TestApp) -> Vec<String> {
    let (status, body) = json(app.get("/analytics/events?limit=100").send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_string())
        .collect()
}

async fn post_event(app: &TestApp, event_type: &str) {
    let (status, body) = app
        .post_json("/analytics/events", json!({"event_type": event_type}))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
#[ignore = "needs Postgres with a streaming replica"]
async fn reads_move_to_the_replica_and_back_when_it_lags_or_stops() {
    let (replica_url, replica_dir) = require_replica();
    let backend = fresh_backend().await;
    let database = backend.env["DATABASE_URL"]
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let (base, _) = replica_url.rsplit_once('/').unwrap();
    let app = spawn_on(
        backend,
        &[
            ("DATABASE_REPLICA_URLS", &format!("{base}/{database}")),
            ("DATABASE_REPLICA_MAX_LAG", "1"),
        ],
    )
    .await;

    // In sync: reads go to the replica and see what was written.
    let replica = await_state(&app, "in_use").await;
    assert_eq!(
        replica["name"],
        format!("{}/{database}", base.rsplit('@').next().unwrap())
    );
    assert!(replica["lag_seconds"].as_f64().unwrap() <= 1.0, "{replica}");
    post_event(&app, "first").await;
    let served = replica_reads(&app).await;
    let started = Instant::now();
    while !event_types(&app).await.contains(&"first".to_string()) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the replica never caught up"
        );
    }
    assert!(
        replica_reads(&app).await > served,
        "reads went to the replica"
    );
    for path in [
        "/analytics/dashboard",
        "/analytics/summary",
        "/analytics/events/by-type",
        "/analytics/events/timeseries",
        "/analytics/metrics",
        "/analytics/costs",
        "/analytics/usage/1",
    ] {
        let before = replica_reads(&app).await;
        let (status, body) = json(app.get(path).send().await.unwrap()).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(
            replica_reads(&app).await,
            before + 1,
            "{path} read the replica"
        );
    }
    // Auth must see its own writes: it never reads the replica.
    let before = replica_reads(&app).await;
    let user = app
        .register("reader@example.com", "a-long-password-1")
        .await;
    let token = user["access_token"].as_str().unwrap().to_string();
    assert_eq!(app.verify(&token).await.status(), 200);
    assert_eq!(replica_reads(&app).await, before);

    // Replay paused: the replica falls behind and reads move to the primary,
    // which has the newest event.
    on_replica(&replica_url, "SELECT pg_wal_replay_pause()").await;
    post_event(&app, "while-paused").await;
    let lagging = await_state(&app, "lagging").await;
    assert!(lagging["lag_seconds"].as_f64().unwrap() > 1.0, "{lagging}");
    let before = replica_reads(&app).await;
    assert!(
        event_types(&app)
            .await
            .contains(&"while-paused".to_string())
    );
    assert_eq!(
        replica_reads(&app).await,
        before,
        "a lagging replica serves nothing"
    );
    let metrics = app.metrics_text().await;
    assert!(metrics.contains("db_replica_in_use{replica="), "{metrics}");

    // Replay resumed: back to the replica.
    on_replica(&replica_url, "SELECT pg_wal_replay_resume()").await;
    read_back_from_the_replica(&app, "while-paused").await;

    // The replica stops: left within seconds, reads answer from the primary.
    pg_ctl(&replica_dir, "stop");
    let down = await_state(&app, "unreachable").await;
    assert_eq!(down["lag_seconds"], Value::Null);
    post_event(&app, "while-stopped").await;
    assert!(
        event_types(&app)
            .await
            .contains(&"while-stopped".to_string())
    );
    let (status, _) = json(app.get("/analytics/dashboard").send().await.unwrap()).await;
    assert_eq!(status, 200);

    // Started again: used again once it has caught up.
    pg_ctl(&replica_dir, "start");
    read_back_from_the_replica(&app, "while-stopped").await;
}

/// Once the replica is in use again, reads go to it and see what was written
/// while it was away. "In use" means at most DATABASE_REPLICA_MAX_LAG (1 s)
/// behind, so the newest row may take up to that long to show.
async fn read_back_from_the_replica(app: &TestApp, event_type: &str) {
    await_state(app, "in_use").await;
    let started = Instant::now();
    loop {
        let before = replica_reads(app).await;
        let seen = event_types(app).await.contains(&event_type.to_string());
        assert_eq!(replica_reads(app).await, before + 1, "read on the replica");
        if seen {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{event_type} never showed on the replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
