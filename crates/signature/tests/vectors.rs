//! Known-answer vectors: requests signed by each provider's own library (copied from
//! `shared/vectors/signatures.json`), verified at the vector's clock.

use hookbus_signature::{Scheme, Verifier, VerifyError};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    scheme: String,
    made_by: String,
    secret: String,
    now: Option<i64>,
    headers: std::collections::BTreeMap<String, String>,
    body: String,
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("data/signatures.json");
    serde_json::from_str::<Vectors>(text).unwrap().vectors
}

fn scheme(name: &str) -> Scheme {
    match name {
        "standard-webhooks" => Scheme::StandardWebhooks,
        "github" => Scheme::Github,
        "stripe" => Scheme::Stripe,
        "shopify" => Scheme::Shopify,
        "slack" => Scheme::Slack,
        other => panic!("no scheme {other}"),
    }
}

fn headers(map: &std::collections::BTreeMap<String, String>) -> HeaderMap {
    map.iter()
        .map(|(k, v)| {
            (
                HeaderName::try_from(k.as_str()).unwrap(),
                HeaderValue::try_from(v.as_str()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_vector_verifies_and_names_its_type_and_id() {
    let vectors = vectors();
    let schemes: std::collections::BTreeSet<_> =
        vectors.iter().map(|v| v.scheme.as_str()).collect();
    assert_eq!(
        schemes.into_iter().collect::<Vec<_>>(),
        ["github", "shopify", "slack", "standard-webhooks", "stripe"]
    );
    for v in &vectors {
        let verifier = Verifier::new(scheme(&v.scheme), &[v.secret.as_str()], 300).unwrap();
        let now = v.now.unwrap_or(1_700_000_000);
        let verified = verifier
            .verify(&headers(&v.headers), v.body.as_bytes(), now)
            .unwrap_or_else(|e| panic!("{} ({}): {e}", v.scheme, v.made_by));
        let expected_id = match v.scheme.as_str() {
            "standard-webhooks" => Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
            "github" => Some("72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            "stripe" => Some("evt_1"),
            "shopify" => Some("b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),
            "slack" => Some("398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"),
            _ => unreachable!(),
        };
        let expected_type = match v.scheme.as_str() {
            "standard-webhooks" => None, // the vector's body has no `type`
            "github" => Some("ping"),
            "stripe" => Some("payment_intent.succeeded"),
            "shopify" => Some("orders/create"),
            "slack" => Some("slash_command"),
            _ => unreachable!(),
        };
        assert_eq!(
            verified.delivery_id.as_deref(),
            expected_id,
            "{}",
            v.made_by
        );
        assert_eq!(
            verified.event_type.as_deref(),
            expected_type,
            "{}",
            v.made_by
        );
    }
}

#[test]
fn every_vector_fails_with_another_secret_or_a_changed_body() {
    for v in vectors() {
        let now = v.now.unwrap_or(1_700_000_000);
        let wrong = if v.scheme == "standard-webhooks" {
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned()
        } else {
            format!("{}x", v.secret)
        };
        let verifier = Verifier::new(scheme(&v.scheme), &[wrong.as_str()], 300).unwrap();
        let err = verifier
            .verify(&headers(&v.headers), v.body.as_bytes(), now)
            .unwrap_err();
        assert!(
            matches!(err, VerifyError::Mismatch { .. }),
            "{}: {err}",
            v.scheme
        );

        let verifier = Verifier::new(scheme(&v.scheme), &[v.secret.as_str()], 300).unwrap();
        let mut body = v.body.clone().into_bytes();
        body[0] ^= 1;
        let err = verifier
            .verify(&headers(&v.headers), &body, now)
            .unwrap_err();
        assert_eq!(err.code(), "invalid_signature", "{}: {err}", v.scheme);
    }
}

#[test]
fn rotation_accepts_old_and_new_secrets() {
    for v in vectors() {
        let now = v.now.unwrap_or(1_700_000_000);
        let other = if v.scheme == "standard-webhooks" {
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned()
        } else {
            "a-new-secret".to_owned()
        };
        for secrets in [
            [other.as_str(), v.secret.as_str()],
            [v.secret.as_str(), other.as_str()],
        ] {
            let verifier = Verifier::new(scheme(&v.scheme), &secrets, 300).unwrap();
            verifier
                .verify(&headers(&v.headers), v.body.as_bytes(), now)
                .unwrap_or_else(|e| panic!("{}: {e}", v.scheme));
        }
    }
}

#[test]
fn timestamped_vectors_hold_exactly_to_the_tolerance_boundary() {
    for v in vectors().into_iter().filter(|v| v.now.is_some()) {
        let now = v.now.unwrap();
        let verifier = Verifier::new(scheme(&v.scheme), &[v.secret.as_str()], 300).unwrap();
        let h = headers(&v.headers);
        for ok in [now - 300, now + 300] {
            verifier
                .verify(&h, v.body.as_bytes(), ok)
                .unwrap_or_else(|e| panic!("{} at {ok}: {e}", v.scheme));
        }
        for late in [now - 301, now + 301] {
            let err = verifier.verify(&h, v.body.as_bytes(), late).unwrap_err();
            assert_eq!(
                err.code(),
                "timestamp_out_of_tolerance",
                "{}: {err}",
                v.scheme
            );
        }
    }
}
