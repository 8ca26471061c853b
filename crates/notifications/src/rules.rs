//! Rules compiled at start-up: which subjects each one matches, its templates (minijinja, strict
//! about undefined values), and where it sends. A template with a syntax error stops start-up
//! with the rule's name.

use std::collections::BTreeMap;

use hookbus_bus::Delivery;
use hookbus_commerce::CommerceEvent;
use hookbus_proto::Registry;
use hookbus_proto::commerce::v1::Money;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Value, json};

use crate::config::{ChannelKind, NotificationsConfig, RuleConfig, exposed};

/// The context keys that say why `order` or `payload` is missing, added to a render error.
const ORDER_ERROR: &str = "order_error";
const PAYLOAD_ERROR: &str = "payload_error";

/// Where a compiled rule sends.
#[derive(Debug, Clone)]
pub enum Channel {
    Email,
    Webhook { url: String, text_field: String },
    Log,
}

impl Channel {
    pub fn kind(&self) -> ChannelKind {
        match self {
            Self::Email => ChannelKind::Email,
            Self::Webhook { .. } => ChannelKind::Webhook,
            Self::Log => ChannelKind::Log,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub subjects: Vec<String>,
    pub channel: Channel,
}

/// One rule's rendered notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The email address, the webhook URL's host, or `log`.
    pub recipient: String,
    /// Email only.
    pub subject: String,
    pub text: String,
}

#[derive(Debug, thiserror::Error)]
#[error("notifications.rules.{rule}.{field}: {message}")]
pub struct RuleError {
    pub rule: String,
    pub field: &'static str,
    pub message: String,
}

/// Two rules' subjects that one consumer cannot filter on together.
#[derive(Debug, thiserror::Error)]
#[error(
    "notifications.rules: the subjects {a:?} (rule {rule_a}) and {b:?} (rule {rule_b}) overlap without one covering the other; one consumer cannot filter on both, so use one pattern that covers both"
)]
pub struct OverlapError {
    pub a: String,
    pub rule_a: String,
    pub b: String,
    pub rule_b: String,
}

pub struct Rules {
    env: Environment<'static>,
    rules: Vec<Rule>,
    registry: Registry,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules").field("rules", &self.rules).finish()
    }
}

fn template_name(rule: &str, field: &str) -> String {
    format!("{rule}.{field}")
}

impl Rules {
    /// Compiles every rule's templates; the first syntax error is returned with the rule's name.
    pub fn compile(config: &NotificationsConfig) -> Result<Self, RuleError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut rules = Vec::new();
        for (name, rule) in &config.rules {
            add_templates(&mut env, name, rule)?;
            let channel = match rule.channel {
                ChannelKind::Email => Channel::Email,
                ChannelKind::Log => Channel::Log,
                ChannelKind::Webhook => {
                    let url = exposed(rule.url.as_ref())
                        .map(str::to_owned)
                        .ok_or_else(|| RuleError {
                            rule: name.clone(),
                            field: "url",
                            message: "a webhook rule needs a URL".into(),
                        })?;
                    Channel::Webhook {
                        url,
                        text_field: rule.text_field.clone(),
                    }
                }
            };
            rules.push(Rule {
                name: name.clone(),
                subjects: rule.subjects.clone(),
                channel,
            });
        }
        Ok(Self {
            env,
            rules,
            registry: Registry::default(),
        })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The consumer's filter subjects: every rule's patterns, less those another covers. Patterns
    /// of different rules that overlap without one covering the other cannot be filters of one
    /// consumer (the server refuses them), so they are an error naming both.
    pub fn filter_subjects(&self) -> Result<Vec<String>, OverlapError> {
        let all: Vec<(String, &str)> = self
            .rules
            .iter()
            .flat_map(|r| r.subjects.iter().map(|s| (s.clone(), r.name.as_str())))
            .collect();
        let patterns: Vec<String> = all.iter().map(|(s, _)| s.clone()).collect();
        let kept = hookbus_bus::subject::minimal_cover(&patterns);
        for (i, a) in kept.iter().enumerate() {
            for b in &kept[i + 1..] {
                if hookbus_bus::subject::overlap(a, b) {
                    let rule_of = |p: &String| {
                        all.iter()
                            .find(|(s, _)| s == p)
                            .map_or("?", |(_, r)| *r)
                            .to_owned()
                    };
                    return Err(OverlapError {
                        a: a.clone(),
                        rule_a: rule_of(a),
                        b: b.clone(),
                        rule_b: rule_of(b),
                    });
                }
            }
        }
        Ok(kept)
    }

    /// The rules whose patterns match `subject`.
    pub fn matching<'a>(&'a self, subject: &'a str) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.iter().filter(move |rule| {
            rule.subjects
                .iter()
                .any(|pattern| hookbus_bus::subject::matches(pattern, subject))
        })
    }

    /// The values templates see (see `docs/notifications.md`). A payload or order that does not
    /// read is left out, and only a rule that uses it fails, with the reason.
    pub fn context(&self, delivery: &Delivery) -> Value {
        let event = &delivery.event;
        let time = |t: &Option<hookbus_proto::Timestamp>| {
            t.as_ref()
                .and_then(|t| {
                    time::OffsetDateTime::from_unix_timestamp(t.seconds)
                        .ok()?
                        .format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .map_or(Value::Null, Value::String)
        };
        let mut payload_error = None;
        let payload = if hookbus_proto::proto_name_of(&event.content_type).is_some() {
            self.registry
                .to_json(&event.content_type, &event.payload)
                .unwrap_or_else(|e| {
                    payload_error = Some(format!("payload does not decode: {e}"));
                    Value::Null
                })
        } else {
            serde_json::from_slice(&event.payload).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&event.payload).into_owned())
            })
        };
        let mut context = json!({
            "event": {
                "id": event.id,
                "source": event.source,
                "type": event.r#type,
                "provider": event.provider,
                "delivery_id": event.delivery_id,
                "tenant": event.tenant,
                "subject": delivery.subject,
                "received_at": time(&event.received_at),
                "occurred_at": time(&event.occurred_at),
                "content_type": event.content_type,
                "attempt": delivery.attempt,
            },
            "payload": payload,
        });
        if let Some(why) = payload_error {
            context[PAYLOAD_ERROR] = Value::String(why);
        }
        // An order that does not read stays undefined, so only the rules that use it fail, and
        // their error says why (see `render`).
        match hookbus_commerce::adapt(event) {
            Ok(Some(order)) => context["order"] = order_view(&order),
            Ok(None) => {}
            Err(e) => context[ORDER_ERROR] = Value::String(e.to_string()),
        }
        context
    }

    /// Renders `rule` for `context`.
    pub fn render(&self, rule: &Rule, context: &Value) -> Result<Rendered, RuleError> {
        let render = |field: &'static str| -> Result<String, RuleError> {
            let error = |e: minijinja::Error| {
                let mut message = render_message(&e);
                if let Some(why) = context.get(ORDER_ERROR).and_then(Value::as_str) {
                    message.push_str(&format!("; order is undefined: {why}"));
                }
                if let Some(why) = context.get(PAYLOAD_ERROR).and_then(Value::as_str) {
                    message.push_str(&format!("; payload is null: {why}"));
                }
                RuleError {
                    rule: rule.name.clone(),
                    field,
                    message,
                }
            };
            self.env
                .get_template(&template_name(&rule.name, field))
                .map_err(error)?
                .render(minijinja::value::Serde(context))
                .map_err(error)
        };
        let text = render("template")?;
        let (recipient, subject) = match &rule.channel {
            Channel::Email => {
                let to = render("to")?.trim().to_owned();
                if to.is_empty() {
                    return Err(RuleError {
                        rule: rule.name.clone(),
                        field: "to",
                        message: "the recipient rendered empty".into(),
                    });
                }
                let subject = if self
                    .env
                    .get_template(&template_name(&rule.name, "subject"))
                    .is_ok()
                {
                    render("subject")?.trim().replace(['\r', '\n'], " ")
                } else {
                    String::new()
                };
                (to, subject)
            }
            Channel::Webhook { url, .. } => (
                reqwest::Url::parse(url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned))
                    .unwrap_or_default(),
                String::new(),
            ),
            Channel::Log => ("log".into(), String::new()),
        };
        Ok(Rendered {
            recipient,
            subject,
            text,
        })
    }
}

fn add_templates(
    env: &mut Environment<'static>,
    name: &str,
    rule: &RuleConfig,
) -> Result<(), RuleError> {
    let fields: [(&'static str, Option<&String>); 3] = [
        ("template", Some(&rule.template)),
        ("to", rule.to.as_ref()),
        ("subject", rule.subject.as_ref()),
    ];
    for (field, source) in fields {
        let Some(source) = source else { continue };
        env.add_template_owned(template_name(name, field), source.clone())
            .map_err(|e| RuleError {
                rule: name.to_owned(),
                field,
                message: format!("template syntax error: {}", render_message(&e)),
            })?;
    }
    Ok(())
}

/// minijinja's error kind and detail, with the line it points at.
fn render_message(e: &minijinja::Error) -> String {
    let mut message = e.kind().to_string();
    if let Some(detail) = e.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    if let Some(line) = e.line() {
        message.push_str(&format!(" (line {line})"));
    }
    message
}

fn money(money: Option<&Money>) -> Value {
    money.map_or(Value::Null, |m| {
        json!({
            "currency": m.currency,
            "amount_minor": m.amount_minor,
            "amount": hookbus_commerce::format_minor(m.amount_minor, &m.currency),
        })
    })
}

/// The typed order, the same whichever provider or format it came in.
fn order_view(order: &CommerceEvent) -> Value {
    match order {
        CommerceEvent::OrderCreated(created) => {
            let line_items: Vec<Value> = created
                .line_items
                .iter()
                .map(|item| {
                    json!({
                        "sku": item.sku,
                        "quantity": item.quantity,
                        "unit_price": money(item.unit_price.as_ref()),
                    })
                })
                .collect();
            json!({
                "id": created.order_id,
                "customer_email": created.customer_email,
                "total": money(created.total.as_ref()),
                "line_items": line_items,
                "status": "created",
            })
        }
        CommerceEvent::OrderCancelled(cancelled) => json!({
            "id": cancelled.order_id,
            "reason": cancelled.reason,
            "status": "cancelled",
        }),
    }
}

/// The names of every rule, for logs.
pub fn names(rules: &Rules) -> BTreeMap<&str, &'static str> {
    rules
        .rules
        .iter()
        .map(|r| (r.name.as_str(), r.channel.kind().as_str()))
        .collect()
}
