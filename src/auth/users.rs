//! Accounts: create, read, change, deactivate, list, the bootstrap admin.

use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ActiveModelTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};

use super::domain::parse_name;
use super::{
    AdminChange, Auth, AuthError, Email, NewAccount, Principal, Role, User, UserFilter, password,
};
use crate::entity::users;
use crate::time::now;

impl Auth {
    pub(super) async fn find_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<users::Model>, AuthError> {
        Ok(users::Entity::find()
            .filter(Expr::expr(Func::lower(Expr::col(users::Column::Email))).eq(email.as_str()))
            .order_by_asc(users::Column::Id)
            .one(&self.db)
            .await?)
    }

    pub(super) async fn find(&self, user_id: i32) -> Result<users::Model, AuthError> {
        users::Entity::find_by_id(user_id)
            .one(&self.db)
            .await?
            .ok_or(AuthError::UserNotFound)
    }

    /// The stored row of an active user; `None` for an unknown or inactive one.
    pub(super) async fn find_active(
        &self,
        user_id: i32,
    ) -> Result<Option<users::Model>, AuthError> {
        Ok(users::Entity::find_by_id(user_id)
            .one(&self.db)
            .await?
            .filter(|u| u.is_active))
    }

    /// Registration's rules for a new password, with the person's email and
    /// names as words it must not be built from.
    pub(super) fn check_password_of(
        &self,
        password: &str,
        email: &str,
        first_name: Option<&str>,
        last_name: Option<&str>,
    ) -> Result<(), AuthError> {
        let context: Vec<&str> = [Some(email), first_name, last_name]
            .into_iter()
            .flatten()
            .collect();
        password::check_new_password(password, &self.settings.password, &context)
    }

    /// Creates an account. An unverified one gets its verification mail in
    /// the same transaction.
    pub(super) async fn create_user(
        &self,
        account: NewAccount,
        role: Role,
        verified: bool,
    ) -> Result<users::Model, AuthError> {
        self.check_password_of(
            &account.password,
            account.email.as_str(),
            account.first_name.as_deref(),
            account.last_name.as_deref(),
        )?;
        if self.find_by_email(&account.email).await?.is_some() {
            return Err(AuthError::EmailTaken);
        }
        let hash = self.hasher.hash(&account.password).await?;
        let ts = now();
        let model = users::ActiveModel {
            email: Set(account.email.as_str().to_string()),
            password_hash: Set(hash),
            is_active: Set(true),
            created_at: Set(ts),
            updated_at: Set(ts),
            first_name: Set(account.first_name),
            last_name: Set(account.last_name),
            meta_data: Set(serde_json::json!({})),
            role: Set(role.as_str().to_string()),
            email_verified: Set(verified),
            ..Default::default()
        };
        let txn = crate::db::begin_write(&self.db).await?;
        // Two racing registrations: the unique index decides, the loser gets 409.
        let user = model
            .insert(&txn)
            .await
            .map_err(AuthError::email_taken_or)?;
        if !verified {
            self.mail_link(
                &txn,
                &user,
                super::accounts::Purpose::VerifyEmail,
                &user.email,
                serde_json::json!({}),
            )
            .await?;
        }
        txn.commit().await?;
        self.mail.wake();
        Ok(user)
    }

    /// One user (admin view).
    pub async fn get_user(&self, user_id: i32) -> Result<User, AuthError> {
        Ok(User::from(&self.find(user_id).await?))
    }

    /// Publishes a changed user to every replica at once.
    pub(super) async fn publish_user(&self, user: &users::Model) -> User {
        let user = User::from(user);
        self.cache_user(&user).await;
        user
    }

    async fn save(&self, mut active: users::ActiveModel) -> Result<User, AuthError> {
        active.updated_at = Set(now());
        let user = active.update(&self.db).await?;
        Ok(self.publish_user(&user).await)
    }

    pub async fn update_profile(
        &self,
        user_id: i32,
        first_name: Option<String>,
        last_name: Option<String>,
    ) -> Result<User, AuthError> {
        let first_name = parse_name("first_name", first_name)?;
        let last_name = parse_name("last_name", last_name)?;
        let user = self.find(user_id).await.map_err(|e| match e {
            AuthError::UserNotFound => AuthError::InvalidToken("User not found or inactive"),
            other => other,
        })?;
        let mut active: users::ActiveModel = user.into();
        if let Some(f) = first_name {
            active.first_name = Set(Some(f));
        }
        if let Some(l) = last_name {
            active.last_name = Set(Some(l));
        }
        self.save(active).await
    }

    /// Admin changes; deactivation ends every session of the user at once.
    pub async fn admin_update(
        &self,
        actor: &Principal,
        user_id: i32,
        change: AdminChange,
    ) -> Result<User, AuthError> {
        let AdminChange {
            role,
            is_active,
            email_verified,
            meta_data,
        } = change;
        let user = self.find(user_id).await?;
        let old_role = Role::from_stored(&user.role);
        let mut active: users::ActiveModel = user.into();
        if let Some(r) = role {
            active.role = Set(r.as_str().to_string());
        }
        if let Some(a) = is_active {
            active.is_active = Set(a);
        }
        if let Some(v) = email_verified {
            active.email_verified = Set(v);
        }
        let meta_changed = meta_data.is_some();
        if let Some(m) = meta_data {
            active.meta_data = Set(m);
        }
        let user = self.save(active).await?;
        if email_verified.is_some() || meta_changed {
            tracing::info!(
                audit = "admin_user_change",
                actor = actor.user.id,
                user_id,
                email_verified,
                meta_data = meta_changed
            );
        }
        if role.is_some_and(|r| r != old_role) {
            metrics::counter!("auth_role_changes_total").increment(1);
            tracing::info!(
                audit = "role_change",
                actor = actor.user.id,
                user_id,
                from = old_role.as_str(),
                to = user.role.as_str()
            );
        }
        if is_active == Some(false) {
            self.revoke_user_sessions(user_id, "deactivated").await?;
            metrics::counter!("auth_user_deactivations_total", "by" => "admin").increment(1);
            tracing::info!(audit = "deactivation", actor = actor.user.id, user_id);
        }
        Ok(user)
    }

    /// Soft delete (`is_active=false`, as the original) and end every
    /// session. Users may delete only themselves; admins anyone.
    pub async fn deactivate(&self, actor: &Principal, user_id: i32) -> Result<(), AuthError> {
        let by = if actor.user.id == user_id {
            "self"
        } else if actor.is_admin() {
            "admin"
        } else {
            return Err(AuthError::Forbidden("Can only delete your own account"));
        };
        let mut active: users::ActiveModel = self.find(user_id).await?.into();
        active.is_active = Set(false);
        self.save(active).await?;
        self.revoke_user_sessions(user_id, "deleted").await?;
        metrics::counter!("auth_user_deletions_total", "by" => by).increment(1);
        tracing::info!(audit = "deletion", actor = actor.user.id, user_id, by);
        Ok(())
    }

    pub async fn list_users(&self, filter: &UserFilter) -> Result<(Vec<User>, u64), AuthError> {
        let mut query = users::Entity::find();
        if let Some(e) = &filter.email {
            let pattern = e
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            query = query.filter(
                Expr::expr(Func::lower(Expr::col(users::Column::Email)))
                    .like(format!("%{pattern}%")),
            );
        }
        let total = query.clone().count(&self.db).await?;
        let rows = query
            .order_by_asc(users::Column::Id)
            .limit(filter.limit)
            .offset(filter.offset)
            .all(&self.db)
            .await?;
        Ok((rows.iter().map(User::from).collect(), total))
    }

    /// Creates the configured (or CLI-given) admin, or promotes an existing account.
    pub async fn ensure_admin(&self, email: &str, password: &str) -> Result<User, AuthError> {
        let email = Email::parse(email)?;
        match self.find_by_email(&email).await? {
            Some(user) if Role::from_stored(&user.role) == Role::Admin => Ok(User::from(&user)),
            Some(user) => {
                let mut active: users::ActiveModel = user.into();
                active.role = Set(Role::Admin.as_str().to_string());
                self.save(active).await
            }
            None => {
                let account = NewAccount {
                    email,
                    password: password.to_string(),
                    first_name: None,
                    last_name: None,
                };
                // The operator named this address: nothing to verify.
                let user = self.create_user(account, Role::Admin, true).await?;
                Ok(User::from(&user))
            }
        }
    }
}
