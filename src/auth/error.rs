//! What the auth services answer when they refuse. The HTTP edge maps each
//! variant to a status once (`http::error`).

use sea_orm::DbErr;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Malformed input: an email, a name, a role, an overlong password.
    #[error("{0}")]
    Invalid(String),
    /// The original's status and wording.
    #[error("Password must be at least {0} characters")]
    PasswordTooShort(usize),
    #[error(
        "Password is too easy to guess: it is common, has been breached, or is built from your email or name"
    )]
    PasswordGuessable,
    #[error("Email already registered")]
    EmailTaken,
    /// Unknown email, inactive user and wrong password alike.
    #[error("Invalid credentials")]
    InvalidCredentials,
    /// A bearer or refresh token that does not (or no longer) authenticate.
    #[error("{0}")]
    InvalidToken(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("User not found")]
    UserNotFound,
    #[error("Too many failed login attempts; try again later")]
    Throttled { retry_after: u64 },
    #[error("Too many mail requests for this address or client; try again later")]
    MailThrottled { retry_after: u64 },
    #[error(
        "Email address not verified: follow the link in the verification mail, or ask for a new one at POST /auth/email/verify/request"
    )]
    EmailNotVerified,
    /// A mailed link's token that is unknown, spent, expired or superseded.
    #[error("Invalid or expired token")]
    InvalidLink,
    /// A second-factor code that is wrong, or already used.
    #[error("Invalid or already used code")]
    WrongCode,
    /// Something only a session established with a second factor may do.
    #[error(
        "This needs a session established with a second factor: log in again and complete POST /auth/mfa/verify"
    )]
    SecondFactorRequired,
    #[error("{0}")]
    Conflict(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    /// A WebAuthn response that does not verify.
    #[error("Passkey verification failed")]
    PasskeyRejected,
    /// The current password, asked again before a sensitive change.
    #[error("Current password is incorrect")]
    WrongPassword,
    #[error(transparent)]
    Database(#[from] DbErr),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl AuthError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        AuthError::Invalid(msg.into())
    }

    /// A write that hit the unique index of emails is a taken address.
    pub fn email_taken_or(e: DbErr) -> Self {
        match e.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => AuthError::EmailTaken,
            _ => e.into(),
        }
    }
}
