//! RFC 3339 timestamps to milliseconds since the Unix epoch (UTC).
//!
//! The accepted grammar is RFC 3339's `date-time`:
//! `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, with two liberties the RFC
//! itself allows (section 5.6, note): `t` and `z` may be lower case, and the
//! date and time may be separated by a space instead of `T`.
//!
//! - Every field is range-checked; the day against its month, with the
//!   proleptic Gregorian leap-year rule (`2024-02-29` is a date,
//!   `2026-02-29` and `2026-02-30` are not).
//! - The fraction may have any number of digits; digits past the third
//!   are truncated, so the result is the millisecond the instant falls in.
//! - Second `60` (a leap second) is accepted and counted as a plain second,
//!   so `23:59:60Z` is the same instant as the next day's `00:00:00Z`. This
//!   is what Unix time does with leap seconds.
//! - `-00:00` ("offset unknown") is treated as UTC.

use std::fmt;

/// Why a string is not an RFC 3339 timestamp. Displays as one short clause,
/// meant to follow a colon in a dead-letter reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampError {
    /// The text does not have the shape of the grammar: `expected` was
    /// wanted at byte `at`.
    Syntax {
        /// Byte offset where the text departs from the grammar.
        at: usize,
        /// What the grammar wanted there.
        expected: &'static str,
    },
    /// A field is outside its range (`month 13`, `hour 24`).
    OutOfRange {
        /// The field's name: `month`, `hour`, `minute`, `second`,
        /// `offset hours`, `offset minutes`.
        field: &'static str,
        /// The value found.
        value: u32,
    },
    /// The day does not exist in that month of that year.
    NoSuchDay {
        /// Year of the date.
        year: u32,
        /// Month of the date (1–12).
        month: u32,
        /// Day of the date.
        day: u32,
    },
}

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TimestampError::Syntax { at, expected } => write!(
                f,
                "not RFC 3339 (YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)): expected {expected} at byte {at}"
            ),
            TimestampError::OutOfRange { field, value } => {
                write!(f, "{field} {value:02} is out of range")
            }
            TimestampError::NoSuchDay { year, month, day } => {
                write!(f, "{year:04}-{month:02}-{day:02} is not a date")
            }
        }
    }
}

impl std::error::Error for TimestampError {}

/// Parses an RFC 3339 timestamp into milliseconds since 1970-01-01T00:00:00Z.
///
/// # Errors
///
/// [`TimestampError`] saying where the text leaves the grammar or which
/// field is out of range.
pub fn parse_rfc3339_millis(s: &str) -> Result<i64, TimestampError> {
    let mut cur = Cursor {
        b: s.as_bytes(),
        at: 0,
    };
    let year = cur.digits(4, "a 4-digit year")?;
    cur.byte(|c| c == b'-', "'-'")?;
    let month = cur.digits(2, "a 2-digit month")?;
    cur.byte(|c| c == b'-', "'-'")?;
    let day = cur.digits(2, "a 2-digit day")?;
    cur.byte(|c| matches!(c, b'T' | b't' | b' '), "'T'")?;
    let hour = cur.digits(2, "a 2-digit hour")?;
    cur.byte(|c| c == b':', "':'")?;
    let minute = cur.digits(2, "2-digit minutes")?;
    cur.byte(|c| c == b':', "':'")?;
    let second = cur.digits(2, "2-digit seconds")?;

    let mut millis = 0;
    if cur.peek() == Some(b'.') {
        cur.at += 1;
        let start = cur.at;
        while let Some(c @ b'0'..=b'9') = cur.peek() {
            if cur.at - start < 3 {
                millis = millis * 10 + u32::from(c - b'0');
            }
            cur.at += 1;
        }
        let n = cur.at - start;
        if n == 0 {
            return Err(cur.syntax("a digit after '.'"));
        }
        for _ in n..3 {
            millis *= 10;
        }
    }

    let offset_minutes: i64 = match cur.peek() {
        Some(b'Z' | b'z') => {
            cur.at += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            cur.at += 1;
            let hours = cur.digits(2, "2-digit offset hours")?;
            cur.byte(|c| c == b':', "':' in the offset")?;
            let mins = cur.digits(2, "2-digit offset minutes")?;
            check(hours <= 23, "offset hours", hours)?;
            check(mins <= 59, "offset minutes", mins)?;
            let total = i64::from(hours * 60 + mins);
            if sign == b'-' { -total } else { total }
        }
        _ => return Err(cur.syntax("'Z' or an offset like +01:00")),
    };
    if cur.at != cur.b.len() {
        return Err(cur.syntax("the end of the timestamp"));
    }

    check((1..=12).contains(&month), "month", month)?;
    if day == 0 || day > days_in_month(year, month) {
        return Err(TimestampError::NoSuchDay { year, month, day });
    }
    check(hour <= 23, "hour", hour)?;
    check(minute <= 59, "minute", minute)?;
    check(second <= 60, "second", second)?;

    let days = days_from_civil(i64::from(year), month, day);
    let local_seconds =
        days * 86_400 + i64::from(hour * 3_600 + minute * 60 + second) - offset_minutes * 60;
    // Years 0000–9999 keep this within ±4e14: no overflow is possible.
    Ok(local_seconds * 1_000 + i64::from(millis))
}

fn check(ok: bool, field: &'static str, value: u32) -> Result<(), TimestampError> {
    if ok {
        Ok(())
    } else {
        Err(TimestampError::OutOfRange { field, value })
    }
}

/// A position in the timestamp's bytes. Only ASCII is ever matched, so any
/// other byte (including the start of a multi-byte character) is a syntax
/// error at its offset.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    fn syntax(&self, expected: &'static str) -> TimestampError {
        TimestampError::Syntax {
            at: self.at,
            expected,
        }
    }

    fn byte(
        &mut self,
        ok: impl Fn(u8) -> bool,
        expected: &'static str,
    ) -> Result<(), TimestampError> {
        match self.peek() {
            Some(c) if ok(c) => {
                self.at += 1;
                Ok(())
            }
            _ => Err(self.syntax(expected)),
        }
    }

    /// Exactly `n` (at most 4) ASCII digits as a number.
    fn digits(&mut self, n: usize, expected: &'static str) -> Result<u32, TimestampError> {
        let mut value = 0;
        for _ in 0..n {
            match self.peek() {
                Some(c @ b'0'..=b'9') => value = value * 10 + u32::from(c - b'0'),
                _ => return Err(self.syntax(expected)),
            }
            self.at += 1;
        }
        Ok(value)
    }
}

/// Whether `year` is a leap year in the proleptic Gregorian calendar.
pub fn is_leap_year(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

/// Number of days in `month` (1–12) of `year`; 0 for a month out of range.
pub fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian
/// calendar (negative before 1970). `month` must be 1–12 and `day` valid for
/// it; `year` may be any value, including 0 and negative years.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    /// Days in the months before the index, in a common year.
    const BEFORE_MONTH: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    /// `days_before_year(1970)`.
    const EPOCH: i64 = 719_162;

    // Whole years before `year`, counted from 0001-01-01: 365 days each plus
    // one per leap year among them. Floor division keeps the count right
    // for years at or below 0, where `prior` is negative.
    let prior = year - 1;
    let days_before_year =
        365 * prior + prior.div_euclid(4) - prior.div_euclid(100) + prior.div_euclid(400);
    let leap = year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0);
    let month_index = (month.clamp(1, 12) - 1) as usize;
    let leap_day = i64::from(leap && month > 2);
    days_before_year + BEFORE_MONTH[month_index] + leap_day + i64::from(day) - 1 - EPOCH
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(s: &str) -> i64 {
        parse_rfc3339_millis(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn anchors() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 2, 29), 11_016);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(0, 1, 1), -719_528);
        assert_eq!(days_from_civil(9999, 12, 31), 2_932_896);
        assert_eq!(ms("1970-01-01T00:00:00Z"), 0);
        assert_eq!(ms("2001-09-09T01:46:40Z"), 1_000_000_000_000);
        assert_eq!(ms("0000-01-01T00:00:00Z"), -62_167_219_200_000);
        assert_eq!(ms("9999-12-31T23:59:59.999Z"), 253_402_300_799_999);
    }

    /// Oracle: walk every day from 0000-01-01 to 9999-12-31 one at a time.
    #[test]
    fn days_from_civil_matches_day_by_day_walk() {
        let mut expected = days_from_civil(0, 1, 1);
        for year in 0..=9999u32 {
            for month in 1..=12 {
                for day in 1..=days_in_month(year, month) {
                    assert_eq!(
                        days_from_civil(i64::from(year), month, day),
                        expected,
                        "{year:04}-{month:02}-{day:02}"
                    );
                    expected += 1;
                }
            }
        }
        assert_eq!(expected, days_from_civil(10_000, 1, 1));
    }

    #[test]
    fn leap_days() {
        assert_eq!(
            ms("2024-02-29T00:00:00Z"),
            ms("2024-03-01T00:00:00Z") - 86_400_000
        );
        assert_eq!(ms("2000-02-29T12:00:00Z"), 951_825_600_000);
        for bad in [
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
        ] {
            assert!(
                matches!(
                    parse_rfc3339_millis(bad),
                    Err(TimestampError::NoSuchDay { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn offsets() {
        let utc = ms("2026-03-01T10:00:00Z");
        assert_eq!(ms("2026-03-01T11:30:00+01:30"), utc);
        assert_eq!(ms("2026-03-01T05:00:00-05:00"), utc);
        assert_eq!(ms("2026-03-01T10:00:00-00:00"), utc);
        assert_eq!(ms("2026-03-01T10:00:00+00:00"), utc);
        // An offset can move the instant across a day, month and year.
        assert_eq!(ms("2026-01-01T00:30:00+01:00"), ms("2025-12-31T23:30:00Z"));
        assert_eq!(ms("2024-02-28T23:00:00-02:00"), ms("2024-02-29T01:00:00Z"));
        assert_eq!(
            ms("2026-03-01T10:00:00+23:59"),
            utc - (23 * 60 + 59) * 60_000
        );
    }

    #[test]
    fn fractions_and_separators() {
        let base = ms("2026-03-01T10:00:00Z");
        assert_eq!(ms("2026-03-01T10:00:00.5Z"), base + 500);
        assert_eq!(ms("2026-03-01T10:00:00.05Z"), base + 50);
        assert_eq!(ms("2026-03-01T10:00:00.123Z"), base + 123);
        assert_eq!(ms("2026-03-01T10:00:00.123999999Z"), base + 123);
        assert_eq!(ms("2026-03-01T10:00:00.000000001Z"), base);
        assert_eq!(ms("2026-03-01t10:00:00z"), base);
        assert_eq!(ms("2026-03-01 10:00:00Z"), base);
        // Before the epoch the fraction still moves the instant forwards.
        assert_eq!(ms("1969-12-31T23:59:59.250Z"), -750);
        // A leap second is counted as an ordinary second.
        assert_eq!(ms("2016-12-31T23:59:60Z"), ms("2017-01-01T00:00:00Z"));
    }

    #[test]
    fn rejects() {
        use TimestampError::*;
        let cases: &[(&str, TimestampError)] = &[
            (
                "",
                Syntax {
                    at: 0,
                    expected: "a 4-digit year",
                },
            ),
            (
                "2026-02-30T00:00:00Z",
                NoSuchDay {
                    year: 2026,
                    month: 2,
                    day: 30,
                },
            ),
            (
                "2026-04-31T00:00:00Z",
                NoSuchDay {
                    year: 2026,
                    month: 4,
                    day: 31,
                },
            ),
            (
                "2026-01-00T00:00:00Z",
                NoSuchDay {
                    year: 2026,
                    month: 1,
                    day: 0,
                },
            ),
            (
                "2026-13-01T00:00:00Z",
                OutOfRange {
                    field: "month",
                    value: 13,
                },
            ),
            (
                "2026-00-01T00:00:00Z",
                OutOfRange {
                    field: "month",
                    value: 0,
                },
            ),
            (
                "2026-01-01T24:00:00Z",
                OutOfRange {
                    field: "hour",
                    value: 24,
                },
            ),
            (
                "2026-01-01T00:60:00Z",
                OutOfRange {
                    field: "minute",
                    value: 60,
                },
            ),
            (
                "2026-01-01T00:00:61Z",
                OutOfRange {
                    field: "second",
                    value: 61,
                },
            ),
            (
                "2026-01-01T00:00:00+24:00",
                OutOfRange {
                    field: "offset hours",
                    value: 24,
                },
            ),
            (
                "2026-01-01T00:00:00+01:60",
                OutOfRange {
                    field: "offset minutes",
                    value: 60,
                },
            ),
            (
                "2026-01-01T00:00:00",
                Syntax {
                    at: 19,
                    expected: "'Z' or an offset like +01:00",
                },
            ),
            (
                "2026-01-01T00:00:00.Z",
                Syntax {
                    at: 20,
                    expected: "a digit after '.'",
                },
            ),
            (
                "2026-01-01T00:00:00Zx",
                Syntax {
                    at: 20,
                    expected: "the end of the timestamp",
                },
            ),
            (
                "2026-01-01T00:00:00+0100",
                Syntax {
                    at: 22,
                    expected: "':' in the offset",
                },
            ),
            (
                "2026-01-01X00:00:00Z",
                Syntax {
                    at: 10,
                    expected: "'T'",
                },
            ),
            (
                "26-01-01T00:00:00Z",
                Syntax {
                    at: 2,
                    expected: "a 4-digit year",
                },
            ),
            (
                "2026-1-01T00:00:00Z",
                Syntax {
                    at: 6,
                    expected: "a 2-digit month",
                },
            ),
            (
                "2026-01-01T0:00:00Z",
                Syntax {
                    at: 12,
                    expected: "a 2-digit hour",
                },
            ),
            (
                "+2026-01-01T00:00:00Z",
                Syntax {
                    at: 0,
                    expected: "a 4-digit year",
                },
            ),
            (
                "2026-01-01T00:00:00 Z",
                Syntax {
                    at: 19,
                    expected: "'Z' or an offset like +01:00",
                },
            ),
            (
                "２026-01-01T00:00:00Z",
                Syntax {
                    at: 0,
                    expected: "a 4-digit year",
                },
            ),
        ];
        for (s, want) in cases {
            assert_eq!(parse_rfc3339_millis(s), Err(*want), "{s:?}");
        }
        assert_eq!(
            NoSuchDay {
                year: 2026,
                month: 2,
                day: 30
            }
            .to_string(),
            "2026-02-30 is not a date"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any valid timestamp, written out, parses to the instant computed
        /// from its parts.
        #[test]
        fn written_timestamps_parse_back(
            year in 0u32..=9999, month in 1u32..=12, day_seed in 0u32..31,
            hour in 0u32..24, minute in 0u32..60, second in 0u32..60,
            frac in proptest::option::of((0u32..1_000_000_000, 1usize..=9)),
            offset in proptest::option::of((any::<bool>(), 0u32..24, 0u32..60)),
        ) {
            let day = day_seed % days_in_month(year, month) + 1;
            let mut s = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
            let mut millis = 0i64;
            if let Some((value, digits)) = frac {
                let text = format!("{value:09}");
                s.push('.');
                s.push_str(&text[..digits]);
                let mut padded = text[..digits.min(3)].to_string();
                while padded.len() < 3 { padded.push('0'); }
                millis = padded.parse().unwrap();
            }
            let mut offset_seconds = 0i64;
            match offset {
                None => s.push('Z'),
                Some((negative, h, m)) => {
                    s.push_str(&format!("{}{h:02}:{m:02}", if negative { '-' } else { '+' }));
                    offset_seconds = i64::from(h * 3600 + m * 60) * if negative { -1 } else { 1 };
                }
            }
            let local = days_from_civil(i64::from(year), month, day) * 86_400
                + i64::from(hour * 3600 + minute * 60 + second);
            prop_assert_eq!(parse_rfc3339_millis(&s), Ok((local - offset_seconds) * 1000 + millis));
        }

        #[test]
        fn never_panics(any_text in "\\PC{0,40}", near in "[0-9:Tt .Zz+-]{0,32}") {
            let _ = parse_rfc3339_millis(&any_text);
            let _ = parse_rfc3339_millis(&near);
        }
    }
}
