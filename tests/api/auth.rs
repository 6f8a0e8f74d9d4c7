//! Auth: the original's contract, its defects fixed, and what lies beyond it.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::header::HeaderValue;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::helpers::*;

const SECRET: &str = "integration-test-secret-that-is-long-enough";
/// Made by Python's bcrypt (as the original service did) for "original-password".
const PYTHON_BCRYPT_HASH: &str = "$2b$12$8m5o8s6i0HV8U2vmOT7zQOK7wRUHI76p8XXQSIP91RviXQDlxaSB6";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn sign(claims: &Value, alg: Algorithm, secret: &str) -> String {
    encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn register_answers_tokens_and_the_user() {
    let app = spawn_app().await;
    let body = app.register("  Ada@Example.COM ", "password123").await;
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 86_400);
    assert!(
        body["refresh_token"].as_str().unwrap().len() >= 43,
        "256 bits, base64url"
    );
    let user = &body["user"];
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["first_name"], "Ada");
    assert_eq!(user["is_active"], true);
    assert_eq!(user["role"], "user");
    assert!(user["id"].as_i64().unwrap() > 0);
    let created = user["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z'), "{created}");
    chrono::DateTime::parse_from_rfc3339(created).unwrap();

    // The token carries the original's claims and ours.
    let token = body["access_token"].as_str().unwrap();
    let claims: Value = jsonwebtoken::dangerous::insecure_decode(token)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], user["id"].as_i64().unwrap().to_string());
    assert_eq!(claims["email"], "ada@example.com");
    assert_eq!(claims["type"], "access");
    assert_eq!(claims["role"], "user");
    assert_eq!(claims["iss"], "platform-server");
    assert!(claims["jti"].is_string() && claims["sid"].is_string());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        86_400
    );

    // Only the refresh token's digest is stored.
    let refresh = body["refresh_token"].as_str().unwrap();
    let rows = app
        .db
        .query_all_raw(Statement::from_string(
            app.db.get_database_backend(),
            "SELECT token_hash FROM platform_auth_refresh_tokens".to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let stored: String = rows[0].try_get("", "token_hash").unwrap();
    assert_ne!(stored, refresh);
    assert_eq!(stored.len(), 64);
}

#[tokio::test]
async fn guessable_passwords_are_refused_where_configured() {
    let app = spawn_app_with(&[("PASSWORD_REJECT_GUESSABLE", "true")]).await;
    for (email, password) in [
        ("weak@example.com", "password1234"),
        ("zarathustra@example.com", "Zarathustra1844"),
    ] {
        let resp = app
            .post("/auth/register")
            .json(&json!({"email": email, "password": password, "first_name": "Zarathustra"}))
            .send()
            .await
            .unwrap();
        assert!(
            expect_error(resp, 400).await.contains("too easy to guess"),
            "{password}"
        );
        assert_eq!(app.login(email, password).await.status(), 401, "not stored");
    }
    app.register("strong@example.com", "violin-marmot-44-quartz")
        .await;
}

#[tokio::test]
async fn register_rejects_bad_input_without_storing() {
    let app = spawn_app().await;
    app.register("taken@example.com", "password123").await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"email": "TAKEN@example.com ", "password": "password123"}),
            409,
            "Email already registered",
        ),
        (
            json!({"email": "a@example.com", "password": "short"}),
            400,
            "Password must be at least 8 characters",
        ),
        (
            json!({"email": "a@example.com", "password": "x".repeat(73)}),
            422,
            "Password must be at most 72 bytes",
        ),
        (
            json!({"email": "a@example.com", "password": "é".repeat(37)}),
            422,
            "Password must be at most 72 bytes",
        ),
        (
            json!({"email": "not-an-email", "password": "password123"}),
            422,
            "Invalid email address",
        ),
        (
            json!({"email": "a@example.com", "password": "password123", "first_name": "n".repeat(101)}),
            422,
            "first_name must be at most 100 characters",
        ),
    ];
    for (body, status, detail) in cases {
        let resp = app.post("/auth/register").json(&body).send().await.unwrap();
        assert_eq!(expect_error(resp, status).await, detail, "{body}");
    }
    for (raw, status) in [
        ("{\"email\": 5}", 422),
        ("not json", 422),
        ("{\"email\": \"a@example.com\"}", 422),
    ] {
        let resp = app.post_raw_json("/auth/register", raw).await;
        expect_error(resp, status).await;
    }
    // 72 bytes is bcrypt's limit, and allowed.
    app.register("long@example.com", &"y".repeat(72)).await;
    let rows = app
        .db
        .query_all_raw(Statement::from_string(
            app.db.get_database_backend(),
            "SELECT email FROM platform_users ORDER BY id".to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "only the two valid registrations are stored");
}

#[tokio::test]
async fn oversized_deep_and_malformed_bodies_get_4xx_json() {
    let app = spawn_app().await;
    let big = format!(
        "{{\"email\":\"{}\",\"password\":\"password123\"}}",
        "a".repeat(2 * 1024 * 1024)
    );
    let resp = app.post_raw_json("/auth/register", big).await;
    assert!(expect_error(resp, 413).await.contains("limit"));
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let resp = app.post_raw_json("/auth/login", deep).await;
    expect_error(resp, 422).await;
    let resp = app.post("/auth/login").body("{}").send().await.unwrap();
    expect_error(resp, 422).await;
}

#[tokio::test]
async fn login_failures_look_alike() {
    let app = spawn_app().await;
    let body = app.register("ada@example.com", "password123").await;
    let ok = app.login("ADA@example.com", "password123").await;
    let (status, ok) = json(ok).await;
    assert_eq!(status, 200);
    assert_eq!(ok["user"]["id"], body["user"]["id"]);

    let wrong = expect_error(app.login("ada@example.com", "password124").await, 401).await;
    let unknown = expect_error(app.login("nobody@example.com", "password123").await, 401).await;
    assert_eq!(wrong, "Invalid credentials");
    assert_eq!(unknown, wrong);
    // Inactive users get the same answer.
    let token = ok["access_token"].as_str().unwrap();
    let id = ok["user"]["id"].as_i64().unwrap();
    let resp = app
        .delete(&format!("/auth/users/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        expect_error(app.login("ada@example.com", "password123").await, 401).await,
        wrong
    );

    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(r#"auth_logins_total{result="success"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"auth_logins_total{result="failure"}"#));
}

#[tokio::test]
async fn verify_works_as_forward_auth() {
    let app = spawn_app().await;
    let body = app.register("ada@example.com", "password123").await;
    let token = body["access_token"].as_str().unwrap();
    let resp = app.verify(token).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(
        h["x-user-id"],
        body["user"]["id"].as_i64().unwrap().to_string().as_str()
    );
    assert_eq!(h["x-user-email"], "ada@example.com");
    assert_eq!(h["x-user-role"], "user");
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["content-type"], "application/json");
    let (_, v) = json(resp).await;
    assert_eq!(v["valid"], true);
    assert_eq!(v["user"]["email"], "ada@example.com");
    assert_eq!(v["user"]["id"], body["user"]["id"]);
}

#[tokio::test]
async fn a_remembered_verify_ends_when_the_token_expires() {
    let app = spawn_app_with(&[("JWT_LEEWAY", "0")]).await;
    let body = app.register("ada@example.com", "password123").await;
    let id = body["user"]["id"].as_i64().unwrap().to_string();
    // The original's shape (no `sid`), expiring in a second or two.
    let exp = now() + 1;
    let token = sign(
        &json!({"sub": id, "email": "ada@example.com", "iat": now(), "exp": exp, "type": "access"}),
        Algorithm::HS256,
        SECRET,
    );
    // Verify remembers its answers for up to a second; asked every 20 ms,
    // the answer must still turn to 401 as soon as `exp` has passed.
    loop {
        let asked = now();
        let resp = app.verify(&token).await;
        if asked > exp {
            assert_eq!(expect_error(resp, 401).await, "Token expired");
            break;
        }
        if now() <= exp {
            assert_eq!(resp.status(), 200, "unexpired at {asked}, exp {exp}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn forged_and_broken_tokens_are_401_never_500() {
    let app = spawn_app().await;
    let body = app.register("ada@example.com", "password123").await;
    let id = body["user"]["id"].as_i64().unwrap().to_string();
    let good = body["access_token"].as_str().unwrap().to_string();
    let base = json!({"sub": id, "email": "ada@example.com", "iat": now(), "exp": now() + 600, "type": "access"});

    let none_header = base64url(r#"{"alg":"none","typ":"JWT"}"#);
    let none_token = format!("{}.{}.", none_header, base64url(&base.to_string()));
    let mut tampered = good.clone();
    let mid = tampered.len() - 5;
    tampered.replace_range(
        mid..mid + 1,
        if &good[mid..mid + 1] == "A" { "B" } else { "A" },
    );
    let mut string_exp = base.clone();
    string_exp["exp"] = json!((now() + 600).to_string());
    let mut no_sub = base.clone();
    no_sub.as_object_mut().unwrap().remove("sub");
    let mut bad_sub = base.clone();
    bad_sub["sub"] = json!("not-a-number");
    let mut expired = base.clone();
    expired["exp"] = json!(now() - 120);
    let mut refresh_type = base.clone();
    refresh_type["type"] = json!("refresh");
    let mut other_iss = base.clone();
    other_iss["iss"] = json!("someone-else");

    let cases = vec![
        ("alg none", none_token, "Invalid token"),
        ("tampered", tampered, "Invalid token"),
        (
            "wrong key",
            sign(&base, Algorithm::HS256, "another-secret"),
            "Invalid token",
        ),
        (
            "wrong algorithm",
            sign(&base, Algorithm::HS512, SECRET),
            "Invalid token",
        ),
        (
            "exp as string",
            sign(&string_exp, Algorithm::HS256, SECRET),
            "Invalid token",
        ),
        (
            "no sub",
            sign(&no_sub, Algorithm::HS256, SECRET),
            "Invalid token",
        ),
        (
            "bad sub",
            sign(&bad_sub, Algorithm::HS256, SECRET),
            "Invalid token",
        ),
        (
            "expired",
            sign(&expired, Algorithm::HS256, SECRET),
            "Token expired",
        ),
        (
            "wrong type",
            sign(&refresh_type, Algorithm::HS256, SECRET),
            "Invalid token",
        ),
        (
            "foreign issuer",
            sign(&other_iss, Algorithm::HS256, SECRET),
            "Invalid token",
        ),
        ("garbage", "garbage".to_string(), "Invalid token"),
    ];
    for (name, token, detail) in cases {
        for path in ["/auth/verify", "/auth/profile", "/verify"] {
            let resp = app.get(path).bearer_auth(&token).send().await.unwrap();
            assert_eq!(
                resp.headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap()),
                Some("Bearer error=\"invalid_token\""),
                "{name} {path}"
            );
            assert_eq!(expect_error(resp, 401).await, detail, "{name} {path}");
        }
    }
    // The last two: bytes past ASCII, valid UTF-8 or not, make no bearer token.
    let headers: [&[u8]; 7] = [
        b"",
        b"Bearer",
        b"Bearer ",
        b"Basic dXNlcjpwYXNz",
        b"bearer",
        b"Bearer \xc3\xa9x.y.z",
        b"Bearer x.y.z\xff",
    ];
    for header in headers {
        let resp = app
            .get("/auth/verify")
            .header("Authorization", HeaderValue::from_bytes(header).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(
            expect_error(resp, 401).await,
            "Missing or invalid authorization header",
            "{header:?}"
        );
    }
    let resp = app.get("/auth/verify").send().await.unwrap();
    assert_eq!(
        expect_error(resp, 401).await,
        "Missing or invalid authorization header"
    );
}

fn base64url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn users_and_tokens_of_the_original_keep_working() {
    let app = spawn_app().await;
    // A row as the original wrote it: mixed-case email, Python bcrypt hash,
    // only the original's columns (role takes its default).
    app.db
        .execute_raw(Statement::from_string(
            app.db.get_database_backend(),
            format!(
                "INSERT INTO platform_users (email, password_hash, is_active, created_at, updated_at, first_name, last_name, meta_data) \
                 VALUES ('Old.User@Example.com', '{PYTHON_BCRYPT_HASH}', true, '2024-01-02 03:04:05', '2024-01-02 03:04:05', 'Old', NULL, '{{}}')"
            ),
        ))
        .await
        .unwrap();
    let (status, body) = json(app.login("old.user@example.com", "original-password").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["email"], "Old.User@Example.com");
    assert_eq!(body["user"]["role"], "user");
    assert_eq!(body["user"]["created_at"], "2024-01-02T03:04:05Z");
    let id = body["user"]["id"].as_i64().unwrap();

    // A token as the original issued it: no jti, sid or iss.
    let original = sign(
        &json!({"sub": id.to_string(), "email": "Old.User@Example.com", "iat": now(), "exp": now() + 600, "type": "access"}),
        Algorithm::HS256,
        SECRET,
    );
    let (status, v) = json(app.verify(&original).await).await;
    assert_eq!((status, v["user"]["id"].as_i64()), (200, Some(id)));
    // It can be logged out like ours.
    let resp = app
        .post("/auth/logout")
        .bearer_auth(&original)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        expect_error(app.verify(&original).await, 401).await,
        "Token has been revoked"
    );
}

#[tokio::test]
async fn login_is_throttled_per_email_and_per_ip() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES", "3"), ("LOGIN_IP_MAX_FAILURES", "5")]).await;
    app.register("ada@example.com", "password123").await;
    for _ in 0..3 {
        expect_error(app.login("ada@example.com", "wrong-password").await, 401).await;
    }
    // Blocked now, even with the right password.
    let resp = app.login("ada@example.com", "password123").await;
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    assert!(
        expect_error(resp, 429)
            .await
            .starts_with("Too many failed login attempts")
    );
    // Unknown emails are throttled too; the IP limit (5) is reached on the
    // way and blocks every email from this address.
    for _ in 0..2 {
        expect_error(app.login("ghost@example.com", "wrong-password").await, 401).await;
    }
    let resp = app.login("other@example.com", "whatever-pass").await;
    assert_eq!(
        expect_error(resp, 429).await,
        "Too many failed login attempts; try again later"
    );
}

#[tokio::test]
async fn forwarded_for_counts_only_behind_trusted_proxies() {
    let app = spawn_app_with(&[
        ("LOGIN_MAX_FAILURES", "2"),
        ("LOGIN_IP_MAX_FAILURES", "2"),
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
    ])
    .await;
    let attempt = |email: &'static str, ip: &'static str| {
        app.post("/auth/login")
            .header("X-Forwarded-For", ip)
            .json(&json!({"email": email, "password": "wrong-password"}))
            .send()
    };
    expect_error(attempt("a@example.com", "198.51.100.1").await.unwrap(), 401).await;
    expect_error(attempt("b@example.com", "198.51.100.1").await.unwrap(), 401).await;
    // 198.51.100.1 is blocked; another client behind the same proxy is not.
    expect_error(attempt("c@example.com", "198.51.100.1").await.unwrap(), 429).await;
    expect_error(attempt("c@example.com", "198.51.100.2").await.unwrap(), 401).await;
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_untrusted_peers() {
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES", "2"), ("LOGIN_IP_MAX_FAILURES", "2")]).await;
    for (email, ip) in [
        ("a@example.com", "198.51.100.1"),
        ("b@example.com", "198.51.100.2"),
    ] {
        let resp = app
            .post("/auth/login")
            .header("X-Forwarded-For", ip)
            .json(&json!({"email": email, "password": "wrong-password"}))
            .send()
            .await
            .unwrap();
        expect_error(resp, 401).await;
    }
    // Both counted against the real peer, so a spoofed header does not help.
    let resp = app
        .post("/auth/login")
        .header("X-Forwarded-For", "198.51.100.3")
        .json(&json!({"email": "c@example.com", "password": "wrong-password"}))
        .send()
        .await
        .unwrap();
    expect_error(resp, 429).await;
}

#[tokio::test]
async fn refresh_rotates_and_concurrent_reuse_gets_the_same_child() {
    let app = spawn_app().await;
    let body = app.register("ada@example.com", "password123").await;
    let r0 = body["refresh_token"].as_str().unwrap().to_string();
    let (status, first) = json(app.refresh(&r0).await).await;
    assert_eq!(status, 200, "{first}");
    let r1 = first["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r0);
    assert_eq!(first["user"]["email"], "ada@example.com");
    // Within the grace window the same parent answers the same child.
    let (status, again) = json(app.refresh(&r0).await).await;
    assert_eq!(status, 200);
    assert_eq!(again["refresh_token"], r1.as_str());
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(app.verify(access).await.status(), 200);
    // The child rotates in turn.
    let (status, second) = json(app.refresh(&r1).await).await;
    assert_eq!(status, 200);
    assert_ne!(second["refresh_token"], r1.as_str());
    assert_eq!(
        expect_error(app.refresh("no-such-token").await, 401).await,
        "Invalid refresh token"
    );
}

#[tokio::test]
async fn reuse_after_the_grace_window_revokes_the_family() {
    let app = spawn_app_with(&[("REFRESH_REUSE_GRACE_SECONDS", "0")]).await;
    let body = app.register("ada@example.com", "password123").await;
    let r0 = body["refresh_token"].as_str().unwrap().to_string();
    let (_, first) = json(app.refresh(&r0).await).await;
    let r1 = first["refresh_token"].as_str().unwrap().to_string();
    let access = first["access_token"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        expect_error(app.refresh(&r0).await, 401).await,
        "Refresh token reuse detected"
    );
    // The whole family is gone: the child refresh token and the session's access tokens.
    assert_eq!(
        expect_error(app.refresh(&r1).await, 401).await,
        "Invalid refresh token"
    );
    assert_eq!(
        expect_error(app.verify(&access).await, 401).await,
        "Token has been revoked"
    );
    let original_access = body["access_token"].as_str().unwrap();
    expect_error(app.verify(original_access).await, 401).await;
}

#[tokio::test]
async fn logout_ends_the_session_at_once() {
    let app = spawn_app().await;
    let body = app.register("ada@example.com", "password123").await;
    let access = body["access_token"].as_str().unwrap();
    let r0 = body["refresh_token"].as_str().unwrap();
    // A second session of the same user survives the first one's logout.
    let (_, other) = json(app.login("ada@example.com", "password123").await).await;
    let other_access = other["access_token"].as_str().unwrap();
    assert_eq!(app.verify(access).await.status(), 200);
    let (status, msg) = json(
        app.post("/auth/logout")
            .bearer_auth(access)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, msg["message"].as_str()),
        (200, Some("Logged out successfully"))
    );
    assert_eq!(
        expect_error(app.verify(access).await, 401).await,
        "Token has been revoked"
    );
    expect_error(app.refresh(r0).await, 401).await;
    assert_eq!(app.verify(other_access).await.status(), 200);
    // A malformed body is refused (found by the spec fuzzer), not read as
    // "no refresh token", and ends nothing.
    let resp = app
        .post("/auth/logout")
        .bearer_auth(other_access)
        .json(&json!({"refresh_token": 5}))
        .send()
        .await
        .unwrap();
    expect_error(resp, 422).await;
    assert_eq!(app.verify(other_access).await.status(), 200);
    // Logout with the other session's refresh token ends that one too.
    let (_, third) = json(app.login("ada@example.com", "password123").await).await;
    let resp = app
        .post("/auth/logout")
        .bearer_auth(third["access_token"].as_str().unwrap())
        .json(&json!({"refresh_token": other["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(app.verify(other_access).await.status(), 401);
    expect_error(app.post("/auth/logout").send().await.unwrap(), 401).await;
}

// The in-process cache is one replica's by definition.
#[tokio::test]
#[ignore = "needs TEST_REDIS_URL: replicas share revocations through Redis"]
async fn logout_and_deactivation_are_seen_by_a_second_replica() {
    require_redis();
    let a = spawn_app().await;
    let b = spawn_on(Backend::share(&a.env), &[]).await;
    let body = a.register("ada@example.com", "password123").await;
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(
        b.verify(access).await.status(),
        200,
        "b caches the session as live"
    );
    a.post("/auth/logout")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(b.verify(access).await.status(), 401);

    let (_, s2) = json(b.login("ada@example.com", "password123").await).await;
    let access2 = s2["access_token"].as_str().unwrap();
    assert_eq!(b.verify(access2).await.status(), 200);
    let admin = a.make_admin().await;
    let id = body["user"]["id"].as_i64().unwrap();
    let resp = a
        .patch(&format!("/auth/users/{id}"))
        .bearer_auth(&admin)
        .json(&json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(b.verify(access2).await.status(), 401);

    // Throttling is shared too.
    let c = spawn_on(Backend::share(&a.env), &[("LOGIN_MAX_FAILURES", "2")]).await;
    let d = spawn_on(Backend::share(&a.env), &[("LOGIN_MAX_FAILURES", "2")]).await;
    expect_error(c.login("x@example.com", "wrong-password").await, 401).await;
    expect_error(d.login("x@example.com", "wrong-password").await, 401).await;
    expect_error(c.login("x@example.com", "wrong-password").await, 429).await;
}

#[tokio::test]
async fn profile_updates_only_names() {
    let app = spawn_app().await;
    let body = app.register("ada@example.com", "password123").await;
    let token = body["access_token"].as_str().unwrap();
    let id = body["user"]["id"].as_i64().unwrap();
    // Verify's answer before the change (kept in memory), then after it.
    let (_, v) = json(app.verify(token).await).await;
    assert_eq!(v["user"]["first_name"], "Ada");
    let (status, p) = json(
        app.put("/auth/profile")
            .bearer_auth(token)
            .json(
                &json!({"email": "evil@example.com", "first_name": "Grace", "last_name": "Hopper",
                          "role": "admin", "id": 999, "is_active": false}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["first_name"], "Grace");
    assert_eq!(p["last_name"], "Hopper");
    assert_eq!(p["email"], "ada@example.com");
    assert_eq!(p["role"], "user");
    assert_eq!(p["id"].as_i64(), Some(id));
    assert_eq!(p["is_active"], true);
    // Seen at once by verify and the legacy profile route.
    let (_, v) = json(app.verify(token).await).await;
    assert_eq!(v["user"]["first_name"], "Grace");
    let resp = app.get("/profile").bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.headers()["deprecation"], "true");
    let (_, p) = json(resp).await;
    assert_eq!(p["last_name"], "Hopper");
}

#[tokio::test]
async fn roles_and_admin_endpoints() {
    let app = spawn_app().await;
    let admin = app.make_admin().await;
    let ada = app.register("ada@example.com", "password123").await;
    let bob = app.register("bob@example.com", "password123").await;
    let ada_token = ada["access_token"].as_str().unwrap();
    let ada_id = ada["user"]["id"].as_i64().unwrap();
    let bob_id = bob["user"]["id"].as_i64().unwrap();

    let resp = app
        .get("/auth/users")
        .bearer_auth(ada_token)
        .send()
        .await
        .unwrap();
    assert_eq!(expect_error(resp, 403).await, "Admin privileges required");

    let (status, list) = json(
        app.get("/auth/users?limit=2")
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list["total"], 3);
    assert_eq!(list["users"].as_array().unwrap().len(), 2);
    let (_, list) = json(
        app.get("/auth/users?email=BOB")
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["users"][0]["email"], "bob@example.com");
    let (_, page) = json(
        app.get("/auth/users?limit=2&offset=2")
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(page["users"][0]["email"], "bob@example.com");
    for bad in ["limit=0", "limit=1001", "limit=-1", "offset=abc"] {
        let resp = app
            .get(&format!("/auth/users?{bad}"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        expect_error(resp, 422).await;
    }

    let (status, u) = json(
        app.get(&format!("/auth/users/{bob_id}"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, u["email"].as_str()),
        (200, Some("bob@example.com"))
    );
    expect_error(
        app.get("/auth/users/99999")
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    expect_error(
        app.get("/auth/users/99999999999")
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;

    // Promotion shows at once in verify.
    let (status, u) = json(
        app.patch(&format!("/auth/users/{ada_id}"))
            .bearer_auth(&admin)
            .json(&json!({"role": "admin"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, u["role"].as_str()), (200, Some("admin")));
    let resp = app.verify(ada_token).await;
    assert_eq!(resp.headers()["x-user-role"], "admin");
    let resp = app
        .patch(&format!("/auth/users/{ada_id}"))
        .bearer_auth(&admin)
        .json(&json!({"role": "root"}))
        .send()
        .await
        .unwrap();
    expect_error(resp, 422).await;

    // A user may delete only themselves; an admin anyone.
    let bob_token = bob["access_token"].as_str().unwrap();
    let resp = app
        .delete(&format!("/auth/users/{ada_id}"))
        .bearer_auth(bob_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_error(resp, 403).await,
        "Can only delete your own account"
    );
    let (status, m) = json(
        app.delete(&format!("/auth/users/{bob_id}"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, m["message"].as_str()),
        (200, Some("User account deactivated successfully"))
    );
    assert_eq!(
        expect_error(app.verify(bob_token).await, 401).await,
        "Token has been revoked"
    );
    let (_, u) = json(
        app.get(&format!("/auth/users/{bob_id}"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(u["is_active"], false);

    let metrics = app.metrics_text().await;
    assert!(metrics.contains("auth_role_changes_total 1"), "{metrics}");
    assert!(metrics.contains(r#"auth_user_deletions_total{by="admin"}"#));
}

#[tokio::test]
async fn admin_from_settings_is_created_at_start() {
    let app = spawn_app_with(&[
        ("ADMIN_EMAIL", "Boss@Example.com"),
        ("ADMIN_PASSWORD", "boss-password"),
    ])
    .await;
    let (status, body) = json(app.login("boss@example.com", "boss-password").await).await;
    assert_eq!(status, 200);
    assert_eq!(body["user"]["role"], "admin");
}

#[tokio::test]
async fn oauth2_password_grant_for_swagger_ui() {
    let app = spawn_app().await;
    app.register("ada@example.com", "password123").await;
    let form = [
        ("grant_type", "password"),
        ("username", "ada@example.com"),
        ("password", "password123"),
    ];
    let (status, body) = json(app.post("/auth/token").form(&form).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(
        app.verify(body["access_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
    // Swagger UI sends the API key as the client secret.
    let mut with_secret = form.to_vec();
    with_secret.push(("client_secret", API_KEY));
    let resp = app
        .client
        .post(app.url("/auth/token"))
        .form(&with_secret)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = app
        .client
        .post(app.url("/auth/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(expect_error(resp, 401).await, "Missing API key");
    let mut wrong = form.to_vec();
    wrong.push(("client_secret", "nope"));
    let resp = app
        .client
        .post(app.url("/auth/token"))
        .form(&wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(expect_error(resp, 401).await, "Invalid API key");
    let bad = [
        ("grant_type", "password"),
        ("username", "ada@example.com"),
        ("password", "nope-nope"),
    ];
    // RFC 6749 §5.2: a wrong password is an invalid_grant, answered 400.
    assert_eq!(
        expect_error(
            app.post("/auth/token").form(&bad).send().await.unwrap(),
            400,
        )
        .await,
        "Invalid credentials"
    );
}

#[tokio::test]
async fn legacy_auth_aliases_are_guarded_and_deprecated() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(app.url("/register"))
        .json(&json!({"email": "ada@example.com", "password": "password123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(expect_error(resp, 401).await, "Missing API key");
    let resp = app
        .post("/register")
        .json(&json!({"email": "ada@example.com", "password": "password123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["deprecation"], "true");
    assert_eq!(
        resp.headers()["link"],
        "</auth/register>; rel=\"successor-version\""
    );
    let resp = app
        .post("/login")
        .json(&json!({"email": "ada@example.com", "password": "password123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["link"],
        "</auth/login>; rel=\"successor-version\""
    );
    let (status, body) = json(resp).await;
    assert_eq!(status, 200);
    let token = body["access_token"].as_str().unwrap();
    let resp = app.get("/verify").bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.headers()["deprecation"], "true");
    assert_eq!(json(resp).await.1["valid"], true);
    let resp = app
        .put("/profile")
        .bearer_auth(token)
        .json(&json!({"first_name": "Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json(resp).await.1["first_name"], "Z");
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(r#"legacy_requests_total{route="/login"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn jwks_publishes_no_hmac_secret() {
    let app = spawn_app().await;
    let (status, body) = json(
        app.client
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"keys": []}));
}

/// A throwaway Ed25519 key made for this test only.
const TEST_ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIE3dRKWaeFBhXVRBc9G2eUNG4wHhCsjzbg+iQKxP1Aah\n-----END PRIVATE KEY-----\n";

#[tokio::test]
async fn eddsa_signing_publishes_its_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("jwt.pem");
    std::fs::write(&key, TEST_ED25519_PEM).unwrap();
    let app = spawn_app_with(&[
        ("JWT_ALGORITHM", "EdDSA"),
        ("JWT_PRIVATE_KEY_FILE", key.to_str().unwrap()),
        ("JWT_KEY_ID", "k1"),
    ])
    .await;
    let body = app.register("ada@example.com", "password123").await;
    let token = body["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some("k1"));
    assert_eq!(app.verify(token).await.status(), 200);

    let (_, jwks) = json(
        app.client
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], "k1");
    assert_eq!(keys[0]["kty"], "OKP");
    assert!(keys[0].get("d").is_none(), "never the private part");
    // The published key verifies the token on its own.
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(keys[0].clone()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(),
        &validation,
    )
    .unwrap();
    assert_eq!(data.claims["email"], "ada@example.com");
    // The algorithm is pinned: an HS256 token signed with JWT_SECRET is refused.
    let hs = sign(
        &json!({"sub": body["user"]["id"].as_i64().unwrap().to_string(), "iat": now(), "exp": now() + 600, "type": "access"}),
        Algorithm::HS256,
        SECRET,
    );
    assert_eq!(app.verify(&hs).await.status(), 401);
}
