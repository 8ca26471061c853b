//! What the fuzz targets share: a fuzzer's bytes read as a webhook request, and the properties
//! every verifier must keep whatever it is given.
//!
//! - It answers, and never panics, for any headers and body.
//! - A request signed the way the provider signs (`sign_as_provider`) is never refused for its
//!   signature, its headers or its timestamp; only a body that the scheme must read as JSON and
//!   is not may be refused.

use hookbus_signature::{
    Algorithm, Encoding, Extract, HmacScheme, Outgoing, PayloadTemplate, Scheme, Verifier,
    VerifyError, sign_as_provider,
};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The verifier's clock in every target.
pub const NOW: i64 = 1_767_225_600;

/// The secret each scheme is given (a valid `whsec_` for Standard Webhooks).
pub fn secret_for(scheme: &Scheme) -> &'static str {
    match scheme {
        Scheme::StandardWebhooks => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        _ => "fuzz-secret-0123456789",
    }
}

/// The fuzzer's bytes as a request: `name: value` lines up to the first empty line (lines that
/// are not a valid header are skipped), then the body.
pub fn request(data: &[u8]) -> (HeaderMap, &[u8]) {
    let split = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or((data.len(), data.len()), |at| (at, at + 2));
    let (head, body) = (&data[..split.0], &data[split.1..]);
    let mut headers = HeaderMap::new();
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim_ascii()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    (headers, body)
}

/// The generic scheme the `hmac` target verifies: hex HMAC-SHA256 of `{timestamp}.{body}`.
pub fn hmac_scheme() -> Scheme {
    Scheme::Hmac(HmacScheme {
        header: "x-signature".into(),
        prefix: "sha256=".into(),
        encoding: Encoding::Hex,
        algorithm: Algorithm::Sha256,
        payload: PayloadTemplate::parse("{timestamp}.{body}").expect("a valid template"),
        timestamp_header: Some("x-timestamp".into()),
        extract: Extract {
            type_header: Some("x-event-type".into()),
            ..Extract::default()
        },
    })
}

/// Checks both properties for `scheme` on the fuzzer's `data`.
pub fn verify_both(scheme: Scheme, data: &[u8]) {
    let verifier = Verifier::new(scheme.clone(), &[secret_for(&scheme)], 300)
        .expect("the fuzz secrets are valid");
    let (headers, body) = request(data);
    // Whatever comes, an answer: Ok or an error, never a panic.
    let _ = verifier.verify(&headers, body, NOW);

    // The same body, signed as the provider signs it.
    let signed = sign_as_provider(
        &scheme,
        secret_for(&scheme),
        Outgoing {
            body,
            delivery_id: "msg_fuzz",
            event_type: "fuzz.event",
            timestamp: NOW,
        },
    );
    let mut headers = HeaderMap::new();
    for (name, value) in signed {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("the signer's header names are valid"),
            HeaderValue::from_str(&value).expect("the signer's header values are valid"),
        );
    }
    match verifier.verify(&headers, body, NOW) {
        Ok(_) | Err(VerifyError::InvalidBody(_)) => {}
        Err(e) => panic!(
            "a request signed as {} signs was refused: {e}",
            scheme.name()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_then_body() {
        let (headers, body) = request(b"x-a: 1\nbad line\nx-b:  two \n\n{\"k\":1}");
        assert_eq!(headers["x-a"], "1");
        assert_eq!(headers["x-b"], "two");
        assert_eq!(body, b"{\"k\":1}");
    }

    #[test]
    fn every_scheme_keeps_both_properties_on_simple_inputs() {
        for scheme in [
            Scheme::StandardWebhooks,
            Scheme::Github,
            Scheme::Stripe,
            Scheme::Shopify,
            Scheme::Slack,
            hmac_scheme(),
        ] {
            verify_both(scheme.clone(), b"");
            verify_both(scheme.clone(), b"\n\n{\"id\":\"evt_1\",\"type\":\"a.b\"}");
            verify_both(scheme, b"x-hub-signature-256: sha256=00\n\nnot json");
        }
    }
}
