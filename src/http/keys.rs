//! `/admin/api-keys`: managing the callers' keys (admin user, `admin` scope).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::auth::extract::Admin;
use super::{ApiError, AppState, ErrorBody};
use crate::keys::{ApiKey, CreatedKey, KeyChange, NewKey, Scopes};

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateKeyRequest {
    #[schema(example = "billing-service", max_length = 100)]
    pub name: String,
    /// Any of `auth`, `ingest`, `read`, `admin`.
    #[schema(example = json!(["ingest", "read"]))]
    pub scopes: Vec<String>,
    /// Requests per second across replicas; none means unlimited.
    pub rate_per_second: Option<i64>,
    /// Events and metrics per UTC day; none means unlimited.
    pub daily_ingest_quota: Option<i64>,
    /// When the key stops working; none means never.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Absent fields stay as they are; `null` clears a limit or the expiry.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct UpdateKeyRequest {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub rate_per_second: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub daily_ingest_quota: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

/// A field that is present, perhaps as `null` (absent stays `None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A key without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyResponse {
    pub id: i32,
    pub name: String,
    /// The key's first characters, to tell keys apart.
    #[schema(example = "psk_Qm9vZ2xl")]
    pub prefix: String,
    #[schema(example = json!(["ingest", "read"]))]
    pub scopes: Vec<&'static str>,
    pub rate_per_second: Option<u32>,
    pub daily_ingest_quota: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Updated at most about once a minute.
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&ApiKey> for ApiKeyResponse {
    fn from(k: &ApiKey) -> Self {
        ApiKeyResponse {
            id: k.id,
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            scopes: k.scopes.names(),
            rate_per_second: k.rate_per_second,
            daily_ingest_quota: k.daily_ingest_quota,
            expires_at: k.expires_at.map(|t| t.and_utc()),
            created_by: k.created_by.clone(),
            created_at: k.created_at.and_utc(),
            last_used_at: k.last_used_at.map(|t| t.and_utc()),
            revoked_at: k.revoked_at.map(|t| t.and_utc()),
        }
    }
}

/// A new key: its secret is in this answer and nowhere else.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKeyResponse {
    /// Send as `X-API-Key`, or as the OAuth2 client secret.
    #[schema(example = "psk_Qm9vZ2xlIGtleSBleGFtcGxlIG9ubHkgMDEyMzQ1Njc4OQ")]
    pub secret: String,
    #[serde(flatten)]
    pub key: ApiKeyResponse,
}

impl From<CreatedKey> for CreatedKeyResponse {
    fn from(c: CreatedKey) -> Self {
        CreatedKeyResponse {
            key: ApiKeyResponse::from(&c.key),
            secret: c.secret,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    pub keys: Vec<ApiKeyResponse>,
}

fn scopes(names: &[String]) -> Result<Scopes, ApiError> {
    Ok(Scopes::parse(&names.join(","))?)
}

/// Create a key. The secret is shown once, in this answer.
#[utoipa::path(
    post, path = "/admin/api-keys", tag = "admin",
    request_body = CreateKeyRequest,
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 201, description = "Created; keep the secret", body = CreatedKeyResponse),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 422, description = "Unknown scope, bad limit or expiry in the past", body = ErrorBody),
    )
)]
pub async fn create_key(
    state: web::Data<AppState>,
    admin: Admin,
    body: super::body::Json<CreateKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let new = NewKey::new(
        &body.name,
        scopes(&body.scopes)?,
        body.rate_per_second,
        body.daily_ingest_quota,
        body.expires_at.map(|t| t.naive_utc()),
        Some(admin.0.user.email.clone()),
    )?;
    let created = state.keys.create(new).await?;
    Ok(HttpResponse::Created().json(CreatedKeyResponse::from(created)))
}

/// List keys, without their secrets.
#[utoipa::path(
    get, path = "/admin/api-keys", tag = "admin",
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "Every managed key, revoked ones included", body = ApiKeyList),
        (status = 403, description = "Not an admin", body = ErrorBody),
    )
)]
pub async fn list_keys(state: web::Data<AppState>, _: Admin) -> Result<HttpResponse, ApiError> {
    let keys = state.keys.list().await?;
    Ok(HttpResponse::Ok().json(ApiKeyList {
        keys: keys.iter().map(ApiKeyResponse::from).collect(),
    }))
}

/// One key, without its secret.
#[utoipa::path(
    get, path = "/admin/api-keys/{id}", tag = "admin",
    params(("id" = i32, Path, description = "Key id")),
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "The key", body = ApiKeyResponse),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
    )
)]
pub async fn get_key(
    state: web::Data<AppState>,
    _: Admin,
    id: web::Path<i32>,
) -> Result<HttpResponse, ApiError> {
    let key = state.keys.get(id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(ApiKeyResponse::from(&key)))
}

/// Change a key's name, scopes, limits or expiry. Every replica applies the
/// change within a second.
#[utoipa::path(
    patch, path = "/admin/api-keys/{id}", tag = "admin",
    params(("id" = i32, Path, description = "Key id")),
    request_body = UpdateKeyRequest,
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "The changed key", body = ApiKeyResponse),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 422, description = "Unknown scope, bad limit or expiry in the past", body = ErrorBody),
    )
)]
pub async fn update_key(
    state: web::Data<AppState>,
    _: Admin,
    id: web::Path<i32>,
    body: super::body::Json<UpdateKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let change = KeyChange::new(
        body.name.as_deref(),
        body.scopes.as_deref().map(scopes).transpose()?,
        body.rate_per_second,
        body.daily_ingest_quota,
        body.expires_at.map(|at| at.map(|t| t.naive_utc())),
    )?;
    let key = state.keys.update(id.into_inner(), change).await?;
    Ok(HttpResponse::Ok().json(ApiKeyResponse::from(&key)))
}

/// Revoke a key: every replica refuses it within a second. Revoking again
/// keeps the first time.
#[utoipa::path(
    delete, path = "/admin/api-keys/{id}", tag = "admin",
    params(("id" = i32, Path, description = "Key id")),
    security(("api_key" = [], "bearer" = []), ("api_key" = [], "oauth2" = [])),
    responses(
        (status = 200, description = "The revoked key", body = ApiKeyResponse),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
    )
)]
pub async fn revoke_key(
    state: web::Data<AppState>,
    _: Admin,
    id: web::Path<i32>,
) -> Result<HttpResponse, ApiError> {
    let key = state.keys.revoke(id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(ApiKeyResponse::from(&key)))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/admin/api-keys")
            .route(web::post().to(create_key))
            .route(web::get().to(list_keys)),
    )
    .service(
        web::resource("/admin/api-keys/{id}")
            .route(web::get().to(get_key))
            .route(web::patch().to(update_key))
            .route(web::delete().to(revoke_key)),
    );
}
