//! Access tokens: the original's claims (`sub`, `email`, `iat`, `exp`,
//! `type`) plus `jti`, `sid`, `role` and `iss`. The algorithm is pinned.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretSlice};
use serde::{Deserialize, Serialize};

use super::{AuthError, Methods};
use crate::config::{JwtAlgorithm, JwtSettings};
use crate::memo::Memo;

const INVALID: AuthError = AuthError::InvalidToken("Invalid token");
/// Verified tokens kept at most; the memo is emptied when full.
const MEMO_ENTRIES: usize = 8192;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub iat: i64,
    pub exp: i64,
    #[serde(rename = "type")]
    pub token_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Authentication methods (RFC 8176); absent in tokens of a password alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amr: Option<Vec<String>>,
    /// Assurance level: `aal1`, or `aal2` after a second factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
}

impl Claims {
    /// The user id in `sub`; anything but a positive integer is invalid.
    pub fn user_id(&self) -> Result<i32, AuthError> {
        match self.sub.parse::<i32>() {
            Ok(id) if id > 0 => Ok(id),
            _ => Err(INVALID),
        }
    }
}

pub struct JwtKeys {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: Option<String>,
    issuer: String,
    ttl: Duration,
    validation: Validation,
    jwks: JwkSet,
    /// Tokens that passed `verify`, by their exact text. A token's claims
    /// never change, so a hit skips the signature and the JSON and checks
    /// only expiry; revocation is checked by the caller on every request.
    verified: Memo<Box<str>, Arc<Claims>>,
}

impl JwtKeys {
    pub fn new(settings: &JwtSettings) -> anyhow::Result<Self> {
        let algorithm = match settings.algorithm {
            JwtAlgorithm::Hs256 => Algorithm::HS256,
            JwtAlgorithm::EdDsa => Algorithm::EdDSA,
            JwtAlgorithm::Rs256 => Algorithm::RS256,
        };
        let kid = settings.key_id.clone();
        let (encoding, decoding, jwks) = match (algorithm, &settings.private_key_file) {
            (Algorithm::HS256, _) | (_, None) => {
                let secret = settings.secret.expose_secret().as_bytes();
                (
                    EncodingKey::from_secret(secret),
                    DecodingKey::from_secret(secret),
                    // An HMAC secret is never published.
                    JwkSet { keys: vec![] },
                )
            }
            (alg, Some(path)) => {
                let pem: SecretSlice<u8> = std::fs::read(path)
                    .context("reading JWT_PRIVATE_KEY_FILE")?
                    .into();
                let encoding = match alg {
                    Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.expose_secret()),
                    _ => EncodingKey::from_rsa_pem(pem.expose_secret()),
                }
                .context("JWT_PRIVATE_KEY_FILE is not a PEM private key for JWT_ALGORITHM")?;
                let mut jwk = Jwk::from_encoding_key(&encoding, alg)
                    .context("deriving the public key from JWT_PRIVATE_KEY_FILE")?;
                jwk.common.key_id = kid.clone();
                let decoding = DecodingKey::from_jwk(&jwk)?;
                (encoding, decoding, JwkSet { keys: vec![jwk] })
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = settings.leeway;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        validation.validate_aud = false;
        Ok(JwtKeys {
            algorithm,
            encoding,
            decoding,
            kid,
            issuer: settings.issuer.clone(),
            ttl: settings.expires_in,
            validation,
            jwks,
            verified: Memo::new(MEMO_ENTRIES),
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// Signs an access token; `extra` claims (allow-listed `meta_data`
    /// keys) are added beside the server's own, which they never replace.
    pub fn issue(
        &self,
        user_id: i32,
        email: &str,
        role: &str,
        session_id: &str,
        methods: &Methods,
        extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(String, Claims), AuthError> {
        let now = crate::time::now_utc().timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            email: Some(email.to_string()),
            iat: now,
            exp: now + self.ttl.as_secs() as i64,
            token_type: "access".into(),
            jti: Some(uuid::Uuid::new_v4().to_string()),
            sid: Some(session_id.to_string()),
            role: Some(role.to_string()),
            iss: Some(self.issuer.clone()),
            amr: Some(methods.as_slice().to_vec()),
            acr: Some(methods.acr().to_string()),
        };
        let mut header = Header::new(self.algorithm);
        header.kid = self.kid.clone();
        // Flattened only when signing: verify decodes the plain `Claims`.
        #[derive(Serialize)]
        struct Signed<'a> {
            #[serde(flatten)]
            extra: &'a serde_json::Map<String, serde_json::Value>,
            #[serde(flatten)]
            claims: &'a Claims,
        }
        let signed = Signed {
            extra,
            claims: &claims,
        };
        let token = jsonwebtoken::encode(&header, &signed, &self.encoding)
            .map_err(|e| AuthError::Internal(e.into()))?;
        Ok((token, claims))
    }

    /// Every failure is a 401: expired, tampered, wrong key or algorithm,
    /// `alg: none`, malformed claims.
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        if let Some(claims) = self.memo(token) {
            return Ok(claims);
        }
        let claims = Arc::new(self.decode(token)?);
        self.verified.keep(token.into(), Arc::clone(&claims));
        Ok(claims)
    }

    /// The memoised claims of `token` while `decode` would still accept
    /// them (its expiry rule and clock); an expired entry is dropped, so
    /// `decode` answers with its own error.
    fn memo(&self, token: &str) -> Option<Arc<Claims>> {
        let claims = self.verified.get(token, |c| self.unexpired(c.exp));
        if claims.is_none() {
            self.verified.forget(token);
        }
        claims
    }

    /// Whether `decode` would still accept a token expiring at `exp`.
    pub fn unexpired(&self, exp: i64) -> bool {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        exp >= now - self.validation.leeway as i64
    }

    fn decode(&self, token: &str) -> Result<Claims, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::InvalidToken("Token expired"),
                _ => INVALID,
            })?;
        let claims = data.claims;
        if claims.token_type != "access" {
            return Err(INVALID);
        }
        // Tokens the original issued carry no iss; ours must carry ours.
        if claims.iss.as_deref().is_some_and(|iss| iss != self.issuer) {
            return Err(INVALID);
        }
        claims.user_id()?;
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(expires_in: Duration) -> JwtKeys {
        JwtKeys::new(&JwtSettings {
            secret: "a-test-secret-of-thirty-two-bytes!".to_string().into(),
            algorithm: JwtAlgorithm::Hs256,
            expires_in,
            issuer: "platform-server".into(),
            leeway: 0,
            private_key_file: None,
            key_id: None,
        })
        .unwrap()
    }

    fn token(keys: &JwtKeys) -> (String, Claims) {
        let extra = serde_json::Map::new();
        keys.issue(
            7,
            "a@example.com",
            "user",
            "sid-1",
            &Methods::password(),
            &extra,
        )
        .unwrap()
    }

    fn memo_len(keys: &JwtKeys) -> usize {
        keys.verified.len()
    }

    #[test]
    fn a_memoised_token_is_refused_once_it_expires() {
        let keys = keys(Duration::from_secs(1));
        let (token, issued) = token(&keys);
        assert_eq!(keys.verify(&token).unwrap().jti, issued.jti);
        assert_eq!(memo_len(&keys), 1);
        assert_eq!(keys.verify(&token).unwrap().jti, issued.jti);
        while jsonwebtoken::get_current_timestamp() as i64 <= issued.exp {
            std::thread::sleep(Duration::from_millis(50));
        }
        let err = keys.verify(&token).unwrap_err();
        assert_eq!(
            err.to_string(),
            AuthError::InvalidToken("Token expired").to_string()
        );
        assert_eq!(memo_len(&keys), 0);
    }

    #[test]
    fn only_the_exact_text_of_a_verified_token_is_memoised() {
        let keys = keys(Duration::from_secs(900));
        let (token, _) = token(&keys);
        keys.verify(&token).unwrap();
        // The same claims under a signature one character off.
        let at = token.len() - 5;
        let swap = if &token[at..=at] == "A" { "B" } else { "A" };
        let tampered = format!("{}{swap}{}", &token[..at], &token[at + 1..]);
        assert!(keys.verify(&tampered).is_err());
        assert_eq!(memo_len(&keys), 1);
    }

    #[test]
    fn the_memo_is_emptied_when_full() {
        let keys = keys(Duration::from_secs(900));
        for _ in 0..MEMO_ENTRIES {
            keys.verify(&token(&keys).0).unwrap();
        }
        assert_eq!(memo_len(&keys), MEMO_ENTRIES);
        keys.verify(&token(&keys).0).unwrap();
        assert_eq!(memo_len(&keys), 1);
    }
}
