//! Settings: compiled-in defaults, then `config/<file>.toml` on disk, then
//! `CONFIG_FILE`, then environment variables named like the original service's.
//! The sources are read flat (every key is also its variable's name in
//! capitals), then parsed once into typed sections (`sections.rs`).

mod accounts;
mod analytics;
mod parse;
mod sections;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use accounts::{custom_claims, mail_settings, rp_id, webauthn_origins};
use parse::*;
pub use parse::{parse_duration, parse_instant, split_list};
pub use sections::*;

const EMBEDDED: &[(&str, &str)] = &[
    ("default", include_str!("../../config/default.toml")),
    ("development", include_str!("../../config/development.toml")),
    ("test", include_str!("../../config/test.toml")),
    ("production", include_str!("../../config/production.toml")),
];

/// The default JWT secret; production refuses it.
pub const DEFAULT_JWT_SECRET: &str = "dev-insecure-jwt-secret-change-me";
/// Well-known placeholders that production refuses as an API key.
const PLACEHOLDER_API_KEYS: &[&str] = &["your-secure-api-key", "changeme", "change-me"];

/// The layered sources as read: one flat key per environment variable.
#[derive(Debug, Deserialize)]
struct Raw {
    environment: String,
    log_level: String,
    log_format: String,
    bind_address: String,
    port: u16,
    metrics_port: u16,
    metrics_enabled: bool,
    shutdown_timeout: u64,
    json_body_limit: usize,
    body_idle_timeout: u64,
    body_timeout: u64,
    max_header_bytes: usize,
    workers: usize,
    background_threads: usize,

    api_key: SecretString,
    api_keys: SecretString,
    require_api_key: bool,

    jwt_secret: SecretString,
    jwt_algorithm: String,
    jwt_expires_in: String,
    jwt_issuer: String,

    database_url: SecretString,
    sqlite_path: String,
    database_max_connections: u32,
    database_acquire_timeout: u64,
    database_replica_urls: SecretString,
    database_replica_max_lag: f64,
    run_migrations: bool,

    redis_url: SecretString,
    redis_cluster_nodes: SecretString,
    redis_password: SecretString,
    redis_key_prefix: String,
    redis_pool_size: usize,

    cors_origins: String,
    trusted_proxies: String,

    password_min_length: usize,
    password_reject_guessable: bool,
    password_hash_rounds: u32,
    password_hash_concurrency: usize,

    login_max_failures: u32,
    login_ip_max_failures: u32,
    login_failure_window: u64,
    refresh_token_ttl: String,
    refresh_reuse_grace_seconds: u64,
    jwt_leeway: u64,
    jwt_private_key_file: String,
    jwt_key_id: String,

    admin_email: String,
    admin_password: SecretString,

    require_email_verification: bool,
    password_reset_ttl: String,
    email_verification_ttl: String,
    mail_max_per_email: u32,
    mail_ip_max: u32,
    mail_throttle_window: u64,
    jwt_custom_claims: String,
    mfa_issuer: String,
    mfa_ticket_ttl: u64,
    admin_require_mfa: bool,
    webauthn_rp_id: String,
    webauthn_origins: String,
    smtp_url: SecretString,
    mail_from: String,
    public_base_url: String,
    mail_verify_url: String,
    mail_reset_url: String,
    mail_email_change_url: String,
    mail_template_dir: String,
    mail_retry_base: u64,
    mail_retry_max: u64,

    analytics_retention_days: u32,
    metrics_batch_size: usize,
    analytics_batch_limit: usize,
    analytics_json_max_bytes: usize,
    json_max_keys: usize,
    json_max_items: usize,
    ingest_clock_skew: u64,
    ingest_queue_capacity: usize,
    ingest_max_batch_rows: usize,
    ingest_wait_timeout: u64,
    ingest_writers: usize,
    stream_buffer: usize,
    stream_max_per_caller: usize,
    stream_heartbeat: u64,
    usage_rollup_interval: u64,
    retention_interval: u64,
    partition_job_interval: u64,
    analytics_partition_interval: String,
    analytics_partitions_ahead: u32,
    pricing: Vec<PriceEntry>,
    model_prices: String,
}

/// A configuration problem, rendered as one line that names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_uppercase(),
        message: message.into(),
    }
}

/// Fails with `message` under `key` unless `ok`.
fn ensure(ok: bool, key: &str, message: &str) -> Result<(), ConfigError> {
    if ok { Ok(()) } else { Err(bad(key, message)) }
}

impl Settings {
    /// Loads from the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_with(None)
    }

    /// Loads with `env` standing in for the process environment (tests).
    pub fn load_with(env: Option<HashMap<String, String>>) -> Result<Self, ConfigError> {
        let lookup = |k: &str| -> Option<String> {
            match &env {
                Some(map) => map.get(k).cloned(),
                None => std::env::var(k).ok(),
            }
            .filter(|v| !v.trim().is_empty())
        };
        // Overlay files are named as given (`prod` has none of its own).
        let name = lookup("ENVIRONMENT")
            .unwrap_or_else(|| "development".into())
            .to_lowercase();
        parse_environment(&name)?;

        let mut builder = Config::builder()
            .add_source(File::from_str(embedded("default"), FileFormat::Toml))
            .add_source(File::from_str(embedded(&name), FileFormat::Toml))
            .add_source(File::with_name("config/default.toml").required(false))
            .add_source(File::with_name(&format!("config/{name}.toml")).required(false));
        if let Some(path) = lookup("CONFIG_FILE") {
            if !std::path::Path::new(&path).is_file() {
                return Err(bad("config_file", format!("no such file: {path}")));
            }
            builder = builder.add_source(File::with_name(&path).required(true));
        }
        let env_source = Environment::default()
            .ignore_empty(true)
            .try_parsing(false)
            .source(env.map(|m| m.into_iter().collect()));
        let raw: Raw = builder
            .add_source(env_source)
            .build()
            .and_then(Config::try_deserialize)
            .map_err(config_error)?;
        Settings::from_raw(raw)
    }

    /// Parses and checks every value once, so later code can rely on them.
    fn from_raw(r: Raw) -> Result<Self, ConfigError> {
        let environment = parse_environment(&r.environment)?;
        let production = environment == RunEnvironment::Production;

        let http = HttpSettings {
            bind_address: r
                .bind_address
                .parse::<IpAddr>()
                .map_err(|_| bad("bind_address", "must be an IP address"))?,
            port: r.port,
            metrics_port: r.metrics_port,
            metrics_enabled: r.metrics_enabled,
            shutdown_timeout: r.shutdown_timeout,
            body_limit: r.json_body_limit,
            body_idle_timeout: Duration::from_secs(r.body_idle_timeout),
            body_timeout: Duration::from_secs(r.body_timeout),
            max_header_bytes: r.max_header_bytes,
            workers: r.workers,
            background_threads: r.background_threads,
            cors_origins: cors_origins(&r.cors_origins)?,
            trusted_proxies: trusted_proxies(&r.trusted_proxies)?,
        };
        ensure(
            !(r.port == 0 && production),
            "port",
            "must not be 0 in production",
        )?;
        ensure(
            (1024..=64 * 1024 * 1024).contains(&r.json_body_limit),
            "json_body_limit",
            "must be between 1024 and 67108864 bytes",
        )?;
        ensure(
            (1..=256).contains(&r.background_threads),
            "background_threads",
            "must be between 1 and 256",
        )?;
        ensure(
            r.shutdown_timeout <= 3600,
            "shutdown_timeout",
            "must be at most 3600 seconds",
        )?;

        let algorithm = match r.jwt_algorithm.to_ascii_uppercase().as_str() {
            "HS256" => JwtAlgorithm::Hs256,
            "EDDSA" => JwtAlgorithm::EdDsa,
            "RS256" => JwtAlgorithm::Rs256,
            _ => return Err(bad("jwt_algorithm", "must be HS256, EdDSA or RS256")),
        };
        let private_key_file = Some(r.jwt_private_key_file.trim())
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        ensure(
            algorithm == JwtAlgorithm::Hs256 || private_key_file.is_some(),
            "jwt_private_key_file",
            "required when JWT_ALGORITHM is EdDSA or RS256",
        )?;
        ensure(
            r.jwt_leeway <= 30,
            "jwt_leeway",
            "must be at most 30 seconds",
        )?;
        ensure(
            r.refresh_reuse_grace_seconds <= 300,
            "refresh_reuse_grace_seconds",
            "must be at most 300",
        )?;
        ensure(
            r.login_max_failures > 0 && r.login_ip_max_failures >= r.login_max_failures,
            "login_ip_max_failures",
            "LOGIN_MAX_FAILURES must be at least 1 and LOGIN_IP_MAX_FAILURES at least as high",
        )?;
        ensure(
            r.login_failure_window > 0,
            "login_failure_window",
            "must be at least 1 second",
        )?;
        let admin_email = r.admin_email.trim().to_string();
        ensure(
            admin_email.is_empty() == r.admin_password.expose_secret().is_empty(),
            "admin_password",
            "ADMIN_EMAIL and ADMIN_PASSWORD go together",
        )?;
        let jwt_secret = r.jwt_secret.expose_secret();
        ensure(!jwt_secret.is_empty(), "jwt_secret", "must not be empty")?;
        ensure(
            (1..=72).contains(&r.password_min_length),
            "password_min_length",
            "must be between 1 and 72",
        )?;
        ensure(
            (4..=31).contains(&r.password_hash_rounds),
            "password_hash_rounds",
            "must be between 4 and 31",
        )?;
        let mut auth = AuthSettings {
            jwt: JwtSettings {
                secret: r.jwt_secret.clone(),
                algorithm,
                expires_in: duration("jwt_expires_in", &r.jwt_expires_in)?,
                issuer: r.jwt_issuer.clone(),
                leeway: r.jwt_leeway,
                private_key_file,
                key_id: Some(r.jwt_key_id.trim())
                    .filter(|k| !k.is_empty())
                    .map(str::to_string),
            },
            password: PasswordPolicy {
                min_length: r.password_min_length,
                reject_guessable: r.password_reject_guessable,
                hash_rounds: r.password_hash_rounds,
                hash_concurrency: r.password_hash_concurrency,
            },
            throttle: ThrottleSettings {
                max_failures: r.login_max_failures,
                ip_max_failures: r.login_ip_max_failures,
                window: Duration::from_secs(r.login_failure_window),
            },
            refresh_ttl: duration("refresh_token_ttl", &r.refresh_token_ttl)?,
            refresh_reuse_grace: Duration::from_secs(r.refresh_reuse_grace_seconds),
            admin: (!admin_email.is_empty()).then(|| AdminAccount {
                email: admin_email,
                password: r.admin_password.clone(),
            }),
            accounts: AccountSettings {
                require_email_verification: r.require_email_verification,
                reset_ttl: duration("password_reset_ttl", &r.password_reset_ttl)?,
                verification_ttl: duration("email_verification_ttl", &r.email_verification_ttl)?,
                mail_throttle: ThrottleSettings {
                    max_failures: r.mail_max_per_email,
                    ip_max_failures: r.mail_ip_max,
                    window: Duration::from_secs(r.mail_throttle_window),
                },
            },
            custom_claims: custom_claims(&r.jwt_custom_claims)?,
            mfa: MfaSettings {
                issuer: r.mfa_issuer.clone(),
                ticket_ttl: Duration::from_secs(r.mfa_ticket_ttl),
                admin_require: r.admin_require_mfa,
                webauthn_origins: webauthn_origins(&r.webauthn_origins, &r.public_base_url)?,
                webauthn_rp_id: String::new(),
            },
        };
        auth.mfa.webauthn_rp_id = rp_id(&r.webauthn_rp_id, &auth.mfa.webauthn_origins)?;
        ensure(
            (30..=3600).contains(&r.mfa_ticket_ttl),
            "mfa_ticket_ttl",
            "must be between 30 and 3600 seconds",
        )?;
        ensure(
            !r.mfa_issuer.trim().is_empty() && !r.mfa_issuer.contains(':'),
            "mfa_issuer",
            "must be a non-empty name without ':'",
        )?;
        ensure(
            r.mail_max_per_email > 0 && r.mail_ip_max >= r.mail_max_per_email,
            "mail_ip_max",
            "MAIL_MAX_PER_EMAIL must be at least 1 and MAIL_IP_MAX at least as high",
        )?;
        ensure(
            r.mail_throttle_window > 0,
            "mail_throttle_window",
            "must be at least 1 second",
        )?;
        let mail = mail_settings(&r, environment)?;

        ensure(
            (1..=1000).contains(&r.database_max_connections),
            "database_max_connections",
            "must be between 1 and 1000",
        )?;
        ensure(
            r.database_acquire_timeout > 0,
            "database_acquire_timeout",
            "must be at least 1 second",
        )?;
        ensure(
            r.database_replica_max_lag > 0.0 && r.database_replica_max_lag <= 3600.0,
            "database_replica_max_lag",
            "must be between 0 and 3600 seconds",
        )?;
        let url = database_url(r.database_url.expose_secret())?;
        let mut replica_urls = vec![];
        for raw in split_list(r.database_replica_urls.expose_secret()) {
            match database_url(&raw) {
                Ok(Some(u)) if u.expose_secret().starts_with("postgres://") => replica_urls.push(u),
                _ => {
                    return Err(bad(
                        "database_replica_urls",
                        "each must start with postgres:// or postgresql://",
                    ));
                }
            }
        }
        ensure(
            replica_urls.is_empty()
                || url
                    .as_ref()
                    .is_some_and(|u| u.expose_secret().starts_with("postgres://")),
            "database_replica_urls",
            "replicas need DATABASE_URL to name their Postgres primary",
        )?;
        let database = DatabaseSettings {
            url,
            replica_urls,
            replica_max_lag: Duration::from_secs_f64(r.database_replica_max_lag),
            sqlite_path: PathBuf::from(&r.sqlite_path),
            max_connections: r.database_max_connections,
            acquire_timeout: Duration::from_secs(r.database_acquire_timeout),
            run_migrations: r.run_migrations,
        };
        ensure(
            r.redis_pool_size > 0,
            "redis_pool_size",
            "must be at least 1",
        )?;
        let redis_cluster_nodes = split_list(r.redis_cluster_nodes.expose_secret())
            .iter()
            .map(|node| redis_url(node, r.redis_password.expose_secret()))
            .filter_map(Result::transpose)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                bad(
                    "redis_cluster_nodes",
                    "must be a comma-separated list of redis:// URLs",
                )
            })?;
        let redis_url = redis_url(
            r.redis_url.expose_secret(),
            r.redis_password.expose_secret(),
        )?;
        ensure(
            redis_url.is_none() || redis_cluster_nodes.is_empty(),
            "redis_cluster_nodes",
            "set either REDIS_URL (one Redis) or REDIS_CLUSTER_NODES (a cluster), not both",
        )?;
        let cache = CacheSettings {
            redis_url,
            redis_cluster_nodes,
            key_prefix: r.redis_key_prefix.clone(),
            pool_size: r.redis_pool_size,
        };

        let analytics = analytics::analytics_settings(&r)?;
        ensure(
            r.usage_rollup_interval > 0 && r.retention_interval > 0,
            "usage_rollup_interval",
            "USAGE_ROLLUP_INTERVAL and RETENTION_INTERVAL must be at least 1 second",
        )?;
        ensure(
            r.partition_job_interval > 0,
            "partition_job_interval",
            "must be at least 1 second",
        )?;
        let interval =
            PartitionInterval::parse(&r.analytics_partition_interval).ok_or_else(|| {
                bad(
                    "analytics_partition_interval",
                    "must be one of hour, day, week, month",
                )
            })?;
        ensure(
            r.analytics_partitions_ahead <= 1000,
            "analytics_partitions_ahead",
            "must be at most 1000",
        )?;
        let jobs = JobSettings {
            usage_rollup_interval: Duration::from_secs(r.usage_rollup_interval),
            retention_interval: Duration::from_secs(r.retention_interval),
            partition_job_interval: Duration::from_secs(r.partition_job_interval),
            partitions: PartitionSettings {
                interval,
                ahead: r.analytics_partitions_ahead,
                clock_skew: analytics.clock_skew,
            },
            prices: price_list(r.pricing, &r.model_prices)?,
        };

        let mut keys = split_list(r.api_key.expose_secret());
        keys.extend(split_list(r.api_keys.expose_secret()));
        keys.dedup();
        if production {
            ensure(
                jwt_secret != DEFAULT_JWT_SECRET,
                "jwt_secret",
                "the default secret is refused in production",
            )?;
            ensure(
                jwt_secret.len() >= 32,
                "jwt_secret",
                "must be at least 32 bytes in production",
            )?;
            if r.require_api_key {
                ensure(!keys.is_empty(), "api_key", "must be set in production")?;
                ensure(
                    !keys
                        .iter()
                        .any(|k| PLACEHOLDER_API_KEYS.contains(&k.as_str())),
                    "api_key",
                    "a placeholder key is refused in production",
                )?;
            }
            ensure(
                r.password_hash_rounds >= 10,
                "password_hash_rounds",
                "must be at least 10 in production",
            )?;
            ensure(
                !r.require_email_verification || mail.smtp_url.is_some(),
                "smtp_url",
                "required in production when REQUIRE_EMAIL_VERIFICATION=true",
            )?;
        } else if environment == RunEnvironment::Test {
            ensure(
                !r.require_api_key || !keys.is_empty(),
                "api_key",
                "must be set when REQUIRE_API_KEY=true",
            )?;
        }
        Ok(Settings {
            environment,
            log: LogSettings {
                filter: log_filter(&r.log_level)?,
                format: match r.log_format.to_ascii_lowercase().as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err(bad("log_format", "must be text or json")),
                },
                level: r.log_level,
            },
            http,
            api_keys: ApiKeySettings {
                keys: keys.into_iter().map(SecretString::from).collect(),
                required: r.require_api_key,
            },
            database,
            cache,
            auth,
            analytics,
            jobs,
            mail,
        })
    }
}

fn embedded(name: &str) -> &'static str {
    EMBEDDED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .unwrap_or("")
}

#[cfg(test)]
mod tests;
