//! Verifies a bearer token end to end, answering from the cache where it can.

use std::time::Duration;

use sea_orm::EntityTrait;

use super::{Auth, AuthError, Methods, Principal, User, sha256_hex};
use crate::entity::{sessions, users};
use crate::time::now;

const USER_CACHE_TTL: Duration = Duration::from_secs(300);
const SESSION_CACHE_TTL: Duration = Duration::from_secs(300);

/// Cache keys of a user and of one of their sessions share the hash tag
/// `{user id}`, so verify reads both with one MGET, on Redis Cluster too.
fn user_key(user_id: i32) -> String {
    format!("user:{{{user_id}}}")
}

pub(super) fn session_key(user_id: i32, sid: &str) -> String {
    format!("sess:{{{user_id}}}:{sid}")
}

/// Session ids of tokens that carry none (issued by the original service).
fn legacy_session_id(token: &str) -> String {
    format!("legacy-{}", &sha256_hex(token.as_bytes())[..29])
}

/// A cache lookup's outcome; `Down` means go to the database and write nothing back.
enum Cached {
    Hit(String),
    Miss,
    Down,
}

impl Auth {
    /// Overwrites the cached user (after a change, on every replica).
    pub(super) async fn cache_user(&self, user: &User) {
        let Ok(v) = serde_json::to_string(user) else {
            return;
        };
        if let Err(e) = self.cache.set(&user_key(user.id), &v, USER_CACHE_TTL).await {
            tracing::warn!(error = %e, user_id = user.id, "cache write failed after a user change");
        }
    }

    /// The user as verify sees it: cache first, database on a miss or a cache failure.
    pub(super) async fn user(&self, user_id: i32) -> Result<Option<User>, AuthError> {
        let cached = match self.cache.get(&user_key(user_id)).await {
            Ok(Some(v)) => Cached::Hit(v),
            Ok(None) => Cached::Miss,
            Err(e) => {
                tracing::warn!(error = %e, "cache read failed; using the database");
                Cached::Down
            }
        };
        self.resolve_user(user_id, cached).await
    }

    async fn resolve_user(&self, user_id: i32, cached: Cached) -> Result<Option<User>, AuthError> {
        if let Cached::Hit(v) = &cached
            && let Ok(user) = serde_json::from_str::<User>(v)
        {
            return Ok(Some(user));
        }
        let user = users::Entity::find_by_id(user_id)
            .one(&self.db)
            .await?
            .as_ref()
            .map(User::from);
        if let (Some(u), false) = (&user, matches!(cached, Cached::Down)) {
            let v = serde_json::to_string(u).map_err(|e| AuthError::Internal(e.into()))?;
            let _ = self
                .cache
                .set_nx(&user_key(user_id), &v, USER_CACHE_TTL)
                .await;
        }
        Ok(user)
    }

    /// Is the session live? The cached marker, else the database.
    async fn session_active(
        &self,
        sid: &str,
        user_id: i32,
        legacy: bool,
        cached: Cached,
    ) -> Result<bool, AuthError> {
        if let Cached::Hit(v) = &cached {
            return Ok(v == "1");
        }
        let row = sessions::Entity::find_by_id(sid.to_string())
            .one(&self.db)
            .await?;
        let active = match row {
            None => legacy,
            Some(s) => {
                s.revoked_at.is_none() && (legacy || s.user_id == user_id) && s.expires_at > now()
            }
        };
        if matches!(cached, Cached::Miss) {
            let _ = self
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
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = self.jwt.verify(token)?;
        let user_id = claims.user_id()?;
        let (session_id, legacy) = match &claims.sid {
            Some(sid) if !sid.is_empty() && sid.len() <= 36 => (sid.clone(), false),
            Some(_) => return Err(AuthError::InvalidToken("Invalid token")),
            None => (legacy_session_id(token), true),
        };
        // One round trip for both: the session marker and the user.
        let (sess, user) = match self
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
        if !self
            .session_active(&session_id, user_id, legacy, sess)
            .await?
        {
            return Err(AuthError::InvalidToken("Token has been revoked"));
        }
        let user = self
            .resolve_user(user_id, user)
            .await?
            .filter(|u| u.is_active)
            .ok_or(AuthError::InvalidToken("User not found or inactive"))?;
        Ok(Principal {
            user,
            session_id,
            methods: Methods::from_claim(claims.amr),
        })
    }
}
