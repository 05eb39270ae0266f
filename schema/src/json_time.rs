//! Timestamps and dates as JSON strings, written digit by digit.
//!
//! chrono's `Serialize` goes through `core::fmt` and was a tenth of the
//! scroll endpoint's CPU time in a profile (three timestamps per profile,
//! twenty profiles per page); this writes the same RFC 3339 text directly.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use serde::Serializer;

/// `2026-11-27T07:54:46.553698Z`: always microseconds, PostgreSQL's precision.
pub fn timestamp<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 27];
    if !write_date(&mut buf[..10], at.date_naive()) {
        return serializer.collect_str(&at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    }
    buf[10] = b'T';
    write_digits(&mut buf[11..13], at.hour());
    buf[13] = b':';
    write_digits(&mut buf[14..16], at.minute());
    buf[16] = b':';
    // A leap second is reported by chrono as nanoseconds >= 1e9; clamp it.
    write_digits(&mut buf[17..19], at.second());
    buf[19] = b'.';
    write_digits(&mut buf[20..26], at.timestamp_subsec_micros().min(999_999));
    buf[26] = b'Z';
    serializer.serialize_str(ascii(&buf))
}

/// `1995-04-12`.
pub fn date<S: Serializer>(date: &NaiveDate, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 10];
    if write_date(&mut buf, *date) {
        serializer.serialize_str(ascii(&buf))
    } else {
        serializer.collect_str(date)
    }
}

/// Writes `YYYY-MM-DD`; false for years outside 0..=9999 (left to chrono).
fn write_date(buf: &mut [u8], date: NaiveDate) -> bool {
    let Ok(year) = u32::try_from(date.year()) else {
        return false;
    };
    if year > 9999 {
        return false;
    }
    write_digits(&mut buf[0..4], year);
    buf[4] = b'-';
    write_digits(&mut buf[5..7], date.month());
    buf[7] = b'-';
    write_digits(&mut buf[8..10], date.day());
    true
}

/// Fills `out` with the low decimal digits of `value`, zero-padded.
fn write_digits(out: &mut [u8], mut value: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn ascii(buf: &[u8]) -> &str {
    // Only ASCII digits and separators were written.
    std::str::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(serde::Serialize)]
    struct Row {
        #[serde(serialize_with = "timestamp")]
        at: DateTime<Utc>,
        #[serde(serialize_with = "date")]
        day: NaiveDate,
    }

    #[test]
    fn matches_rfc3339_and_parses_back() {
        for micros in [
            0_i64,
            1_795_763_363_553_698,
            946_684_799_999_999,
            -86_400_000_001,
            253_402_300_799_000_000,
        ] {
            let at = DateTime::from_timestamp_micros(micros).unwrap();
            let day = at.date_naive();
            let json = serde_json::to_value(Row { at, day }).unwrap();
            let text = json["at"].as_str().unwrap();
            assert_eq!(text, at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
            assert_eq!(DateTime::parse_from_rfc3339(text).unwrap(), at);
            assert_eq!(json["day"].as_str().unwrap(), day.to_string());
        }
    }

    #[test]
    fn out_of_range_years_fall_back_to_chrono() {
        let day = NaiveDate::from_ymd_opt(-5, 1, 2).unwrap();
        let at = day.and_hms_opt(1, 2, 3).unwrap().and_utc();
        let json = serde_json::to_value(Row { at, day }).unwrap();
        assert_eq!(json["day"].as_str().unwrap(), day.to_string());
        assert_eq!(
            json["at"].as_str().unwrap(),
            at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
    }
}
