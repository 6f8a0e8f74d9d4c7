//! The OAuth2 token endpoint (RFC 6749): the password and refresh_token
//! grants, for Swagger UI's Authorize and for OAuth2 client libraries. The
//! client is whoever holds an API key with the `auth` scope.

use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, CACHE_CONTROL};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::dto::{OAuthMfaRequired, TokenForm, TokenResponse};
use crate::auth::{AuthError, LoginOutcome};
use crate::http::callers::API_KEY_HEADER;
use crate::http::error::OAuthErrorBody;
use crate::http::net::client_info;
use crate::http::{ApiError, AppState};
use crate::keys::{Caller, KeyError, Scope};

fn oauth(status: StatusCode, error: &'static str, description: impl Into<String>) -> ApiError {
    ApiError::OAuth {
        status,
        error,
        description: description.into(),
        retry_after: None,
    }
}

fn invalid_request(description: impl Into<String>) -> ApiError {
    oauth(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn invalid_client(description: impl Into<String>) -> ApiError {
    oauth(StatusCode::UNAUTHORIZED, "invalid_client", description)
}

/// Grant failures in §5.2's terms; a database outage stays a 503.
fn grant_error(err: AuthError) -> ApiError {
    match err {
        AuthError::InvalidCredentials
        | AuthError::InvalidToken(_)
        | AuthError::Forbidden(_)
        | AuthError::EmailNotVerified => {
            oauth(StatusCode::BAD_REQUEST, "invalid_grant", err.to_string())
        }
        AuthError::Invalid(_) => invalid_request(err.to_string()),
        AuthError::Throttled { retry_after } => ApiError::OAuth {
            status: StatusCode::TOO_MANY_REQUESTS,
            error: "temporarily_unavailable",
            description: err.to_string(),
            retry_after: Some(retry_after),
        },
        other => other.into(),
    }
}

/// The client secret of `Authorization: Basic`, decoded as §2.3.1 says
/// (each part form-urlencoded before base64).
fn basic_secret(req: &HttpRequest) -> Option<Result<String, ApiError>> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let malformed = || invalid_client("Malformed Basic credentials");
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    Some(
        decoded
            .and_then(|pair| {
                let (_, secret) = pair.split_once(':')?;
                url::form_urlencoded::parse(format!("s={secret}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            })
            .ok_or_else(malformed),
    )
}

/// Authenticates the client: Basic, then the form's secret, then the
/// `X-API-Key` header the caller guard already checked.
async fn client(
    state: &AppState,
    req: &HttpRequest,
    form: &TokenForm,
) -> Result<Option<Caller>, ApiError> {
    let secret = match basic_secret(req) {
        Some(secret) => Some(secret?),
        None => form.client_secret.clone(),
    };
    let keys = &state.keys;
    let caller = match secret {
        Some(secret) => match keys.authenticate(secret.as_bytes()).await {
            Ok(caller) => Some(caller),
            Err(KeyError::Database(e)) => return Err(e.into()),
            Err(e) => return Err(invalid_client(e.to_string())),
        },
        None => match req.extensions().get::<Caller>().cloned() {
            Some(caller) => Some(caller),
            None if req.headers().contains_key(API_KEY_HEADER) => {
                return Err(invalid_client("Invalid API key"));
            }
            // The original's words, which its clients may match on.
            None if keys.required() => return Err(invalid_client("Missing API key")),
            None => None,
        },
    };
    if let Some(caller) = &caller {
        keys.require(caller, Scope::Auth).map_err(|e| {
            oauth(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                e.to_string(),
            )
        })?;
        keys.admit(caller).await?;
    }
    Ok(caller)
}

/// OAuth2 token endpoint: `grant_type=password` (the default) logs in,
/// `grant_type=refresh_token` rotates a refresh token. Errors follow RFC 6749
/// §5.2 (`error`, `error_description`) and keep `detail` for old clients.
#[utoipa::path(
    post, path = "/auth/token", tag = "auth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    security((), ("client_basic" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Tokens issued", body = TokenResponse),
        (status = 400, description = "invalid_request, invalid_grant, unauthorized_client or unsupported_grant_type", body = OAuthErrorBody),
        (status = 401, description = "invalid_client; see WWW-Authenticate", body = OAuthErrorBody),
        (status = 403, description = "mfa_required: the user has a second factor; redeem mfa_ticket at POST /auth/mfa/verify", body = OAuthMfaRequired),
        (status = 429, description = "Too many failed attempts or the client's rate; see Retry-After", body = OAuthErrorBody),
    )
)]
pub async fn token(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: Result<web::Form<TokenForm>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let form = form
        .map_err(|e| invalid_request(format!("Expected a form-encoded body: {e}")))?
        .into_inner();
    client(&state, &req, &form).await?;
    let tokens = match form.grant_type.as_deref().unwrap_or("password") {
        "password" => {
            let (Some(username), Some(password)) = (&form.username, &form.password) else {
                return Err(invalid_request(
                    "The password grant needs username and password",
                ));
            };
            let client = client_info(&state.settings.http, &req);
            match state
                .auth
                .login(username, password, &client)
                .await
                .map_err(grant_error)?
            {
                LoginOutcome::Tokens(tokens) => tokens,
                LoginOutcome::SecondFactor(c) => {
                    let description =
                        "A second factor is needed: redeem mfa_ticket at POST /auth/mfa/verify"
                            .to_string();
                    return Ok(HttpResponse::Forbidden()
                        .insert_header((CACHE_CONTROL, "no-store"))
                        .json(OAuthMfaRequired {
                            error: "mfa_required",
                            detail: description.clone(),
                            error_description: description,
                            mfa_ticket: c.ticket,
                            methods: c.methods,
                            expires_in: c.expires_in,
                        }));
                }
            }
        }
        "refresh_token" => {
            let Some(token) = &form.refresh_token else {
                return Err(invalid_request(
                    "The refresh_token grant needs refresh_token",
                ));
            };
            state.auth.refresh(token).await.map_err(grant_error)?
        }
        other => {
            return Err(oauth(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant_type '{other}' is not supported: use password or refresh_token"),
            ));
        }
    };
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(TokenResponse::from(tokens)))
}
