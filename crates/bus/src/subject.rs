//! Subjects: `events.<source>.<type>`, with the type's separators (`/`, `.`) mapped to tokens and
//! characters that a NATS token cannot hold replaced by `_`.

/// The normalised event type: `orders/create` → `orders.create`; `a b*c` → `a_b_c`; empty tokens
/// become `_`; an empty type is `unknown`.
pub fn normalize_type(raw: &str) -> String {
    let raw = raw.trim();
    if raw.is_empty() {
        return "unknown".into();
    }
    let mut out = String::with_capacity(raw.len());
    for (i, token) in raw.split(['/', '.']).enumerate() {
        if i > 0 {
            out.push('.');
        }
        if token.is_empty() {
            out.push('_');
            continue;
        }
        out.extend(token.chars().map(|c| {
            if c.is_whitespace() || c.is_control() || c == '*' || c == '>' {
                '_'
            } else {
                c
            }
        }));
    }
    out
}

/// `events.<source>.<normalised type>`.
pub fn event_subject(source: &str, normalized_type: &str) -> String {
    format!("events.{source}.{normalized_type}")
}

/// Whether `subject` matches the NATS pattern `pattern` (`*` is one token, a final `>` is one or
/// more tokens).
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in pattern.split('.') {
        match (token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            ("*", Some(_)) => {}
            (literal, Some(s)) if literal == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// Whether every subject `narrow` matches is also matched by `broad`.
pub fn covers(broad: &str, narrow: &str) -> bool {
    let mut narrow_tokens = narrow.split('.');
    for token in broad.split('.') {
        match (token, narrow_tokens.next()) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            (_, Some(">")) => return false,
            ("*", Some(_)) => {}
            (literal, Some(n)) if literal == n => {}
            _ => return false,
        }
    }
    narrow_tokens.next().is_none()
}

/// Whether some subject matches both patterns.
pub fn overlap(a: &str, b: &str) -> bool {
    let (mut a_tokens, mut b_tokens) = (a.split('.'), b.split('.'));
    loop {
        match (a_tokens.next(), b_tokens.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == "*" || y == "*" || x == y => {}
            _ => return false,
        }
    }
}

/// The patterns with every one that another covers left out (the first of equal ones kept): a set
/// of consumer filter subjects the server accepts, as long as no two that remain overlap.
pub fn minimal_cover(patterns: &[String]) -> Vec<String> {
    let mut kept: Vec<String> = Vec::new();
    for (i, pattern) in patterns.iter().enumerate() {
        let covered = patterns.iter().enumerate().any(|(j, other)| {
            j != i && covers(other, pattern) && (!covers(pattern, other) || j < i)
        });
        if !covered && !kept.contains(pattern) {
            kept.push(pattern.clone());
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn patterns_match_covers_and_overlap() {
        assert!(matches(
            "events.*.order.created",
            "events.shop.order.created"
        ));
        assert!(!matches(
            "events.*.order.created",
            "events.shop.order.created.x"
        ));
        assert!(matches("events.>", "events.a.b"));
        assert!(!matches("events.>", "events"));
        assert!(!matches("events.a", "events.b"));
        assert!(covers("events.>", "events.*.order.created"));
        assert!(covers("events.*.x", "events.shop.x"));
        assert!(!covers("events.shop.x", "events.*.x"));
        assert!(!covers("events.*.x", "events.>"));
        assert!(overlap("events.a.*", "events.*.b"));
        assert!(!overlap("events.a.x", "events.b.x"));
        assert!(!overlap("events.a", "events.a.b"));
        let kept = minimal_cover(&[
            "events.*.order.created".into(),
            "events.>".into(),
            "events.>".into(),
            "other.x".into(),
        ]);
        assert_eq!(kept, ["events.>", "other.x"]);
    }

    proptest! {
        #[test]
        fn a_covering_pattern_matches_what_the_covered_one_matches(
            pattern in proptest::collection::vec(prop_oneof!["a", "b", Just("*".to_owned())], 1..4),
            broad in proptest::collection::vec(prop_oneof!["a", "b", Just("*".to_owned())], 1..4),
            tail in any::<bool>(),
            subject in proptest::collection::vec(prop_oneof!["a", "b"], 1..5),
        ) {
            let mut broad = broad.join(".");
            if tail {
                broad.push_str(".>");
            }
            let narrow = pattern.join(".");
            let subject = subject.join(".");
            if covers(&broad, &narrow) && matches(&narrow, &subject) {
                prop_assert!(matches(&broad, &subject));
            }
            if matches(&narrow, &subject) && matches(&broad, &subject) {
                prop_assert!(overlap(&broad, &narrow));
            }
        }
    }

    #[test]
    fn provider_types_map_to_tokens() {
        assert_eq!(normalize_type("orders/create"), "orders.create");
        assert_eq!(normalize_type("pull_request.opened"), "pull_request.opened");
        assert_eq!(
            normalize_type("payment_intent.succeeded"),
            "payment_intent.succeeded"
        );
        assert_eq!(normalize_type("a b*c>d\u{7}"), "a_b_c_d_");
        assert_eq!(normalize_type("a//b."), "a._.b._");
        assert_eq!(normalize_type("  "), "unknown");
        assert_eq!(
            event_subject("shop", &normalize_type("orders/create")),
            "events.shop.orders.create"
        );
    }

    #[test]
    fn source_names_are_single_tokens() {
        assert!(crate::SourceName::parse("github").is_ok());
        assert!(crate::SourceName::parse("shop-eu_2").is_ok());
        for bad in ["", "GitHub", "a.b", "a*", "-x", &"x".repeat(65)] {
            assert!(crate::SourceName::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_type_gives_a_valid_subject(raw in "\\PC{0,40}|[ ./*>\t]{0,10}") {
            let subject = event_subject("src", &normalize_type(&raw));
            for token in subject.split('.') {
                prop_assert!(!token.is_empty(), "{subject:?}");
                prop_assert!(token != "*" && token != ">" && !token.contains(char::is_whitespace), "{subject:?}");
            }
        }
    }
}
