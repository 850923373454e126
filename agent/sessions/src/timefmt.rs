//! Calendar arithmetic on event time: RFC 3339 rendering of finding times and
//! the civil-date conversions the cookie-date parser needs.
//!
//! Hand-written (Howard Hinnant's `days_from_civil` algorithms) rather than a
//! date crate: the analysis needs two conversions, both total functions, and
//! never the local time zone or the wall clock.

use std::fmt::Write as _;

use sessionwatch_streams::Timestamp;

/// Days since 1970-01-01 of a proleptic Gregorian date. `month` is 1..=12,
/// `day` 1..=31 (not range-checked here; see [`is_valid_date`]).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date `(year, month, day)` of a day count since
/// 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Whether `day` exists in `month` of `year` (leap years included).
pub fn is_valid_date(year: i64, month: u32, day: u32) -> bool {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days_in_month).contains(&day)
}

/// Renders event time as RFC 3339 UTC with milliseconds
/// (`2026-11-26T06:01:02.123Z`), the finding `time` format.
pub fn rfc3339_millis(ts: Timestamp) -> String {
    let mut s = String::with_capacity(24);
    write_rfc3339_millis(&mut s, ts);
    s
}

/// Appends the RFC 3339 rendering of `ts` to `out`. Every finding carries
/// one, so it is written digit by digit into a fixed buffer rather than
/// through `fmt` (a tenth of the instructions). Event time ends in 2554
/// (u64 nanoseconds); a year outside four digits would take the formatter.
pub fn write_rfc3339_millis(out: &mut String, ts: Timestamp) {
    let secs = ts.secs() as i64;
    let millis = ts.subsec_nanos() / 1_000_000;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u32;
    let (h, mi, s) = (sod / 3600, (sod / 60) % 60, sod % 60);
    let Ok(year @ 0..=9999) = u32::try_from(y) else {
        let _ = write!(
            out,
            "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{millis:03}Z"
        );
        return;
    };
    let two = |v: u32| [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8];
    let [y0, y1] = two(year / 100);
    let [y2, y3] = two(year);
    let [mo0, mo1] = two(mo);
    let [d0, d1] = two(d);
    let [h0, h1] = two(h);
    let [mi0, mi1] = two(mi);
    let [s0, s1] = two(s);
    let [ms0, ms1] = two(millis / 10);
    let ms2 = b'0' + (millis % 10) as u8;
    let buf = [
        y0, y1, y2, y3, b'-', mo0, mo1, b'-', d0, d1, b'T', h0, h1, b':', mi0, mi1, b':', s0, s1,
        b'.', ms0, ms1, ms2, b'Z',
    ];
    // Every byte above is an ASCII digit or separator.
    out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-719_468_i64, -1, 0, 1, 10_957, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn renders_rfc3339_with_millis() {
        // 2026-11-26T06:01:02.123Z
        let secs = days_from_civil(2026, 11, 26) * 86_400 + 6 * 3600 + 62;
        let ts = Timestamp::from_secs_nanos(secs as u64, 123_456_789);
        assert_eq!(rfc3339_millis(ts), "2026-11-26T06:01:02.123Z");
        assert_eq!(rfc3339_millis(Timestamp(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(Timestamp::from_secs_nanos(951_868_799, 999_999_999)),
            "2000-02-29T23:59:59.999Z"
        );
    }

    #[test]
    fn digit_rendering_matches_the_formatter_in_every_year() {
        // Walk the whole range of event time (u64 nanoseconds: up to the
        // year 2554) with odd steps, so every field takes many values.
        let mut secs = 0u64;
        let mut nanos = 0u32;
        while secs < u64::MAX / 1_000_000_000 {
            let ts = Timestamp::from_secs_nanos(secs, nanos);
            let s = secs as i64;
            let (y, mo, d) = civil_from_days(s.div_euclid(86_400));
            let sod = s.rem_euclid(86_400);
            let expect = format!(
                "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                sod / 3600,
                (sod / 60) % 60,
                sod % 60,
                nanos / 1_000_000
            );
            assert_eq!(rfc3339_millis(ts), expect);
            secs += 77_777;
            nanos = (nanos + 123_456_791) % 1_000_000_000;
        }
    }

    #[test]
    fn validates_dates() {
        assert!(is_valid_date(2024, 2, 29));
        assert!(!is_valid_date(2023, 2, 29));
        assert!(!is_valid_date(1900, 2, 29));
        assert!(is_valid_date(2000, 2, 29));
        assert!(!is_valid_date(2024, 4, 31));
        assert!(!is_valid_date(2024, 13, 1));
        assert!(!is_valid_date(2024, 1, 0));
    }
}
