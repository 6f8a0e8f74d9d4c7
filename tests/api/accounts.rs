//! Accounts end to end, with mail read from a real SMTP server on loopback:
//! password change and reset, email verification and change, the outbox
//! across an SMTP outage and a restart, custom claims.

use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::*;

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "another long passphrase";

/// A server that mails through `smtp`, retrying every second.
async fn app_with_mail(smtp: &SmtpServer, extra: &[(&str, &str)]) -> TestApp {
    let url = smtp.url();
    let mut overrides = vec![
        ("SMTP_URL", url.as_str()),
        ("MAIL_RETRY_BASE", "1"),
        ("MAIL_RETRY_MAX", "1"),
        ("PUBLIC_BASE_URL", "https://app.example.com"),
    ];
    overrides.extend_from_slice(extra);
    spawn_app_with(&overrides).await
}

/// A second replica on the same database, cache and SMTP server, when
/// replicas share a cache (Redis); the embedded in-process cache serves one
/// replica only, so there the checks run on the first.
async fn second_replica(app: &TestApp) -> Option<TestApp> {
    if !app.env.contains_key("REDIS_URL") {
        return None;
    }
    let overrides: Vec<(&str, &str)> = ["SMTP_URL", "MAIL_RETRY_BASE", "MAIL_RETRY_MAX"]
        .iter()
        .filter_map(|k| app.env.get(*k).map(|v| (*k, v.as_str())))
        .collect();
    Some(spawn_on(Backend::share(&app.env), &overrides).await)
}

async fn access_token(app: &TestApp, email: &str, password: &str) -> String {
    let (status, body) = json(app.login(email, password).await).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

async fn forgot(app: &TestApp, email: &str) -> (u16, Value) {
    app.post_json("/auth/password/forgot", json!({ "email": email }))
        .await
}

async fn reset(app: &TestApp, token: &str, password: &str) -> reqwest::Response {
    app.post("/auth/password/reset")
        .json(&json!({ "token": token, "new_password": password }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn password_reset_end_to_end_ends_sessions_on_every_replica() {
    let smtp = SmtpServer::start().await;
    let app = app_with_mail(&smtp, &[]).await;
    let other = second_replica(&app).await;
    let other = other.as_ref().unwrap_or(&app);
    app.register("reset@example.com", PASSWORD).await;
    let session = access_token(&app, "reset@example.com", PASSWORD).await;
    assert_eq!(other.verify(&session).await.status(), 200);

    let (status, body) = forgot(&app, "Reset@Example.com").await;
    assert_eq!(status, 202);
    assert_eq!(
        body["message"],
        "If an active account uses this address, a mail with a link is on its way"
    );
    let mail = smtp
        .wait_for("reset@example.com", "Reset your password")
        .await;
    assert!(
        mail.text
            .contains("https://app.example.com/reset-password?token="),
        "{}",
        mail.text
    );
    // minijinja escapes '/' in HTML; mail clients decode it.
    assert!(
        mail.html
            .replace("&#x2f;", "/")
            .contains("<a href=\"https://app.example.com/reset-password?token="),
        "{}",
        mail.html
    );
    assert!(mail.text.contains("for 1 hour"), "{}", mail.text);
    let token = mail.link_token();
    assert!(token.len() >= 43, "at least 256 bits: {token}");
    // Only the digest is stored: the token appears in no row.
    assert_eq!(
        app.count_where(
            "platform_user_tokens",
            &format!("token_hash = '{token}' OR email = '{token}'")
        )
        .await,
        0
    );

    let resp = reset(&app, &token, NEW_PASSWORD).await;
    assert_eq!(resp.status(), 200);
    // The other replica refuses the old session at once.
    assert_eq!(other.verify(&session).await.status(), 401);
    assert_eq!(app.login("reset@example.com", PASSWORD).await.status(), 401);
    access_token(other, "reset@example.com", NEW_PASSWORD).await;
    // Single use.
    let detail = expect_error(reset(&app, &token, "yet another passphrase").await, 400).await;
    assert_eq!(detail, "Invalid or expired token");
    smtp.wait_for("reset@example.com", "Your password was changed")
        .await;
    // The mail proved the address.
    assert_eq!(
        app.count_where(
            "platform_users",
            "email = 'reset@example.com' AND email_verified = true"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn reset_tokens_are_single_use_superseded_and_expire() {
    let smtp = SmtpServer::start().await;
    let app = app_with_mail(&smtp, &[("PASSWORD_RESET_TTL", "2")]).await;
    app.register("tokens@example.com", PASSWORD).await;

    forgot(&app, "tokens@example.com").await;
    let first = smtp
        .wait_for_nth("tokens@example.com", "Reset your password", 1)
        .await
        .link_token();
    forgot(&app, "tokens@example.com").await;
    let second = smtp
        .wait_for_nth("tokens@example.com", "Reset your password", 2)
        .await
        .link_token();
    assert_ne!(first, second);
    assert_eq!(reset(&app, &second, NEW_PASSWORD).await.status(), 200);
    // Redeeming one spends every other outstanding reset token.
    expect_error(reset(&app, &first, "a third long passphrase").await, 400).await;

    forgot(&app, "tokens@example.com").await;
    let late = smtp
        .wait_for_nth("tokens@example.com", "Reset your password", 3)
        .await
        .link_token();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    expect_error(reset(&app, &late, "a fourth long passphrase").await, 400).await;
    // Tampered and malformed tokens alike.
    expect_error(reset(&app, &format!("{second}x"), NEW_PASSWORD).await, 400).await;
    expect_error(reset(&app, "", NEW_PASSWORD).await, 400).await;
    // A verification token is no reset token.
    let verify = smtp
        .wait_for("tokens@example.com", "Confirm your email address")
        .await
        .link_token();
    expect_error(reset(&app, &verify, NEW_PASSWORD).await, 400).await;
    // The password rules of registration apply.
    forgot(&app, "tokens@example.com").await;
    let fresh = smtp
        .wait_for_nth("tokens@example.com", "Reset your password", 4)
        .await
        .link_token();
    let detail = expect_error(reset(&app, &fresh, "short").await, 400).await;
    assert_eq!(detail, "Password must be at least 8 characters");
    expect_error(reset(&app, &fresh, &"x".repeat(73)).await, 422).await;
    assert_eq!(
        reset(&app, &fresh, "a fifth long passphrase")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn forgotten_password_answers_alike_for_unknown_addresses_and_is_throttled() {
    let smtp = SmtpServer::start().await;
    let app = app_with_mail(&smtp, &[("MAIL_MAX_PER_EMAIL", "2"), ("MAIL_IP_MAX", "4")]).await;
    app.register("known@example.com", PASSWORD).await;
    let known = forgot(&app, "known@example.com").await;
    let unknown = forgot(&app, "nobody@example.com").await;
    assert_eq!(known, unknown);
    assert_eq!(known.0, 202);
    smtp.wait_for("known@example.com", "Reset your password")
        .await;
    // Inactive accounts get nothing either.
    assert_eq!(smtp.mails_to("nobody@example.com").len(), 0);
    assert_eq!(
        app.count_where(
            "platform_mail_outbox",
            "recipient = 'nobody@example.com' AND outcome = 'no_account'"
        )
        .await,
        1
    );

    // Per email, unknown ones too (2 here), then per client IP (4 here).
    assert_eq!(forgot(&app, "nobody@example.com").await.0, 202);
    let resp = app
        .post("/auth/password/forgot")
        .json(&json!({"email": "nobody@example.com"}))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("retry-after"));
    let detail = expect_error(resp, 429).await;
    assert_eq!(
        detail,
        "Too many mail requests for this address or client; try again later"
    );
    assert_eq!(forgot(&app, "third@example.com").await.0, 202);
    assert_eq!(forgot(&app, "fourth@example.com").await.0, 429);
    // Bad input is a 422, not a 202.
    assert_eq!(forgot(&app, "not-an-email").await.0, 422);
}

#[tokio::test]
async fn change_password_ends_other_sessions_on_every_replica_and_answers_new_tokens() {
    let smtp = SmtpServer::start().await;
    let app = app_with_mail(&smtp, &[]).await;
    let other = second_replica(&app).await;
    let other = other.as_ref().unwrap_or(&app);
    app.register("change@example.com", PASSWORD).await;
    let kept = access_token(&app, "change@example.com", PASSWORD).await;
    let caller = access_token(&app, "change@example.com", PASSWORD).await;

    let change = |current: &str, new: &str| {
        app.post("/auth/password/change")
            .bearer_auth(&caller)
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
    };
    let detail = expect_error(change("wrong password", NEW_PASSWORD).await.unwrap(), 400).await;
    assert_eq!(detail, "Current password is incorrect");
    expect_error(change(PASSWORD, "short").await.unwrap(), 400).await;
    expect_error(change(PASSWORD, &"x".repeat(73)).await.unwrap(), 422).await;
    // A failed attempt changed nothing.
    assert_eq!(other.verify(&kept).await.status(), 200);

    let (status, body) = json(change(PASSWORD, NEW_PASSWORD).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let fresh = body["access_token"].as_str().unwrap();
    assert_eq!(other.verify(&kept).await.status(), 401);
    assert_eq!(other.verify(&caller).await.status(), 401);
    assert_eq!(other.verify(fresh).await.status(), 200);
    assert_eq!(
        other
            .refresh(body["refresh_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
    assert_eq!(
        app.login("change@example.com", PASSWORD).await.status(),
        401
    );
    access_token(&app, "change@example.com", NEW_PASSWORD).await;
    smtp.wait_for("change@example.com", "Your password was changed")
        .await;
    // Without a bearer token: 401.
    let resp = app
        .post("/auth/password/change")
        .json(&json!({"current_password": NEW_PASSWORD, "new_password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn registration_mails_a_verification_link_and_login_can_wait_for_it() {
    let smtp = SmtpServer::start().await;
    let app = app_with_mail(&smtp, &[("REQUIRE_EMAIL_VERIFICATION", "true")]).await;
    let (status, body) = app
        .post_json(
            "/auth/register",
            json!({"email": "new@example.com", "password": PASSWORD, "first_name": "Grace"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(body.get("access_token").is_none());
    assert_eq!(body["user"]["email_verified"], false);
    let detail = expect_error(app.login("new@example.com", PASSWORD).await, 403).await;
    assert!(detail.starts_with("Email address not verified"), "{detail}");
    // The OAuth2 token endpoint refuses alike, in RFC 6749's terms.
    let resp = app
        .post("/auth/token")
        .form(&[
            ("grant_type", "password"),
            ("username", "new@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    let (status, body) = json(resp).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    let mail = smtp
        .wait_for("new@example.com", "Confirm your email address")
        .await;
    assert!(mail.text.starts_with("Hello Grace,"), "{}", mail.text);
    assert!(
        mail.message_id.starts_with("outbox-"),
        "{}",
        mail.message_id
    );
    let token = mail.link_token();
    let (status, user) = app
        .post_json("/auth/email/verify", json!({ "token": token }))
        .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["email_verified"], true);
    access_token(&app, "new@example.com", PASSWORD).await;
    let (status, _) = app
        .post_json("/auth/email/verify", json!({ "token": token }))
        .await;
    assert_eq!(status, 400, "single use");

    // A new link on request; nothing for a verified or unknown address.
    app.post_json(
        "/auth/register",
        json!({"email": "late@example.com", "password": PASSWORD}),
    )
    .await;
    for email in ["late@example.com", "new@example.com", "ghost@example.com"] {
        let (status, _) = app
            .post_json("/auth/email/verify/request", json!({ "email": email }))
            .await;
        assert_eq!(status, 202);
    }
    smtp.wait_for_nth("late@example.com", "Confirm your email address", 2)
        .await;
    assert_eq!(
        app.count_where(
            "platform_mail_outbox",
            "kind = 'verify_email' AND outcome = 'no_account'"
        )
        .await,
        2
    );
    // An admin can mark a user verified.
    let admin = app.make_admin().await;
    let late_id = user_id(&app, "late@example.com").await;
    let (status, body) = json(
        app.patch(&format!("/auth/users/{late_id}"))
            .bearer_auth(&admin)
            .json(&json!({"email_verified": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, &body["email_verified"]), (200, &json!(true)));
    access_token(&app, "late@example.com", PASSWORD).await;
}

async fn user_id(app: &TestApp, email: &str) -> i64 {
    use sea_orm::{ConnectionTrait, Statement};
    let row = app
        .db
        .query_one_raw(Statement::from_string(
            app.db.get_database_backend(),
            format!("SELECT id FROM platform_users WHERE email = '{email}'"),
        ))
        .await
        .unwrap()
        .unwrap();
    i64::from(row.try_get::<i32>("", "id").unwrap())
}

#[tokio::test]
async fn existing_users_count_as_verified_and_login_is_unchanged_by_default() {
    let app = spawn_app().await;
    let body = app.register("plain@example.com", PASSWORD).await;
    assert_eq!(body["user"]["email_verified"], false);
    // Verification is not required by default: login works.
    access_token(&app, "plain@example.com", PASSWORD).await;
    // A row written before the column existed (as the original wrote it).
    app.execute(
        "INSERT INTO platform_users (email, password_hash, is_active, created_at, updated_at, meta_data, role) \
         VALUES ('old@example.com', 'x', true, '2024-01-01 00:00:00', '2024-01-01 00:00:00', '{}', 'user')",
    )
    .await;
    assert_eq!(
        app.count_where(
            "platform_users",
            "email = 'old@example.com' AND email_verified = true"
        )
        .await,
        1
    );
    // Without SMTP_URL outside production, mails go to the log.
    for _ in 0..100 {
        if app
            .count_where("platform_mail_outbox", "outcome = 'logged'")
            .await
            == 1
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the verification mail was not logged");
}

#[tokio::test]
async fn email_change_waits_for_confirmation_and_notifies_the_old_address() {
    let smtp = SmtpServer::start().await;
    let app = app_with_mail(&smtp, &[]).await;
    app.register("before@example.com", PASSWORD).await;
    app.register("taken@example.com", PASSWORD).await;
    let token = access_token(&app, "before@example.com", PASSWORD).await;
    let change = |password: &str, new_email: &str| {
        app.post("/auth/email/change")
            .bearer_auth(&token)
            .json(&json!({"password": password, "new_email": new_email}))
            .send()
    };
    expect_error(
        change("wrong password", "after@example.com").await.unwrap(),
        400,
    )
    .await;
    expect_error(change(PASSWORD, "taken@example.com").await.unwrap(), 409).await;
    expect_error(change(PASSWORD, "before@example.com").await.unwrap(), 422).await;
    expect_error(change(PASSWORD, "no-at-sign").await.unwrap(), 422).await;

    assert_eq!(
        change(PASSWORD, "After@Example.com")
            .await
            .unwrap()
            .status(),
        202
    );
    let mail = smtp
        .wait_for("after@example.com", "Confirm your new email address")
        .await;
    assert!(
        mail.text.contains("(now before@example.com)"),
        "{}",
        mail.text
    );
    // Nothing changes until the link is followed.
    access_token(&app, "before@example.com", PASSWORD).await;
    let link = mail.link_token();
    let (status, user) = app
        .post_json("/auth/email/change/confirm", json!({ "token": link }))
        .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["email"], "after@example.com");
    assert_eq!(user["email_verified"], true);
    let notice = smtp
        .wait_for(
            "before@example.com",
            "email address of your account was changed",
        )
        .await;
    assert!(
        notice.text.contains("to after@example.com"),
        "{}",
        notice.text
    );
    assert_eq!(
        app.login("before@example.com", PASSWORD).await.status(),
        401
    );
    access_token(&app, "after@example.com", PASSWORD).await;
    let (status, _) = app
        .post_json("/auth/email/change/confirm", json!({ "token": link }))
        .await;
    assert_eq!(status, 400, "single use");
    // The profile of the existing session shows the new address.
    let (_, profile) = json(
        app.get("/auth/profile")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(profile["email"], "after@example.com");

    // An address taken between request and confirmation: 409, nothing changes.
    let token = access_token(&app, "after@example.com", PASSWORD).await;
    let resp = app
        .post("/auth/email/change")
        .bearer_auth(&token)
        .json(&json!({"password": PASSWORD, "new_email": "race@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let link = smtp
        .wait_for("race@example.com", "Confirm your new email address")
        .await
        .link_token();
    app.register("race@example.com", PASSWORD).await;
    let (status, body) = app
        .post_json("/auth/email/change/confirm", json!({ "token": link }))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        app.count_where("platform_users", "email = 'after@example.com'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_mail_requested_while_smtp_is_down_arrives_once_after_smtp_and_a_restart() {
    let smtp = SmtpServer::start().await;
    let app = app_with_mail(&smtp, &[]).await;
    app.register("outage@example.com", PASSWORD).await;
    smtp.wait_for("outage@example.com", "Confirm your email address")
        .await;
    smtp.stop();

    let started = Instant::now();
    let (status, _) = forgot(&app, "outage@example.com").await;
    assert_eq!(status, 202);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at once, not after SMTP: {:?}",
        started.elapsed()
    );
    // Attempts fail while SMTP is away; the mail stays pending.
    for _ in 0..100 {
        if app
            .count_where(
                "platform_mail_outbox",
                "kind = 'password_reset' AND sent_at IS NULL AND attempts >= 1",
            )
            .await
            == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.count_where(
            "platform_mail_outbox",
            "kind = 'password_reset' AND sent_at IS NULL AND attempts >= 1 AND last_error IS NOT NULL",
        )
        .await,
        1
    );

    // The server restarts (a new process on the same database), then SMTP returns.
    let env = app.env.clone();
    app.stop(true).await;
    let overrides: Vec<(&str, &str)> = ["SMTP_URL", "MAIL_RETRY_BASE", "MAIL_RETRY_MAX"]
        .iter()
        .map(|k| (*k, env[*k].as_str()))
        .collect();
    let restarted = spawn_on(Backend::share(&env), &overrides).await;
    smtp.resume().await;
    let mail = smtp
        .wait_for("outage@example.com", "Reset your password")
        .await;
    // Still a working link, and sent exactly once.
    assert_eq!(
        reset(&restarted, &mail.link_token(), NEW_PASSWORD)
            .await
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        smtp.mails_to("outage@example.com")
            .iter()
            .filter(|m| m.subject == "Reset your password")
            .count(),
        1
    );
    assert_eq!(
        restarted
            .count_where(
                "platform_mail_outbox",
                "kind = 'password_reset' AND outcome = 'sent' AND attempts >= 2"
            )
            .await,
        1
    );
    drop(app);
}

#[tokio::test]
async fn allow_listed_meta_data_keys_become_token_claims() {
    let app = spawn_app_with(&[("JWT_CUSTOM_CLAIMS", "tenant,plan")]).await;
    let admin = app.make_admin().await;
    app.register("claims@example.com", PASSWORD).await;
    let id = user_id(&app, "claims@example.com").await;
    let patch = |body: Value| {
        app.patch(&format!("/auth/users/{id}"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    expect_error(patch(json!({"meta_data": [1, 2]})).await.unwrap(), 422).await;
    // Found by the spec fuzzer: Postgres refuses NUL inside json.
    let detail = expect_error(
        patch(json!({"meta_data": {"k": "a\u{0}b"}})).await.unwrap(),
        422,
    )
    .await;
    assert_eq!(detail, "meta_data must not contain NUL characters");
    let big = "x".repeat(17 * 1024);
    expect_error(
        patch(json!({"meta_data": {"big": big}})).await.unwrap(),
        422,
    )
    .await;
    let (status, body) = json(
        patch(json!({"meta_data": {"tenant": "acme", "plan": {"tier": "pro"}, "secret": "s"}}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["meta_data"]["tenant"], "acme");

    let token = access_token(&app, "claims@example.com", PASSWORD).await;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["plan"], json!({"tier": "pro"}));
    assert!(claims.get("secret").is_none(), "{claims}");
    assert_eq!(claims["sub"], id.to_string(), "the server's claims stay");
    assert_eq!(app.verify(&token).await.status(), 200);
}

#[tokio::test]
async fn replicas_sending_from_one_outbox_send_each_mail_once() {
    let smtp = SmtpServer::start().await;
    let app = app_with_mail(&smtp, &[("MAIL_IP_MAX", "100")]).await;
    let url = smtp.url();
    let other = spawn_on(
        Backend::share(&app.env),
        &[("SMTP_URL", url.as_str()), ("MAIL_IP_MAX", "100")],
    )
    .await;
    let emails: Vec<String> = (0..8).map(|i| format!("once{i}@example.com")).collect();
    for email in &emails {
        app.register(email, PASSWORD).await;
    }
    for (i, email) in emails.iter().enumerate() {
        let replica = if i % 2 == 0 { &app } else { &other };
        assert_eq!(forgot(replica, email).await.0, 202);
    }
    for email in &emails {
        smtp.wait_for(email, "Reset your password").await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let resets: Vec<ReceivedMail> = smtp
        .mails()
        .into_iter()
        .filter(|m| m.subject == "Reset your password")
        .collect();
    assert_eq!(resets.len(), emails.len());
    let mut ids: Vec<&str> = resets.iter().map(|m| m.message_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), emails.len());
}

#[tokio::test]
async fn mail_templates_can_be_replaced_from_files() {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("password_reset.subject"),
        "Acme: new password for {{ email }}",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("password_reset.html"),
        "<p>Hi {{ first_name }}, <a href=\"{{ link }}\">reset</a></p>",
    )
    .unwrap();
    let path = dir.path().display().to_string();
    let app = app_with_mail(&smtp, &[("MAIL_TEMPLATE_DIR", path.as_str())]).await;
    app.register("tpl@example.com", PASSWORD).await;
    forgot(&app, "tpl@example.com").await;
    let mail = smtp
        .wait_for("tpl@example.com", "Acme: new password for tpl@example.com")
        .await;
    assert!(
        mail.html.starts_with("<p>Hi Ada, <a href="),
        "{}",
        mail.html
    );
    // The text part kept the compiled-in template.
    assert!(
        mail.text.contains("Someone asked to reset"),
        "{}",
        mail.text
    );
    // Values are escaped in HTML.
    let (status, _) = app
        .post_json(
            "/auth/register",
            json!({"email": "x@example.com", "password": PASSWORD, "first_name": "<b>x</b>"}),
        )
        .await;
    assert_eq!(status, 201);
    forgot(&app, "x@example.com").await;
    let mail = smtp.wait_for("x@example.com", "Acme: new password").await;
    assert!(
        mail.html.contains("Hi &lt;b&gt;x&lt;&#x2f;b&gt;,"),
        "{}",
        mail.html
    );

    // A template that does not compile stops the start, naming the file.
    std::fs::write(dir.path().join("verify_email.txt"), "{% if %}").unwrap();
    let mut env: std::collections::HashMap<String, String> = app.env.clone();
    env.insert("MAIL_TEMPLATE_DIR".into(), path);
    let settings = platform_server::config::Settings::load_with(Some(env)).unwrap();
    let err = platform_server::startup::Application::build(settings)
        .await
        .err()
        .expect("a broken template is refused");
    assert!(format!("{err:#}").contains("verify_email.txt"), "{err:#}");
}
