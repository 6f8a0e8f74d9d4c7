//! Second factors end to end: TOTP enrolment and activation, the two-step
//! login (at /auth/login and the OAuth2 token endpoint), replayed codes,
//! single-use recovery codes and tickets, `amr`/`acr`, and the admin policy.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use totp_rs::{Algorithm, Secret, TOTP};

use crate::helpers::*;

const PASSWORD: &str = "correct horse battery";

/// The code of a time step (30 s) relative to now.
fn code(secret: &str, steps_from_now: i64) -> String {
    let totp = TOTP::new_unchecked(
        Algorithm::SHA1,
        6,
        1,
        30,
        Secret::Encoded(secret.to_string()).to_bytes().unwrap(),
        None,
        "test".into(),
    );
    let now = chrono::Utc::now().timestamp();
    totp.generate((now + steps_from_now * 30) as u64)
}

/// Keeps a test off a step boundary, so "this step" stays the same step.
async fn away_from_step_end() {
    let into = chrono::Utc::now().timestamp() % 30;
    if into >= 25 {
        tokio::time::sleep(Duration::from_secs((31 - into) as u64)).await;
    }
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

async fn login_body(app: &TestApp, email: &str) -> Value {
    // make_admin's account has a password of its own.
    let password = if email == "root@example.com" {
        "admin-password"
    } else {
        PASSWORD
    };
    let (status, body) = json(app.login(email, password).await).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Enrols and activates TOTP for the holder of `token` (with the previous
/// step's code, so this step's stays free); answers the secret and codes.
async fn activate_totp(app: &TestApp, token: &str) -> (String, Vec<String>) {
    let (status, enrol) = json(
        app.post("/auth/mfa/totp")
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{enrol}");
    let secret = enrol["secret"].as_str().unwrap().to_string();
    let (status, body) = json(
        app.post("/auth/mfa/totp/activate")
            .bearer_auth(token)
            .json(&json!({"code": code(&secret, -1)}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let codes = body["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    (secret, codes)
}

async fn redeem(app: &TestApp, ticket: &str, field: &str, value: &str) -> (u16, Value) {
    app.post_json(
        "/auth/mfa/verify",
        json!({"mfa_ticket": ticket, field: value}),
    )
    .await
}

#[tokio::test]
async fn totp_enrolment_and_two_step_login_refuse_replayed_codes() {
    away_from_step_end().await;
    let app = spawn_app().await;
    let body = app.register("totp@example.com", PASSWORD).await;
    let token = body["access_token"].as_str().unwrap().to_string();

    let (status, enrol) = json(
        app.post("/auth/mfa/totp")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let secret = enrol["secret"].as_str().unwrap();
    let uri = enrol["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/platform-server:totp%40example.com?secret="),
        "{uri}"
    );
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert!(enrol["qr_svg"].as_str().unwrap().contains("<svg"));
    // Not in force before activation: login still answers tokens.
    assert!(login_body(&app, "totp@example.com").await["access_token"].is_string());
    let activate = |c: String| {
        app.post("/auth/mfa/totp/activate")
            .bearer_auth(&token)
            .json(&json!({ "code": c }))
            .send()
    };
    let detail = expect_error(activate("000000".into()).await.unwrap(), 400).await;
    assert_eq!(detail, "Invalid or already used code");
    let (status, body) = json(activate(code(secret, -1)).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recovery_codes"].as_array().unwrap().len(), 10);
    // Activated once: enrolling again is refused.
    let resp = app
        .post("/auth/mfa/totp")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);

    // A correct password now answers a ticket, not tokens.
    let step1 = login_body(&app, "totp@example.com").await;
    assert_eq!(step1["mfa_required"], true);
    assert!(step1.get("access_token").is_none(), "{step1}");
    assert_eq!(step1["methods"], json!(["totp", "recovery_code"]));
    let ticket = step1["mfa_ticket"].as_str().unwrap();
    // The activation's step is spent.
    let (status, _) = redeem(&app, ticket, "totp_code", &code(secret, -1)).await;
    assert_eq!(status, 400);
    let (status, tokens) = redeem(&app, ticket, "totp_code", &code(secret, 0)).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let c = claims(access);
    assert_eq!(c["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(c["acr"], "aal2");
    let resp = app.verify(access).await;
    assert_eq!(resp.headers()["x-user-acr"], "aal2");
    assert_eq!(resp.headers()["x-user-amr"], "pwd,otp,mfa");
    // The ticket is spent, and this step's code too.
    let (status, _) = redeem(&app, ticket, "totp_code", &code(secret, 1)).await;
    assert_eq!(status, 401);
    let ticket = login_body(&app, "totp@example.com").await["mfa_ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = redeem(&app, &ticket, "totp_code", &code(secret, 0)).await;
    assert_eq!(status, 400, "a replayed code is refused");
    let (status, _) = redeem(&app, &ticket, "totp_code", &code(secret, 1)).await;
    assert_eq!(status, 200, "the next step's code works");

    // A refreshed token keeps how the session was established.
    let (status, refreshed) =
        json(app.refresh(tokens["refresh_token"].as_str().unwrap()).await).await;
    assert_eq!(status, 200);
    assert_eq!(
        claims(refreshed["access_token"].as_str().unwrap())["acr"],
        "aal2"
    );
    // Neither or both fields: 422.
    let (status, _) = app
        .post_json("/auth/mfa/verify", json!({"mfa_ticket": ticket}))
        .await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn recovery_codes_and_tickets_work_once_and_tickets_survive_few_failures() {
    away_from_step_end().await;
    // Wrong codes count as failed logins; this test makes several on purpose.
    let app = spawn_app_with(&[("LOGIN_MAX_FAILURES", "20")]).await;
    let token = app.register("rc@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, codes) = activate_totp(&app, &token).await;
    let ticket = login_body(&app, "rc@example.com").await["mfa_ticket"]
        .as_str()
        .unwrap()
        .to_string();
    // Case, spaces and dashes do not matter.
    let typed = codes[0].to_uppercase().replace('-', " ");
    let (status, tokens) = redeem(&app, &ticket, "recovery_code", &typed).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(
        claims(tokens["access_token"].as_str().unwrap())["acr"],
        "aal2"
    );
    let ticket = login_body(&app, "rc@example.com").await["mfa_ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = redeem(&app, &ticket, "recovery_code", &codes[0]).await;
    assert_eq!(status, 400, "a recovery code works once");
    let (_, status_body) = json(
        app.get("/auth/mfa")
            .bearer_auth(tokens["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status_body["recovery_codes_left"], 9);
    assert_eq!(status_body["totp"], true);
    // Five wrong codes spend a ticket, even for a right one after them.
    for _ in 0..4 {
        let (status, _) = redeem(&app, &ticket, "recovery_code", "wrong-code1").await;
        assert_eq!(status, 400);
    }
    let (status, _) = redeem(&app, &ticket, "recovery_code", &codes[1]).await;
    assert_eq!(status, 401, "the ticket is spent");
    let (status, _) = redeem(&app, "not-a-ticket", "recovery_code", &codes[1]).await;
    assert_eq!(status, 401);

    // New codes need a session established with a second factor.
    let resp = app
        .post("/auth/mfa/recovery-codes")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let (status, fresh) = json(
        app.post("/auth/mfa/recovery-codes")
            .bearer_auth(tokens["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let ticket = login_body(&app, "rc@example.com").await["mfa_ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = redeem(&app, &ticket, "recovery_code", &codes[2]).await;
    assert_eq!(status, 400, "old codes stop working");
    let (status, _) = redeem(
        &app,
        &ticket,
        "recovery_code",
        fresh["recovery_codes"][0].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_token_endpoint_answers_mfa_required_with_a_ticket() {
    away_from_step_end().await;
    let app = spawn_app().await;
    let token = app.register("oauth-mfa@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (secret, _) = activate_totp(&app, &token).await;
    let resp = app
        .post("/auth/token")
        .form(&[
            ("grant_type", "password"),
            ("username", "oauth-mfa@example.com"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    let (status, body) = json(resp).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "mfa_required");
    let (status, tokens) = redeem(
        &app,
        body["mfa_ticket"].as_str().unwrap(),
        "totp_code",
        &code(&secret, 0),
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
}

#[tokio::test]
async fn users_without_a_factor_log_in_as_before() {
    let app = spawn_app().await;
    app.register("plain-mfa@example.com", PASSWORD).await;
    let body = login_body(&app, "plain-mfa@example.com").await;
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "access_token",
            "expires_in",
            "refresh_token",
            "token_type",
            "user"
        ]
    );
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(
        (c["amr"].clone(), c["acr"].clone()),
        (json!(["pwd"]), json!("aal1"))
    );
    let (status, s) = json(
        app.get("/auth/mfa")
            .bearer_auth(body["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(s["totp"], false);
    assert_eq!(s["session_acr"], "aal1");
}

#[tokio::test]
async fn admin_endpoints_need_a_second_factor_where_the_policy_says_so() {
    away_from_step_end().await;
    let app = spawn_app_with(&[("ADMIN_REQUIRE_MFA", "true")]).await;
    let admin = app.make_admin().await;
    let resp = app
        .get("/auth/users")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let detail = expect_error(resp, 403).await;
    assert!(
        detail.starts_with("Admin endpoints need a session established with a second factor"),
        "{detail}"
    );
    let resp = app
        .get("/admin/api-keys")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    let (secret, _) = activate_totp(&app, &admin).await;
    let ticket = login_body(&app, "root@example.com").await["mfa_ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, tokens) = redeem(&app, &ticket, "totp_code", &code(&secret, 0)).await;
    assert_eq!(status, 200);
    let strong = tokens["access_token"].as_str().unwrap();
    let resp = app
        .get("/auth/users")
        .bearer_auth(strong)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // An admin removes a user's factors (a lost phone); the user logs in
    // with the password alone again.
    let user = app.register("lost@example.com", PASSWORD).await;
    let user_token = user["access_token"].as_str().unwrap().to_string();
    let user_id = user["user"]["id"].as_i64().unwrap();
    activate_totp(&app, &user_token).await;
    assert_eq!(
        login_body(&app, "lost@example.com").await["mfa_required"],
        true
    );
    // Removing one's own factor needs a session established with it.
    let resp = app
        .delete("/auth/mfa/totp")
        .bearer_auth(&user_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = app
        .delete(&format!("/auth/users/{user_id}/mfa"))
        .bearer_auth(strong)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(login_body(&app, "lost@example.com").await["access_token"].is_string());
    let resp = app
        .delete("/auth/users/999999/mfa")
        .bearer_auth(strong)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // The admin removes their own factor from the strong session.
    let resp = app
        .delete("/auth/mfa/totp")
        .bearer_auth(strong)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(login_body(&app, "root@example.com").await["access_token"].is_string());
}

#[tokio::test]
async fn wrong_second_factor_codes_are_throttled_like_logins() {
    away_from_step_end().await;
    let app = spawn_app().await;
    let token = app.register("slow@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (secret, _) = activate_totp(&app, &token).await;
    let mut statuses = vec![];
    // Five failures per email (the default), over fresh tickets.
    for _ in 0..3 {
        let ticket = login_body(&app, "slow@example.com").await["mfa_ticket"]
            .as_str()
            .unwrap()
            .to_string();
        for _ in 0..2 {
            statuses.push(redeem(&app, &ticket, "totp_code", "123456").await.0);
        }
    }
    // A correct password in between does not reset the count.
    assert_eq!(statuses, [400, 400, 400, 400, 400, 429]);
    let ticket = login_body(&app, "slow@example.com").await["mfa_ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = redeem(&app, &ticket, "totp_code", &code(&secret, 0)).await;
    assert_eq!(status, 429, "even a right code waits for the window");
}

#[tokio::test]
async fn passkey_endpoints_refuse_bad_input_without_a_browser() {
    // The ceremonies themselves run in Chromium (.ci/passkeys.py).
    let app = spawn_app().await;
    let body = app.register("pk@example.com", PASSWORD).await;
    let token = body["access_token"].as_str().unwrap().to_string();
    let (status, start) = json(
        app.post("/auth/passkeys/register/start")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{start}");
    let options = &start["options"]["publicKey"];
    assert_eq!(options["rp"]["id"], "localhost");
    assert_eq!(options["user"]["name"], "pk@example.com");
    assert_eq!(options["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(
        options["authenticatorSelection"]["userVerification"],
        "required"
    );
    let ceremony = start["ceremony_id"].as_str().unwrap();
    let finish = |body: Value| {
        app.post("/auth/passkeys/register/finish")
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let resp = finish(json!({"ceremony_id": ceremony, "credential": {"id": 1}}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let forged = json!({
        "id": "AAAA", "rawId": "AAAA", "type": "public-key",
        "response": {"attestationObject": "AAAA", "clientDataJSON": "AAAA"}
    });
    let resp = finish(json!({"ceremony_id": ceremony, "credential": forged}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "a forged credential does not verify");
    let resp = finish(json!({"ceremony_id": ceremony, "credential": forged}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "the ceremony was spent by the attempt");

    let (status, login) = app.post_json("/auth/passkeys/login/start", json!({})).await;
    assert_eq!(status, 200);
    assert!(login["options"]["publicKey"]["challenge"].is_string());
    assert!(login["options"].get("mediation").is_none());
    let assertion = json!({
        "id": "AAAA", "rawId": "AAAA", "type": "public-key",
        "response": {"authenticatorData": "AAAA", "clientDataJSON": "AAAA", "signature": "AAAA"}
    });
    let (status, _) = app
        .post_json(
            "/auth/passkeys/login/finish",
            json!({"ceremony_id": "00000000-0000-0000-0000-000000000000", "credential": assertion}),
        )
        .await;
    assert_eq!(status, 401, "an unknown ceremony");
    let ceremony = login["ceremony_id"].as_str().unwrap();
    let (status, _) = app
        .post_json(
            "/auth/passkeys/login/finish",
            json!({"ceremony_id": ceremony, "credential": assertion}),
        )
        .await;
    assert_eq!(status, 400, "an assertion naming no user");
    let (status, _) = app
        .post_json(
            "/auth/passkeys/login/finish",
            json!({"ceremony_id": ceremony, "credential": forged}),
        )
        .await;
    assert_eq!(status, 422, "an attestation is no assertion");
    let (status, _) = app
        .post_json("/auth/mfa/passkey/start", json!({"mfa_ticket": "nope"}))
        .await;
    assert_eq!(status, 401);
    let resp = app
        .patch("/auth/passkeys/12345")
        .bearer_auth(&token)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let (status, list) = json(
        app.get("/auth/passkeys")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, list), (200, json!([])));
}
