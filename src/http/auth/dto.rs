//! Request and response bodies of the auth API (never database rows).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{IssuedTokens, MfaChallenge, User};

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    #[schema(example = "user@example.com")]
    pub email: String,
    #[schema(example = "password123", format = Password)]
    pub password: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    #[schema(example = "user@example.com")]
    pub email: String,
    #[schema(example = "password123", format = Password)]
    pub password: String,
}

/// An OAuth2 token request (RFC 6749 §4.3 and §6), form-encoded. The client
/// authenticates with an API key holding the `auth` scope: as the HTTP Basic
/// password (`client_secret_basic`), as `client_secret` here
/// (`client_secret_post`), or as `X-API-Key`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenForm {
    /// `password` (the default) or `refresh_token`.
    #[schema(example = "password")]
    pub grant_type: Option<String>,
    /// The account's email (password grant).
    pub username: Option<String>,
    /// Password grant.
    #[schema(format = Password)]
    pub password: Option<String>,
    /// The refresh token to rotate (refresh_token grant).
    pub refresh_token: Option<String>,
    /// Accepted and ignored: tokens carry the user's role.
    pub scope: Option<String>,
    pub client_id: Option<String>,
    /// An API key with the `auth` scope.
    #[schema(format = Password)]
    pub client_secret: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct LogoutRequest {
    pub refresh_token: Option<String>,
}

/// Old clients also send `email` (and sometimes `is_active`, `role`, `id`);
/// only the names are applied.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ProfileUpdate {
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub is_active: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AdminUserUpdate {
    /// `user` or `admin`.
    pub role: Option<String>,
    pub is_active: Option<bool>,
    /// Mark the address verified (or not).
    pub email_verified: Option<bool>,
    /// Replaces the user's `meta_data` (an object, at most 16 KiB of JSON);
    /// keys listed in `JWT_CUSTOM_CLAIMS` are copied into access tokens.
    #[schema(value_type = Option<Object>)]
    pub meta_data: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangePasswordRequest {
    #[schema(format = Password)]
    pub current_password: String,
    #[schema(format = Password)]
    pub new_password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EmailRequest {
    #[schema(example = "user@example.com")]
    pub email: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetPasswordRequest {
    /// The token of the link in the reset mail.
    pub token: String,
    #[schema(format = Password)]
    pub new_password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LinkTokenRequest {
    /// The token of the link in the mail.
    pub token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangeEmailRequest {
    /// The current password.
    #[schema(format = Password)]
    pub password: String,
    #[schema(example = "new@example.com")]
    pub new_email: String,
}

/// Registration while login waits for a verified address.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredResponse {
    pub message: String,
    pub user: UserResponse,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserListQuery {
    /// 1..=1000, default 100.
    pub limit: Option<u64>,
    /// Default 0.
    pub offset: Option<u64>,
    /// Case-insensitive substring of the email.
    pub email: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserResponse {
    pub id: i32,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub is_active: bool,
    /// RFC 3339, UTC.
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `user` or `admin`.
    pub role: String,
    /// Whether the user proved the address (accounts from before count as verified).
    pub email_verified: bool,
    #[schema(value_type = Object)]
    pub meta_data: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    #[schema(example = "bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Opaque; rotate it at `POST /auth/refresh`.
    pub refresh_token: String,
    pub user: UserResponse,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyResponse {
    pub valid: bool,
    pub user: UserResponse,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageResponse {
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserListResponse {
    pub users: Vec<UserResponse>,
    pub total: u64,
}

impl From<&User> for UserResponse {
    fn from(u: &User) -> Self {
        UserResponse {
            id: u.id,
            email: u.email.clone(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            is_active: u.is_active,
            created_at: u.created_at.and_utc(),
            updated_at: u.updated_at.and_utc(),
            role: u.role.as_str().to_string(),
            email_verified: u.email_verified,
            meta_data: match &u.meta_data {
                serde_json::Value::Null => serde_json::json!({}),
                m => m.clone(),
            },
        }
    }
}

impl From<IssuedTokens> for TokenResponse {
    fn from(t: IssuedTokens) -> Self {
        TokenResponse {
            access_token: t.access_token,
            token_type: "bearer",
            expires_in: t.expires_in,
            refresh_token: t.refresh_token,
            user: UserResponse::from(&t.user),
        }
    }
}

/// What a correct password answers for a user with a second factor: no
/// tokens yet; redeem the ticket at `POST /auth/mfa/verify`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MfaRequiredResponse {
    /// Always true.
    pub mfa_required: bool,
    /// Single use; redeem it within `expires_in` seconds.
    pub mfa_ticket: String,
    /// `totp`, `passkey`, `recovery_code`: those the account has.
    pub methods: Vec<&'static str>,
    pub expires_in: u64,
}

impl From<MfaChallenge> for MfaRequiredResponse {
    fn from(c: MfaChallenge) -> Self {
        MfaRequiredResponse {
            mfa_required: true,
            mfa_ticket: c.ticket,
            methods: c.methods,
            expires_in: c.expires_in,
        }
    }
}

/// Tokens, or for a user with a second factor, a ticket to redeem with it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginResponse {
    Tokens(TokenResponse),
    SecondFactor(MfaRequiredResponse),
}

/// The token endpoint's answer to a password of a user with a second factor
/// (403, as Auth0's `mfa_required`).
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthMfaRequired {
    #[schema(example = "mfa_required")]
    pub error: &'static str,
    pub error_description: String,
    pub detail: String,
    pub mfa_ticket: String,
    pub methods: Vec<&'static str>,
    pub expires_in: u64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct MfaVerifyRequest {
    pub mfa_ticket: String,
    /// A code from the authenticator app; or else:
    #[schema(example = "123456")]
    pub totp_code: Option<String>,
    /// One of the recovery codes (each works once); or else:
    pub recovery_code: Option<String>,
    /// A passkey assertion answering `POST /auth/mfa/passkey/start`.
    pub passkey: Option<PasskeyAssertion>,
}

/// A WebAuthn assertion: `credential` is the browser's
/// `PublicKeyCredential` as JSON (`credential.toJSON()`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct PasskeyAssertion {
    pub ceremony_id: String,
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct MfaTicketRequest {
    pub mfa_ticket: String,
}

/// The options for `navigator.credentials.create` or `.get` (pass
/// `options.publicKey` to `PublicKeyCredential.parse…OptionsFromJSON`), and
/// the id to finish the ceremony with.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyCeremony {
    pub ceremony_id: String,
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasskeyRegistrationRequest {
    pub ceremony_id: String,
    /// Shown in lists; default `Passkey`.
    pub name: Option<String>,
    /// The browser's new `PublicKeyCredential` as JSON (`credential.toJSON()`).
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PasskeyRename {
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PasskeyResponse {
    pub id: i32,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Only when registering the account's first factor: ten recovery
    /// codes, shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_codes: Option<Vec<String>>,
}

impl From<crate::auth::PasskeyInfo> for PasskeyResponse {
    fn from(p: crate::auth::PasskeyInfo) -> Self {
        PasskeyResponse {
            id: p.id,
            name: p.name,
            created_at: p.created_at.and_utc(),
            last_used_at: p.last_used_at.map(|t| t.and_utc()),
            recovery_codes: p.recovery_codes,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct TotpCodeRequest {
    #[schema(example = "123456")]
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnrollResponse {
    /// Base32, for typing into an authenticator app.
    pub secret: String,
    /// `otpauth://totp/…`, for apps that take a link.
    pub otpauth_uri: String,
    /// The URI as an SVG QR code.
    pub qr_svg: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryCodesResponse {
    /// Shown once; each works once in place of a TOTP code.
    pub recovery_codes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MfaStatusResponse {
    pub totp: bool,
    pub passkeys: usize,
    pub recovery_codes_left: u64,
    /// How the current session was established (RFC 8176 `amr`).
    pub session_methods: Vec<String>,
    /// `aal1`, or `aal2` after a second factor.
    pub session_acr: &'static str,
}
