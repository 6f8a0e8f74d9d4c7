//! The values auth works with, parsed from input before they reach a service.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::AuthError;
use crate::entity::users;
use crate::json::Unstorable;

/// Longest User-Agent kept (sessions, events).
pub const MAX_USER_AGENT_CHARS: usize = 1000;

/// A trimmed, lower-cased, valid email address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, AuthError> {
        let email = raw.trim().to_lowercase();
        if email.len() > 255 || !email_address::EmailAddress::is_valid(&email) {
            return Err(AuthError::invalid("Invalid email address"));
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A first or last name: trimmed, at most 100 characters.
pub fn parse_name(field: &str, value: Option<String>) -> Result<Option<String>, AuthError> {
    match value {
        Some(v) if v.chars().count() > 100 => Err(AuthError::invalid(format!(
            "{field} must be at most 100 characters"
        ))),
        other => Ok(other.map(|v| v.trim().to_string())),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn parse(value: &str) -> Result<Self, AuthError> {
        match value {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            _ => Err(AuthError::invalid("role must be user or admin")),
        }
    }

    /// As stored; anything but `admin` has no privileges.
    pub fn from_stored(value: &str) -> Self {
        if value == "admin" {
            Role::Admin
        } else {
            Role::User
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

/// A user as the rest of the server sees it (and the cache holds it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: i32,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub is_active: bool,
    pub role: Role,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// Entries cached before the column existed were all verified.
    #[serde(default = "verified")]
    pub email_verified: bool,
    #[serde(default)]
    pub meta_data: serde_json::Value,
}

fn verified() -> bool {
    true
}

impl From<&users::Model> for User {
    fn from(u: &users::Model) -> Self {
        User {
            id: u.id,
            email: u.email.clone(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            is_active: u.is_active,
            role: Role::from_stored(&u.role),
            created_at: u.created_at,
            updated_at: u.updated_at,
            email_verified: u.email_verified,
            meta_data: u.meta_data.clone(),
        }
    }
}

/// How a session was established: RFC 8176 `amr` values (`pwd`, `otp`,
/// `hwk`, and `mfa` when two factors were used).
#[derive(Debug, Clone, PartialEq, Eq)]
// Shared, not copied: verify hands out a remembered principal per request.
pub struct Methods(Arc<[String]>);

// The method sets the server issues, each spelled once, as stored.
const PASSWORD: &str = "pwd";
const PASSWORD_AND_OTP: &str = "pwd,otp,mfa";
const PASSWORD_AND_PASSKEY: &str = "pwd,hwk,mfa";
const PASSKEY: &str = "hwk,mfa";

impl Methods {
    fn spelled(set: &str) -> Self {
        Methods(set.split(',').map(str::to_string).collect())
    }

    pub fn password() -> Self {
        Methods::spelled(PASSWORD)
    }

    /// A password, then a one-time code (TOTP or recovery code).
    pub fn password_and_otp() -> Self {
        Methods::spelled(PASSWORD_AND_OTP)
    }

    /// A password, then a passkey.
    pub fn password_and_passkey() -> Self {
        Methods::spelled(PASSWORD_AND_PASSKEY)
    }

    /// A passkey alone: possession of the key and user verification on it.
    pub fn passkey() -> Self {
        Methods::spelled(PASSKEY)
    }

    /// As a session row stores it (comma separated); `None` is a password.
    pub fn from_stored(value: Option<&str>) -> Self {
        match value {
            Some(v) if !v.is_empty() => Methods::spelled(v),
            _ => Methods::password(),
        }
    }

    pub fn from_claim(value: Option<Vec<String>>) -> Self {
        value
            .filter(|v| !v.is_empty())
            .map_or_else(Methods::password, |v| Methods(v.into()))
    }

    pub fn stored(&self) -> String {
        self.0.join(",")
    }

    /// `stored()` for the sets the server issues, spelled once: verify's
    /// `X-User-Amr` then costs no allocation. `None` for any other set.
    pub fn issued(&self) -> Option<&'static str> {
        [PASSWORD, PASSWORD_AND_OTP, PASSWORD_AND_PASSKEY, PASSKEY]
            .into_iter()
            .find(|set| set.split(',').eq(self.0.iter().map(String::as_str)))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn is_multi_factor(&self) -> bool {
        self.0.iter().any(|m| m == "mfa")
    }

    /// The assurance level (NIST SP 800-63B) as the `acr` claim says it.
    pub fn acr(&self) -> &'static str {
        if self.is_multi_factor() {
            "aal2"
        } else {
            "aal1"
        }
    }
}

/// An authenticated caller: a valid, unrevoked token of an active user.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Shared with the parse memo: verify answers without copying it.
    pub user: Arc<User>,
    /// The session id, or for tokens the original issued (no `sid`) a
    /// pseudo-session derived from the token, so they can be revoked too.
    pub session_id: Arc<str>,
    /// How the session was established (the token's `amr`).
    pub methods: Methods,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }
}

/// Where a login or registration came from.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// What a login, registration or refresh hands out.
#[derive(Debug)]
pub struct IssuedTokens {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: String,
    pub user: User,
}

/// Largest `meta_data` an admin may set, in bytes of JSON.
pub const MAX_META_DATA_BYTES: usize = 16 * 1024;

/// What an admin may change on a user; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct AdminChange {
    pub role: Option<Role>,
    pub is_active: Option<bool>,
    pub email_verified: Option<bool>,
    /// Replaces the whole object.
    pub meta_data: Option<serde_json::Value>,
}

impl AdminChange {
    pub fn parse(
        role: Option<&str>,
        is_active: Option<bool>,
        email_verified: Option<bool>,
        meta_data: Option<serde_json::Value>,
    ) -> Result<Self, AuthError> {
        if let Some(m) = &meta_data {
            if !m.is_object() {
                return Err(AuthError::invalid("meta_data must be a JSON object"));
            }
            if m.to_string().len() > MAX_META_DATA_BYTES {
                return Err(AuthError::invalid(format!(
                    "meta_data must be at most {MAX_META_DATA_BYTES} bytes of JSON"
                )));
            }
            match crate::json::check_storable(m) {
                Err(Unstorable::Nul) => {
                    return Err(AuthError::invalid(
                        "meta_data must not contain NUL characters",
                    ));
                }
                Err(Unstorable::HugeNumber) => {
                    return Err(AuthError::invalid(
                        "meta_data numbers must be within ±1e100",
                    ));
                }
                Ok(()) => {}
            }
        }
        Ok(AdminChange {
            role: role.map(Role::parse).transpose()?,
            is_active,
            email_verified,
            meta_data,
        })
    }
}

/// What a correct password answers to a user with a second factor: a
/// ticket to redeem with it.
#[derive(Debug)]
pub struct MfaChallenge {
    pub ticket: String,
    pub methods: Vec<&'static str>,
    pub expires_in: u64,
}

/// What a login answers.
#[derive(Debug)]
pub enum LoginOutcome {
    Tokens(IssuedTokens),
    SecondFactor(MfaChallenge),
}

/// What registration answers.
#[derive(Debug)]
pub enum Registered {
    LoggedIn(IssuedTokens),
    /// Login waits until the address is verified (REQUIRE_EMAIL_VERIFICATION).
    VerificationPending(User),
}

/// A new account as registration asks for it.
pub struct NewAccount {
    pub email: Email,
    pub password: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

impl NewAccount {
    pub fn parse(
        email: &str,
        password: String,
        first_name: Option<String>,
        last_name: Option<String>,
    ) -> Result<Self, AuthError> {
        Ok(NewAccount {
            email: Email::parse(email)?,
            password,
            first_name: parse_name("first_name", first_name)?,
            last_name: parse_name("last_name", last_name)?,
        })
    }
}

/// A page of the admin user list.
pub struct UserFilter {
    pub limit: u64,
    pub offset: u64,
    /// Case-insensitive substring of the email.
    pub email: Option<String>,
}

impl UserFilter {
    pub fn parse(
        limit: Option<u64>,
        offset: Option<u64>,
        email: Option<String>,
    ) -> Result<Self, AuthError> {
        let limit = limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(AuthError::invalid("limit must be between 1 and 1000"));
        }
        let offset = offset.unwrap_or(0);
        if offset > 10_000_000 {
            return Err(AuthError::invalid("offset must be at most 10000000"));
        }
        if email.as_ref().is_some_and(|e| e.len() > 255) {
            return Err(AuthError::invalid(
                "email filter must be at most 255 characters",
            ));
        }
        Ok(UserFilter {
            limit,
            offset,
            email: email
                .map(|e| e.trim().to_lowercase())
                .filter(|e| !e.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_method_sets_are_spelled_as_stored() {
        for m in [
            Methods::password(),
            Methods::password_and_otp(),
            Methods::password_and_passkey(),
            Methods::passkey(),
        ] {
            assert_eq!(m.issued(), Some(m.stored().as_str()));
            assert_eq!(Methods::from_stored(Some(&m.stored())), m);
        }
        let other = Methods::from_claim(Some(vec!["pwd".into(), "sms".into()]));
        assert_eq!((other.issued(), other.stored().as_str()), (None, "pwd,sms"));
        assert_eq!(Methods::from_claim(Some(vec![])), Methods::password());
    }
}
