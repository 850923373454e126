//! Request targets: the path, session IDs carried in the URL, and the
//! redacted path written into findings.
//!
//! Session IDs appear in URLs as query parameters (`?PHPSESSID=…` from PHP's
//! `session.use_trans_sid`, `?sid=…`) and as path parameters
//! (`/cart;jsessionid=…` from servlet URL rewriting). Both leak through
//! `Referer`, logs and browser history (CWE-598).

/// Where in the URL a session ID was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlLocation {
    /// The query string.
    Query,
    /// A `;name=value` path parameter.
    PathParameter,
}

impl UrlLocation {
    /// Stable evidence value.
    pub const fn as_str(self) -> &'static str {
        match self {
            UrlLocation::Query => "query",
            UrlLocation::PathParameter => "path_parameter",
        }
    }
}

/// The path part of a request target (no query, no fragment). Absolute-form
/// targets (`http://host/path`) yield their path; `*` and authority-form
/// yield themselves.
pub fn path_of(target: &str) -> &str {
    // Origin-form (`/path?q`, nearly every request) has no authority to
    // skip: a `://` later on (`/r?u=http://x`) is preceded by a `/`.
    let t = if target.starts_with('/') {
        target
    } else {
        match target.find("://") {
            Some(i) if !target[..i].contains('/') => {
                let rest = &target[i + 3..];
                match rest.find('/') {
                    Some(j) => &rest[j..],
                    None => "/",
                }
            }
            _ => target,
        }
    };
    let end = memchr::memchr2(b'?', b'#', t.as_bytes()).unwrap_or(t.len());
    &t[..end]
}

/// The query string of a request target (after `?`, before `#`), if any.
pub fn query_of(target: &str) -> Option<&str> {
    let q = &target[memchr::memchr(b'?', target.as_bytes())? + 1..];
    Some(&q[..memchr::memchr(b'#', q.as_bytes()).unwrap_or(q.len())])
}

/// Path with its `;params` removed from every segment, as servlet containers
/// route it (`/cart;jsessionid=X/item` → `/cart/item`). Allocates only when
/// a `;` is present.
pub fn route_path(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains(';') {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(seg.split(';').next().unwrap_or(""));
    }
    std::borrow::Cow::Owned(out)
}

/// Calls `f(name, value, location)` for every query parameter and path
/// parameter of `target` (at most `max` in total).
pub fn for_each_param<'a>(
    target: &'a str,
    max: usize,
    mut f: impl FnMut(&'a str, &'a str, UrlLocation),
) {
    let mut n = 0;
    let path = path_of(target);
    // Path parameters need a `;`; most paths have none.
    let segments = memchr::memchr(b';', path.as_bytes())
        .is_some()
        .then(|| ByteSplit::new(path, b'/'))
        .into_iter()
        .flatten();
    for seg in segments {
        for param in ByteSplit::new(seg, b';').skip(1) {
            if n >= max {
                return;
            }
            n += 1;
            let (k, v) = split_pair(param);
            f(k, v, UrlLocation::PathParameter);
        }
    }
    if let Some(q) = query_of(target) {
        for param in ByteSplit::new(q, b'&') {
            if n >= max {
                return;
            }
            n += 1;
            let (k, v) = split_pair(param);
            f(k, v, UrlLocation::Query);
        }
    }
}

/// `name=value` split at the first `=`; no `=`: the whole as the name.
fn split_pair(param: &str) -> (&str, &str) {
    match memchr::memchr(b'=', param.as_bytes()) {
        Some(i) => (
            param.get(..i).unwrap_or(param),
            param.get(i + 1..).unwrap_or(""),
        ),
        None => (param, ""),
    }
}

/// `str::split` on one ASCII byte, with `memchr`: the same pieces (empty
/// ones included), without setting up a char searcher per call. Splitting
/// at an ASCII byte always lands on a char boundary.
struct ByteSplit<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

impl<'a> ByteSplit<'a> {
    fn new(s: &'a str, sep: u8) -> ByteSplit<'a> {
        debug_assert!(sep.is_ascii());
        ByteSplit { rest: Some(s), sep }
    }
}

impl<'a> Iterator for ByteSplit<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match memchr::memchr(self.sep, rest.as_bytes()) {
            Some(i) => {
                self.rest = rest.get(i + 1..);
                rest.get(..i)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// The path for a finding: no query string, path parameters whose name
/// `is_secret` replaced by `[redacted]`, bounded to `max` bytes.
pub fn redacted_path(target: &str, max: usize, is_secret: impl Fn(&str) -> bool) -> String {
    let mut out = String::with_capacity(path_of(target).len().min(max));
    write_redacted_path(&mut out, target, max, is_secret);
    out
}

/// [`redacted_path`] into `out` (cleared first), reusing its allocation.
pub fn write_redacted_path(
    out: &mut String,
    target: &str,
    max: usize,
    is_secret: impl Fn(&str) -> bool,
) {
    out.clear();
    let path = path_of(target);
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let mut parts = seg.split(';');
        out.push_str(parts.next().unwrap_or(""));
        for p in parts {
            out.push(';');
            match p.split_once('=') {
                Some((k, _)) if is_secret(k) => {
                    out.push_str(k);
                    out.push_str("=[redacted]");
                }
                _ => out.push_str(p),
            }
        }
        if out.len() > max {
            break;
        }
    }
    truncate_utf8(out, max);
}

/// Truncates to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// Largest char boundary of `s` at or below `max`.
pub fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(path_of("/a/b?x=1#f"), "/a/b");
        assert_eq!(path_of("http://shop.example/cart?x"), "/cart");
        assert_eq!(path_of("https://shop.example"), "/");
        assert_eq!(path_of("*"), "*");
        assert_eq!(path_of("/redirect?to=http://x/y"), "/redirect");
        assert_eq!(query_of("/a?b=1&c=2#x"), Some("b=1&c=2"));
        assert_eq!(query_of("/a"), None);
        assert_eq!(route_path("/cart;jsessionid=ABC/item;v=2"), "/cart/item");
        assert_eq!(route_path("/plain"), "/plain");
    }

    #[test]
    fn params() {
        let mut seen = vec![];
        for_each_param(
            "/shop;jsessionid=A1B2/cart?PHPSESSID=abc&x=1&flag",
            10,
            |k, v, l| seen.push((k.to_owned(), v.to_owned(), l)),
        );
        assert_eq!(
            seen[0],
            (
                "jsessionid".into(),
                "A1B2".into(),
                UrlLocation::PathParameter
            )
        );
        assert_eq!(
            seen[1],
            ("PHPSESSID".into(), "abc".into(), UrlLocation::Query)
        );
        assert_eq!(seen.len(), 4);
        let mut n = 0;
        let big = format!("/x?{}", "a=1&".repeat(10_000));
        for_each_param(&big, 64, |_, _, _| n += 1);
        assert_eq!(n, 64);
    }

    /// The parameters as `str::split` finds them: the reference
    /// [`for_each_param`] must agree with.
    fn params_by_str_split(target: &str, max: usize) -> Vec<(String, String, UrlLocation)> {
        let mut out = Vec::new();
        let path = path_of(target);
        if path.contains(';') {
            for seg in path.split('/') {
                for p in seg.split(';').skip(1) {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    out.push((k.to_owned(), v.to_owned(), UrlLocation::PathParameter));
                }
            }
        }
        if let Some(q) = query_of(target) {
            for p in q.split('&') {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                out.push((k.to_owned(), v.to_owned(), UrlLocation::Query));
            }
        }
        out.truncate(max);
        out
    }

    #[test]
    fn params_match_str_split_on_odd_targets() {
        let targets = [
            "/",
            "/a?",
            "/a?&",
            "/a?&&=",
            "/a?=x&=&x=",
            "/a?b==c&d=e=f",
            "/;;/;=;a=b?x#y",
            "/a;b/c;d=e;;f?g=h&i&",
            "/é;k=é/ü?ключ=значение&日本=語",
            "http://h/p;s=1?q=2",
            "/x?a=1#frag&b=2",
            ";?;",
        ];
        for t in targets {
            for max in [0, 1, 3, 64] {
                let mut got = Vec::new();
                for_each_param(t, max, |k, v, l| got.push((k.to_owned(), v.to_owned(), l)));
                assert_eq!(got, params_by_str_split(t, max), "{t:?} max {max}");
            }
        }
    }

    #[test]
    fn redaction() {
        let secret = |k: &str| k.eq_ignore_ascii_case("jsessionid");
        assert_eq!(
            redacted_path("/cart;JSESSIONID=ABCDEF?PHPSESSID=x", 1024, secret),
            "/cart;JSESSIONID=[redacted]"
        );
        assert_eq!(redacted_path("/a;v=1/b", 1024, secret), "/a;v=1/b");
        let long = format!("/{}", "é".repeat(1000));
        let r = redacted_path(&long, 100, secret);
        assert!(r.len() <= 100);
    }
}
