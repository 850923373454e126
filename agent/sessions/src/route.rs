//! Route patterns: `"METHOD path-glob"` from `[routes]`.
//!
//! `*` in the path matches any run of characters (including `/`); method `*`
//! matches any method. Paths are matched without the query string.

/// Errors parsing a route pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not of the form `METHOD path-glob`.
    #[error("expected \"METHOD path-glob\" (e.g. \"POST /login\"), got {0:?}")]
    Shape(String),
    /// The method is not an HTTP token or `*`.
    #[error("invalid method {0:?}")]
    Method(String),
    /// The path glob does not start with `/` or `*`, or has whitespace.
    #[error("path glob must start with '/' or '*' and contain no whitespace: {0:?}")]
    Path(String),
}

/// One `METHOD path-glob` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    /// Upper-cased method, `None` for `*`.
    method: Option<Box<str>>,
    glob: Glob,
}

/// A `*`-only glob split at its stars once, when the config is loaded.
///
/// Every exchange is classified against every `[routes]` pattern (about 25
/// by default), so matching is on the hot path. With `*` as the only
/// metacharacter a glob `p0*p1*…*pn` matches `s` exactly when `s` starts
/// with `p0`, ends with `pn`, and `p1…pn-1` occur in order, without
/// overlapping, in between — and taking the leftmost occurrence of each
/// middle literal is never worse than any other choice (it leaves the most
/// room for the rest). That is one prefix compare, one suffix compare and a
/// `memmem` per middle literal: linear in the path, no backtracking.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Glob {
    /// Literal before the first `*` (the whole glob when it has no `*`).
    prefix: Box<[u8]>,
    /// Literal after the last `*`; `None` when the glob has no `*`.
    suffix: Option<Box<[u8]>>,
    /// Non-empty literals between stars, in order.
    middle: Box<[Box<[u8]>]>,
}

impl Glob {
    fn new(glob: &str) -> Glob {
        let parts: Vec<&[u8]> = glob.as_bytes().split(|b| *b == b'*').collect();
        match parts.as_slice() {
            [] | [_] => Glob {
                prefix: glob.as_bytes().into(),
                suffix: None,
                middle: Box::default(),
            },
            [first, mid @ .., last] => Glob {
                prefix: (*first).into(),
                suffix: Some((*last).into()),
                middle: mid
                    .iter()
                    .filter(|m| !m.is_empty())
                    .map(|m| Box::<[u8]>::from(*m))
                    .collect(),
            },
        }
    }

    fn matches(&self, s: &[u8]) -> bool {
        let Some(suffix) = &self.suffix else {
            return s.len() == self.prefix.len() && same(&self.prefix, s);
        };
        if s.len() < self.prefix.len() + suffix.len()
            || !same(&self.prefix, &s[..self.prefix.len()])
            || !same(suffix, &s[s.len() - suffix.len()..])
        {
            return false;
        }
        let mut rest = &s[self.prefix.len()..s.len() - suffix.len()];
        for m in self.middle.iter() {
            match memchr::memmem::find(rest, m) {
                Some(at) => rest = &rest[at + m.len()..],
                None => return false,
            }
        }
        true
    }
}

impl RoutePattern {
    /// Parses `"POST /login"`, `"* /logout"`, `"POST /*/password*"`.
    pub fn parse(s: &str) -> Result<RoutePattern, RouteError> {
        let mut parts = s.split_whitespace();
        let (Some(m), Some(p), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(RouteError::Shape(s.to_owned()));
        };
        let method = if m == "*" {
            None
        } else if m
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b))
        {
            Some(m.to_ascii_uppercase().into_boxed_str())
        } else {
            return Err(RouteError::Method(m.to_owned()));
        };
        if !(p.starts_with('/') || p.starts_with('*')) {
            return Err(RouteError::Path(p.to_owned()));
        }
        Ok(RoutePattern {
            method,
            glob: Glob::new(p),
        })
    }

    /// Whether a request with `method` and `path` (no query) matches.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.matches_path(path)
    }

    /// Whether `path` matches, whatever the method (used for redirect
    /// targets: a `302 Location: /login` points at the login route even
    /// though the login route is `POST /login`).
    pub fn matches_path(&self, path: &str) -> bool {
        self.glob.matches(path.as_bytes())
    }
}

/// Byte equality of two equal-length literals, exiting at the first
/// difference. Route literals are short and almost every comparison fails
/// within a byte or two (`/static/` against `/products/1`), where a call
/// into the C library's `memcmp` costs more than the loop.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    debug_assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return false;
        }
    }
    true
}

/// `*`-only glob matching, linear-time backtracking (no exponential blowup
/// on hostile paths).
pub fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if p < pat.len() && pat[p] == s[i] {
            p += 1;
            i += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|b| *b == b'*')
}

/// A list of patterns (one `[routes]` key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSet(pub Vec<RoutePattern>);

impl RouteSet {
    /// Parses every pattern; the error carries the index.
    pub fn parse(list: &[String]) -> Result<RouteSet, (usize, RouteError)> {
        list.iter()
            .enumerate()
            .map(|(i, s)| RoutePattern::parse(s).map_err(|e| (i, e)))
            .collect::<Result<Vec<_>, _>>()
            .map(RouteSet)
    }

    /// Any pattern matches method and path.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.0.iter().any(|r| r.matches(method, path))
    }

    /// Any pattern matches the path, whatever the method.
    pub fn matches_path(&self, path: &str) -> bool {
        self.0.iter().any(|r| r.matches_path(path))
    }

    /// `(self.matches(method, path), self.matches_path(path))` with each
    /// glob evaluated at most once.
    pub fn matches_both(&self, method: &str, path: &str) -> (bool, bool) {
        let (mut full, mut path_only) = (false, false);
        for r in &self.0 {
            if r.matches_path(path) {
                path_only = true;
                if r.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
                {
                    full = true;
                    break;
                }
            }
        }
        (full, path_only)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn design_defaults_match_framework_routes() {
        let login = RouteSet::parse(&crate::config::RoutesConfig::default().login).unwrap();
        assert!(login.matches("POST", "/login"));
        assert!(login.matches("post", "/login"));
        assert!(login.matches("POST", "/accounts/login/")); // Django
        assert!(login.matches("POST", "/api/login"));
        assert!(login.matches("POST", "/session")); // Rails convention
        assert!(!login.matches("GET", "/login"));
        assert!(login.matches_path("/login"));
        assert!(!login.matches("POST", "/loginx/other"));
        let logout = RouteSet::parse(&crate::config::RoutesConfig::default().logout).unwrap();
        assert!(logout.matches("GET", "/logout"));
        assert!(logout.matches("POST", "/accounts/logout"));
        let privilege = RouteSet::parse(&crate::config::RoutesConfig::default().privilege).unwrap();
        assert!(privilege.matches("POST", "/password/change"));
        assert!(privilege.matches("POST", "/account/password"));
    }

    #[test]
    fn matches_both_is_matches_and_matches_path() {
        let set = RouteSet::parse(&crate::config::RoutesConfig::default().login).unwrap();
        for m in ["GET", "POST", "post", "PUT"] {
            for p in [
                "/login",
                "/api/login",
                "/accounts/login/x",
                "/",
                "/sessions",
                "/x/y",
            ] {
                assert_eq!(
                    set.matches_both(m, p),
                    (set.matches(m, p), set.matches_path(p)),
                    "{m} {p}"
                );
            }
        }
    }

    #[test]
    fn glob() {
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"/a*b*c", b"/axxbyyc"));
        assert!(!glob_match(b"/a*b*c", b"/axxbyy"));
        assert!(glob_match(b"*.css", b"/static/app.css"));
        assert!(glob_match(b"/x", b"/x"));
        assert!(!glob_match(b"/x", b"/xy"));
        // Hostile input stays fast.
        let s = "a".repeat(10_000);
        assert!(!glob_match(b"*a*a*a*a*a*b", s.as_bytes()));
    }

    /// The split glob agrees with the backtracking matcher on every
    /// pattern and path built from a small alphabet (stars, the literal
    /// characters, empty literals between adjacent stars).
    #[test]
    fn split_glob_agrees_with_backtracking() {
        fn all(alphabet: &[u8], max: usize) -> Vec<Vec<u8>> {
            let mut out = vec![Vec::new()];
            let mut level = vec![Vec::new()];
            for _ in 0..max {
                let mut next = Vec::new();
                for w in &level {
                    for c in alphabet {
                        let mut v: Vec<u8> = w.clone();
                        v.push(*c);
                        next.push(v);
                    }
                }
                out.extend(next.iter().cloned());
                level = next;
            }
            out
        }
        let pats = all(b"ab*", 5);
        let paths = all(b"ab", 6);
        for p in &pats {
            let g = Glob::new(std::str::from_utf8(p).unwrap());
            for s in &paths {
                assert_eq!(
                    g.matches(s),
                    glob_match(p, s),
                    "{:?} vs {:?}",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(s)
                );
            }
        }
        let s = "a".repeat(10_000);
        assert!(!Glob::new("*a*a*a*a*a*b").matches(s.as_bytes()));
    }

    #[test]
    fn parse_errors() {
        assert!(matches!(
            RoutePattern::parse("POST"),
            Err(RouteError::Shape(_))
        ));
        assert!(matches!(
            RoutePattern::parse("POST /a /b"),
            Err(RouteError::Shape(_))
        ));
        assert!(matches!(
            RoutePattern::parse("PO(ST /a"),
            Err(RouteError::Method(_))
        ));
        assert!(matches!(
            RoutePattern::parse("POST login"),
            Err(RouteError::Path(_))
        ));
        assert!(RoutePattern::parse("* *.css").is_ok());
    }

    #[test]
    fn memo_returns_each_key_its_own_value() {
        let mut memo = RouteMemo::<u64>::default();
        let mut computed = 0;
        // Far more distinct keys than slots: every slot is replaced many
        // times over, and every answer must still be the key's own.
        let value_of =
            |m: &str, p: &str| (m.len() as u64) << 32 | p.bytes().map(u64::from).sum::<u64>();
        for round in 0..2 {
            for i in 0..(4 * MEMO_SLOTS) {
                let path = format!("/p/{i}");
                for m in ["GET", "POST"] {
                    let got = memo.get_or(m, &path, || {
                        computed += 1;
                        value_of(m, &path)
                    });
                    assert_eq!(got, value_of(m, &path), "round {round} {m} {path}");
                }
            }
        }
        assert!(computed > 8 * MEMO_SLOTS, "evicted keys are computed again");
        // A hot key is computed once.
        let before = computed;
        for _ in 0..100 {
            memo.get_or("GET", "/hot", || {
                computed += 1;
                1
            });
        }
        assert_eq!(computed, before + 1);
        // Keys longer than a slot holds are never remembered.
        let long = format!("/{}", "x".repeat(MEMO_KEY_MAX));
        for _ in 0..3 {
            memo.get_or("GET", &long, || {
                computed += 1;
                2
            });
        }
        assert_eq!(computed, before + 4);
    }
}

/// Longest `METHOD path` key [`RouteMemo`] remembers; longer requests are
/// classified every time.
const MEMO_KEY_MAX: usize = 96;
/// Slots of [`RouteMemo`] (a power of two).
const MEMO_SLOTS: usize = 1024;

/// A remembered classification: the exact key it was computed for.
#[derive(Clone)]
struct MemoSlot<T> {
    len: u8,
    key: [u8; MEMO_KEY_MAX],
    value: T,
}

/// Classifications of recent `(method, path)` pairs, so the `[routes]`
/// patterns (about 25 by default, each a prefix, suffix and `memmem` test)
/// run once per distinct request line rather than once per exchange.
///
/// Direct-mapped and fixed in size (about 100 KiB): a pair maps to one
/// slot by a per-process seeded hash and replaces whatever was there, so
/// memory never grows and hostile paths can only cost the patterns' own
/// work. A hit compares the whole stored key, never just the hash: a
/// collision cannot hand one path another's classification.
pub struct RouteMemo<T> {
    slots: Box<[Option<MemoSlot<T>>]>,
    seed: foldhash::fast::RandomState,
}

impl<T: Copy> Default for RouteMemo<T> {
    fn default() -> Self {
        RouteMemo {
            slots: vec![None; MEMO_SLOTS].into_boxed_slice(),
            seed: foldhash::fast::RandomState::default(),
        }
    }
}

impl<T: Copy> RouteMemo<T> {
    /// The value for `method` and `path`: remembered, or computed by
    /// `classify` and remembered.
    pub fn get_or(&mut self, method: &str, path: &str, classify: impl FnOnce() -> T) -> T {
        let len = method.len() + 1 + path.len();
        if len > MEMO_KEY_MAX {
            return classify();
        }
        let mut key = [0u8; MEMO_KEY_MAX];
        key[..method.len()].copy_from_slice(method.as_bytes());
        key[method.len()] = b' ';
        key[method.len() + 1..len].copy_from_slice(path.as_bytes());
        let key_bytes = &key[..len];
        let at =
            (std::hash::BuildHasher::hash_one(&self.seed, key_bytes) as usize) & (MEMO_SLOTS - 1);
        let Some(slot) = self.slots.get_mut(at) else {
            return classify();
        };
        if let Some(s) = slot
            && usize::from(s.len) == len
            && s.key[..len] == *key_bytes
        {
            return s.value;
        }
        let value = classify();
        *slot = Some(MemoSlot {
            len: len as u8,
            key,
            value,
        });
        value
    }
}
