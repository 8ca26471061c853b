//! Signing requests the way each provider does: for load generators, the `curl` that `hookbus dev`
//! prints, and tests. The inverse of the verifiers, written from the providers' documentation.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::core;
use crate::hmac_scheme::Encoding;
use crate::verifier::{Scheme, key_bytes_for};

/// One request to sign: the body must already carry whatever the scheme reads from it (Stripe's
/// `id` and `type`, a Standard Webhooks `type`).
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub body: &'a [u8],
    pub delivery_id: &'a str,
    pub event_type: &'a str,
    pub timestamp: i64,
}

/// The headers a provider would send with `request`, signed with `secret`.
pub fn sign_as_provider(
    scheme: &Scheme,
    secret: &str,
    request: Outgoing<'_>,
) -> Vec<(String, String)> {
    let key = key_bytes_for(scheme, secret);
    let ts = request.timestamp.to_string();
    let body = request.body;
    let h = |name: &str, value: String| (name.to_owned(), value);
    match scheme {
        Scheme::StandardWebhooks => {
            let sig = core::sha256(
                &key,
                &[
                    request.delivery_id.as_bytes(),
                    b".",
                    ts.as_bytes(),
                    b".",
                    body,
                ],
            );
            vec![
                h("webhook-id", request.delivery_id.to_owned()),
                h("webhook-timestamp", ts),
                h("webhook-signature", format!("v1,{}", STANDARD.encode(sig))),
            ]
        }
        Scheme::Github => vec![
            h(
                "x-hub-signature-256",
                format!("sha256={}", hex::encode(core::sha256(&key, &[body]))),
            ),
            h("x-github-event", request.event_type.to_owned()),
            h("x-github-delivery", request.delivery_id.to_owned()),
        ],
        Scheme::Stripe => {
            let sig = core::sha256(&key, &[ts.as_bytes(), b".", body]);
            vec![h(
                "stripe-signature",
                format!("t={ts},v1={}", hex::encode(sig)),
            )]
        }
        Scheme::Shopify => vec![
            h(
                "x-shopify-hmac-sha256",
                STANDARD.encode(core::sha256(&key, &[body])),
            ),
            h("x-shopify-topic", request.event_type.to_owned()),
            h("x-shopify-webhook-id", request.delivery_id.to_owned()),
        ],
        Scheme::Slack => {
            let sig = core::sha256(&key, &[b"v0:", ts.as_bytes(), b":", body]);
            vec![
                h("x-slack-request-timestamp", ts),
                h("x-slack-signature", format!("v0={}", hex::encode(sig))),
            ]
        }
        Scheme::Hmac(scheme) => {
            let parts = scheme.payload.resolve(body, &ts, request.delivery_id);
            let sig = core::compute(scheme.algorithm, &key, &parts).into_bytes();
            let encoded = match scheme.encoding {
                Encoding::Hex => hex::encode(sig),
                Encoding::Base64 => STANDARD.encode(sig),
            };
            let mut headers = vec![h(&scheme.header, format!("{}{encoded}", scheme.prefix))];
            if let Some(name) = &scheme.timestamp_header {
                headers.push(h(name, ts));
            }
            headers.extend(extract_headers(&scheme.extract, request));
            headers
        }
        Scheme::None(extract) => extract_headers(extract, request),
    }
}

fn extract_headers(extract: &crate::Extract, request: Outgoing<'_>) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    if let Some(name) = &extract.type_header {
        headers.push((name.clone(), request.event_type.to_owned()));
    }
    if let Some(name) = &extract.id_header {
        headers.push((name.clone(), request.delivery_id.to_owned()));
    }
    headers
}
