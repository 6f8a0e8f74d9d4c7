//! HTTP handlers of `/auth/*`: translate requests, call the service, answer.

use actix_web::http::header::{CACHE_CONTROL, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};

use super::dto::*;
use super::extract::{Admin, AuthenticatedUser};
use super::password::MAX_PASSWORD_BYTES;
use super::service::{self, ClientInfo, ROLE_USER};
use super::throttle;
use crate::entity::users;
use crate::error::{ApiError, ErrorBody};
use crate::middleware::{API_KEY_HEADER, ApiKeyPresented, ApiKeys};
use crate::state::AppState;
use actix_web::HttpMessage;
use sea_orm::EntityTrait;

fn client_info(state: &AppState, req: &HttpRequest) -> ClientInfo {
    ClientInfo {
        ip: crate::net::client_ip(req, &state.trusted_proxies),
        user_agent: req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(1000).collect()),
    }
}

/// Register a user; answers tokens like login.
#[utoipa::path(
    post, path = "/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered and logged in", body = TokenResponse),
        (status = 400, description = "Password too short", body = ErrorBody),
        (status = 409, description = "Email already registered", body = ErrorBody),
        (status = 422, description = "Invalid email, password over 72 bytes, or malformed body", body = ErrorBody),
    )
)]
pub async fn register(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: crate::http::Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let user = service::create_user(
        &state,
        &body.email,
        &body.password,
        body.first_name,
        body.last_name,
        ROLE_USER,
    )
    .await?;
    metrics::counter!("auth_registrations_total").increment(1);
    tracing::info!(audit = "register", user_id = user.id);
    let tokens = service::start_session(&state, &user, &client_info(&state, &req)).await?;
    Ok(HttpResponse::Created().json(tokens))
}

async fn password_login(
    state: &AppState,
    req: &HttpRequest,
    email: &str,
    password: &str,
) -> Result<TokenResponse, ApiError> {
    let email = service::normalize_email(email)?;
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::unprocessable(format!(
            "Password must be at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    let client = client_info(state, req);
    throttle::check(state, &email, client.ip).await?;
    let user = service::find_by_email(state, &email).await?;
    // Unknown email, inactive user and wrong password cost one bcrypt
    // verify each and answer the same body.
    let matches = state
        .auth
        .hasher
        .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
        .await?;
    let user = match user {
        Some(u) if matches && u.is_active => u,
        other => {
            throttle::record_failure(state, &email, client.ip).await;
            let reason = match other {
                None => "unknown_email",
                Some(u) if !u.is_active => "inactive",
                Some(_) => "wrong_password",
            };
            metrics::counter!("auth_logins_total", "result" => "failure").increment(1);
            tracing::info!(audit = "login", result = "failure", reason, ip = ?client.ip);
            return Err(ApiError::Unauthorized("Invalid credentials".into()));
        }
    };
    throttle::clear(state, &email).await;
    metrics::counter!("auth_logins_total", "result" => "success").increment(1);
    tracing::info!(audit = "login", result = "success", user_id = user.id, ip = ?client.ip);
    service::start_session(state, &user, &client).await
}

/// Log in with email and password.
#[utoipa::path(
    post, path = "/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 401, description = "Invalid credentials", body = ErrorBody),
        (status = 422, description = "Malformed body or email", body = ErrorBody),
        (status = 429, description = "Too many failed attempts; see Retry-After", body = ErrorBody),
    )
)]
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: crate::http::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let tokens = password_login(&state, &req, &body.email, &body.password).await?;
    Ok(HttpResponse::Ok().json(tokens))
}

/// OAuth2 password grant (form-encoded), used by Swagger UI's Authorize button.
#[utoipa::path(
    post, path = "/auth/token", tag = "auth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 401, description = "Invalid credentials", body = ErrorBody),
        (status = 422, description = "Unsupported grant or malformed form", body = ErrorBody),
        (status = 429, description = "Too many failed attempts", body = ErrorBody),
    )
)]
pub async fn token(
    state: web::Data<AppState>,
    keys: web::Data<ApiKeys>,
    req: HttpRequest,
    form: web::Form<TokenForm>,
) -> Result<HttpResponse, ApiError> {
    // The API-key guard exempts this path: the key may come as the header or
    // as the OAuth2 client secret.
    let header_ok = req.extensions().get::<ApiKeyPresented>().is_some();
    if keys.required() && !header_ok {
        match &form.client_secret {
            Some(secret) if keys.is_valid(secret.as_bytes()) => {}
            Some(_) => return Err(ApiError::Unauthorized("Invalid API key".into())),
            None if req.headers().contains_key(API_KEY_HEADER) => {
                return Err(ApiError::Unauthorized("Invalid API key".into()));
            }
            None => return Err(ApiError::Unauthorized("Missing API key".into())),
        }
    }
    if form.grant_type.as_deref().is_some_and(|g| g != "password") {
        return Err(ApiError::unprocessable("grant_type must be password"));
    }
    let tokens = password_login(&state, &req, &form.username, &form.password).await?;
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(tokens))
}

/// Rotate a refresh token: answers new tokens; the old refresh token is spent.
#[utoipa::path(
    post, path = "/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "Rotated", body = TokenResponse),
        (status = 401, description = "Invalid, expired or reused refresh token", body = ErrorBody),
    )
)]
pub async fn refresh(
    state: web::Data<AppState>,
    body: crate::http::Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let tokens = service::refresh(&state, &body.refresh_token).await?;
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(tokens))
}

/// End the session of the bearer token (and of a given refresh token).
#[utoipa::path(
    post, path = "/auth/logout", tag = "auth",
    request_body(content = Option<LogoutRequest>, description = "Optional"),
    security(("api_key" = [], "bearer" = [])),
    responses(
        (status = 200, description = "Logged out", body = MessageResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    )
)]
pub async fn logout(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    body: crate::http::MaybeJson<LogoutRequest>,
) -> Result<HttpResponse, ApiError> {
    let refresh = body.0.and_then(|b| b.refresh_token);
    service::logout(&state, &user.0, refresh.as_deref()).await?;
    Ok(HttpResponse::Ok().json(MessageResponse {
        message: "Logged out successfully".into(),
    }))
}

/// Verify a bearer token. Also a forward-auth endpoint for gateways (nginx
/// `auth_request`, Traefik ForwardAuth, Envoy ext_authz): 200 with `X-User-*`
/// headers, or 401 with `WWW-Authenticate`.
#[utoipa::path(
    get, path = "/auth/verify", tag = "auth",
    security(("api_key" = [], "bearer" = [])),
    responses(
        (status = 200, description = "Valid token", body = VerifyResponse,
            headers(
                ("X-User-Id" = String, description = "User id"),
                ("X-User-Email" = String, description = "User email"),
                ("X-User-Role" = String, description = "user or admin"),
            )),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
    )
)]
pub async fn verify(user: AuthenticatedUser) -> HttpResponse {
    let u = &user.0.user;
    let mut resp = HttpResponse::Ok();
    resp.insert_header((CACHE_CONTROL, "no-store"))
        .insert_header(("X-User-Id", u.id.to_string()))
        .insert_header(("X-User-Role", u.role.clone()));
    if let Ok(email) = HeaderValue::from_str(&u.email) {
        resp.insert_header(("X-User-Email", email));
    }
    resp.json(VerifyResponse {
        valid: true,
        user: UserResponse::from(u),
    })
}

/// The caller's profile.
#[utoipa::path(
    get, path = "/auth/profile", tag = "auth",
    security(("api_key" = [], "bearer" = [])),
    responses(
        (status = 200, description = "Profile", body = UserResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    )
)]
pub async fn get_profile(user: AuthenticatedUser) -> HttpResponse {
    HttpResponse::Ok().json(UserResponse::from(&user.0.user))
}

/// Update the caller's names. `email`, `is_active`, `role` and `id` in the
/// body are accepted for old clients and ignored.
#[utoipa::path(
    put, path = "/auth/profile", tag = "auth",
    request_body = ProfileUpdate,
    security(("api_key" = [], "bearer" = [])),
    responses(
        (status = 200, description = "Updated profile", body = UserResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 422, description = "Name over 100 characters or malformed body", body = ErrorBody),
    )
)]
pub async fn put_profile(
    state: web::Data<AppState>,
    user: AuthenticatedUser,
    body: crate::http::Json<ProfileUpdate>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let updated =
        service::update_profile(&state, user.0.user.id, body.first_name, body.last_name).await?;
    Ok(HttpResponse::Ok().json(UserResponse::from(&updated)))
}

/// List users (admin).
#[utoipa::path(
    get, path = "/auth/users", tag = "admin",
    params(UserListQuery),
    security(("api_key" = [], "bearer" = [])),
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
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::unprocessable("limit must be between 1 and 1000"));
    }
    let offset = query.offset.unwrap_or(0);
    if offset > 10_000_000 {
        return Err(ApiError::unprocessable("offset must be at most 10000000"));
    }
    if query.email.as_ref().is_some_and(|e| e.len() > 255) {
        return Err(ApiError::unprocessable(
            "email filter must be at most 255 characters",
        ));
    }
    let (rows, total) = service::list_users(&state, limit, offset, query.email.as_deref()).await?;
    Ok(HttpResponse::Ok().json(UserListResponse {
        users: rows.iter().map(UserResponse::from).collect(),
        total,
    }))
}

/// One user (admin).
#[utoipa::path(
    get, path = "/auth/users/{id}", tag = "admin",
    params(("id" = i32, Path, description = "User id")),
    security(("api_key" = [], "bearer" = [])),
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
    let user = users::Entity::find_by_id(id.into_inner())
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::NotFound("User not found".into()))?;
    Ok(HttpResponse::Ok().json(UserResponse::from(&user)))
}

/// Change a user's role or active flag (admin). Deactivation ends the
/// user's sessions at once.
#[utoipa::path(
    patch, path = "/auth/users/{id}", tag = "admin",
    params(("id" = i32, Path, description = "User id")),
    request_body = AdminUserUpdate,
    security(("api_key" = [], "bearer" = [])),
    responses(
        (status = 200, description = "The updated user", body = UserResponse),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 422, description = "Unknown role", body = ErrorBody),
    )
)]
pub async fn patch_user(
    state: web::Data<AppState>,
    admin: Admin,
    id: web::Path<i32>,
    body: crate::http::Json<AdminUserUpdate>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let user =
        service::admin_update(&state, &admin.0, id.into_inner(), body.role, body.is_active).await?;
    Ok(HttpResponse::Ok().json(UserResponse::from(&user)))
}

/// Deactivate an account (soft delete). Users may delete only themselves;
/// admins anyone. Ends all of the user's sessions.
#[utoipa::path(
    delete, path = "/auth/users/{id}", tag = "auth",
    params(("id" = i32, Path, description = "User id")),
    security(("api_key" = [], "bearer" = [])),
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
    let id = id.into_inner();
    if id != user.0.user.id && !user.0.is_admin() {
        return Err(ApiError::Forbidden(
            "Can only delete your own account".into(),
        ));
    }
    service::deactivate(&state, &user.0, id).await?;
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
        .service(web::resource("/auth/token").route(web::post().to(token)))
        .service(web::resource("/auth/refresh").route(web::post().to(refresh)))
        .service(web::resource("/auth/logout").route(web::post().to(logout)))
        .service(web::resource("/auth/verify").route(web::get().to(verify)))
        .service(
            web::resource("/auth/profile")
                .route(web::get().to(get_profile))
                .route(web::put().to(put_profile)),
        )
        .service(web::resource("/auth/users").route(web::get().to(list_users)))
        .service(
            web::resource("/auth/users/{id}")
                .route(web::get().to(get_user))
                .route(web::patch().to(patch_user))
                .route(web::delete().to(delete_user)),
        )
        .service(web::resource("/.well-known/jwks.json").route(web::get().to(jwks)));
}
