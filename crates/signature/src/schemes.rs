//! The providers' own schemes.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::Value;

use crate::core::{self, Algorithm, Ctx, Verified, parse_timestamp};
use crate::error::VerifyError;

/// Fails with `Mismatch` unless one of `candidates` is the MAC of `parts` under one of the keys.
fn check(
    ctx: &Ctx<'_>,
    header: &str,
    parts: &[&[u8]],
    candidates: &[Vec<u8>],
) -> Result<(), VerifyError> {
    let matched = ctx.keys.iter().any(|key| {
        core::compute(Algorithm::Sha256, key, parts)
            .matches_any(candidates.iter().map(Vec::as_slice))
    });
    if matched {
        Ok(())
    } else {
        Err(VerifyError::Mismatch {
            header: header.to_owned(),
        })
    }
}

fn malformed(header: &str, reason: impl Into<String>) -> VerifyError {
    VerifyError::MalformedHeader {
        header: header.to_owned(),
        reason: reason.into(),
    }
}

fn decode_hex(header: &str, value: &str) -> Result<Vec<u8>, VerifyError> {
    hex::decode(value).map_err(|e| malformed(header, format!("signature is not hex: {e}")))
}

fn decode_base64(header: &str, value: &str) -> Result<Vec<u8>, VerifyError> {
    STANDARD
        .decode(value)
        .map_err(|e| malformed(header, format!("signature is not base64: {e}")))
}

fn str_at<'v>(value: &'v Value, pointer: &str) -> Option<&'v str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// The few fields the JSON schemes read; everything else in the body is skipped without being
/// built (the body is still checked to be JSON).
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    created: Option<i64>,
    #[serde(borrow, default)]
    action: Option<Cow<'a, str>>,
    // Slack
    #[serde(borrow, default)]
    challenge: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    event_id: Option<Cow<'a, str>>,
    #[serde(default)]
    event_time: Option<i64>,
    #[serde(borrow, default)]
    event: Option<SlackEvent<'a>>,
    #[serde(borrow, default)]
    trigger_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct SlackEvent<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
}

fn fields(body: &[u8]) -> Result<Fields<'_>, VerifyError> {
    serde_json::from_slice(body).map_err(|e| VerifyError::InvalidBody(e.to_string()))
}

fn owned(text: Option<Cow<'_, str>>) -> Option<String> {
    text.map(Cow::into_owned)
}

/// Standard Webhooks: `v1,<base64>` signatures (space separated) over `id.timestamp.body`.
/// Accepts the `webhook-*` header names and Svix's `svix-*` ones.
pub(crate) fn standard_webhooks(ctx: &Ctx<'_>) -> Result<Verified, VerifyError> {
    let prefix = if ctx.headers.contains_key("webhook-signature")
        || ctx.headers.contains_key("webhook-id")
    {
        "webhook"
    } else if ctx.headers.contains_key("svix-signature") || ctx.headers.contains_key("svix-id") {
        "svix"
    } else {
        return Err(VerifyError::MissingHeader("webhook-signature".into()));
    };
    let (id_h, ts_h, sig_h) = (
        format!("{prefix}-id"),
        format!("{prefix}-timestamp"),
        format!("{prefix}-signature"),
    );
    let signatures = ctx.required(&sig_h)?;
    let id = ctx.required(&id_h)?;
    let timestamp_text = ctx.required(&ts_h)?;
    let timestamp = parse_timestamp(&ts_h, timestamp_text)?;

    let mut candidates = Vec::new();
    for entry in signatures.split(' ').filter(|s| !s.is_empty()) {
        let (version, signature) = entry
            .split_once(',')
            .ok_or_else(|| malformed(&sig_h, "entries must look like v1,<base64>"))?;
        if version == "v1" {
            candidates.push(decode_base64(&sig_h, signature)?);
        }
    }
    if candidates.is_empty() {
        return Err(malformed(&sig_h, "no v1 signature"));
    }
    check(
        ctx,
        &sig_h,
        &[
            id.as_bytes(),
            b".",
            timestamp_text.as_bytes(),
            b".",
            ctx.body,
        ],
        &candidates,
    )?;
    ctx.check_tolerance(timestamp)?;

    let body = fields(ctx.body)?;
    Ok(Verified {
        event_type: owned(body.kind),
        delivery_id: Some(id.to_owned()),
        occurred_at: Some(timestamp),
        challenge: None,
    })
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex>` over the body. Type is `X-GitHub-Event`, with the
/// body's `action` appended when there is one (`pull_request.opened`).
pub(crate) fn github(ctx: &Ctx<'_>) -> Result<Verified, VerifyError> {
    const SIG: &str = "x-hub-signature-256";
    let header = ctx.required(SIG)?;
    let hex_sig = header
        .strip_prefix("sha256=")
        .ok_or_else(|| malformed(SIG, "expected sha256=<hex>"))?;
    let candidate = decode_hex(SIG, hex_sig)?;
    check(ctx, SIG, &[ctx.body], &[candidate])?;

    let event = ctx.header("x-github-event")?.map(str::to_owned);
    // GitHub sends JSON, or a form with a `payload` field when configured so.
    let action = match fields(ctx.body) {
        Ok(body) => owned(body.action),
        Err(_) => form_urlencoded::parse(ctx.body)
            .find(|(k, _)| k == "payload")
            .and_then(|(_, v)| serde_json::from_str::<Value>(&v).ok())
            .and_then(|body| str_at(&body, "/action").map(str::to_owned)),
    };
    Ok(Verified {
        event_type: event.map(|e| match action {
            Some(action) => format!("{e}.{action}"),
            None => e,
        }),
        delivery_id: ctx.header("x-github-delivery")?.map(str::to_owned),
        occurred_at: None,
        challenge: None,
    })
}

/// Stripe: `Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>]` over `t.body`; the `whsec_` string is the
/// key as is. Type and id come from the JSON body.
pub(crate) fn stripe(ctx: &Ctx<'_>) -> Result<Verified, VerifyError> {
    const SIG: &str = "stripe-signature";
    let header = ctx.required(SIG)?;
    let mut timestamp_text = None;
    let mut candidates = Vec::new();
    for item in header.split(',') {
        let (key, value) = item
            .trim()
            .split_once('=')
            .ok_or_else(|| malformed(SIG, "items must look like key=value"))?;
        match key {
            "t" => timestamp_text = Some(value),
            "v1" => candidates.push(decode_hex(SIG, value)?),
            _ => {}
        }
    }
    let timestamp_text = timestamp_text.ok_or_else(|| malformed(SIG, "no t=<timestamp>"))?;
    let timestamp = parse_timestamp(SIG, timestamp_text)?;
    if candidates.is_empty() {
        return Err(malformed(SIG, "no v1 signature"));
    }
    check(
        ctx,
        SIG,
        &[timestamp_text.as_bytes(), b".", ctx.body],
        &candidates,
    )?;
    ctx.check_tolerance(timestamp)?;

    let body = fields(ctx.body)?;
    Ok(Verified {
        event_type: owned(body.kind),
        delivery_id: owned(body.id),
        occurred_at: body.created,
        challenge: None,
    })
}

/// Shopify: `X-Shopify-Hmac-Sha256: <base64>` over the body; type `X-Shopify-Topic`, id
/// `X-Shopify-Webhook-Id`.
pub(crate) fn shopify(ctx: &Ctx<'_>) -> Result<Verified, VerifyError> {
    const SIG: &str = "x-shopify-hmac-sha256";
    let candidate = decode_base64(SIG, ctx.required(SIG)?)?;
    check(ctx, SIG, &[ctx.body], &[candidate])?;
    Ok(Verified {
        event_type: ctx.header("x-shopify-topic")?.map(str::to_owned),
        delivery_id: ctx.header("x-shopify-webhook-id")?.map(str::to_owned),
        occurred_at: None,
        challenge: None,
    })
}

/// Slack: `X-Slack-Signature: v0=<hex>` over `v0:ts:body` with `X-Slack-Request-Timestamp`.
///
/// JSON bodies (Events API): `url_verification` yields the challenge; `event_callback` has type
/// `event.type` and id `event_id`; others their `type`. Form bodies: an interactive `payload`
/// has its `type`; a slash command has type `slash_command` and id `trigger_id`.
pub(crate) fn slack(ctx: &Ctx<'_>) -> Result<Verified, VerifyError> {
    const SIG: &str = "x-slack-signature";
    const TS: &str = "x-slack-request-timestamp";
    let header = ctx.required(SIG)?;
    let timestamp_text = ctx.required(TS)?;
    let timestamp = parse_timestamp(TS, timestamp_text)?;
    let hex_sig = header
        .strip_prefix("v0=")
        .ok_or_else(|| malformed(SIG, "expected v0=<hex>"))?;
    let candidate = decode_hex(SIG, hex_sig)?;
    check(
        ctx,
        SIG,
        &[b"v0:", timestamp_text.as_bytes(), b":", ctx.body],
        &[candidate],
    )?;
    ctx.check_tolerance(timestamp)?;

    let mut verified = Verified::default();
    if let Ok(body) = fields(ctx.body) {
        match body.kind.as_deref() {
            Some("url_verification") => {
                verified.event_type = Some("url_verification".into());
                verified.challenge = Some(owned(body.challenge).unwrap_or_default());
            }
            Some("event_callback") => {
                verified.event_type = body.event.and_then(|e| owned(e.kind));
                verified.delivery_id = owned(body.event_id);
                verified.occurred_at = body.event_time;
            }
            _ => {
                verified.event_type = owned(body.kind);
                verified.delivery_id = owned(body.event_id);
            }
        }
        return Ok(verified);
    }
    for (key, value) in form_urlencoded::parse(ctx.body) {
        match &*key {
            "payload" => {
                let payload = fields(value.as_bytes())
                    .map_err(|e| VerifyError::InvalidBody(format!("form field payload: {e}")))?;
                verified.event_type = owned(payload.kind);
                verified.delivery_id = owned(payload.trigger_id);
            }
            "command" => verified.event_type = Some("slash_command".into()),
            "trigger_id" if verified.delivery_id.is_none() => {
                verified.delivery_id = Some(value.into_owned());
            }
            _ => {}
        }
    }
    Ok(verified)
}
