//! Accounts, sessions and tokens. Storage stays here; routes only translate.
//!
//! Cache layout (one key per operation, so Redis Cluster works):
//! - `user:{id}`  the user as verify needs it; overwritten on every change.
//! - `sess:{sid}` `1` active or `0` revoked; revocation overwrites, fills
//!   from the database use SET NX so they never undo a revocation.
//!
//! Any cache failure falls back to the database: a revoked token never passes.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use sea_orm::sea_query::{Expr, ExprTrait, Func, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::dto::{TokenResponse, UserResponse};
use crate::entity::{refresh_tokens, sessions, users};
use crate::error::ApiError;
use crate::state::AppState;

const USER_CACHE_TTL: Duration = Duration::from_secs(300);
const SESSION_CACHE_TTL: Duration = Duration::from_secs(300);

pub const ROLE_USER: &str = "user";
pub const ROLE_ADMIN: &str = "admin";

/// What `/auth/verify` and the extractors need of a user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserSnapshot {
    pub id: i32,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub is_active: bool,
    pub role: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl From<&users::Model> for UserSnapshot {
    fn from(u: &users::Model) -> Self {
        UserSnapshot {
            id: u.id,
            email: u.email.clone(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            is_active: u.is_active,
            role: u.role.clone(),
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

impl From<&users::Model> for UserResponse {
    fn from(u: &users::Model) -> Self {
        UserResponse::from(&UserSnapshot::from(u))
    }
}

impl From<&UserSnapshot> for UserResponse {
    fn from(u: &UserSnapshot) -> Self {
        UserResponse {
            id: u.id,
            email: u.email.clone(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            is_active: u.is_active,
            created_at: u.created_at.and_utc(),
            updated_at: u.updated_at.and_utc(),
            role: u.role.clone(),
        }
    }
}

/// An authenticated caller: a valid, unrevoked token of an active user.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: UserSnapshot,
    /// The session id, or for tokens the original issued (no `sid`) a
    /// pseudo-session derived from the token, so they can be revoked too.
    pub session_id: String,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.user.role == ROLE_ADMIN
    }
}

/// Cache keys of a user and of one of their sessions share the hash tag
/// `{user id}`, so verify reads both with one MGET, on Redis Cluster too.
fn user_key(user_id: i32) -> String {
    format!("user:{{{user_id}}}")
}

fn session_key(user_id: i32, sid: &str) -> String {
    format!("sess:{{{user_id}}}:{sid}")
}

/// A cache lookup's outcome; `Down` means go to the database and write nothing back.
enum Cached {
    Hit(String),
    Miss,
    Down,
}

pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Trims, lower-cases and validates an email; 422 when it is not one.
pub fn normalize_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    if email.len() > 255 || !email_address::EmailAddress::is_valid(&email) {
        return Err(ApiError::unprocessable("Invalid email address"));
    }
    Ok(email)
}

fn check_name(field: &str, value: &Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.chars().count() > 100 => Err(ApiError::unprocessable(format!(
            "{field} must be at most 100 characters"
        ))),
        Some(v) => Ok(Some(v.trim().to_string())),
        None => Ok(None),
    }
}

// ---------------------------------------------------------------- users

pub async fn find_by_email(
    state: &AppState,
    email: &str,
) -> Result<Option<users::Model>, ApiError> {
    Ok(users::Entity::find()
        .filter(Expr::expr(Func::lower(Expr::col(users::Column::Email))).eq(email))
        .order_by_asc(users::Column::Id)
        .one(&state.db)
        .await?)
}

pub async fn create_user(
    state: &AppState,
    email: &str,
    password: &str,
    first_name: Option<String>,
    last_name: Option<String>,
    role: &str,
) -> Result<users::Model, ApiError> {
    let email = normalize_email(email)?;
    let first_name = check_name("first_name", &first_name)?;
    let last_name = check_name("last_name", &last_name)?;
    let context: Vec<&str> = [
        Some(email.as_str()),
        first_name.as_deref(),
        last_name.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    super::password::check_new_password(
        password,
        state.settings.password_min_length,
        state.settings.password_reject_guessable,
        &context,
    )?;
    if find_by_email(state, &email).await?.is_some() {
        return Err(ApiError::Conflict("Email already registered".into()));
    }
    let hash = state.auth.hasher.hash(password).await?;
    let ts = now();
    let model = users::ActiveModel {
        email: Set(email),
        password_hash: Set(hash),
        is_active: Set(true),
        created_at: Set(ts),
        updated_at: Set(ts),
        first_name: Set(first_name),
        last_name: Set(last_name),
        meta_data: Set(serde_json::json!({})),
        role: Set(role.to_string()),
        ..Default::default()
    };
    // Two racing registrations: the unique index decides, the loser gets 409.
    model.insert(&state.db).await.map_err(|e| {
        if matches!(
            e.sql_err(),
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
        ) {
            ApiError::Conflict("Email already registered".into())
        } else {
            e.into()
        }
    })
}

/// The user as verify sees it: cache first, database on a miss or a cache failure.
pub async fn user_snapshot(
    state: &AppState,
    user_id: i32,
) -> Result<Option<UserSnapshot>, ApiError> {
    let cached = match state.cache.get(&user_key(user_id)).await {
        Ok(Some(v)) => Cached::Hit(v),
        Ok(None) => Cached::Miss,
        Err(e) => {
            tracing::warn!(error = %e, "cache read failed; using the database");
            Cached::Down
        }
    };
    resolve_user(state, user_id, cached).await
}

async fn resolve_user(
    state: &AppState,
    user_id: i32,
    cached: Cached,
) -> Result<Option<UserSnapshot>, ApiError> {
    if let Cached::Hit(v) = &cached
        && let Ok(snap) = serde_json::from_str::<UserSnapshot>(v)
    {
        return Ok(Some(snap));
    }
    let snap = load_user(state, user_id).await?;
    if let (Some(s), false) = (&snap, matches!(cached, Cached::Down)) {
        let _ = state
            .cache
            .set_nx(
                &user_key(user_id),
                &serde_json::to_string(s).map_err(ApiError::internal)?,
                USER_CACHE_TTL,
            )
            .await;
    }
    Ok(snap)
}

async fn load_user(state: &AppState, user_id: i32) -> Result<Option<UserSnapshot>, ApiError> {
    Ok(users::Entity::find_by_id(user_id)
        .one(&state.db)
        .await?
        .as_ref()
        .map(UserSnapshot::from))
}

/// Publishes a changed user to every replica at once.
async fn publish_user(state: &AppState, user: &users::Model) {
    let snap = UserSnapshot::from(user);
    let Ok(v) = serde_json::to_string(&snap) else {
        return;
    };
    if let Err(e) = state
        .cache
        .set(&user_key(user.id), &v, USER_CACHE_TTL)
        .await
    {
        tracing::warn!(error = %e, user_id = user.id, "cache write failed after a user change");
    }
}

pub async fn update_profile(
    state: &AppState,
    user_id: i32,
    first_name: Option<String>,
    last_name: Option<String>,
) -> Result<users::Model, ApiError> {
    let first_name = check_name("first_name", &first_name)?;
    let last_name = check_name("last_name", &last_name)?;
    let user = users::Entity::find_by_id(user_id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::InvalidToken("User not found or inactive".into()))?;
    let mut active: users::ActiveModel = user.into();
    if let Some(f) = first_name {
        active.first_name = Set(Some(f));
    }
    if let Some(l) = last_name {
        active.last_name = Set(Some(l));
    }
    active.updated_at = Set(now());
    let user = active.update(&state.db).await?;
    publish_user(state, &user).await;
    Ok(user)
}

/// Admin changes; deactivation ends every session of the user at once.
pub async fn admin_update(
    state: &AppState,
    actor: &Principal,
    user_id: i32,
    role: Option<String>,
    is_active: Option<bool>,
) -> Result<users::Model, ApiError> {
    if role
        .as_deref()
        .is_some_and(|r| r != ROLE_USER && r != ROLE_ADMIN)
    {
        return Err(ApiError::unprocessable("role must be user or admin"));
    }
    let user = users::Entity::find_by_id(user_id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::NotFound("User not found".into()))?;
    let old_role = user.role.clone();
    let mut active: users::ActiveModel = user.into();
    if let Some(r) = &role {
        active.role = Set(r.clone());
    }
    if let Some(a) = is_active {
        active.is_active = Set(a);
    }
    active.updated_at = Set(now());
    let user = active.update(&state.db).await?;
    publish_user(state, &user).await;
    if role.as_deref().is_some_and(|r| r != old_role) {
        metrics::counter!("auth_role_changes_total").increment(1);
        tracing::info!(audit = "role_change", actor = actor.user.id, user_id, from = %old_role, to = %user.role);
    }
    if is_active == Some(false) {
        revoke_user_sessions(state, user_id, "deactivated").await?;
        metrics::counter!("auth_user_deactivations_total", "by" => "admin").increment(1);
        tracing::info!(audit = "deactivation", actor = actor.user.id, user_id);
    }
    Ok(user)
}

/// Soft delete (`is_active=false`, as the original) and end every session.
pub async fn deactivate(state: &AppState, actor: &Principal, user_id: i32) -> Result<(), ApiError> {
    let user = users::Entity::find_by_id(user_id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::NotFound("User not found".into()))?;
    let mut active: users::ActiveModel = user.into();
    active.is_active = Set(false);
    active.updated_at = Set(now());
    let user = active.update(&state.db).await?;
    publish_user(state, &user).await;
    revoke_user_sessions(state, user_id, "deleted").await?;
    let by = if actor.user.id == user_id {
        "self"
    } else {
        "admin"
    };
    metrics::counter!("auth_user_deletions_total", "by" => by).increment(1);
    tracing::info!(audit = "deletion", actor = actor.user.id, user_id, by);
    Ok(())
}

pub async fn list_users(
    state: &AppState,
    limit: u64,
    offset: u64,
    email: Option<&str>,
) -> Result<(Vec<users::Model>, u64), ApiError> {
    let mut query = users::Entity::find();
    if let Some(e) = email
        .map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty())
    {
        query = query.filter(
            Expr::expr(Func::lower(Expr::col(users::Column::Email))).like(format!(
                "%{}%",
                e.replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            )),
        );
    }
    let total = query.clone().count(&state.db).await?;
    let rows = query
        .order_by_asc(users::Column::Id)
        .limit(limit)
        .offset(offset)
        .all(&state.db)
        .await?;
    Ok((rows, total))
}

// ---------------------------------------------------------------- sessions

/// Session ids of tokens that carry none (issued by the original service).
fn legacy_session_id(token: &str) -> String {
    format!("legacy-{}", &sha256_hex(token.as_bytes())[..29])
}

fn new_refresh_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The next token in a refresh chain, derived from its parent with a server
/// secret: concurrent refreshes of one parent on any replica get the same
/// child, and nothing but its digest is stored.
fn child_refresh_token(state: &AppState, parent: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(state.settings.jwt_secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"refresh-chain:");
    mac.update(parent.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// Starts a session: a session row, a refresh token, an access token.
pub async fn start_session(
    state: &AppState,
    user: &users::Model,
    client: &ClientInfo,
) -> Result<TokenResponse, ApiError> {
    let sid = uuid::Uuid::new_v4().to_string();
    let refresh = new_refresh_token();
    let ts = now();
    let expires = ts + state.auth.refresh_ttl;
    let txn = crate::db::begin_write(&state.db).await?;
    sessions::ActiveModel {
        id: Set(sid.clone()),
        user_id: Set(user.id),
        created_at: Set(ts),
        expires_at: Set(expires),
        revoked_at: Set(None),
        revoked_reason: Set(None),
        ip_address: Set(client.ip.map(|ip| ip.to_string())),
        user_agent: Set(client.user_agent.clone()),
    }
    .insert(&txn)
    .await?;
    refresh_tokens::ActiveModel {
        token_hash: Set(sha256_hex(refresh.as_bytes())),
        session_id: Set(sid.clone()),
        parent_hash: Set(None),
        created_at: Set(ts),
        expires_at: Set(expires),
        used_at: Set(None),
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    token_response(state, &UserSnapshot::from(user), &sid, refresh)
}

fn token_response(
    state: &AppState,
    user: &UserSnapshot,
    sid: &str,
    refresh_token: String,
) -> Result<TokenResponse, ApiError> {
    let (access_token, _) = state
        .auth
        .jwt
        .issue(user.id, &user.email, &user.role, sid)?;
    Ok(TokenResponse {
        access_token,
        token_type: "bearer",
        expires_in: state.auth.jwt.ttl().as_secs(),
        refresh_token,
        user: UserResponse::from(user),
    })
}

/// Rotates a refresh token. A token used twice outside the grace window
/// revokes its whole session (token family).
pub async fn refresh(state: &AppState, token: &str) -> Result<TokenResponse, ApiError> {
    let invalid = || ApiError::InvalidToken("Invalid refresh token".into());
    if token.is_empty() || token.len() > 256 {
        return Err(invalid());
    }
    let hash = sha256_hex(token.as_bytes());
    let row = refresh_tokens::Entity::find_by_id(hash.clone())
        .one(&state.db)
        .await?
        .ok_or_else(invalid)?;
    let ts = now();
    let session = sessions::Entity::find_by_id(row.session_id.clone())
        .one(&state.db)
        .await?
        .ok_or_else(invalid)?;
    if session.revoked_at.is_some() || session.expires_at <= ts || row.expires_at <= ts {
        metrics::counter!("auth_refresh_total", "result" => "invalid").increment(1);
        return Err(invalid());
    }
    let user = user_snapshot(state, session.user_id)
        .await?
        .filter(|u| u.is_active)
        .ok_or_else(|| ApiError::InvalidToken("User not found or inactive".into()))?;

    // Claim the parent: exactly one caller flips used_at from NULL.
    let claimed = refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::UsedAt, Expr::value(ts))
        .filter(refresh_tokens::Column::TokenHash.eq(hash.clone()))
        .filter(refresh_tokens::Column::UsedAt.is_null())
        .exec(&state.db)
        .await?
        .rows_affected
        == 1;
    let result = if claimed {
        "rotated"
    } else {
        let used_at = refresh_tokens::Entity::find_by_id(hash.clone())
            .one(&state.db)
            .await?
            .and_then(|r| r.used_at)
            .unwrap_or(ts);
        let grace = chrono::Duration::seconds(state.settings.refresh_reuse_grace_seconds as i64);
        if ts - used_at > grace {
            revoke_session(state, &session.id, session.user_id, "refresh_reuse").await?;
            metrics::counter!("auth_refresh_total", "result" => "reuse_detected").increment(1);
            tracing::warn!(audit = "refresh_reuse", user_id = user.id, session_id = %session.id);
            return Err(ApiError::InvalidToken(
                "Refresh token reuse detected".into(),
            ));
        }
        "grace"
    };
    let child = child_refresh_token(state, token);
    // Both the claimant and a concurrent caller in the grace window insert
    // the same child; the primary key keeps one.
    refresh_tokens::Entity::insert(refresh_tokens::ActiveModel {
        token_hash: Set(sha256_hex(child.as_bytes())),
        session_id: Set(session.id.clone()),
        parent_hash: Set(Some(hash)),
        created_at: Set(ts),
        expires_at: Set(session.expires_at),
        used_at: Set(None),
    })
    .on_conflict(
        OnConflict::column(refresh_tokens::Column::TokenHash)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(&state.db)
    .await?;
    metrics::counter!("auth_refresh_total", "result" => result).increment(1);
    token_response(state, &user, &session.id, child)
}

/// Ends a session in the database, then tells every replica through the cache.
pub async fn revoke_session(
    state: &AppState,
    sid: &str,
    user_id: i32,
    reason: &str,
) -> Result<(), ApiError> {
    let ts = now();
    let updated = sessions::Entity::update_many()
        .col_expr(sessions::Column::RevokedAt, Expr::value(ts))
        .col_expr(sessions::Column::RevokedReason, Expr::value(reason))
        .filter(sessions::Column::Id.eq(sid))
        .filter(sessions::Column::RevokedAt.is_null())
        .exec(&state.db)
        .await?;
    if updated.rows_affected == 0 && sid.starts_with("legacy-") {
        // Tokens the original issued have no session row; record one.
        sessions::Entity::insert(sessions::ActiveModel {
            id: Set(sid.to_string()),
            user_id: Set(user_id),
            created_at: Set(ts),
            expires_at: Set(ts + state.auth.jwt.ttl() + Duration::from_secs(60)),
            revoked_at: Set(Some(ts)),
            revoked_reason: Set(Some(reason.to_string())),
            ip_address: Set(None),
            user_agent: Set(None),
        })
        .on_conflict(
            OnConflict::column(sessions::Column::Id)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&state.db)
        .await?;
    }
    mark_revoked(state, user_id, sid).await;
    Ok(())
}

async fn mark_revoked(state: &AppState, user_id: i32, sid: &str) {
    // Outlives every access token of the session.
    let ttl = state.auth.jwt.ttl() + Duration::from_secs(60);
    let key = session_key(user_id, sid);
    if let Err(e) = state.cache.set(&key, "0", ttl).await {
        tracing::warn!(error = %e, "cache write failed after a revocation; retrying until it lands");
        pending(state).push((key, std::time::Instant::now() + ttl));
    }
}

fn pending(state: &AppState) -> std::sync::MutexGuard<'_, Vec<(String, std::time::Instant)>> {
    state
        .auth
        .pending_revocations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Writes revocations the cache missed; runs every second in the background.
pub async fn flush_pending_revocations(state: &AppState) {
    let due: Vec<(String, std::time::Instant)> = std::mem::take(&mut *pending(state));
    let now = std::time::Instant::now();
    for (key, until) in due.into_iter().filter(|(_, until)| *until > now) {
        if state.cache.set(&key, "0", until - now).await.is_err() {
            pending(state).push((key, until));
        }
    }
}

pub async fn revoke_user_sessions(
    state: &AppState,
    user_id: i32,
    reason: &str,
) -> Result<(), ApiError> {
    let ids: Vec<String> = sessions::Entity::find()
        .select_only()
        .column(sessions::Column::Id)
        .filter(sessions::Column::UserId.eq(user_id))
        .filter(sessions::Column::RevokedAt.is_null())
        .into_tuple()
        .all(&state.db)
        .await?;
    sessions::Entity::update_many()
        .col_expr(sessions::Column::RevokedAt, Expr::value(now()))
        .col_expr(sessions::Column::RevokedReason, Expr::value(reason))
        .filter(sessions::Column::UserId.eq(user_id))
        .filter(sessions::Column::RevokedAt.is_null())
        .exec(&state.db)
        .await?;
    for sid in ids {
        mark_revoked(state, user_id, &sid).await;
    }
    Ok(())
}

/// Is the session live? The cached marker, else the database.
async fn session_active(
    state: &AppState,
    sid: &str,
    user_id: i32,
    legacy: bool,
    cached: Cached,
) -> Result<bool, ApiError> {
    if let Cached::Hit(v) = &cached {
        return Ok(v == "1");
    }
    let row = sessions::Entity::find_by_id(sid.to_string())
        .one(&state.db)
        .await?;
    let active = match row {
        None => legacy,
        Some(s) => {
            s.revoked_at.is_none() && (legacy || s.user_id == user_id) && s.expires_at > now()
        }
    };
    if matches!(cached, Cached::Miss) {
        let _ = state
            .cache
            .set_nx(
                &session_key(user_id, sid),
                if active { "1" } else { "0" },
                SESSION_CACHE_TTL,
            )
            .await;
    }
    Ok(active)
}

/// Verifies a bearer token end to end: signature and claims, session not
/// revoked, user active. Answers the user as stored now (role included).
pub async fn authenticate(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    let claims = state.auth.jwt.verify(token)?;
    let user_id = claims.user_id()?;
    let (session_id, legacy) = match &claims.sid {
        Some(sid) if !sid.is_empty() && sid.len() <= 36 => (sid.clone(), false),
        Some(_) => return Err(ApiError::InvalidToken("Invalid token".into())),
        None => (legacy_session_id(token), true),
    };
    // One round trip for both: the session marker and the user.
    let (sess, user) = match state
        .cache
        .get_many(&[&session_key(user_id, &session_id), &user_key(user_id)])
        .await
    {
        Ok(mut v) if v.len() == 2 => {
            let to = |o: Option<String>| o.map_or(Cached::Miss, Cached::Hit);
            let user = to(v.pop().flatten());
            (to(v.pop().flatten()), user)
        }
        Ok(_) => (Cached::Miss, Cached::Miss),
        Err(e) => {
            tracing::warn!(error = %e, "cache read failed; using the database");
            (Cached::Down, Cached::Down)
        }
    };
    if !session_active(state, &session_id, user_id, legacy, sess).await? {
        return Err(ApiError::InvalidToken("Token has been revoked".into()));
    }
    let user = resolve_user(state, user_id, user)
        .await?
        .filter(|u| u.is_active)
        .ok_or_else(|| ApiError::InvalidToken("User not found or inactive".into()))?;
    Ok(Principal { user, session_id })
}

/// Ends the caller's session and, if given, the session of a refresh token
/// that belongs to the same user.
pub async fn logout(
    state: &AppState,
    principal: &Principal,
    refresh_token: Option<&str>,
) -> Result<(), ApiError> {
    revoke_session(state, &principal.session_id, principal.user.id, "logout").await?;
    if let Some(token) = refresh_token.filter(|t| !t.is_empty() && t.len() <= 256) {
        let hash = sha256_hex(token.as_bytes());
        if let Some(row) = refresh_tokens::Entity::find_by_id(hash)
            .one(&state.db)
            .await?
        {
            let owned = sessions::Entity::find()
                .filter(
                    Condition::all()
                        .add(sessions::Column::Id.eq(row.session_id.clone()))
                        .add(sessions::Column::UserId.eq(principal.user.id)),
                )
                .one(&state.db)
                .await?;
            if owned.is_some() {
                revoke_session(state, &row.session_id, principal.user.id, "logout").await?;
            }
        }
    }
    metrics::counter!("auth_logouts_total").increment(1);
    tracing::info!(audit = "logout", user_id = principal.user.id, session_id = %principal.session_id);
    Ok(())
}

/// Creates the configured (or CLI-given) admin, or promotes an existing account.
pub async fn ensure_admin(
    state: &AppState,
    email: &str,
    password: &str,
) -> Result<users::Model, ApiError> {
    let email = normalize_email(email)?;
    match find_by_email(state, &email).await? {
        Some(user) if user.role == ROLE_ADMIN => Ok(user),
        Some(user) => {
            let mut active: users::ActiveModel = user.into();
            active.role = Set(ROLE_ADMIN.to_string());
            active.updated_at = Set(now());
            let user = active.update(&state.db).await?;
            publish_user(state, &user).await;
            Ok(user)
        }
        None => create_user(state, &email, password, None, None, ROLE_ADMIN).await,
    }
}
