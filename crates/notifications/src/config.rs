//! `[notifications]`, with `[nats]` and `[telemetry]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hookbus_bus::StartPosition;
use hookbus_config::{ConfigError, Loader, Section, ServiceConfig, duration};
use hookbus_service::ConsumerSettings;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The notifications' whole configuration: `[nats]`, `[telemetry]` and `[notifications]`.
/// Templates are compiled later, by [`crate::Rules::compile`], which `run` calls before it
/// touches the broker.
pub type Config = ServiceConfig<NotificationsConfig>;

impl Section for NotificationsConfig {
    const NAME: &'static str = "notifications";

    fn listen(&self) -> SocketAddr {
        self.listen
    }

    fn prepare(&mut self, _: &Loader) -> Result<(), ConfigError> {
        self.read_secret_files()?;
        self.validate()
    }
}

/// The `[notifications]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    pub listen: SocketAddr,
    /// `sqlite://path` (default `sqlite://./data/notifications.db`) or `postgres://…`;
    /// `DATABASE_URL` overrides it.
    pub database_url: String,
    /// The durable consumer's name.
    pub consumer: String,
    /// Where the consumer starts when it is created for the first time: `new` (default), `all`,
    /// or an RFC 3339 time.
    pub start: StartPosition,
    /// Batches handled at once.
    pub concurrency: usize,
    /// The most events handled as one batch (those already delivered; a batch is never waited
    /// for). A batch's sends run in parallel, up to 32 at once.
    pub batch_size: usize,
    /// Wait for the broker to confirm each ack. Off by default: the ledger of sends makes an
    /// event delivered again after a lost ack harmless.
    pub confirm_acks: bool,
    /// How long the broker waits for an ack (in-progress acks extend it while a send runs).
    #[serde(with = "duration")]
    pub ack_wait: Duration,
    /// Deliveries of an event before a send that keeps failing is dead-lettered.
    pub max_deliveries: i64,
    /// Delay before the n-th retry of a failed send (the last entry repeats).
    #[serde(with = "duration::list")]
    pub retry_backoff: Vec<Duration>,
    /// The SMTP relay for `email` rules.
    pub smtp: SmtpConfig,
    /// Timeout of one chat-webhook post.
    #[serde(with = "duration")]
    pub webhook_timeout: Duration,
    /// Rules by name. Without any, the two standard rules write to the log.
    pub rules: BTreeMap<String, RuleConfig>,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8083)),
            database_url: "sqlite://./data/notifications.db".into(),
            consumer: "notifications".into(),
            start: StartPosition::New,
            concurrency: 2,
            batch_size: 64,
            confirm_acks: false,
            ack_wait: Duration::from_secs(30),
            max_deliveries: 8,
            retry_backoff: [5, 30, 120, 600, 1800].map(Duration::from_secs).to_vec(),
            smtp: SmtpConfig::default(),
            webhook_timeout: Duration::from_secs(10),
            rules: default_rules(),
        }
    }
}

/// `[notifications.smtp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// `smtp://[user:password@]host[:port]` (plain, or `?tls=required` for STARTTLS) or
    /// `smtps://…` (TLS from the start), as lettre reads it. May hold a password: set it through
    /// `HOOKBUS_NOTIFICATIONS__SMTP__URL` or `url_file`.
    pub url: Option<SecretString>,
    /// A file holding the URL.
    pub url_file: Option<PathBuf>,
    /// The `From` of every email.
    pub from: String,
    /// Timeout of one SMTP exchange.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            url: None,
            url_file: None,
            from: "hookbus <hookbus@localhost>".into(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Where a rule sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// An email over SMTP: `to` and `subject` are templates too.
    Email,
    /// A JSON post `{"<text_field>": "<rendered>"}` to a chat incoming-webhook URL.
    Webhook,
    /// A log line at info level.
    Log,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Webhook => "webhook",
            Self::Log => "log",
        }
    }
}

/// `[notifications.rules.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Subject patterns on `EVENTS` (`events.*.order.created`, `events.inventory.stock.>`).
    pub subjects: Vec<String>,
    pub channel: ChannelKind,
    /// The message (minijinja).
    pub template: String,
    /// `email`: the recipient (minijinja), e.g. `{{ order.customer_email }}`.
    pub to: Option<String>,
    /// `email`: the subject line (minijinja).
    pub subject: Option<String>,
    /// `webhook`: the incoming-webhook URL (often a secret: `url_file` or the environment).
    pub url: Option<SecretString>,
    /// `webhook`: a file holding the URL.
    pub url_file: Option<PathBuf>,
    /// `webhook`: the JSON field the text goes in (`text` for Slack, Mattermost, Google Chat;
    /// `content` for Discord).
    #[serde(default = "text_field")]
    pub text_field: String,
}

fn text_field() -> String {
    "text".into()
}

/// The standard rules, both to the log until configured otherwise.
fn default_rules() -> BTreeMap<String, RuleConfig> {
    let rule = |subjects: &[&str], template: &str| RuleConfig {
        subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
        channel: ChannelKind::Log,
        template: template.into(),
        to: None,
        subject: None,
        url: None,
        url_file: None,
        text_field: text_field(),
    };
    BTreeMap::from([
        (
            "order_confirmation".into(),
            rule(
                &["events.*.orders.create", "events.*.order.created"],
                "Order {{ order.id }} confirmed for {{ order.customer_email }}: {{ order.total.amount }} {{ order.total.currency }}",
            ),
        ),
        (
            "ops_alert".into(),
            rule(
                &[
                    "events.inventory.stock.low",
                    "events.inventory.stock.out",
                    "events.hookbus.delivery.exhausted",
                ],
                "{{ event.type }}: {{ payload | tojson }}",
            ),
        ),
    ])
}

/// Fills `value` from `file` when only the file is given (read once, at load).
fn read_secret_file(
    key: &str,
    value: &mut Option<SecretString>,
    file: Option<&PathBuf>,
) -> Result<(), ConfigError> {
    if value.is_some() {
        return Ok(());
    }
    let Some(path) = file else { return Ok(()) };
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::invalid(format!("{key}_file"), format!("{}: {e}", path.display()))
    })?;
    *value = Some(text.trim().to_owned().into());
    Ok(())
}

/// A secret's text, trimmed.
pub fn exposed(value: Option<&SecretString>) -> Option<&str> {
    value.map(|v| v.expose_secret().trim())
}

impl NotificationsConfig {
    /// Reads `smtp.url_file` and each rule's `url_file` into the `url` beside it, so the rest of
    /// the service reads `url` only.
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        read_secret_file(
            "notifications.smtp.url",
            &mut self.smtp.url,
            self.smtp.url_file.as_ref(),
        )?;
        for (name, rule) in &mut self.rules {
            read_secret_file(
                &format!("notifications.rules.{name}.url"),
                &mut rule.url,
                rule.url_file.as_ref(),
            )?;
        }
        Ok(())
    }

    /// What the consumer runs with, on `subjects` (the rules' patterns).
    pub fn consumer_settings(&self, subjects: Vec<String>) -> ConsumerSettings {
        ConsumerSettings {
            section: Self::NAME,
            name: self.consumer.clone(),
            subjects,
            start: self.start,
            concurrency: self.concurrency,
            batch_size: self.batch_size,
            confirm_acks: self.confirm_acks,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.consumer_settings(Vec::new()).check()?;
        if self.max_deliveries < 1 {
            return Err(ConfigError::invalid(
                "notifications.max_deliveries",
                "must be at least 1",
            ));
        }
        if self.retry_backoff.is_empty() {
            return Err(ConfigError::invalid(
                "notifications.retry_backoff",
                "needs at least one delay",
            ));
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres:")
            || self.database_url.starts_with("postgresql:"))
        {
            return Err(ConfigError::invalid(
                "notifications.database_url",
                "must start with sqlite: or postgres:",
            ));
        }
        let smtp_url = exposed(self.smtp.url.as_ref());
        if let Some(url) = smtp_url
            && !(url.starts_with("smtp://") || url.starts_with("smtps://"))
        {
            return Err(ConfigError::invalid(
                "notifications.smtp.url",
                "must start with smtp:// or smtps://",
            ));
        }
        for (name, rule) in &self.rules {
            let key = |field: &str| format!("notifications.rules.{name}.{field}");
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(ConfigError::invalid(
                    format!("notifications.rules.{name}"),
                    "a rule name is letters, digits, _ and -",
                ));
            }
            if rule.subjects.is_empty() {
                return Err(ConfigError::invalid(
                    key("subjects"),
                    "needs at least one subject pattern",
                ));
            }
            for subject in &rule.subjects {
                let tokens: Vec<&str> = subject.split('.').collect();
                let bad_token = tokens.iter().enumerate().any(|(i, t)| {
                    t.is_empty()
                        || t.contains(char::is_whitespace)
                        || (t.contains('>') && (*t != ">" || i + 1 != tokens.len()))
                        || (t.contains('*') && *t != "*")
                });
                if bad_token || tokens.first() != Some(&"events") && tokens.first() != Some(&"*") {
                    return Err(ConfigError::invalid(
                        key("subjects"),
                        format!(
                            "{subject:?} is not a subject pattern on EVENTS (events.<source>.<type>, with * for one token and a final > for the rest)"
                        ),
                    ));
                }
            }
            match rule.channel {
                ChannelKind::Email => {
                    if rule.to.as_deref().is_none_or(|t| t.trim().is_empty()) {
                        return Err(ConfigError::invalid(
                            key("to"),
                            "an email rule needs a recipient template",
                        ));
                    }
                    if smtp_url.is_none() {
                        return Err(ConfigError::invalid(
                            "notifications.smtp.url",
                            format!("rule {name} sends email, so an SMTP URL is needed"),
                        ));
                    }
                }
                ChannelKind::Webhook => match exposed(rule.url.as_ref()) {
                    None => {
                        return Err(ConfigError::invalid(
                            key("url"),
                            "a webhook rule needs a URL (url or url_file)",
                        ));
                    }
                    Some(url) if reqwest::Url::parse(url).is_err() => {
                        return Err(ConfigError::invalid(key("url"), "is not a URL"));
                    }
                    Some(url) if !url.starts_with("http://") && !url.starts_with("https://") => {
                        return Err(ConfigError::invalid(
                            key("url"),
                            "must be http:// or https://",
                        ));
                    }
                    Some(_) => {}
                },
                ChannelKind::Log => {}
            }
        }
        Ok(())
    }
}
