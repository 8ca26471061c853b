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

/// Checks a source or service name used as one subject token: 1 to 64 of `a-z`, `0-9`, `-`, `_`,
/// starting with a letter or digit.
pub fn check_source_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "source name {name:?} must be 1 to 64 characters of a-z, 0-9, - and _, starting with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

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
        assert!(check_source_name("github").is_ok());
        assert!(check_source_name("shop-eu_2").is_ok());
        for bad in ["", "GitHub", "a.b", "a*", "-x", &"x".repeat(65)] {
            assert!(check_source_name(bad).is_err(), "{bad}");
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
