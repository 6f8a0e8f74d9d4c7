//! Login throttling through the shared cache, so every replica counts the
//! same failures: per email (unknown ones too) and, higher, per client IP.

use std::net::IpAddr;
use std::time::Duration;

use crate::error::ApiError;
use crate::state::AppState;

fn keys(email: &str, ip: Option<IpAddr>) -> Vec<(String, u32)> {
    let mut keys = Vec::with_capacity(2);
    keys.push((format!("email:{email}"), 0));
    if let Some(ip) = ip {
        keys.push((format!("ip:{ip}"), 1));
    }
    keys
}

fn limit(state: &AppState, kind: u32) -> u32 {
    if kind == 0 {
        state.settings.login_max_failures
    } else {
        state.settings.login_ip_max_failures
    }
}

/// 429 with `Retry-After` while the email or the IP is blocked. A cache
/// failure lets the attempt through: logins keep working without Redis.
pub async fn check(state: &AppState, email: &str, ip: Option<IpAddr>) -> Result<(), ApiError> {
    let now = chrono::Utc::now().timestamp();
    for (key, _) in keys(email, ip) {
        match state.cache.get(&format!("login-block:{key}")).await {
            Ok(Some(until)) => {
                let until: i64 = until.parse().unwrap_or(0);
                if until > now {
                    metrics::counter!("auth_logins_total", "result" => "throttled").increment(1);
                    return Err(ApiError::TooManyRequests {
                        detail: "Too many failed login attempts; try again later".into(),
                        retry_after: (until - now) as u64,
                    });
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "login throttle unavailable"),
        }
    }
    Ok(())
}

/// Counts a failure; reaching the limit blocks until the window ends.
pub async fn record_failure(state: &AppState, email: &str, ip: Option<IpAddr>) {
    let window = Duration::from_secs(state.settings.login_failure_window);
    for (key, kind) in keys(email, ip) {
        match state.cache.incr(&format!("login-fail:{key}"), window).await {
            Ok((count, ttl)) if count >= i64::from(limit(state, kind)) => {
                let ttl = ttl.max(1);
                let until = chrono::Utc::now().timestamp() + ttl as i64;
                let _ = state
                    .cache
                    .set(
                        &format!("login-block:{key}"),
                        &until.to_string(),
                        Duration::from_secs(ttl),
                    )
                    .await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "login throttle unavailable"),
        }
    }
}

/// A successful login forgets the email's failures (not the IP's).
pub async fn clear(state: &AppState, email: &str) {
    let _ = state
        .cache
        .delete(&format!("login-fail:email:{email}"))
        .await;
}
