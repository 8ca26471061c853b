//! Decimal amounts to minor units by the currency's ISO 4217 exponent.

/// Minor-unit exponent of an ISO 4217 currency: 0 for JPY/KRW/…, 3 for KWD/BHD/…, 2 otherwise.
pub fn exponent(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// The inverse of [`parse_decimal`]: 1250 in EUR → `"12.50"`; 1500 in JPY → `"1500"`.
pub fn format_minor(amount_minor: i64, currency: &str) -> String {
    let exponent = exponent(currency) as usize;
    let sign = if amount_minor < 0 { "-" } else { "" };
    let digits = amount_minor.unsigned_abs().to_string();
    if exponent == 0 {
        return format!("{sign}{digits}");
    }
    let digits = format!("{digits:0>width$}", width = exponent + 1);
    let (whole, fraction) = digits.split_at(digits.len() - exponent);
    format!("{sign}{whole}.{fraction}")
}

/// An amount that is not a decimal its currency can hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("{0:?} is not a decimal amount")]
    NotDecimal(String),
    #[error("{text:?} has more decimals than {currency} has minor units ({exponent})")]
    TooPrecise {
        text: String,
        currency: String,
        exponent: usize,
    },
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// `"12.50"` in EUR → 1250; `"1500"` in JPY → 1500; `"1.234"` in KWD → 1234. More fractional
/// digits than the currency has are an error unless they are zeros (`"1500.00"` in JPY).
pub fn parse_decimal(text: &str, currency: &str) -> Result<i64, AmountError> {
    let exponent = exponent(currency) as usize;
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let well_formed = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit());
    if !well_formed {
        return Err(AmountError::NotDecimal(text.to_owned()));
    }
    if fraction.len() > exponent && fraction[exponent..].bytes().any(|b| b != b'0') {
        return Err(AmountError::TooPrecise {
            text: text.to_owned(),
            currency: currency.to_owned(),
            exponent,
        });
    }
    let mut minor = String::with_capacity(whole.len() + exponent);
    minor.push_str(whole);
    let kept = &fraction[..fraction.len().min(exponent)];
    minor.push_str(kept);
    minor.extend(std::iter::repeat_n('0', exponent - kept.len()));
    let value: i64 = minor
        .parse()
        .map_err(|_| AmountError::TooLarge(text.to_owned()))?;
    Ok(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn amounts_follow_the_currency_exponent() {
        assert_eq!(parse_decimal("12.50", "EUR"), Ok(1250));
        assert_eq!(parse_decimal("12.5", "EUR"), Ok(1250));
        assert_eq!(parse_decimal("12", "EUR"), Ok(1200));
        assert_eq!(parse_decimal("1500", "JPY"), Ok(1500));
        assert_eq!(parse_decimal("1500.00", "JPY"), Ok(1500));
        assert_eq!(parse_decimal("1.234", "KWD"), Ok(1234));
        assert_eq!(parse_decimal("-3.10", "USD"), Ok(-310));
        assert!(
            parse_decimal("1500.5", "JPY")
                .unwrap_err()
                .to_string()
                .contains("JPY")
        );
        assert!(parse_decimal("12,50", "EUR").is_err());
        assert!(parse_decimal("", "EUR").is_err());
        assert!(parse_decimal("99999999999999999999", "EUR").is_err());
        assert_eq!(format_minor(1250, "EUR"), "12.50");
        assert_eq!(format_minor(-5, "USD"), "-0.05");
        assert_eq!(format_minor(1500, "JPY"), "1500");
        assert_eq!(format_minor(1234, "KWD"), "1.234");
    }

    proptest! {
        #[test]
        fn formatting_minor_units_and_parsing_them_back_is_the_identity(
            minor in -1_000_000_000i64..1_000_000_000,
            currency in prop::sample::select(vec!["JPY", "EUR", "USD", "KWD", "CLF"]),
        ) {
            let text = format_minor(minor, currency);
            prop_assert_eq!(parse_decimal(&text, currency), Ok(minor));
        }
    }
}
