//! BIRD's time columns, in UTC: `since` is a time of day when under 20 hours old and a date
//! otherwise; BIRD 2 adds milliseconds.

use crate::model::Timestamp;
use crate::Dialect;

/// (year, month, day, seconds of the day, milliseconds) of a unix-milliseconds time.
fn civil(t: Timestamp) -> (i64, u32, u32, u64, u64) {
    let secs = t.0 / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs % 86_400, t.0 % 1000)
}

fn time_of_day(t: Timestamp, dialect: Dialect) -> String {
    let (_, _, _, s, ms) = civil(t);
    let hms = format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60);
    match dialect {
        Dialect::Bird1 => hms,
        Dialect::Bird2 => format!("{hms}.{ms:03}"),
    }
}

fn date(t: Timestamp) -> String {
    let (y, m, d, _, _) = civil(t);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD HH:MM:SS[.mmm]` (`show status`).
pub fn datetime(t: Timestamp, dialect: Dialect) -> String {
    format!("{} {}", date(t), time_of_day(t, dialect))
}

/// The `since` column: the time of day if `t` is under 20 hours before `now`, else the date.
pub fn since(t: Timestamp, now: Timestamp, dialect: Dialect) -> String {
    if now.0.saturating_sub(t.0) < 20 * 3600 * 1000 {
        time_of_day(t, dialect)
    } else {
        date(t)
    }
}

/// A timer as `left/period`: whole seconds in BIRD 1.6, with milliseconds in BIRD 2.
pub fn timer(remaining_ms: u64, period_s: u64, dialect: Dialect) -> String {
    match dialect {
        Dialect::Bird1 => format!("{}/{period_s}", remaining_ms / 1000),
        Dialect::Bird2 => format!(
            "{}.{:03}/{period_s}",
            remaining_ms / 1000,
            remaining_ms % 1000
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_dates_print_as_bird_does() {
        // 2026-12-01 21:43:31.182 UTC
        let t = Timestamp(1_796_161_411_182);
        assert_eq!(datetime(t, Dialect::Bird2), "2026-12-01 21:43:31.182");
        assert_eq!(datetime(t, Dialect::Bird1), "2026-12-01 21:43:31");
        assert_eq!(since(t, Timestamp(t.0 + 1000), Dialect::Bird1), "21:43:31");
        let later = Timestamp(t.0 + 21 * 3600 * 1000);
        assert_eq!(since(t, later, Dialect::Bird2), "2026-12-01");
        assert_eq!(timer(186_782, 240, Dialect::Bird2), "186.782/240");
        assert_eq!(timer(186_782, 240, Dialect::Bird1), "186/240");
    }
}
