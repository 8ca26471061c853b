//! Sending a rendered notification: SMTP through lettre, a JSON post through reqwest, or a log line.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::rules::{Channel, Rendered};

/// Why a send failed: an unusable address is permanent (dead-lettered at once); the rest are
/// retried with back-off, then dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("email to {to:?}: not an address: {message}")]
    Address { to: String, message: String },
    #[error("email to {to}: {message}")]
    Email { to: String, message: String },
    #[error("webhook post to {host}: {message}")]
    Webhook { host: String, message: String },
}

/// What a rule that is only rendered, never sent, needs: nothing. What the others need: an SMTP
/// transport and an HTTP client, built once.
pub struct Senders {
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, lettre::message::Mailbox)>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Senders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Senders")
            .field("smtp", &self.smtp.is_some())
            .finish_non_exhaustive()
    }
}

impl SendError {
    /// Whether sending again cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Address { .. })
    }
}

/// A sender that cannot be set up from its settings.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("notifications.smtp.url: {0}")]
    SmtpUrl(lettre::transport::smtp::Error),
    #[error("notifications.smtp.from: {from:?}: {reason}")]
    SmtpFrom { from: String, reason: String },
    #[error("notifications: HTTP client: {0}")]
    Http(reqwest::Error),
}

impl Senders {
    /// `smtp_url` as lettre reads it (`smtp://`, `smtps://`, `?tls=required`).
    pub fn new(
        smtp_url: Option<&str>,
        from: &str,
        smtp_timeout: Duration,
        webhook_timeout: Duration,
    ) -> Result<Self, SetupError> {
        let smtp = match smtp_url {
            None => None,
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(SetupError::SmtpUrl)?
                    .timeout(Some(smtp_timeout))
                    .build();
                let from = from.parse().map_err(|e: lettre::address::AddressError| {
                    SetupError::SmtpFrom {
                        from: from.to_owned(),
                        reason: e.to_string(),
                    }
                })?;
                Some((transport, from))
            }
        };
        hookbus_service::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(webhook_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hookbus-notifications/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(SetupError::Http)?;
        Ok(Self { smtp, http })
    }

    /// Sends `rendered` for `rule` and the event `event_id`. A repeat of the same notification
    /// (redelivered after a crash between the send and the ledger) carries the same key: the
    /// email's `Message-ID`, the chat webhook's `Idempotency-Key`, so that it can be recognised.
    pub async fn send(
        &self,
        (rule, event_id): (&str, &str),
        channel: &Channel,
        rendered: &Rendered,
    ) -> Result<(), SendError> {
        match channel {
            Channel::Log => {
                tracing::info!(rule, text = %rendered.text, "notification");
                Ok(())
            }
            Channel::Email => {
                let fail = |message: String| SendError::Email {
                    to: rendered.recipient.clone(),
                    message,
                };
                let (transport, from) = self
                    .smtp
                    .as_ref()
                    .ok_or_else(|| fail("no SMTP URL is configured".into()))?;
                let to: lettre::message::Mailbox =
                    rendered
                        .recipient
                        .parse()
                        .map_err(|e: lettre::address::AddressError| SendError::Address {
                            to: rendered.recipient.clone(),
                            message: e.to_string(),
                        })?;
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(rendered.subject.clone())
                    .message_id(Some(format!("<{event_id}.{rule}@hookbus>")))
                    .header(ContentType::TEXT_PLAIN)
                    .body(rendered.text.clone())
                    .map_err(|e| fail(e.to_string()))?;
                transport
                    .send(message)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                Ok(())
            }
            Channel::Webhook { url, text_field } => {
                let fail = |message: String| SendError::Webhook {
                    host: rendered.recipient.clone(),
                    message,
                };
                let body = serde_json::json!({ text_field.as_str(): rendered.text });
                let response = self
                    .http
                    .post(url)
                    .header("idempotency-key", format!("{event_id}.{rule}"))
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| fail(e.without_url().to_string()))?;
                let status = response.status();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(fail(format!("answered {status}")))
                }
            }
        }
    }
}
