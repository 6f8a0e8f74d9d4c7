//! Verifies a bearer token end to end, answering from the cache where it can.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::EntityTrait;

use super::{Auth, AuthError, Methods, Principal, User, sha256_hex};
use crate::entity::{sessions, users};
use crate::memo::Memo;
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

/// Users parsed from their cached text, kept at most; emptied when full.
const PARSED_USERS: usize = 8192;

/// The last parse of each user's cached record, keyed by the exact text it
/// came from: verify reads the same text on every request, and a changed
/// record (another text) is parsed afresh, so the answer is always the
/// parse of what the cache holds now.
pub(super) struct ParsedUsers(Memo<i32, (Arc<str>, Arc<User>)>);

impl Default for ParsedUsers {
    fn default() -> Self {
        ParsedUsers(Memo::new(PARSED_USERS))
    }
}

impl ParsedUsers {
    fn parse(&self, user_id: i32, text: &str) -> Option<Arc<User>> {
        if let Some((_, user)) = self.0.get(&user_id, |(held, _)| **held == *text) {
            return Some(user);
        }
        let user = Arc::new(serde_json::from_str::<User>(text).ok()?);
        self.0.keep(user_id, (text.into(), Arc::clone(&user)));
        Some(user)
    }
}

/// Principals remembered per token, kept at most; emptied when full.
const RECENT_TOKENS: usize = 8192;
/// The longest a remembered principal is used. The near cache holds its
/// records for at most 4 s, so nothing read through here is older than the
/// 5 s the near cache promised before.
const RECENT_TTL: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct Recent {
    principal: Principal,
    /// The cache's stamp taken before the records were read.
    stamp: u64,
    at: Instant,
    exp: i64,
}

/// What verify answered for each recent token: reused, without reading the
/// records again, only while the cache's stamp says no user or session
/// record changed since (a logout or deactivation anywhere moves it), for at
/// most `RECENT_TTL`, and while the token is unexpired.
pub(super) struct RecentTokens(Memo<Box<str>, Recent>);

impl Default for RecentTokens {
    fn default() -> Self {
        RecentTokens(Memo::new(RECENT_TOKENS))
    }
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
    pub(super) async fn user(&self, user_id: i32) -> Result<Option<Arc<User>>, AuthError> {
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

    async fn resolve_user(
        &self,
        user_id: i32,
        cached: Cached,
    ) -> Result<Option<Arc<User>>, AuthError> {
        if let Cached::Hit(v) = &cached
            && let Some(user) = self.parsed_users.parse(user_id, v)
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
        Ok(user.map(Arc::new))
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

    /// What verify answered for `token` within the last `RECENT_TTL`, while
    /// no user or session record changed since and the token is unexpired:
    /// answered without awaiting anything.
    pub fn remembered(&self, token: &str) -> Option<Principal> {
        let stamp = self.cache.stamp()?;
        let fresh = |r: &Recent| {
            r.stamp == stamp && r.at.elapsed() < RECENT_TTL && self.jwt.unexpired(r.exp)
        };
        self.recent_tokens.0.get(token, fresh).map(|r| r.principal)
    }

    /// Verifies a bearer token end to end: signature and claims, session not
    /// revoked, user active. Answers the user as stored now (role included)
    /// and remembers the answer; callers that can answer without awaiting
    /// ask `remembered` first.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        // Taken before anything is read: a change meanwhile moves it.
        let stamp = self.cache.stamp();
        let (principal, exp) = self.authenticate_fully(token).await?;
        if let Some(stamp) = stamp {
            let recent = Recent {
                principal: principal.clone(),
                stamp,
                at: Instant::now(),
                exp,
            };
            self.recent_tokens.0.keep(token.into(), recent);
        }
        Ok(principal)
    }

    /// `authenticate` reading the records, and the token's expiry.
    async fn authenticate_fully(&self, token: &str) -> Result<(Principal, i64), AuthError> {
        let claims = self.jwt.verify(token)?;
        let user_id = claims.user_id()?;
        let (session_id, legacy) = match &claims.sid {
            Some(sid) if !sid.is_empty() && sid.len() <= 36 => (Arc::from(sid.as_str()), false),
            Some(_) => return Err(AuthError::InvalidToken("Invalid token")),
            None => (Arc::from(legacy_session_id(token)), true),
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
        let principal = Principal {
            user,
            session_id,
            methods: Methods::from_claim(claims.amr.clone()),
        };
        Ok((principal, claims.exp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(email: &str) -> String {
        format!(
            r#"{{"id":7,"email":"{email}","first_name":null,"last_name":null,"is_active":true,"role":"user","created_at":"2024-01-02T03:04:05","updated_at":"2024-01-02T03:04:05"}}"#
        )
    }

    #[test]
    fn a_parse_is_reused_only_for_the_same_text() {
        let memo = ParsedUsers::default();
        let first = memo.parse(7, &text("a@example.com")).unwrap();
        assert_eq!((first.id, first.email.as_str()), (7, "a@example.com"));
        // Older records (no email_verified) still read as verified.
        assert!(first.email_verified);
        let again = memo.parse(7, &text("a@example.com")).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the same text is not parsed twice"
        );
        // A changed record is parsed afresh, and that parse is kept instead.
        let changed = memo.parse(7, &text("b@example.com")).unwrap();
        assert_eq!(changed.email, "b@example.com");
        assert!(!Arc::ptr_eq(&first, &changed));
        let back = memo.parse(7, &text("a@example.com")).unwrap();
        assert_eq!(back.email, "a@example.com");
        assert!(!Arc::ptr_eq(&first, &back));
        // Unreadable text is no user, and leaves the kept parse alone.
        assert!(memo.parse(7, "{not json").is_none());
        let kept = memo.parse(7, &text("a@example.com")).unwrap();
        assert!(Arc::ptr_eq(&back, &kept));
    }
}
