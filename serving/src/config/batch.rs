//! `[batch]`: when the batch layer recomputes views, and what it keeps.
//!
//! Schedules are cron expressions in UTC. The `cron` crate reads only
//! expressions with a seconds field (6 or 7 fields) and a few `@` names;
//! people write classic 5-field cron. A 5-field expression is therefore
//! translated: a `0` seconds field is put in front, and its day-of-week
//! field, where classic cron counts 0-7 from Sunday (0 and 7 are Sunday)
//! but the crate counts 1-7 from Sunday, is rewritten as day names. 6 and
//! 7-field expressions are the crate's own (days of week `1` = Sunday;
//! names like `MON-FRI` mean the same in both).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::{ConfigError, Report};

/// `[batch]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchConfig {
    /// When batch runs start, as cron in UTC: classic 5 fields
    /// (`*/10 * * * *`), 6 or 7 fields with seconds first
    /// (`0 */10 * * * *`), or `@hourly`, `@daily`, `@weekly`, `@monthly`,
    /// `@yearly`. `""` or `"off"` disables scheduled runs (`POST
    /// /v1/batch/runs` still works). Default `*/10 * * * *` (every 10
    /// minutes).
    pub schedule: String,
    /// Has no effect; read so that older configs still load. Queries read
    /// the in-memory tables, which a publish swaps shard by shard, so no
    /// reader is ever left on a previous generation: its stored copy is
    /// deleted as soon as the next one is published. 1..=1000.
    pub retention_generations: usize,
    /// Batch runs kept in `GET /v1/batch/runs`. Default 100; 1..=100000.
    pub history: usize,
    /// Whether a server that writes the master dataset merges small epoch
    /// files after each successful run. Default true.
    pub compaction: bool,
    /// Files smaller than half this are merged, into files of up to about
    /// this size. Default 128 MiB; 1 KiB..=16 GiB.
    pub compaction_target_bytes: u64,
    /// A run of consecutive small files of a stream is merged only when it
    /// has at least this many files. Default 8; 2..=100000.
    pub compaction_min_files: usize,
    /// How long files that compaction replaced stay in storage for readers
    /// of an older manifest (another server, an external tool) before they
    /// are deleted. Default 3600000 (an hour); 0..=2592000000 (30 days).
    pub compaction_retention_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            schedule: "*/10 * * * *".into(),
            retention_generations: 2,
            history: 100,
            compaction: true,
            compaction_target_bytes: 128 << 20,
            compaction_min_files: 8,
            compaction_retention_ms: 3_600_000,
        }
    }
}

impl BatchConfig {
    /// The parsed schedule; `None` when scheduled runs are off.
    ///
    /// # Errors
    ///
    /// `batch.schedule` is not a valid expression (never for a validated
    /// config).
    pub fn build_schedule(&self) -> Result<Option<BatchSchedule>, ConfigError> {
        BatchSchedule::parse(&self.schedule).map_err(|m| ConfigError::new("batch.schedule", m))
    }

    pub(super) fn validate(&self, report: &mut Report) {
        if let Err(e) = self.build_schedule() {
            report.errors.push(e);
        }
        report.range(
            "batch.retention_generations",
            self.retention_generations,
            1..=1000,
        );
        report.range("batch.history", self.history, 1..=100_000);
        report.range(
            "batch.compaction_target_bytes",
            self.compaction_target_bytes,
            1024..=16 << 30,
        );
        report.range(
            "batch.compaction_min_files",
            self.compaction_min_files,
            2..=100_000,
        );
        report.range(
            "batch.compaction_retention_ms",
            self.compaction_retention_ms,
            0..=2_592_000_000,
        );
    }

    /// The compaction policy; `None` when compaction is off.
    pub fn compaction_policy(&self) -> Option<lamina_batch::CompactionPolicy> {
        self.compaction.then(|| lamina_batch::CompactionPolicy {
            target_bytes: self.compaction_target_bytes,
            min_files: self.compaction_min_files,
            retention: Duration::from_millis(self.compaction_retention_ms),
        })
    }
}

/// A parsed batch schedule.
#[derive(Debug, Clone)]
pub struct BatchSchedule {
    expression: String,
    schedule: cron::Schedule,
}

impl BatchSchedule {
    /// Parses a schedule as `[batch] schedule` takes it; `Ok(None)` for
    /// `""` and `"off"`.
    ///
    /// # Errors
    ///
    /// A one-line message quoting the expression and saying what is wrong.
    pub fn parse(expression: &str) -> Result<Option<Self>, String> {
        let trimmed = expression.trim();
        if trimmed.is_empty() || trimmed.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let invalid = |why: &dyn std::fmt::Display| {
            format!("{expression:?} is not a valid cron expression: {why}")
        };
        let translated = to_seconds_cron(trimmed).map_err(|e| invalid(&e))?;
        // The crate's message quotes the (translated) input over several
        // lines and ends with the reason; the reason is what helps.
        let schedule = translated.parse::<cron::Schedule>().map_err(|e| {
            let text = e.to_string();
            let reason = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
            invalid(&reason.trim())
        })?;
        Ok(Some(BatchSchedule {
            expression: expression.to_owned(),
            schedule,
        }))
    }

    /// The expression as written in the config.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first fire time strictly after `t`; `None` if there is none
    /// (a schedule restricted to past years) or `t` is out of range.
    pub fn next_run_after(&self, t: SystemTime) -> Option<SystemTime> {
        let after = to_utc(t)?;
        let next = self.schedule.after(&after).find(|next| *next > after)?;
        let since_epoch = u64::try_from(next.timestamp()).ok()?;
        UNIX_EPOCH.checked_add(Duration::new(since_epoch, next.timestamp_subsec_nanos()))
    }
}

fn to_utc(t: SystemTime) -> Option<DateTime<Utc>> {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => DateTime::from_timestamp(i64::try_from(d.as_secs()).ok()?, d.subsec_nanos()),
        Err(before) => {
            let d = before.duration();
            let secs = -i64::try_from(d.as_secs()).ok()?;
            // Floor to whole seconds before the epoch.
            let (secs, nanos) = match d.subsec_nanos() {
                0 => (secs, 0),
                n => (secs - 1, 1_000_000_000 - n),
            };
            DateTime::from_timestamp(secs, nanos)
        }
    }
}

/// Turns what users write into what the `cron` crate reads.
fn to_seconds_cron(expression: &str) -> Result<String, String> {
    if let Some(name) = expression.strip_prefix('@') {
        return match name.to_ascii_lowercase().as_str() {
            "yearly" | "annually" => Ok("@yearly".into()),
            "monthly" | "weekly" | "daily" | "hourly" => {
                Ok(format!("@{}", name.to_ascii_lowercase()))
            }
            "midnight" => Ok("@daily".into()),
            _ => Err(format!(
                "unknown shorthand @{name} (expected @hourly, @daily, @weekly, @monthly or @yearly)"
            )),
        };
    }
    let fields: Vec<&str> = expression.split_whitespace().collect();
    match fields.len() {
        5 => {
            let [minute, hour, day_of_month, month, day_of_week] =
                [fields[0], fields[1], fields[2], fields[3], fields[4]];
            let restricted = |f: &str| !(f.starts_with('*') || f == "?");
            // Classic cron fires when EITHER restricted day field matches;
            // the crate requires both. Refuse rather than change meaning.
            if restricted(day_of_month) && restricted(day_of_week) {
                return Err(format!(
                    "both day-of-month ({day_of_month}) and day-of-week ({day_of_week}) are restricted; classic cron runs when either matches, which this scheduler cannot express: restrict only one of them"
                ));
            }
            let day_of_week = classic_days_of_week(day_of_week)?;
            Ok(format!(
                "0 {minute} {hour} {day_of_month} {month} {day_of_week}"
            ))
        }
        6 | 7 => Ok(fields.join(" ")),
        n => Err(format!(
            "it has {n} fields; expected 5 (minute hour day-of-month month day-of-week), 6 or 7 with seconds first, or @hourly, @daily, @weekly, @monthly, @yearly"
        )),
    }
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Rewrites a classic day-of-week field (0-7, 0 and 7 are Sunday, names,
/// ranges, steps, lists) as day names the crate reads the same way.
fn classic_days_of_week(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok("*".into());
    }
    let day = |text: &str| -> Result<usize, String> {
        if let Ok(n) = text.parse::<usize>() {
            return if n <= 7 {
                Ok(n)
            } else {
                Err(format!("day of week {n} is out of range (0-7, or SUN-SAT)"))
            };
        }
        DAY_NAMES
            .iter()
            .position(|d| d.eq_ignore_ascii_case(text))
            .ok_or_else(|| format!("{text:?} is not a day of the week (0-7, or SUN-SAT)"))
    };
    let mut days = [false; 7];
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => match step.parse::<usize>() {
                Ok(s) if s >= 1 => (base, Some(s)),
                _ => {
                    return Err(format!(
                        "day-of-week step {step:?} is not a positive number"
                    ));
                }
            },
            None => (item, None),
        };
        let (first, last) = if base == "*" {
            (0, 7)
        } else if let Some((a, b)) = base.split_once('-') {
            (day(a)?, day(b)?)
        } else {
            let d = day(base)?;
            // `N/S` means from N to the end of the week.
            (d, if step.is_some() { 7 } else { d })
        };
        if first > last {
            return Err(format!("day-of-week range {base} runs backwards"));
        }
        for d in (first..=last).step_by(step.unwrap_or(1)) {
            days[d % 7] = true;
        }
    }
    if days.iter().all(|d| *d) {
        return Ok("*".into());
    }
    let names: Vec<&str> = (0..7).filter(|d| days[*d]).map(|d| DAY_NAMES[d]).collect();
    Ok(names.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seconds since the epoch of a UTC date and time.
    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> SystemTime {
        let t = chrono::NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|date| date.and_hms_opt(h, mi, s))
            .unwrap()
            .and_utc();
        UNIX_EPOCH + Duration::from_secs(t.timestamp() as u64)
    }

    fn next(expr: &str, after: SystemTime) -> SystemTime {
        BatchSchedule::parse(expr)
            .unwrap()
            .unwrap()
            .next_run_after(after)
            .unwrap()
    }

    #[test]
    fn five_six_field_and_shorthand_schedules_fire_when_expected() {
        let t = at(2026, 11, 25, 14, 3, 7);
        assert_eq!(next("*/5 * * * *", t), at(2026, 11, 25, 14, 5, 0));
        assert_eq!(next("0 */5 * * * *", t), at(2026, 11, 25, 14, 5, 0));
        assert_eq!(next("@hourly", t), at(2026, 11, 25, 15, 0, 0));
        assert_eq!(next("@daily", t), at(2026, 11, 26, 0, 0, 0));
        assert_eq!(next("*/10 * * * *", t), at(2026, 11, 25, 14, 10, 0));
        // Strictly after: a fire time equal to `t` is not returned.
        let on_time = at(2026, 11, 25, 14, 5, 0);
        assert_eq!(next("*/5 * * * *", on_time), at(2026, 11, 25, 14, 10, 0));
        assert_eq!(
            next("*/5 * * * *", on_time + Duration::from_millis(1)),
            at(2026, 11, 25, 14, 10, 0)
        );
        assert_eq!(
            next("*/5 * * * *", on_time - Duration::from_millis(1)),
            on_time
        );
    }

    #[test]
    fn classic_days_of_week_keep_their_meaning() {
        // 2026-11-25 is a Wednesday.
        let wed = at(2026, 11, 25, 12, 0, 0);
        let monday = at(2026, 11, 30, 3, 0, 0);
        assert_eq!(next("0 3 * * 1", wed), monday);
        assert_eq!(next("0 3 * * mon", wed), monday);
        assert_eq!(next("0 3 * * 0", wed), at(2026, 11, 29, 3, 0, 0));
        assert_eq!(next("0 3 * * 7", wed), at(2026, 11, 29, 3, 0, 0));
        assert_eq!(next("0 3 * * 1-5", wed), at(2026, 11, 26, 3, 0, 0));
        assert_eq!(next("0 3 * * 5-7", wed), at(2026, 11, 27, 3, 0, 0));
        assert_eq!(classic_days_of_week("*/2").unwrap(), "SUN,TUE,THU,SAT");
        assert_eq!(classic_days_of_week("0-7").unwrap(), "*");
        assert_eq!(
            classic_days_of_week("1-5/2,sat").unwrap(),
            "MON,WED,FRI,SAT"
        );
        // The crate's own 6-field form counts from Sunday = 1.
        assert_eq!(next("0 0 3 * * 2", wed), monday);
    }

    #[test]
    fn off_and_invalid_schedules() {
        assert!(BatchSchedule::parse("").unwrap().is_none());
        assert!(BatchSchedule::parse("off").unwrap().is_none());
        for (bad, fragment) in [
            ("*/61 * * * *", "Minutes"),
            ("* * *", "3 fields"),
            ("0 3 1 * 1", "both day-of-month"),
            ("0 3 * * 8", "out of range"),
            ("0 3 * * fri-mon", "backwards"),
            ("@reboot", "unknown shorthand"),
            ("61 * * * * *", "Seconds"),
        ] {
            let err = BatchSchedule::parse(bad).unwrap_err();
            assert!(
                err.starts_with(&format!("{bad:?} is not a valid cron expression: ")),
                "{err}"
            );
            assert!(err.contains(fragment), "{bad}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
