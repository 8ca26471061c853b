//! Freshly signed requests for every scheme, the error each kind of bad request gets, and the
//! outbound signer checked by the independent `standardwebhooks` crate.

use hookbus_signature::{
    Algorithm, Encoding, Extract, HmacScheme, Outgoing, PayloadTemplate, Scheme, SigningSecret,
    Verifier, VerifyError, sign_as_provider, sign_standard_webhooks,
};
use http::{HeaderMap, HeaderName, HeaderValue};

const NOW: i64 = 1_750_000_000;
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn header_map(headers: &[(String, String)]) -> HeaderMap {
    headers
        .iter()
        .map(|(k, v)| {
            (
                HeaderName::try_from(k.as_str()).unwrap(),
                HeaderValue::try_from(v.as_str()).unwrap(),
            )
        })
        .collect()
}

fn acme() -> HmacScheme {
    HmacScheme {
        header: "x-acme-signature".into(),
        prefix: "sha512=".into(),
        encoding: Encoding::Base64,
        algorithm: Algorithm::Sha512,
        payload: PayloadTemplate::parse("{timestamp}.{id}.{body}").unwrap(),
        timestamp_header: Some("x-acme-timestamp".into()),
        extract: Extract {
            type_header: None,
            type_pointer: Some("/kind".into()),
            id_header: Some("x-acme-delivery".into()),
            id_pointer: None,
        },
    }
}

/// (scheme, secret, body, expected type)
fn cases() -> Vec<(Scheme, &'static str, String, &'static str)> {
    vec![
        (
            Scheme::StandardWebhooks,
            SW_SECRET,
            r#"{"type":"invoice.paid","data":{}}"#.into(),
            "invoice.paid",
        ),
        (
            Scheme::Github,
            "gh-secret",
            r#"{"action":"opened","number":1}"#.into(),
            "pull_request.opened",
        ),
        (
            Scheme::Stripe,
            "whsec_stripe",
            r#"{"id":"evt_9","type":"charge.refunded","created":1}"#.into(),
            "charge.refunded",
        ),
        (
            Scheme::Shopify,
            "shpss_x",
            r#"{"id":1}"#.into(),
            "orders/create",
        ),
        (
            Scheme::Slack,
            "slack-secret",
            r#"{"type":"event_callback","event_id":"Ev9","event":{"type":"app_mention"}}"#.into(),
            "app_mention",
        ),
        (
            Scheme::Hmac(acme()),
            "acme-secret",
            r#"{"kind":"thing.happened"}"#.into(),
            "thing.happened",
        ),
    ]
}

fn delivery_id(scheme: &Scheme) -> &'static str {
    match scheme {
        Scheme::Stripe => "evt_9",
        Scheme::Slack => "Ev9",
        _ => "d-1",
    }
}

fn sign(scheme: &Scheme, secret: &str, body: &str, event_type: &str, ts: i64) -> HeaderMap {
    header_map(&sign_as_provider(
        scheme,
        secret,
        Outgoing {
            body: body.as_bytes(),
            delivery_id: delivery_id(scheme),
            event_type: match scheme {
                Scheme::Github => "pull_request",
                _ => event_type,
            },
            timestamp: ts,
        },
    ))
}

#[test]
fn freshly_signed_requests_verify_with_type_and_id() {
    for (scheme, secret, body, event_type) in cases() {
        let headers = sign(&scheme, secret, &body, event_type, NOW);
        let verifier = Verifier::new(scheme.clone(), &[secret], 300).unwrap();
        let verified = verifier
            .verify(&headers, body.as_bytes(), NOW)
            .unwrap_or_else(|e| panic!("{}: {e}", scheme.name()));
        assert_eq!(
            verified.event_type.as_deref(),
            Some(event_type),
            "{}",
            scheme.name()
        );
        assert_eq!(
            verified.delivery_id.as_deref(),
            Some(delivery_id(&scheme)),
            "{}",
            scheme.name()
        );
    }
}

#[test]
fn missing_or_malformed_signature_headers_are_named() {
    for (scheme, secret, body, event_type) in cases() {
        let verifier = Verifier::new(scheme.clone(), &[secret], 300).unwrap();
        let signature_header = scheme.signature_headers()[0].to_owned();

        let mut headers = sign(&scheme, secret, &body, event_type, NOW);
        headers.remove(signature_header.as_str());
        let err = verifier.verify(&headers, body.as_bytes(), NOW).unwrap_err();
        assert_eq!(err.code(), "invalid_signature", "{}", scheme.name());
        assert!(
            matches!(&err, VerifyError::MissingHeader(h) if *h == signature_header),
            "{}: {err}",
            scheme.name()
        );

        let mut headers = sign(&scheme, secret, &body, event_type, NOW);
        headers.insert(
            HeaderName::try_from(signature_header.as_str()).unwrap(),
            HeaderValue::from_static("garbage!!"),
        );
        let err = verifier.verify(&headers, body.as_bytes(), NOW).unwrap_err();
        assert!(
            matches!(&err, VerifyError::MalformedHeader { header, .. } if *header == signature_header),
            "{}: {err}",
            scheme.name()
        );
        assert_eq!(err.code(), "invalid_signature");
    }
}

#[test]
fn timestamps_outside_the_tolerance_are_refused_in_both_directions() {
    for (scheme, secret, body, event_type) in cases() {
        if matches!(scheme, Scheme::Github | Scheme::Shopify) {
            continue; // no signed timestamp in these schemes
        }
        let verifier = Verifier::new(scheme.clone(), &[secret], 300).unwrap();
        for (signed_at, ok) in [
            (NOW - 300, true),
            (NOW + 300, true),
            (NOW - 301, false),
            (NOW + 301, false),
        ] {
            let headers = sign(&scheme, secret, &body, event_type, signed_at);
            let result = verifier.verify(&headers, body.as_bytes(), NOW);
            match (ok, result) {
                (true, Ok(_)) => {}
                (false, Err(VerifyError::TimestampOutOfTolerance { skew, .. })) => {
                    assert_eq!(skew.abs(), 301);
                }
                (ok, other) => panic!(
                    "{} signed at {signed_at}, expected ok={ok}: {other:?}",
                    scheme.name()
                ),
            }
        }
    }
}

#[test]
fn json_schemes_reject_unreadable_bodies_with_invalid_body() {
    for scheme in [Scheme::StandardWebhooks, Scheme::Stripe] {
        let secret = if scheme == Scheme::Stripe {
            "whsec_stripe"
        } else {
            SW_SECRET
        };
        let headers = sign(&scheme, secret, "not json", "x", NOW);
        let verifier = Verifier::new(scheme.clone(), &[secret], 300).unwrap();
        let err = verifier.verify(&headers, b"not json", NOW).unwrap_err();
        assert_eq!(err.code(), "invalid_body", "{}: {err}", scheme.name());
    }
}

#[test]
fn slack_url_verification_yields_the_challenge() {
    let body = r#"{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let headers = sign(&Scheme::Slack, "s", body, "", NOW);
    let verified = Verifier::new(Scheme::Slack, &["s"], 300)
        .unwrap()
        .verify(&headers, body.as_bytes(), NOW)
        .unwrap();
    assert_eq!(
        verified.challenge.as_deref(),
        Some("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
    );
}

#[test]
fn none_scheme_reads_type_and_id_without_secrets() {
    let extract = Extract {
        type_header: Some("x-event".into()),
        id_pointer: Some("/id".into()),
        ..Extract::default()
    };
    let verifier = Verifier::new::<&str>(Scheme::None(extract), &[], 300).unwrap();
    let headers = header_map(&[("x-event".into(), "user.signed_up".into())]);
    let verified = verifier.verify(&headers, br#"{"id":42}"#, NOW).unwrap();
    assert_eq!(verified.event_type.as_deref(), Some("user.signed_up"));
    assert_eq!(verified.delivery_id.as_deref(), Some("42"));
}

#[test]
fn schemes_with_secrets_refuse_an_empty_list_or_a_bad_key() {
    assert!(Verifier::new::<&str>(Scheme::Github, &[], 300).is_err());
    let err = Verifier::new(Scheme::StandardWebhooks, &["whsec_***"], 300).unwrap_err();
    assert!(err.to_string().contains("secret #0"), "{err}");
}

#[test]
fn payload_templates_name_what_is_wrong() {
    assert!(
        PayloadTemplate::parse("{timestamp}")
            .unwrap_err()
            .to_string()
            .contains("{body}")
    );
    assert!(
        PayloadTemplate::parse("{body}{nope}")
            .unwrap_err()
            .to_string()
            .contains("{nope}")
    );
    assert!(
        PayloadTemplate::parse("{body")
            .unwrap_err()
            .to_string()
            .contains("unclosed")
    );
}

#[test]
fn outbound_signatures_verify_with_the_standardwebhooks_crate() {
    let old = SigningSecret::parse(SW_SECRET).unwrap();
    let new = SigningSecret::from_key(vec![7; 32]);
    let body = br#"{"type":"order.created"}"#;
    let header = sign_standard_webhooks(&[new.clone(), old.clone()], "msg_1", NOW, body);
    assert_eq!(header.split(' ').count(), 2);
    for secret in [old, new] {
        let webhook = standardwebhooks::Webhook::new(&secret.expose()).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", HeaderValue::from_static("msg_1"));
        headers.insert(
            "webhook-timestamp",
            HeaderValue::from_str(&NOW.to_string()).unwrap(),
        );
        headers.insert("webhook-signature", HeaderValue::from_str(&header).unwrap());
        // the crate checks against the real clock, so sign with a current timestamp for it
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let fresh = sign_standard_webhooks(std::slice::from_ref(&secret), "msg_1", now, body);
        headers.insert(
            "webhook-timestamp",
            HeaderValue::from_str(&now.to_string()).unwrap(),
        );
        headers.insert("webhook-signature", HeaderValue::from_str(&fresh).unwrap());
        webhook.verify(body, &headers).unwrap();
        // and the multi-signature header verifies with our own verifier for each secret
        let verifier = Verifier::new(Scheme::StandardWebhooks, &[secret.expose()], 300).unwrap();
        headers.insert(
            "webhook-timestamp",
            HeaderValue::from_str(&NOW.to_string()).unwrap(),
        );
        headers.insert("webhook-signature", HeaderValue::from_str(&header).unwrap());
        verifier.verify(&headers, body, NOW).unwrap();
    }
}
