//! Typed settings, one section per concern. Built once at start from the
//! layered sources (see `mod.rs`); nothing here is parsed again later.
//! Secrets are `secrecy` types: `Debug` prints `[REDACTED]`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use ipnet::IpNet;
use secrecy::SecretString;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnvironment {
    Development,
    Test,
    Production,
}

impl RunEnvironment {
    pub fn name(self) -> &'static str {
        match self {
            RunEnvironment::Development => "development",
            RunEnvironment::Test => "test",
            RunEnvironment::Production => "production",
        }
    }
}

impl std::fmt::Display for RunEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub environment: RunEnvironment,
    pub log: LogSettings,
    pub http: HttpSettings,
    pub api_keys: ApiKeySettings,
    pub database: DatabaseSettings,
    pub cache: CacheSettings,
    pub auth: AuthSettings,
    pub analytics: AnalyticsSettings,
    pub jobs: JobSettings,
    pub mail: MailSettings,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    /// As configured (`INFO`, `WARNING`, …).
    pub level: String,
    /// The tracing level it means (`info`, `warn`, …).
    pub filter: &'static str,
    pub format: LogFormat,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub bind_address: IpAddr,
    pub port: u16,
    pub metrics_port: u16,
    pub metrics_enabled: bool,
    /// Seconds in-flight requests get after SIGTERM.
    pub shutdown_timeout: u64,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Reading a body: longest pause between bytes, and longest in all.
    pub body_idle_timeout: Duration,
    pub body_timeout: Duration,
    /// Largest request head (header names and values together).
    pub max_header_bytes: usize,
    /// 0: one per core.
    pub workers: usize,
    /// Threads of the runtime the ingest writers, jobs and listeners share.
    pub background_threads: usize,
    /// `None`: any origin, without credentials.
    pub cors_origins: Option<Vec<String>>,
    pub trusted_proxies: Vec<IpNet>,
}

#[derive(Debug, Clone)]
pub struct ApiKeySettings {
    /// `API_KEY` and the `API_KEYS` list.
    pub keys: Vec<SecretString>,
    pub required: bool,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `postgres://…` or `sqlite:…`; `None` means the embedded SQLite file.
    pub url: Option<SecretString>,
    pub sqlite_path: PathBuf,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    pub run_migrations: bool,
    /// Streaming replicas that serve analytics reads (Postgres).
    pub replica_urls: Vec<SecretString>,
    /// A replica further behind than this is left for the primary.
    pub replica_max_lag: Duration,
}

#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// With `REDIS_PASSWORD` merged in; `None` means the in-process cache.
    pub redis_url: Option<SecretString>,
    /// Redis Cluster seed nodes (password merged in); when set, the cache
    /// talks to the cluster and `redis_url` is empty.
    pub redis_cluster_nodes: Vec<SecretString>,
    pub key_prefix: String,
    pub pool_size: usize,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub jwt: JwtSettings,
    pub password: PasswordPolicy,
    pub throttle: ThrottleSettings,
    pub refresh_ttl: Duration,
    /// How long a rotated refresh token still answers its child.
    pub refresh_reuse_grace: Duration,
    /// The first admin, created at start.
    pub admin: Option<AdminAccount>,
    pub accounts: AccountSettings,
    /// `meta_data` keys copied into access tokens.
    pub custom_claims: Vec<String>,
    pub mfa: MfaSettings,
}

#[derive(Debug, Clone)]
pub struct MfaSettings {
    /// The issuer authenticator apps show beside the account.
    pub issuer: String,
    /// How long a password's MFA ticket may be redeemed.
    pub ticket_ttl: Duration,
    /// Admin endpoints refuse sessions established without a second factor.
    pub admin_require: bool,
    /// The WebAuthn relying party id (a domain) and the origins browsers use.
    pub webauthn_rp_id: String,
    pub webauthn_origins: Vec<url::Url>,
}

/// Password reset, email verification and email change.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    /// Refuse login (403) to users whose address is not verified.
    pub require_email_verification: bool,
    pub reset_ttl: Duration,
    /// Verification and email-change links.
    pub verification_ttl: Duration,
    /// Mail requests (reset, verification) per email and per client IP.
    pub mail_throttle: ThrottleSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailDelivery {
    Smtp,
    /// Development without SMTP: mails, links included, go to the log.
    Log,
    /// Production without SMTP: mails are dropped with a warning.
    Discard,
}

#[derive(Debug, Clone)]
pub struct MailSettings {
    /// `smtp://`, `smtps://`, with `?tls=required|opportunistic`; credentials in the URL.
    pub smtp_url: Option<SecretString>,
    pub delivery: MailDelivery,
    /// `Name <address>` or an address.
    pub from: String,
    pub links: MailLinks,
    /// Files that replace the compiled-in templates (`<kind>.subject`, `.txt`, `.html`).
    pub template_dir: Option<PathBuf>,
    /// Backoff between delivery attempts: doubles from `retry_base` up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
}

/// Link templates; `{token}` is replaced by the link's token.
#[derive(Debug, Clone)]
pub struct MailLinks {
    pub verify: String,
    pub reset: String,
    pub email_change: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    Hs256,
    EdDsa,
    Rs256,
}

#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub secret: SecretString,
    pub algorithm: JwtAlgorithm,
    pub expires_in: Duration,
    pub issuer: String,
    /// Seconds of clock skew tolerated on `exp`.
    pub leeway: u64,
    /// PEM private key of EdDSA or RS256 (read when the keys are built).
    pub private_key_file: Option<PathBuf>,
    pub key_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PasswordPolicy {
    pub min_length: usize,
    pub reject_guessable: bool,
    pub hash_rounds: u32,
    /// Concurrent bcrypt operations; 0 means one per core.
    pub hash_concurrency: usize,
}

#[derive(Debug, Clone)]
pub struct ThrottleSettings {
    /// Failed logins per email within the window before 429.
    pub max_failures: u32,
    /// The same per client IP.
    pub ip_max_failures: u32,
    pub window: Duration,
}

#[derive(Debug, Clone)]
pub struct AdminAccount {
    pub email: String,
    pub password: SecretString,
}

#[derive(Debug, Clone)]
pub struct AnalyticsSettings {
    pub retention_days: u32,
    /// Accepted and ignored: the original's meaning is unclear.
    pub metrics_batch_size: usize,
    /// Most items in one batch request.
    pub batch_limit: usize,
    /// Largest `event_data` or `labels`, in bytes of JSON.
    pub json_max_bytes: usize,
    /// Most keys in one object, and items in one array, inside them.
    pub json_max_keys: usize,
    pub json_max_items: usize,
    /// How far ahead a client timestamp may lie.
    pub clock_skew: Duration,
    pub queue_capacity: usize,
    pub max_batch_rows: usize,
    pub wait_timeout: Duration,
    /// Group-commit writers on Postgres.
    pub writers: usize,
    pub stream: StreamSettings,
}

/// The live event stream (`/analytics/events/stream`).
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    /// Events each replica holds for its subscribers: one that falls this
    /// far behind is dropped.
    pub buffer: usize,
    /// Open streams per caller (API key, else client address).
    pub max_per_caller: usize,
    /// A comment line sent this often so gateways keep the stream open.
    pub heartbeat: Duration,
}

#[derive(Debug, Clone)]
pub struct JobSettings {
    pub usage_rollup_interval: Duration,
    pub retention_interval: Duration,
    /// How often the partition job runs (Postgres).
    pub partition_job_interval: Duration,
    pub partitions: PartitionSettings,
    /// The price table, checked.
    pub prices: Vec<PriceEntry>,
}

/// One row of the price table, as configured (dollars per million tokens).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
pub struct PriceEntry {
    pub model: String,
    pub input_per_million: f64,
    pub output_per_million: f64,
    /// RFC 3339 or a plain date (`2025-01-01`, midnight UTC).
    pub effective_from: String,
}

/// The range one partition of the raw tables covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionInterval {
    Hour,
    Day,
    Week,
    Month,
}

impl PartitionInterval {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hour" | "hourly" => Some(Self::Hour),
            "day" | "daily" => Some(Self::Day),
            "week" | "weekly" => Some(Self::Week),
            "month" | "monthly" => Some(Self::Month),
            _ => None,
        }
    }

    /// The start of the interval holding `t` (as Postgres' `date_trunc`).
    pub fn floor(self, t: NaiveDateTime) -> NaiveDateTime {
        let day = t.date();
        let midnight = |d: NaiveDate| d.and_time(NaiveTime::MIN);
        match self {
            Self::Hour => midnight(day) + chrono::Duration::hours(i64::from(t.hour())),
            Self::Day => midnight(day),
            Self::Week => {
                midnight(day)
                    - chrono::Duration::days(i64::from(day.weekday().num_days_from_monday()))
            }
            Self::Month => midnight(day.with_day(1).unwrap_or(day)),
        }
    }

    /// The start of the next interval after the one starting at `start`.
    pub fn next(self, start: NaiveDateTime) -> NaiveDateTime {
        match self {
            Self::Hour => start + chrono::Duration::hours(1),
            Self::Day => start + chrono::Duration::days(1),
            Self::Week => start + chrono::Duration::weeks(1),
            Self::Month => start
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(start + chrono::Duration::days(31)),
        }
    }

    /// The unit as Postgres' `date_trunc` names it.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PartitionSettings {
    pub interval: PartitionInterval,
    /// Intervals made ahead beyond the furthest client timestamp.
    pub ahead: u32,
    /// How far ahead a client timestamp may lie (the analytics setting).
    pub clock_skew: Duration,
}
