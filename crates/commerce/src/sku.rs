//! A stock-keeping unit's code, as orders and stock updates carry it.

/// A SKU: any text that is not blank. `parse` is the only way in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sku(String);

/// A SKU that is blank.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a SKU must not be blank")]
pub struct BlankSku;

impl Sku {
    pub fn parse(text: &str) -> Result<Self, BlankSku> {
        if text.trim().is_empty() {
            Err(BlankSku)
        } else {
            Ok(Self(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for Sku {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn a_sku_is_any_text_but_blank(text in "[ \t\na-zA-Z0-9-]{0,12}") {
            let parsed = Sku::parse(&text);
            prop_assert_eq!(parsed.is_ok(), text.chars().any(|c| !c.is_whitespace()));
            if let Ok(sku) = parsed {
                prop_assert_eq!(sku.as_str(), text.as_str());
            }
        }
    }
}
