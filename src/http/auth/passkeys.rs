//! HTTP handlers of passkeys: registration, list, rename, delete, the
//! second step of a login, and passwordless login.

use actix_web::http::header::CACHE_CONTROL;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::de::DeserializeOwned;

use super::dto::*;
use super::extract::AuthenticatedUser;
use crate::http::net::client_info;
use crate::http::{ApiError, AppState, ErrorBody};

/// A WebAuthn credential from its JSON; a malformed one is a 422.
pub fn credential<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(value.clone()).map_err(|e| {
        ApiError::unprocessable(format!("credential is not a WebAuthn credential: {e}"))
    })
}

fn ceremony(id: String, options: serde_json::Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(PasskeyCeremony {
            ceremony_id: id,
            options,
        })
}

/// Start registering a passkey: options for `navigator.credentials.create`.
#[utoipa::path(
    post, path = "/auth/passkeys/register/start", tag = "mfa",
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "A registration ceremony", body = PasskeyCeremony),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    )
)]
pub async fn register_start(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
) -> Result<HttpResponse, ApiError> {
    let (id, options) = state.auth.passkey_register_start(&user.0).await?;
    Ok(ceremony(id, options))
}

/// Finish registering a passkey with the browser's new credential. The
/// passkey then serves as a second factor and for passwordless login.
#[utoipa::path(
    post, path = "/auth/passkeys/register/finish", tag = "mfa",
    request_body = PasskeyRegistrationRequest,
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 201, description = "Registered", body = PasskeyResponse),
        (status = 400, description = "The credential does not verify", body = ErrorBody),
        (status = 401, description = "Missing or invalid token, or an unknown, spent or expired ceremony", body = ErrorBody),
        (status = 422, description = "Malformed credential or a name over 100 characters", body = ErrorBody),
    )
)]
pub async fn register_finish(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    body: crate::http::body::Json<PasskeyRegistrationRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let cred = credential(&body.credential)?;
    let info = state
        .auth
        .passkey_register_finish(&user.0, &body.ceremony_id, body.name, &cred)
        .await?;
    Ok(HttpResponse::Created().json(PasskeyResponse::from(info)))
}

/// The caller's passkeys.
#[utoipa::path(
    get, path = "/auth/passkeys", tag = "mfa",
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "Passkeys", body = Vec<PasskeyResponse>),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    )
)]
pub async fn list(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
) -> Result<HttpResponse, ApiError> {
    let keys = state.auth.list_passkeys(&user.0).await?;
    Ok(HttpResponse::Ok().json(
        keys.into_iter()
            .map(PasskeyResponse::from)
            .collect::<Vec<_>>(),
    ))
}

/// Rename one of the caller's passkeys.
#[utoipa::path(
    patch, path = "/auth/passkeys/{id}", tag = "mfa",
    params(("id" = i32, Path, description = "Passkey id")),
    request_body = PasskeyRename,
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "Renamed", body = PasskeyResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such passkey of the caller", body = ErrorBody),
        (status = 422, description = "A name of 1 to 100 characters", body = ErrorBody),
    )
)]
pub async fn rename(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    id: web::Path<i32>,
    body: crate::http::body::Json<PasskeyRename>,
) -> Result<HttpResponse, ApiError> {
    let info = state
        .auth
        .rename_passkey(&user.0, id.into_inner(), &body.name)
        .await?;
    Ok(HttpResponse::Ok().json(PasskeyResponse::from(info)))
}

/// Delete one of the caller's passkeys; only from a session established
/// with a second factor.
#[utoipa::path(
    delete, path = "/auth/passkeys/{id}", tag = "mfa",
    params(("id" = i32, Path, description = "Passkey id")),
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "Deleted", body = MessageResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The session was established without a second factor", body = ErrorBody),
        (status = 404, description = "No such passkey of the caller", body = ErrorBody),
    )
)]
pub async fn delete(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    id: web::Path<i32>,
) -> Result<HttpResponse, ApiError> {
    state.auth.delete_passkey(&user.0, id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(MessageResponse {
        message: "Passkey deleted".into(),
    }))
}

/// Start the second step of a login with a passkey: options for
/// `navigator.credentials.get`; finish at `POST /auth/mfa/verify`.
#[utoipa::path(
    post, path = "/auth/mfa/passkey/start", tag = "mfa",
    request_body = MfaTicketRequest,
    responses(
        (status = 200, description = "An assertion ceremony", body = PasskeyCeremony),
        (status = 401, description = "Invalid, spent or expired ticket", body = ErrorBody),
        (status = 409, description = "The account has no passkey", body = ErrorBody),
    )
)]
pub async fn second_factor_start(
    state: web::Data<AppState>,
    body: crate::http::body::Json<MfaTicketRequest>,
) -> Result<HttpResponse, ApiError> {
    let (id, options) = state
        .auth
        .passkey_second_factor_start(&body.mfa_ticket)
        .await?;
    Ok(ceremony(id, options))
}

/// Start a passwordless login: options for `navigator.credentials.get`,
/// which offers the user's passkeys for this site.
#[utoipa::path(
    post, path = "/auth/passkeys/login/start", tag = "mfa",
    responses((status = 200, description = "An assertion ceremony", body = PasskeyCeremony))
)]
pub async fn login_start(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (id, options) = state.auth.passkey_login_start().await?;
    Ok(ceremony(id, options))
}

/// Finish a passwordless login with the browser's assertion: the usual
/// tokens, with `amr: ["hwk", "mfa"]` and `acr: aal2`.
#[utoipa::path(
    post, path = "/auth/passkeys/login/finish", tag = "mfa",
    request_body = PasskeyAssertion,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 400, description = "The assertion does not verify, or names no known passkey", body = ErrorBody),
        (status = 401, description = "Unknown, spent or expired ceremony", body = ErrorBody),
        (status = 403, description = "Address not verified (REQUIRE_EMAIL_VERIFICATION)", body = ErrorBody),
        (status = 422, description = "Malformed credential", body = ErrorBody),
    )
)]
pub async fn login_finish(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: crate::http::body::Json<PasskeyAssertion>,
) -> Result<HttpResponse, ApiError> {
    let cred = credential(&body.credential)?;
    let client = client_info(&state.settings.http, &req);
    let tokens = state
        .auth
        .passkey_login_finish(&body.ceremony_id, &cred, &client)
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(TokenResponse::from(tokens)))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/auth/passkeys").route(web::get().to(list)))
        .service(
            web::resource("/auth/passkeys/register/start").route(web::post().to(register_start)),
        )
        .service(
            web::resource("/auth/passkeys/register/finish").route(web::post().to(register_finish)),
        )
        .service(web::resource("/auth/passkeys/login/start").route(web::post().to(login_start)))
        .service(web::resource("/auth/passkeys/login/finish").route(web::post().to(login_finish)))
        .service(
            web::resource("/auth/passkeys/{id}")
                .route(web::patch().to(rename))
                .route(web::delete().to(delete)),
        )
        .service(
            web::resource("/auth/mfa/passkey/start").route(web::post().to(second_factor_start)),
        );
}
