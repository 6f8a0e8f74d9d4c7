//! Settings: compiled-in defaults, then `config/<file>.toml` on disk, then
//! `CONFIG_FILE`, then environment variables named like the original service's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use ipnet::IpNet;
use serde::Deserialize;

const EMBEDDED: &[(&str, &str)] = &[
    ("default", include_str!("../config/default.toml")),
    ("development", include_str!("../config/development.toml")),
    ("test", include_str!("../config/test.toml")),
    ("production", include_str!("../config/production.toml")),
];

/// The default JWT secret; production refuses it.
pub const DEFAULT_JWT_SECRET: &str = "dev-insecure-jwt-secret-change-me";
/// Well-known placeholders that production refuses as an API key.
const PLACEHOLDER_API_KEYS: &[&str] = &["your-secure-api-key", "changeme", "change-me"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnvironment {
    Development,
    Test,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub environment: String,
    pub log_level: String,
    pub log_format: String,
    pub bind_address: String,
    pub port: u16,
    pub metrics_port: u16,
    pub metrics_enabled: bool,
    pub shutdown_timeout: u64,
    pub json_body_limit: usize,
    pub workers: usize,

    pub api_key: String,
    pub api_keys: String,
    pub require_api_key: bool,

    pub jwt_secret: String,
    pub jwt_algorithm: String,
    pub jwt_expires_in: String,
    pub jwt_issuer: String,

    pub database_url: String,
    pub sqlite_path: String,
    pub database_max_connections: u32,
    pub database_acquire_timeout: u64,
    pub run_migrations: bool,

    pub redis_url: String,
    pub redis_password: String,
    pub redis_key_prefix: String,
    pub redis_pool_size: usize,

    pub cors_origins: String,
    pub trusted_proxies: String,

    pub password_min_length: usize,
    pub password_reject_guessable: bool,
    pub password_hash_rounds: u32,
    pub password_hash_concurrency: usize,

    pub login_max_failures: u32,
    pub login_ip_max_failures: u32,
    pub login_failure_window: u64,
    pub refresh_token_ttl: String,
    pub refresh_reuse_grace_seconds: u64,
    pub jwt_leeway: u64,
    pub jwt_private_key_file: String,
    pub jwt_key_id: String,

    pub admin_email: String,
    pub admin_password: String,

    pub analytics_retention_days: u32,
    pub metrics_batch_size: usize,
    pub analytics_batch_limit: usize,
    pub analytics_json_max_bytes: usize,
    pub ingest_clock_skew: u64,
    pub ingest_queue_capacity: usize,
    pub ingest_max_batch_rows: usize,
    pub ingest_wait_timeout: u64,
    pub ingest_writers: usize,
    pub usage_rollup_interval: u64,
    pub retention_interval: u64,
    pub pricing: Vec<PriceEntry>,
    pub model_prices: String,
}

/// One row of the price table, as configured (dollars per million tokens).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct PriceEntry {
    pub model: String,
    pub input_per_million: f64,
    pub output_per_million: f64,
    /// RFC 3339 or a plain date (`2025-01-01`, midnight UTC).
    pub effective_from: String,
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
        let environment = lookup("ENVIRONMENT")
            .unwrap_or_else(|| "development".into())
            .to_lowercase();
        parse_environment(&environment)?;

        let mut builder = Config::builder()
            .add_source(File::from_str(embedded("default"), FileFormat::Toml))
            .add_source(File::from_str(embedded(&environment), FileFormat::Toml))
            .add_source(File::with_name("config/default.toml").required(false))
            .add_source(File::with_name(&format!("config/{environment}.toml")).required(false));
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
        let cfg = builder
            .add_source(env_source)
            .build()
            .map_err(config_error)?;
        let settings: Settings = cfg.try_deserialize().map_err(config_error)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value once at startup, so later code can rely on them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let env = parse_environment(&self.environment)?;
        self.log_filter()?;
        self.log_format()?;
        self.bind_address
            .parse::<IpAddr>()
            .map_err(|_| bad("bind_address", "must be an IP address"))?;
        if self.port == 0 && env == RunEnvironment::Production {
            return Err(bad("port", "must not be 0 in production"));
        }
        if self.json_body_limit < 1024 || self.json_body_limit > 64 * 1024 * 1024 {
            return Err(bad(
                "json_body_limit",
                "must be between 1024 and 67108864 bytes",
            ));
        }
        if self.shutdown_timeout > 3600 {
            return Err(bad("shutdown_timeout", "must be at most 3600 seconds"));
        }
        self.jwt_expires_in()?;
        if self.jwt_algorithm()? != jsonwebtoken::Algorithm::HS256
            && self.jwt_private_key_file.trim().is_empty()
        {
            return Err(bad(
                "jwt_private_key_file",
                "required when JWT_ALGORITHM is EdDSA or RS256",
            ));
        }
        if self.jwt_leeway > 30 {
            return Err(bad("jwt_leeway", "must be at most 30 seconds"));
        }
        self.refresh_token_ttl()?;
        if self.refresh_reuse_grace_seconds > 300 {
            return Err(bad("refresh_reuse_grace_seconds", "must be at most 300"));
        }
        if self.login_max_failures == 0 || self.login_ip_max_failures < self.login_max_failures {
            return Err(bad(
                "login_ip_max_failures",
                "LOGIN_MAX_FAILURES must be at least 1 and LOGIN_IP_MAX_FAILURES at least as high",
            ));
        }
        if self.login_failure_window == 0 {
            return Err(bad("login_failure_window", "must be at least 1 second"));
        }
        if self.admin_email.is_empty() != self.admin_password.is_empty() {
            return Err(bad(
                "admin_password",
                "ADMIN_EMAIL and ADMIN_PASSWORD go together",
            ));
        }
        if self.jwt_secret.is_empty() {
            return Err(bad("jwt_secret", "must not be empty"));
        }
        self.database_url()?;
        if self.database_max_connections == 0 || self.database_max_connections > 1000 {
            return Err(bad(
                "database_max_connections",
                "must be between 1 and 1000",
            ));
        }
        if self.database_acquire_timeout == 0 {
            return Err(bad("database_acquire_timeout", "must be at least 1 second"));
        }
        self.redis_url()?;
        if self.redis_pool_size == 0 {
            return Err(bad("redis_pool_size", "must be at least 1"));
        }
        self.cors_origins()?;
        self.trusted_proxies()?;
        if !(1..=72).contains(&self.password_min_length) {
            return Err(bad("password_min_length", "must be between 1 and 72"));
        }
        if !(4..=31).contains(&self.password_hash_rounds) {
            return Err(bad("password_hash_rounds", "must be between 4 and 31"));
        }
        if self.analytics_retention_days == 0 {
            return Err(bad("analytics_retention_days", "must be at least 1"));
        }
        if !(1..=100_000).contains(&self.analytics_batch_limit) {
            return Err(bad("analytics_batch_limit", "must be between 1 and 100000"));
        }
        if !(2..=16 * 1024 * 1024).contains(&self.analytics_json_max_bytes) {
            return Err(bad(
                "analytics_json_max_bytes",
                "must be between 2 and 16777216",
            ));
        }
        if self.ingest_queue_capacity == 0 || self.ingest_max_batch_rows == 0 {
            return Err(bad(
                "ingest_queue_capacity",
                "INGEST_QUEUE_CAPACITY and INGEST_MAX_BATCH_ROWS must be at least 1",
            ));
        }
        if !(1..=16).contains(&self.ingest_writers) {
            return Err(bad("ingest_writers", "must be between 1 and 16"));
        }
        if !(1..=300).contains(&self.ingest_wait_timeout) {
            return Err(bad(
                "ingest_wait_timeout",
                "must be between 1 and 300 seconds",
            ));
        }
        if self.usage_rollup_interval == 0 || self.retention_interval == 0 {
            return Err(bad(
                "usage_rollup_interval",
                "USAGE_ROLLUP_INTERVAL and RETENTION_INTERVAL must be at least 1 second",
            ));
        }
        self.price_list()?;
        if self.metrics_batch_size == 0 {
            return Err(bad("metrics_batch_size", "must be at least 1"));
        }
        if env == RunEnvironment::Production {
            if self.jwt_secret == DEFAULT_JWT_SECRET {
                return Err(bad(
                    "jwt_secret",
                    "the default secret is refused in production",
                ));
            }
            if self.jwt_secret.len() < 32 {
                return Err(bad("jwt_secret", "must be at least 32 bytes in production"));
            }
            if self.require_api_key {
                let keys = self.api_key_list();
                if keys.is_empty() {
                    return Err(bad("api_key", "must be set in production"));
                }
                if keys
                    .iter()
                    .any(|k| PLACEHOLDER_API_KEYS.contains(&k.as_str()))
                {
                    return Err(bad("api_key", "a placeholder key is refused in production"));
                }
            }
            if self.password_hash_rounds < 10 {
                return Err(bad(
                    "password_hash_rounds",
                    "must be at least 10 in production",
                ));
            }
        } else if env == RunEnvironment::Test
            && self.require_api_key
            && self.api_key_list().is_empty()
        {
            return Err(bad("api_key", "must be set when REQUIRE_API_KEY=true"));
        }
        Ok(())
    }

    pub fn run_environment(&self) -> RunEnvironment {
        parse_environment(&self.environment).unwrap_or(RunEnvironment::Development)
    }

    /// `LOG_LEVEL` as the original wrote it (INFO, WARNING, ...) as a tracing filter.
    pub fn log_filter(&self) -> Result<&'static str, ConfigError> {
        Ok(match self.log_level.to_ascii_uppercase().as_str() {
            "TRACE" => "trace",
            "DEBUG" => "debug",
            "INFO" => "info",
            "WARN" | "WARNING" => "warn",
            "ERROR" | "CRITICAL" | "FATAL" => "error",
            _ => {
                return Err(bad(
                    "log_level",
                    "must be one of TRACE, DEBUG, INFO, WARNING, ERROR",
                ));
            }
        })
    }

    pub fn log_format(&self) -> Result<LogFormat, ConfigError> {
        match self.log_format.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(bad("log_format", "must be text or json")),
        }
    }

    /// Token lifetime: `30m`, `24h`, `7d`, or bare seconds (the original's units).
    pub fn jwt_expires_in(&self) -> Result<Duration, ConfigError> {
        parse_duration(&self.jwt_expires_in).ok_or_else(|| {
            bad(
                "jwt_expires_in",
                "expected seconds or a number with m, h or d",
            )
        })
    }

    /// The pinned signing algorithm: HS256 (JWT_SECRET), EdDSA or RS256 (key file).
    pub fn jwt_algorithm(&self) -> Result<jsonwebtoken::Algorithm, ConfigError> {
        match self.jwt_algorithm.to_ascii_uppercase().as_str() {
            "HS256" => Ok(jsonwebtoken::Algorithm::HS256),
            "EDDSA" => Ok(jsonwebtoken::Algorithm::EdDSA),
            "RS256" => Ok(jsonwebtoken::Algorithm::RS256),
            _ => Err(bad("jwt_algorithm", "must be HS256, EdDSA or RS256")),
        }
    }

    pub fn refresh_token_ttl(&self) -> Result<Duration, ConfigError> {
        parse_duration(&self.refresh_token_ttl).ok_or_else(|| {
            bad(
                "refresh_token_ttl",
                "expected seconds or a number with m, h or d",
            )
        })
    }

    /// The price table: `MODEL_PRICES` (JSON) when set, else `pricing`.
    pub fn price_list(&self) -> Result<Vec<PriceEntry>, ConfigError> {
        let key = if self.model_prices.trim().is_empty() {
            "pricing"
        } else {
            "model_prices"
        };
        let list: Vec<PriceEntry> = if key == "pricing" {
            self.pricing.clone()
        } else {
            serde_json::from_str(&self.model_prices)
                .map_err(|e| bad(key, format!("not a JSON list of prices ({e})")))?
        };
        for p in &list {
            let ok = !p.model.trim().is_empty()
                && p.input_per_million.is_finite()
                && p.output_per_million.is_finite()
                && p.input_per_million >= 0.0
                && p.output_per_million >= 0.0
                && p.input_per_million < 1e9
                && p.output_per_million < 1e9
                && parse_instant(&p.effective_from).is_some();
            if !ok {
                return Err(bad(
                    key,
                    format!("invalid price entry for model {:?}", p.model),
                ));
            }
        }
        Ok(list)
    }

    /// `None` means the embedded SQLite database.
    pub fn database_url(&self) -> Result<Option<String>, ConfigError> {
        let url = self.database_url.trim();
        if url.is_empty() {
            return Ok(None);
        }
        if let Some(rest) = url.strip_prefix("postgresql://") {
            return Ok(Some(format!("postgres://{rest}")));
        }
        if url.starts_with("postgres://") || url.starts_with("sqlite:") {
            return Ok(Some(url.to_string()));
        }
        Err(bad(
            "database_url",
            "must start with postgres://, postgresql:// or sqlite:",
        ))
    }

    pub fn sqlite_path(&self) -> PathBuf {
        PathBuf::from(&self.sqlite_path)
    }

    /// The Redis URL with `REDIS_PASSWORD` merged in, or `None` for the in-process cache.
    pub fn redis_url(&self) -> Result<Option<String>, ConfigError> {
        let raw = self.redis_url.trim();
        if raw.is_empty() {
            return Ok(None);
        }
        let mut url =
            url::Url::parse(raw).map_err(|e| bad("redis_url", format!("not a URL ({e})")))?;
        if !matches!(url.scheme(), "redis" | "rediss") {
            return Err(bad("redis_url", "must start with redis:// or rediss://"));
        }
        if !self.redis_password.is_empty() && url.password().is_none() {
            url.set_password(Some(&self.redis_password))
                .map_err(|_| bad("redis_password", "cannot be applied to REDIS_URL"))?;
        }
        Ok(Some(url.to_string()))
    }

    /// `None` means any origin (served without credentials).
    pub fn cors_origins(&self) -> Result<Option<Vec<String>>, ConfigError> {
        let items = split_list(&self.cors_origins);
        if items.is_empty() || items.iter().any(|o| o == "*") {
            return Ok(None);
        }
        for origin in &items {
            let parsed = url::Url::parse(origin)
                .map_err(|_| bad("cors_origins", format!("not an origin: {origin}")))?;
            if parsed.host_str().is_none() || !matches!(parsed.scheme(), "http" | "https") {
                return Err(bad("cors_origins", format!("not an origin: {origin}")));
            }
        }
        Ok(Some(
            items
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_string())
                .collect(),
        ))
    }

    pub fn trusted_proxies(&self) -> Result<Vec<IpNet>, ConfigError> {
        split_list(&self.trusted_proxies)
            .into_iter()
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| bad("trusted_proxies", format!("not an IP or CIDR: {item}")))
            })
            .collect()
    }

    /// Every configured API key (`API_KEY` and the `API_KEYS` list).
    pub fn api_key_list(&self) -> Vec<String> {
        let mut keys = split_list(&self.api_key);
        keys.extend(split_list(&self.api_keys));
        keys.dedup();
        keys
    }
}

fn embedded(name: &str) -> &'static str {
    EMBEDDED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .unwrap_or("")
}

fn parse_environment(value: &str) -> Result<RunEnvironment, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "development" | "dev" => Ok(RunEnvironment::Development),
        "test" | "testing" => Ok(RunEnvironment::Test),
        "production" | "prod" => Ok(RunEnvironment::Production),
        _ => Err(bad(
            "environment",
            "must be development, test or production",
        )),
    }
}

fn config_error(err: config::ConfigError) -> ConfigError {
    // The config crate's messages already name the key ("... for key `port`").
    let message = err.to_string();
    let key = message
        .split('`')
        .nth(1)
        .map(str::to_string)
        .unwrap_or_else(|| "config".into());
    ConfigError {
        key: key.to_uppercase(),
        message,
    }
}

/// RFC 3339, or a date meaning midnight UTC.
pub fn parse_instant(value: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let v = value.trim();
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|d| d.with_timezone(&chrono::Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc())
        })
}

pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `90`, `90s`, `15m`, `24h`, `7d`.
pub fn parse_duration(value: &str) -> Option<Duration> {
    let v = value.trim().to_ascii_lowercase();
    let (digits, unit) = match v.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => v.split_at(i),
        None => (v.as_str(), ""),
    };
    let n: u64 = digits.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
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
        assert_eq!(s.port, 8007);
        assert_eq!(s.bind_address, "0.0.0.0");
        assert_eq!(s.metrics_port, 9464);
        assert!(s.require_api_key);
        assert_eq!(s.database_url().unwrap(), None);
        assert_eq!(s.jwt_expires_in().unwrap(), Duration::from_secs(86_400));
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
        assert_eq!(s.port, 9000);
        assert_eq!(s.jwt_expires_in().unwrap(), Duration::from_secs(900));
        assert!(!s.require_api_key);
        assert_eq!(s.database_url().unwrap().unwrap(), "postgres://u:p@h/db");
        assert_eq!(
            s.cors_origins().unwrap().unwrap(),
            vec!["http://a.example", "https://b.example"]
        );
        assert_eq!(
            s.redis_url().unwrap().unwrap(),
            "redis://:s3cr%40t@localhost:6379"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = Settings::load_with(Some(env(&[("PORT", "eighty")]))).unwrap_err();
        assert!(err.to_string().contains("PORT"), "{err}");
        let err = Settings::load_with(Some(env(&[("JWT_EXPIRES_IN", "soon")]))).unwrap_err();
        assert_eq!(err.key, "JWT_EXPIRES_IN");
        let err = Settings::load_with(Some(env(&[("ENVIRONMENT", "staging")]))).unwrap_err();
        assert_eq!(err.key, "ENVIRONMENT");
        let err =
            Settings::load_with(Some(env(&[("TRUSTED_PROXIES", "10.0.0.0/33")]))).unwrap_err();
        assert_eq!(err.key, "TRUSTED_PROXIES");
    }

    #[test]
    fn prices_come_from_model_prices_or_the_list() {
        let s = Settings::load_with(Some(env(&[(
            "MODEL_PRICES",
            r#"[{"model":"m1","input_per_million":2.5,"output_per_million":10,"effective_from":"2025-01-01"}]"#,
        )])))
        .unwrap();
        let list = s.price_list().unwrap();
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
        assert_eq!(ok.log_format().unwrap(), LogFormat::Json);
    }
}
