//! Managing keys: create (the secret is shown once), list, read, change and
//! revoke. A change made here is seen at once by this replica and within a
//! second by the others (see `Keys::record`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryOrder,
};
use sha2::{Digest, Sha256};

use super::{ApiKey, CreatedKey, KEY_PREFIX, KeyChange, KeyError, Keys, NewKey, Scopes};
use crate::entity::api_keys;

/// Characters of the key kept in the clear to tell keys apart.
const SHOWN: usize = KEY_PREFIX.len() + 8;

impl From<api_keys::Model> for ApiKey {
    fn from(r: api_keys::Model) -> Self {
        ApiKey {
            id: r.id,
            name: r.name,
            prefix: r.prefix,
            scopes: Scopes::parse(&r.scopes).unwrap_or_default(),
            rate_per_second: r.rate_per_second.and_then(|v| u32::try_from(v).ok()),
            daily_ingest_quota: r.daily_ingest_quota,
            expires_at: r.expires_at,
            created_by: r.created_by,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }
}

fn new_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

impl Keys {
    pub async fn create(&self, new: NewKey) -> Result<CreatedKey, KeyError> {
        let secret = new_secret();
        let row = api_keys::ActiveModel {
            id: NotSet,
            name: Set(new.name),
            prefix: Set(secret[..SHOWN].to_string()),
            digest: Set(hex::encode(Sha256::digest(secret.as_bytes()))),
            scopes: Set(new.scopes.to_string()),
            rate_per_second: Set(new.rate_per_second.map(|r| r as i32)),
            daily_ingest_quota: Set(new.daily_ingest_quota),
            expires_at: Set(new.expires_at),
            created_by: Set(new.created_by),
            created_at: Set(crate::time::now()),
            last_used_at: Set(None),
            revoked_at: Set(None),
        }
        .insert(&self.db)
        .await?;
        Ok(CreatedKey {
            key: row.into(),
            secret,
        })
    }

    pub async fn list(&self) -> Result<Vec<ApiKey>, KeyError> {
        Ok(api_keys::Entity::find()
            .order_by_asc(api_keys::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(ApiKey::from)
            .collect())
    }

    pub async fn get(&self, id: i32) -> Result<ApiKey, KeyError> {
        Ok(row(&self.db, id).await?.into())
    }

    pub async fn update(&self, id: i32, change: KeyChange) -> Result<ApiKey, KeyError> {
        let txn = crate::db::begin_write(&self.db).await?;
        let row = row(&txn, id).await?;
        let digest = row.digest.clone();
        let mut active: api_keys::ActiveModel = row.into();
        if let Some(name) = change.name {
            active.name = Set(name);
        }
        if let Some(scopes) = change.scopes {
            active.scopes = Set(scopes.to_string());
        }
        if let Some(rate) = change.rate_per_second {
            active.rate_per_second = Set(rate.map(|r| r as i32));
        }
        if let Some(quota) = change.daily_ingest_quota {
            active.daily_ingest_quota = Set(quota);
        }
        if let Some(at) = change.expires_at {
            active.expires_at = Set(at);
        }
        let row = active.update(&txn).await?;
        txn.commit().await?;
        self.forget(&digest);
        Ok(row.into())
    }

    /// Revokes a key; revoking it again keeps the first time.
    pub async fn revoke(&self, id: i32) -> Result<ApiKey, KeyError> {
        let txn = crate::db::begin_write(&self.db).await?;
        let row = row(&txn, id).await?;
        if row.revoked_at.is_some() {
            return Ok(row.into());
        }
        let digest = row.digest.clone();
        let mut active: api_keys::ActiveModel = row.into();
        active.revoked_at = Set(Some(crate::time::now()));
        let row = active.update(&txn).await?;
        txn.commit().await?;
        self.forget(&digest);
        Ok(row.into())
    }
}

async fn row<C: ConnectionTrait>(conn: &C, id: i32) -> Result<api_keys::Model, KeyError> {
    api_keys::Entity::find_by_id(id)
        .one(conn)
        .await?
        .ok_or(KeyError::NotFound)
}

pub(super) async fn touch(db: &DatabaseConnection, id: i32) -> Result<(), DbErr> {
    api_keys::Entity::update(api_keys::ActiveModel {
        id: Set(id),
        last_used_at: Set(Some(crate::time::now())),
        ..Default::default()
    })
    .exec(db)
    .await
    .map(|_| ())
}
