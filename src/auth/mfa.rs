//! Second factors: TOTP (RFC 6238) enrolment and use, single-use recovery
//! codes, and the two-step login that redeems a password's MFA ticket.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, Set,
};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Secret, TOTP};

use super::{
    Auth, AuthError, ClientInfo, Email, IssuedTokens, Methods, MfaChallenge, Principal, User,
    sha256_hex,
};
use crate::entity::user_factors::{self, PASSKEY, TOTP};
use crate::entity::{mfa_tickets, recovery_codes};
use crate::time::now;

const STEP_SECONDS: u64 = 30;
const DIGITS: usize = 6;
pub const RECOVERY_CODES: usize = 10;
/// Wrong codes one ticket survives.
const TICKET_FAILURES: i32 = 5;
const INVALID_TICKET: AuthError = AuthError::InvalidToken("Invalid or expired MFA ticket");

/// What enrolment hands the user's authenticator app.
pub struct TotpEnrolment {
    /// Base32, for typing in.
    pub secret: String,
    pub otpauth_uri: String,
    /// The URI as a QR code.
    pub qr_svg: String,
}

/// The factor a ticket is redeemed with.
pub enum SecondFactor<'a> {
    Totp(&'a str),
    RecoveryCode(&'a str),
    /// An assertion answering `passkey_second_factor_start`'s ceremony.
    Passkey {
        ceremony: &'a str,
        credential: &'a webauthn_rs::prelude::PublicKeyCredential,
    },
}

pub struct MfaStatus {
    pub totp: bool,
    pub passkeys: usize,
    pub recovery_codes_left: u64,
}

/// Ten codes of ten base32 characters (50 bits each), shown once.
fn new_recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..RECOVERY_CODES)
        .map(|_| {
            let chars: String = (0..10)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect();
            format!("{}-{}", &chars[..5], &chars[5..])
        })
        .collect()
}

/// Codes are compared without case, spaces or dashes.
fn recovery_digest(user_id: i32, code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    sha256_hex(format!("{user_id}:{normal}").as_bytes())
}

impl Auth {
    fn totp(&self, secret_b32: &str, account: &str) -> Result<TOTP, AuthError> {
        let secret = Secret::Encoded(secret_b32.to_string())
            .to_bytes()
            .map_err(|e| AuthError::Internal(anyhow::anyhow!("stored TOTP secret: {e:?}")))?;
        TOTP::new(
            Algorithm::SHA1,
            DIGITS,
            1,
            STEP_SECONDS,
            secret,
            Some(self.settings.mfa.issuer.clone()),
            account.to_string(),
        )
        .map_err(|e| AuthError::Internal(anyhow::anyhow!("TOTP: {e}")))
    }

    async fn factors(&self, user_id: i32) -> Result<Vec<user_factors::Model>, AuthError> {
        Ok(user_factors::Entity::find()
            .filter(user_factors::Column::UserId.eq(user_id))
            .all(&self.db)
            .await?)
    }

    /// Does the user have a confirmed second factor?
    async fn has_second_factor(&self, user_id: i32) -> Result<bool, AuthError> {
        Ok(user_factors::Entity::find()
            .filter(user_factors::Column::UserId.eq(user_id))
            .filter(user_factors::Column::ConfirmedAt.is_not_null())
            .count(&self.db)
            .await?
            > 0)
    }

    /// Starts TOTP enrolment: a new secret, not yet in force. Enrolling
    /// again before activation replaces the pending secret.
    pub async fn totp_enroll(&self, principal: &Principal) -> Result<TotpEnrolment, AuthError> {
        let user_id = principal.user.id;
        let factors = self.factors(user_id).await?;
        if factors
            .iter()
            .any(|f| f.kind == TOTP && f.confirmed_at.is_some())
        {
            return Err(AuthError::Conflict(
                "TOTP is already active; remove it before enrolling again",
            ));
        }
        let secret = Secret::generate_secret().to_encoded().to_string();
        let totp = self.totp(&secret, &principal.user.email)?;
        let uri = totp.get_url();
        let qr = qrcode::QrCode::new(uri.as_bytes())
            .map_err(|e| AuthError::Internal(anyhow::anyhow!("QR code: {e}")))?
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(200, 200)
            .build();
        user_factors::Entity::delete_many()
            .filter(user_factors::Column::UserId.eq(user_id))
            .filter(user_factors::Column::Kind.eq(TOTP))
            .filter(user_factors::Column::ConfirmedAt.is_null())
            .exec(&self.db)
            .await?;
        user_factors::ActiveModel {
            user_id: Set(user_id),
            kind: Set(TOTP.into()),
            name: Set(Some("Authenticator app".into())),
            secret: Set(Some(secret.clone())),
            credential: Set(None),
            credential_id: Set(None),
            user_handle: Set(None),
            last_used_step: Set(0),
            confirmed_at: Set(None),
            created_at: Set(now()),
            last_used_at: Set(None),
            ..Default::default()
        }
        .insert(&self.db)
        .await?;
        tracing::info!(audit = "mfa_totp", stage = "enrolled", user_id);
        Ok(TotpEnrolment {
            secret,
            otpauth_uri: uri,
            qr_svg: qr,
        })
    }

    /// Checks a TOTP code against a factor and spends its time step: a code
    /// is accepted once, and no code of an earlier step after it.
    async fn spend_totp(
        &self,
        factor: &user_factors::Model,
        email: &str,
        code: &str,
    ) -> Result<bool, AuthError> {
        let Some(secret) = &factor.secret else {
            return Ok(false);
        };
        let code = code.trim();
        if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(false);
        }
        let totp = self.totp(secret, email)?;
        let current = crate::time::now_utc().timestamp() as u64 / STEP_SECONDS;
        // One step of drift either way, the latest match first.
        let step = [current + 1, current, current.saturating_sub(1)]
            .into_iter()
            .find(|s| {
                bool::from(
                    totp.generate(s * STEP_SECONDS)
                        .as_bytes()
                        .ct_eq(code.as_bytes()),
                )
            });
        let Some(step) = step else {
            return Ok(false);
        };
        // Of two uses of one code (or a later code, then an earlier one), one wins.
        let spent = user_factors::Entity::update_many()
            .col_expr(user_factors::Column::LastUsedStep, Expr::value(step as i64))
            .col_expr(user_factors::Column::LastUsedAt, Expr::value(now()))
            .filter(user_factors::Column::Id.eq(factor.id))
            .filter(user_factors::Column::LastUsedStep.lt(step as i64))
            .exec(&self.db)
            .await?
            .rows_affected
            == 1;
        if !spent {
            metrics::counter!("auth_mfa_total", "method" => "totp", "result" => "replayed")
                .increment(1);
        }
        Ok(spent)
    }

    /// The user's recovery codes not yet used.
    pub(super) async fn recovery_codes_left<C: ConnectionTrait>(
        conn: &C,
        user_id: i32,
    ) -> Result<u64, AuthError> {
        Ok(recovery_codes::Entity::find()
            .filter(recovery_codes::Column::UserId.eq(user_id))
            .filter(recovery_codes::Column::UsedAt.is_null())
            .count(conn)
            .await?)
    }

    /// Replaces the user's recovery codes with ten new ones on `conn`.
    pub(super) async fn replace_recovery_codes<C: ConnectionTrait>(
        conn: &C,
        user_id: i32,
    ) -> Result<Vec<String>, AuthError> {
        recovery_codes::Entity::delete_many()
            .filter(recovery_codes::Column::UserId.eq(user_id))
            .exec(conn)
            .await?;
        let codes = new_recovery_codes();
        let ts = now();
        recovery_codes::Entity::insert_many(codes.iter().map(|c| recovery_codes::ActiveModel {
            user_id: Set(user_id),
            code_hash: Set(recovery_digest(user_id, c)),
            created_at: Set(ts),
            used_at: Set(None),
            ..Default::default()
        }))
        .exec_without_returning(conn)
        .await?;
        Ok(codes)
    }

    /// Activates the pending TOTP secret once the user proves a code from
    /// it; answers the recovery codes, shown this once.
    pub async fn totp_activate(
        &self,
        principal: &Principal,
        code: &str,
        client: &ClientInfo,
    ) -> Result<Vec<String>, AuthError> {
        let user_id = principal.user.id;
        let pending = self
            .factors(user_id)
            .await?
            .into_iter()
            .find(|f| f.kind == TOTP && f.confirmed_at.is_none())
            .ok_or(AuthError::Conflict(
                "No TOTP enrolment is pending; start one at POST /auth/mfa/totp",
            ))?;
        let email = Email::parse(&principal.user.email)?;
        self.mfa_throttle.reserve(&email, client.ip).await?;
        if !self
            .spend_totp(&pending, &principal.user.email, code)
            .await?
        {
            tracing::info!(audit = "mfa_totp", stage = "activation_failed", user_id);
            return Err(AuthError::WrongCode);
        }
        self.mfa_throttle.succeeded(&email, client.ip).await;
        let txn = crate::db::begin_write(&self.db).await?;
        let mut active: user_factors::ActiveModel = pending.into();
        active.confirmed_at = Set(Some(now()));
        active.update(&txn).await?;
        let codes = Self::replace_recovery_codes(&txn, user_id).await?;
        txn.commit().await?;
        metrics::counter!("auth_mfa_changes_total", "change" => "totp_activated").increment(1);
        tracing::info!(audit = "mfa_totp", stage = "activated", user_id);
        Ok(codes)
    }

    pub async fn mfa_status(&self, principal: &Principal) -> Result<MfaStatus, AuthError> {
        let user_id = principal.user.id;
        let factors = self.factors(user_id).await?;
        let totp = factors
            .iter()
            .any(|f| f.kind == TOTP && f.confirmed_at.is_some());
        let passkeys = factors.iter().filter(|f| f.kind == PASSKEY).count();
        let left = Self::recovery_codes_left(&self.db, user_id).await?;
        Ok(MfaStatus {
            totp,
            passkeys,
            recovery_codes_left: if totp || passkeys > 0 { left } else { 0 },
        })
    }

    fn require_second_factor(principal: &Principal) -> Result<(), AuthError> {
        if principal.methods.is_multi_factor() {
            Ok(())
        } else {
            Err(AuthError::SecondFactorRequired)
        }
    }

    /// New recovery codes (the old ones stop working); only from a session
    /// established with a second factor.
    pub async fn regenerate_recovery_codes(
        &self,
        principal: &Principal,
    ) -> Result<Vec<String>, AuthError> {
        Self::require_second_factor(principal)?;
        let user_id = principal.user.id;
        if !self.has_second_factor(user_id).await? {
            return Err(AuthError::Conflict("No second factor is active"));
        }
        let txn = crate::db::begin_write(&self.db).await?;
        let codes = Self::replace_recovery_codes(&txn, user_id).await?;
        txn.commit().await?;
        metrics::counter!("auth_mfa_changes_total", "change" => "recovery_codes").increment(1);
        tracing::info!(audit = "mfa_recovery_codes", stage = "regenerated", user_id);
        Ok(codes)
    }

    /// Removes a user's factors (`only` one kind, or all); the recovery
    /// codes go with the last factor.
    async fn remove_factors(&self, user_id: i32, only: Option<&str>) -> Result<u64, AuthError> {
        let txn = crate::db::begin_write(&self.db).await?;
        let mut delete =
            user_factors::Entity::delete_many().filter(user_factors::Column::UserId.eq(user_id));
        if let Some(kind) = only {
            delete = delete.filter(user_factors::Column::Kind.eq(kind));
        }
        let removed = delete.exec(&txn).await?.rows_affected;
        let left = user_factors::Entity::find()
            .filter(user_factors::Column::UserId.eq(user_id))
            .count(&txn)
            .await?;
        if left == 0 {
            recovery_codes::Entity::delete_many()
                .filter(recovery_codes::Column::UserId.eq(user_id))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(removed)
    }

    /// Removes the caller's own TOTP; only from a session established with
    /// a second factor.
    pub async fn remove_own_factors(&self, principal: &Principal) -> Result<(), AuthError> {
        Self::require_second_factor(principal)?;
        let user_id = principal.user.id;
        self.remove_factors(user_id, Some(TOTP)).await?;
        metrics::counter!("auth_mfa_changes_total", "change" => "removed_by_user").increment(1);
        tracing::info!(audit = "mfa_removed", user_id, by = "self");
        Ok(())
    }

    /// An admin removes a user's second factors (a lost phone).
    pub async fn admin_remove_factors(
        &self,
        actor: &Principal,
        user_id: i32,
    ) -> Result<(), AuthError> {
        self.find(user_id).await?;
        let removed = self.remove_factors(user_id, None).await?;
        metrics::counter!("auth_mfa_changes_total", "change" => "removed_by_admin").increment(1);
        tracing::warn!(
            audit = "mfa_removed",
            actor = actor.user.id,
            user_id,
            by = "admin",
            factors = removed
        );
        Ok(())
    }

    /// The ticket a correct password earns a user with a second factor, and
    /// the methods to redeem it with; `None` for a user without one.
    pub(super) async fn second_factor_challenge(
        &self,
        user_id: i32,
    ) -> Result<Option<MfaChallenge>, AuthError> {
        let factors = self.factors(user_id).await?;
        let confirmed = |kind: &str| {
            factors
                .iter()
                .any(|f| f.kind == kind && f.confirmed_at.is_some())
        };
        let mut methods = Vec::with_capacity(3);
        if confirmed(TOTP) {
            methods.push("totp");
        }
        if confirmed(PASSKEY) {
            methods.push("passkey");
        }
        if methods.is_empty() {
            return Ok(None);
        }
        methods.push("recovery_code");
        let ticket = URL_SAFE_NO_PAD.encode(rand::rng().random::<[u8; 32]>());
        let ttl = self.settings.mfa.ticket_ttl;
        let ts = now();
        mfa_tickets::ActiveModel {
            ticket_hash: Set(sha256_hex(ticket.as_bytes())),
            user_id: Set(user_id),
            created_at: Set(ts),
            expires_at: Set(ts + ttl),
            used_at: Set(None),
            failures: Set(0),
        }
        .insert(&self.db)
        .await?;
        // Tickets of earlier logins past their time are of no further use.
        let _ = mfa_tickets::Entity::delete_many()
            .filter(mfa_tickets::Column::UserId.eq(user_id))
            .filter(mfa_tickets::Column::ExpiresAt.lt(ts))
            .exec(&self.db)
            .await;
        Ok(Some(MfaChallenge {
            ticket,
            methods,
            expires_in: ttl.as_secs(),
        }))
    }

    /// Redeems an MFA ticket with a second factor: the usual tokens, of a
    /// session marked as established with two factors. Wrong codes are
    /// throttled like failed logins, on a counter a correct password does
    /// not reset, and a ticket survives only a few.
    pub async fn complete_second_factor(
        &self,
        ticket: &str,
        factor: SecondFactor<'_>,
        client: &ClientInfo,
    ) -> Result<IssuedTokens, AuthError> {
        let live = self.live_ticket(ticket).await?;
        let hash = live.ticket_hash;
        let user = self
            .find_active(live.user_id)
            .await?
            .ok_or(INVALID_TICKET)?;
        let email = Email::parse(&user.email)?;
        self.mfa_throttle.reserve(&email, client.ip).await?;
        let (method, ok) = match factor {
            SecondFactor::Totp(code) => {
                let factor = self
                    .factors(user.id)
                    .await?
                    .into_iter()
                    .find(|f| f.kind == TOTP && f.confirmed_at.is_some());
                let ok = match &factor {
                    Some(f) => self.spend_totp(f, &user.email, code).await?,
                    None => false,
                };
                ("totp", ok)
            }
            SecondFactor::RecoveryCode(code) => {
                let spent = recovery_codes::Entity::update_many()
                    .col_expr(recovery_codes::Column::UsedAt, Expr::value(now()))
                    .filter(recovery_codes::Column::UserId.eq(user.id))
                    .filter(recovery_codes::Column::CodeHash.eq(recovery_digest(user.id, code)))
                    .filter(recovery_codes::Column::UsedAt.is_null())
                    .exec(&self.db)
                    .await?
                    .rows_affected
                    == 1;
                ("recovery_code", spent)
            }
            SecondFactor::Passkey {
                ceremony,
                credential,
            } => (
                "passkey",
                self.passkey_second_factor_finish(user.id, ceremony, credential)
                    .await?,
            ),
        };
        if !ok {
            mfa_tickets::Entity::update_many()
                .col_expr(
                    mfa_tickets::Column::Failures,
                    Expr::col(mfa_tickets::Column::Failures).add(1),
                )
                .filter(mfa_tickets::Column::TicketHash.eq(hash))
                .exec(&self.db)
                .await?;
            metrics::counter!("auth_mfa_total", "method" => method, "result" => "failure")
                .increment(1);
            tracing::info!(audit = "mfa_login", result = "failure", method, user_id = user.id, ip = ?client.ip);
            return Err(AuthError::WrongCode);
        }
        // Spend the ticket: of two redemptions racing, one wins.
        let claimed = mfa_tickets::Entity::update_many()
            .col_expr(mfa_tickets::Column::UsedAt, Expr::value(now()))
            .filter(mfa_tickets::Column::TicketHash.eq(hash))
            .filter(mfa_tickets::Column::UsedAt.is_null())
            .exec(&self.db)
            .await?
            .rows_affected
            == 1;
        if !claimed {
            return Err(INVALID_TICKET);
        }
        self.mfa_throttle.succeeded(&email, client.ip).await;
        metrics::counter!("auth_mfa_total", "method" => method, "result" => "success").increment(1);
        tracing::info!(audit = "mfa_login", result = "success", method, user_id = user.id, ip = ?client.ip);
        let methods = if method == "passkey" {
            Methods::password_and_passkey()
        } else {
            Methods::password_and_otp()
        };
        self.start_session(User::from(&user), client, methods).await
    }

    /// A live ticket: unspent, unexpired, not worn out.
    pub(super) async fn live_ticket(&self, ticket: &str) -> Result<mfa_tickets::Model, AuthError> {
        if ticket.is_empty() || ticket.len() > 256 {
            return Err(INVALID_TICKET);
        }
        mfa_tickets::Entity::find_by_id(sha256_hex(ticket.as_bytes()))
            .one(&self.db)
            .await?
            .filter(|t| t.used_at.is_none() && t.expires_at > now() && t.failures < TICKET_FAILURES)
            .ok_or(INVALID_TICKET)
    }
}
