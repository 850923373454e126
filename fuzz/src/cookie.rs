//! `Cookie` and `Set-Cookie` parsers (plus the cookie date parser behind
//! `Expires`).
//!
//! Input: byte 0 picks the split point; the bytes before it are a `Cookie`
//! header value, the rest a `Set-Cookie` header value. Checked besides "no
//! panic": every pair is a trimmed slice of its crumb, and no `Debug`
//! output ever depends on a cookie value (values are session IDs).

use sessionwatch_sessions::cookie::{
    CookieLimits, CookiePair, SetCookie, parse_cookie_header, parse_set_cookie, split_prefix, trim,
    unquote,
};
use sessionwatch_sessions::cookie_date::parse_cookie_date;

/// A value of the same length as `v` but different in every byte: `Debug`
/// of a struct must not change when only its (secret) value does.
fn other_value(v: &[u8]) -> Vec<u8> {
    v.iter().map(|b| b ^ 0x55).collect()
}

/// Runs one input (see the module documentation for its format).
pub fn run(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let (cookie, set_cookie) = data.split_at(usize::from(split).min(data.len()));

    for pair in parse_cookie_header(cookie) {
        assert!(!pair.name.contains(&b';') && !pair.value.contains(&b';'));
        assert_eq!(trim(pair.name), pair.name);
        assert_eq!(trim(pair.value), pair.value);
        let _ = split_prefix(pair.name);
        let v = unquote(pair.value);
        assert!(v.len() <= pair.value.len());
        let other = other_value(pair.value);
        let twin = CookiePair {
            value: &other,
            ..pair
        };
        assert_eq!(
            format!("{pair:?}"),
            format!("{twin:?}"),
            "Debug of a cookie pair shows its value"
        );
    }

    let limits = CookieLimits::default();
    if let Some(sc) = parse_set_cookie(set_cookie, &limits) {
        assert!(sc.name.len() + sc.value.len() <= limits.max_name_value_len);
        let _ = split_prefix(sc.name);
        for reference in [0, 1_700_000_000, i64::MAX, i64::MIN] {
            let _ = sc.deletion(reference);
            let _ = sc.lifetime(reference);
        }
        let other = other_value(sc.value);
        let twin = SetCookie {
            value: &other,
            ..sc
        };
        assert_eq!(
            format!("{sc:?}"),
            format!("{twin:?}"),
            "Debug of a Set-Cookie shows its value"
        );
    }
    let _ = parse_cookie_date(set_cookie);
}
