//! Units in configuration values: durations such as `"5m"` and sizes such as `"512KiB"`.

use serde::{Deserialize, Deserializer};

/// A duration or a size that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("invalid duration {text:?} ({reason}); write it like \"2.5s\", \"300ms\" or \"5m\"")]
    Duration { text: String, reason: String },
    #[error("invalid size {0:?}; write it like \"512KiB\" or 65536")]
    Size(String),
    #[error("unknown size unit {unit:?} in {text:?}; use B, KiB, MiB, GiB, kB or MB")]
    SizeUnit { unit: String, text: String },
    #[error("size {0:?} is too large")]
    SizeTooLarge(String),
}

/// Serde helpers for `std::time::Duration` written as `"2.5s"`, `"5m"`, `"300ms"` (humantime).
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    pub fn parse(text: &str) -> Result<Duration, super::UnitError> {
        humantime::parse_duration(text.trim()).map_err(|e| super::UnitError::Duration {
            text: text.to_owned(),
            reason: e.to_string(),
        })
    }

    /// A list of durations: `["5s", "30s", "2m"]`.
    pub mod list {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer};

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
            Vec::<String>::deserialize(d)?
                .iter()
                .map(|text| super::parse(text).map_err(serde::de::Error::custom))
                .collect()
        }
    }
}

/// A size in bytes, written as a number of bytes or with a unit: `"512KiB"`, `"1MiB"`, `"64kB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, UnitError> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| UnitError::Size(text.to_owned()))?;
        let factor = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            other => {
                return Err(UnitError::SizeUnit {
                    unit: other.to_owned(),
                    text: text.to_owned(),
                });
            }
        };
        number
            .checked_mul(factor)
            .map(Self)
            .ok_or_else(|| UnitError::SizeTooLarge(text.to_owned()))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_multiple_of(1 << 20) && self.0 > 0 {
            write!(f, "{}MiB", self.0 >> 20)
        } else if self.0.is_multiple_of(1 << 10) && self.0 > 0 {
            write!(f, "{}KiB", self.0 >> 10)
        } else {
            write!(f, "{}B", self.0)
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Self(n)),
            Raw::Text(text) => Self::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!(ByteSize::parse("512KiB").unwrap().0, 512 * 1024);
        assert_eq!(ByteSize::parse("1MiB").unwrap().0, 1 << 20);
        assert_eq!(ByteSize::parse("65536").unwrap().0, 65536);
        assert_eq!(ByteSize::parse("64kB").unwrap().0, 64_000);
        assert!(
            ByteSize::parse("12 parsecs")
                .unwrap_err()
                .to_string()
                .contains("parsecs")
        );
        assert!(ByteSize::parse("lots").is_err());
        assert_eq!(ByteSize(512 * 1024).to_string(), "512KiB");
    }

    #[test]
    fn durations_parse_and_name_bad_values() {
        assert_eq!(duration::parse("2.5s").unwrap().as_millis(), 2500);
        assert_eq!(duration::parse("5m").unwrap().as_secs(), 300);
        assert!(
            duration::parse("soon")
                .unwrap_err()
                .to_string()
                .contains("\"soon\"")
        );
    }
}
