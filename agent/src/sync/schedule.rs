//! When the backup pulls by itself: every N minutes (counted from the start of the last
//! sync), daily at a time, or weekly on a day at a time, all in UTC.
//!
//! ```json
//! {"every_minutes": 60}
//! {"daily_at": "02:30"}
//! {"weekly": {"day": "sunday", "at": "03:00"}}
//! ```

use serde::{Deserialize, Serialize};

/// At most a week between interval syncs.
pub const MAX_EVERY_MINUTES: u32 = 7 * 24 * 60;
const DAY: u64 = 86_400;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    EveryMinutes(EveryMinutes),
    DailyAt(TimeOfDay),
    Weekly(Weekly),
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::EveryMinutes(EveryMinutes(60))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weekly {
    pub day: Weekday,
    pub at: TimeOfDay,
}

/// 1 to [`MAX_EVERY_MINUTES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct EveryMinutes(u32);

impl TryFrom<u32> for EveryMinutes {
    type Error = String;
    fn try_from(n: u32) -> Result<Self, String> {
        if (1..=MAX_EVERY_MINUTES).contains(&n) {
            Ok(EveryMinutes(n))
        } else {
            Err(format!(
                "every_minutes must be between 1 and {MAX_EVERY_MINUTES}, not {n}"
            ))
        }
    }
}

impl From<EveryMinutes> for u32 {
    fn from(e: EveryMinutes) -> u32 {
        e.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl Weekday {
    /// Monday is 0.
    fn index(self) -> u64 {
        self as u64
    }
}

/// `HH:MM`, UTC, 00:00 to 23:59.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeOfDay {
    hour: u8,
    minute: u8,
}

impl TimeOfDay {
    fn seconds(self) -> u64 {
        u64::from(self.hour) * 3600 + u64::from(self.minute) * 60
    }
}

impl TryFrom<String> for TimeOfDay {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("a time of day is \"HH:MM\" (UTC, 00:00 to 23:59), not {s:?}");
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let hour: u8 = h.parse().map_err(|_| bad())?;
        let minute: u8 = m.parse().map_err(|_| bad())?;
        if hour > 23 || minute > 59 || !s.bytes().all(|b| b.is_ascii_digit() || b == b':') {
            return Err(bad());
        }
        Ok(TimeOfDay { hour, minute })
    }
}

impl From<TimeOfDay> for String {
    fn from(t: TimeOfDay) -> String {
        format!("{:02}:{:02}", t.hour, t.minute)
    }
}

impl Schedule {
    /// The next time (Unix seconds) a sync is due, given the current time and when the
    /// last sync started (`None`: never; the first one is the caller's business).
    pub fn next(self, now: u64, last_start: Option<u64>) -> u64 {
        match self {
            Schedule::EveryMinutes(EveryMinutes(n)) => match last_start {
                Some(last) => last + u64::from(n) * 60,
                None => now,
            },
            Schedule::DailyAt(at) => {
                let today = now - now % DAY + at.seconds();
                if today > now {
                    today
                } else {
                    today + DAY
                }
            }
            Schedule::Weekly(Weekly { day, at }) => {
                let days = now / DAY;
                // 1970-01-01 was a Thursday (index 3).
                let weekday = (days + 3) % 7;
                let ahead = (day.index() + 7 - weekday) % 7;
                let candidate = (days + ahead) * DAY + at.seconds();
                if candidate > now {
                    candidate
                } else {
                    candidate + 7 * DAY
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Schedule, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    // 2026-12-03 (a Thursday) 10:00:00 UTC.
    const THU_10: u64 = 1_796_292_000;

    #[test]
    fn the_reference_time_is_a_thursday_at_ten() {
        assert_eq!(THU_10 % DAY, 10 * 3600);
        assert_eq!((THU_10 / DAY + 3) % 7, 3);
    }

    #[test]
    fn daily_is_later_today_or_tomorrow() {
        let s = parse(r#"{"daily_at": "14:30"}"#).unwrap();
        assert_eq!(s.next(THU_10, None), THU_10 + 4 * 3600 + 1800);
        let s = parse(r#"{"daily_at": "02:00"}"#).unwrap();
        assert_eq!(s.next(THU_10, None), THU_10 + 16 * 3600);
        let s = parse(r#"{"daily_at": "10:00"}"#).unwrap();
        assert_eq!(
            s.next(THU_10, Some(THU_10)),
            THU_10 + DAY,
            "not twice at 10:00"
        );
    }

    #[test]
    fn weekly_finds_the_next_such_day() {
        let at = |json: &str| parse(json).unwrap().next(THU_10, None);
        assert_eq!(
            at(r#"{"weekly": {"day": "sunday", "at": "03:00"}}"#),
            THU_10 + 3 * DAY - 7 * 3600
        );
        assert_eq!(
            at(r#"{"weekly": {"day": "thursday", "at": "11:00"}}"#),
            THU_10 + 3600,
            "later the same day"
        );
        assert_eq!(
            at(r#"{"weekly": {"day": "thursday", "at": "09:59"}}"#),
            THU_10 + 7 * DAY - 60,
            "passed today: next week"
        );
        assert_eq!(
            at(r#"{"weekly": {"day": "monday", "at": "00:00"}}"#),
            THU_10 + 4 * DAY - 10 * 3600
        );
    }

    #[test]
    fn an_interval_counts_from_the_last_start() {
        let s = parse(r#"{"every_minutes": 15}"#).unwrap();
        assert_eq!(s.next(THU_10, Some(THU_10 - 60)), THU_10 + 14 * 60);
        assert_eq!(s.next(THU_10, None), THU_10);
    }

    #[test]
    fn bad_schedules_are_refused_with_the_reason() {
        for (bad, why) in [
            (r#"{"every_minutes": 0}"#, "between 1 and 10080"),
            (r#"{"every_minutes": 10081}"#, "between 1 and 10080"),
            (r#"{"daily_at": "24:00"}"#, "HH:MM"),
            (r#"{"daily_at": "2:00"}"#, "HH:MM"),
            (r#"{"daily_at": "02:60"}"#, "HH:MM"),
            (r#"{"daily_at": "+2:00"}"#, "HH:MM"),
            (
                r#"{"weekly": {"day": "someday", "at": "02:00"}}"#,
                "unknown variant",
            ),
            (r#"{"weekly": {"day": "monday"}}"#, "missing field"),
            (r#"{"hourly": 1}"#, "unknown variant"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let s = parse(r#"{"weekly": {"day": "friday", "at": "23:59"}}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"weekly":{"day":"friday","at":"23:59"}}"#
        );
    }
}
