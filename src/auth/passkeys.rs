//! Passkeys (WebAuthn, through webauthn-rs): registration, list, rename,
//! delete; use as the second factor after a password; and passwordless
//! login with a discoverable credential. A ceremony's server half is kept
//! in the database between its start and its finish, so any replica may
//! serve either, and each is used once.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::Serialize;
use serde::de::DeserializeOwned;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Uuid, Webauthn,
    WebauthnBuilder,
};

use super::{Auth, AuthError, ClientInfo, IssuedTokens, Methods, Principal, User};
use crate::config::MfaSettings;
use crate::entity::user_factors::{self, PASSKEY};
use crate::entity::webauthn_ceremonies;
use crate::time::now;

const CEREMONY_TTL: Duration = Duration::from_secs(300);

/// What a ceremony is for; a state is redeemed only for its own kind.
#[derive(Clone, Copy)]
enum Ceremony {
    Register,
    SecondFactor,
    Login,
}

impl Ceremony {
    fn as_str(self) -> &'static str {
        match self {
            Ceremony::Register => "register",
            Ceremony::SecondFactor => "second_factor",
            Ceremony::Login => "login",
        }
    }
}

/// A passkey as its owner sees it.
pub struct PasskeyInfo {
    pub id: i32,
    pub name: String,
    pub created_at: chrono::NaiveDateTime,
    pub last_used_at: Option<chrono::NaiveDateTime>,
    /// Set when this registration made the account's first recovery codes.
    pub recovery_codes: Option<Vec<String>>,
}

impl From<&user_factors::Model> for PasskeyInfo {
    fn from(f: &user_factors::Model) -> Self {
        PasskeyInfo {
            id: f.id,
            name: f.name.clone().unwrap_or_default(),
            created_at: f.created_at,
            last_used_at: f.last_used_at,
            recovery_codes: None,
        }
    }
}

/// The relying party: its id and the origins browsers may use.
pub fn relying_party(settings: &MfaSettings) -> anyhow::Result<Webauthn> {
    let mut origins = settings.webauthn_origins.iter();
    let first = origins
        .next()
        .ok_or_else(|| anyhow::anyhow!("WEBAUTHN_ORIGINS: at least one origin"))?;
    let mut builder = WebauthnBuilder::new(&settings.webauthn_rp_id, first)
        .map_err(|e| anyhow::anyhow!("WEBAUTHN_RP_ID and WEBAUTHN_ORIGINS: {e}"))?
        .rp_name(&settings.issuer);
    for origin in origins {
        builder = builder.append_allowed_origin(origin);
    }
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("WebAuthn relying party: {e}"))
}

fn rejected(e: impl std::fmt::Display) -> AuthError {
    tracing::info!(error = %e, "passkey verification failed");
    AuthError::PasskeyRejected
}

fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, AuthError> {
    serde_json::to_value(value).map_err(|e| AuthError::Internal(e.into()))
}

fn stored_passkey(f: &user_factors::Model) -> Option<Passkey> {
    serde_json::from_str(f.credential.as_deref()?).ok()
}

impl Auth {
    async fn save_ceremony<T: Serialize>(
        &self,
        kind: Ceremony,
        user_id: Option<i32>,
        state: &T,
    ) -> Result<String, AuthError> {
        let id = Uuid::new_v4().to_string();
        let ts = now();
        webauthn_ceremonies::ActiveModel {
            id: Set(id.clone()),
            user_id: Set(user_id),
            kind: Set(kind.as_str().into()),
            state: Set(serde_json::to_string(state).map_err(|e| AuthError::Internal(e.into()))?),
            created_at: Set(ts),
            expires_at: Set(ts + CEREMONY_TTL),
        }
        .insert(&self.db)
        .await?;
        // Ceremonies never finished are of no further use.
        let _ = webauthn_ceremonies::Entity::delete_many()
            .filter(webauthn_ceremonies::Column::ExpiresAt.lt(ts))
            .exec(&self.db)
            .await;
        Ok(id)
    }

    /// Takes a ceremony's state once: of two finishes racing, one gets it.
    async fn take_ceremony<T: DeserializeOwned>(
        &self,
        id: &str,
        kind: Ceremony,
        user_id: Option<i32>,
    ) -> Result<T, AuthError> {
        const UNKNOWN: AuthError =
            AuthError::InvalidToken("Unknown, spent or expired passkey ceremony");
        let row = webauthn_ceremonies::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .filter(|c| c.kind == kind.as_str() && c.user_id == user_id && c.expires_at > now())
            .ok_or(UNKNOWN)?;
        let taken = webauthn_ceremonies::Entity::delete_many()
            .filter(webauthn_ceremonies::Column::Id.eq(id))
            .exec(&self.db)
            .await?
            .rows_affected
            == 1;
        if !taken {
            return Err(UNKNOWN);
        }
        serde_json::from_str(&row.state).map_err(|e| AuthError::Internal(e.into()))
    }

    async fn passkeys(&self, user_id: i32) -> Result<Vec<user_factors::Model>, AuthError> {
        Ok(user_factors::Entity::find()
            .filter(user_factors::Column::UserId.eq(user_id))
            .filter(user_factors::Column::Kind.eq(PASSKEY))
            .order_by_asc(user_factors::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Starts registering a passkey for the caller; answers the ceremony id
    /// and the options for `navigator.credentials.create`.
    pub async fn passkey_register_start(
        &self,
        principal: &Principal,
    ) -> Result<(String, serde_json::Value), AuthError> {
        let user = &principal.user;
        let existing = self.passkeys(user.id).await?;
        let handle = existing
            .iter()
            .find_map(|f| {
                f.user_handle
                    .as_deref()
                    .and_then(|h| Uuid::parse_str(h).ok())
            })
            .unwrap_or_else(Uuid::new_v4);
        let exclude = existing
            .iter()
            .filter_map(stored_passkey)
            .map(|p| p.cred_id().clone())
            .collect::<Vec<_>>();
        let display = match (&user.first_name, &user.last_name) {
            (Some(f), Some(l)) => format!("{f} {l}"),
            (Some(n), None) | (None, Some(n)) => n.clone(),
            (None, None) => user.email.clone(),
        };
        let (options, state) = self
            .webauthn
            .start_passkey_registration(handle, &user.email, &display, Some(exclude))
            .map_err(rejected)?;
        let id = self
            .save_ceremony(
                Ceremony::Register,
                Some(user.id),
                &(handle.to_string(), state),
            )
            .await?;
        let mut options = to_json(&options)?;
        // Discoverable, so the passkey can also log in without a password.
        if let Some(sel) = options.pointer_mut("/publicKey/authenticatorSelection") {
            sel["residentKey"] = "required".into();
            sel["requireResidentKey"] = true.into();
        }
        Ok((id, options))
    }

    pub async fn passkey_register_finish(
        &self,
        principal: &Principal,
        ceremony: &str,
        name: Option<String>,
        credential: &RegisterPublicKeyCredential,
    ) -> Result<PasskeyInfo, AuthError> {
        let name = match name.map(|n| n.trim().to_string()) {
            Some(n) if n.chars().count() > 100 => {
                return Err(AuthError::invalid("name must be at most 100 characters"));
            }
            Some(n) if !n.is_empty() => n,
            _ => "Passkey".to_string(),
        };
        let user_id = principal.user.id;
        let (handle, state): (String, PasskeyRegistration) = self
            .take_ceremony(ceremony, Ceremony::Register, Some(user_id))
            .await?;
        let passkey = self
            .webauthn
            .finish_passkey_registration(credential, &state)
            .map_err(rejected)?;
        let txn = crate::db::begin_write(&self.db).await?;
        let row = user_factors::ActiveModel {
            user_id: Set(user_id),
            kind: Set(PASSKEY.into()),
            name: Set(Some(name)),
            secret: Set(None),
            credential: Set(Some(
                serde_json::to_string(&passkey).map_err(|e| AuthError::Internal(e.into()))?,
            )),
            credential_id: Set(Some(URL_SAFE_NO_PAD.encode(passkey.cred_id()))),
            user_handle: Set(Some(handle)),
            last_used_step: Set(0),
            confirmed_at: Set(Some(now())),
            created_at: Set(now()),
            last_used_at: Set(None),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        // The first factor of an account brings the recovery codes.
        let codes = if Self::recovery_codes_left(&txn, user_id).await? > 0 {
            None
        } else {
            Some(Self::replace_recovery_codes(&txn, user_id).await?)
        };
        txn.commit().await?;
        metrics::counter!("auth_mfa_changes_total", "change" => "passkey_registered").increment(1);
        tracing::info!(
            audit = "passkey",
            stage = "registered",
            user_id,
            passkey = row.id
        );
        let mut info = PasskeyInfo::from(&row);
        info.recovery_codes = codes;
        Ok(info)
    }

    pub async fn list_passkeys(
        &self,
        principal: &Principal,
    ) -> Result<Vec<PasskeyInfo>, AuthError> {
        Ok(self
            .passkeys(principal.user.id)
            .await?
            .iter()
            .map(PasskeyInfo::from)
            .collect())
    }

    async fn own_passkey(
        &self,
        principal: &Principal,
        id: i32,
    ) -> Result<user_factors::Model, AuthError> {
        self.passkeys(principal.user.id)
            .await?
            .into_iter()
            .find(|f| f.id == id)
            .ok_or(AuthError::NotFound("Passkey not found"))
    }

    pub async fn rename_passkey(
        &self,
        principal: &Principal,
        id: i32,
        name: &str,
    ) -> Result<PasskeyInfo, AuthError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(AuthError::invalid("name must be 1 to 100 characters"));
        }
        let mut row: user_factors::ActiveModel = self.own_passkey(principal, id).await?.into();
        row.name = Set(Some(name.to_string()));
        Ok(PasskeyInfo::from(&row.update(&self.db).await?))
    }

    /// Deletes one of the caller's passkeys; only from a session
    /// established with a second factor.
    pub async fn delete_passkey(&self, principal: &Principal, id: i32) -> Result<(), AuthError> {
        if !principal.methods.is_multi_factor() {
            return Err(AuthError::SecondFactorRequired);
        }
        let row = self.own_passkey(principal, id).await?;
        user_factors::Entity::delete_by_id(row.id)
            .exec(&self.db)
            .await?;
        metrics::counter!("auth_mfa_changes_total", "change" => "passkey_deleted").increment(1);
        tracing::info!(
            audit = "passkey",
            stage = "deleted",
            user_id = principal.user.id,
            passkey = id
        );
        Ok(())
    }

    /// Records a passkey's use: its signature counter and when.
    async fn passkey_used(
        &self,
        mut factor: user_factors::Model,
        result: &webauthn_rs::prelude::AuthenticationResult,
    ) -> Result<(), AuthError> {
        if let Some(mut passkey) = stored_passkey(&factor) {
            passkey.update_credential(result);
            factor.credential =
                Some(serde_json::to_string(&passkey).map_err(|e| AuthError::Internal(e.into()))?);
        }
        let mut row: user_factors::ActiveModel = factor.clone().into();
        row.credential = Set(factor.credential);
        row.last_used_at = Set(Some(now()));
        row.update(&self.db).await?;
        Ok(())
    }

    /// Starts a passkey assertion as the second step of a login.
    pub async fn passkey_second_factor_start(
        &self,
        ticket: &str,
    ) -> Result<(String, serde_json::Value), AuthError> {
        let user_id = self.live_ticket(ticket).await?.user_id;
        let keys: Vec<Passkey> = self
            .passkeys(user_id)
            .await?
            .iter()
            .filter_map(stored_passkey)
            .collect();
        if keys.is_empty() {
            return Err(AuthError::Conflict("This account has no passkey"));
        }
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(&keys)
            .map_err(rejected)?;
        let id = self
            .save_ceremony(Ceremony::SecondFactor, Some(user_id), &state)
            .await?;
        Ok((id, to_json(&options)?))
    }

    /// Checks a passkey assertion for the ticket's user (the second step).
    pub(super) async fn passkey_second_factor_finish(
        &self,
        user_id: i32,
        ceremony: &str,
        credential: &PublicKeyCredential,
    ) -> Result<bool, AuthError> {
        let state: PasskeyAuthentication = self
            .take_ceremony(ceremony, Ceremony::SecondFactor, Some(user_id))
            .await?;
        let Ok(result) = self
            .webauthn
            .finish_passkey_authentication(credential, &state)
        else {
            return Ok(false);
        };
        let cred_id = URL_SAFE_NO_PAD.encode(result.cred_id());
        if let Some(factor) = self
            .passkeys(user_id)
            .await?
            .into_iter()
            .find(|f| f.credential_id.as_deref() == Some(cred_id.as_str()))
        {
            self.passkey_used(factor, &result).await?;
        }
        Ok(true)
    }

    /// Starts a passwordless login: the browser offers the user's
    /// discoverable passkeys for this site.
    pub async fn passkey_login_start(&self) -> Result<(String, serde_json::Value), AuthError> {
        let (options, state) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(rejected)?;
        let id = self.save_ceremony(Ceremony::Login, None, &state).await?;
        let mut options = to_json(&options)?;
        // webauthn-rs asks for conditional (autofill) mediation; a login
        // button calls the modal API, which takes the same options.
        if let Some(o) = options.as_object_mut() {
            o.remove("mediation");
        }
        Ok((id, options))
    }

    /// Finishes a passwordless login: the passkey names its user (the
    /// credential's user handle), and its assertion proves possession and
    /// user verification: two factors.
    pub async fn passkey_login_finish(
        &self,
        ceremony: &str,
        credential: &PublicKeyCredential,
        client: &ClientInfo,
    ) -> Result<IssuedTokens, AuthError> {
        let state: DiscoverableAuthentication =
            self.take_ceremony(ceremony, Ceremony::Login, None).await?;
        let (handle, cred_id) = self
            .webauthn
            .identify_discoverable_authentication(credential)
            .map_err(rejected)?;
        let cred_id = URL_SAFE_NO_PAD.encode(cred_id);
        let factor = user_factors::Entity::find()
            .filter(user_factors::Column::Kind.eq(PASSKEY))
            .filter(user_factors::Column::CredentialId.eq(cred_id))
            .filter(user_factors::Column::UserHandle.eq(handle.to_string()))
            .one(&self.db)
            .await?
            .ok_or(AuthError::PasskeyRejected)?;
        let passkey = stored_passkey(&factor).ok_or(AuthError::PasskeyRejected)?;
        let result = self
            .webauthn
            .finish_discoverable_authentication(
                credential,
                state,
                &[DiscoverableKey::from(&passkey)],
            )
            .map_err(rejected)?;
        let user = self
            .find_active(factor.user_id)
            .await?
            .ok_or(AuthError::PasskeyRejected)?;
        if self.settings.accounts.require_email_verification && !user.email_verified {
            return Err(AuthError::EmailNotVerified);
        }
        self.passkey_used(factor, &result).await?;
        metrics::counter!("auth_mfa_total", "method" => "passkey_login", "result" => "success")
            .increment(1);
        tracing::info!(audit = "login", result = "success", method = "passkey", user_id = user.id, ip = ?client.ip);
        self.start_session(User::from(&user), client, Methods::passkey())
            .await
    }
}
