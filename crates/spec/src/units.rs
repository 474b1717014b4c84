//! Human quantities: memory sizes (`256Mi`, `1.5G`), CPU shares (`0.5`, `500m`) and durations
//! (`5s`, `1h30m`, `250ms`).
//!
//! Each parses from what people write and prints back in one canonical form, which is what is
//! stored, so `1024Mi` and `1Gi` are the same value and re-applying either changes nothing.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

const BINARY: [(&str, u64); 5] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
];
const DECIMAL: [(&str, u64); 6] = [
    ("k", 1_000),
    ("K", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
];

impl ByteSize {
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let hint =
            "write a size such as 256Mi, 1.5Gi (binary), 500M (decimal) or a number of bytes";
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let multiplier = if unit.is_empty() {
            1
        } else if let Some((_, m)) = BINARY
            .iter()
            .chain(DECIMAL.iter())
            .find(|(u, _)| *u == unit)
        {
            *m
        } else {
            let guess = match unit {
                "KB" | "kB" => " (write K, or Ki for 1024)",
                "MB" => " (write M, or Mi for 1024²)",
                "GB" => " (write G, or Gi for 1024³)",
                "TB" => " (write T, or Ti for 1024⁴)",
                _ => "",
            };
            return Err(format!(
                "invalid size `{text}`: unknown unit `{unit}`{guess}; {hint}"
            ));
        };
        let value =
            parse_decimal(number).ok_or_else(|| format!("invalid size `{text}`: {hint}"))?;
        let bytes = value * multiplier as f64;
        if !(bytes.is_finite() && bytes < u64::MAX as f64) {
            return Err(format!("size `{text}` is too large"));
        }
        if bytes.fract() != 0.0 {
            return Err(format!("size `{text}` is not a whole number of bytes"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, m) in BINARY.iter().rev() {
            if n >= *m && n.is_multiple_of(*m) {
                return write!(f, "{}{unit}", n / m);
            }
        }
        for (unit, m) in DECIMAL.iter().rev().filter(|(u, _)| *u != "k") {
            if n >= *m && n.is_multiple_of(*m) {
                return write!(f, "{}{unit}", n / m);
            }
        }
        write!(f, "{n}")
    }
}

/// CPU in thousandths of a core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cpu(pub u32);

impl Cpu {
    pub fn parse(text: &str) -> Result<Cpu, String> {
        let hint = "write cores such as 0.5 or 2, or thousandths such as 500m";
        let text = text.trim();
        let millis = if let Some(m) = text.strip_suffix('m') {
            m.parse::<u32>()
                .map_err(|_| format!("invalid cpu `{text}`: {hint}"))?
        } else {
            let cores =
                parse_decimal(text).ok_or_else(|| format!("invalid cpu `{text}`: {hint}"))?;
            let millis = cores * 1000.0;
            if millis.fract().abs() > 1e-6 || millis > f64::from(u32::MAX) {
                return Err(format!(
                    "invalid cpu `{text}`: at most three decimals (1m = 0.001 core)"
                ));
            }
            millis.round() as u32
        };
        if millis == 0 {
            return Err(format!("cpu `{text}` must be more than zero"));
        }
        Ok(Cpu(millis))
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

/// A span of time, written `250ms`, `5s`, `2m`, `1h30m` or `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub Duration);

const TIME_UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

impl Span {
    pub fn parse(text: &str) -> Result<Span, String> {
        let hint = "write a duration such as 250ms, 5s, 2m or 1h30m";
        let text = text.trim();
        if text.is_empty() {
            return Err(format!("empty duration: {hint}"));
        }
        let mut rest = text;
        let mut total: u64 = 0;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!("invalid duration `{text}`: {hint}"));
            }
            let value: u64 = rest[..digits]
                .parse()
                .map_err(|_| format!("duration `{text}` is too large"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let Some((_, ms)) = TIME_UNITS.iter().find(|(u, _)| *u == unit) else {
                if unit.is_empty() {
                    return Err(format!(
                        "duration `{text}` needs a unit, such as `{value}s`"
                    ));
                }
                return Err(format!(
                    "invalid duration `{text}`: unknown unit `{unit}`; {hint}"
                ));
            };
            total = value
                .checked_mul(*ms)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("duration `{text}` is too large"))?;
        }
        Ok(Span(Duration::from_millis(total)))
    }

    pub fn from_secs(secs: u64) -> Span {
        Span(Duration::from_secs(secs))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in TIME_UNITS {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

/// Digits with at most one decimal point, no sign, no exponent.
fn parse_decimal(text: &str) -> Option<f64> {
    let valid = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_digit() || c == '.')
        && text.chars().filter(|c| *c == '.').count() <= 1
        && text.chars().any(|c| c.is_ascii_digit());
    valid.then(|| text.parse().ok()).flatten()
}

macro_rules! text_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                <$ty>::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}
text_serde!(ByteSize);
text_serde!(Cpu);
text_serde!(Span);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("256Mi"), Ok(ByteSize(256 << 20)));
        assert_eq!(ByteSize::parse("1.5Gi"), Ok(ByteSize(3 << 29)));
        assert_eq!(ByteSize::parse("500M"), Ok(ByteSize(500_000_000)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert!(
            ByteSize::parse("256MB")
                .unwrap_err()
                .contains("write M, or Mi")
        );
        assert!(ByteSize::parse("lots").is_err());
        assert!(ByteSize::parse("-1Mi").is_err());
        assert!(ByteSize::parse("1.2.3Mi").is_err());
        assert!(ByteSize::parse("0.3").unwrap_err().contains("whole number"));
        assert_eq!(ByteSize::parse("1024Mi").unwrap().to_string(), "1Gi");
        assert_eq!(ByteSize(1_500_000).to_string(), "1500K");
        assert_eq!(ByteSize(1_000_001).to_string(), "1000001");
    }

    #[test]
    fn cpus() {
        assert_eq!(Cpu::parse("0.5"), Ok(Cpu(500)));
        assert_eq!(Cpu::parse("2"), Ok(Cpu(2000)));
        assert_eq!(Cpu::parse("250m"), Ok(Cpu(250)));
        assert!(Cpu::parse("0").is_err());
        assert!(Cpu::parse("0.0005").is_err());
        assert!(Cpu::parse("half").is_err());
        assert_eq!(Cpu(2000).to_string(), "2");
        assert_eq!(Cpu(500).to_string(), "500m");
    }

    #[test]
    fn spans() {
        assert_eq!(Span::parse("5s"), Ok(Span::from_secs(5)));
        assert_eq!(Span::parse("1h30m"), Ok(Span::from_secs(5400)));
        assert_eq!(Span::parse("250ms"), Ok(Span(Duration::from_millis(250))));
        assert!(Span::parse("5").unwrap_err().contains("needs a unit"));
        assert!(Span::parse("5 minutes").is_err());
        assert!(Span::parse("").is_err());
        assert!(Span::parse("99999999999999999999d").is_err());
        assert_eq!(Span::from_secs(5400).to_string(), "1h30m");
        assert_eq!(Span(Duration::from_millis(1500)).to_string(), "1s500ms");
    }

    proptest! {
        #[test]
        fn sizes_round_trip(n in 0u64..(1 << 52)) {
            let size = ByteSize(n);
            prop_assert_eq!(ByteSize::parse(&size.to_string()), Ok(size));
        }

        #[test]
        fn cpus_round_trip(n in 1u32..1_000_000) {
            prop_assert_eq!(Cpu::parse(&Cpu(n).to_string()), Ok(Cpu(n)));
        }

        #[test]
        fn spans_round_trip(ms in 0u64..(1 << 40)) {
            let span = Span(Duration::from_millis(ms));
            prop_assert_eq!(Span::parse(&span.to_string()), Ok(span));
        }

        #[test]
        fn parsers_never_panic(text in "\\PC{0,20}") {
            let _ = ByteSize::parse(&text);
            let _ = Cpu::parse(&text);
            let _ = Span::parse(&text);
        }
    }
}
