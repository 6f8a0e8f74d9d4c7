use std::collections::HashMap;
use std::time::Duration;

use platform_server::config::Settings;
use platform_server::startup::Application;
use reqwest::{Client, RequestBuilder, Response};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{Value, json};

pub const API_KEY: &str = "test-api-key";

pub struct TestApp {
    pub address: String,
    pub metrics_address: String,
    pub client: Client,
    pub db: DatabaseConnection,
    pub env: HashMap<String, String>,
    handle: actix_web::dev::ServerHandle,
    /// The whole run (serving, then the stop of every background task).
    running: std::sync::Mutex<Option<tokio::task::JoinHandle<bool>>>,
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

/// For tests marked `#[ignore = "needs …"]` and run with `--include-ignored`:
/// they fail loudly, rather than pass, when what they need is missing.
pub fn require_redis() {
    assert!(
        redis_setting().is_some(),
        "this test needs a Redis shared by replicas: set TEST_REDIS_URL (or TEST_REDIS_CLUSTER_NODES)"
    );
}

/// The cache the suite runs on: a Redis Cluster (`TEST_REDIS_CLUSTER_NODES`,
/// seeds) when named, else one Redis (`TEST_REDIS_URL`), else in-process.
fn redis_setting() -> Option<(&'static str, String)> {
    let named = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
    named("TEST_REDIS_CLUSTER_NODES")
        .map(|nodes| ("REDIS_CLUSTER_NODES", nodes))
        .or_else(|| named("TEST_REDIS_URL").map(|url| ("REDIS_URL", url)))
}

pub fn require_postgres() {
    assert!(
        using_postgres(),
        "this test needs Postgres: set TEST_DATABASE_URL"
    );
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
    if let Some((key, redis)) = redis_setting() {
        env.insert(key.into(), redis);
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
        // One Redis named by a test replaces the suite's cluster.
        if *k == "REDIS_URL" {
            env.remove("REDIS_CLUSTER_NODES");
        }
        env.insert(k.to_string(), v.to_string());
    }
    let settings = Settings::load_with(Some(env.clone())).expect("test settings are valid");
    if std::env::var("TEST_LOG").is_ok() {
        // TEST_LOG=1 cargo test -- --nocapture shows the servers' logs.
        // Kept for the whole test process: the first server's subscriber serves all.
        if let Some(guard) = platform_server::telemetry::init_tracing(&settings.log) {
            std::mem::forget(guard);
        }
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
    let running = tokio::spawn(async move { app.run_until_stopped().await.is_ok() });
    let app = TestApp {
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
        running: std::sync::Mutex::new(Some(running)),
        _sqlite_dir: backend.sqlite_dir,
        pg_database: backend.pg_database,
    };
    app.await_startup_jobs().await;
    app
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
                    "REDIS_CLUSTER_NODES",
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

    /// Stops the server like SIGTERM would and waits for the whole stop
    /// (requests, ingest queue, background tasks, pools): whether it ended
    /// cleanly within `limit`.
    pub async fn stop_all_within(&self, limit: Duration) -> bool {
        self.handle.stop(true).await;
        let running = self
            .running
            .lock()
            .unwrap()
            .take()
            .expect("not stopped yet");
        matches!(tokio::time::timeout(limit, running).await, Ok(Ok(true)))
    }

    /// Registers a user (201 expected) and answers the token response.
    pub async fn register(&self, email: &str, password: &str) -> Value {
        let (status, body) = json(
            self.post("/auth/register")
                .json(&json!({"email": email, "password": password, "first_name": "Ada", "last_name": "L"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post("/auth/login")
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
    }

    pub async fn verify(&self, token: &str) -> Response {
        self.get("/auth/verify")
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn refresh(&self, token: &str) -> Response {
        self.post("/auth/refresh")
            .json(&json!({"refresh_token": token}))
            .send()
            .await
            .unwrap()
    }

    /// Registers root@example.com, makes it an admin, answers its access token.
    /// An admin with a verified address (so it logs in under any setting).
    pub async fn make_admin(&self) -> String {
        let (status, body) = self
            .post_json(
                "/auth/register",
                json!({"email": "root@example.com", "password": "admin-password"}),
            )
            .await;
        assert!(status == 201 || status == 202, "{body}");
        let id = body["user"]["id"].as_i64().unwrap();
        self.execute(&format!(
            "UPDATE platform_users SET role = 'admin', email_verified = true WHERE id = {id}"
        ))
        .await;
        let (_, body) = json(self.login("root@example.com", "admin-password").await).await;
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Runs SQL on the test's own connection to the server's database.
    pub async fn execute(&self, sql: &str) {
        self.db
            .execute_raw(Statement::from_string(
                self.db.get_database_backend(),
                sql.to_string(),
            ))
            .await
            .unwrap();
    }

    /// Waits (up to 10 s) for the rollup that every start runs, so a test's
    /// own trigger never races it for the rows the test just wrote, and for
    /// the partitions Postgres makes at start. A database left unmigrated on
    /// purpose has no job table: nothing to wait for.
    async fn await_startup_jobs(&self) {
        // Postgres also makes its time partitions at start.
        let expected = if using_postgres() { 2 } else { 1 };
        let sql = "SELECT COUNT(*) AS n FROM platform_jobs \
                   WHERE name IN ('rollup', 'partitions') AND last_run_at IS NOT NULL";
        for _ in 0..200 {
            let ran = self
                .db
                .query_one_raw(Statement::from_string(
                    self.db.get_database_backend(),
                    sql.to_string(),
                ))
                .await;
            match ran {
                Err(_) => return,
                Ok(Some(row)) if row.try_get::<i64>("", "n").unwrap_or(0) >= expected => return,
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Rows in `table`, counted in the database.
    pub async fn count(&self, table: &str) -> i64 {
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                self.db.get_database_backend(),
                format!("SELECT COUNT(*) AS n FROM {table}"),
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get("", "n").unwrap()
    }

    /// A query's single integer column `n`.
    pub async fn scalar(&self, sql: &str) -> i64 {
        scalar_on(&self.db, sql).await
    }

    /// Rows in `table` that match `condition`.
    pub async fn count_where(&self, table: &str, condition: &str) -> i64 {
        self.count(&format!("{table} WHERE {condition}")).await
    }

    pub async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        json(self.post(path).json(&body).send().await.unwrap()).await
    }

    /// A POST of `body` as sent, labelled JSON: for bodies `post_json`
    /// cannot build (malformed, not objects, oversized).
    pub async fn post_raw_json(&self, path: &str, body: impl Into<reqwest::Body>) -> Response {
        self.post(path)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// A sent request's body as text.
    pub async fn text_of(&self, request: RequestBuilder) -> String {
        request.send().await.unwrap().text().await.unwrap()
    }

    /// A GET that must answer 200; its JSON body.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = json(self.get(path).send().await.unwrap()).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    pub async fn post_metrics(&self, metrics: Vec<Value>) {
        let (status, body) = self
            .post_json("/analytics/metrics/batch", json!({"metrics": metrics}))
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Runs the usage rollup now (200 expected).
    pub async fn rollup(&self) -> Value {
        let (status, body) = json(self.post("/analytics/jobs/rollup").send().await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        body
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
/// The `n` column of a query's one row, read through `db`.
pub async fn scalar_on(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            sql.to_string(),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get("", "n").unwrap()
}

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

/// Asserts that each query string of `path` is refused with a 422 and a
/// `detail`.
pub async fn expect_422_for(app: &TestApp, path: &str, queries: &[&str]) {
    for query in queries {
        let resp = app.get(&format!("{path}?{query}")).send().await.unwrap();
        let (status, body) = json(resp).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert!(body["detail"].is_string(), "{query}: {body}");
    }
}

/// A TCP forwarder on loopback whose `stop` cuts every connection through
/// it, so a test can take the database away from a running server.
pub struct TcpProxy {
    pub port: u16,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl TcpProxy {
    pub async fn start(target: String) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> =
            Default::default();
        let registry = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                registry.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        TcpProxy { port, tasks }
    }

    pub fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// A mail as the SMTP server received it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub message_id: String,
}

impl ReceivedMail {
    /// The token of the link in the mail (`…?token=<token>`).
    pub fn link_token(&self) -> String {
        let start = self
            .text
            .find("token=")
            .unwrap_or_else(|| panic!("no link in {:?}", self.text))
            + "token=".len();
        self.text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    }
}

/// A real SMTP server on loopback: Python's aiosmtpd, storing what it
/// receives in a Maildir. `stop` kills it (connections are then refused);
/// `start` brings it back on the same port.
pub struct SmtpServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: std::sync::Mutex<Option<std::process::Child>>,
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = SmtpServer {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: std::sync::Mutex::new(None),
        };
        server.resume().await;
        server
    }

    fn maildir(&self) -> std::path::PathBuf {
        self.dir.path().join("maildir")
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Starts the server process (again) and waits until it accepts.
    pub async fn resume(&self) {
        let child = std::process::Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(self.maildir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs");
        *self.child.lock().unwrap() = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            if let Some(status) = self
                .child
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "the SMTP server exited ({status}): these tests need Python's aiosmtpd \
                     (python3 -m pip install aiosmtpd; .ci/test.sh installs it)"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the SMTP server did not start on port {}", self.port);
    }

    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every mail received so far, oldest first.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        let mut files: Vec<(std::time::SystemTime, std::path::PathBuf)> = ["new", "cur"]
            .iter()
            .filter_map(|d| std::fs::read_dir(self.maildir().join(d)).ok())
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| (e.metadata().unwrap().modified().unwrap(), e.path()))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|(_, path)| {
                let raw = std::fs::read(&path).unwrap();
                let msg = mail_parser::MessageParser::default().parse(&raw).unwrap();
                ReceivedMail {
                    to: msg
                        .to()
                        .and_then(|a| a.first())
                        .and_then(|a| a.address())
                        .unwrap_or_default()
                        .to_string(),
                    subject: msg.subject().unwrap_or_default().to_string(),
                    text: msg.body_text(0).unwrap_or_default().to_string(),
                    html: msg.body_html(0).unwrap_or_default().to_string(),
                    message_id: msg.message_id().unwrap_or_default().to_string(),
                }
            })
            .collect()
    }

    pub fn mails_to(&self, to: &str) -> Vec<ReceivedMail> {
        self.mails().into_iter().filter(|m| m.to == to).collect()
    }

    /// Waits for the `n`th mail (counting from 1) to `to` whose subject
    /// contains `subject`.
    pub async fn wait_for_nth(&self, to: &str, subject: &str, n: usize) -> ReceivedMail {
        for _ in 0..300 {
            let found: Vec<ReceivedMail> = self
                .mails_to(to)
                .into_iter()
                .filter(|m| m.subject.contains(subject))
                .collect();
            if found.len() >= n {
                return found[n - 1].clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no mail #{n} to {to} about {subject:?} within 15 s; received: {:?}",
            self.mails()
                .iter()
                .map(|m| (&m.to, &m.subject))
                .collect::<Vec<_>>()
        );
    }

    pub async fn wait_for(&self, to: &str, subject: &str) -> ReceivedMail {
        self.wait_for_nth(to, subject, 1).await
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}
