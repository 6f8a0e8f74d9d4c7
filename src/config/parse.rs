//! Parsers of single setting values: each names its key when it refuses.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::SecretString;

use super::{ConfigError, PriceEntry, RunEnvironment, bad, ensure};

pub(super) fn parse_environment(value: &str) -> Result<RunEnvironment, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "development" | "dev" => Ok(RunEnvironment::Development),
        "test" | "testing" => Ok(RunEnvironment::Test),
        "production" | "prod" => Ok(RunEnvironment::Production),
        _ => Err(bad(
            "environment",
            "must be development, test or production",
        )),
    }
}

/// `LOG_LEVEL` as the original wrote it (INFO, WARNING, ...) as a tracing level.
pub(super) fn log_filter(level: &str) -> Result<&'static str, ConfigError> {
    Ok(match level.to_ascii_uppercase().as_str() {
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

/// A lifetime in the original's units: `30m`, `24h`, `7d`, or bare seconds.
pub(super) fn duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    parse_duration(value).ok_or_else(|| bad(key, "expected seconds or a number with m, h or d"))
}

/// The price table: `MODEL_PRICES` (JSON) when set, else `pricing`.
pub(super) fn price_list(
    pricing: Vec<PriceEntry>,
    model_prices: &str,
) -> Result<Vec<PriceEntry>, ConfigError> {
    let (key, list) = if model_prices.trim().is_empty() {
        ("pricing", pricing)
    } else {
        let list = serde_json::from_str(model_prices)
            .map_err(|e| bad("model_prices", format!("not a JSON list of prices ({e})")))?;
        ("model_prices", list)
    };
    for p in &list {
        let price_ok = |v: f64| v.is_finite() && (0.0..1e9).contains(&v);
        let ok = !p.model.trim().is_empty()
            && price_ok(p.input_per_million)
            && price_ok(p.output_per_million)
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
pub(super) fn database_url(raw: &str) -> Result<Option<SecretString>, ConfigError> {
    let url = raw.trim();
    if url.is_empty() {
        return Ok(None);
    }
    if let Some(rest) = url.strip_prefix("postgresql://") {
        return Ok(Some(format!("postgres://{rest}").into()));
    }
    if url.starts_with("postgres://") || url.starts_with("sqlite:") {
        return Ok(Some(url.into()));
    }
    Err(bad(
        "database_url",
        "must start with postgres://, postgresql:// or sqlite:",
    ))
}

/// The Redis URL with `REDIS_PASSWORD` merged in, or `None` for the in-process cache.
pub(super) fn redis_url(raw: &str, password: &str) -> Result<Option<SecretString>, ConfigError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    // The parse error would echo the URL, password and all.
    let mut url = url::Url::parse(raw).map_err(|_| bad("redis_url", "not a URL"))?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err(bad("redis_url", "must start with redis:// or rediss://"));
    }
    if !password.is_empty() && url.password().is_none() {
        url.set_password(Some(password))
            .map_err(|_| bad("redis_password", "cannot be applied to REDIS_URL"))?;
    }
    Ok(Some(url.to_string().into()))
}

/// `None` means any origin (served without credentials).
pub(super) fn cors_origins(raw: &str) -> Result<Option<Vec<String>>, ConfigError> {
    let items = split_list(raw);
    if items.is_empty() || items.iter().any(|o| o == "*") {
        return Ok(None);
    }
    for origin in &items {
        let ok = url::Url::parse(origin).is_ok_and(|parsed| {
            parsed.host_str().is_some() && matches!(parsed.scheme(), "http" | "https")
        });
        ensure(ok, "cors_origins", &format!("not an origin: {origin}"))?;
    }
    Ok(Some(
        items
            .into_iter()
            .map(|o| o.trim_end_matches('/').to_string())
            .collect(),
    ))
}

pub(super) fn trusted_proxies(raw: &str) -> Result<Vec<IpNet>, ConfigError> {
    split_list(raw)
        .into_iter()
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| bad("trusted_proxies", format!("not an IP or CIDR: {item}")))
        })
        .collect()
}

pub(super) fn config_error(err: config::ConfigError) -> ConfigError {
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
