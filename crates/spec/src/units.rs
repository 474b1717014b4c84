//! Human quantities: memory sizes (`256Mi`, `1.5G`), CPU shares (`0.5`, `500m`), durations
//! (`5s`, `1h30m`, `250ms`), and the exact numbers selectors compare (`4`, `2.5`, `8Gi`).
//!
//! Each parses from what people write and prints back in one canonical form, which is what is
//! stored, so `1024Mi` and `1Gi` are the same value and re-applying either changes nothing.
//! A [`Quantity`] is exact, not a float: `memory >= 8Gi` must hold for a host with exactly
//! 8 GiB, and a comparison must agree with itself on both sides of the network.

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

/// An exact non-negative decimal number, with an optional size suffix: `4`, `2.5`, `8Gi`,
/// `1.5T`. Suffixes are `K M G T P E` (powers of 1000) and `Ki Mi Gi Ti Pi Ei` (powers of 1024);
/// no sign, no exponent, digits on both sides of a decimal point. Two quantities are equal when
/// their values are (`8Gi` and `8192Mi`), and order as their values do, at any size: the digits
/// are kept, never rounded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quantity {
    /// The decimal digits (each 0 to 9) of the integer part, without leading zeros.
    integer: Vec<u8>,
    /// The decimal digits of the fraction, without trailing zeros.
    fraction: Vec<u8>,
}

/// The size suffixes a [`Quantity`] takes: its name, the base, and the power.
const QUANTITY_SUFFIXES: [(&str, u32, u32); 12] = [
    ("K", 1000, 1),
    ("M", 1000, 2),
    ("G", 1000, 3),
    ("T", 1000, 4),
    ("P", 1000, 5),
    ("E", 1000, 6),
    ("Ki", 1024, 1),
    ("Mi", 1024, 2),
    ("Gi", 1024, 3),
    ("Ti", 1024, 4),
    ("Pi", 1024, 5),
    ("Ei", 1024, 6),
];

impl Quantity {
    /// Reads a number as written, without surrounding spaces; the error says what was wrong,
    /// lowercase, without repeating the text.
    pub fn parse(text: &str) -> Result<Quantity, String> {
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(split);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || (number.contains('.') && !digits(fraction)) {
            return Err(
                "not a number: write digits such as 4 or 2.5, or a size such as 8Gi or 500M".into(),
            );
        }
        let (base, power) = if suffix.is_empty() {
            (1, 0)
        } else if let Some((_, base, power)) = QUANTITY_SUFFIXES
            .iter()
            .find(|(name, _, _)| *name == suffix)
        {
            (*base, *power)
        } else {
            let guess = match suffix {
                "k" | "KB" | "kB" => " (write K, or Ki for 1024)",
                "MB" => " (write M, or Mi for 1024²)",
                "GB" => " (write G, or Gi for 1024³)",
                "TB" => " (write T, or Ti for 1024⁴)",
                _ => "",
            };
            return Err(format!(
                "unknown unit `{suffix}`{guess}: units are K, M, G, T, P, E (powers of 1000) \
                 and Ki, Mi, Gi, Ti, Pi, Ei (powers of 1024)"
            ));
        };
        // All the digits, least significant first, and how many of them are the fraction.
        let mut digits: Vec<u8> = whole
            .bytes()
            .chain(fraction.bytes())
            .rev()
            .map(|b| b - b'0')
            .collect();
        let mut scale = fraction.len();
        for _ in 0..power {
            if base == 1000 {
                // Multiplying by 1000 moves the decimal point, or adds zeros past it.
                let shift = scale.min(3);
                scale -= shift;
                digits.splice(0..0, std::iter::repeat_n(0, 3 - shift));
            } else {
                let mut carry = 0u32;
                for d in &mut digits {
                    let v = u32::from(*d) * base + carry;
                    *d = (v % 10) as u8;
                    carry = v / 10;
                }
                while carry > 0 {
                    digits.push((carry % 10) as u8);
                    carry /= 10;
                }
            }
        }
        let mut fraction: Vec<u8> = digits[..scale].iter().rev().copied().collect();
        while fraction.last() == Some(&0) {
            fraction.pop();
        }
        let mut integer: Vec<u8> = digits[scale..].iter().rev().copied().collect();
        let leading = integer.iter().take_while(|d| **d == 0).count();
        integer.drain(..leading);
        Ok(Quantity { integer, fraction })
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Without leading zeros, a longer integer part is larger; without trailing zeros,
        // fractions order as their digit strings do.
        self.integer
            .len()
            .cmp(&other.integer.len())
            .then_with(|| self.integer.cmp(&other.integer))
            .then_with(|| self.fraction.cmp(&other.fraction))
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Quantity {
    /// The plain decimal value: `8Gi` shows as `8589934592`, `1.5K` as `1500`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = |ds: &[u8]| ds.iter().map(|d| char::from(b'0' + d)).collect::<String>();
        if self.integer.is_empty() {
            f.write_str("0")?;
        } else {
            f.write_str(&digits(&self.integer))?;
        }
        if !self.fraction.is_empty() {
            write!(f, ".{}", digits(&self.fraction))?;
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

    #[test]
    fn quantities_are_exact() {
        let q = |t: &str| Quantity::parse(t).map(|q| q.to_string());
        assert_eq!(q("4"), Ok("4".into()));
        assert_eq!(q("007"), Ok("7".into()));
        assert_eq!(q("0"), Ok("0".into()));
        assert_eq!(q("0.000"), Ok("0".into()));
        assert_eq!(q("2.50"), Ok("2.5".into()));
        assert_eq!(q("8Gi"), Ok("8589934592".into()));
        assert_eq!(q("1.5K"), Ok("1500".into()));
        assert_eq!(q("0.0001K"), Ok("0.1".into()));
        assert_eq!(q("1.5Ki"), Ok("1536".into()));
        assert_eq!(q("0.1Ki"), Ok("102.4".into()));
        assert_eq!(q("1E"), Ok("1000000000000000000".into()));
        assert_eq!(q("16Ei"), Ok("18446744073709551616".into()));
        assert_eq!(Quantity::parse("8192Mi"), Quantity::parse("8Gi"));
        assert!(Quantity::parse("8Gi") > Quantity::parse("8G"));
        assert!(Quantity::parse("0.5") < Quantity::parse("0.51"));
        assert!(Quantity::parse("0.6") > Quantity::parse("0.51"));
        assert!(Quantity::parse("10") > Quantity::parse("9.999"));
        assert!(Quantity::parse("99999999999999999999999999") > Quantity::parse("16Ei"));
        for bad in [
            "", "lots", "-1", "+1", "1e3", ".5", "5.", "1.2.3", " 4", "4 ", "8 Gi", "0x10",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            Quantity::parse("8GB")
                .unwrap_err()
                .contains("write G, or Gi")
        );
        assert!(Quantity::parse("8k").unwrap_err().contains("write K"));
        assert!(
            Quantity::parse("8Xi")
                .unwrap_err()
                .starts_with("unknown unit `Xi`")
        );
    }

    proptest! {
        #[test]
        fn quantities_order_as_their_values(
            a in 0u64..1_000_000, b in 0u64..1_000_000, sa in 0usize..13, sb in 0usize..13,
        ) {
            // `a` thousandths with suffix index `sa` (12 = none): exact in u128.
            let suffix = |i: usize| QUANTITY_SUFFIXES.get(i).map_or(("", 1, 0), |s| *s);
            let text = |n: u64, i: usize| format!("{}.{:03}{}", n / 1000, n % 1000, suffix(i).0);
            let value = |n: u64, i: usize| {
                let (_, base, power) = suffix(i);
                u128::from(n) * u128::from(base).pow(power)
            };
            let parse = |t: String| Quantity::parse(&t).map_err(TestCaseError::fail);
            let (qa, qb) = (parse(text(a, sa))?, parse(text(b, sb))?);
            prop_assert_eq!(qa.cmp(&qb), value(a, sa).cmp(&value(b, sb)));
            prop_assert_eq!(qa == qb, value(a, sa) == value(b, sb));
        }

        #[test]
        fn quantities_show_their_value(n in any::<u64>()) {
            let q = Quantity::parse(&n.to_string()).map_err(TestCaseError::fail)?;
            prop_assert_eq!(q.to_string(), n.to_string());
        }

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
            let _ = Quantity::parse(&text);
        }
    }
}
