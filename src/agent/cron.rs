//! Five-field cron expressions (`minute hour day-of-month month day-of-week`, UTC), parsed and
//! evaluated by the `croner` crate.
//!
//! Why a crate: calendar arithmetic (month lengths, leap years, weekday rules) is where
//! hand-written schedulers go wrong, and the old scanner here walked minute by minute through
//! a year. `croner` follows Vixie cron: `*`, numbers, ranges `a-b`, lists `a,b`, steps `*/n`
//! and `a-b/n`, names (`MON`, `JAN`), Sunday as 0 or 7, and day-of-month and day-of-week
//! combined with OR when both are restricted. Seconds and years are refused, so the config
//! syntax stays the classic five fields.

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};

/// A parsed schedule (boxed: croner's pattern is ~300 bytes, carried in every `Schedule`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron(Box<croner::Cron>);

impl Cron {
    /// Parses a five-field expression; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Cron, String> {
        let fields = s.split_whitespace().count();
        if fields != 5 && !s.trim_start().starts_with('@') {
            return Err(format!(
                "cron needs 5 fields (minute hour day month weekday), got {fields}"
            ));
        }
        // An empty list item (",5", "1,,2") means nothing; croner accepts some and then
        // searches its whole range for a match that never comes (0.4 s per parse).
        if s.split_whitespace()
            .any(|f| !f.starts_with('@') && f.split(',').any(str::is_empty))
        {
            return Err(format!("cron \"{s}\" has an empty list item"));
        }
        CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(s)
            .map(|c| Cron(Box::new(c)))
            .map_err(|e| e.to_string())
            .and_then(|c| match c.next_after(Utc::now()) {
                // `0 0 30 2 *` parses but would silently never run.
                None => Err("the expression never matches a date".into()),
                Some(_) => Ok(c),
            })
    }

    /// The first matching minute strictly after `after`, or `None` if there is none.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.find_next_occurrence(&after, false).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn empty_list_items_are_refused_at_once() {
        // Found by the agent_config fuzz target (fuzz/regressions/agent_config/): croner took
        // ", 4 * * *" and searched ~0.4 s (13 s under the fuzzer) for its next match on every
        // parse, and the agent parses its schedules again at every wake-up.
        for bad in [", 4 * * *", "0,,5 4 * * *", "0 4, * * *", "0 4 * * ,MON"] {
            let t = std::time::Instant::now();
            let e = Cron::parse(bad).unwrap_err();
            assert!(e.contains("empty"), "{bad}: {e}");
            assert!(t.elapsed() < std::time::Duration::from_millis(50), "{bad}");
        }
        assert!(Cron::parse("0,30 4 * * MON,FRI").is_ok());
    }

    #[test]
    fn schedules() {
        let t = Utc.with_ymd_and_hms(2025, 9, 18, 2, 7, 30).unwrap();
        let c = Cron::parse("*/15 * * * *").unwrap();
        assert_eq!(
            c.next_after(t).unwrap(),
            Utc.with_ymd_and_hms(2025, 9, 18, 2, 15, 0).unwrap()
        );
        let c = Cron::parse("0 3 * * *").unwrap();
        assert_eq!(
            c.next_after(t).unwrap(),
            Utc.with_ymd_and_hms(2025, 9, 18, 3, 0, 0).unwrap()
        );
        let c = Cron::parse("30 1 * * 0").unwrap(); // Sundays
        assert_eq!(
            c.next_after(t).unwrap(),
            Utc.with_ymd_and_hms(2025, 9, 21, 1, 30, 0).unwrap()
        );
        assert_eq!(Cron::parse("30 1 * * 7").unwrap(), c); // Sunday is also 7
                                                           // Day of month OR day of week when both are restricted: the 1st, or a Monday.
        let c = Cron::parse("0 0 1 * 1").unwrap();
        assert_eq!(
            c.next_after(t).unwrap(),
            Utc.with_ymd_and_hms(2025, 9, 22, 0, 0, 0).unwrap()
        );
        // Leap days, ranges with steps, exactly on a match (strictly after).
        let c = Cron::parse("0 12 29 2 *").unwrap();
        assert_eq!(
            c.next_after(t).unwrap(),
            Utc.with_ymd_and_hms(2028, 2, 29, 12, 0, 0).unwrap()
        );
        let c = Cron::parse("10-50/20 * * * *").unwrap();
        let on = Utc.with_ymd_and_hms(2025, 9, 18, 2, 30, 0).unwrap();
        assert_eq!(
            c.next_after(on).unwrap(),
            Utc.with_ymd_and_hms(2025, 9, 18, 2, 50, 0).unwrap()
        );
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "*/0 * * * *",
            "a * * * *",
            "5-1 * * * *",
            "0 0 * * * *",
            "0 0 30 2 *",
        ] {
            assert!(Cron::parse(bad).is_err(), "{bad}");
        }
    }
}
