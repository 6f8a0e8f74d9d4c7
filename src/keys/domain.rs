//! What a key is and may do.

use std::sync::Arc;

use chrono::NaiveDateTime;

use super::KeyError;

/// What a key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// register, login, token, refresh, logout, verify, profile
    Auth,
    /// POST events and metrics
    Ingest,
    /// GET analytics, usage and costs
    Read,
    /// user administration, jobs, keys
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Auth, Scope::Ingest, Scope::Read, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Auth => "auth",
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub fn all() -> Self {
        Scopes::from_iter(Scope::ALL)
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Names separated by commas or spaces (as OAuth2 writes them).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut scopes = Scopes::default();
        for name in text.split([',', ' ']).filter(|s| !s.is_empty()) {
            let scope = Scope::ALL
                .into_iter()
                .find(|s| s.as_str() == name)
                .ok_or_else(|| {
                    KeyError::Invalid(format!(
                        "unknown scope '{name}': use auth, ingest, read or admin"
                    ))
                })?;
            scopes.0 |= scope.bit();
        }
        Ok(scopes)
    }

    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Scope::as_str).collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Scopes(iter.into_iter().fold(0, |acc, s| acc | s.bit()))
    }
}

impl std::fmt::Display for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// Who is calling, as far as keys tell.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The managed key's id; `None` for a configured key.
    pub key_id: Option<i32>,
    /// The key's name; `configured` for environment keys.
    pub name: Arc<str>,
    pub scopes: Scopes,
    pub rate_per_second: Option<u32>,
    pub daily_ingest_quota: Option<i64>,
}

impl Caller {
    /// An environment key: every scope, no limits.
    pub fn configured() -> Self {
        Caller {
            key_id: None,
            name: "configured".into(),
            scopes: Scopes::all(),
            rate_per_second: None,
            daily_ingest_quota: None,
        }
    }
}

/// Where a limit stands, as the RateLimit headers tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: i64,
    pub remaining: i64,
    /// Seconds until the window resets.
    pub reset: u64,
}

/// A managed key as listed: everything but the secret.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: i32,
    pub name: String,
    pub prefix: String,
    pub scopes: Scopes,
    pub rate_per_second: Option<u32>,
    pub daily_ingest_quota: Option<i64>,
    pub expires_at: Option<NaiveDateTime>,
    pub created_by: Option<String>,
    pub created_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
}

/// A key just made, with the secret shown this once.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub key: ApiKey,
    pub secret: String,
}

/// What a new key holds. Parsed from outside input by [`NewKey::new`].
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub scopes: Scopes,
    pub rate_per_second: Option<u32>,
    pub daily_ingest_quota: Option<i64>,
    pub expires_at: Option<NaiveDateTime>,
    pub created_by: Option<String>,
}

pub(super) fn check_name(name: &str) -> Result<String, KeyError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(KeyError::Invalid(
            "name must be 1 to 100 characters, without control characters".into(),
        ));
    }
    Ok(name.to_string())
}

pub(super) fn check_scopes(scopes: Scopes) -> Result<Scopes, KeyError> {
    if scopes.is_empty() {
        return Err(KeyError::Invalid("a key needs at least one scope".into()));
    }
    Ok(scopes)
}

pub(super) fn check_rate(rate: Option<i64>) -> Result<Option<u32>, KeyError> {
    match rate {
        None => Ok(None),
        Some(r) if (1..=1_000_000).contains(&r) => Ok(Some(r as u32)),
        Some(_) => Err(KeyError::Invalid(
            "rate_per_second must be between 1 and 1000000".into(),
        )),
    }
}

pub(super) fn check_quota(quota: Option<i64>) -> Result<Option<i64>, KeyError> {
    match quota {
        None => Ok(None),
        Some(q) if (1..=1_000_000_000_000).contains(&q) => Ok(Some(q)),
        Some(_) => Err(KeyError::Invalid(
            "daily_ingest_quota must be between 1 and 10^12".into(),
        )),
    }
}

pub(super) fn check_expiry(at: Option<NaiveDateTime>) -> Result<Option<NaiveDateTime>, KeyError> {
    match at {
        Some(at) if at <= crate::time::now() => {
            Err(KeyError::Invalid("expires_at must be in the future".into()))
        }
        other => Ok(other),
    }
}

impl NewKey {
    pub fn new(
        name: &str,
        scopes: Scopes,
        rate_per_second: Option<i64>,
        daily_ingest_quota: Option<i64>,
        expires_at: Option<NaiveDateTime>,
        created_by: Option<String>,
    ) -> Result<Self, KeyError> {
        Ok(NewKey {
            name: check_name(name)?,
            scopes: check_scopes(scopes)?,
            rate_per_second: check_rate(rate_per_second)?,
            daily_ingest_quota: check_quota(daily_ingest_quota)?,
            expires_at: check_expiry(expires_at)?,
            created_by,
        })
    }
}

/// A change to a key: `None` leaves a field; `Some(None)` clears a limit.
#[derive(Debug, Clone, Default)]
pub struct KeyChange {
    pub name: Option<String>,
    pub scopes: Option<Scopes>,
    pub rate_per_second: Option<Option<u32>>,
    pub daily_ingest_quota: Option<Option<i64>>,
    pub expires_at: Option<Option<NaiveDateTime>>,
}

impl KeyChange {
    pub fn new(
        name: Option<&str>,
        scopes: Option<Scopes>,
        rate_per_second: Option<Option<i64>>,
        daily_ingest_quota: Option<Option<i64>>,
        expires_at: Option<Option<NaiveDateTime>>,
    ) -> Result<Self, KeyError> {
        Ok(KeyChange {
            name: name.map(check_name).transpose()?,
            scopes: scopes.map(check_scopes).transpose()?,
            rate_per_second: rate_per_second.map(check_rate).transpose()?,
            daily_ingest_quota: daily_ingest_quota.map(check_quota).transpose()?,
            expires_at: expires_at.map(check_expiry).transpose()?,
        })
    }
}
