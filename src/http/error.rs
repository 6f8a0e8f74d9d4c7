//! The HTTP error: every failure becomes `{"detail": …}` with its status.
//! Each feature's own error is mapped here, once. Internal causes are
//! logged, never sent.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::analytics::live::LiveError;
use crate::analytics::{IngestError, Invalid, QueryError};
use crate::auth::AuthError;
use crate::jobs::JobError;
use crate::keys::{KeyError, Quota};

/// The error body of every endpoint (FastAPI's convention, kept for clients).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    /// 401 for bearer-token failures: carries `WWW-Authenticate` (RFC 6750).
    #[error("{0}")]
    InvalidToken(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after: u64 },
    /// 429 from a per-key limit: `Retry-After` and the RateLimit headers.
    #[error("{detail}")]
    Limited { detail: String, quota: Quota },
    /// An OAuth2 token endpoint error (RFC 6749 §5.2), with `detail` too.
    #[error("{description}")]
    OAuth {
        status: StatusCode,
        error: &'static str,
        description: String,
        retry_after: Option<u64>,
    },
    #[error("{detail}")]
    Unavailable { detail: String, retry_after: u64 },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn unprocessable(msg: impl Into<String>) -> Self {
        ApiError::Unprocessable(msg.into())
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(err: sea_orm::DbErr) -> Self {
        if crate::db::is_connection_error(&err) {
            ApiError::Unavailable {
                detail: "Database unavailable".into(),
                retry_after: 2,
            }
        } else {
            ApiError::Internal(err.into())
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(err: Invalid) -> Self {
        ApiError::Unprocessable(err.0)
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        let detail = err.to_string();
        match err {
            AuthError::Invalid(_) => ApiError::Unprocessable(detail),
            AuthError::PasswordTooShort(_)
            | AuthError::PasswordGuessable
            | AuthError::InvalidLink
            | AuthError::WrongCode
            | AuthError::PasskeyRejected
            | AuthError::WrongPassword => ApiError::BadRequest(detail),
            AuthError::NotFound(_) => ApiError::NotFound(detail),
            AuthError::EmailNotVerified | AuthError::SecondFactorRequired => {
                ApiError::Forbidden(detail)
            }
            AuthError::Conflict(_) => ApiError::Conflict(detail),
            AuthError::EmailTaken => ApiError::Conflict(detail),
            AuthError::InvalidCredentials => ApiError::Unauthorized(detail),
            AuthError::InvalidToken(_) => ApiError::InvalidToken(detail),
            AuthError::Forbidden(_) => ApiError::Forbidden(detail),
            AuthError::UserNotFound => ApiError::NotFound(detail),
            AuthError::Throttled { retry_after } | AuthError::MailThrottled { retry_after } => {
                ApiError::TooManyRequests {
                    detail,
                    retry_after,
                }
            }
            AuthError::Database(e) => e.into(),
            AuthError::Internal(e) => ApiError::Internal(e),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> Self {
        let detail = err.to_string();
        match err {
            IngestError::Invalid(e) => e.into(),
            IngestError::BatchTooLarge { .. } => ApiError::PayloadTooLarge(detail),
            IngestError::QueueFull => ApiError::Unavailable {
                detail,
                retry_after: 1,
            },
            IngestError::Unavailable => ApiError::Unavailable {
                detail,
                retry_after: 2,
            },
            IngestError::Database(e) => e.into(),
        }
    }
}

impl From<LiveError> for ApiError {
    fn from(err: LiveError) -> Self {
        let detail = err.to_string();
        match err {
            LiveError::TooManyStreams { .. } => ApiError::TooManyRequests {
                detail,
                retry_after: 5,
            },
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(err: QueryError) -> Self {
        match err {
            QueryError::Invalid(e) => e.into(),
            QueryError::Forbidden(m) => ApiError::Forbidden(m.into()),
            QueryError::Database(e) => e.into(),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(err: KeyError) -> Self {
        let detail = err.to_string();
        match err {
            KeyError::Unknown | KeyError::Revoked | KeyError::Expired => {
                ApiError::Unauthorized(detail)
            }
            KeyError::MissingScope(_) => ApiError::Forbidden(detail),
            KeyError::RateLimited(quota) | KeyError::QuotaExceeded(quota) => {
                ApiError::Limited { detail, quota }
            }
            KeyError::NotFound => ApiError::NotFound(detail),
            KeyError::Invalid(_) => ApiError::Unprocessable(detail),
            KeyError::Database(e) => e.into(),
        }
    }
}

impl From<JobError> for ApiError {
    fn from(err: JobError) -> Self {
        match err {
            JobError::Database(e) => e.into(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) | ApiError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } | ApiError::Limited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::OAuth { status, .. } => *status,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(cause) = self {
            tracing::error!(error = ?cause, "request failed");
        }
        let mut resp = HttpResponse::build(self.status_code());
        match self {
            ApiError::TooManyRequests { retry_after, .. }
            | ApiError::Unavailable { retry_after, .. } => {
                resp.insert_header((header::RETRY_AFTER, retry_after.to_string()));
            }
            ApiError::InvalidToken(_) => {
                resp.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                ));
            }
            ApiError::Limited { quota, .. } => {
                resp.insert_header((header::RETRY_AFTER, quota.reset.max(1).to_string()));
                for (name, value) in ratelimit_headers(quota) {
                    resp.insert_header((name, value));
                }
            }
            ApiError::OAuth {
                error,
                description,
                retry_after,
                ..
            } => {
                if *error == "invalid_client" {
                    resp.insert_header((
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"platform-server\""),
                    ));
                }
                if let Some(after) = retry_after {
                    resp.insert_header((header::RETRY_AFTER, after.to_string()));
                }
                resp.insert_header((header::CACHE_CONTROL, "no-store"));
                return resp.json(OAuthErrorBody {
                    error,
                    error_description: description.clone(),
                    detail: description.clone(),
                });
            }
            _ => {}
        }
        resp.json(ErrorBody {
            detail: self.to_string(),
        })
    }
}

/// The token endpoint's error body: RFC 6749 §5.2, plus `detail` for the
/// clients of the original service.
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthErrorBody {
    #[schema(example = "invalid_grant")]
    pub error: &'static str,
    #[schema(example = "Invalid credentials")]
    pub error_description: String,
    #[schema(example = "Invalid credentials")]
    pub detail: String,
}

/// The IETF draft's `RateLimit-*` headers for where a limit stands.
pub fn ratelimit_headers(q: &Quota) -> [(HeaderName, HeaderValue); 3] {
    [
        (HeaderName::from_static("ratelimit-limit"), q.limit.into()),
        (
            HeaderName::from_static("ratelimit-remaining"),
            q.remaining.into(),
        ),
        (HeaderName::from_static("ratelimit-reset"), q.reset.into()),
    ]
}

/// A JSON error response for places that have no `ApiError` (middleware, fallbacks).
pub fn json_error(status: StatusCode, detail: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody {
        detail: detail.into(),
    })
}
