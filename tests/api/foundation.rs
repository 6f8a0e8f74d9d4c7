//! Storage, configuration, API key, health, metrics, docs, HTTP basics.

use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, test as atest, web};
use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn health_reports_real_components() {
    let app = spawn_app().await;
    let (status, body) = json(app.client.get(app.url("/health")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["service"], "platform-services");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    let db = &body["components"]["database"];
    assert_eq!(db["connection"], "active");
    assert_eq!(
        db["backend"],
        if using_postgres() {
            "postgres"
        } else {
            "sqlite"
        }
    );
    assert!(db["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(db["pool_size"].as_u64().unwrap() >= 1);
    let redis = &body["components"]["redis"];
    if app.env.contains_key("REDIS_CLUSTER_NODES") {
        assert_eq!(redis["status"], "healthy");
        assert_eq!(redis["backend"], "redis-cluster");
        assert!(redis["latency_ms"].as_f64().is_some());
    } else if app.env.contains_key("REDIS_URL") {
        assert_eq!(redis["status"], "healthy");
        assert_eq!(redis["backend"], "redis");
        assert!(redis["latency_ms"].as_f64().is_some());
    } else {
        assert_eq!(redis["status"], "not_configured");
    }
    assert_eq!(body["components"]["auth"]["status"], "healthy");
    assert!(
        body["endpoints"]["auth"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "/auth/login")
    );
}

#[tokio::test]
async fn redis_down_is_degraded_not_unhealthy() {
    // A port nothing listens on stands for a stopped Redis.
    let app = spawn_app_with(&[("REDIS_URL", "redis://127.0.0.1:1")]).await;
    let (status, body) = json(app.client.get(app.url("/health")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["components"]["redis"]["status"], "unhealthy");
    assert_eq!(body["components"]["database"]["connection"], "active");
}

#[tokio::test]
async fn live_and_ready_probes() {
    let app = spawn_app().await;
    for path in ["/health/live", "/health/ready"] {
        let (status, body) = json(app.client.get(app.url(path)).send().await.unwrap()).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("ok")),
            "{path}"
        );
    }
}

#[tokio::test]
async fn ready_is_503_until_migrations_are_applied() {
    let backend = fresh_backend().await;
    let app = spawn_on(backend, &[("RUN_MIGRATIONS", "false")]).await;
    let detail = expect_error(
        app.client
            .get(app.url("/health/ready"))
            .send()
            .await
            .unwrap(),
        503,
    )
    .await;
    assert_eq!(detail, "Database migrations pending");
    platform_server::db::migrate(&app.db).await.unwrap();
    let resp = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn api_key_is_required_on_api_and_legacy_routes() {
    let app = spawn_app().await;
    for path in [
        "/analytics/events",
        "/auth/profile",
        "/metrics",
        "/profile",
        "/analytics/dashboard",
    ] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(expect_error(resp, 401).await, "Missing API key", "{path}");
        let resp = app
            .client
            .get(app.url(path))
            .header("X-API-Key", "wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(expect_error(resp, 401).await, "Invalid API key", "{path}");
        let resp = app
            .client
            .get(app.url(path))
            .header("X-API-Key", "")
            .send()
            .await
            .unwrap();
        assert_eq!(expect_error(resp, 401).await, "Invalid API key", "{path}");
    }
    // Probes, docs and the spec need no key.
    for path in [
        "/health",
        "/health/live",
        "/health/ready",
        "/openapi.json",
        "/docs/",
    ] {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn several_keys_are_valid_at_once_for_rotation() {
    let app = spawn_app_with(&[("API_KEY", "old-key"), ("API_KEYS", "new-key, newer-key")]).await;
    for key in ["old-key", "new-key", "newer-key"] {
        let resp = app
            .client
            .get(app.url("/nowhere"))
            .header("X-API-Key", key)
            .send()
            .await
            .unwrap();
        // Past the key check, an unknown path is a JSON 404.
        assert_eq!(expect_error(resp, 404).await, "Not Found", "{key}");
    }
    let resp = app
        .client
        .get(app.url("/nowhere"))
        .header("X-API-Key", "new")
        .send()
        .await
        .unwrap();
    assert_eq!(expect_error(resp, 401).await, "Invalid API key");
}

#[tokio::test]
async fn key_check_can_be_turned_off() {
    let app = spawn_app_with(&[("REQUIRE_API_KEY", "false")]).await;
    let resp = app.client.get(app.url("/nowhere")).send().await.unwrap();
    assert_eq!(expect_error(resp, 404).await, "Not Found");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = spawn_app().await;
    assert_eq!(
        expect_error(app.get("/no/such/route").send().await.unwrap(), 404).await,
        "Not Found"
    );
    let resp = app.post("/health/live").send().await.unwrap();
    assert_eq!(expect_error(resp, 405).await, "Method Not Allowed");
}

/// Found by the spec fuzzer (.ci/fuzz.sh): serde reads a struct from an
/// array, and a NUL in the URL reached Postgres as a 500.
#[tokio::test]
async fn bodies_must_be_objects_and_urls_free_of_nul() {
    let app = spawn_app().await;
    let resp = app
        .post_raw_json("/auth/register", r#"["array@example.com", "password123"]"#)
        .await;
    assert_eq!(
        expect_error(resp, 422).await,
        "Invalid JSON body: expected an object"
    );
    for body in [r#""text""#, "42", "-1", "1.5", "null", "true", " [ ] "] {
        let resp = app.post_raw_json("/analytics/metrics/batch", body).await;
        assert_eq!(
            expect_error(resp, 422).await,
            "Invalid JSON body: expected an object",
            "{body}"
        );
    }
    let resp = app
        .post("/auth/login")
        .json(&serde_json::json!({"email": "array@example.com", "password": "password123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "nothing was registered");
    let resp = app
        .get("/analytics/events/timeseries?hours=2&event_type=a%00b")
        .send()
        .await
        .unwrap();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(resp.headers()[name], value, "{name}");
    }
    assert_eq!(
        expect_error(resp, 422).await,
        "NUL characters (%00) are not allowed in the URL"
    );
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(app.url("/health/live"))
        .header("X-Request-Id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    let resp = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    let made = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let parsed = uuid::Uuid::parse_str(&made).expect("a UUID");
    assert_eq!(parsed.get_version_num(), 4, "a random UUID: {made}");
    let again = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_ne!(again.headers()["x-request-id"].to_str().unwrap(), made);
    // A hostile id (header injection, huge) is replaced, not echoed.
    let long = "x".repeat(500);
    let resp = app
        .client
        .get(app.url("/health/live"))
        .header("X-Request-Id", &long)
        .send()
        .await
        .unwrap();
    assert_ne!(resp.headers()["x-request-id"], long.as_str());
}

#[tokio::test]
async fn cors_wildcard_never_allows_credentials() {
    let app = spawn_app().await;
    let resp = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/auth/login"))
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    assert!(
        resp.headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
}

#[tokio::test]
async fn cors_list_allows_only_listed_origins() {
    let app =
        spawn_app_with(&[("CORS_ORIGINS", "https://app.example,http://localhost:3000")]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/auth/login"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .send()
    };
    let ok = preflight("https://app.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
    let denied = preflight("https://evil.example").await.unwrap();
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn prometheus_listener_labels_by_route_pattern() {
    let app = spawn_app().await;
    // Other tests in this process count into the same recorder: compare
    // each series before and after.
    let series = [
        r#"http_requests_total{method="GET",route="/health/live",status="200"}"#,
        r#"http_requests_total{method="GET",route="/auth/users/{id}",status="401"}"#,
        r#"http_requests_total{method="GET",route="unmatched",status="404"}"#,
    ];
    let count = |text: &str, series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let before = app.metrics_text().await;
    // Repeated: a worker remembers static routes after their first request.
    for _ in 0..3 {
        app.client
            .get(app.url("/health/live"))
            .send()
            .await
            .unwrap();
        app.get("/auth/users/42").send().await.unwrap();
        app.get("/no/such/thing/42").send().await.unwrap();
    }
    let text = app.metrics_text().await;
    assert!(text.contains("# HELP http_requests_total"), "{text}");
    assert!(text.contains("# TYPE http_request_duration_seconds histogram"));
    for s in series {
        assert!(count(&text, s) >= count(&before, s) + 3, "{s}\n{text}");
    }
    assert!(
        !text.contains("/auth/users/42"),
        "raw paths never become labels"
    );
    assert!(
        !text.contains("/no/such/thing/42"),
        "raw paths never become labels"
    );
    assert!(text.contains(r#"db_pool_connections{state="idle"}"#));
    assert!(text.contains("db_pool_max_connections 16"));
    // Every family has help text and a type (what promtool checks).
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }
    // The API port keeps GET /metrics for the legacy alias.
    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn docs_and_spec_are_served() {
    let app = spawn_app().await;
    let resp = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], "/docs/");
    let html = app.text_of(app.client.get(app.url("/docs/"))).await;
    assert!(html.contains("swagger-ui"), "{html}");
    let (status, spec) = json(
        app.client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    assert!(spec["paths"]["/health"]["get"].is_object());
    assert_eq!(
        spec["components"]["securitySchemes"]["api_key"]["name"],
        "X-API-Key"
    );
    // Served from one serialisation, equal to the handlers' document.
    assert_eq!(
        spec,
        serde_json::to_value(platform_server::http::openapi::document()).unwrap()
    );
    let init = app
        .text_of(app.client.get(app.url("/docs/swagger-initializer.js")))
        .await;
    assert!(init.contains(r#""url": "/openapi.json""#), "{init}");
}

#[test]
fn committed_openapi_yaml_matches_the_handlers() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = platform_server::http::openapi::yaml();
    assert!(
        committed == generated,
        "openapi.yaml is out of date; regenerate it with:\n    cargo run -q -- openapi > openapi.yaml"
    );
}

#[test]
fn operation_ids_are_unique() {
    // Two handlers named alike (`verify`) gave one id twice; validators refuse that.
    let yaml = platform_server::http::openapi::yaml();
    let mut ids: Vec<&str> = yaml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("operationId: "))
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "duplicate operationId in the spec");
}

#[actix_web::test]
async fn a_panicking_handler_answers_500_json_and_the_server_goes_on() {
    let svc = atest::init_service(
        App::new()
            .route(
                "/boom",
                web::get().to(|| async { panic!("boom") as HttpResponse }),
            )
            .route(
                "/fine",
                web::get().to(|| async { HttpResponse::Ok().body("fine") }),
            )
            .wrap(from_fn(platform_server::http::middleware::observe)),
    )
    .await;
    let resp =
        atest::try_call_service(&svc, atest::TestRequest::get().uri("/boom").to_request()).await;
    let err = resp.expect_err("a panic becomes an error response");
    let resp = err.error_response();
    assert_eq!(resp.status(), 500);
    let body = actix_web::body::to_bytes(resp.into_body()).await.unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["detail"], "Internal server error");
    let resp = atest::call_service(&svc, atest::TestRequest::get().uri("/fine").to_request()).await;
    assert_eq!(resp.status(), 200);
}

/// The gauges alerts read are set by the server's own schedule, without a
/// call to `/health`.
#[tokio::test]
async fn dependency_gauges_are_set_without_a_health_call() {
    let app = spawn_app().await;
    let mut text = String::new();
    for _ in 0..50 {
        text = app.metrics_text().await;
        if text.contains("component_up{component=\"database\"} 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        text.contains("component_up{component=\"database\"} 1"),
        "{}",
        text.lines()
            .filter(|l| l.contains("component_up"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Pooled connections are pinged only after a second idle (not on every
/// checkout): connections the database closed are replaced before a read
/// uses them, and a group whose connection was closed under it is retried.
#[tokio::test]
#[ignore = "needs Postgres"]
async fn connections_the_database_closed_are_replaced() {
    require_postgres();
    let app = spawn_app().await;
    let (status, _) = app
        .post_json("/analytics/events", json!({"event_type": "before"}))
        .await;
    assert!(status < 300, "{status}");
    app.get_ok("/analytics/events").await;
    // A connection of its own: the test's pool would lose its other ones.
    let admin = sea_orm::Database::connect(app.env["DATABASE_URL"].as_str())
        .await
        .unwrap();
    let ended = || {
        scalar_on(
            &admin,
            "SELECT COUNT(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND backend_type = 'client backend'",
        )
    };
    // The writer's connection is closed under it: its group is retried.
    assert!(ended().await > 0);
    let (status, body) = app
        .post_json("/analytics/events", json!({"event_type": "during"}))
        .await;
    assert!(status < 300, "{status} {body}");
    // Idle past the threshold, every closed connection is pinged and replaced.
    assert!(ended().await > 0);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    for _ in 0..5 {
        let page = app.get_ok("/analytics/events").await;
        let types: Vec<&str> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["during", "before"]);
    }
}
