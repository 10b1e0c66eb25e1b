//! Exact conversion between decimal strings (the API edge) and integer base
//! units (the engine). Nothing is ever rounded: a value that does not fit the
//! asset's decimals, is negative, or overflows u64 is an error that says so.
//! Accepts the forms real clients send: "0.1", "0.10000000", "31000.0",
//! ".5", "1e-05" (Python floats), "+1".

use rust_decimal::Decimal;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("empty value")]
    Empty,
    #[error("not a decimal number")]
    Invalid,
    #[error("negative value")]
    Negative,
    #[error("too many decimal places (at most {max})")]
    TooManyDecimals { max: u32 },
    #[error("value too large")]
    Overflow,
    #[error("value is not a multiple of the step {step}")]
    NotOnStep { step: String },
}

/// 10^n as u64 (n <= 19).
pub const fn pow10(n: u32) -> u64 {
    let mut v = 1u64;
    let mut i = 0;
    while i < n {
        v *= 10;
        i += 1;
    }
    v
}

/// Parse an exact, non-negative decimal (the forms [`parse_units`] accepts).
pub fn parse_decimal(s: &str) -> Result<Decimal, DecimalError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(DecimalError::Empty);
    }
    if s.len() > 64 {
        // Nothing sane is that long; refuse before the parser sees it.
        return Err(DecimalError::Overflow);
    }
    if !s
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        return Err(DecimalError::Invalid);
    }
    let d = if s.contains(['e', 'E']) {
        Decimal::from_scientific(s).map_err(|e| classify(&e.to_string()))?
    } else {
        let body = s.strip_prefix('+').unwrap_or(s);
        if body.starts_with(['+', '-']) && s.starts_with('+') {
            return Err(DecimalError::Invalid);
        }
        Decimal::from_str_exact(body).map_err(|e| classify(&e.to_string()))?
    };
    if d.is_sign_negative() && !d.is_zero() {
        return Err(DecimalError::Negative);
    }
    Ok(d)
}

fn classify(msg: &str) -> DecimalError {
    if msg.contains("overflow") || msg.contains("too large") || msg.contains("exceeds") {
        DecimalError::Overflow
    } else if msg.contains("fractional") || msg.contains("precision") || msg.contains("scale") {
        DecimalError::TooManyDecimals { max: 28 }
    } else {
        DecimalError::Invalid
    }
}

/// Parse `s` into base units with `decimals` decimal places, exactly.
pub fn parse_units(s: &str, decimals: u32) -> Result<u64, DecimalError> {
    let d = parse_decimal(s)?;
    decimal_to_units(d, decimals)
}

/// Convert an exact decimal into base units with `decimals` places.
pub fn decimal_to_units(d: Decimal, decimals: u32) -> Result<u64, DecimalError> {
    if d.is_sign_negative() && !d.is_zero() {
        return Err(DecimalError::Negative);
    }
    let d = d.normalize();
    if d.scale() > decimals {
        return Err(DecimalError::TooManyDecimals { max: decimals });
    }
    let mantissa = d.mantissa(); // i128, value = mantissa / 10^scale
    let factor = 10i128.pow(decimals - d.scale());
    let units = mantissa.checked_mul(factor).ok_or(DecimalError::Overflow)?;
    u64::try_from(units).map_err(|_| DecimalError::Overflow)
}

/// Parse `s` as a multiple of `step_units` (base units with `decimals`
/// places); returns the value in base units.
pub fn parse_on_step(s: &str, decimals: u32, step_units: u64) -> Result<u64, DecimalError> {
    let units = parse_units(s, decimals).map_err(|e| match e {
        // More decimals than the asset has can never be on the step grid.
        DecimalError::TooManyDecimals { .. } => DecimalError::NotOnStep {
            step: format_units(step_units, decimals),
        },
        other => other,
    })?;
    if step_units > 1 && units % step_units != 0 {
        return Err(DecimalError::NotOnStep {
            step: format_units(step_units, decimals),
        });
    }
    Ok(units)
}

/// Format base units as a decimal string with exactly `decimals` places
/// (Binance style, e.g. "0.00100000").
pub fn format_units(units: u64, decimals: u32) -> String {
    format_units_u128(u128::from(units), decimals)
}

/// Same as [`format_units`] for u128 intermediate values.
pub fn format_units_u128(units: u128, decimals: u32) -> String {
    let mut out = String::with_capacity(24);
    push_units(&mut out, units, decimals);
    out
}

/// Appends [`format_units_u128`]`(units, decimals)` to `out`, without the
/// `fmt` machinery: every order reply, execution report and ledger row
/// formats several amounts, and this is several times faster than
/// `format!("{int}.{frac:0width$}")`.
pub fn push_units(out: &mut String, units: u128, decimals: u32) {
    // u128::MAX has 39 digits.
    let mut buf = [0u8; 39];
    let mut first = buf.len();
    // u128 division is a library call per digit: only the digits above
    // u64::MAX take it, the rest (every amount of a u64 balance) is u64.
    let mut wide = units;
    while wide > u128::from(u64::MAX) {
        first -= 1;
        buf[first] = b'0' + (wide % 10) as u8;
        wide /= 10;
    }
    let mut n = wide as u64;
    loop {
        first -= 1;
        buf[first] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let digits = &buf[first..];
    let decimals = decimals as usize;
    if decimals == 0 {
        push_ascii(out, digits);
    } else if digits.len() > decimals {
        let (int, frac) = digits.split_at(digits.len() - decimals);
        push_ascii(out, int);
        out.push('.');
        push_ascii(out, frac);
    } else {
        const ZEROS: &str = "0000000000000000000000000000000000000000";
        out.push_str("0.");
        let mut pad = decimals - digits.len();
        while pad > 0 {
            let n = pad.min(ZEROS.len());
            out.push_str(&ZEROS[..n]);
            pad -= n;
        }
        push_ascii(out, digits);
    }
}

/// Appends ASCII digits in one copy (not char by char).
fn push_ascii(out: &mut String, digits: &[u8]) {
    out.push_str(std::str::from_utf8(digits).unwrap_or_default());
}

/// Base units as an exact `Decimal` (for SQL NUMERIC and JSON edges).
pub fn units_to_decimal(units: u64, decimals: u32) -> Decimal {
    Decimal::from_i128_with_scale(units as i128, decimals)
}

/// Parse a fee rate such as "0.001" into units of 1e-8.
pub fn parse_fee_rate(s: &str) -> Result<u64, DecimalError> {
    let v = parse_units(s, 8)?;
    if v > crate::types::FEE_RATE_SCALE {
        return Err(DecimalError::Overflow);
    }
    Ok(v)
}

impl FromStr for crate::types::Qty {
    type Err = DecimalError;
    /// Parses an integer count of base units (not a decimal amount).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<u64>()
            .map(crate::types::Qty)
            .map_err(|_| DecimalError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_format_like_fmt_does() {
        let reference = |units: u128, d: u32| {
            if d == 0 {
                return units.to_string();
            }
            let scale = 10u128.pow(d);
            format!("{}.{:0w$}", units / scale, units % scale, w = d as usize)
        };
        assert_eq!(format_units(0, 8), "0.00000000");
        assert_eq!(format_units(1, 8), "0.00000001");
        assert_eq!(format_units(150_000_000, 8), "1.50000000");
        assert_eq!(format_units(42, 0), "42");
        assert_eq!(format_units(0, 0), "0");
        assert_eq!(format_units(u64::MAX, 19), "1.8446744073709551615");
        assert_eq!(format_units_u128(u128::MAX, 0), u128::MAX.to_string());
        let mut x: u128 = 0x9e37_79b9_7f4a_7c15;
        for d in 0..=38u32 {
            for units in [0, 1, 9, 10, 99, 12_345, u128::from(u64::MAX), u128::MAX, x] {
                assert_eq!(
                    format_units_u128(units, d),
                    reference(units, d),
                    "{units} {d}"
                );
            }
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
        }
        let mut s = String::from("x=");
        push_units(&mut s, 5, 255);
        assert_eq!(s.len(), 2 + 2 + 255);
        assert!(s.starts_with("x=0.000") && s.ends_with('5'));
    }

    #[test]
    fn parses_client_forms_exactly() {
        assert_eq!(parse_units("1", 8), Ok(100_000_000));
        assert_eq!(parse_units("0.1", 8), Ok(10_000_000));
        assert_eq!(parse_units("0.10000000", 8), Ok(10_000_000));
        assert_eq!(parse_units("0.100000000000", 8), Ok(10_000_000));
        assert_eq!(parse_units("31000.0", 8), Ok(3_100_000_000_000));
        assert_eq!(parse_units("1e-05", 8), Ok(1_000));
        assert_eq!(parse_units("1E2", 0), Ok(100));
        assert_eq!(parse_units(".5", 1), Ok(5));
        assert_eq!(parse_units("+2", 0), Ok(2));
        assert_eq!(parse_units("0", 8), Ok(0));
        assert_eq!(parse_units("-0", 8), Ok(0));
    }

    #[test]
    fn rejects_bad_values_clearly() {
        assert_eq!(parse_units("", 8), Err(DecimalError::Empty));
        assert_eq!(parse_units("   ", 8), Err(DecimalError::Empty));
        assert_eq!(parse_units("abc", 8), Err(DecimalError::Invalid));
        assert_eq!(parse_units("NaN", 8), Err(DecimalError::Invalid));
        assert_eq!(parse_units("inf", 8), Err(DecimalError::Invalid));
        assert_eq!(parse_units("1.2.3", 8), Err(DecimalError::Invalid));
        assert_eq!(parse_units("１", 8), Err(DecimalError::Invalid));
        assert_eq!(parse_units("-1", 8), Err(DecimalError::Negative));
        assert_eq!(parse_units("-0.5", 8), Err(DecimalError::Negative));
        assert_eq!(
            parse_units("0.000000001", 8),
            Err(DecimalError::TooManyDecimals { max: 8 })
        );
        assert_eq!(
            parse_units("1000000000000000000000000000000", 8),
            Err(DecimalError::Overflow)
        );
        assert_eq!(
            parse_units("184467440737.09551616", 8),
            Err(DecimalError::Overflow)
        );
        assert_eq!(parse_units("184467440737.09551615", 8), Ok(u64::MAX));
        assert!(parse_units("1e400", 8).is_err());
        assert!(parse_units("--1", 8).is_err());
        assert!(parse_units("+-1", 8).is_err());
    }

    #[test]
    fn step_grid() {
        assert_eq!(parse_on_step("0.001", 8, 1_000), Ok(100_000));
        assert!(matches!(
            parse_on_step("0.000015", 8, 1_000),
            Err(DecimalError::NotOnStep { .. })
        ));
        assert!(matches!(
            parse_on_step("0.000000001", 8, 1_000),
            Err(DecimalError::NotOnStep { .. })
        ));
    }

    #[test]
    fn formats() {
        assert_eq!(format_units(100_000, 8), "0.00100000");
        assert_eq!(format_units(3_100_000_000_000, 8), "31000.00000000");
        assert_eq!(format_units(7, 0), "7");
        assert_eq!(
            format_units_u128(u128::from(u64::MAX) + 1, 8),
            "184467440737.09551616"
        );
        assert_eq!(units_to_decimal(150, 2).to_string(), "1.50");
    }

    #[test]
    fn fee_rate() {
        assert_eq!(parse_fee_rate("0.001"), Ok(100_000));
        assert_eq!(parse_fee_rate("1"), Ok(100_000_000));
        assert!(parse_fee_rate("1.1").is_err());
    }
}
