//! Login throttling through the shared cache, so every replica counts the
//! same failures: per email (unknown ones too) and, higher, per client IP.

use std::net::IpAddr;
use std::time::Duration;

use super::AuthError;
use super::domain::Email;
use crate::cache::SharedCache;
use crate::config::ThrottleSettings;

/// What failures are counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject<'a> {
    Email(&'a str),
    Ip(IpAddr),
}

impl Subject<'_> {
    fn key(&self) -> String {
        match self {
            Subject::Email(e) => format!("email:{e}"),
            Subject::Ip(ip) => format!("ip:{ip}"),
        }
    }
}

fn subjects(email: &Email, ip: Option<IpAddr>) -> impl Iterator<Item = Subject<'_>> {
    std::iter::once(Subject::Email(email.as_str())).chain(ip.map(Subject::Ip))
}

#[derive(Clone)]
pub struct Throttle {
    cache: SharedCache,
    settings: ThrottleSettings,
}

impl Throttle {
    pub fn new(cache: SharedCache, settings: ThrottleSettings) -> Self {
        Throttle { cache, settings }
    }

    fn limit(&self, subject: Subject<'_>) -> u32 {
        match subject {
            Subject::Email(_) => self.settings.max_failures,
            Subject::Ip(_) => self.settings.ip_max_failures,
        }
    }

    /// Refuses while the email or the IP is blocked. A cache failure lets
    /// the attempt through: logins keep working without Redis.
    pub async fn check(&self, email: &Email, ip: Option<IpAddr>) -> Result<(), AuthError> {
        let now = chrono::Utc::now().timestamp();
        for subject in subjects(email, ip) {
            match self
                .cache
                .get(&format!("login-block:{}", subject.key()))
                .await
            {
                Ok(Some(until)) => {
                    let until: i64 = until.parse().unwrap_or(0);
                    if until > now {
                        metrics::counter!("auth_logins_total", "result" => "throttled")
                            .increment(1);
                        return Err(AuthError::Throttled {
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
    pub async fn record_failure(&self, email: &Email, ip: Option<IpAddr>) {
        for subject in subjects(email, ip) {
            let key = subject.key();
            match self
                .cache
                .incr(&format!("login-fail:{key}"), self.settings.window)
                .await
            {
                Ok((count, ttl)) if count >= i64::from(self.limit(subject)) => {
                    let ttl = ttl.max(1);
                    let until = chrono::Utc::now().timestamp() + ttl as i64;
                    let _ = self
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
    pub async fn clear(&self, email: &Email) {
        let key = Subject::Email(email.as_str()).key();
        let _ = self.cache.delete(&format!("login-fail:{key}")).await;
    }
}
