//! Extractors that carry permissions in types: a handler that takes `Admin`
//! cannot run for anyone else.

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use futures_util::future::{Either, LocalBoxFuture, Ready, ready};

use crate::auth::Principal;
use crate::http::{ApiError, AppState};

/// Longest bearer token accepted; real ones are a few hundred bytes.
const MAX_TOKEN_LEN: usize = 8192;

/// The bearer token of `req`, borrowed from its header.
pub fn bearer_token(req: &HttpRequest) -> Result<&str, ApiError> {
    let missing = || ApiError::InvalidToken("Missing or invalid authorization header".into());
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(missing)?;
    // `HeaderValue::to_str` checks byte by byte, a measurable share of
    // verify; UTF-8 validation plus `is_ascii` checks words at a time.
    let value = std::str::from_utf8(header.as_bytes()).map_err(|_| missing())?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.len() > MAX_TOKEN_LEN
        || !token.is_ascii()
    {
        return Err(missing());
    }
    Ok(token)
}

fn state_of(req: &HttpRequest) -> web::Data<AppState> {
    req.app_data::<web::Data<AppState>>()
        .expect("AppState is registered")
        .clone()
}

/// A caller with a valid, unrevoked access token of an active user.
pub struct AuthenticatedUser(pub Principal);

impl FromRequest for AuthenticatedUser {
    type Error = ApiError;
    // Ready when verify remembers the token (most requests), so those
    // neither copy the token nor box a future.
    type Future =
        Either<Ready<Result<Self, ApiError>>, LocalBoxFuture<'static, Result<Self, ApiError>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = state_of(req);
        let token = match bearer_token(req) {
            Ok(token) => token,
            Err(e) => return Either::Left(ready(Err(e))),
        };
        if let Some(principal) = state.auth.remembered(token) {
            return Either::Left(ready(Ok(AuthenticatedUser(principal))));
        }
        let token = token.to_string();
        Either::Right(Box::pin(async move {
            Ok(AuthenticatedUser(state.auth.authenticate(&token).await?))
        }))
    }
}

/// An authenticated caller whose current role is `admin`, in a session
/// established with a second factor where `ADMIN_REQUIRE_MFA` says so.
pub struct Admin(pub Principal);

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let user = AuthenticatedUser::from_request(req, payload);
        let require_mfa = state_of(req).settings.auth.mfa.admin_require;
        Box::pin(async move {
            let AuthenticatedUser(p) = user.await?;
            if !p.is_admin() {
                return Err(ApiError::Forbidden("Admin privileges required".into()));
            }
            if require_mfa && !p.methods.is_multi_factor() {
                return Err(ApiError::Forbidden(
                    "Admin endpoints need a session established with a second factor: enrol TOTP at POST /auth/mfa/totp, then log in again with it".into(),
                ));
            }
            Ok(Admin(p))
        })
    }
}

/// The bearer user when an `Authorization` header is present (it must then
/// be valid); `None` for service calls that carry only the API key.
pub struct MaybeUser(pub Option<Principal>);

impl FromRequest for MaybeUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if req
            .headers()
            .contains_key(actix_web::http::header::AUTHORIZATION)
        {
            let user = AuthenticatedUser::from_request(req, payload);
            Box::pin(async move { Ok(MaybeUser(Some(user.await?.0))) })
        } else {
            Box::pin(async { Ok(MaybeUser(None)) })
        }
    }
}
