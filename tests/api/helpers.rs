use std::collections::HashMap;
use std::time::Duration;

use platform_server::config::Settings;
use platform_server::startup::Application;
use reqwest::{Client, RequestBuilder, Response};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::Value;

pub const API_KEY: &str = "test-api-key";

pub struct TestApp {
    pub address: String,
    pub metrics_address: String,
    pub client: Client,
    pub db: DatabaseConnection,
    pub env: HashMap<String, String>,
    handle: actix_web::dev::ServerHandle,
    _sqlite_dir: Option<tempfile::TempDir>,
    pg_database: Option<(String, String)>,
}

/// Where the test's database lives, so a second server can share it.
pub struct Backend {
    pub env: HashMap<String, String>,
    sqlite_dir: Option<tempfile::TempDir>,
    pg_database: Option<(String, String)>,
}

pub fn using_postgres() -> bool {
    std::env::var("TEST_DATABASE_URL").is_ok_and(|v| !v.is_empty())
}

/// A fresh database (and Redis prefix) for one test.
pub async fn fresh_backend() -> Backend {
    let mut env = HashMap::new();
    let mut sqlite_dir = None;
    let mut pg_database = None;
    match std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(admin_url) => {
            let name = format!("t_{}", uuid::Uuid::new_v4().simple());
            let admin = Database::connect(&admin_url)
                .await
                .expect("TEST_DATABASE_URL reachable");
            admin
                .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                .await
                .expect("create test database");
            admin.close().await.ok();
            let (base, _) = admin_url.rsplit_once('/').expect("URL has a database name");
            env.insert("DATABASE_URL".into(), format!("{base}/{name}"));
            pg_database = Some((admin_url, name));
        }
        None => {
            let dir = tempfile::tempdir().expect("temp dir");
            env.insert(
                "SQLITE_PATH".into(),
                dir.path().join("platform.db").display().to_string(),
            );
            sqlite_dir = Some(dir);
        }
    }
    if let Some(redis) = std::env::var("TEST_REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty())
    {
        env.insert("REDIS_URL".into(), redis);
        env.insert(
            "REDIS_KEY_PREFIX".into(),
            format!("test:{}:", uuid::Uuid::new_v4().simple()),
        );
    }
    Backend {
        env,
        sqlite_dir,
        pg_database,
    }
}

fn base_env() -> HashMap<String, String> {
    [
        ("ENVIRONMENT", "test"),
        ("API_KEY", API_KEY),
        ("BIND_ADDRESS", "127.0.0.1"),
        ("PORT", "0"),
        ("METRICS_PORT", "0"),
        ("WORKERS", "2"),
        ("JWT_SECRET", "integration-test-secret-that-is-long-enough"),
        // Tests run jobs when they choose; the schedule only ticks at start.
        ("USAGE_ROLLUP_INTERVAL", "3600"),
        ("RETENTION_INTERVAL", "3600"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let backend = fresh_backend().await;
    spawn_on(backend, overrides).await
}

/// Starts a server on an existing backend (pass `backend.share()` to start a
/// second replica on the same database and Redis prefix).
pub async fn spawn_on(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
    let mut env = base_env();
    env.extend(backend.env.clone());
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    let settings = Settings::load_with(Some(env.clone())).expect("test settings are valid");
    if std::env::var("TEST_LOG").is_ok() {
        // TEST_LOG=1 cargo test -- --nocapture shows the servers' logs.
        platform_server::telemetry::init_tracing(&settings.log);
    }
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_address = format!("http://127.0.0.1:{}", app.metrics_port().unwrap_or(0));
    // A pool of the test's own: the server closes its pool when it stops.
    let db = platform_server::db::connect(&app.state().settings.database)
        .await
        .unwrap();
    let handle = app.server_handle();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        metrics_address,
        client: Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        db,
        env,
        handle,
        _sqlite_dir: backend.sqlite_dir,
        pg_database: backend.pg_database,
    }
}

impl Backend {
    /// The same database and cache, without ownership (no cleanup).
    pub fn share(env: &HashMap<String, String>) -> Backend {
        let env = env
            .iter()
            .filter(|(k, _)| {
                [
                    "DATABASE_URL",
                    "SQLITE_PATH",
                    "REDIS_URL",
                    "REDIS_KEY_PREFIX",
                ]
                .contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Backend {
            env,
            sqlite_dir: None,
            pg_database: None,
        }
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// A request with the API key.
    pub fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("X-API-Key", API_KEY)
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(reqwest::Method::GET, path)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(reqwest::Method::POST, path)
    }

    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request(reqwest::Method::PUT, path)
    }

    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.request(reqwest::Method::PATCH, path)
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(reqwest::Method::DELETE, path)
    }

    /// Stops the server like SIGTERM would (graceful) or at once.
    pub async fn stop(&self, graceful: bool) {
        self.handle.stop(graceful).await;
    }

    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.metrics_address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.pg_database.take() {
            // Drop runs outside async code: a short-lived runtime on its own thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(admin) = Database::connect(&admin_url).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                            ))
                            .await;
                        admin.close().await.ok();
                    }
                });
            })
            .join();
        }
    }
}

/// Status and JSON body, for assertions on both.
pub async fn json(resp: Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("status {status}: body is not JSON: {text:?}"));
    (status, body)
}

/// Asserts a `{"detail": …}` error with this status, and returns the detail.
pub async fn expect_error(resp: Response, status: u16) -> String {
    let (got, body) = json(resp).await;
    assert_eq!(got, status, "unexpected status, body {body}");
    body["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail in {body}"))
        .to_string()
}
