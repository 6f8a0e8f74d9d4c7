//! Callers: managed API keys (scopes, expiry, revocation on every replica,
//! per-key limits, attribution), the command line that manages them, and
//! the OAuth2 token endpoint as RFC 6749 clients use it.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_platform-server");

/// Creates a key as the admin; answers (id, secret).
async fn create_key(app: &TestApp, admin: &str, body: Value) -> (i64, String) {
    let (status, created) = json(
        app.post("/admin/api-keys")
            .bearer_auth(admin)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_string();
    (created["id"].as_i64().unwrap(), secret)
}

/// A request with `key` as the API key instead of the configured one.
fn with_key(app: &TestApp, method: Method, path: &str, key: &str) -> reqwest::RequestBuilder {
    app.client
        .request(method, app.url(path))
        .header("X-API-Key", key)
}

async fn status_of(req: reqwest::RequestBuilder) -> (u16, Value) {
    json(req.send().await.unwrap()).await
}

#[tokio::test]
async fn keys_are_shown_once_stored_as_digests_and_listed_without_secrets() {
    let app = spawn_app().await;
    let admin = app.make_admin().await;
    let (id, secret) = create_key(
        &app,
        &admin,
        json!({"name": "billing", "scopes": ["ingest", "read"], "rate_per_second": 50}),
    )
    .await;
    // A recognisable prefix and 256 random bits (43 base64url characters).
    assert!(secret.starts_with("psk_"), "{secret}");
    assert_eq!(secret.len(), 4 + 43);
    assert!(
        secret[4..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let (_, stored) = json(
        app.get(&format!("/admin/api-keys/{id}"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(stored["name"], "billing");
    assert_eq!(stored["scopes"], json!(["ingest", "read"]));
    assert_eq!(stored["rate_per_second"], 50);
    assert_eq!(stored["created_by"], "root@example.com");
    assert_eq!(stored["prefix"].as_str().unwrap(), &secret[..12]);
    assert!(stored.get("secret").is_none());
    let list = app
        .text_of(app.get("/admin/api-keys").bearer_auth(&admin))
        .await;
    assert!(
        list.contains("billing") && !list.contains(&secret),
        "{list}"
    );
    // The database holds a digest, never the key.
    let dump = app
        .count_where("platform_api_keys", &format!("digest = '{secret}'"))
        .await;
    assert_eq!(dump, 0);
    assert_eq!(app.count("platform_api_keys").await, 1);

    for (body, what) in [
        (
            json!({"name": "x", "scopes": ["write"]}),
            "unknown scope 'write'",
        ),
        (json!({"name": "x", "scopes": []}), "at least one scope"),
        (json!({"name": "", "scopes": ["read"]}), "name must be"),
        (
            json!({"name": "x", "scopes": ["read"], "rate_per_second": 0}),
            "rate_per_second",
        ),
        (
            json!({"name": "x", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"}),
            "in the future",
        ),
    ] {
        let (status, err) =
            status_of(app.post("/admin/api-keys").bearer_auth(&admin).json(&body)).await;
        assert_eq!(status, 422, "{body}: {err}");
        assert!(err["detail"].as_str().unwrap().contains(what), "{err}");
    }
    assert_eq!(app.count("platform_api_keys").await, 1);
    let (status, _) = status_of(app.get("/admin/api-keys/999").bearer_auth(&admin)).await;
    assert_eq!(status, 404);
}

/// (scope, method, path, body, bearer)
type Route<'a> = (&'a str, Method, &'a str, Option<Value>, Option<&'a str>);

#[tokio::test]
async fn each_scope_opens_its_routes_and_only_those() {
    let app = spawn_app().await;
    let admin = app.make_admin().await;
    let user = app.register("scoped@example.com", "password-123").await;
    let token = user["access_token"].as_str().unwrap().to_string();
    let mut keys = vec![];
    for scope in ["auth", "ingest", "read", "admin"] {
        let (_, secret) = create_key(&app, &admin, json!({"name": scope, "scopes": [scope]})).await;
        keys.push((scope, secret));
    }
    // One route per scope: (scope, method, path, body, bearer).
    let routes: Vec<Route> = vec![
        ("auth", Method::GET, "/auth/verify", None, Some(&token)),
        ("auth", Method::GET, "/profile", None, Some(&token)),
        (
            "ingest",
            Method::POST,
            "/analytics/events",
            Some(json!({"event_type": "scoped"})),
            None,
        ),
        (
            "ingest",
            Method::POST,
            "/analytics/metrics",
            Some(json!({"metric_name": "m", "metric_value": 1})),
            None,
        ),
        ("read", Method::GET, "/analytics/events", None, None),
        ("read", Method::GET, "/analytics/costs", None, None),
        ("admin", Method::GET, "/auth/users", None, Some(&admin)),
        ("admin", Method::GET, "/admin/api-keys", None, Some(&admin)),
    ];
    for (key_scope, secret) in &keys {
        for (route_scope, method, path, body, bearer) in &routes {
            let mut req = with_key(&app, method.clone(), path, secret);
            if let Some(b) = body {
                req = req.json(b);
            }
            if let Some(t) = bearer {
                req = req.bearer_auth(t);
            }
            let (status, answer) = status_of(req).await;
            if key_scope == route_scope {
                assert_eq!(status, 200, "{key_scope} key on {method} {path}: {answer}");
            } else {
                assert_eq!(status, 403, "{key_scope} key on {method} {path}: {answer}");
                assert_eq!(
                    answer["detail"],
                    format!("API key lacks the '{route_scope}' scope")
                );
            }
        }
    }
    // The configured key (API_KEY) keeps every scope.
    for (_, method, path, body, bearer) in &routes {
        let mut req = app.request(method.clone(), path);
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        assert_eq!(status_of(req).await.0, 200, "{method} {path}");
    }
    // Unknown keys of the managed shape are refused like any other.
    let (status, body) = status_of(with_key(
        &app,
        Method::GET,
        "/analytics/events",
        &format!("psk_{}", "A".repeat(43)),
    ))
    .await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (401, Some("Invalid API key"))
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(r#"api_key_rejections_total{key="auth",reason="scope"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"api_key_requests_total{key="read"}"#));
}

/// The time until `/analytics/events` with `key` answers `status` on `app`.
async fn until_status(app: &TestApp, key: &str, status: u16) -> Duration {
    let start = Instant::now();
    loop {
        let got = with_key(app, Method::GET, "/analytics/events", key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if got == status {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(5), "still {got}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn revocation_and_expiry_reach_a_second_replica_within_a_second() {
    let a = spawn_app().await;
    let b = spawn_on(Backend::share(&a.env), &[]).await;
    let admin = a.make_admin().await;
    let (id, secret) = create_key(&a, &admin, json!({"name": "svc", "scopes": ["read"]})).await;
    // Both replicas hold the key in memory before it is revoked.
    for app in [&a, &b] {
        until_status(app, &secret, 200).await;
    }
    let (status, revoked) = status_of(
        a.delete(&format!("/admin/api-keys/{id}"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(status, 200);
    assert!(revoked["revoked_at"].is_string());
    // The replica that revoked refuses at once; the other within a second.
    let (status, body) = status_of(with_key(&a, Method::GET, "/analytics/events", &secret)).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (401, Some("API key revoked"))
    );
    let waited = until_status(&b, &secret, 401).await;
    assert!(waited <= Duration::from_millis(1100), "took {waited:?}");
    // Revoking again keeps the first time.
    let (_, again) = status_of(
        a.delete(&format!("/admin/api-keys/{id}"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);

    // Expiry: refused by both replicas once the time has passed.
    let expires = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let (_, short) = create_key(
        &a,
        &admin,
        json!({"name": "short", "scopes": ["read"], "expires_at": expires.to_rfc3339()}),
    )
    .await;
    for app in [&a, &b] {
        assert_eq!(
            status_of(with_key(app, Method::GET, "/analytics/events", &short))
                .await
                .0,
            200
        );
    }
    let left = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(50)).await;
    for app in [&a, &b] {
        let (status, body) =
            status_of(with_key(app, Method::GET, "/analytics/events", &short)).await;
        assert_eq!(
            (status, body["detail"].as_str()),
            (401, Some("API key expired"))
        );
    }

    // A scope change applies on the other replica within a second too.
    let (id, key) = create_key(&a, &admin, json!({"name": "grow", "scopes": ["ingest"]})).await;
    until_status(&b, &key, 403).await;
    let (status, changed) = status_of(
        a.patch(&format!("/admin/api-keys/{id}"))
            .bearer_auth(&admin)
            .json(&json!({"scopes": ["ingest", "read"]})),
    )
    .await;
    assert_eq!(
        (status, changed["scopes"].clone()),
        (200, json!(["ingest", "read"]))
    );
    assert!(until_status(&b, &key, 200).await <= Duration::from_millis(1100));
}

fn limit_headers(resp: &reqwest::Response) -> Option<(i64, i64, i64)> {
    let h = |name: &str| -> Option<i64> { resp.headers().get(name)?.to_str().ok()?.parse().ok() };
    Some((
        h("ratelimit-limit")?,
        h("ratelimit-remaining")?,
        h("ratelimit-reset")?,
    ))
}

/// Sends `n` requests as fast as one client can, alternating over `apps`;
/// answers the statuses and checks every answer's RateLimit headers.
async fn burst(apps: &[&TestApp], key: &str, n: usize, limit: i64) -> Vec<u16> {
    let mut statuses = vec![];
    for i in 0..n {
        let app = apps[i % apps.len()];
        let resp = with_key(app, Method::GET, "/analytics/events", key)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let (l, remaining, reset) =
            limit_headers(&resp).expect("RateLimit headers on every answer");
        assert_eq!(l, limit);
        assert!((0..limit).contains(&remaining), "{remaining}");
        assert_eq!(reset, 1);
        if status == 429 {
            assert_eq!(remaining, 0);
            assert_eq!(resp.headers()["retry-after"], "1");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["detail"], "Rate limit exceeded");
        }
        statuses.push(status);
    }
    statuses
}

/// Waits until just after a second turns, so a burst fits in one or two of
/// the rate's one-second windows.
async fn start_of_second() {
    let ms = chrono::Utc::now().timestamp_subsec_millis();
    tokio::time::sleep(Duration::from_millis(u64::from(1000 - ms) + 20)).await;
}

#[tokio::test]
async fn a_key_rate_is_enforced_with_ratelimit_headers() {
    let app = spawn_app().await;
    let admin = app.make_admin().await;
    let (_, key) = create_key(
        &app,
        &admin,
        json!({"name": "slow", "scopes": ["read"], "rate_per_second": 3}),
    )
    .await;
    start_of_second().await;
    let statuses = burst(&[&app], &key, 12, 3).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!((3..=6).contains(&ok), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429));
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    assert!(
        app.metrics_text()
            .await
            .contains(r#"api_key_rejections_total{key="slow",reason="rate"}"#)
    );
}

#[tokio::test]
#[ignore = "needs Redis shared by replicas"]
async fn two_replicas_share_one_rate_through_redis() {
    require_redis();
    let a = spawn_app().await;
    let b = spawn_on(Backend::share(&a.env), &[]).await;
    let admin = a.make_admin().await;
    let (_, key) = create_key(
        &a,
        &admin,
        json!({"name": "shared", "scopes": ["read"], "rate_per_second": 4}),
    )
    .await;
    start_of_second().await;
    let statuses = burst(&[&a, &b], &key, 16, 4).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    // Each replica alone would let 4 through per window: 8 or more.
    assert!((4..=8).contains(&ok) && ok < 8 + 1, "{statuses:?}");
    assert_eq!(&statuses[..4], &[200, 200, 200, 200]);
    assert_eq!(statuses[4], 429, "{statuses:?}");
}

#[tokio::test]
async fn a_daily_ingest_quota_counts_rows_and_stores_nothing_past_it() {
    let app = spawn_app().await;
    let admin = app.make_admin().await;
    let (_, key) = create_key(
        &app,
        &admin,
        json!({"name": "metered", "scopes": ["ingest"], "daily_ingest_quota": 5}),
    )
    .await;
    let batch = |n: usize| json!({"events": (0..n).map(|i| json!({"event_type": format!("q{i}")})).collect::<Vec<_>>()});
    let resp = with_key(&app, Method::POST, "/analytics/events/batch", &key)
        .json(&batch(3))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (limit, remaining, reset) = limit_headers(&resp).unwrap();
    assert_eq!((limit, remaining), (5, 2));
    assert!((1..=86_400).contains(&reset));
    let resp = with_key(&app, Method::POST, "/analytics/events/batch", &key)
        .json(&batch(3))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(limit_headers(&resp).unwrap().0, 5);
    assert_eq!(limit_headers(&resp).unwrap().1, 2);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["detail"], "Daily ingest quota exceeded");
    assert_eq!(app.count("platform_analytics_events").await, 3);
    // What is left can still be used, by a metric as well.
    let resp = with_key(&app, Method::POST, "/analytics/metrics/batch", &key)
        .json(&json!({"metrics": [{"metric_name": "a", "metric_value": 1}, {"metric_name": "b", "metric_value": 2}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(limit_headers(&resp).unwrap().1, 0);
    // A refused item is given back: an invalid batch charges nothing.
    let (status, _) = status_of(
        with_key(&app, Method::POST, "/analytics/events", &key)
            .json(&json!({"event_type": "over"})),
    )
    .await;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn events_and_metrics_record_their_key_and_lists_filter_by_it() {
    let app = spawn_app().await;
    let admin = app.make_admin().await;
    let (id_a, a) = create_key(
        &app,
        &admin,
        json!({"name": "a", "scopes": ["ingest", "read"]}),
    )
    .await;
    let (id_b, b) = create_key(&app, &admin, json!({"name": "b", "scopes": ["ingest"]})).await;
    for (key, n) in [(&a, 2), (&b, 3)] {
        for _ in 0..n {
            let (status, stored) = status_of(
                with_key(&app, Method::POST, "/analytics/events", key)
                    .json(&json!({"event_type": "attr"})),
            )
            .await;
            assert_eq!(status, 200, "{stored}");
        }
        let (status, _) = status_of(
            with_key(&app, Method::POST, "/analytics/metrics", key)
                .json(&json!({"metric_name": "attr", "metric_value": 1})),
        )
        .await;
        assert_eq!(status, 200);
    }
    app.post_json("/analytics/events", json!({"event_type": "attr"}))
        .await;
    let events = app
        .get_ok(&format!("/analytics/events?api_key_id={id_b}"))
        .await;
    let list = events["events"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|e| e["api_key_id"] == id_b));
    let events = app
        .get_ok(&format!("/analytics/events?api_key_id={id_a}"))
        .await;
    assert_eq!(events["events"].as_array().unwrap().len(), 2);
    let all = app.get_ok("/analytics/events").await;
    let unattributed: Vec<_> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.get("api_key_id").is_none())
        .collect();
    assert_eq!(unattributed.len(), 1, "the configured key records none");
    let metrics = app
        .get_ok(&format!("/analytics/metrics?api_key_id={id_a}"))
        .await;
    let list = metrics["metrics"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["api_key_id"], id_a);
    let (status, _) = status_of(app.get("/analytics/events?api_key_id=0")).await;
    assert_eq!(status, 422);
    // Use is recorded (at most about once a minute), off the request: the
    // write may land a moment after the answer.
    let mut key = Value::Null;
    for _ in 0..100 {
        (_, key) = status_of(
            app.get(&format!("/admin/api-keys/{id_a}"))
                .bearer_auth(&admin),
        )
        .await;
        if key["last_used_at"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(key["last_used_at"].is_string(), "{key}");
}

/// Runs the binary's `api-keys` command against the app's database. Off
/// the test's runtime thread: the server's tasks run on it, and a write they
/// hold open must be able to finish while the command waits for the lock.
async fn cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let env = app.env.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .env_clear()
            .envs(&env)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .arg("api-keys")
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_command_line_creates_lists_and_revokes_keys() {
    let app = spawn_app().await;
    let (ok, out, err) = cli(
        &app,
        &[
            "create",
            "--name",
            "from-cli",
            "--scopes",
            "ingest,read",
            "--rate-per-second",
            "10",
            "--expires-in-days",
            "30",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .expect("the secret is printed")
        .to_string();
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .unwrap()
        .trim()
        .to_string();
    let (status, _) = status_of(with_key(&app, Method::GET, "/analytics/events", &secret)).await;
    assert_eq!(status, 200);
    let (status, _) =
        status_of(with_key(&app, Method::POST, "/auth/login", &secret).json(&json!({}))).await;
    assert_eq!(status, 403);
    let (ok, out, _) = cli(&app, &["list"]).await;
    assert!(ok);
    assert!(out.contains("from-cli") && out.contains("ingest,read") && out.contains(&secret[..12]));
    assert!(!out.contains(&secret));
    let (ok, out, _) = cli(&app, &["revoke", &id]).await;
    assert!(ok && out.contains("revoked"), "{out}");
    let waited = until_status(&app, &secret, 401).await;
    assert!(waited <= Duration::from_millis(1100));
    let (ok, _, err) = cli(&app, &["create", "--name", "x", "--scopes", "everything"]).await;
    assert!(!ok && err.contains("unknown scope"), "{err}");
    let (ok, _, err) = cli(&app, &["revoke", "9999"]).await;
    assert!(!ok && err.contains("not found"), "{err}");
}

/// A form POST to /auth/token with optional Basic credentials.
async fn token(
    app: &TestApp,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = app.client.post(app.url("/auth/token")).form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn the_token_endpoint_speaks_rfc_6749() {
    // No grace for a concurrent reuse: a spent refresh token is refused at once.
    let app = spawn_app_with(&[("REFRESH_REUSE_GRACE_SECONDS", "0")]).await;
    let admin = app.make_admin().await;
    app.register("oauth@example.com", "password-123").await;
    let (_, client_key) =
        create_key(&app, &admin, json!({"name": "spa", "scopes": ["auth"]})).await;
    let (_, ingest_key) = create_key(
        &app,
        &admin,
        json!({"name": "no-auth", "scopes": ["ingest"]}),
    )
    .await;
    let password = [
        ("grant_type", "password"),
        ("username", "oauth@example.com"),
        ("password", "password-123"),
    ];
    // client_secret_basic, with a managed key and with the configured one.
    for secret in [client_key.as_str(), API_KEY] {
        let resp = token(&app, Some(("any-client", secret)), &password).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["token_type"], "bearer");
        assert!(body["expires_in"].as_u64().unwrap() > 0);
        // grant_type=refresh_token at the same endpoint.
        let refresh = body["refresh_token"].as_str().unwrap();
        let resp = token(
            &app,
            Some(("any-client", secret)),
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await;
        assert_eq!(resp.status(), 200);
        let rotated: Value = resp.json().await.unwrap();
        assert_ne!(rotated["refresh_token"], body["refresh_token"]);
        assert_eq!(
            app.verify(rotated["access_token"].as_str().unwrap())
                .await
                .status(),
            200
        );
        // The spent refresh token is an invalid_grant.
        let resp = token(
            &app,
            Some(("any-client", secret)),
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await;
        assert_eq!(resp.status(), 400);
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"], "invalid_grant");
    }
    // client_secret_post.
    let mut form = password.to_vec();
    form.push(("client_id", "x"));
    form.push(("client_secret", client_key.as_str()));
    assert_eq!(token(&app, None, &form).await.status(), 200);

    let oauth_error = |resp: reqwest::Response| async move {
        let status = resp.status().as_u16();
        let www = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error_description"], body["detail"], "{body}");
        (status, body["error"].as_str().unwrap().to_string(), www)
    };
    let wrong = [
        ("grant_type", "password"),
        ("username", "oauth@example.com"),
        ("password", "wrong-password"),
    ];
    assert_eq!(
        oauth_error(token(&app, Some(("c", &client_key)), &wrong).await).await,
        (400, "invalid_grant".into(), None)
    );
    let (status, error, www) =
        oauth_error(token(&app, Some(("c", "psk_wrong")), &password).await).await;
    assert_eq!((status, error.as_str()), (401, "invalid_client"));
    assert!(www.unwrap().starts_with("Basic"));
    let (status, error, _) = oauth_error(token(&app, None, &password).await).await;
    assert_eq!((status, error.as_str()), (401, "invalid_client"));
    let client_credentials: &[(&str, &str)] = &[("grant_type", "client_credentials")];
    let no_password: &[(&str, &str)] = &[("grant_type", "password")];
    for (secret, form, expected) in [
        (&ingest_key, &password[..], "unauthorized_client"),
        (&client_key, client_credentials, "unsupported_grant_type"),
        (&client_key, no_password, "invalid_request"),
    ] {
        let got = oauth_error(token(&app, Some(("c", secret)), form).await).await;
        assert_eq!(got, (400, expected.to_string(), None), "{form:?}");
    }
    let resp = app
        .client
        .post(app.url("/auth/token"))
        .basic_auth("c", Some(&client_key))
        .json(&json!({"username": "oauth@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(oauth_error(resp).await.1, "invalid_request");

    // /auth/refresh keeps its JSON body and takes the form too.
    let (_, body) = json(app.login("oauth@example.com", "password-123").await).await;
    let resp = app
        .post("/auth/refresh")
        .form(&[("refresh_token", body["refresh_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// Logout on one replica, verify on another that holds the session in
/// memory: refused once the invalidation arrives.
#[tokio::test]
#[ignore = "needs Redis shared by replicas"]
async fn a_logout_reaches_the_near_cache_of_another_replica_at_once() {
    require_redis();
    let a = spawn_app().await;
    let b = spawn_on(Backend::share(&a.env), &[]).await;
    // Both subscribed to the invalidation channel.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut waits = vec![];
    for i in 0..5 {
        let body = a
            .register(&format!("near{i}@example.com"), "password-123")
            .await;
        let token = body["access_token"].as_str().unwrap().to_string();
        for _ in 0..3 {
            assert_eq!(b.verify(&token).await.status(), 200);
        }
        let resp = a
            .post("/auth/logout")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let start = Instant::now();
        while b.verify(&token).await.status() != 401 {
            assert!(start.elapsed() < Duration::from_secs(2), "still accepted");
        }
        waits.push(start.elapsed());
    }
    let worst = waits.iter().max().unwrap();
    assert!(*worst < Duration::from_millis(300), "{waits:?}");
}

/// With its link to Redis cut, a replica holds nothing in memory: a session
/// revoked elsewhere is refused by it at once (from the database). The cut is
/// a TCP proxy in front of one Redis (TEST_REDIS_URL): a cluster's clients
/// follow redirects to the nodes' own addresses, past any proxy.
#[tokio::test]
#[ignore = "needs Redis shared by replicas"]
async fn without_the_invalidation_channel_the_near_cache_is_bypassed() {
    let single = std::env::var("TEST_REDIS_URL").expect("this test needs TEST_REDIS_URL");
    let a = spawn_app_with(&[("REDIS_URL", &single)]).await;
    let redis = reqwest::Url::parse(&a.env["REDIS_URL"]).unwrap();
    let proxy = TcpProxy::start(format!(
        "{}:{}",
        redis.host_str().unwrap(),
        redis.port().unwrap_or(6379)
    ))
    .await;
    let mut via_proxy = redis.clone();
    via_proxy.set_port(Some(proxy.port)).unwrap();
    let mut env = Backend::share(&a.env);
    env.env.insert("REDIS_URL".into(), via_proxy.to_string());
    let b = spawn_on(env, &[]).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let body = a.register("cut@example.com", "password-123").await;
    let token = body["access_token"].as_str().unwrap().to_string();
    for _ in 0..3 {
        assert_eq!(b.verify(&token).await.status(), 200);
    }
    proxy.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = a
        .post("/auth/logout")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = b.verify(&token).await;
    assert_eq!(
        resp.status(),
        401,
        "a replica cut off from Redis must not answer from memory"
    );
}

/// A client's rate counts each token request once, however the key came.
#[tokio::test]
async fn the_token_endpoint_counts_a_client_rate_once() {
    let app = spawn_app().await;
    let admin = app.make_admin().await;
    let (_, key) = create_key(
        &app,
        &admin,
        json!({"name": "spa", "scopes": ["auth"], "rate_per_second": 2}),
    )
    .await;
    start_of_second().await;
    let mut statuses = vec![];
    for _ in 0..3 {
        let resp = app
            .client
            .post(app.url("/auth/token"))
            .header("X-API-Key", &key)
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [400, 400, 429]);
}
