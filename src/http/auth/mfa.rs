//! HTTP handlers of second factors: TOTP enrolment, recovery codes, and the
//! second step of a login.

use actix_web::http::header::CACHE_CONTROL;
use actix_web::{HttpRequest, HttpResponse, web};

use super::dto::*;
use super::extract::{Admin, AuthenticatedUser};
use crate::auth::SecondFactor;
use crate::http::net::client_info;
use crate::http::{ApiError, AppState, ErrorBody};

/// The caller's second factors, and how the current session was established.
#[utoipa::path(
    get, path = "/auth/mfa", tag = "mfa",
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "Second factors", body = MfaStatusResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    )
)]
pub async fn status(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
) -> Result<HttpResponse, ApiError> {
    let status = state.auth.mfa_status(&user.0).await?;
    Ok(HttpResponse::Ok().json(MfaStatusResponse {
        totp: status.totp,
        passkeys: status.passkeys,
        recovery_codes_left: status.recovery_codes_left,
        session_methods: user.0.methods.as_slice().to_vec(),
        session_acr: user.0.methods.acr(),
    }))
}

/// Start TOTP enrolment: a secret, its `otpauth://` URI and a QR code. It is
/// in force only after `POST /auth/mfa/totp/activate` with a code from it.
#[utoipa::path(
    post, path = "/auth/mfa/totp", tag = "mfa",
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "A pending secret", body = TotpEnrollResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 409, description = "TOTP is already active", body = ErrorBody),
    )
)]
pub async fn enroll_totp(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
) -> Result<HttpResponse, ApiError> {
    let e = state.auth.totp_enroll(&user.0).await?;
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(TotpEnrollResponse {
            secret: e.secret,
            otpauth_uri: e.otpauth_uri,
            qr_svg: e.qr_svg,
        }))
}

/// Activate TOTP with a code from the pending secret; answers ten recovery
/// codes, shown this once. Logins then need a second factor.
#[utoipa::path(
    post, path = "/auth/mfa/totp/activate", tag = "mfa",
    request_body = TotpCodeRequest,
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "Active; the recovery codes", body = RecoveryCodesResponse),
        (status = 400, description = "Wrong or already used code", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 409, description = "No enrolment is pending", body = ErrorBody),
        (status = 429, description = "Too many failed attempts; see Retry-After", body = ErrorBody),
    )
)]
pub async fn activate_totp(
    state: web::Data<AppState>,
    req: HttpRequest,
    user: AuthenticatedUser,
    body: crate::http::body::Json<TotpCodeRequest>,
) -> Result<HttpResponse, ApiError> {
    let client = client_info(&state.settings.http, &req);
    let codes = state
        .auth
        .totp_activate(&user.0, &body.code, &client)
        .await?;
    Ok(recovery_codes(codes))
}

fn recovery_codes(codes: Vec<String>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(RecoveryCodesResponse {
            recovery_codes: codes,
        })
}

/// Remove the caller's TOTP (the recovery codes go with the last factor);
/// only from a session established with a second factor.
#[utoipa::path(
    delete, path = "/auth/mfa/totp", tag = "mfa",
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "Removed", body = MessageResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The session was established without a second factor", body = ErrorBody),
    )
)]
pub async fn remove_totp(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
) -> Result<HttpResponse, ApiError> {
    state.auth.remove_own_factors(&user.0).await?;
    Ok(HttpResponse::Ok().json(MessageResponse {
        message: "Second factor removed".into(),
    }))
}

/// Replace the recovery codes (the old ones stop working); only from a
/// session established with a second factor.
#[utoipa::path(
    post, path = "/auth/mfa/recovery-codes", tag = "mfa",
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "New recovery codes", body = RecoveryCodesResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The session was established without a second factor", body = ErrorBody),
        (status = 409, description = "No second factor is active", body = ErrorBody),
    )
)]
pub async fn regenerate_recovery_codes(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
) -> Result<HttpResponse, ApiError> {
    let codes = state.auth.regenerate_recovery_codes(&user.0).await?;
    Ok(recovery_codes(codes))
}

/// The second step of a login: redeem the MFA ticket with a TOTP code, a
/// recovery code or a passkey assertion. Answers the usual tokens, with
/// `amr` and `acr: aal2`.
#[utoipa::path(
    post, path = "/auth/mfa/verify", tag = "mfa", operation_id = "mfa_verify",
    request_body = MfaVerifyRequest,
    responses(
        (status = 200, description = "Logged in with two factors", body = TokenResponse),
        (status = 400, description = "Wrong or already used code, or a passkey that does not verify", body = ErrorBody),
        (status = 401, description = "Invalid, spent or expired ticket or passkey ceremony", body = ErrorBody),
        (status = 422, description = "Not exactly one of totp_code, recovery_code and passkey, or a malformed assertion", body = ErrorBody),
        (status = 429, description = "Too many failed attempts; see Retry-After", body = ErrorBody),
    )
)]
pub async fn verify(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: crate::http::body::Json<MfaVerifyRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let assertion = body
        .passkey
        .as_ref()
        .map(|p| super::passkeys::credential(&p.credential))
        .transpose()?;
    let factor = match (
        &body.totp_code,
        &body.recovery_code,
        &body.passkey,
        &assertion,
    ) {
        (Some(code), None, None, _) => SecondFactor::Totp(code),
        (None, Some(code), None, _) => SecondFactor::RecoveryCode(code),
        (None, None, Some(p), Some(credential)) => SecondFactor::Passkey {
            ceremony: &p.ceremony_id,
            credential,
        },
        _ => {
            return Err(ApiError::unprocessable(
                "Give exactly one of totp_code, recovery_code and passkey",
            ));
        }
    };
    let client = client_info(&state.settings.http, &req);
    let tokens = state
        .auth
        .complete_second_factor(&body.mfa_ticket, factor, &client)
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(TokenResponse::from(tokens)))
}

/// Remove a user's second factors and recovery codes (admin; audited).
#[utoipa::path(
    delete, path = "/auth/users/{id}/mfa", tag = "admin",
    params(("id" = i32, Path, description = "User id")),
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "Removed", body = MessageResponse),
        (status = 403, description = "Not an admin, or an admin session without a second factor", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
pub async fn admin_remove(
    state: web::Data<AppState>,
    admin: Admin,
    id: web::Path<i32>,
) -> Result<HttpResponse, ApiError> {
    state
        .auth
        .admin_remove_factors(&admin.0, id.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(MessageResponse {
        message: "Second factors removed".into(),
    }))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/auth/mfa").route(web::get().to(status)))
        .service(
            web::resource("/auth/mfa/totp")
                .route(web::post().to(enroll_totp))
                .route(web::delete().to(remove_totp)),
        )
        .service(web::resource("/auth/mfa/totp/activate").route(web::post().to(activate_totp)))
        .service(
            web::resource("/auth/mfa/recovery-codes")
                .route(web::post().to(regenerate_recovery_codes)),
        )
        .service(web::resource("/auth/mfa/verify").route(web::post().to(verify)))
        .service(web::resource("/auth/users/{id}/mfa").route(web::delete().to(admin_remove)));
}
