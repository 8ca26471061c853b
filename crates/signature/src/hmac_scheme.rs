//! The generic `hmac` scheme, for any sender that signs with HMAC, and the type/id extraction it
//! shares with `none`.

use serde_json::Value;

use crate::core::{self, Algorithm, Ctx, Verified};
use crate::error::{TemplateError, VerifyError};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encoding {
    #[default]
    Hex,
    Base64,
}

/// What is signed: literal text with the placeholders `{body}`, `{timestamp}` and `{id}`, such as
/// `{body}` (the default) or `v0:{timestamp}:{body}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadTemplate(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Body,
    Timestamp,
    Id,
}

impl Default for PayloadTemplate {
    fn default() -> Self {
        Self(vec![Part::Body])
    }
}

impl PayloadTemplate {
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let end = rest[start..]
                .find('}')
                .ok_or_else(|| TemplateError::Unclosed(template.to_owned()))?
                + start;
            parts.push(match &rest[start + 1..end] {
                "body" => Part::Body,
                "timestamp" => Part::Timestamp,
                "id" => Part::Id,
                other => {
                    return Err(TemplateError::UnknownPlaceholder(other.to_owned()));
                }
            });
            rest = &rest[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        if !parts.contains(&Part::Body) {
            return Err(TemplateError::NoBody(template.to_owned()));
        }
        Ok(Self(parts))
    }

    /// The signed content's parts, in order.
    pub(crate) fn resolve<'a>(
        &'a self,
        body: &'a [u8],
        timestamp: &'a str,
        id: &'a str,
    ) -> Vec<&'a [u8]> {
        self.0
            .iter()
            .map(|part| match part {
                Part::Literal(text) => text.as_bytes(),
                Part::Body => body,
                Part::Timestamp => timestamp.as_bytes(),
                Part::Id => id.as_bytes(),
            })
            .collect()
    }

    pub fn uses_timestamp(&self) -> bool {
        self.0.contains(&Part::Timestamp)
    }

    pub fn uses_id(&self) -> bool {
        self.0.contains(&Part::Id)
    }
}

/// Where a source's event type and delivery id come from: a header or a JSON pointer into the body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extract {
    pub type_header: Option<String>,
    pub type_pointer: Option<String>,
    pub id_header: Option<String>,
    pub id_pointer: Option<String>,
}

impl Extract {
    pub(crate) fn read(&self, ctx: &Ctx<'_>) -> Result<Verified, VerifyError> {
        let body = if self.type_pointer.is_some() || self.id_pointer.is_some() {
            Some(ctx.json()?)
        } else {
            None
        };
        let pick = |header: &Option<String>,
                    pointer: &Option<String>|
         -> Result<Option<String>, VerifyError> {
            if let Some(name) = header
                && let Some(value) = ctx.header(name)?
            {
                return Ok(Some(value.to_owned()));
            }
            Ok(pointer.as_deref().and_then(|p| {
                body.as_ref()?.pointer(p).and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
            }))
        };
        Ok(Verified {
            event_type: pick(&self.type_header, &self.type_pointer)?,
            delivery_id: pick(&self.id_header, &self.id_pointer)?,
            occurred_at: None,
            challenge: None,
        })
    }
}

/// A generic HMAC scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacScheme {
    /// The header with the signature (lower case).
    pub header: String,
    /// Text before the signature in the header, such as `sha256=`.
    pub prefix: String,
    pub encoding: Encoding,
    pub algorithm: Algorithm,
    pub payload: PayloadTemplate,
    /// The header with a unix-seconds timestamp; when set, the tolerance is enforced.
    pub timestamp_header: Option<String>,
    pub extract: Extract,
}

impl HmacScheme {
    pub(crate) fn verify(&self, ctx: &Ctx<'_>) -> Result<Verified, VerifyError> {
        let header = &self.header;
        let value = ctx.required(header)?;
        let encoded = value.strip_prefix(self.prefix.as_str()).ok_or_else(|| {
            VerifyError::MalformedHeader {
                header: header.clone(),
                reason: format!("expected the prefix {:?}", self.prefix),
            }
        })?;
        let candidate = match self.encoding {
            Encoding::Hex => hex::decode(encoded).map_err(|e| e.to_string()),
            Encoding::Base64 => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| e.to_string())
            }
        }
        .map_err(|reason| VerifyError::MalformedHeader {
            header: header.clone(),
            reason: format!("signature does not decode: {reason}"),
        })?;

        let timestamp = match &self.timestamp_header {
            Some(name) => Some((name.as_str(), ctx.required(name)?)),
            None => None,
        };
        let verified = self.extract.read(ctx)?;
        let timestamp_text = timestamp.map(|(_, t)| t).unwrap_or_default();
        let id = verified.delivery_id.as_deref().unwrap_or_default();
        let parts = self.payload.resolve(ctx.body, timestamp_text, id);
        let matched = ctx.keys.iter().any(|key| {
            core::compute(self.algorithm, key, &parts).matches_any([candidate.as_slice()])
        });
        if !matched {
            return Err(VerifyError::Mismatch {
                header: header.clone(),
            });
        }
        if let Some((name, text)) = timestamp {
            ctx.check_tolerance(core::parse_timestamp(name, text)?)?;
        }
        Ok(verified)
    }
}
