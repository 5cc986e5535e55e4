//! Durations and sizes as written in the config file.

use std::time::Duration;

/// What a valid duration looks like, for error messages.
pub const DURATION_HINT: &str = "valid: a string like \"250ms\", \"30s\", \"10m\", \"24h\"";
/// What a valid size looks like, for error messages.
pub const SIZE_HINT: &str = "valid: an integer of bytes or a string like \"16MiB\"";

/// `"250ms"`, `"30s"`, `"10m"`, `"24h"`, `"1h 30m"` (humantime syntax).
pub fn parse_duration(value: &toml::Value) -> Result<Duration, String> {
    let Some(text) = value.as_str() else {
        return Err(format!(
            "expected a duration, found {}; {DURATION_HINT}",
            describe(value)
        ));
    };
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("bad duration {text:?} ({e}); {DURATION_HINT}"))
}

/// An integer of bytes, or a string: a number, optionally with a decimal
/// fraction, and a unit. Binary units (`KiB`, `MiB`, `GiB`, `TiB`) are
/// powers of 1024, decimal units (`kB`/`KB`, `MB`, `GB`, `TB`) powers of
/// 1000, and `B` (or no unit) is bytes. Unit case is ignored.
pub fn parse_size(value: &toml::Value) -> Result<u64, String> {
    match value {
        toml::Value::Integer(n) => u64::try_from(*n)
            .map_err(|_| format!("size must not be negative, found {n}; {SIZE_HINT}")),
        toml::Value::String(s) => parse_size_str(s),
        other => Err(format!(
            "expected a size, found {}; {SIZE_HINT}",
            describe(other)
        )),
    }
}

fn parse_size_str(text: &str) -> Result<u64, String> {
    let bad = || format!("bad size {text:?}; {SIZE_HINT}");
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(bad());
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "tb" | "t" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if frac_part.contains('.') {
        return Err(bad());
    }
    let int: u64 = int_part.parse().map_err(|_| bad())?;
    let mut total = int.checked_mul(multiplier).ok_or_else(bad)?;
    if !frac_part.is_empty() {
        // Exact integer arithmetic: "1.5MiB" = 1 MiB + 5 * MiB / 10.
        let digits = u32::try_from(frac_part.len()).map_err(|_| bad())?;
        let scale = 10u128.checked_pow(digits).ok_or_else(bad)?;
        let frac: u128 = frac_part.parse().map_err(|_| bad())?;
        let extra = frac * u128::from(multiplier);
        if !extra.is_multiple_of(scale) {
            return Err(format!(
                "size {text:?} is not a whole number of bytes; {SIZE_HINT}"
            ));
        }
        let extra = u64::try_from(extra / scale).map_err(|_| bad())?;
        total = total.checked_add(extra).ok_or_else(bad)?;
    }
    Ok(total)
}

/// A short description of a TOML value's type, for "found ..." messages.
pub fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("the string {s:?}"),
        toml::Value::Integer(n) => format!("the integer {n}"),
        toml::Value::Float(x) => format!("the float {x}"),
        toml::Value::Boolean(b) => format!("the boolean {b}"),
        toml::Value::Datetime(_) => "a datetime".to_string(),
        toml::Value::Array(_) => "an array".to_string(),
        toml::Value::Table(_) => "a table".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> toml::Value {
        toml::Value::String(text.to_string())
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration(&s("250ms")), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(&s("30s")), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration(&s("10m")), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration(&s("24h")), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration(&s("1h 30m")), Ok(Duration::from_secs(5_400)));
        for bad in ["", "ten seconds", "30", "-1s", "1x"] {
            let e = parse_duration(&s(bad));
            assert!(
                e.as_ref().is_err_and(|m| m.contains("\"30s\"")),
                "{bad}: {e:?}"
            );
        }
        assert!(parse_duration(&toml::Value::Integer(30)).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(&s("16MiB")), Ok(16 << 20));
        assert_eq!(parse_size(&s("512KiB")), Ok(512 << 10));
        assert_eq!(parse_size(&s("1GiB")), Ok(1 << 30));
        assert_eq!(parse_size(&s("10MB")), Ok(10_000_000));
        assert_eq!(parse_size(&s("1.5MiB")), Ok(3 << 19));
        assert_eq!(parse_size(&s("100")), Ok(100));
        assert_eq!(parse_size(&s("7 B")), Ok(7));
        assert_eq!(parse_size(&toml::Value::Integer(4096)), Ok(4096));
        for bad in [
            "",
            "MiB",
            "-1MiB",
            "1.MiB",
            "1.2.3MiB",
            "16 furlongs",
            "0.3B",
            "99999999999TiB",
        ] {
            let e = parse_size(&s(bad));
            assert!(
                e.as_ref().is_err_and(|m| m.contains(SIZE_HINT)),
                "{bad}: {e:?}"
            );
        }
        assert!(parse_size(&toml::Value::Integer(-1)).is_err_and(|m| m.contains(SIZE_HINT)));
        assert!(parse_size(&toml::Value::Float(1.5)).is_err());
    }
}
