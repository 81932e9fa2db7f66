//! Five-field cron expressions (`minute hour day-of-month month day-of-week`, UTC).
//!
//! Supports `*`, numbers, ranges `a-b`, lists `a,b` and steps `*/n`, `a-b/n`. Day-of-month and
//! day-of-week combine like Vixie cron: when both are restricted, either may match.

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    dom: Vec<bool>,
    months: Vec<bool>,
    dow: Vec<bool>,
    dom_any: bool,
    dow_any: bool,
}

fn field(s: &str, lo: u32, hi: u32, what: &str) -> Result<Vec<bool>, String> {
    let mut set = vec![false; hi as usize + 1];
    for part in s.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => (
                r,
                st.parse::<u32>()
                    .map_err(|_| format!("bad step in {what} '{part}'"))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("step 0 in {what}"));
        }
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let p = |x: &str| x.parse::<u32>().map_err(|_| format!("bad {what} '{part}'"));
            (p(a)?, p(b)?)
        } else {
            let v = range
                .parse::<u32>()
                .map_err(|_| format!("bad {what} '{part}'"))?;
            (v, if part.contains('/') { hi } else { v })
        };
        if a < lo || b > hi || a > b {
            return Err(format!("{what} '{part}' out of range {lo}-{hi}"));
        }
        for v in (a..=b).step_by(step as usize) {
            set[v as usize] = true;
        }
    }
    Ok(set)
}

impl Cron {
    /// Parses a five-field expression.
    pub fn parse(s: &str) -> Result<Cron, String> {
        let f: Vec<&str> = s.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!(
                "cron needs 5 fields (minute hour day month weekday), got {}",
                f.len()
            ));
        }
        let mut dow = field(f[4], 0, 7, "day of week")?;
        if dow[7] {
            dow[0] = true;
        }
        Ok(Cron {
            minutes: field(f[0], 0, 59, "minute")?,
            hours: field(f[1], 0, 23, "hour")?,
            dom: field(f[2], 1, 31, "day of month")?,
            months: field(f[3], 1, 12, "month")?,
            dow,
            dom_any: f[2] == "*",
            dow_any: f[4] == "*",
        })
    }

    fn day_matches(&self, t: &DateTime<Utc>) -> bool {
        let d = self.dom[t.day() as usize];
        let w = self.dow[t.weekday().num_days_from_sunday() as usize];
        match (self.dom_any, self.dow_any) {
            (true, true) => true,
            (false, true) => d,
            (true, false) => w,
            (false, false) => d || w,
        }
    }

    /// The first matching minute strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut t = after.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        // A year and a bit of minutes covers every satisfiable expression.
        for _ in 0..(60 * 24 * 370) {
            if self.months[t.month() as usize]
                && self.day_matches(&t)
                && self.hours[t.hour() as usize]
                && self.minutes[t.minute() as usize]
            {
                return Some(t);
            }
            t += Duration::minutes(1);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

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
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "*/0 * * * *",
            "a * * * *",
            "5-1 * * * *",
        ] {
            assert!(Cron::parse(bad).is_err(), "{bad}");
        }
    }
}
