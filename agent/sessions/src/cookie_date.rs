//! The cookie-date algorithm of RFC 6265bis §5.1.1.
//!
//! Servers write `Expires` in every format HTTP has known — RFC 1123
//! (`Sun, 06 Nov 1994 08:49:37 GMT`), RFC 850 (`Sunday, 06-Nov-94 08:49:37
//! GMT`), asctime (`Sun Nov  6 08:49:37 1994`) and many broken variants
//! (dashes, missing weekday, lower case, two-digit years). Browsers do not
//! parse these with a grammar but with this token-scanning algorithm, so to
//! know what a browser does with a cookie we must do the same.

use crate::timefmt::{days_from_civil, is_valid_date};

/// Delimiters of the algorithm: `%x09 / %x20-2F / %x3B-40 / %x5B-60 / %x7B-7E`.
fn is_delimiter(b: u8) -> bool {
    matches!(b, 0x09 | 0x20..=0x2F | 0x3B..=0x40 | 0x5B..=0x60 | 0x7B..=0x7E)
}

/// Parses `1*2DIGIT` at the start of `s` followed by nothing or a non-digit;
/// returns the value and the rest after the digits.
fn leading_digits(s: &[u8], min: usize, max: usize) -> Option<(u32, &[u8])> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n < min || n > max {
        return None;
    }
    let v = s[..n]
        .iter()
        .fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'));
    Some((v, &s[n..]))
}

/// `hms-time = time-field ":" time-field ":" time-field` with `time-field =
/// 1*2DIGIT`, optionally followed by a non-digit and anything.
fn parse_time(token: &[u8]) -> Option<(u32, u32, u32)> {
    let (h, rest) = leading_digits(token, 1, 2)?;
    let rest = rest.strip_prefix(b":")?;
    let (m, rest) = leading_digits(rest, 1, 2)?;
    let rest = rest.strip_prefix(b":")?;
    let (s, _) = leading_digits(rest, 1, 2)?;
    Some((h, m, s))
}

fn parse_month(token: &[u8]) -> Option<u32> {
    const MONTHS: [&[u8; 3]; 12] = [
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
        b"dec",
    ];
    let head = token.get(..3)?;
    MONTHS
        .iter()
        .position(|m| head.eq_ignore_ascii_case(&m[..]))
        .map(|i| i as u32 + 1)
}

/// Parses a cookie date; returns seconds since the Unix epoch, or `None`
/// when the algorithm fails (the attribute is then ignored, as browsers do).
pub fn parse_cookie_date(input: &[u8]) -> Option<i64> {
    let mut time: Option<(u32, u32, u32)> = None;
    let mut day: Option<u32> = None;
    let mut month: Option<u32> = None;
    let mut year: Option<u32> = None;

    for token in input.split(|b| is_delimiter(*b)).filter(|t| !t.is_empty()) {
        if time.is_none()
            && let Some(t) = parse_time(token)
        {
            time = Some(t);
            continue;
        }
        if day.is_none()
            && let Some((d, _)) = leading_digits(token, 1, 2)
        {
            day = Some(d);
            continue;
        }
        if month.is_none()
            && let Some(m) = parse_month(token)
        {
            month = Some(m);
            continue;
        }
        if year.is_none()
            && let Some((y, _)) = leading_digits(token, 2, 4)
        {
            year = Some(y);
            continue;
        }
    }

    let (hour, minute, second) = time?;
    let (day, month, mut year) = (day?, month?, year?);
    if (70..=99).contains(&year) {
        year += 1900;
    } else if year <= 69 {
        year += 2000;
    }
    if !(1..=31).contains(&day) || year < 1601 || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let year = i64::from(year);
    if !is_valid_date(year, month, day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOV_6_1994: i64 = 784_111_777; // 1994-11-06T08:49:37Z

    #[test]
    fn the_three_http_date_formats() {
        assert_eq!(
            parse_cookie_date(b"Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(NOV_6_1994)
        );
        assert_eq!(
            parse_cookie_date(b"Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(NOV_6_1994)
        );
        assert_eq!(
            parse_cookie_date(b"Sun Nov  6 08:49:37 1994"),
            Some(NOV_6_1994)
        );
    }

    #[test]
    fn real_world_variants() {
        // Dashes with a four-digit year (PHP, many Java stacks).
        assert_eq!(
            parse_cookie_date(b"Sun, 06-Nov-1994 08:49:37 GMT"),
            Some(NOV_6_1994)
        );
        // No weekday, lower case month, no zone.
        assert_eq!(parse_cookie_date(b"06 nov 1994 08:49:37"), Some(NOV_6_1994));
        // Django's deletion date.
        assert_eq!(parse_cookie_date(b"Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        // Two-digit years: 00..69 are 2000+, 70..99 are 1900+.
        assert_eq!(
            parse_cookie_date(b"Wed, 01-Jan-30 00:00:00 GMT"),
            Some(1_893_456_000)
        );
        assert_eq!(parse_cookie_date(b"Thu, 01-Jan-70 00:00:01 GMT"), Some(1));
        // Single-digit time fields.
        assert_eq!(
            parse_cookie_date(b"Sun, 6 Nov 1994 8:49:37 GMT"),
            Some(NOV_6_1994)
        );
        // Full month name.
        assert_eq!(
            parse_cookie_date(b"6 November 1994 08:49:37"),
            Some(NOV_6_1994)
        );
    }

    #[test]
    fn rejects_invalid_dates() {
        assert_eq!(parse_cookie_date(b""), None);
        assert_eq!(parse_cookie_date(b"tomorrow"), None);
        assert_eq!(parse_cookie_date(b"Sun, 06 Nov 1994"), None); // no time
        assert_eq!(parse_cookie_date(b"Sun, 32 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(parse_cookie_date(b"Sun, 31 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(parse_cookie_date(b"Sun, 06 Nov 1600 08:49:37 GMT"), None);
        assert_eq!(parse_cookie_date(b"Sun, 06 Nov 1994 24:00:00 GMT"), None);
        assert_eq!(parse_cookie_date(b"Sun, 06 Nov 1994 08:60:00 GMT"), None);
        assert_eq!(parse_cookie_date(b"Sun, 06 Foo 1994 08:49:37 GMT"), None);
        // Three-digit day tokens never match the day production.
        assert_eq!(parse_cookie_date(b"Sun, 006 Nov 1994 08:49:37 GMT"), None);
    }

    #[test]
    fn far_future_years() {
        assert_eq!(
            parse_cookie_date(b"Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(253_402_300_799)
        );
    }
}
