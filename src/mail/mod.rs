//! Mail: an outbox row written in the transaction of the change that caused
//! it, and a sender that delivers due rows over SMTP (lettre), retrying with
//! backoff. A row is claimed with a lease before it is sent, so one replica
//! sends it, and it is marked sent right after the server accepts it. SMTP
//! down or a restart only delays a mail; a crash in the instant between the
//! server's acceptance and the mark would resend it once, with the same
//! Message-ID.
//!
//! Links carry a token derived from the row's nonce with a key from the JWT
//! secret: the database holds the nonce and the token's digest, never the
//! token.

mod templates;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rand::Rng;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};

use crate::config::{MailDelivery, MailLinks, MailSettings};
use crate::entity::mail_outbox;
use crate::time::now;

/// How long a claimed row is left to its sender; far above the SMTP timeout.
const LEASE: Duration = Duration::from_secs(600);
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often each replica looks for due mail (new mail wakes it at once).
const POLL: Duration = Duration::from_secs(1);
/// Rows claimed per pass.
const BATCH: u64 = 20;
/// Sent rows kept for inspection.
const KEEP_SENT: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    VerifyEmail,
    PasswordReset,
    EmailChange,
    /// Notice to the old address after a change.
    EmailChanged,
    PasswordChanged,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::VerifyEmail,
        Kind::PasswordReset,
        Kind::EmailChange,
        Kind::EmailChanged,
        Kind::PasswordChanged,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::VerifyEmail => "verify_email",
            Kind::PasswordReset => "password_reset",
            Kind::EmailChange => "email_change",
            Kind::EmailChanged => "email_changed",
            Kind::PasswordChanged => "password_changed",
        }
    }

    fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn link_template(self, links: &MailLinks) -> Option<&str> {
        match self {
            Kind::VerifyEmail => Some(&links.verify),
            Kind::PasswordReset => Some(&links.reset),
            Kind::EmailChange => Some(&links.email_change),
            Kind::EmailChanged | Kind::PasswordChanged => None,
        }
    }
}

/// A link's secret half: the nonce goes into the outbox row, the digest of
/// the token into the token table.
pub struct Link {
    pub nonce: String,
    pub digest: String,
}

/// A mail to write into the outbox.
pub struct Outgoing {
    pub kind: Kind,
    pub recipient: String,
    pub user_id: Option<i32>,
    /// Template values (`first_name`, `new_email`, `valid_for`, …).
    pub params: serde_json::Value,
    pub link_nonce: Option<String>,
}

/// Writes a mail into the outbox on the caller's connection (its transaction).
pub async fn enqueue<C: ConnectionTrait>(conn: &C, mail: Outgoing) -> Result<(), DbErr> {
    insert(conn, mail, None).await
}

/// Records a mail request that sends nothing (no such account): the same
/// write as a real one, so both answer alike.
pub async fn record_unsent<C: ConnectionTrait>(
    conn: &C,
    kind: Kind,
    recipient: &str,
) -> Result<(), DbErr> {
    let mail = Outgoing {
        kind,
        recipient: recipient.to_string(),
        user_id: None,
        params: serde_json::json!({}),
        link_nonce: None,
    };
    insert(conn, mail, Some("no_account")).await
}

async fn insert<C: ConnectionTrait>(
    conn: &C,
    mail: Outgoing,
    done: Option<&str>,
) -> Result<(), DbErr> {
    let ts = now();
    mail_outbox::Entity::insert(mail_outbox::ActiveModel {
        kind: Set(mail.kind.name().to_string()),
        recipient: Set(mail.recipient),
        user_id: Set(mail.user_id),
        params: Set(mail.params),
        nonce: Set(mail.link_nonce),
        created_at: Set(ts),
        next_attempt_at: Set(ts),
        attempts: Set(0),
        claimed_until: Set(None),
        sent_at: Set(done.map(|_| ts)),
        outcome: Set(done.map(str::to_string)),
        last_error: Set(None),
        ..Default::default()
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Log,
    Discard,
}

/// Why a delivery failed: transient ones are retried, permanent ones end the row.
enum Failure {
    Transient(&'static str),
    Permanent(&'static str),
}

pub struct Mailer {
    db: DatabaseConnection,
    transport: Transport,
    from: Mailbox,
    links: MailLinks,
    templates: templates::Templates,
    link_key: [u8; 32],
    retry_base: Duration,
    retry_max: Duration,
    wake: Notify,
}

impl Mailer {
    pub fn new(
        db: DatabaseConnection,
        settings: &MailSettings,
        secret: &SecretString,
    ) -> anyhow::Result<Arc<Self>> {
        let transport = match (settings.delivery, &settings.smtp_url) {
            (MailDelivery::Smtp, Some(url)) => Transport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .map_err(|e| anyhow::anyhow!("SMTP_URL: {e}"))?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build(),
            ),
            (MailDelivery::Discard, _) => Transport::Discard,
            _ => Transport::Log,
        };
        let mut link_key = [0u8; 32];
        Hkdf::<Sha256>::new(None, secret.expose_secret().as_bytes())
            .expand(b"platform-server mail links v1", &mut link_key)
            .map_err(|_| anyhow::anyhow!("deriving the mail link key"))?;
        Ok(Arc::new(Mailer {
            db,
            transport,
            from: settings
                .from
                .parse()
                .map_err(|e| anyhow::anyhow!("MAIL_FROM: {e}"))?,
            links: settings.links.clone(),
            templates: templates::Templates::load(settings.template_dir.as_deref())?,
            link_key,
            retry_base: settings.retry_base,
            retry_max: settings.retry_max,
            wake: Notify::new(),
        }))
    }

    /// A fresh link: 128 random bits of nonce, a 256-bit token derived from it.
    pub fn new_link(&self) -> Link {
        let nonce = hex::encode(rand::rng().random::<[u8; 16]>());
        let digest = hex::encode(Sha256::digest(self.token(&nonce).as_bytes()));
        Link { nonce, digest }
    }

    fn token(&self, nonce: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.link_key).expect("HMAC takes keys of any length");
        mac.update(nonce.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Tells this replica's sender that mail was committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The sender; stops when `shutdown` turns true.
    pub fn start(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run(shutdown))
    }

    async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut last_housekeeping = tokio::time::Instant::now() - Duration::from_secs(3600);
        loop {
            if let Err(e) = self.deliver_due().await {
                tracing::warn!(error = %e, "mail sender could not read the outbox");
            }
            if last_housekeeping.elapsed() >= Duration::from_secs(15) {
                last_housekeeping = tokio::time::Instant::now();
                let _ = self.housekeeping().await;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    fn claimable(ts: chrono::NaiveDateTime) -> Condition {
        Condition::all()
            .add(mail_outbox::Column::SentAt.is_null())
            .add(
                Condition::any()
                    .add(mail_outbox::Column::ClaimedUntil.is_null())
                    .add(mail_outbox::Column::ClaimedUntil.lt(ts)),
            )
    }

    /// Sends every due mail; answers how many were finished.
    pub async fn deliver_due(&self) -> Result<usize, DbErr> {
        let mut finished = 0;
        loop {
            let ts = now();
            let due = mail_outbox::Entity::find()
                .filter(Self::claimable(ts))
                .filter(mail_outbox::Column::NextAttemptAt.lte(ts))
                .order_by_asc(mail_outbox::Column::Id)
                .limit(BATCH)
                .all(&self.db)
                .await?;
            if due.is_empty() {
                return Ok(finished);
            }
            let mut progressed = false;
            for row in due {
                // Compare-and-set: of several replicas, one claims the row.
                let claimed = mail_outbox::Entity::update_many()
                    .col_expr(
                        mail_outbox::Column::ClaimedUntil,
                        Expr::value(now() + LEASE),
                    )
                    .filter(mail_outbox::Column::Id.eq(row.id))
                    .filter(Self::claimable(now()))
                    .exec(&self.db)
                    .await?
                    .rows_affected
                    == 1;
                if !claimed {
                    continue;
                }
                progressed = true;
                let outcome = self.deliver(&row).await;
                if self.record(&row, outcome).await {
                    finished += 1;
                }
            }
            if !progressed {
                return Ok(finished);
            }
        }
    }

    /// Writes a delivery's outcome, retrying while the database is away: a
    /// sent mail left unmarked would be sent again when its lease ends.
    async fn record(&self, row: &mail_outbox::Model, outcome: Result<&str, Failure>) -> bool {
        let attempts = row.attempts + 1;
        let kind = row.kind.clone();
        let mut update = mail_outbox::Entity::update_many()
            .col_expr(mail_outbox::Column::Attempts, Expr::value(attempts))
            .col_expr(
                mail_outbox::Column::ClaimedUntil,
                Expr::value(Option::<chrono::NaiveDateTime>::None),
            )
            .filter(mail_outbox::Column::Id.eq(row.id));
        let done = match outcome {
            Ok(result) => {
                metrics::counter!("mail_sent_total", "kind" => kind, "outcome" => result.to_string())
                    .increment(1);
                update = update
                    .col_expr(mail_outbox::Column::SentAt, Expr::value(now()))
                    .col_expr(mail_outbox::Column::Outcome, Expr::value(result));
                true
            }
            Err(Failure::Permanent(class)) => {
                metrics::counter!("mail_sent_total", "kind" => kind, "outcome" => "rejected")
                    .increment(1);
                update = update
                    .col_expr(mail_outbox::Column::SentAt, Expr::value(now()))
                    .col_expr(mail_outbox::Column::Outcome, Expr::value("rejected"))
                    .col_expr(mail_outbox::Column::LastError, Expr::value(class));
                true
            }
            Err(Failure::Transient(class)) => {
                metrics::counter!("mail_send_failures_total", "kind" => kind, "class" => class)
                    .increment(1);
                let backoff = self
                    .retry_base
                    .saturating_mul(1u32 << (attempts - 1).clamp(0, 20))
                    .min(self.retry_max);
                update = update
                    .col_expr(
                        mail_outbox::Column::NextAttemptAt,
                        Expr::value(now() + backoff),
                    )
                    .col_expr(mail_outbox::Column::LastError, Expr::value(class));
                false
            }
        };
        for _ in 0..60 {
            match update.clone().exec(&self.db).await {
                Ok(_) => return done,
                Err(e) => {
                    tracing::warn!(error = %e, mail = row.id, "recording a mail's delivery failed; retrying");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
        done
    }

    async fn deliver(&self, row: &mail_outbox::Model) -> Result<&'static str, Failure> {
        let Some(kind) = Kind::parse(&row.kind) else {
            return Err(Failure::Permanent("unknown_kind"));
        };
        let mut values = match &row.params {
            serde_json::Value::Object(m) => m.clone(),
            _ => serde_json::Map::new(),
        };
        values.insert("email".into(), row.recipient.clone().into());
        if let (Some(template), Some(nonce)) = (kind.link_template(&self.links), &row.nonce) {
            let link = template.replace("{token}", &self.token(nonce));
            values.insert("link".into(), link.into());
        }
        let rendered = self
            .templates
            .render(kind, &serde_json::Value::Object(values))
            .map_err(|e| {
                tracing::error!(
                    error = format!("{e:#}"),
                    mail = row.id,
                    "mail template failed"
                );
                Failure::Permanent("template")
            })?;
        match &self.transport {
            Transport::Log => {
                tracing::info!(
                    mail = kind.name(),
                    to = %row.recipient,
                    subject = %rendered.subject,
                    "mail (no SMTP_URL set, so it is logged instead of sent):\n{}",
                    rendered.text
                );
                Ok("logged")
            }
            Transport::Discard => {
                tracing::warn!(
                    mail = kind.name(),
                    to = %row.recipient,
                    "mail dropped: no SMTP_URL is set"
                );
                Ok("discarded")
            }
            Transport::Smtp(smtp) => {
                let to: Mailbox = row
                    .recipient
                    .parse()
                    .map_err(|_| Failure::Permanent("invalid_recipient"))?;
                let domain = self.from.email.domain().to_string();
                let message = Message::builder()
                    .from(self.from.clone())
                    .to(to)
                    .subject(rendered.subject)
                    // Stable per row, so a resent mail is recognisably the same.
                    .message_id(Some(format!(
                        "<outbox-{}-{}@{domain}>",
                        row.id,
                        row.created_at.and_utc().timestamp_micros()
                    )))
                    .multipart(MultiPart::alternative_plain_html(
                        rendered.text,
                        rendered.html,
                    ))
                    .map_err(|_| Failure::Permanent("message"))?;
                match smtp.send(message).await {
                    Ok(_) => Ok("sent"),
                    Err(e) if e.is_permanent() => {
                        tracing::warn!(error = %e, mail = row.id, "SMTP server refused a mail for good");
                        Err(Failure::Permanent("smtp_permanent"))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, mail = row.id, "SMTP delivery failed; will retry");
                        Err(Failure::Transient(if e.is_transient() {
                            "smtp_transient"
                        } else {
                            "smtp_unavailable"
                        }))
                    }
                }
            }
        }
    }

    /// Pending mail as a gauge, and sent rows past their keeping time removed.
    async fn housekeeping(&self) -> Result<(), DbErr> {
        let pending = mail_outbox::Entity::find()
            .filter(mail_outbox::Column::SentAt.is_null())
            .count(&self.db)
            .await?;
        metrics::gauge!("mail_outbox_pending").set(pending as f64);
        mail_outbox::Entity::delete_many()
            .filter(mail_outbox::Column::SentAt.lt(now() - KEEP_SENT))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
