//! The account sections: mail transport, sender, links and templates, and
//! the claims `meta_data` may add to tokens.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{ConfigError, MailDelivery, MailLinks, MailSettings, Raw, RunEnvironment, bad, ensure};
use crate::config::split_list;

/// The mail section: transport, sender, links and templates.
pub(super) fn mail_settings(
    r: &Raw,
    environment: RunEnvironment,
) -> Result<MailSettings, ConfigError> {
    let smtp_url = Some(r.smtp_url.expose_secret().trim())
        .filter(|u| !u.is_empty())
        .map(|u| {
            let scheme = u.split_once("://").map(|(s, _)| s);
            if matches!(scheme, Some("smtp" | "smtps")) {
                Ok(SecretString::from(u.to_string()))
            } else {
                Err(bad(
                    "smtp_url",
                    "must be smtp://host[:port][?tls=required|opportunistic] or smtps://host[:port]",
                ))
            }
        })
        .transpose()?;
    let from = r.mail_from.trim().to_string();
    ensure(
        from.parse::<lettre::message::Mailbox>().is_ok(),
        "mail_from",
        "must be an address, optionally with a name: Name <user@example.com>",
    )?;
    let base = r.public_base_url.trim().trim_end_matches('/').to_string();
    ensure(
        url::Url::parse(&base).is_ok_and(|u| matches!(u.scheme(), "http" | "https")),
        "public_base_url",
        "must be an http(s) URL",
    )?;
    let link = |key: &str, value: &str, path: &str| -> Result<String, ConfigError> {
        let template = match value.trim() {
            "" => format!("{base}{path}?token={{token}}"),
            t => t.to_string(),
        };
        ensure(
            template.contains("{token}"),
            key,
            "must contain {token} where the link's token goes",
        )?;
        Ok(template)
    };
    ensure(
        r.mail_retry_base > 0 && r.mail_retry_max >= r.mail_retry_base,
        "mail_retry_max",
        "MAIL_RETRY_BASE must be at least 1 second and MAIL_RETRY_MAX at least as long",
    )?;
    let delivery = match (&smtp_url, environment) {
        (Some(_), _) => MailDelivery::Smtp,
        // Links in a production log would hand accounts to whoever reads it.
        (None, RunEnvironment::Production) => MailDelivery::Discard,
        (None, _) => MailDelivery::Log,
    };
    Ok(MailSettings {
        smtp_url,
        delivery,
        from,
        links: MailLinks {
            verify: link("mail_verify_url", &r.mail_verify_url, "/verify-email")?,
            reset: link("mail_reset_url", &r.mail_reset_url, "/reset-password")?,
            email_change: link(
                "mail_email_change_url",
                &r.mail_email_change_url,
                "/confirm-email-change",
            )?,
        },
        template_dir: Some(r.mail_template_dir.trim())
            .filter(|d| !d.is_empty())
            .map(PathBuf::from),
        retry_base: Duration::from_secs(r.mail_retry_base),
        retry_max: Duration::from_secs(r.mail_retry_max),
    })
}

/// Claims every token carries that a `meta_data` key must not replace.
const RESERVED_CLAIMS: &[&str] = &[
    "sub", "email", "iat", "exp", "nbf", "type", "jti", "sid", "role", "iss", "aud", "amr", "acr",
];

pub(super) fn custom_claims(raw: &str) -> Result<Vec<String>, ConfigError> {
    let claims = split_list(raw);
    for c in &claims {
        ensure(
            !RESERVED_CLAIMS.contains(&c.as_str()),
            "jwt_custom_claims",
            &format!("'{c}' is a claim the server sets itself"),
        )?;
        ensure(
            c.len() <= 64
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "_-.:".contains(ch)),
            "jwt_custom_claims",
            &format!("'{c}' must be at most 64 letters, digits or _-.:"),
        )?;
    }
    Ok(claims)
}

/// The origins passkeys may be used from; by default the public base URL's.
pub(super) fn webauthn_origins(raw: &str, base: &str) -> Result<Vec<url::Url>, ConfigError> {
    let (key, list) = match split_list(raw) {
        l if l.is_empty() => ("public_base_url", vec![base.trim().to_string()]),
        l => ("webauthn_origins", l),
    };
    list.iter()
        .map(|o| {
            url::Url::parse(o)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| bad(key, format!("'{o}' is not an http(s) origin")))
        })
        .collect()
}

/// The passkey relying party id: as set, else the first origin's host. Every
/// origin must be that domain or below it.
pub(super) fn rp_id(raw: &str, origins: &[url::Url]) -> Result<String, ConfigError> {
    let id = match raw.trim() {
        "" => origins
            .first()
            .and_then(|o| o.host_str())
            .unwrap_or("localhost")
            .to_string(),
        id => id.to_lowercase(),
    };
    for origin in origins {
        let host = origin.host_str().unwrap_or_default();
        ensure(
            host == id || host.ends_with(&format!(".{id}")),
            "webauthn_rp_id",
            &format!("'{id}' must be the domain of every origin, or a parent of it ({origin})"),
        )?;
    }
    Ok(id)
}
