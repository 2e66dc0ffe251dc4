//! Go durations (`500ms`, `5s`, `1m30s`, `1.5h`, `0`) as Kubernetes and CoreDNS configuration
//! writes them: one parser for the proxy's `KubeProxyConfiguration` and the Corefile. Each
//! caller words its own error messages from [`GoDurationError`].

use std::time::Duration;

/// The longest Go duration: `time.Duration` is an `int64` of nanoseconds (about 292 years).
const MAX_SECONDS: f64 = i64::MAX as f64 / 1e9;

/// Why a text is not a Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum GoDurationError {
    /// The text is empty.
    #[error("empty duration")]
    Empty,
    /// The text starts with `-`.
    #[error("a negative duration is not allowed")]
    Negative,
    /// A number has no unit after it (`5`).
    #[error("missing unit")]
    MissingUnit,
    /// A unit or other character stands where a number should (`+5s`, `s`).
    #[error("expected a number before {0:?}")]
    MissingNumber(char),
    /// A number that does not parse (`1..5s`).
    #[error("bad number {0:?}")]
    BadNumber(String),
    /// A unit other than ns, us, µs, ms, s, m, h.
    #[error("unknown unit {0:?}")]
    UnknownUnit(String),
    /// Longer than Go's largest duration (about 292 years).
    #[error("longer than 2562047h")]
    TooLarge,
}

/// Parses a Go duration: `0`, or one or more `<number><unit>` (decimal fractions allowed) with
/// units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`. No surrounding spaces, no sign (Go accepts `+`
/// and `-`; configuration never needs a negative duration).
pub(crate) fn parse_go_duration(text: &str) -> Result<Duration, GoDurationError> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(GoDurationError::Empty);
    }
    if text.starts_with('-') {
        return Err(GoDurationError::Negative);
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or(GoDurationError::MissingUnit)?;
        let (num, tail) = rest.split_at(num_end);
        if num.is_empty() {
            return Err(GoDurationError::MissingNumber(
                tail.chars().next().unwrap_or_default(),
            ));
        }
        let value: f64 = num
            .parse()
            .map_err(|_| GoDurationError::BadNumber(num.to_string()))?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(GoDurationError::UnknownUnit(unit.to_string())),
        };
        total += value * scale;
        rest = next;
    }
    if !total.is_finite() || total > MAX_SECONDS {
        return Err(GoDurationError::TooLarge);
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_forms() {
        let ok = |t: &str| parse_go_duration(t).unwrap();
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("1h0m0s"), Duration::from_secs(3600));
        assert_eq!(ok("250us"), Duration::from_micros(250));
        assert_eq!(ok("250µs"), Duration::from_micros(250));
        assert_eq!(ok("10ns"), Duration::from_nanos(10));
        assert_eq!(ok("2562047h"), Duration::from_secs(2562047 * 3600));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        use GoDurationError::*;
        let err = |t: &str| parse_go_duration(t).unwrap_err();
        assert_eq!(err(""), Empty);
        assert_eq!(err("-5s"), Negative);
        assert_eq!(err("5"), MissingUnit);
        assert_eq!(err("1m5"), MissingUnit);
        assert_eq!(err("+5s"), MissingNumber('+'));
        assert_eq!(err("s"), MissingNumber('s'));
        assert_eq!(err("1..5s"), BadNumber("1..5".into()));
        assert_eq!(err("5d"), UnknownUnit("d".into()));
        assert_eq!(err(" 5s"), MissingNumber(' '));
        assert_eq!(err("2562048h"), TooLarge);
        assert_eq!(err(&format!("{}h", "9".repeat(400))), TooLarge);
    }
}
