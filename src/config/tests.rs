use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn durations_use_the_original_units() {
    assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
    assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1_800)));
    assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
    assert_eq!(parse_duration("3600"), Some(Duration::from_secs(3_600)));
    assert_eq!(parse_duration("0"), None);
    assert_eq!(parse_duration("1w"), None);
    assert_eq!(parse_duration("h"), None);
}

#[test]
fn defaults_load_with_an_empty_environment() {
    let s = Settings::load_with(Some(env(&[]))).unwrap();
    assert_eq!(s.http.port, 8007);
    assert_eq!(s.http.bind_address.to_string(), "0.0.0.0");
    assert_eq!(s.http.metrics_port, 9464);
    assert!(s.api_keys.required);
    assert!(s.database.url.is_none());
    assert_eq!(s.auth.jwt.expires_in, Duration::from_secs(86_400));
    assert_eq!(s.http.background_threads, 1);
}

#[test]
fn original_environment_names_override() {
    let s = Settings::load_with(Some(env(&[
        ("PORT", "9000"),
        ("JWT_EXPIRES_IN", "15m"),
        ("REQUIRE_API_KEY", "false"),
        ("DATABASE_URL", "postgresql://u:p@h/db"),
        ("CORS_ORIGINS", "http://a.example, https://b.example/"),
        ("REDIS_URL", "redis://localhost:6379"),
        ("REDIS_PASSWORD", "s3cr@t"),
    ])))
    .unwrap();
    assert_eq!(s.http.port, 9000);
    assert_eq!(s.auth.jwt.expires_in, Duration::from_secs(900));
    assert!(!s.api_keys.required);
    assert_eq!(
        s.database.url.as_ref().unwrap().expose_secret(),
        "postgres://u:p@h/db"
    );
    assert_eq!(
        s.http.cors_origins.unwrap(),
        vec!["http://a.example", "https://b.example"]
    );
    assert_eq!(
        s.cache.redis_url.as_ref().unwrap().expose_secret(),
        "redis://:s3cr%40t@localhost:6379"
    );
}

#[test]
fn redis_cluster_nodes_take_the_password_and_exclude_redis_url() {
    let s = Settings::load_with(Some(env(&[
        (
            "REDIS_CLUSTER_NODES",
            "redis://10.0.0.1:7000, redis://10.0.0.2:7000",
        ),
        ("REDIS_PASSWORD", "pw"),
    ])))
    .unwrap();
    let nodes: Vec<&str> = s
        .cache
        .redis_cluster_nodes
        .iter()
        .map(|n| n.expose_secret())
        .collect();
    assert_eq!(
        nodes,
        ["redis://:pw@10.0.0.1:7000", "redis://:pw@10.0.0.2:7000"]
    );
    assert!(s.cache.redis_url.is_none());
    let err = Settings::load_with(Some(env(&[
        ("REDIS_CLUSTER_NODES", "redis://10.0.0.1:7000"),
        ("REDIS_URL", "redis://10.0.0.9:6379"),
    ])))
    .unwrap_err();
    assert_eq!(err.key, "REDIS_CLUSTER_NODES");
    let err =
        Settings::load_with(Some(env(&[("REDIS_CLUSTER_NODES", "10.0.0.1:7000")]))).unwrap_err();
    assert_eq!(err.key, "REDIS_CLUSTER_NODES");
}

#[test]
fn bad_values_name_their_key() {
    let err = Settings::load_with(Some(env(&[("PORT", "eighty")]))).unwrap_err();
    assert!(err.to_string().contains("PORT"), "{err}");
    let err = Settings::load_with(Some(env(&[("JWT_EXPIRES_IN", "soon")]))).unwrap_err();
    assert_eq!(err.key, "JWT_EXPIRES_IN");
    let err = Settings::load_with(Some(env(&[("ENVIRONMENT", "staging")]))).unwrap_err();
    assert_eq!(err.key, "ENVIRONMENT");
    let err = Settings::load_with(Some(env(&[("TRUSTED_PROXIES", "10.0.0.0/33")]))).unwrap_err();
    assert_eq!(err.key, "TRUSTED_PROXIES");
    let err = Settings::load_with(Some(env(&[("BACKGROUND_THREADS", "0")]))).unwrap_err();
    assert_eq!(err.key, "BACKGROUND_THREADS");
    let s = Settings::load_with(Some(env(&[("BACKGROUND_THREADS", "3")]))).unwrap();
    assert_eq!(s.http.background_threads, 3);
}

#[test]
fn prices_come_from_model_prices_or_the_list() {
    let s = Settings::load_with(Some(env(&[(
        "MODEL_PRICES",
        r#"[{"model":"m1","input_per_million":2.5,"output_per_million":10,"effective_from":"2025-01-01"}]"#,
    )])))
    .unwrap();
    let list = s.jobs.prices;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].input_per_million, 2.5);
    let err =
        Settings::load_with(Some(env(&[("MODEL_PRICES", "[{\"model\":\"\"}]")]))).unwrap_err();
    assert_eq!(err.key, "MODEL_PRICES");
}

#[test]
fn production_refuses_defaults() {
    let err = Settings::load_with(Some(env(&[("ENVIRONMENT", "production")]))).unwrap_err();
    assert_eq!(err.key, "JWT_SECRET");
    let err = Settings::load_with(Some(env(&[
        ("ENVIRONMENT", "production"),
        ("JWT_SECRET", "short-secret"),
    ])))
    .unwrap_err();
    assert_eq!(err.key, "JWT_SECRET");
    let long = "x".repeat(40);
    let err = Settings::load_with(Some(env(&[
        ("ENVIRONMENT", "production"),
        ("JWT_SECRET", &long),
    ])))
    .unwrap_err();
    assert_eq!(err.key, "API_KEY");
    let ok = Settings::load_with(Some(env(&[
        ("ENVIRONMENT", "production"),
        ("JWT_SECRET", &long),
        ("API_KEY", "a-real-key-0123456789"),
    ])))
    .unwrap();
    assert_eq!(ok.log.format, LogFormat::Json);
}

#[test]
fn debug_output_never_shows_a_secret() {
    let s = Settings::load_with(Some(env(&[
        ("JWT_SECRET", "jwt-secret-value-0123456789"),
        ("API_KEYS", "key-one-value,key-two-value"),
        ("REDIS_URL", "redis://localhost:6379"),
        ("REDIS_PASSWORD", "redis-password-value"),
        ("DATABASE_URL", "postgres://u:db-password-value@h/db"),
        ("ADMIN_EMAIL", "root@example.com"),
        ("ADMIN_PASSWORD", "admin-password-value"),
    ])))
    .unwrap();
    let text = format!("{s:?}");
    for secret in [
        "jwt-secret-value",
        "key-one-value",
        "key-two-value",
        "redis-password-value",
        "db-password-value",
        "admin-password-value",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(text.contains("REDACTED"));
    assert_eq!(s.api_keys.keys.len(), 2);
}

#[test]
fn mail_settings_are_checked_and_links_default_to_the_public_url() {
    let s = Settings::load_with(Some(env(&[(
        "PUBLIC_BASE_URL",
        "https://app.example.com/",
    )])))
    .unwrap();
    assert_eq!(s.mail.delivery, MailDelivery::Log);
    assert_eq!(
        s.mail.links.reset,
        "https://app.example.com/reset-password?token={token}"
    );
    assert_eq!(s.auth.accounts.reset_ttl, Duration::from_secs(3600));
    let s = Settings::load_with(Some(env(&[(
        "SMTP_URL",
        "smtp://user:pw@mail.example.com:587?tls=required",
    )])))
    .unwrap();
    assert_eq!(s.mail.delivery, MailDelivery::Smtp);
    assert!(
        !format!("{s:?}").contains("pw@"),
        "the SMTP password never prints"
    );
    for (key, value) in [
        ("SMTP_URL", "http://mail.example.com"),
        ("MAIL_FROM", "not an address"),
        ("MAIL_RESET_URL", "https://app.example.com/reset"),
        ("PUBLIC_BASE_URL", "ftp://example.com"),
        ("JWT_CUSTOM_CLAIMS", "tenant,sub"),
        ("JWT_CUSTOM_CLAIMS", "with space"),
        ("MAIL_IP_MAX", "0"),
    ] {
        let err = Settings::load_with(Some(env(&[(key, value)]))).unwrap_err();
        assert_eq!(err.key, key, "{value}: {err}");
    }
}

#[test]
fn production_needs_smtp_to_require_verification_and_never_logs_mail() {
    let base = [
        ("ENVIRONMENT", "production"),
        (
            "JWT_SECRET",
            "a-production-secret-that-is-long-enough-to-pass",
        ),
        ("API_KEY", "a-real-key"),
    ];
    let s = Settings::load_with(Some(env(&base))).unwrap();
    assert_eq!(s.mail.delivery, MailDelivery::Discard);
    let mut required = base.to_vec();
    required.push(("REQUIRE_EMAIL_VERIFICATION", "true"));
    let err = Settings::load_with(Some(env(&required))).unwrap_err();
    assert_eq!(err.key, "SMTP_URL");
    required.push(("SMTP_URL", "smtps://mail.example.com"));
    assert!(Settings::load_with(Some(env(&required))).is_ok());
}

#[test]
fn the_passkey_relying_party_follows_the_public_url_unless_set() {
    let s = Settings::load_with(Some(env(&[]))).unwrap();
    assert_eq!(s.auth.mfa.webauthn_rp_id, "localhost");
    let s =
        Settings::load_with(Some(env(&[("PUBLIC_BASE_URL", "https://app.example.com")]))).unwrap();
    assert_eq!(s.auth.mfa.webauthn_rp_id, "app.example.com");
    let s = Settings::load_with(Some(env(&[
        ("WEBAUTHN_RP_ID", "example.com"),
        (
            "WEBAUTHN_ORIGINS",
            "https://app.example.com, https://admin.example.com",
        ),
    ])))
    .unwrap();
    assert_eq!(s.auth.mfa.webauthn_origins.len(), 2);
    let err = Settings::load_with(Some(env(&[
        ("WEBAUTHN_RP_ID", "other.org"),
        ("WEBAUTHN_ORIGINS", "https://app.example.com"),
    ])))
    .unwrap_err();
    assert_eq!(err.key, "WEBAUTHN_RP_ID");
}
