//! Throttling through the shared cache, so every replica counts alike: per
//! email (unknown ones too) and, higher, per client IP. Login failures are
//! counted before the password is verified, so a burst sent in parallel
//! cannot slip past the limit together; mail requests are counted each.

use std::net::IpAddr;

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
    /// The counter's key; its TTL is the window, started by the first
    /// attempt and never extended.
    fn key(&self, name: &str) -> String {
        match self {
            Subject::Email(e) => format!("{name}:email:{e}"),
            Subject::Ip(ip) => format!("{name}:ip:{ip}"),
        }
    }
}

#[derive(Clone)]
pub struct Throttle {
    cache: SharedCache,
    settings: ThrottleSettings,
    /// Key prefix: `login-fail`, `mail-request`.
    name: &'static str,
}

impl Throttle {
    pub fn new(cache: SharedCache, settings: ThrottleSettings, name: &'static str) -> Self {
        Throttle {
            cache,
            settings,
            name,
        }
    }

    fn limit(&self, subject: Subject<'_>) -> u32 {
        match subject {
            Subject::Email(_) => self.settings.max_failures,
            Subject::Ip(_) => self.settings.ip_max_failures,
        }
    }

    /// Takes an attempt against each subject's limit before the password is
    /// verified, atomically in the shared cache: of N concurrent attempts
    /// against a limit L, at most L get through and the rest are refused
    /// with the time left in the window. An attempt that gets through stays
    /// counted as a failure unless the login succeeds (`succeeded`). A cache
    /// failure lets the attempt through: logins keep working without Redis.
    pub async fn reserve(&self, email: &Email, ip: Option<IpAddr>) -> Result<(), AuthError> {
        let mut taken: Vec<Subject<'_>> = Vec::with_capacity(2);
        // The IP first: a blocked address then spends none of the email's attempts.
        for subject in ip
            .map(Subject::Ip)
            .into_iter()
            .chain([Subject::Email(email.as_str())])
        {
            match self
                .cache
                .incr(&subject.key(self.name), self.settings.window)
                .await
            {
                Ok((count, ttl)) if count > i64::from(self.limit(subject)) => {
                    for earlier in taken {
                        self.release(earlier).await;
                    }
                    return Err(AuthError::Throttled {
                        retry_after: ttl.max(1),
                    });
                }
                Ok(_) => taken.push(subject),
                Err(e) => tracing::warn!(error = %e, "login throttle unavailable"),
            }
        }
        Ok(())
    }

    async fn release(&self, subject: Subject<'_>) {
        let _ = self
            .cache
            .incr_by(&subject.key(self.name), -1, self.settings.window)
            .await;
    }

    /// A successful login was no failure: the IP's attempt is given back and
    /// the email's failures are forgotten.
    pub async fn succeeded(&self, email: &Email, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            self.release(Subject::Ip(ip)).await;
        }
        let _ = self
            .cache
            .delete(&Subject::Email(email.as_str()).key(self.name))
            .await;
    }
}
