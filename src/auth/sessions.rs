//! Sessions: start, refresh-token rotation (families, reuse detection),
//! revocation on every replica, logout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::Rng;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, QueryFilter, QuerySelect, Set,
};
use sha2::Sha256;

use super::authenticate::session_key;
use super::{Auth, AuthError, ClientInfo, IssuedTokens, Methods, Principal, User, sha256_hex};
use crate::entity::{refresh_tokens, sessions};
use crate::time::now;

const INVALID_REFRESH: AuthError = AuthError::InvalidToken("Invalid refresh token");

fn new_refresh_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Auth {
    /// The next token in a refresh chain, derived from its parent with the
    /// chain key: concurrent refreshes of one parent on any replica get the
    /// same child, and nothing but its digest is stored.
    fn child_refresh_token(&self, parent: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.refresh_chain_key)
            .expect("HMAC takes keys of any length");
        mac.update(parent.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    fn issue(
        &self,
        user: User,
        sid: &str,
        methods: &Methods,
        refresh_token: String,
    ) -> Result<IssuedTokens, AuthError> {
        let extra = self
            .settings
            .custom_claims
            .iter()
            .filter_map(|k| Some((k.clone(), user.meta_data.get(k)?.clone())))
            .collect();
        let (access_token, _) = self.jwt.issue(
            user.id,
            &user.email,
            user.role.as_str(),
            sid,
            methods,
            &extra,
        )?;
        Ok(IssuedTokens {
            access_token,
            expires_in: self.jwt.ttl().as_secs(),
            refresh_token,
            user,
        })
    }

    /// Starts a session: a session row, a refresh token, an access token.
    pub(super) async fn start_session(
        &self,
        user: User,
        client: &ClientInfo,
        methods: Methods,
    ) -> Result<IssuedTokens, AuthError> {
        let sid = uuid::Uuid::new_v4().to_string();
        let refresh = new_refresh_token();
        let ts = now();
        let expires = ts + self.settings.refresh_ttl;
        let txn = crate::db::begin_write(&self.db).await?;
        sessions::ActiveModel {
            id: Set(sid.clone()),
            user_id: Set(user.id),
            created_at: Set(ts),
            expires_at: Set(expires),
            revoked_at: Set(None),
            revoked_reason: Set(None),
            ip_address: Set(client.ip.map(|ip| ip.to_string())),
            user_agent: Set(client.user_agent.clone()),
            amr: Set((methods != Methods::password()).then(|| methods.stored())),
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
        self.issue(user, &sid, &methods, refresh)
    }

    /// Rotates a refresh token. A token used twice outside the grace window
    /// revokes its whole session (token family).
    pub async fn refresh(&self, token: &str) -> Result<IssuedTokens, AuthError> {
        if token.is_empty() || token.len() > 256 {
            return Err(INVALID_REFRESH);
        }
        let hash = sha256_hex(token.as_bytes());
        let row = refresh_tokens::Entity::find_by_id(hash.clone())
            .one(&self.db)
            .await?
            .ok_or(INVALID_REFRESH)?;
        let ts = now();
        let session = sessions::Entity::find_by_id(row.session_id.clone())
            .one(&self.db)
            .await?
            .ok_or(INVALID_REFRESH)?;
        if session.revoked_at.is_some() || session.expires_at <= ts || row.expires_at <= ts {
            metrics::counter!("auth_refresh_total", "result" => "invalid").increment(1);
            return Err(INVALID_REFRESH);
        }
        let user = self
            .user(session.user_id)
            .await?
            .filter(|u| u.is_active)
            .ok_or(AuthError::InvalidToken("User not found or inactive"))?;

        // Claim the parent: exactly one caller flips used_at from NULL.
        let claimed = refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::UsedAt, Expr::value(ts))
            .filter(refresh_tokens::Column::TokenHash.eq(hash.clone()))
            .filter(refresh_tokens::Column::UsedAt.is_null())
            .exec(&self.db)
            .await?
            .rows_affected
            == 1;
        let result = if claimed {
            "rotated"
        } else {
            let used_at = refresh_tokens::Entity::find_by_id(hash.clone())
                .one(&self.db)
                .await?
                .and_then(|r| r.used_at)
                .unwrap_or(ts);
            if (ts - used_at).to_std().unwrap_or_default() > self.settings.refresh_reuse_grace {
                self.revoke_session(&session.id, session.user_id, "refresh_reuse")
                    .await?;
                metrics::counter!("auth_refresh_total", "result" => "reuse_detected").increment(1);
                tracing::warn!(audit = "refresh_reuse", user_id = user.id, session_id = %session.id);
                return Err(AuthError::InvalidToken("Refresh token reuse detected"));
            }
            "grace"
        };
        let child = self.child_refresh_token(token);
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
        .exec_without_returning(&self.db)
        .await?;
        metrics::counter!("auth_refresh_total", "result" => result).increment(1);
        let methods = Methods::from_stored(session.amr.as_deref());
        self.issue(Arc::unwrap_or_clone(user), &session.id, &methods, child)
    }

    /// How long a revocation marker must live: past every access token of the session.
    fn revocation_ttl(&self) -> Duration {
        self.jwt.ttl() + Duration::from_secs(60)
    }

    /// Ends a session in the database, then tells every replica through the cache.
    async fn revoke_session(&self, sid: &str, user_id: i32, reason: &str) -> Result<(), AuthError> {
        let ts = now();
        let updated = sessions::Entity::update_many()
            .col_expr(sessions::Column::RevokedAt, Expr::value(ts))
            .col_expr(sessions::Column::RevokedReason, Expr::value(reason))
            .filter(sessions::Column::Id.eq(sid))
            .filter(sessions::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        if updated.rows_affected == 0 && sid.starts_with("legacy-") {
            // Tokens the original issued have no session row; record one.
            sessions::Entity::insert(sessions::ActiveModel {
                id: Set(sid.to_string()),
                user_id: Set(user_id),
                created_at: Set(ts),
                expires_at: Set(ts + self.revocation_ttl()),
                revoked_at: Set(Some(ts)),
                revoked_reason: Set(Some(reason.to_string())),
                ip_address: Set(None),
                user_agent: Set(None),
                amr: Set(None),
            })
            .on_conflict(
                OnConflict::column(sessions::Column::Id)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        }
        self.mark_revoked(user_id, sid).await;
        Ok(())
    }

    async fn mark_revoked(&self, user_id: i32, sid: &str) {
        let ttl = self.revocation_ttl();
        let key = session_key(user_id, sid);
        if let Err(e) = self.cache.set(&key, "0", ttl).await {
            tracing::warn!(error = %e, "cache write failed after a revocation; retrying until it lands");
            self.pending().push((key, Instant::now() + ttl));
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<(String, Instant)>> {
        self.pending_revocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Writes revocations the cache missed; runs every second in the background.
    pub async fn flush_pending_revocations(&self) {
        let due = std::mem::take(&mut *self.pending());
        let now = Instant::now();
        for (key, until) in due.into_iter().filter(|(_, until)| *until > now) {
            if self.cache.set(&key, "0", until - now).await.is_err() {
                self.pending().push((key, until));
            }
        }
    }

    pub(super) async fn revoke_user_sessions(
        &self,
        user_id: i32,
        reason: &str,
    ) -> Result<(), AuthError> {
        let live = || {
            Condition::all()
                .add(sessions::Column::UserId.eq(user_id))
                .add(sessions::Column::RevokedAt.is_null())
        };
        let ids: Vec<String> = sessions::Entity::find()
            .select_only()
            .column(sessions::Column::Id)
            .filter(live())
            .into_tuple()
            .all(&self.db)
            .await?;
        sessions::Entity::update_many()
            .col_expr(sessions::Column::RevokedAt, Expr::value(now()))
            .col_expr(sessions::Column::RevokedReason, Expr::value(reason))
            .filter(live())
            .exec(&self.db)
            .await?;
        for sid in ids {
            self.mark_revoked(user_id, &sid).await;
        }
        Ok(())
    }

    /// Ends the caller's session and, if given, the session of a refresh token
    /// that belongs to the same user.
    pub async fn logout(
        &self,
        principal: &Principal,
        refresh_token: Option<&str>,
    ) -> Result<(), AuthError> {
        let user_id = principal.user.id;
        self.revoke_session(&principal.session_id, user_id, "logout")
            .await?;
        if let Some(token) = refresh_token.filter(|t| !t.is_empty() && t.len() <= 256) {
            let hash = sha256_hex(token.as_bytes());
            if let Some(row) = refresh_tokens::Entity::find_by_id(hash)
                .one(&self.db)
                .await?
            {
                let owned = sessions::Entity::find()
                    .filter(
                        Condition::all()
                            .add(sessions::Column::Id.eq(row.session_id.clone()))
                            .add(sessions::Column::UserId.eq(user_id)),
                    )
                    .one(&self.db)
                    .await?;
                if owned.is_some() {
                    self.revoke_session(&row.session_id, user_id, "logout")
                        .await?;
                }
            }
        }
        metrics::counter!("auth_logouts_total").increment(1);
        tracing::info!(audit = "logout", user_id, session_id = %principal.session_id);
        Ok(())
    }
}
