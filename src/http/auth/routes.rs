//! HTTP handlers of `/auth/*`: translate requests, call the service, answer.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};

use super::answers;
use super::dto::*;
use super::extract::{Admin, AuthenticatedUser};
use crate::auth::{AdminChange, LoginOutcome, NewAccount, Registered, UserFilter};
use crate::http::net::client_info;
use crate::http::{ApiError, AppState, ErrorBody};

// Verify's headers, named once rather than parsed on every answer.
const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
const X_USER_EMAIL: HeaderName = HeaderName::from_static("x-user-email");
const X_USER_ROLE: HeaderName = HeaderName::from_static("x-user-role");
const X_USER_ACR: HeaderName = HeaderName::from_static("x-user-acr");
const X_USER_AMR: HeaderName = HeaderName::from_static("x-user-amr");

/// Register a user; answers tokens like login. A verification link is
/// mailed to the address; with `REQUIRE_EMAIL_VERIFICATION` the answer is
/// 202 without tokens, and login waits for the link.
#[utoipa::path(
    post, path = "/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered and logged in", body = TokenResponse),
        (status = 202, description = "Registered; log in after following the mailed link", body = RegisteredResponse),
        (status = 400, description = "Password too short", body = ErrorBody),
        (status = 409, description = "Email already registered", body = ErrorBody),
        (status = 422, description = "Invalid email, password over 72 bytes, or malformed body", body = ErrorBody),
    )
)]
pub async fn register(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: crate::http::body::Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let account = NewAccount::parse(&body.email, body.password, body.first_name, body.last_name)?;
    let registered = state
        .auth
        .register(account, &client_info(&state.settings.http, &req))
        .await?;
    Ok(match registered {
        Registered::LoggedIn(tokens) => HttpResponse::Created().json(TokenResponse::from(tokens)),
        Registered::VerificationPending(user) => {
            HttpResponse::Accepted().json(RegisteredResponse {
                message: "Registered: follow the link mailed to your address, then log in".into(),
                user: UserResponse::from(&user),
            })
        }
    })
}

/// Log in with email and password. A user with a second factor gets an MFA
/// ticket (`mfa_required: true`) instead of tokens; redeem it at
/// `POST /auth/mfa/verify`.
#[utoipa::path(
    post, path = "/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in, or a second factor is needed", body = LoginResponse),
        (status = 401, description = "Invalid credentials", body = ErrorBody,
            examples(("bad_credentials" = (value = json!({"detail": "Invalid credentials"}))))),
        (status = 403, description = "Address not verified (REQUIRE_EMAIL_VERIFICATION)", body = ErrorBody),
        (status = 422, description = "Malformed body or email", body = ErrorBody),
        (status = 429, description = "Too many failed attempts; see Retry-After", body = ErrorBody),
    )
)]
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: crate::http::body::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let client = client_info(&state.settings.http, &req);
    let answer = match state
        .auth
        .login(&body.email, &body.password, &client)
        .await?
    {
        LoginOutcome::Tokens(tokens) => LoginResponse::Tokens(TokenResponse::from(tokens)),
        LoginOutcome::SecondFactor(challenge) => {
            LoginResponse::SecondFactor(MfaRequiredResponse::from(challenge))
        }
    };
    Ok(HttpResponse::Ok().json(answer))
}

/// Rotate a refresh token: answers new tokens; the old refresh token is spent.
#[utoipa::path(
    post, path = "/auth/refresh", tag = "auth",
    request_body(content(
        (RefreshRequest = "application/json"),
        (RefreshRequest = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "Rotated", body = TokenResponse),
        (status = 401, description = "Invalid, expired or reused refresh token", body = ErrorBody,
            examples(
                ("bad_refresh" = (value = json!({"detail": "Invalid refresh token"}))),
                ("reused_refresh" = (value = json!({"detail": "Refresh token reuse detected"}))),
            )),
    )
)]
pub async fn refresh(
    state: web::Data<AppState>,
    body: crate::http::body::JsonOrForm<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let tokens = state.auth.refresh(&body.0.refresh_token).await?;
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(TokenResponse::from(tokens)))
}

/// End the session of the bearer token (and of a given refresh token).
#[utoipa::path(
    post, path = "/auth/logout", tag = "auth",
    request_body(content = Option<LogoutRequest>, description = "Optional"),
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "Logged out", body = MessageResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    )
)]
pub async fn logout(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    body: crate::http::body::MaybeJson<LogoutRequest>,
) -> Result<HttpResponse, ApiError> {
    let refresh = body.0.and_then(|b| b.refresh_token);
    state.auth.logout(&user.0, refresh.as_deref()).await?;
    Ok(HttpResponse::Ok().json(MessageResponse {
        message: "Logged out successfully".into(),
    }))
}

/// Verify a bearer token. Also a forward-auth endpoint for gateways (nginx
/// `auth_request`, Traefik ForwardAuth, Envoy ext_authz): 200 with `X-User-*`
/// headers, or 401 with `WWW-Authenticate`.
#[utoipa::path(
    get, path = "/auth/verify", tag = "auth",
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "Valid token", body = VerifyResponse,
            headers(
                ("X-User-Id" = String, description = "User id"),
                ("X-User-Email" = String, description = "User email"),
                ("X-User-Role" = String, description = "user or admin"),
                ("X-User-Acr" = String, description = "aal1, or aal2 for a session established with a second factor"),
                ("X-User-Amr" = String, description = "How the session was established (RFC 8176), comma separated: pwd, otp, mfa"),
            )),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
    )
)]
pub async fn verify(user: AuthenticatedUser) -> HttpResponse {
    let answer = answers::verify_answer(&user.0.user);
    let methods = &user.0.methods;
    // Static values where they are static: a `&str` header is copied.
    let amr = match methods.issued() {
        Some(set) => HeaderValue::from_static(set),
        None => HeaderValue::try_from(methods.stored()).unwrap_or(HeaderValue::from_static("")),
    };
    let mut resp = HttpResponse::Ok();
    resp.insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .insert_header((X_USER_ID, answer.id))
        .insert_header((
            X_USER_ROLE,
            HeaderValue::from_static(user.0.user.role.as_str()),
        ))
        .insert_header((X_USER_ACR, HeaderValue::from_static(methods.acr())))
        .insert_header((X_USER_AMR, amr))
        .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")));
    if let Some(email) = answer.email {
        resp.insert_header((X_USER_EMAIL, email));
    }
    resp.body(answer.body)
}

/// The caller's profile.
#[utoipa::path(
    get, path = "/auth/profile", tag = "auth",
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "Profile", body = UserResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    )
)]
pub async fn get_profile(user: AuthenticatedUser) -> HttpResponse {
    HttpResponse::Ok().json(UserResponse::from(&*user.0.user))
}

/// Update the caller's names. `email`, `is_active`, `role` and `id` in the
/// body are accepted for old clients and ignored.
#[utoipa::path(
    put, path = "/auth/profile", tag = "auth",
    request_body = ProfileUpdate,
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "Updated profile", body = UserResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 422, description = "Name over 100 characters or malformed body", body = ErrorBody),
    )
)]
pub async fn put_profile(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    body: crate::http::body::Json<ProfileUpdate>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let updated = state
        .auth
        .update_profile(user.0.user.id, body.first_name, body.last_name)
        .await?;
    Ok(HttpResponse::Ok().json(UserResponse::from(&updated)))
}

/// List users (admin).
#[utoipa::path(
    get, path = "/auth/users", tag = "admin",
    params(UserListQuery),
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "A page of users", body = UserListResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 422, description = "limit outside 1..=1000", body = ErrorBody),
    )
)]
pub async fn list_users(
    state: web::Data<AppState>,
    _admin: Admin,
    query: web::Query<UserListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let filter = UserFilter::parse(q.limit, q.offset, q.email)?;
    let (users, total) = state.auth.list_users(&filter).await?;
    Ok(HttpResponse::Ok().json(UserListResponse {
        users: users.iter().map(UserResponse::from).collect(),
        total,
    }))
}

/// One user (admin).
#[utoipa::path(
    get, path = "/auth/users/{id}", tag = "admin",
    params(("id" = i32, Path, description = "User id")),
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "The user", body = UserResponse),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
pub async fn get_user(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<i32>,
) -> Result<HttpResponse, ApiError> {
    let user = state.auth.get_user(id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(UserResponse::from(&user)))
}

/// Change a user's role, active flag, verified flag or `meta_data` (admin).
/// Deactivation ends the user's sessions at once.
#[utoipa::path(
    patch, path = "/auth/users/{id}", tag = "admin",
    params(("id" = i32, Path, description = "User id")),
    request_body = AdminUserUpdate,
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "The updated user", body = UserResponse),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 422, description = "Unknown role, or meta_data not an object or too large", body = ErrorBody),
    )
)]
pub async fn patch_user(
    state: web::Data<AppState>,
    admin: Admin,
    id: web::Path<i32>,
    body: crate::http::body::Json<AdminUserUpdate>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let change = AdminChange::parse(
        body.role.as_deref(),
        body.is_active,
        body.email_verified,
        body.meta_data,
    )?;
    let user = state
        .auth
        .admin_update(&admin.0, id.into_inner(), change)
        .await?;
    Ok(HttpResponse::Ok().json(UserResponse::from(&user)))
}

/// Deactivate an account (soft delete). Users may delete only themselves;
/// admins anyone. Ends all of the user's sessions.
#[utoipa::path(
    delete, path = "/auth/users/{id}", tag = "auth",
    params(("id" = i32, Path, description = "User id")),
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "Deactivated", body = MessageResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Can only delete your own account", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
pub async fn delete_user(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    id: web::Path<i32>,
) -> Result<HttpResponse, ApiError> {
    state.auth.deactivate(&user.0, id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(MessageResponse {
        message: "User account deactivated successfully".into(),
    }))
}

/// Public keys of asymmetric signing (empty with HS256: a secret is never published).
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "auth",
    security(()),
    responses((status = 200, description = "JSON Web Key Set", body = Object))
)]
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "public, max-age=300"))
        .json(state.auth.jwt.jwks())
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/auth/register").route(web::post().to(register)))
        .service(web::resource("/auth/login").route(web::post().to(login)))
        .service(web::resource("/auth/token").route(web::post().to(super::oauth::token)))
        .service(web::resource("/auth/refresh").route(web::post().to(refresh)))
        .service(web::resource("/auth/logout").route(web::post().to(logout)))
        .service(web::resource("/auth/verify").route(web::get().to(verify)))
        .service(
            web::resource("/auth/profile")
                .route(web::get().to(get_profile))
                .route(web::put().to(put_profile)),
        )
        .configure(super::accounts::routes)
        .configure(super::mfa::routes)
        .configure(super::passkeys::routes)
        .service(web::resource("/auth/users").route(web::get().to(list_users)))
        .service(
            web::resource("/auth/users/{id}")
                .route(web::get().to(get_user))
                .route(web::patch().to(patch_user))
                .route(web::delete().to(delete_user)),
        )
        .service(web::resource("/.well-known/jwks.json").route(web::get().to(jwks)));
}
