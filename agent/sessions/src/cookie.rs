//! Cookies per RFC 6265bis: the `Cookie` request header and the `Set-Cookie`
//! response header with every attribute, parsed the way browsers do.
//!
//! Parsing borrows from the header bytes and never allocates. Hostile input
//! is bounded by the caller through [`CookieLimits`]: the number of pairs
//! and headers examined is capped and the overflow counted, so a request with
//! 100 000 cookies costs a bounded amount of work.
//!
//! Deletion cookies (`Max-Age=0`, `Expires` in the past, placeholder values
//! such as `deleted`) are recognised here, because they are the clearest
//! logout signal and must never be judged as cookie hygiene.

use crate::cookie_date::parse_cookie_date;

/// Bounds on the work spent on one message's cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieLimits {
    /// Most `name=value` pairs examined across a request's `Cookie` headers.
    pub max_request_pairs: usize,
    /// Most `Set-Cookie` headers examined per response.
    pub max_set_cookies: usize,
    /// Longest name + value accepted (RFC 6265bis: 4096 bytes); longer
    /// cookies are ignored, as browsers ignore them.
    pub max_name_value_len: usize,
    /// Longest attribute value (RFC 6265bis: 1024 bytes); longer attributes
    /// are ignored.
    pub max_attribute_len: usize,
}

impl Default for CookieLimits {
    fn default() -> Self {
        CookieLimits {
            max_request_pairs: 512,
            max_set_cookies: 64,
            max_name_value_len: 4096,
            max_attribute_len: 1024,
        }
    }
}

/// Whitespace around cookie names, values and attributes (SP and HTAB).
fn is_ws(b: &u8) -> bool {
    *b == b' ' || *b == b'\t'
}

/// Trims SP/HTAB on both ends.
pub fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !is_ws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ws(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// Strips one pair of surrounding double quotes (`"abc"` → `abc`). Cookie
/// values may be quoted (RFC 6265 `cookie-value`); the quotes are not part of
/// the session ID for hashing and classification.
pub fn unquote(v: &[u8]) -> &[u8] {
    if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

/// Whether `v` holds an ASCII control character (below 0x20, or DEL):
/// bytes no cookie-octet (RFC 6265 §4.1.1) may be. Every presented session
/// ID is checked, so eight bytes are tested at a time.
pub fn has_control(v: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = v.chunks_exact(8);
    for w in words.by_ref() {
        let Ok(w) = <[u8; 8]>::try_from(w) else {
            break;
        };
        let w = u64::from_le_bytes(w);
        // A byte below 0x20 (its high bit clear before and set after the
        // subtraction), or one equal to 0x7f (zero after the XOR); exact
        // for "is there any such byte", the only question asked.
        let below = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        let d = w ^ (ONES * 0x7f);
        let del = d.wrapping_sub(ONES) & !d & HIGH;
        if below | del != 0 {
            return true;
        }
    }
    words.remainder().iter().any(u8::is_ascii_control)
}

/// One `name=value` pair of a `Cookie` header.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CookiePair<'a> {
    /// Cookie name (may be empty for a nameless cookie).
    pub name: &'a [u8],
    /// Raw value, possibly quoted.
    pub value: &'a [u8],
}

impl std::fmt::Debug for CookiePair<'_> {
    // Values are secrets (session IDs): never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookiePair")
            .field("name", &String::from_utf8_lossy(self.name))
            .field("value_len", &self.value.len())
            .finish()
    }
}

/// Splits one `Cookie` header value into pairs (`a=1; b=2`). A crumb
/// without `=` is a nameless cookie (RFC 6265bis), empty crumbs are skipped.
pub fn parse_cookie_header(value: &[u8]) -> CookiePairs<'_> {
    CookiePairs { rest: Some(value) }
}

/// The pairs of one `Cookie` header ([`parse_cookie_header`]). Browsers
/// send every cookie of the site on every request (analytics and
/// preference cookies make a header of hundreds of bytes), and each
/// request's header is split here: the separators are found with `memchr`,
/// many bytes at a time, not a byte at a time.
#[derive(Debug, Clone)]
pub struct CookiePairs<'a> {
    /// What follows the last `;` taken; `None` once the last crumb is out.
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for CookiePairs<'a> {
    type Item = CookiePair<'a>;

    fn next(&mut self) -> Option<CookiePair<'a>> {
        loop {
            let rest = self.rest?;
            let crumb = match memchr::memchr(b';', rest) {
                Some(i) => {
                    self.rest = rest.get(i + 1..);
                    &rest[..i]
                }
                None => {
                    self.rest = None;
                    rest
                }
            };
            let crumb = trim(crumb);
            if crumb.is_empty() {
                continue;
            }
            return Some(match memchr::memchr(b'=', crumb) {
                Some(eq) => CookiePair {
                    name: trim(&crumb[..eq]),
                    value: trim(&crumb[eq + 1..]),
                },
                None => CookiePair {
                    name: b"",
                    value: crumb,
                },
            });
        }
    }
}

/// `SameSite` as sent by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// No `SameSite` attribute.
    Absent,
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=None`.
    None,
    /// A value browsers do not recognise (treated as "default" enforcement,
    /// which differs between browsers).
    Invalid,
}

impl SameSite {
    /// Stable evidence value.
    pub const fn as_str(self) -> &'static str {
        match self {
            SameSite::Absent => "absent",
            SameSite::Strict => "strict",
            SameSite::Lax => "lax",
            SameSite::None => "none",
            SameSite::Invalid => "invalid",
        }
    }
}

/// The `Path` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathAttr<'a> {
    /// No (or an empty) `Path`: the browser uses the request's default-path.
    Absent,
    /// A `Path` that does not start with `/`: ignored by browsers, which then
    /// use the default-path.
    Invalid(&'a [u8]),
    /// A `/`-rooted path.
    Value(&'a [u8]),
}

/// A parsed `Set-Cookie` header.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SetCookie<'a> {
    /// Cookie name.
    pub name: &'a [u8],
    /// Raw value, possibly quoted.
    pub value: &'a [u8],
    /// `Expires`, seconds since the epoch, when present and parseable.
    pub expires: Option<i64>,
    /// An `Expires` attribute was present but the cookie-date algorithm
    /// failed on it (ignored by browsers).
    pub expires_invalid: bool,
    /// `Max-Age` in seconds (may be zero or negative), last one wins.
    pub max_age: Option<i64>,
    /// `Domain` without a leading dot; `None` when absent or empty.
    pub domain: Option<&'a [u8]>,
    /// `Path`.
    pub path: PathAttr<'a>,
    /// `Secure`.
    pub secure: bool,
    /// `HttpOnly`.
    pub http_only: bool,
    /// `SameSite`.
    pub same_site: SameSite,
    /// `Partitioned` (CHIPS).
    pub partitioned: bool,
    /// Attributes not known to RFC 6265bis (ignored by browsers).
    pub unknown_attributes: u16,
}

impl std::fmt::Debug for SetCookie<'_> {
    // The value is a secret: only its length is printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetCookie")
            .field("name", &String::from_utf8_lossy(self.name))
            .field("value_len", &self.value.len())
            .field("expires", &self.expires)
            .field("max_age", &self.max_age)
            .field("domain", &self.domain.map(String::from_utf8_lossy))
            .field("path", &self.path)
            .field("secure", &self.secure)
            .field("http_only", &self.http_only)
            .field("same_site", &self.same_site)
            .field("partitioned", &self.partitioned)
            .finish()
    }
}

/// Why a `Set-Cookie` is a deletion (the server ends the cookie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionReason {
    /// `Max-Age` zero or negative.
    MaxAgeNotPositive,
    /// `Expires` before the response time (and no `Max-Age`).
    ExpiresInPast,
    /// Empty value.
    EmptyValue,
    /// A placeholder value such as `deleted` (PHP) or `null`.
    PlaceholderValue,
}

impl DeletionReason {
    /// Stable evidence value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeletionReason::MaxAgeNotPositive => "max_age",
            DeletionReason::ExpiresInPast => "expires_in_past",
            DeletionReason::EmptyValue => "empty_value",
            DeletionReason::PlaceholderValue => "placeholder_value",
        }
    }
}

/// Values servers write into a cookie they are clearing.
const PLACEHOLDERS: &[&[u8]] = &[
    b"deleted",
    b"delete",
    b"null",
    b"none",
    b"expired",
    b"invalid",
    b"logout",
    b"loggedout",
    b"logged_out",
];

impl<'a> SetCookie<'a> {
    /// `name=value` without any attribute.
    pub const fn bare(name: &'a [u8], value: &'a [u8]) -> SetCookie<'a> {
        SetCookie {
            name,
            value,
            expires: None,
            expires_invalid: false,
            max_age: None,
            domain: None,
            path: PathAttr::Absent,
            secure: false,
            http_only: false,
            same_site: SameSite::Absent,
            partitioned: false,
            unknown_attributes: 0,
        }
    }

    /// The value without surrounding quotes.
    pub fn unquoted_value(&self) -> &'a [u8] {
        unquote(self.value)
    }

    /// Whether this `Set-Cookie` clears the cookie, judged at `reference`
    /// (seconds since the epoch: the response's `Date` header, else its
    /// event time). `Max-Age` takes precedence over `Expires`, as in browsers.
    pub fn deletion(&self, reference: i64) -> Option<DeletionReason> {
        match self.max_age {
            Some(ma) if ma <= 0 => return Some(DeletionReason::MaxAgeNotPositive),
            Some(_) => {}
            None => {
                if self.expires.is_some_and(|e| e <= reference) {
                    return Some(DeletionReason::ExpiresInPast);
                }
            }
        }
        let v = self.unquoted_value();
        if v.is_empty() {
            return Some(DeletionReason::EmptyValue);
        }
        if PLACEHOLDERS.iter().any(|p| v.eq_ignore_ascii_case(p)) {
            return Some(DeletionReason::PlaceholderValue);
        }
        None
    }

    /// Lifetime in seconds from `reference`, or `None` for a session cookie
    /// (no `Max-Age`/`Expires`, kept until the browser closes). `Max-Age`
    /// takes precedence over `Expires`.
    pub fn lifetime(&self, reference: i64) -> Option<i64> {
        match (self.max_age, self.expires) {
            (Some(ma), _) => Some(ma),
            (None, Some(e)) => Some(e.saturating_sub(reference)),
            (None, None) => None,
        }
    }
}

/// Parses `Max-Age`: an optional `-` then digits; anything else is ignored
/// (RFC 6265bis §5.7.2). Saturates instead of overflowing.
fn parse_max_age(v: &[u8]) -> Option<i64> {
    let (neg, digits) = match v.first()? {
        b'-' => (true, &v[1..]),
        b'0'..=b'9' => (false, v),
        _ => return None,
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mag = digits.iter().fold(0i64, |acc, d| {
        acc.saturating_mul(10).saturating_add(i64::from(d - b'0'))
    });
    Some(if neg { -mag } else { mag })
}

/// A `Set-Cookie` attribute name (RFC 6265bis §5.7, case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attribute {
    Expires,
    MaxAge,
    Domain,
    Path,
    Secure,
    HttpOnly,
    SameSite,
    Partitioned,
    Unknown,
}

impl Attribute {
    /// Looked up by length first: at most two names share one.
    fn of(key: &[u8]) -> Attribute {
        let is = |name: &[u8]| key.eq_ignore_ascii_case(name);
        match key.len() {
            4 if is(b"path") => Attribute::Path,
            6 if is(b"domain") => Attribute::Domain,
            6 if is(b"secure") => Attribute::Secure,
            7 if is(b"expires") => Attribute::Expires,
            7 if is(b"max-age") => Attribute::MaxAge,
            8 if is(b"httponly") => Attribute::HttpOnly,
            8 if is(b"samesite") => Attribute::SameSite,
            11 if is(b"partitioned") => Attribute::Partitioned,
            _ => Attribute::Unknown,
        }
    }
}

/// Parses one `Set-Cookie` header value per RFC 6265bis §5.7. Returns `None`
/// for cookies a browser would ignore (no name and no value, or name+value
/// longer than `limits.max_name_value_len`).
pub fn parse_set_cookie<'a>(header: &'a [u8], limits: &CookieLimits) -> Option<SetCookie<'a>> {
    let (pair, attrs) = match header.iter().position(|b| *b == b';') {
        Some(i) => (&header[..i], &header[i + 1..]),
        None => (header, &header[header.len()..]),
    };
    let (name, value) = match pair.iter().position(|b| *b == b'=') {
        Some(eq) => (trim(&pair[..eq]), trim(&pair[eq + 1..])),
        None => (&pair[..0], trim(pair)),
    };
    if (name.is_empty() && value.is_empty()) || name.len() + value.len() > limits.max_name_value_len
    {
        return None;
    }
    // Control characters in the name or value make browsers drop the cookie.
    let control = |b: &u8| matches!(b, 0x00..=0x08 | 0x0A..=0x1F | 0x7F);
    if name.iter().any(control) || value.iter().any(control) {
        return None;
    }
    let mut sc = SetCookie::bare(name, value);
    // `attrs.split(';')`: every piece, empty ones included.
    let mut rest = Some(attrs);
    while let Some(r) = rest {
        let av = match r.iter().position(|b| *b == b';') {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                &r[..i]
            }
            None => {
                rest = None;
                r
            }
        };
        let (key, val) = match av.iter().position(|b| *b == b'=') {
            Some(eq) => (trim(&av[..eq]), trim(&av[eq + 1..])),
            None => (trim(av), &av[..0]),
        };
        if key.is_empty() {
            continue;
        }
        if val.len() > limits.max_attribute_len {
            continue;
        }
        match Attribute::of(key) {
            Attribute::Expires => match parse_cookie_date(val) {
                Some(t) => {
                    sc.expires = Some(t);
                    sc.expires_invalid = false;
                }
                None => sc.expires_invalid = true,
            },
            Attribute::MaxAge => {
                if let Some(ma) = parse_max_age(val) {
                    sc.max_age = Some(ma);
                }
            }
            Attribute::Domain => {
                let d = val.strip_prefix(b".").unwrap_or(val);
                sc.domain = if d.is_empty() { None } else { Some(d) };
            }
            Attribute::Path => {
                sc.path = match val.first() {
                    None => PathAttr::Absent,
                    Some(b'/') => PathAttr::Value(val),
                    Some(_) => PathAttr::Invalid(val),
                };
            }
            Attribute::Secure => sc.secure = true,
            Attribute::HttpOnly => sc.http_only = true,
            Attribute::SameSite => {
                sc.same_site = if val.eq_ignore_ascii_case(b"strict") {
                    SameSite::Strict
                } else if val.eq_ignore_ascii_case(b"lax") {
                    SameSite::Lax
                } else if val.eq_ignore_ascii_case(b"none") {
                    SameSite::None
                } else {
                    SameSite::Invalid
                };
            }
            Attribute::Partitioned => sc.partitioned = true,
            Attribute::Unknown => {
                sc.unknown_attributes = sc.unknown_attributes.saturating_add(1);
            }
        }
    }
    Some(sc)
}

/// The `__Host-` / `__Secure-` prefix of a cookie name. RFC 6265bis matches
/// prefixes case-insensitively (browsers do since 2024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookiePrefix {
    /// `__Host-`: Secure, no Domain, Path=/, secure origin.
    Host,
    /// `__Secure-`: Secure, secure origin.
    Secure,
}

impl CookiePrefix {
    /// The prefix as written in the RFC.
    pub const fn as_str(self) -> &'static str {
        match self {
            CookiePrefix::Host => "__Host-",
            CookiePrefix::Secure => "__Secure-",
        }
    }
}

/// Splits a cookie name into its prefix (if any) and the bare name.
pub fn split_prefix(name: &[u8]) -> (Option<CookiePrefix>, &[u8]) {
    const HOST: &[u8] = b"__Host-";
    const SECURE: &[u8] = b"__Secure-";
    if name.len() >= HOST.len() && name[..HOST.len()].eq_ignore_ascii_case(HOST) {
        (Some(CookiePrefix::Host), &name[HOST.len()..])
    } else if name.len() >= SECURE.len() && name[..SECURE.len()].eq_ignore_ascii_case(SECURE) {
        (Some(CookiePrefix::Secure), &name[SECURE.len()..])
    } else {
        (None, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_header_pairs_are_the_split_at_every_separator() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        // The header read plainly: split at every `;`, trim, drop empty
        // crumbs, split each at its first `=`.
        fn reference(v: &[u8]) -> Vec<CookiePair<'_>> {
            v.split(|b| *b == b';')
                .map(trim)
                .filter(|c| !c.is_empty())
                .map(|c| match c.iter().position(|b| *b == b'=') {
                    Some(eq) => CookiePair {
                        name: trim(&c[..eq]),
                        value: trim(&c[eq + 1..]),
                    },
                    None => CookiePair {
                        name: b"",
                        value: c,
                    },
                })
                .collect()
        }
        // Separators, blanks and quotes dense enough to land everywhere,
        // in headers long enough for memchr's vector loops.
        let byte = prop_oneof![
            Just(b';'),
            Just(b'='),
            Just(b' '),
            Just(b'\t'),
            Just(b'"'),
            b'a'..=b'e',
            any::<u8>(),
        ];
        let header = proptest::collection::vec(byte, 0..200);
        let mut runner = TestRunner::new(Config {
            cases: 512,
            ..Config::default()
        });
        runner
            .run(&header, |h| {
                prop_assert_eq!(parse_cookie_header(&h).collect::<Vec<_>>(), reference(&h));
                Ok(())
            })
            .map_err(|e| e.to_string())
            .expect("the pairs are the plain split");
        for h in [
            &b""[..],
            b";",
            b";;",
            b"a",
            b"a;",
            b";a",
            b"=",
            b"a=",
            b"=b",
            b" ; a = b ; ",
        ] {
            assert_eq!(
                parse_cookie_header(h).collect::<Vec<_>>(),
                reference(h),
                "{h:?}"
            );
        }
    }

    #[test]
    fn control_bytes_are_found_at_every_offset() {
        // Every byte value at every position of words and tails, against
        // the plain byte test; high bytes (UTF-8) next to it must not
        // borrow into a false hit.
        for len in 1..=19 {
            for at in 0..len {
                for b in 0..=255u8 {
                    for fill in [b'a', 0x80, 0xff, 0x21] {
                        let mut v = vec![fill; len];
                        v[at] = b;
                        assert_eq!(has_control(&v), v.iter().any(u8::is_ascii_control), "{v:?}");
                    }
                }
            }
        }
        assert!(!has_control(b""));
    }

    fn sc(s: &str) -> SetCookie<'_> {
        parse_set_cookie(s.as_bytes(), &CookieLimits::default()).expect("parses")
    }

    /// RFC 6265bis §5.7 read plainly: split at every `;`, then an ordered
    /// case-insensitive comparison with each attribute name. The parser
    /// must agree with it on any input.
    fn reference<'a>(header: &'a [u8], limits: &CookieLimits) -> Option<SetCookie<'a>> {
        let mut pieces = header.split(|b| *b == b';');
        let pair = pieces.next().unwrap_or_default();
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(eq) => (trim(&pair[..eq]), trim(&pair[eq + 1..])),
            None => (&pair[..0], trim(pair)),
        };
        let control = |b: &u8| matches!(b, 0x00..=0x08 | 0x0A..=0x1F | 0x7F);
        if (name.is_empty() && value.is_empty())
            || name.len() + value.len() > limits.max_name_value_len
            || name.iter().chain(value).any(control)
        {
            return None;
        }
        let mut sc = SetCookie::bare(name, value);
        for av in pieces {
            let (key, val) = match av.iter().position(|b| *b == b'=') {
                Some(eq) => (trim(&av[..eq]), trim(&av[eq + 1..])),
                None => (trim(av), &av[..0]),
            };
            if key.is_empty() || val.len() > limits.max_attribute_len {
                continue;
            }
            let k = |s: &str| key.eq_ignore_ascii_case(s.as_bytes());
            if k("expires") {
                match parse_cookie_date(val) {
                    Some(t) => (sc.expires, sc.expires_invalid) = (Some(t), false),
                    None => sc.expires_invalid = true,
                }
            } else if k("max-age") {
                sc.max_age = parse_max_age(val).or(sc.max_age);
            } else if k("domain") {
                let d = val.strip_prefix(b".").unwrap_or(val);
                sc.domain = (!d.is_empty()).then_some(d);
            } else if k("path") {
                sc.path = match val.first() {
                    None => PathAttr::Absent,
                    Some(b'/') => PathAttr::Value(val),
                    Some(_) => PathAttr::Invalid(val),
                };
            } else if k("secure") {
                sc.secure = true;
            } else if k("httponly") {
                sc.http_only = true;
            } else if k("samesite") {
                let v = |s: &str| val.eq_ignore_ascii_case(s.as_bytes());
                sc.same_site = if v("strict") {
                    SameSite::Strict
                } else if v("lax") {
                    SameSite::Lax
                } else if v("none") {
                    SameSite::None
                } else {
                    SameSite::Invalid
                };
            } else if k("partitioned") {
                sc.partitioned = true;
            } else {
                sc.unknown_attributes = sc.unknown_attributes.saturating_add(1);
            }
        }
        Some(sc)
    }

    #[test]
    fn set_cookie_parser_agrees_with_the_plain_reading() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let limits = CookieLimits {
            max_attribute_len: 12,
            max_name_value_len: 24,
            ..CookieLimits::default()
        };
        // Attribute names in any case, near misses, junk; values; joined
        // by `;` with or without spaces.
        let j = |s: &str| Just(s.to_owned());
        let key = prop_oneof![
            j("Path"),
            j("dOmAiN"),
            j("SECURE"),
            j("httponly"),
            j("SameSite"),
            j("Max-Age"),
            j("Expires"),
            j("Partitioned"),
            j("Securee"),
            j(" path "),
            j(""),
            "[ \\t.a-zA-Z\\x01-]{0,9}",
        ];
        let value = prop_oneof![
            j(""),
            j("="),
            j("=Wed, 21 Oct 2026 07:28:00 GMT"),
            j("=not a date"),
            j("=lax"),
            j("= STRICT"),
            j("=-5"),
            j("=/app"),
            j("=.example.com"),
            "=[ =;/.a-zA-Z0-9\\x01-]{0,14}",
        ];
        let attribute = (key, value, "[; ]{1,2}").prop_map(|(k, v, sep)| format!("{sep}{k}{v}"));
        let head = "[ =a-z0-9\\x7f]{0,10}";
        let mut runner = TestRunner::new(Config {
            cases: 4096,
            ..Config::default()
        });
        runner
            .run(
                &(head, proptest::collection::vec(attribute, 0..8)),
                |(head, attributes)| {
                    let h = format!("{head}{}", attributes.concat());
                    let h = h.as_bytes();
                    prop_assert_eq!(
                        parse_set_cookie(h, &limits),
                        reference(h, &limits),
                        "{:?}",
                        String::from_utf8_lossy(h)
                    );
                    Ok(())
                },
            )
            .unwrap();
    }

    #[test]
    fn cookie_header_pairs() {
        let pairs: Vec<_> =
            parse_cookie_header(b"csrftoken=abc; sessionid=x1y2 ;  ;flag; q=\"quoted\"").collect();
        assert_eq!(pairs.len(), 4);
        assert_eq!(pairs[1].name, b"sessionid");
        assert_eq!(pairs[1].value, b"x1y2");
        assert_eq!(pairs[2].name, b"");
        assert_eq!(pairs[2].value, b"flag");
        assert_eq!(unquote(pairs[3].value), b"quoted");
    }

    #[test]
    fn value_with_equals_signs_is_kept_whole() {
        // Base64 padding and Rails `--` blobs contain '='.
        let p: Vec<_> = parse_cookie_header(b"_app_session=YWJj==--ZGVm=").collect();
        assert_eq!(p[0].value, b"YWJj==--ZGVm=");
    }

    #[test]
    fn set_cookie_all_attributes() {
        let c = sc(
            "__Host-sessionid=abc123; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Max-Age=3600; \
                    Domain=.Shop.Example; Path=/; Secure; HttpOnly; SameSite=Lax; Partitioned; Priority=High",
        );
        assert_eq!(c.name, b"__Host-sessionid");
        assert_eq!(c.value, b"abc123");
        assert_eq!(c.max_age, Some(3600));
        assert!(c.expires.is_some());
        assert_eq!(c.domain, Some(&b"Shop.Example"[..]));
        assert_eq!(c.path, PathAttr::Value(b"/"));
        assert!(c.secure && c.http_only && c.partitioned);
        assert_eq!(c.same_site, SameSite::Lax);
        assert_eq!(c.unknown_attributes, 1);
        // Max-Age wins over Expires.
        assert_eq!(c.lifetime(0), Some(3600));
    }

    #[test]
    fn attribute_names_are_case_insensitive_and_samesite_invalid() {
        let c = sc("sid=1; SECURE; httponly; samesite=Strict");
        assert!(c.secure && c.http_only);
        assert_eq!(c.same_site, SameSite::Strict);
        assert_eq!(sc("sid=1; SameSite=Relaxed").same_site, SameSite::Invalid);
        assert_eq!(sc("sid=1; SameSite").same_site, SameSite::Invalid);
        assert_eq!(sc("sid=1; SameSite=none").same_site, SameSite::None);
        assert_eq!(sc("sid=1").same_site, SameSite::Absent);
    }

    #[test]
    fn path_and_domain_edge_cases() {
        assert_eq!(sc("sid=1; Path=").path, PathAttr::Absent);
        assert_eq!(sc("sid=1; Path=app").path, PathAttr::Invalid(b"app"));
        assert_eq!(sc("sid=1; Domain=").domain, None);
        assert_eq!(sc("sid=1; Domain=.").domain, None);
    }

    #[test]
    fn max_age_forms() {
        assert_eq!(sc("sid=1; Max-Age=0").max_age, Some(0));
        assert_eq!(sc("sid=1; Max-Age=-1").max_age, Some(-1));
        assert_eq!(sc("sid=1; Max-Age=abc").max_age, None);
        assert_eq!(sc("sid=1; Max-Age=+5").max_age, None);
        assert_eq!(
            sc("sid=1; Max-Age=99999999999999999999999").max_age,
            Some(i64::MAX)
        );
        // Last one wins.
        assert_eq!(sc("sid=1; Max-Age=10; Max-Age=20").max_age, Some(20));
    }

    #[test]
    fn deletion_detection() {
        let now = 1_900_000_000;
        // Django logout.
        let c = sc(
            "sessionid=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/; SameSite=Lax",
        );
        assert_eq!(c.deletion(now), Some(DeletionReason::MaxAgeNotPositive));
        // PHP setcookie(name, '', time()-3600) writes "deleted".
        let c = sc("PHPSESSID=deleted; expires=Thu, 01-Jan-1970 00:00:01 GMT; Max-Age=0; path=/");
        assert!(c.deletion(now).is_some());
        let c = sc("PHPSESSID=deleted; path=/");
        assert_eq!(c.deletion(now), Some(DeletionReason::PlaceholderValue));
        // Expires in the past, no Max-Age.
        let c = sc("JSESSIONID=abc; Expires=Thu, 01 Jan 1970 00:00:10 GMT");
        assert_eq!(c.deletion(now), Some(DeletionReason::ExpiresInPast));
        // Max-Age positive overrides a past Expires.
        let c = sc("JSESSIONID=abc; Expires=Thu, 01 Jan 1970 00:00:10 GMT; Max-Age=60");
        assert_eq!(c.deletion(now), None);
        // Spring: empty value with Max-Age=0.
        assert!(sc("JSESSIONID=; Max-Age=0; Path=/").deletion(now).is_some());
        assert_eq!(
            sc("connect.sid=; Path=/").deletion(now),
            Some(DeletionReason::EmptyValue)
        );
        // A live cookie.
        assert_eq!(sc("sessionid=k3j4h5; Path=/; HttpOnly").deletion(now), None);
    }

    #[test]
    fn ignored_cookies() {
        let l = CookieLimits::default();
        assert!(parse_set_cookie(b"", &l).is_none());
        assert!(parse_set_cookie(b"=", &l).is_none());
        assert!(parse_set_cookie(b"; Path=/", &l).is_none());
        let big = format!("sid={}", "a".repeat(5000));
        assert!(parse_set_cookie(big.as_bytes(), &l).is_none());
        assert!(parse_set_cookie(b"sid=a\x01b", &l).is_none());
        // Nameless cookie: value only.
        let c = parse_set_cookie(b"justavalue; Path=/", &l).unwrap();
        assert_eq!((c.name, c.value), (&b""[..], &b"justavalue"[..]));
    }

    #[test]
    fn oversized_attribute_is_ignored() {
        let long = format!("sid=1; Path=/{}; Secure", "a".repeat(2000));
        let c = parse_set_cookie(long.as_bytes(), &CookieLimits::default()).unwrap();
        assert_eq!(c.path, PathAttr::Absent);
        assert!(c.secure);
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            split_prefix(b"__Host-sid"),
            (Some(CookiePrefix::Host), &b"sid"[..])
        );
        assert_eq!(
            split_prefix(b"__secure-sid"),
            (Some(CookiePrefix::Secure), &b"sid"[..])
        );
        assert_eq!(split_prefix(b"sid"), (None, &b"sid"[..]));
        assert_eq!(split_prefix(b"__Host"), (None, &b"__Host"[..]));
    }

    #[test]
    fn debug_never_shows_values() {
        let c = sc("sessionid=SECRETVALUE; Path=/");
        assert!(!format!("{c:?}").contains("SECRETVALUE"));
        let p = parse_cookie_header(b"sessionid=SECRETVALUE")
            .next()
            .unwrap();
        assert!(!format!("{p:?}").contains("SECRETVALUE"));
    }
}
