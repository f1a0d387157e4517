//! Human-friendly units in the YAML file: durations (`250ms`, `2s`, `1m`,
//! `1h`) and sizes (`512B`, `64KiB`, `1MiB`).
//!
//! Both types are parsed while serde reads the value (a visitor, not a
//! conversion afterwards), so that a bad value is reported with its own
//! key path and line, like any other type error.

use serde::de::{self, Deserialize, Deserializer, Visitor};
use std::fmt;
use std::time::Duration;

/// A duration written with a unit: `ms`, `s`, `m` or `h` (`0` alone is allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

/// A byte size written with a unit: `B`, `KiB` or `MiB` (a bare number means bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

/// What YAML gives us for a unit-bearing value: a string, or a bare number.
enum UnitText {
    Text(String),
    Number(u64),
}

/// Reads a unit-bearing value and converts it with `convert` inside the
/// visitor, so that an error carries the value's key path and line.
struct UnitVisitor<T> {
    convert: fn(UnitText) -> Result<T, String>,
    expecting: &'static str,
}

impl<T> Visitor<'_> for UnitVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.convert)(UnitText::Text(v.to_string())).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
        (self.convert)(UnitText::Number(n)).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(E::custom(format!(
                "{n} is negative: expected {}",
                self.expecting
            ))),
        }
    }
}

macro_rules! unit_deserialize {
    ($ty:ty, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(UnitVisitor {
                    convert: <$ty>::try_from,
                    expecting: $expecting,
                })
            }
        }
    };
}

unit_deserialize!(Dur, "a duration such as 250ms, 2s, 1m or 1h");
unit_deserialize!(Size, "a size such as 512B, 64KiB or 1MiB");
unit_deserialize!(
    HedgeDelay,
    "a duration such as 50ms, or a percentile such as p95"
);

impl TryFrom<UnitText> for Dur {
    type Error = String;
    fn try_from(v: UnitText) -> Result<Self, String> {
        match v {
            UnitText::Number(0) => Ok(Dur(Duration::ZERO)),
            UnitText::Number(n) => Err(format!(
                "duration {n} has no unit: write {n}s or {n}ms (units: ms, s, m, h)"
            )),
            UnitText::Text(s) => parse_duration(&s).map(Dur),
        }
    }
}

/// `race.hedge_delay`: a duration, or `pNN` (the pool's recent
/// response-head latency at that percentile, 1 to 99).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeDelay {
    /// A fixed delay.
    Fixed(Duration),
    /// A percentile of recent latency.
    Percentile(u8),
}

impl TryFrom<UnitText> for HedgeDelay {
    type Error = String;
    fn try_from(v: UnitText) -> Result<Self, String> {
        if let UnitText::Text(s) = &v {
            if let Some(n) = s.trim().strip_prefix('p') {
                return match n.parse::<u8>() {
                    Ok(p @ 1..=99) => Ok(HedgeDelay::Percentile(p)),
                    _ => Err(format!(
                        "{s:?} is not a percentile: write p50, p90, p95 or p99 (p1 to p99)"
                    )),
                };
            }
        }
        Dur::try_from(v).map(|d| HedgeDelay::Fixed(d.0))
    }
}

impl TryFrom<UnitText> for Size {
    type Error = String;
    fn try_from(v: UnitText) -> Result<Self, String> {
        match v {
            UnitText::Number(n) => Ok(Size(n)),
            UnitText::Text(s) => parse_size(&s).map(Size),
        }
    }
}

/// Parses `250ms`, `2s`, `1.5s`, `1m`, `1h` or `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration {t:?} has no unit (units: ms, s, m, h)"))?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{t:?} is not a duration like 250ms, 2s, 1m, 1h"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {t:?} (units: ms, s, m, h)"
            ))
        }
    };
    if !secs.is_finite() || secs > 365.0 * 86400.0 {
        return Err(format!("duration {t:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `512B`, `64KiB`, `1MiB` or a bare number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{t:?} is not a size like 512B, 64KiB, 1MiB"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1024,
        "MiB" | "M" | "MB" => 1024 * 1024,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {t:?} (units: B, KiB, MiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {t:?} is out of range"))
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "1", "-1s", "1x", "abc", "1e3s", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("10").unwrap(), 10);
        assert!(parse_size("1GiB").is_err());
        assert!(parse_size("KiB").is_err());
    }
}
