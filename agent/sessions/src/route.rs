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
    glob: Box<str>,
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
            glob: p.into(),
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
        glob_match(self.glob.as_bytes(), path.as_bytes())
    }
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
}
