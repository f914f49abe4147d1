//! Durations in the config file (`500ms`, `2m`, `1h30m`, `21d`).

use super::*;

/// Parses `500ms`, `15s`, `2m`, `1h30m`, `1.5h`, `21d`: one or more `<number><unit>` with no
/// spaces; units `ms`, `s`, `m`, `h`, `d` (case-sensitive). Negative values, missing units and
/// values above [`MAX_DURATION`] are errors. The error is a reason without the value.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("empty".to_string());
    }
    if text.starts_with('-') {
        return Err("must not be negative".to_string());
    }
    if text.chars().any(char::is_whitespace) {
        return Err("must not contain spaces".to_string());
    }
    const MS: u128 = 1_000_000;
    const S: u128 = 1_000 * MS;
    let max = MAX_DURATION.as_nanos();
    let bytes = text.as_bytes();
    let mut total: u128 = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Every index below only ever advances over ASCII bytes, so slices are on boundaries.
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let int_digits = &text[start..i];
        let mut frac_digits = "";
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let frac_start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            frac_digits = &text[frac_start..i];
            if frac_digits.is_empty() {
                return Err("expected digits after \".\"".to_string());
            }
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            let rest: String = text[start..].chars().take(20).collect();
            return Err(if start == 0 {
                format!("expected a number at {}", quote(&rest))
            } else {
                format!("unexpected {}", quote(&rest))
            });
        }
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &text[unit_start..i];
        let unit_ns = match unit {
            "ms" => MS,
            "s" => S,
            "m" => 60 * S,
            "h" => 3_600 * S,
            "d" => 86_400 * S,
            "" if i < bytes.len() => {
                let rest: String = text[i..].chars().take(20).collect();
                return Err(format!("unexpected {}", quote(&rest)));
            }
            "" => {
                return Err(format!(
                    "missing unit after {}",
                    quote_number(&text[start..i])
                ));
            }
            other => return Err(format!("unknown unit {}", quote(other))),
        };
        if int_digits.len() > 20 || frac_digits.len() > 20 {
            return Err("too many digits".to_string());
        }
        let int: u128 = if int_digits.is_empty() {
            0
        } else {
            int_digits
                .parse()
                .map_err(|_| "too many digits".to_string())?
        };
        let mut part = int.checked_mul(unit_ns).ok_or_else(too_large_message)?;
        if !frac_digits.is_empty() {
            let frac: u128 = frac_digits
                .parse()
                .map_err(|_| "too many digits".to_string())?;
            let scale = 10u128.pow(u32::try_from(frac_digits.len()).unwrap_or(20));
            part = part
                .checked_add(frac.saturating_mul(unit_ns) / scale)
                .ok_or_else(too_large_message)?;
        }
        total = total.checked_add(part).ok_or_else(too_large_message)?;
        if total > max {
            return Err(too_large_message());
        }
    }
    let nanos = u64::try_from(total).map_err(|_| too_large_message())?;
    Ok(Duration::from_nanos(nanos))
}

pub(super) fn too_large_message() -> String {
    format!("too large (at most {})", format_duration(MAX_DURATION))
}

/// The compact form [`parse_duration`] reads back: `2m`, `21d`, `1h30m`, `500ms`, `1.5ms`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    const S: u128 = 1_000_000_000;
    let mut ns = d.as_nanos();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400 * S), ("h", 3_600 * S), ("m", 60 * S), ("s", S)] {
        let n = ns / size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            ns %= size;
        }
    }
    if ns > 0 {
        let ms = ns / 1_000_000;
        let rest = ns % 1_000_000;
        if rest == 0 {
            out.push_str(&format!("{ms}ms"));
        } else {
            let frac = format!("{rest:06}");
            out.push_str(&format!("{ms}.{}ms", frac.trim_end_matches('0')));
        }
    }
    out
}
