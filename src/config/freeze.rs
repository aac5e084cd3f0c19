//! `[[rollout.freeze]]`: freeze windows (deny windows) per stage, as written and after
//! checks, and whether one is open at a given time in the configured time zone (pure).
//!
//! A window is either yearly, between two month-days (`from = "12-20"`, `to = "01-03"`, both
//! days included, crossing the year end when `to` comes before `from`), or absolute, between
//! two RFC 3339 times (`to` excluded). What a window stops is decided by
//! [`crate::plan::holds`]; this module must never read anything but the config, nor a clock.

use std::time::SystemTime;

use chrono::{Datelike, NaiveDate, TimeZone};
use serde::Deserialize;

use super::ConfigError;

/// One `[[rollout.freeze]]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFreeze {
    /// Stages frozen (names of `rollout.stages`); empty or absent: every resource.
    #[serde(default)]
    pub stages: Vec<String>,
    /// Start: a month-day `MM-DD` (yearly) or an RFC 3339 time.
    pub from: String,
    /// End: a month-day `MM-DD` (that day included) or an RFC 3339 time (excluded).
    pub to: String,
    /// Why (shown with every hold it causes); default `rollout.freeze[<i>]`.
    #[serde(default)]
    pub reason: Option<String>,
    /// Freeze every change, spec changes and deletes too (default false: version moves only).
    #[serde(default)]
    pub all: bool,
}

/// When a window is open.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Span {
    /// Every year from one month-day to another, both included.
    Yearly { from: (u32, u32), to: (u32, u32) },
    /// Once, from one time (included) to another (excluded).
    Absolute { from: SystemTime, to: SystemTime },
}

/// A checked freeze window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freeze {
    /// Stages frozen; empty: every resource.
    pub stages: Vec<String>,
    /// Every change, not only version moves.
    pub all: bool,
    /// Why.
    pub reason: String,
    span: Span,
}

impl Freeze {
    /// When the window open at `now` (read in `tz`) ends; `None` when it is closed.
    #[must_use]
    pub fn active(&self, tz: chrono_tz::Tz, now: SystemTime) -> Option<SystemTime> {
        match self.span {
            Span::Absolute { from, to } => (from <= now && now < to).then_some(to),
            Span::Yearly { from, to } => {
                let local = chrono::DateTime::<chrono::Utc>::from(now).with_timezone(&tz);
                let today = (local.month(), local.day());
                let year = local.year();
                let end_year = if from <= to {
                    (from <= today && today <= to).then_some(year)?
                } else if today >= from {
                    year + 1
                } else if today <= to {
                    year
                } else {
                    return None;
                };
                Some(day_after(tz, end_year, to))
            }
        }
    }
}

/// The first instant after month-day `md` of `year` in `tz` (29 February of a common year
/// ends with 28 February).
fn day_after(tz: chrono_tz::Tz, year: i32, md: (u32, u32)) -> SystemTime {
    let day = NaiveDate::from_ymd_opt(year, md.0, md.1)
        .or_else(|| NaiveDate::from_ymd_opt(year, md.0, md.1 - 1))
        .and_then(|d| d.succ_opt())
        .and_then(|d| d.and_hms_opt(0, 0, 0));
    day.and_then(|t| tz.from_local_datetime(&t).earliest())
        .map_or(SystemTime::UNIX_EPOCH, |t| {
            SystemTime::from(t.with_timezone(&chrono::Utc))
        })
}

/// Reads `MM-DD`, checked against a leap year (so `02-29` is allowed).
fn month_day(text: &str) -> Option<(u32, u32)> {
    let (m, d) = text.split_once('-')?;
    if m.len() != 2 || d.len() != 2 {
        return None;
    }
    let md = (m.parse().ok()?, d.parse().ok()?);
    NaiveDate::from_ymd_opt(2024, md.0, md.1).map(|_| md)
}

fn instant(text: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(SystemTime::from)
}

/// Checks every window; errors name the key and the fix.
pub(super) fn compile(
    raw: &[RawFreeze],
    stages: &[String],
    file: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<Freeze> {
    let mut out = Vec::new();
    for (i, f) in raw.iter().enumerate() {
        let key = |k: &str| format!("rollout.freeze[{i}].{k}");
        let mut err = |k: &str, message: String| {
            errors.push(ConfigError {
                file: file.into(),
                key: key(k),
                message,
            });
        };
        for s in &f.stages {
            if !stages.contains(s) {
                err(
                    "stages",
                    format!(
                        "{s:?} is not one of rollout.stages {stages:?}; name a configured stage, or leave stages out to freeze every resource"
                    ),
                );
            }
        }
        let span = match (
            month_day(&f.from),
            month_day(&f.to),
            instant(&f.from),
            instant(&f.to),
        ) {
            (Some(from), Some(to), _, _) => Some(Span::Yearly { from, to }),
            (_, _, Some(from), Some(to)) if from < to => Some(Span::Absolute { from, to }),
            (_, _, Some(_), Some(_)) => {
                err(
                    "to",
                    format!(
                        "{:?} is not after from = {:?}; an absolute window ends after it starts",
                        f.to, f.from
                    ),
                );
                None
            }
            _ => {
                let which = if month_day(&f.from).is_some() || instant(&f.from).is_some() {
                    "to"
                } else {
                    "from"
                };
                err(
                    which,
                    format!(
                        "from = {:?}, to = {:?}: give both as month-days \"MM-DD\" (yearly, e.g. from = \"12-20\", to = \"01-03\") or both as RFC 3339 times (\"2026-12-20T00:00:00+01:00\")",
                        f.from, f.to
                    ),
                );
                None
            }
        };
        if let Some(span) = span {
            out.push(Freeze {
                stages: f.stages.clone(),
                all: f.all,
                reason: f
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("rollout.freeze[{i}]")),
                span,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        instant(text).expect("time")
    }

    fn yearly(from: &str, to: &str) -> Freeze {
        let raw = [RawFreeze {
            from: from.into(),
            to: to.into(),
            ..RawFreeze::default()
        }];
        let mut errors = Vec::new();
        let mut got = compile(&raw, &[], "proton.toml", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        got.remove(0)
    }

    #[test]
    fn yearly_windows_wrap_the_year_end_and_read_the_time_zone() {
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().expect("tz");
        let utc = chrono_tz::UTC;
        let year_end = yearly("12-20", "01-03");
        let summer = yearly("07-01", "07-31");
        let leap = yearly("02-29", "02-29");
        // (window, tz, now, the end when open)
        let cases: Vec<(&Freeze, chrono_tz::Tz, &str, Option<&str>)> = vec![
            (&year_end, utc, "2026-12-19T23:59:59Z", None),
            (
                &year_end,
                utc,
                "2026-12-20T00:00:00Z",
                Some("2027-01-04T00:00:00Z"),
            ),
            (
                &year_end,
                utc,
                "2026-12-31T12:00:00Z",
                Some("2027-01-04T00:00:00Z"),
            ),
            (
                &year_end,
                utc,
                "2027-01-01T00:00:00Z",
                Some("2027-01-04T00:00:00Z"),
            ),
            (
                &year_end,
                utc,
                "2027-01-03T23:59:59Z",
                Some("2027-01-04T00:00:00Z"),
            ),
            (&year_end, utc, "2027-01-04T00:00:00Z", None),
            (&year_end, utc, "2027-06-01T00:00:00Z", None),
            // 23:30 UTC on 19 December is 00:30 on the 20th in Berlin.
            (
                &year_end,
                berlin,
                "2026-12-19T23:30:00Z",
                Some("2027-01-03T23:00:00Z"),
            ),
            // 23:30 UTC on 3 January is already the 4th in Berlin.
            (&year_end, berlin, "2027-01-03T23:30:00Z", None),
            (
                &summer,
                utc,
                "2027-07-15T00:00:00Z",
                Some("2027-08-01T00:00:00Z"),
            ),
            (&summer, utc, "2027-08-01T00:00:00Z", None),
            (
                &leap,
                utc,
                "2028-02-29T10:00:00Z",
                Some("2028-03-01T00:00:00Z"),
            ),
            (&leap, utc, "2027-02-28T10:00:00Z", None),
        ];
        for (w, tz, now, want) in cases {
            assert_eq!(
                w.active(tz, at(now)),
                want.map(at),
                "{w:?} at {now} in {tz}"
            );
        }
    }

    #[test]
    fn absolute_windows_end_at_to() {
        let raw = [RawFreeze {
            stages: vec!["prod".into()],
            from: "2026-12-20T00:00:00+01:00".into(),
            to: "2027-01-04T00:00:00+01:00".into(),
            reason: Some("year end".into()),
            all: true,
        }];
        let mut errors = Vec::new();
        let got = compile(&raw, &["dev".into(), "prod".into()], "p.toml", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let w = &got[0];
        assert_eq!((w.reason.as_str(), w.all), ("year end", true));
        let utc = chrono_tz::UTC;
        assert_eq!(w.active(utc, at("2026-12-19T22:59:59Z")), None);
        assert_eq!(
            w.active(utc, at("2026-12-19T23:00:00Z")),
            Some(at("2027-01-03T23:00:00Z"))
        );
        assert_eq!(w.active(utc, at("2027-01-03T23:00:00Z")), None);
    }

    #[test]
    fn bad_windows_name_the_key_and_the_fix() {
        let raw = [
            RawFreeze {
                stages: vec!["qa".into()],
                from: "12-20".into(),
                to: "01-03".into(),
                ..RawFreeze::default()
            },
            RawFreeze {
                from: "12-20".into(),
                to: "2027-01-03T00:00:00Z".into(),
                ..RawFreeze::default()
            },
            RawFreeze {
                from: "13-01".into(),
                to: "01-03".into(),
                ..RawFreeze::default()
            },
            RawFreeze {
                from: "2027-01-03T00:00:00Z".into(),
                to: "2027-01-02T00:00:00Z".into(),
                ..RawFreeze::default()
            },
        ];
        let mut errors = Vec::new();
        let got = compile(&raw, &["dev".into(), "prod".into()], "p.toml", &mut errors);
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "rollout.freeze[0].stages",
                "rollout.freeze[1].to",
                "rollout.freeze[2].from",
                "rollout.freeze[3].to"
            ],
            "{errors:?}"
        );
        assert!(errors[1].message.contains("MM-DD"), "{errors:?}");
        assert_eq!(got.len(), 1, "the one with a bad stage still compiles");
    }
}
