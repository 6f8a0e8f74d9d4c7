//! HTTP handlers of account upkeep: password change and reset, email
//! verification and change.

use actix_web::{HttpRequest, HttpResponse, web};

use super::dto::*;
use super::extract::AuthenticatedUser;
use crate::http::net::client_info;
use crate::http::{ApiError, AppState, ErrorBody};

/// The one answer of a mail request, whether or not a mail goes out.
const MAIL_REQUESTED: &str =
    "If an active account uses this address, a mail with a link is on its way";

fn accepted(message: &str) -> HttpResponse {
    HttpResponse::Accepted().json(MessageResponse {
        message: message.into(),
    })
}

/// Change the caller's password. Every session of the user ends on every
/// replica; the answer carries tokens of a new session.
#[utoipa::path(
    post, path = "/auth/password/change", tag = "accounts",
    request_body = ChangePasswordRequest,
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "Changed; a new session", body = TokenResponse),
        (status = 400, description = "Current password wrong, or new one too short or guessable", body = ErrorBody,
            examples(("wrong_password" = (value = json!({"detail": "Current password is incorrect"}))))),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 422, description = "Password over 72 bytes or malformed body", body = ErrorBody),
        (status = 429, description = "Too many failed attempts; see Retry-After", body = ErrorBody),
    )
)]
pub async fn change_password(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthenticatedUser,
    body: crate::http::body::Json<ChangePasswordRequest>,
) -> Result<HttpResponse, ApiError> {
    let client = client_info(&state.settings.http, &req);
    let tokens = state
        .auth
        .change_password(&user.0, &body.current_password, &body.new_password, &client)
        .await?;
    Ok(HttpResponse::Ok().json(TokenResponse::from(tokens)))
}

/// Forgotten password: mails a single-use reset link to an active account.
/// The answer is the same whether or not the account exists.
#[utoipa::path(
    post, path = "/auth/password/forgot", tag = "accounts",
    request_body = EmailRequest,
    responses(
        (status = 202, description = "Accepted (whether or not the account exists)", body = MessageResponse),
        (status = 422, description = "Invalid email or malformed body", body = ErrorBody),
        (status = 429, description = "Too many requests for this address or client; see Retry-After", body = ErrorBody),
    )
)]
pub async fn forgot_password(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: crate::http::body::Json<EmailRequest>,
) -> Result<HttpResponse, ApiError> {
    let client = client_info(&state.settings.http, &req);
    state
        .auth
        .request_password_reset(&body.email, &client)
        .await?;
    Ok(accepted(MAIL_REQUESTED))
}

/// Set a new password with the token of a reset link. Ends every session
/// of the user and spends the user's other reset links.
#[utoipa::path(
    post, path = "/auth/password/reset", tag = "accounts",
    request_body = ResetPasswordRequest,
    responses(
        (status = 200, description = "Password set; log in with it", body = MessageResponse),
        (status = 400, description = "Invalid, spent or expired token; or a password too short or guessable", body = ErrorBody,
            examples(("bad_token" = (value = json!({"detail": "Invalid or expired token"}))))),
        (status = 422, description = "Password over 72 bytes or malformed body", body = ErrorBody),
    )
)]
pub async fn reset_password(
    state: web::Data<AppState>,
    body: crate::http::body::Json<ResetPasswordRequest>,
) -> Result<HttpResponse, ApiError> {
    state
        .auth
        .reset_password(&body.token, &body.new_password)
        .await?;
    Ok(HttpResponse::Ok().json(MessageResponse {
        message: "Password changed; every session has ended".into(),
    }))
}

/// Mail a new verification link to an active, unverified account. The
/// answer is the same whatever the account's state.
#[utoipa::path(
    post, path = "/auth/email/verify/request", tag = "accounts",
    request_body = EmailRequest,
    responses(
        (status = 202, description = "Accepted (whether or not a mail goes out)", body = MessageResponse),
        (status = 422, description = "Invalid email or malformed body", body = ErrorBody),
        (status = 429, description = "Too many requests for this address or client; see Retry-After", body = ErrorBody),
    )
)]
pub async fn request_verification(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: crate::http::body::Json<EmailRequest>,
) -> Result<HttpResponse, ApiError> {
    let client = client_info(&state.settings.http, &req);
    state
        .auth
        .request_verification(&body.email, &client)
        .await?;
    Ok(accepted(MAIL_REQUESTED))
}

/// Verify the address with the token of a verification link.
#[utoipa::path(
    post, path = "/auth/email/verify", tag = "accounts",
    request_body = LinkTokenRequest,
    responses(
        (status = 200, description = "Verified", body = UserResponse),
        (status = 400, description = "Invalid, spent or expired token", body = ErrorBody),
        (status = 422, description = "Malformed body", body = ErrorBody),
    )
)]
pub async fn verify_email(
    state: web::Data<AppState>,
    body: crate::http::body::Json<LinkTokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = state.auth.verify_email(&body.token).await?;
    Ok(HttpResponse::Ok().json(UserResponse::from(&user)))
}

/// Ask to move the account to a new address (with the current password).
/// The new address gets a confirmation link; nothing changes until it is
/// followed.
#[utoipa::path(
    post, path = "/auth/email/change", tag = "accounts",
    request_body = ChangeEmailRequest,
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 202, description = "Confirmation link mailed to the new address", body = MessageResponse),
        (status = 400, description = "Current password wrong", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 409, description = "The new address belongs to another account", body = ErrorBody),
        (status = 422, description = "Invalid email, the current address, or malformed body", body = ErrorBody),
        (status = 429, description = "Too many failed attempts; see Retry-After", body = ErrorBody),
    )
)]
pub async fn change_email(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthenticatedUser,
    body: crate::http::body::Json<ChangeEmailRequest>,
) -> Result<HttpResponse, ApiError> {
    let client = client_info(&state.settings.http, &req);
    state
        .auth
        .request_email_change(&user.0, &body.password, &body.new_email, &client)
        .await?;
    Ok(accepted(
        "A confirmation link was mailed to the new address; the change happens when it is followed",
    ))
}

/// Confirm an email change with the token of the link mailed to the new
/// address. The old address gets a notice.
#[utoipa::path(
    post, path = "/auth/email/change/confirm", tag = "accounts",
    request_body = LinkTokenRequest,
    responses(
        (status = 200, description = "The account with its new address", body = UserResponse),
        (status = 400, description = "Invalid, spent or expired token", body = ErrorBody),
        (status = 409, description = "The address was taken since the request", body = ErrorBody),
        (status = 422, description = "Malformed body", body = ErrorBody),
    )
)]
pub async fn confirm_email_change(
    state: web::Data<AppState>,
    body: crate::http::body::Json<LinkTokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = state.auth.confirm_email_change(&body.token).await?;
    Ok(HttpResponse::Ok().json(UserResponse::from(&user)))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/auth/password/change").route(web::post().to(change_password)))
        .service(web::resource("/auth/password/forgot").route(web::post().to(forgot_password)))
        .service(web::resource("/auth/password/reset").route(web::post().to(reset_password)))
        .service(
            web::resource("/auth/email/verify/request").route(web::post().to(request_verification)),
        )
        .service(web::resource("/auth/email/verify").route(web::post().to(verify_email)))
        .service(web::resource("/auth/email/change").route(web::post().to(change_email)))
        .service(
            web::resource("/auth/email/change/confirm").route(web::post().to(confirm_email_change)),
        );
}
