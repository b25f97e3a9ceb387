//! Business calendars: the working days, business hours and holidays of a
//! route, in its time zone, and the SLA deadlines counted on them.
//!
//! Definitions (the README's "Business calendar" section says the same):
//!
//! - A **working day** is a local date whose weekday is one of `days` and
//!   that is not one of `holidays`.
//! - **Business hours** `open`–`close` are local wall-clock times, the same
//!   on every working day; without them the whole day counts.
//! - **N working days** from an instant `t`: the clock starts at `t` if its
//!   local time of day is within business hours, else at the next opening
//!   (that day's if `t` is before it, else the next calendar day's). The
//!   deadline is the start's local time of day on the N-th working day
//!   after the start's local date. Without hours, in UTC, Monday to Friday,
//!   this is SPEC §3's rule (Saturday + 3 = Wednesday, same time of day).
//! - **N business hours** from `t`: the instant at which N hours of
//!   business time (working days, within business hours) have elapsed since
//!   `t`; time outside business hours does not count. A deadline that falls
//!   exactly at a closing time is that closing time.
//! - **Local times that do not exist or exist twice** (daylight saving): a
//!   wall-clock time in a gap is moved forward by the gap's length (02:30 on
//!   a spring-forward day is 03:30), a time in a fold is its first, earlier
//!   occurrence (RFC 5545's rule; jiff's `compatible`). Business time is
//!   real elapsed time, so a working day whose hours span a transition is an
//!   hour shorter or longer.
//!
//! The time zone database is jiff's, compiled into the binary: every
//! instance computes the same deadline, whatever its host has installed.

use std::collections::BTreeSet;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::Deserialize;

use crate::time::Micros;

/// Weekday names as the model writes them, Monday first.
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const FULL_DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Monday = 0 … Sunday = 6, from `mon` or `monday` (any case).
fn weekday(name: &str) -> Option<usize> {
    let lower = name.trim().to_ascii_lowercase();
    (0..7).find(|&i| lower == DAY_NAMES[i] || lower == FULL_DAY_NAMES[i])
}

/// A calendar as written in the model (`[calendar]`, or
/// `[new_business.calendar]` / `[installed_base.calendar]` for one route).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarFile {
    /// IANA time zone name (`Europe/Amsterdam`); default `UTC`.
    pub time_zone: Option<String>,
    /// Business hours, `"09:00-17:00"` (local); default the whole day.
    pub hours: Option<String>,
    /// Working weekdays (`mon` … `sun`); default Monday to Friday.
    pub days: Option<Vec<String>>,
    /// Dates that are not working days (`YYYY-MM-DD`, local).
    #[serde(default)]
    pub holidays: Vec<String>,
}

/// A validated business calendar.
#[derive(Debug, Clone)]
pub struct Calendar {
    zone: TimeZone,
    zone_name: String,
    /// Business hours as minutes after local midnight, `open < close ≤ 1440`;
    /// `None`: the whole day.
    hours: Option<(u16, u16)>,
    /// Monday = bit 0 … Sunday = bit 6.
    days: u8,
    holidays: BTreeSet<Date>,
}

impl Default for Calendar {
    /// UTC, Monday to Friday, the whole day, no holidays (SPEC §3).
    fn default() -> Self {
        Calendar {
            zone: TimeZone::UTC,
            zone_name: "UTC".into(),
            hours: None,
            days: 0b001_1111,
            holidays: BTreeSet::new(),
        }
    }
}

impl Calendar {
    /// Validates `f`; an error is `(key under prefix, problem)`.
    pub fn compile(prefix: &str, f: &CalendarFile) -> Result<Calendar, (String, String)> {
        let key = |k: &str| format!("{prefix}.{k}");
        let mut cal = Calendar::default();
        if let Some(name) = &f.time_zone {
            cal.zone = TimeZone::get(name.trim()).map_err(|_| {
                (
                    key("time_zone"),
                    format!("{name:?} is not an IANA time zone name (e.g. \"Europe/Amsterdam\")"),
                )
            })?;
            cal.zone_name = name.trim().to_string();
        }
        if let Some(h) = &f.hours {
            cal.hours = Some(parse_hours(h).map_err(|p| (key("hours"), format!("{h:?}: {p}")))?);
        }
        if let Some(days) = &f.days {
            cal.days = 0;
            for (i, d) in days.iter().enumerate() {
                let bit = weekday(d).ok_or_else(|| {
                    (
                        format!("{prefix}.days[{i}]"),
                        format!("{d:?} is not a weekday (mon, tue, wed, thu, fri, sat, sun)"),
                    )
                })?;
                cal.days |= 1 << bit;
            }
            if cal.days == 0 {
                return Err((key("days"), "needs at least one working day".into()));
            }
        }
        for (i, h) in f.holidays.iter().enumerate() {
            let date: Date = h.trim().parse().map_err(|_| {
                (
                    format!("{prefix}.holidays[{i}]"),
                    format!("{h:?} is not a date (YYYY-MM-DD)"),
                )
            })?;
            cal.holidays.insert(date);
        }
        Ok(cal)
    }

    /// The IANA name of the calendar's zone.
    pub fn time_zone(&self) -> &str {
        &self.zone_name
    }

    /// Whether this is SPEC §3's calendar: UTC, Monday to Friday, the
    /// whole day, no holidays.
    fn is_default(&self) -> bool {
        self.hours.is_none()
            && self.days == 0b001_1111
            && self.holidays.is_empty()
            && self.zone == TimeZone::UTC
    }

    fn is_working(&self, d: Date) -> bool {
        let wd = d.weekday().to_monday_zero_offset();
        self.days & (1 << wd) != 0 && !self.holidays.contains(&d)
    }

    /// The instant of a local date and time (see the module's DST rule).
    fn instant(&self, dt: DateTime) -> Option<Micros> {
        let ts = self.zone.to_ambiguous_timestamp(dt).compatible().ok()?;
        Some(ts.as_microsecond())
    }

    fn local(&self, t: Micros) -> Option<DateTime> {
        Some(self.zone.to_datetime(Timestamp::from_microsecond(t).ok()?))
    }

    /// Business hours of local date `d` as instants `[open, close)`.
    fn window(&self, d: Date) -> Option<(Micros, Micros)> {
        let (open, close) = self.hours.unwrap_or((0, 24 * 60));
        let at = |minutes: u16| -> Option<Micros> {
            if minutes == 24 * 60 {
                self.instant(d.tomorrow().ok()?.to_datetime(Time::midnight()))
            } else {
                let time = Time::new((minutes / 60) as i8, (minutes % 60) as i8, 0, 0).ok()?;
                self.instant(d.to_datetime(time))
            }
        };
        Some((at(open)?, at(close)?))
    }

    /// `t` plus `n` working days (see the module's definition). Past the
    /// range of dates the calendar knows (years −9999 to 9999), UTC
    /// Monday-to-Friday counting.
    pub fn add_working_days(&self, t: Micros, n: u32) -> Micros {
        if self.is_default() {
            return crate::time::add_working_days(t, n);
        }
        self.try_add_working_days(t, n)
            .unwrap_or_else(|| crate::time::add_working_days(t, n))
    }

    fn try_add_working_days(&self, t: Micros, n: u32) -> Option<Micros> {
        let start = self.business_start(t)?;
        let local = self.local(start)?;
        let mut date = local.date();
        let mut left = n;
        while left > 0 {
            date = date.tomorrow().ok()?;
            if self.is_working(date) {
                left -= 1;
            }
        }
        // The start's sub-second part is kept: jiff's civil time carries it.
        self.instant(date.to_datetime(local.time()))
    }

    /// The first instant at or after `t` whose local time of day is within
    /// business hours (any day: the working days are counted after it).
    fn business_start(&self, t: Micros) -> Option<Micros> {
        let Some((open, close)) = self.hours else {
            return Some(t);
        };
        let local = self.local(t)?;
        let minute = local.hour() as i64 * 60 + local.minute() as i64;
        let opening = |d: Date| {
            let time = Time::new((open / 60) as i8, (open % 60) as i8, 0, 0).ok()?;
            self.instant(d.to_datetime(time))
        };
        if minute < i64::from(open) {
            opening(local.date())
        } else if minute >= i64::from(close) {
            opening(local.date().tomorrow().ok()?)
        } else {
            Some(t)
        }
    }

    /// `t` plus `d` of business time (see the module's definition).
    pub fn add_business_time(&self, t: Micros, d: Micros) -> Micros {
        self.try_add_business_time(t, d)
            .unwrap_or_else(|| t.saturating_add(d))
    }

    fn try_add_business_time(&self, t: Micros, d: Micros) -> Option<Micros> {
        let mut date = self.local(t)?.date();
        let mut left = d;
        // A year of dates without a working day is a calendar no one meant
        // (a validated one has a working weekday, and holidays are listed).
        for _ in 0..(400 * 366) {
            if self.is_working(date) {
                let (open, close) = self.window(date)?;
                let from = t.max(open);
                if from < close {
                    let available = close - from;
                    if left <= available {
                        return Some(from + left);
                    }
                    left -= available;
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

/// `"HH:MM-HH:MM"` as minutes after midnight; the end may be `24:00`.
fn parse_hours(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or("business hours are \"HH:MM-HH:MM\" (e.g. \"09:00-17:00\")")?;
    let open = clock(a.trim())?;
    let close = clock(b.trim())?;
    if open == 24 * 60 {
        return Err("the opening time must be before 24:00".into());
    }
    if close <= open {
        return Err("the closing time must be after the opening time".into());
    }
    Ok((open, close))
}

fn clock(s: &str) -> Result<u16, String> {
    let bad = || format!("{s:?} is not a time of day (HH:MM, 00:00 to 24:00)");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{format_rfc3339 as iso, parse_rfc3339, HOUR};

    fn ts(s: &str) -> Micros {
        parse_rfc3339(s).unwrap()
    }

    fn cal(toml: &str) -> Calendar {
        let f: CalendarFile = toml::from_str(toml).unwrap();
        Calendar::compile("calendar", &f).unwrap()
    }

    fn err(toml: &str) -> (String, String) {
        let f: CalendarFile = toml::from_str(toml).unwrap();
        Calendar::compile("new_business.calendar", &f).unwrap_err()
    }

    #[test]
    fn the_default_calendar_is_the_specs() {
        let c = Calendar::default();
        for t in [
            "2026-03-07T10:15:00Z",
            "2026-03-06T17:00:00Z",
            "2026-03-02T09:00:00.25Z",
        ] {
            assert_eq!(
                c.add_working_days(ts(t), 3),
                crate::time::add_working_days(ts(t), 3)
            );
        }
        // An explicit UTC Monday-to-Friday calendar is the same calendar.
        let explicit =
            cal("time_zone = \"UTC\"\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]\n");
        assert_eq!(
            iso(explicit
                .try_add_working_days(ts("2026-03-07T10:15:00Z"), 3)
                .unwrap()),
            "2026-03-11T10:15:00Z"
        );
    }

    #[test]
    fn working_days_in_a_zone_with_hours_and_a_holiday() {
        let c = cal("time_zone = \"Europe/Amsterdam\"\nhours = \"09:00-17:00\"\nholidays = [\"2026-04-06\"]\n");
        // Thu 2026-04-02 10:00 CEST (08:00Z): Fri, (Mon 04-06 is a holiday), Tue, Wed → Wed 10:00 CEST.
        assert_eq!(
            iso(c.add_working_days(ts("2026-04-02T08:00:00Z"), 3)),
            "2026-04-08T08:00:00Z"
        );
        // Fri 2026-04-03 20:00 CEST, after closing: starts Sat 09:00; Tue, Wed, Thu → Thu 09:00 CEST.
        assert_eq!(
            iso(c.add_working_days(ts("2026-04-03T18:00:00Z"), 3)),
            "2026-04-09T07:00:00Z"
        );
        // Tue 2026-04-07 07:30 CEST, before opening: starts at 09:00 → Fri 09:00.
        assert_eq!(
            iso(c.add_working_days(ts("2026-04-07T05:30:00Z"), 3)),
            "2026-04-10T07:00:00Z"
        );
    }

    #[test]
    fn working_days_across_daylight_saving() {
        let c = cal("time_zone = \"Europe/Amsterdam\"\n");
        // Fri 2026-03-27 14:00 CET (13:00Z); DST starts Sun 03-29; + 1 working day = Mon 14:00 CEST (12:00Z).
        assert_eq!(
            iso(c.add_working_days(ts("2026-03-27T13:00:00Z"), 1)),
            "2026-03-30T12:00:00Z"
        );
        // 02:30 local does not exist on 2026-03-29: a working Sunday calendar moves it to 03:30 CEST.
        let sun = cal("time_zone = \"Europe/Amsterdam\"\ndays = [\"sat\", \"sun\"]\n");
        // Sat 03-28 02:30 CET (01:30Z) + 1 working day = Sun 02:30 → 03:30 CEST = 01:30Z.
        assert_eq!(
            iso(sun.add_working_days(ts("2026-03-28T01:30:00Z"), 1)),
            "2026-03-29T01:30:00Z"
        );
        // 02:30 exists twice on 2026-10-25 (fold): the earlier, CEST (00:30Z).
        assert_eq!(
            iso(sun.add_working_days(ts("2026-10-24T00:30:00Z"), 1)),
            "2026-10-25T00:30:00Z"
        );
    }

    #[test]
    fn business_hours_count_only_open_time() {
        let c = cal("time_zone = \"America/New_York\"\nhours = \"09:00-17:00\"\n");
        // Fri 2026-03-06 16:00 EST (21:00Z) + 4 business hours: 1 h Friday, 3 h Monday → Mon 12:00 EDT
        // (DST began Sun 03-08), 16:00Z.
        assert_eq!(
            iso(c.add_business_time(ts("2026-03-06T21:00:00Z"), 4 * HOUR)),
            "2026-03-09T16:00:00Z"
        );
        // Arriving at 07:00 (before opening): 8 business hours end at that day's closing, 17:00 EDT.
        assert_eq!(
            iso(c.add_business_time(ts("2026-03-10T11:00:00Z"), 8 * HOUR)),
            "2026-03-10T21:00:00Z"
        );
        // On a Saturday: from Monday's opening.
        assert_eq!(
            iso(c.add_business_time(ts("2026-03-14T15:00:00Z"), HOUR)),
            "2026-03-16T14:00:00Z"
        );
        // Without hours, whole working days count: Fri 22:00Z + 4 h = Mon 02:00Z.
        assert_eq!(
            iso(Calendar::default().add_business_time(ts("2026-03-06T22:00:00Z"), 4 * HOUR)),
            "2026-03-09T02:00:00Z"
        );
    }

    #[test]
    fn bad_entries_name_their_key() {
        let (k, p) = err("time_zone = \"Mars/Olympus_Mons\"\n");
        assert_eq!(k, "new_business.calendar.time_zone");
        assert!(p.contains("Mars/Olympus_Mons"), "{p}");
        let (k, p) = err("hours = \"09:00-25:00\"\n");
        assert_eq!(k, "new_business.calendar.hours");
        assert!(p.contains("25:00"), "{p}");
        let (k, _) = err("hours = \"17:00-09:00\"\n");
        assert_eq!(k, "new_business.calendar.hours");
        let (k, _) = err("hours = \"9-17\"\n");
        assert_eq!(k, "new_business.calendar.hours");
        let (k, p) = err("holidays = [\"2026-12-25\", \"2026-02-30\"]\n");
        assert_eq!(k, "new_business.calendar.holidays[1]");
        assert!(p.contains("2026-02-30"), "{p}");
        let (k, _) = err("days = [\"mon\", \"funday\"]\n");
        assert_eq!(k, "new_business.calendar.days[1]");
        let (k, _) = err("days = []\n");
        assert_eq!(k, "new_business.calendar.days");
        assert_eq!(cal("days = [\"Monday\", \"sat\"]\n").days, 0b010_0001);
    }
}
