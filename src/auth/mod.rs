//! Authentication: accounts, sessions, tokens, roles, throttling. Plain
//! services over the database and the cache; HTTP lives in `crate::http`.
//!
//! Cache layout (one key per operation, so Redis Cluster works):
//! - `user:{id}`  the user as verify needs it; overwritten on every change.
//! - `sess:{id}:sid` `1` active or `0` revoked; revocation overwrites, fills
//!   from the database use SET NX so they never undo a revocation.
//!
//! Any cache failure falls back to the database: a revoked token never passes.

mod accounts;
mod authenticate;
pub mod domain;
mod error;
pub mod jwt;
mod login;
pub mod mfa;
mod passkeys;
pub mod password;
mod sessions;
mod throttle;
mod users;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use hkdf::Hkdf;
use sea_orm::DatabaseConnection;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

pub use domain::{
    AdminChange, ClientInfo, Email, IssuedTokens, LoginOutcome, Methods, MfaChallenge, NewAccount,
    Principal, Registered, Role, User, UserFilter,
};
pub use error::AuthError;
pub use mfa::{MfaStatus, RECOVERY_CODES, SecondFactor, TotpEnrolment};
pub use passkeys::PasskeyInfo;

use crate::cache::SharedCache;
use crate::config::AuthSettings;
use crate::mail::Mailer;

/// The auth services and what they share, built once at start.
pub struct Auth {
    db: DatabaseConnection,
    cache: SharedCache,
    settings: AuthSettings,
    pub hasher: password::PasswordHasher,
    pub jwt: jwt::JwtKeys,
    throttle: throttle::Throttle,
    /// Wrong second-factor codes: a counter of their own, which a correct
    /// password does not reset.
    mfa_throttle: throttle::Throttle,
    /// Password-reset and verification requests, per email and client IP.
    mail_throttle: throttle::Throttle,
    mail: Arc<Mailer>,
    /// The WebAuthn relying party of passkeys.
    webauthn: webauthn_rs::Webauthn,
    /// Key of the refresh-token chain, derived from the JWT secret for this
    /// purpose alone.
    refresh_chain_key: [u8; 32],
    /// Revocations the cache missed (Redis down): retried until they land,
    /// so a marker cached as live before the outage cannot outlive it.
    pending_revocations: Mutex<Vec<(String, Instant)>>,
    parsed_users: authenticate::ParsedUsers,
    recent_tokens: authenticate::RecentTokens,
}

impl Auth {
    pub fn new(
        db: DatabaseConnection,
        cache: SharedCache,
        settings: &AuthSettings,
        mail: Arc<Mailer>,
    ) -> anyhow::Result<Arc<Self>> {
        let mut refresh_chain_key = [0u8; 32];
        Hkdf::<Sha256>::new(None, settings.jwt.secret.expose_secret().as_bytes())
            .expand(
                b"platform-server refresh-token chain v1",
                &mut refresh_chain_key,
            )
            .map_err(|_| anyhow::anyhow!("deriving the refresh-chain key"))?;
        Ok(Arc::new(Auth {
            hasher: password::PasswordHasher::new(
                settings.password.hash_rounds,
                settings.password.hash_concurrency,
            ),
            jwt: jwt::JwtKeys::new(&settings.jwt)?,
            throttle: throttle::Throttle::new(
                cache.clone(),
                settings.throttle.clone(),
                "login-fail",
            ),
            mfa_throttle: throttle::Throttle::new(
                cache.clone(),
                settings.throttle.clone(),
                "mfa-fail",
            ),
            mail_throttle: throttle::Throttle::new(
                cache.clone(),
                settings.accounts.mail_throttle.clone(),
                "mail-request",
            ),
            mail,
            webauthn: passkeys::relying_party(&settings.mfa)?,
            db,
            cache,
            settings: settings.clone(),
            refresh_chain_key,
            pending_revocations: Mutex::new(Vec::new()),
            parsed_users: Default::default(),
            recent_tokens: Default::default(),
        }))
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
