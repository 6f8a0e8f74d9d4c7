//! Account upkeep: password change and reset, email verification and
//! change. Every mail is written to the outbox in the transaction of the
//! change that causes it; links carry single-use tokens stored as digests.

use std::time::Duration;

use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use serde_json::json;

use super::password::check_length;
use super::{
    Auth, AuthError, ClientInfo, Email, IssuedTokens, Methods, Principal, User, sha256_hex,
};
use crate::entity::{user_tokens, users};
use crate::mail::{self, Kind, Outgoing};
use crate::time::now;

/// What a mailed link's token is good for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    PasswordReset,
    VerifyEmail,
    EmailChange,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::PasswordReset => "password_reset",
            Purpose::VerifyEmail => "verify_email",
            Purpose::EmailChange => "email_change",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Purpose::PasswordReset => Kind::PasswordReset,
            Purpose::VerifyEmail => Kind::VerifyEmail,
            Purpose::EmailChange => Kind::EmailChange,
        }
    }
}

/// The least time a mail request by address takes. The two paths do the
/// same kind of write, but a found account costs one more insert and a
/// busier sender; answering no earlier than this hides the difference.
const MAIL_REQUEST_FLOOR: Duration = Duration::from_millis(40);

/// "1 hour", "24 hours", "30 minutes": how long a link works, for the mail.
fn human(d: Duration) -> String {
    let (n, unit) = match d.as_secs() {
        s if s >= 3600 && s % 3600 == 0 => (s / 3600, "hour"),
        s if s >= 60 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Template values every mail to a user gets, plus `extra`.
fn params(user: &users::Model, extra: serde_json::Value) -> serde_json::Value {
    let mut values = json!({ "first_name": user.first_name });
    if let (Some(v), serde_json::Value::Object(extra)) = (values.as_object_mut(), extra) {
        v.extend(extra);
    }
    values
}

impl Auth {
    fn link_ttl(&self, purpose: Purpose) -> Duration {
        match purpose {
            Purpose::PasswordReset => self.settings.accounts.reset_ttl,
            Purpose::VerifyEmail | Purpose::EmailChange => self.settings.accounts.verification_ttl,
        }
    }

    /// Writes a link's token digest and its mail on `conn` (the caller's transaction).
    pub(super) async fn mail_link<C: ConnectionTrait>(
        &self,
        conn: &C,
        user: &users::Model,
        purpose: Purpose,
        to: &str,
        extra: serde_json::Value,
    ) -> Result<(), AuthError> {
        let ttl = self.link_ttl(purpose);
        let link = self.mail.new_link();
        let ts = now();
        user_tokens::ActiveModel {
            token_hash: Set(link.digest),
            user_id: Set(user.id),
            purpose: Set(purpose.as_str().to_string()),
            email: Set(Some(to.to_string())),
            created_at: Set(ts),
            expires_at: Set(ts + ttl),
            used_at: Set(None),
        }
        .insert(conn)
        .await?;
        let mut values = params(user, extra);
        values["valid_for"] = human(ttl).into();
        mail::enqueue(
            conn,
            Outgoing {
                kind: purpose.kind(),
                recipient: to.to_string(),
                user_id: Some(user.id),
                params: values,
                link_nonce: Some(link.nonce),
            },
        )
        .await?;
        Ok(())
    }

    async fn mail_notice<C: ConnectionTrait>(
        &self,
        conn: &C,
        user: &users::Model,
        kind: Kind,
        to: &str,
        extra: serde_json::Value,
    ) -> Result<(), AuthError> {
        let mail = Outgoing {
            kind,
            recipient: to.to_string(),
            user_id: Some(user.id),
            params: params(user, extra),
            link_nonce: None,
        };
        mail::enqueue(conn, mail).await?;
        Ok(())
    }

    /// Marks every outstanding token of `purpose` of a user spent.
    async fn spend_all<C: ConnectionTrait>(
        conn: &C,
        user_id: i32,
        purpose: Purpose,
    ) -> Result<(), AuthError> {
        user_tokens::Entity::update_many()
            .col_expr(user_tokens::Column::UsedAt, Expr::value(now()))
            .filter(user_tokens::Column::UserId.eq(user_id))
            .filter(user_tokens::Column::Purpose.eq(purpose.as_str()))
            .filter(user_tokens::Column::UsedAt.is_null())
            .exec(conn)
            .await?;
        Ok(())
    }

    /// The unspent, unexpired token of `purpose` and its active user.
    async fn redeemable(
        &self,
        token: &str,
        purpose: Purpose,
    ) -> Result<(user_tokens::Model, users::Model), AuthError> {
        if token.is_empty() || token.len() > 256 {
            return Err(AuthError::InvalidLink);
        }
        let row = user_tokens::Entity::find_by_id(sha256_hex(token.as_bytes()))
            .one(&self.db)
            .await?
            .filter(|t| {
                t.purpose == purpose.as_str() && t.used_at.is_none() && t.expires_at > now()
            })
            .ok_or(AuthError::InvalidLink)?;
        let user = self
            .find_active(row.user_id)
            .await?
            .ok_or(AuthError::InvalidLink)?;
        Ok((row, user))
    }

    /// Spends a token on `conn`: of two redemptions racing, one wins.
    async fn spend<C: ConnectionTrait>(
        conn: &C,
        token: &user_tokens::Model,
    ) -> Result<(), AuthError> {
        let spent = user_tokens::Entity::update_many()
            .col_expr(user_tokens::Column::UsedAt, Expr::value(now()))
            .filter(user_tokens::Column::TokenHash.eq(token.token_hash.clone()))
            .filter(user_tokens::Column::UsedAt.is_null())
            .exec(conn)
            .await?
            .rows_affected;
        if spent == 1 {
            Ok(())
        } else {
            Err(AuthError::InvalidLink)
        }
    }

    /// Tokens of a user past their expiry are of no further use.
    async fn forget_expired_tokens(&self, user_id: i32) {
        let _ = user_tokens::Entity::delete_many()
            .filter(user_tokens::Column::UserId.eq(user_id))
            .filter(user_tokens::Column::ExpiresAt.lt(now()))
            .exec(&self.db)
            .await;
    }

    /// A mail request by address (password reset, verification): throttled
    /// per email and client IP; answered alike whether or not anything is
    /// sent, after the same kind of write and no sooner than a floor, so
    /// neither the answer nor its timing tells whether the account exists.
    async fn request_by_email(
        &self,
        email: &str,
        client: &ClientInfo,
        purpose: Purpose,
        wanted: impl Fn(&users::Model) -> bool,
    ) -> Result<(), AuthError> {
        let floor = tokio::time::Instant::now() + MAIL_REQUEST_FLOOR;
        let email = Email::parse(email)?;
        self.mail_throttle
            .reserve(&email, client.ip)
            .await
            .map_err(|e| match e {
                AuthError::Throttled { retry_after } => AuthError::MailThrottled { retry_after },
                other => other,
            })?;
        let user = self
            .find_by_email(&email)
            .await?
            .filter(|u| u.is_active && wanted(u));
        let txn = crate::db::begin_write(&self.db).await?;
        match &user {
            Some(u) => {
                self.mail_link(&txn, u, purpose, &u.email, json!({}))
                    .await?
            }
            None => mail::record_unsent(&txn, purpose.kind(), email.as_str()).await?,
        }
        txn.commit().await?;
        self.mail.wake();
        let sent = user.is_some();
        metrics::counter!("auth_mail_requests_total", "kind" => purpose.as_str(), "sent" => sent.to_string())
            .increment(1);
        tracing::info!(audit = purpose.as_str(), stage = "requested", user_id = user.map(|u| u.id), ip = ?client.ip);
        tokio::time::sleep_until(floor).await;
        Ok(())
    }

    /// Forgotten password: mails a reset link to an active account.
    pub async fn request_password_reset(
        &self,
        email: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        self.request_by_email(email, client, Purpose::PasswordReset, |_| true)
            .await
    }

    /// Sets a new password with a reset link's token: every session ends and
    /// every other reset token of the user is spent. Receiving the mail
    /// proves the address, so it counts as verified.
    pub async fn reset_password(&self, token: &str, new_password: &str) -> Result<(), AuthError> {
        check_length(new_password)?;
        let (row, user) = self.redeemable(token, Purpose::PasswordReset).await?;
        self.check_password_for(&user, new_password)?;
        let hash = self.hasher.hash(new_password).await?;
        let user = self
            .replace_password(user, hash, Some(&row), "password_reset")
            .await?;
        self.forget_expired_tokens(user.id).await;
        metrics::counter!("auth_password_changes_total", "how" => "reset").increment(1);
        tracing::info!(
            audit = "password_reset",
            stage = "redeemed",
            user_id = user.id
        );
        Ok(())
    }

    /// Stores a new password hash, spending the reset link redeemed (which
    /// also proves the address) and every other one, with a notice mail;
    /// then ends every session of the user.
    async fn replace_password(
        &self,
        user: users::Model,
        hash: String,
        redeemed: Option<&user_tokens::Model>,
        reason: &str,
    ) -> Result<User, AuthError> {
        let txn = crate::db::begin_write(&self.db).await?;
        if let Some(row) = redeemed {
            Self::spend(&txn, row).await?;
        }
        Self::spend_all(&txn, user.id, Purpose::PasswordReset).await?;
        let mut active: users::ActiveModel = user.into();
        active.password_hash = Set(hash);
        if redeemed.is_some() {
            active.email_verified = Set(true);
        }
        active.updated_at = Set(now());
        let updated = active.update(&txn).await?;
        self.mail_notice(
            &txn,
            &updated,
            Kind::PasswordChanged,
            &updated.email,
            json!({}),
        )
        .await?;
        txn.commit().await?;
        self.mail.wake();
        let user = self.publish_user(&updated).await;
        self.revoke_user_sessions(user.id, reason).await?;
        Ok(user)
    }

    fn check_password_for(&self, user: &users::Model, password: &str) -> Result<(), AuthError> {
        self.check_password_of(
            password,
            &user.email,
            user.first_name.as_deref(),
            user.last_name.as_deref(),
        )
    }

    /// Checks the caller's current password, throttled like a login.
    async fn confirm_password(
        &self,
        user: &users::Model,
        password: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        check_length(password)?;
        let email = Email::parse(&user.email)?;
        self.throttle.reserve(&email, client.ip).await?;
        if !self
            .hasher
            .verify(password, Some(user.password_hash.as_str()))
            .await?
        {
            tracing::info!(audit = "password_confirmation", result = "failure", user_id = user.id, ip = ?client.ip);
            return Err(AuthError::WrongPassword);
        }
        self.throttle.succeeded(&email, client.ip).await;
        Ok(())
    }

    async fn active_user(&self, principal: &Principal) -> Result<users::Model, AuthError> {
        self.find_active(principal.user.id)
            .await?
            .ok_or(AuthError::InvalidToken("User not found or inactive"))
    }

    /// Changes the caller's password: the same rules as registration; every
    /// session of the user ends (on every replica) and the caller gets a new one.
    pub async fn change_password(
        &self,
        principal: &Principal,
        current: &str,
        new_password: &str,
        client: &ClientInfo,
    ) -> Result<IssuedTokens, AuthError> {
        check_length(new_password)?;
        let user = self.active_user(principal).await?;
        self.confirm_password(&user, current, client).await?;
        self.check_password_for(&user, new_password)?;
        let hash = self.hasher.hash(new_password).await?;
        let user = self
            .replace_password(user, hash, None, "password_change")
            .await?;
        metrics::counter!("auth_password_changes_total", "how" => "change").increment(1);
        tracing::info!(audit = "password_change", user_id = user.id, ip = ?client.ip);
        // The caller proved the password again, and nothing more.
        self.start_session(user, client, Methods::password()).await
    }

    /// Mails a new verification link to an active, unverified account.
    pub async fn request_verification(
        &self,
        email: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        self.request_by_email(email, client, Purpose::VerifyEmail, |u| !u.email_verified)
            .await
    }

    /// Marks the address verified with a verification link's token. A link
    /// sent to an address the account no longer has proves nothing.
    pub async fn verify_email(&self, token: &str) -> Result<User, AuthError> {
        let (row, user) = self.redeemable(token, Purpose::VerifyEmail).await?;
        if !row
            .email
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case(&user.email))
        {
            return Err(AuthError::InvalidLink);
        }
        let txn = crate::db::begin_write(&self.db).await?;
        Self::spend(&txn, &row).await?;
        let mut active: users::ActiveModel = user.into();
        active.email_verified = Set(true);
        active.updated_at = Set(now());
        let updated = active.update(&txn).await?;
        txn.commit().await?;
        metrics::counter!("auth_email_verifications_total").increment(1);
        tracing::info!(audit = "email_verified", user_id = updated.id);
        self.forget_expired_tokens(updated.id).await;
        Ok(self.publish_user(&updated).await)
    }

    /// Asks to move the account to `new_email`: with the current password;
    /// the new address gets a confirmation link and nothing changes until it
    /// is followed.
    pub async fn request_email_change(
        &self,
        principal: &Principal,
        password: &str,
        new_email: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let new_email = Email::parse(new_email)?;
        let user = self.active_user(principal).await?;
        if user.email.eq_ignore_ascii_case(new_email.as_str()) {
            return Err(AuthError::invalid(
                "new_email is the account's current address",
            ));
        }
        self.confirm_password(&user, password, client).await?;
        if self.find_by_email(&new_email).await?.is_some() {
            return Err(AuthError::EmailTaken);
        }
        let txn = crate::db::begin_write(&self.db).await?;
        // One pending change at a time: an earlier link stops working.
        Self::spend_all(&txn, user.id, Purpose::EmailChange).await?;
        self.mail_link(
            &txn,
            &user,
            Purpose::EmailChange,
            new_email.as_str(),
            json!({ "old_email": user.email }),
        )
        .await?;
        txn.commit().await?;
        self.mail.wake();
        tracing::info!(audit = "email_change", stage = "requested", user_id = user.id, ip = ?client.ip);
        Ok(())
    }

    /// Moves the account to the address the link was sent to; the old
    /// address gets a notice. The unique index keeps addresses unique: an
    /// address taken since the request answers 409 and changes nothing.
    pub async fn confirm_email_change(&self, token: &str) -> Result<User, AuthError> {
        let (row, user) = self.redeemable(token, Purpose::EmailChange).await?;
        let new_email = row.email.clone().ok_or(AuthError::InvalidLink)?;
        let old_email = user.email.clone();
        let txn = crate::db::begin_write(&self.db).await?;
        Self::spend(&txn, &row).await?;
        Self::spend_all(&txn, user.id, Purpose::VerifyEmail).await?;
        let mut active: users::ActiveModel = user.into();
        active.email = Set(new_email.clone());
        active.email_verified = Set(true);
        active.updated_at = Set(now());
        let updated = active
            .update(&txn)
            .await
            .map_err(AuthError::email_taken_or)?;
        self.mail_notice(
            &txn,
            &updated,
            Kind::EmailChanged,
            &old_email,
            json!({ "new_email": new_email }),
        )
        .await?;
        txn.commit().await?;
        self.mail.wake();
        metrics::counter!("auth_email_changes_total").increment(1);
        tracing::info!(
            audit = "email_change",
            stage = "confirmed",
            user_id = updated.id
        );
        self.forget_expired_tokens(updated.id).await;
        Ok(self.publish_user(&updated).await)
    }
}
