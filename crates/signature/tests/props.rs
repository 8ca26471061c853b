//! Property tests: any one-byte change breaks verification, and no header string panics a parser.

use hookbus_signature::{Outgoing, Scheme, Verifier, sign_as_provider};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

const NOW: i64 = 1_750_000_000;

fn schemes() -> Vec<(Scheme, &'static str)> {
    vec![
        (
            Scheme::StandardWebhooks,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
        (Scheme::Github, "gh"),
        (Scheme::Stripe, "whsec_s"),
        (Scheme::Shopify, "shp"),
        (Scheme::Slack, "sl"),
    ]
}

fn signed(scheme: &Scheme, secret: &str, body: &[u8]) -> HeaderMap {
    sign_as_provider(
        scheme,
        secret,
        Outgoing {
            body,
            delivery_id: "id-1",
            event_type: "t",
            timestamp: NOW,
        },
    )
    .into_iter()
    .map(|(k, v)| {
        (
            HeaderName::try_from(k).unwrap(),
            HeaderValue::try_from(v).unwrap(),
        )
    })
    .collect()
}

/// Bodies that every scheme accepts (JSON with the fields the JSON schemes read).
fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
    "[a-z0-9 ]{0,200}"
        .prop_map(|text| format!(r#"{{"id":"evt","type":"x","text":"{text}"}}"#).into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_changed_body_byte_fails(body in body_strategy(), index in any::<prop::sample::Index>(), flip in 1u8..=255) {
        for (scheme, secret) in schemes() {
            let headers = signed(&scheme, secret, &body);
            let verifier = Verifier::new(scheme.clone(), &[secret], 300).unwrap();
            prop_assert!(verifier.verify(&headers, &body, NOW).is_ok());
            let mut changed = body.clone();
            let i = index.index(changed.len());
            changed[i] ^= flip;
            prop_assert!(verifier.verify(&headers, &changed, NOW).is_err(), "{}", scheme.name());
        }
    }

    #[test]
    fn any_changed_signature_or_timestamp_byte_fails(body in body_strategy(), index in any::<prop::sample::Index>(), replacement in "[ -~]") {
        for (scheme, secret) in schemes() {
            let headers = signed(&scheme, secret, &body);
            let verifier = Verifier::new(scheme.clone(), &[secret], 300).unwrap();
            // headers whose bytes are signed or carry the signature
            let targets: Vec<&str> = match scheme {
                Scheme::StandardWebhooks => vec!["webhook-signature", "webhook-timestamp", "webhook-id"],
                Scheme::Slack => vec!["x-slack-signature", "x-slack-request-timestamp"],
                _ => scheme.signature_headers()[..1].to_vec(),
            };
            for target in targets {
                let original = headers.get(target).unwrap().to_str().unwrap().to_owned();
                let i = index.index(original.len());
                let mut changed: Vec<char> = original.chars().collect();
                let new_char = replacement.chars().next().unwrap();
                if changed[i] == new_char { continue; }
                changed[i] = new_char;
                let changed: String = changed.into_iter().collect();
                let mut tampered = headers.clone();
                let Ok(value) = HeaderValue::try_from(changed.trim()) else { continue };
                // hex and header values are case-insensitive: a case-only change is the same signature
                if value.to_str().unwrap().eq_ignore_ascii_case(&original) { continue; }
                tampered.insert(HeaderName::try_from(target).unwrap(), value);
                prop_assert!(
                    verifier.verify(&tampered, &body, NOW).is_err(),
                    "{}: {target} {original:?} -> {changed:?} still verifies", scheme.name()
                );
            }
        }
    }

    #[test]
    fn arbitrary_header_strings_never_panic(values in prop::collection::vec("\\PC{0,80}", 4), body in prop::collection::vec(any::<u8>(), 0..64)) {
        let names = [
            "webhook-id", "webhook-timestamp", "webhook-signature", "svix-signature",
            "x-hub-signature-256", "x-github-event", "stripe-signature", "x-shopify-hmac-sha256",
            "x-slack-signature", "x-slack-request-timestamp",
        ];
        for (scheme, secret) in schemes() {
            let verifier = Verifier::new(scheme, &[secret], 300).unwrap();
            for (n, name) in names.iter().enumerate() {
                let mut headers = HeaderMap::new();
                for (k, value) in values.iter().enumerate() {
                    if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
                        headers.insert(HeaderName::from_static(names[(n + k) % names.len()]), value);
                    }
                }
                let _ = name;
                let _ = verifier.verify(&headers, &body, NOW);
            }
        }
    }
}
