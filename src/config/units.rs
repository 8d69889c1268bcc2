//! Human-friendly units in the user config: durations ("30s", "5m", "1h 30m") and
//! byte sizes ("512MiB", "8KiB", "100MB"). Parsed at load time so nothing past
//! `config` ever sees a raw string or a bare integer of unknown unit.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration written as a human string in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string such as \"30s\", \"500ms\" or \"5m\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                parse_duration(s).map(HumanDuration).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// Parses "30s", "1m 30s", "250ms". A bare number is refused: the unit must be explicit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("invalid duration \"\": expected e.g. \"30s\"".into());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid duration \"{s}\": a unit is required (e.g. \"{t}s\")"
        ));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("invalid duration \"{s}\": {e} (expected e.g. \"30s\", \"500ms\")"))
}

/// A byte size written as a human string in TOML ("512MiB"); stored in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte size string such as \"512MiB\" or \"8KiB\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                parse_byte_size(s).map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// Parses "8KiB", "512MiB", "1GB", "100B". Binary (KiB) and decimal (KB) units are both accepted.
pub fn parse_byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad =
        || format!("invalid byte size \"{s}\": expected e.g. \"512MiB\", \"8KiB\", \"100MB\"");
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        "" => {
            return Err(format!(
                "invalid byte size \"{s}\": a unit is required (e.g. \"{num}KiB\")"
            ))
        }
        _ => return Err(bad()),
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("30").unwrap_err().contains("unit"));
        assert!(parse_duration("abc")
            .unwrap_err()
            .contains("invalid duration"));
    }

    #[test]
    fn byte_sizes_binary_and_decimal() {
        assert_eq!(parse_byte_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_byte_size("8KiB").unwrap(), 8192);
        assert_eq!(parse_byte_size("100MB").unwrap(), 100_000_000);
        assert_eq!(parse_byte_size("1.5KiB").unwrap(), 1536);
        assert!(parse_byte_size("12").is_err());
        assert!(parse_byte_size("12 parsecs").is_err());
    }
}
