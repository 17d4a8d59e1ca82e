//! A calendar month, the period of payout runs and donation allocations.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::ValueError;

/// A calendar month in UTC, written `2026-10`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Period {
    year: u16,
    month: u8,
}

impl Period {
    pub fn new(year: u16, month: u8) -> Result<Period, ValueError> {
        if !(2000..=9999).contains(&year) || !(1..=12).contains(&month) {
            return Err(ValueError::new(
                "period",
                format!("{year:04}-{month:02} is not a month between 2000-01 and 9999-12"),
            ));
        }
        Ok(Period { year, month })
    }

    /// Parses `YYYY-MM`.
    pub fn parse(text: &str) -> Result<Period, ValueError> {
        let invalid = || {
            ValueError::new(
                "period",
                format!("{text:?} is not a month like \"2026-10\""),
            )
        };
        let (year, month) = text.split_once('-').ok_or_else(invalid)?;
        if year.len() != 4 || month.len() != 2 {
            return Err(invalid());
        }
        let year = year.parse::<u16>().map_err(|_| invalid())?;
        let month = month.parse::<u8>().map_err(|_| invalid())?;
        Period::new(year, month)
    }

    /// The month `at` falls in.
    pub fn containing(at: DateTime<Utc>) -> Period {
        Period {
            year: at.year() as u16,
            month: at.month() as u8,
        }
    }

    /// The first instant of the month (inclusive).
    pub fn start(self) -> DateTime<Utc> {
        let date = NaiveDate::from_ymd_opt(i32::from(self.year), u32::from(self.month), 1)
            .expect("a validated period is a real month");
        Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight exists"))
    }

    /// The first instant of the next month (exclusive end).
    pub fn end(self) -> DateTime<Utc> {
        self.next().start()
    }

    pub fn next(self) -> Period {
        if self.month == 12 {
            Period {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Period {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    pub fn contains(self, at: DateTime<Utc>) -> bool {
        self.start() <= at && at < self.end()
    }
}

impl TryFrom<String> for Period {
    type Error = ValueError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Period::parse(&text)
    }
}

impl From<Period> for String {
    fn from(period: Period) -> String {
        period.to_string()
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl fmt::Debug for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Period({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_calendar_months() {
        let period = Period::parse("2026-12").unwrap();
        assert_eq!(period.to_string(), "2026-12");
        assert_eq!(period.start().to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(period.end().to_rfc3339(), "2027-01-01T00:00:00+00:00");
        assert!(period.contains(period.start()));
        assert!(!period.contains(period.end()));
        assert_eq!(
            Period::containing(period.end()),
            Period::parse("2027-01").unwrap()
        );
        for bad in [
            "2026-13", "2026-00", "2026-1", "26-01", "2026/01", "", "1999-12",
        ] {
            assert_eq!(Period::parse(bad).unwrap_err().field, "period", "{bad}");
        }
    }
}
