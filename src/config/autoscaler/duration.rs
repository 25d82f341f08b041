//! Go's `time.ParseDuration` syntax (`"1h30m"`, `"20m0s"`, `"1.5s"`, `"300ms"`), which GitLab
//! Runner uses for every interval of `[runners.autoscaler]`.

use std::time::Duration;

/// Parses a non-negative Go duration; `None` when it is not one.
pub fn parse_go(text: &str) -> Option<Duration> {
    let s = text.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return None;
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * nanos_per;
    }
    (total.is_finite() && total < u64::MAX as f64).then(|| Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_go_does() {
        let secs = Duration::from_secs;
        assert_eq!(parse_go("1m"), Some(secs(60)));
        assert_eq!(parse_go("20m0s"), Some(secs(1200)));
        assert_eq!(parse_go("1h30m"), Some(secs(5400)));
        assert_eq!(parse_go("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_go("0"), Some(Duration::ZERO));
        for bad in ["", "5", "1d", "-1m", "m", "1m x", "1..5s"] {
            assert_eq!(parse_go(bad), None, "{bad:?}");
        }
    }
}
