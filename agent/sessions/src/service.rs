//! Which service an exchange belongs to: `[[services]]` by host (exact or
//! `*.suffix`), else the `app.kubernetes.io/name` label of the capturing
//! process's pod (`[kubernetes]` enrichment), else the name of the process
//! that captured it, else `default`. Names are interned into a bounded table, so a hostile `Host`
//! header can never create a label value.

use std::collections::HashMap;

use sessionwatch_http::Exchange;

use crate::config::ServiceConfig;
use crate::stats::MAX_SERVICES;

/// Host without port and trailing dot (`Shop.Example:443` → `Shop.Example`;
/// `[::1]:8080` → `::1`). Case is kept; comparisons ignore it.
pub fn bare_host(host: &str) -> &str {
    // ASCII trim: HTTP's optional whitespace is SP and HTAB (RFC 9110
    // §5.6.3); `str::trim` would decode every character for Unicode
    // whitespace, and this runs twice per exchange.
    let h = host.trim_ascii();
    let h = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        // Byte searches: `:` is ASCII, so the split lands on char
        // boundaries.
        let b = h.as_bytes();
        match memchr::memrchr(b':', b) {
            Some(i)
                if memchr::memchr(b':', &b[..i]).is_none()
                    && b[i + 1..].iter().all(u8::is_ascii_digit) =>
            {
                h.get(..i).unwrap_or(h)
            }
            _ => h,
        }
    };
    h.strip_suffix('.').unwrap_or(h)
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// Resolves and interns service names.
#[derive(Debug, Clone)]
pub struct ServiceResolver {
    rules: Vec<(Box<str>, u16)>,
    /// Looked up once per exchange: seeded foldhash instead of SipHash
    /// (names are short; the seed keeps hostile host names from being aimed
    /// at one bucket, and the table is capped).
    ids: HashMap<Box<str>, u16, foldhash::fast::RandomState>,
    names: Vec<Box<str>>,
    /// The id [`ServiceResolver::intern`] returned last: consecutive
    /// exchanges nearly always belong to the same service, so one compare
    /// with its name settles most of them without hashing.
    last: u16,
    /// Exchanges assigned to `other` because the table was full.
    pub overflow: u64,
}

/// Name used when neither config nor process names the service.
pub const DEFAULT_SERVICE: &str = "default";
/// Name used once the table is full.
pub const OTHER_SERVICE: &str = "other";

impl ServiceResolver {
    /// Builds the resolver; configured services get the first ids.
    pub fn new(services: &[ServiceConfig]) -> ServiceResolver {
        let mut r = ServiceResolver {
            rules: Vec::new(),
            ids: HashMap::default(),
            names: Vec::new(),
            last: 0,
            overflow: 0,
        };
        for s in services {
            let id = r.intern(&s.name);
            for h in &s.hosts {
                r.rules.push((h.as_str().into(), id));
            }
        }
        r
    }

    fn intern(&mut self, name: &str) -> u16 {
        if self
            .names
            .get(usize::from(self.last))
            .is_some_and(|n| **n == *name)
        {
            return self.last;
        }
        if let Some(id) = self.ids.get(name) {
            self.last = *id;
            return *id;
        }
        if self.names.len() >= MAX_SERVICES - 1 && name != OTHER_SERVICE {
            self.overflow += 1;
            return self.intern(OTHER_SERVICE);
        }
        let id = self.names.len() as u16;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        self.last = id;
        id
    }

    /// The service of an exchange.
    pub fn resolve(&mut self, ex: &Exchange) -> u16 {
        if !self.rules.is_empty()
            && let Some(host) = ex.request.host.as_deref()
        {
            let h = bare_host(host);
            if let Some((_, id)) = self.rules.iter().find(|(p, _)| host_matches(p, h)) {
                return *id;
            }
        }
        let process = ex.conn.process.as_ref();
        // The pod's app label names the workload (every replica, whatever
        // its binary is called) better than `comm` does.
        if let Some(app) = process
            .and_then(|p| p.pod.as_deref())
            .and_then(|k| k.app.as_deref())
            .filter(|a| !a.is_empty())
        {
            let app = &app[..crate::url::floor_char_boundary(app, 63)];
            return self.intern(app);
        }
        match process.map(|p| p.comm.as_str()).filter(|c| !c.is_empty()) {
            Some(comm) => {
                // comm is at most 16 bytes in the kernel; bound it anyway.
                let comm = &comm[..comm.len().min(crate::url::floor_char_boundary(comm, 32))];
                self.intern(comm)
            }
            None => self.intern(DEFAULT_SERVICE),
        }
    }

    /// Name of service `id`.
    pub fn name(&self, id: u16) -> &str {
        self.names.get(usize::from(id)).map_or(OTHER_SERVICE, |s| s)
    }

    /// Services known so far.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(bare_host("Shop.Example:443"), "Shop.Example");
        assert_eq!(bare_host("[::1]:8080"), "::1");
        assert_eq!(bare_host("shop.example."), "shop.example");
        assert_eq!(bare_host("::1"), "::1");
        assert_eq!(bare_host(" shop.example: "), "shop.example");
        assert_eq!(bare_host("shop.example:8x"), "shop.example:8x");
        assert_eq!(bare_host("a:b:1"), "a:b:1");
        assert_eq!(bare_host("bücher.example:80"), "bücher.example");
        assert!(host_matches("*.shop.example", "api.SHOP.example"));
        assert!(!host_matches("*.shop.example", "shop.example"));
        assert!(!host_matches("*.shop.example", "evilshop.example"));
        assert!(host_matches("shop.example", "SHOP.EXAMPLE"));
    }

    /// `[[services]]` by host, then the pod's app label, then `comm`.
    #[test]
    fn precedence_host_then_pod_label_then_comm() {
        use std::sync::Arc;

        use sessionwatch_streams::PodInfo;

        use crate::detectors::testkit::Ex;

        let with_pod = |host: &str, app: Option<&str>| {
            let mut ex = Ex::get("/").host(host).comm("nginx").build();
            let process = Arc::make_mut(&mut ex.conn)
                .process
                .as_mut()
                .expect("process");
            process.pod = Some(Arc::new(PodInfo {
                name: "shop-7d4b9c-x2x8k".into(),
                namespace: "prod".into(),
                app: app.map(Into::into),
            }));
            ex
        };
        let mut r = ServiceResolver::new(&[ServiceConfig {
            name: "storefront".into(),
            hosts: vec!["shop.example".into()],
        }]);
        let id = r.resolve(&with_pod("shop.example", Some("shop")));
        assert_eq!(r.name(id), "storefront", "a configured host wins");
        let id = r.resolve(&with_pod("other.example", Some("shop")));
        assert_eq!(r.name(id), "shop", "then the pod's app label");
        let id = r.resolve(&with_pod("other.example", None));
        assert_eq!(r.name(id), "nginx", "a pod without the label: comm");
        let id = r.resolve(&with_pod("other.example", Some("")));
        assert_eq!(r.name(id), "nginx", "an empty label is no name");
        let id = r.resolve(&Ex::get("/").host("other.example").comm("nginx").build());
        assert_eq!(r.name(id), "nginx", "no pod: comm");
    }
}
