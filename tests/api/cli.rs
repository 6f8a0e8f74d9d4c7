//! The binary itself, as the Dockerfile runs it: no environment, an empty
//! directory, `serve`, `healthcheck`, `openapi`, `migrate`, `create-admin`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_platform-server");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn clean_env(cmd: &mut Command, dir: &std::path::Path, port: u16, metrics: u16) {
    cmd.env_clear()
        .current_dir(dir)
        .env("PORT", port.to_string())
        .env("METRICS_PORT", metrics.to_string())
        .env("PATH", std::env::var("PATH").unwrap_or_default());
}

#[test]
fn serves_from_an_empty_directory_and_healthcheck_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics) = (free_port(), free_port());
    let mut cmd = Command::new(BIN);
    clean_env(&mut cmd, dir.path(), port, metrics);
    let started = Instant::now();
    let server = Server(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let healthcheck = || {
        let mut c = Command::new(BIN);
        clean_env(&mut c, dir.path(), port, metrics);
        c.arg("healthcheck")
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    let mut ready = false;
    while started.elapsed() < Duration::from_secs(20) {
        if healthcheck() {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ready, "the server became ready");
    assert!(
        dir.path().join("data/platform.db").exists(),
        "embedded SQLite under ./data"
    );

    // SIGTERM: graceful stop, then the healthcheck fails.
    let pid = server.0.id() as i32;
    // SAFETY: kill only sends a signal to the child we started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let mut server = server;
    let status = server.0.wait().unwrap();
    assert!(status.success(), "exits 0 after SIGTERM: {status:?}");
    let mut out = String::new();
    use std::io::Read;
    server
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        out.contains("/docs/"),
        "prints the Swagger UI address: {out}"
    );
    assert!(
        out.contains("API key:"),
        "prints the API key in force: {out}"
    );
    assert!(!healthcheck(), "healthcheck fails once the server is gone");
}

#[test]
fn openapi_subcommand_prints_the_committed_spec() {
    let out = Command::new(BIN)
        .arg("openapi")
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}

#[test]
fn migrate_and_create_admin_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut c = Command::new(BIN);
        clean_env(&mut c, dir.path(), free_port(), free_port());
        c.env("LOG_LEVEL", "ERROR").args(args).output().unwrap()
    };
    let up = run(&["migrate", "up"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let status = run(&["migrate", "status"]);
    let text = String::from_utf8(status.stdout).unwrap();
    assert!(text.contains("m20250101_000001_original_tables"), "{text}");
    assert!(!text.contains("Pending"), "{text}");
    let admin = run(&[
        "create-admin",
        "--email",
        "Root@Example.com",
        "--password",
        "a-long-password",
    ]);
    assert!(
        admin.status.success(),
        "{}",
        String::from_utf8_lossy(&admin.stderr)
    );
    assert!(
        String::from_utf8(admin.stdout)
            .unwrap()
            .contains("<root@example.com>")
    );
    let down = run(&["migrate", "down"]);
    assert!(down.status.success());
    let status = String::from_utf8(run(&["migrate", "status"]).stdout).unwrap();
    assert_eq!(status.matches("Pending").count(), 1, "{status}");
}

#[test]
fn bad_configuration_is_one_line_naming_the_key() {
    let out = Command::new(BIN)
        .env_clear()
        .env("PORT", "eighty")
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("PORT"), "{err}");
    let out = Command::new(BIN)
        .env_clear()
        .env("ENVIRONMENT", "production")
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("JWT_SECRET")
    );
}

#[test]
fn config_file_overrides_files_and_env_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("extra.toml");
    std::fs::write(&file, "port = 9999\nlog_level = \"ERROR\"\n").unwrap();
    let env = |pairs: &[(&str, &str)]| -> std::collections::HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let s = platform_server::config::Settings::load_with(Some(env(&[(
        "CONFIG_FILE",
        file.to_str().unwrap(),
    )])))
    .unwrap();
    assert_eq!((s.http.port, s.log.level.as_str()), (9999, "ERROR"));
    let s = platform_server::config::Settings::load_with(Some(env(&[
        ("CONFIG_FILE", file.to_str().unwrap()),
        ("PORT", "7000"),
    ])))
    .unwrap();
    assert_eq!(s.http.port, 7000);
    let err =
        platform_server::config::Settings::load_with(Some(env(&[("CONFIG_FILE", "/nope.toml")])))
            .unwrap_err();
    assert_eq!(err.key, "CONFIG_FILE");
}

/// Access lines go through a background writer; SIGTERM must not lose the
/// ones still queued, and each JSON line carries the request's fields once.
#[tokio::test]
async fn no_access_line_is_lost_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics) = (free_port(), free_port());
    let mut cmd = Command::new(BIN);
    clean_env(&mut cmd, dir.path(), port, metrics);
    let mut server = Server(
        cmd.env("LOG_FORMAT", "json")
            .env("LOG_LEVEL", "INFO")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Drained as it comes, as a log collector would.
    let mut stdout = server.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        use std::io::Read;
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    let url = format!("http://127.0.0.1:{port}/health/live");
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client.get(&url).send().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "server ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    const N: usize = 2000;
    for chunk in 0..N / 100 {
        let batch = (0..100).map(|i| {
            client
                .get(&url)
                .header("X-Request-Id", format!("probe-{}", chunk * 100 + i))
                .send()
        });
        for resp in futures_util::future::join_all(batch).await {
            assert_eq!(resp.unwrap().status(), 200);
        }
    }
    // SAFETY: kill only sends a signal to the child we started.
    unsafe { libc::kill(server.0.id() as i32, libc::SIGTERM) };
    assert!(server.0.wait().unwrap().success());
    let out = reader.join().unwrap();
    let mut seen = std::collections::HashSet::new();
    for line in out.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["message"] == "request" && v["span"]["route"] == "/health/live" {
            let id = v["span"]["request_id"].as_str().unwrap().to_string();
            assert!(line.matches("request_id").count() == 1, "{line}");
            if id.starts_with("probe-") {
                seen.insert(id);
            }
        }
    }
    assert_eq!(seen.len(), N, "every access line was written");
}
