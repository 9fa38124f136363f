//! The flags' value parsers: each checks one value's syntax and range, so that a bad
//! value is a one-line error (exit 2) naming its flag, never a panic later.

use std::time::Duration;

use super::{
    MAX_BUFFER_SIZE, MAX_CAPACITY, MAX_CONNECTIONS, MAX_DURATION, MAX_HISTORY_MEMORY, MAX_HISTORY_SIZE,
    MAX_MESSAGE_SIZE,
};

/// Parses a channel capacity: a whole number from 1 to [`MAX_CAPACITY`].
pub(super) fn parse_capacity(s: &str) -> Result<usize, String> {
    parse_in_range(s, 1, MAX_CAPACITY)
}

pub(super) fn parse_max_connections(s: &str) -> Result<usize, String> {
    parse_in_range(s, 1, MAX_CONNECTIONS)
}

/// Parses `--history-size`: a whole number from 0 (off) to [`MAX_HISTORY_SIZE`].
pub(super) fn parse_history_size(s: &str) -> Result<usize, String> {
    parse_in_range(s, 0, MAX_HISTORY_SIZE)
}

/// Parses `--history-memory`: a byte size up to [`MAX_HISTORY_MEMORY`].
pub(super) fn parse_history_memory(s: &str) -> Result<usize, String> {
    parse_size(s, MAX_HISTORY_MEMORY)
}

fn parse_in_range(s: &str, min: usize, max: usize) -> Result<usize, String> {
    let n: usize = s.trim().parse().map_err(|_| format!("'{s}' is not a whole number"))?;
    if n < min || n > max {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(n)
}

/// Parses a leeway or a drain: a duration from zero to [`MAX_DURATION`].
pub(super) fn parse_leeway(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("'{s}': {e}"))?;
    if d > MAX_DURATION {
        return Err("must be at most 24h".to_owned());
    }
    Ok(d)
}

/// Parses a duration such as "5s" or "250ms": above zero and at most [`MAX_DURATION`].
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("'{s}': {e}"))?;
    if d.is_zero() || d > MAX_DURATION {
        return Err("must be above zero and at most 24h".to_owned());
    }
    Ok(d)
}

pub(super) fn parse_message_size(s: &str) -> Result<usize, String> {
    parse_size(s, MAX_MESSAGE_SIZE)
}

pub(super) fn parse_buffer_size(s: &str) -> Result<usize, String> {
    parse_size(s, MAX_BUFFER_SIZE)
}

/// Parses a byte size: a whole number with an optional binary unit (`B`, `K`/`KiB`,
/// `M`/`MiB`, `G`/`GiB`, any case), from 1 to `max`.
fn parse_size(s: &str, max: usize) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = (t.get(..split).unwrap_or(""), t.get(split..).unwrap_or("").trim());
    let n: usize =
        digits.parse().map_err(|_| format!("'{s}' is not a size such as 65536, 64KiB or 16MiB"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        _ => return Err(format!("'{unit}' is not a unit (use B, KiB, MiB or GiB)")),
    };
    let bytes = n.checked_shl(shift).filter(|b| b.checked_shr(shift) == Some(n));
    match bytes {
        Some(b) if (1..=max).contains(&b) => Ok(b),
        _ => Err(format!("must be between 1 byte and {} MiB", max >> 20)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_are_bounded() {
        assert_eq!(parse_capacity("1"), Ok(1));
        assert!(parse_capacity("0").is_err());
        assert!(parse_capacity("-3").is_err());
        assert!(parse_capacity(&(MAX_CAPACITY + 1).to_string()).is_err());
    }

    #[test]
    fn durations_are_bounded() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("25h").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes_parse_with_units_and_are_bounded() {
        assert_eq!(parse_size("65536", MAX_MESSAGE_SIZE), Ok(65536));
        assert_eq!(parse_size("64KiB", MAX_MESSAGE_SIZE), Ok(65536));
        assert_eq!(parse_size("16m", MAX_MESSAGE_SIZE), Ok(16 << 20));
        assert!(parse_size("0", MAX_MESSAGE_SIZE).is_err());
        assert!(parse_size("2GiB", MAX_MESSAGE_SIZE).is_err());
        assert!(parse_size("99999999999999999999G", MAX_MESSAGE_SIZE).is_err());
        assert!(parse_size("18446744073709551615G", MAX_MESSAGE_SIZE).is_err());
        assert!(parse_size("12 parsecs", MAX_MESSAGE_SIZE).is_err());
    }
}
