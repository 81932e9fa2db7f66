//! Parsing points in time as users and tools write them.
//!
//! Why lenient: times are path components (`/at/2025-09-18T0200/`) typed by admins and generated
//! by scripts; `2025-09-18`, `2025-09-18T02:00`, `2025-09-18T02:00:00Z`, RFC 3339 with offsets,
//! colon-less times, `now` and `yesterday` all mean what they say. Times without a zone are UTC.
//! Everything else is an error (ENOENT in the mount), never a guess.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// Milliseconds since the Unix epoch, UTC: the resolution of snapshot times.
pub type TimeMs = i64;

/// Current time in ms.
pub fn now_ms() -> TimeMs {
    Utc::now().timestamp_millis()
}

/// Parses a point in time; `None` when it is not one.
pub fn parse_time(s: &str, now: TimeMs) -> Option<TimeMs> {
    let s = s.trim();
    match s {
        "now" | "latest" => return Some(now),
        "yesterday" => return Some(now - 86_400_000),
        _ => {}
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_millis());
    }
    let (body, zulu) = match s.strip_suffix(['Z', 'z']) {
        Some(b) => (b, true),
        None => (s, false),
    };
    let _ = zulu;
    if let Ok(d) = NaiveDate::parse_from_str(body, "%Y-%m-%d") {
        return Some(
            Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?)
                .timestamp_millis(),
        );
    }
    const FORMATS: &[&str] = &[
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H%M%S%.f",
        "%Y-%m-%dT%H%M%S",
        "%Y-%m-%dT%H%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ];
    for f in FORMATS {
        if let Ok(dt) = NaiveDateTime::parse_from_str(body, f) {
            return Some(Utc.from_utc_datetime(&dt).timestamp_millis());
        }
    }
    // RFC 3339 offsets without colons in the time part, e.g. 2025-09-18T0200+02:00.
    if let Some(pos) = body.rfind(['+', '-']).filter(|&p| p > 10) {
        let (t, off) = body.split_at(pos);
        let base = parse_time(t, now)?;
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let digits: String = off[1..].chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let h: i64 = digits[..2].parse().ok()?;
        let m: i64 = digits[2..].parse().ok()?;
        return Some(base - sign * (h * 60 + m) * 60_000);
    }
    None
}

/// The canonical name of a snapshot time: exact to the millisecond, so parsing it back selects
/// that very snapshot (`2025-09-18T02:00:00.123Z`; `.000` is omitted).
pub fn format_time(ms: TimeMs) -> String {
    let dt = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
    if ms.rem_euclid(1000) == 0 {
        dt.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let base = parse_time("2025-09-18T02:00:00Z", 0).unwrap();
        for s in [
            "2025-09-18T02:00",
            "2025-09-18T0200",
            "2025-09-18T02:00:00",
            "2025-09-18T02:00:00.000Z",
            "2025-09-18T04:00:00+02:00",
            "2025-09-18T0400+0200",
            "2025-09-17T21:00:00-05:00",
        ] {
            assert_eq!(parse_time(s, 0), Some(base), "{s}");
        }
        assert_eq!(parse_time("2025-09-18", 0), Some(base - 2 * 3_600_000));
        assert_eq!(parse_time("now", 42), Some(42));
        for bad in [
            "",
            "2025-13-01",
            "yesterdayish",
            "2025-09-18T25:00",
            "..",
            "abc",
        ] {
            assert_eq!(parse_time(bad, 0), None, "{bad}");
        }
    }

    #[test]
    fn format_roundtrips() {
        for ms in [0, 1_758_160_800_000, 1_758_160_800_123] {
            assert_eq!(parse_time(&format_time(ms), 0), Some(ms));
        }
    }
}
