//! Login and registration, each one call: throttle, verify, session, audit.

use super::password::check_length;
use super::{
    Auth, AuthError, ClientInfo, Email, LoginOutcome, Methods, NewAccount, Registered, Role, User,
};

impl Auth {
    /// Registers a user, mails a verification link, and logs them in,
    /// unless login waits for verification.
    pub async fn register(
        &self,
        account: NewAccount,
        client: &ClientInfo,
    ) -> Result<Registered, AuthError> {
        let user = self.create_user(account, Role::User, false).await?;
        metrics::counter!("auth_registrations_total").increment(1);
        tracing::info!(audit = "register", user_id = user.id);
        if self.settings.accounts.require_email_verification {
            return Ok(Registered::VerificationPending(User::from(&user)));
        }
        Ok(Registered::LoggedIn(
            self.start_session(User::from(&user), client, Methods::password())
                .await?,
        ))
    }

    /// Logs in with email and password. Unknown email, inactive user and
    /// wrong password cost one bcrypt verify each and answer alike. A user
    /// with a second factor gets a ticket to redeem with it, not tokens.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client: &ClientInfo,
    ) -> Result<LoginOutcome, AuthError> {
        let email = Email::parse(email)?;
        check_length(password)?;
        self.throttle
            .reserve(&email, client.ip)
            .await
            .inspect_err(|_| {
                metrics::counter!("auth_logins_total", "result" => "throttled").increment(1);
            })?;
        let user = self.find_by_email(&email).await?;
        let matches = self
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await?;
        let user = match user {
            Some(u) if matches && u.is_active => u,
            other => {
                // The reserved attempt stays counted as a failure.
                let reason = match other {
                    None => "unknown_email",
                    Some(u) if !u.is_active => "inactive",
                    Some(_) => "wrong_password",
                };
                metrics::counter!("auth_logins_total", "result" => "failure").increment(1);
                tracing::info!(audit = "login", result = "failure", reason, ip = ?client.ip);
                return Err(AuthError::InvalidCredentials);
            }
        };
        self.throttle.succeeded(&email, client.ip).await;
        if self.settings.accounts.require_email_verification && !user.email_verified {
            metrics::counter!("auth_logins_total", "result" => "unverified").increment(1);
            tracing::info!(audit = "login", result = "unverified", user_id = user.id, ip = ?client.ip);
            return Err(AuthError::EmailNotVerified);
        }
        if let Some(challenge) = self.second_factor_challenge(user.id).await? {
            metrics::counter!("auth_logins_total", "result" => "second_factor").increment(1);
            tracing::info!(audit = "login", result = "second_factor", user_id = user.id, ip = ?client.ip);
            return Ok(LoginOutcome::SecondFactor(challenge));
        }
        metrics::counter!("auth_logins_total", "result" => "success").increment(1);
        tracing::info!(audit = "login", result = "success", user_id = user.id, ip = ?client.ip);
        Ok(LoginOutcome::Tokens(
            self.start_session(User::from(&user), client, Methods::password())
                .await?,
        ))
    }
}
