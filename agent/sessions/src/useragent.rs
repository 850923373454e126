//! User-Agent reduced to family and major version.
//!
//! A browser updates itself every few weeks; if the full User-Agent string
//! were part of the client fingerprint, every update would look like a
//! session moving to a new client. The fingerprint uses the family (Chrome,
//! Firefox, Safari, curl, okhttp, Googlebot, …) and the major version only.
//! Families outside the built-in table become a normalised prefix (the first
//! product token, lower-cased), interned in a bounded table so a flood of
//! random User-Agents cannot grow memory.

use std::collections::HashMap;

/// Interned family id.
pub type FamilyId = u16;

/// Family and major version: the User-Agent part of a client fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct UaKey {
    /// Interned family (see [`UaTable::family_name`]).
    pub family: FamilyId,
    /// Major version (0 when unknown).
    pub major: u16,
}

/// Built-in families; their ids are their positions.
const KNOWN: &[&str] = &[
    "none", // no User-Agent header
    "other",
    "edge",
    "opera",
    "samsung_internet",
    "yandex",
    "vivaldi",
    "uc_browser",
    "firefox",
    "chrome",
    "chromium",
    "chrome_headless",
    "safari",
    "webkit",
    "ie",
    "mozilla",
];

/// Family id of a missing User-Agent.
pub const FAMILY_NONE: FamilyId = 0;
/// Family id when the bounded intern table is full.
pub const FAMILY_OTHER: FamilyId = 1;

/// Browser markers checked in order (more specific first: Edge, Opera and
/// Samsung Internet also carry `Chrome/` and `Safari/`).
const BROWSER_MARKERS: &[(&str, &str)] = &[
    ("Edg/", "edge"),
    ("Edge/", "edge"),
    ("EdgA/", "edge"),
    ("EdgiOS/", "edge"),
    ("OPR/", "opera"),
    ("OPiOS/", "opera"),
    ("SamsungBrowser/", "samsung_internet"),
    ("YaBrowser/", "yandex"),
    ("Vivaldi/", "vivaldi"),
    ("UCBrowser/", "uc_browser"),
    ("FxiOS/", "firefox"),
    ("CriOS/", "chrome"),
    ("Firefox/", "firefox"),
    ("HeadlessChrome/", "chrome_headless"),
    ("Chromium/", "chromium"),
    ("Chrome/", "chrome"),
];

/// Most interned unknown families.
const MAX_FAMILIES: usize = 4096;
/// Longest normalised family name.
const MAX_FAMILY_LEN: usize = 32;

/// Entries of the parse cache (direct-mapped, by hash of the header).
const CACHE_SLOTS: usize = 512;

/// Parses User-Agents into [`UaKey`]s and names families for evidence.
///
/// Browsers send byte-identical User-Agent headers on every request, so
/// parsed keys are cached in a small direct-mapped table keyed by a 64-bit
/// hash and the length of the header (a collision can only mislabel the
/// colliding client's own fingerprint).
#[derive(Debug, Clone)]
pub struct UaTable {
    names: Vec<Box<str>>,
    ids: HashMap<Box<str>, FamilyId>,
    cache: Box<[(u64, u32, UaKey)]>,
    /// Unknown families not interned because the table was full.
    pub overflow: u64,
}

/// FNV-1a over 8-byte words (not security relevant: cache index only).
fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h ^= u64::from_le_bytes(w);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    for x in chunks.remainder() {
        h ^= u64::from(*x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ (h >> 29)
}

impl Default for UaTable {
    fn default() -> Self {
        let mut t = UaTable {
            names: Vec::new(),
            ids: HashMap::new(),
            cache: vec![(0, u32::MAX, UaKey::default()); CACHE_SLOTS].into_boxed_slice(),
            overflow: 0,
        };
        for k in KNOWN {
            t.names.push((*k).into());
            t.ids.insert((*k).into(), (t.names.len() - 1) as FamilyId);
        }
        t
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memchr::memmem::find(hay, needle)
}

fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// Leading decimal digits as a saturating `u16`.
fn major_of(s: &[u8]) -> u16 {
    let mut v: u32 = 0;
    for b in s.iter().take_while(|b| b.is_ascii_digit()).take(6) {
        v = v * 10 + u32::from(b - b'0');
    }
    v.min(u32::from(u16::MAX)) as u16
}

/// Lower-cases and keeps `[a-z0-9._-]` (others become `_`), bounded.
fn normalise(token: &[u8]) -> String {
    token
        .iter()
        .take(MAX_FAMILY_LEN)
        .map(|b| match b.to_ascii_lowercase() {
            c @ (b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-') => c as char,
            _ => '_',
        })
        .collect()
}

impl UaTable {
    /// The family's display name.
    pub fn family_name(&self, id: FamilyId) -> &str {
        self.names.get(usize::from(id)).map_or("other", |s| s)
    }

    /// `family/major`, e.g. `chrome/120` (evidence).
    pub fn display(&self, k: UaKey) -> String {
        if k.family == FAMILY_NONE {
            return "none".into();
        }
        format!("{}/{}", self.family_name(k.family), k.major)
    }

    /// The key of a [`UaTable::display`] string (`chrome/120`, `none`)
    /// printed by another process: family names are interned per process,
    /// so agents exchange the printed form (cross-node correlation).
    pub fn key_from_display(&mut self, s: &str) -> UaKey {
        if s == "none" || s.is_empty() {
            return UaKey {
                family: FAMILY_NONE,
                major: 0,
            };
        }
        let (name, major) = s.rsplit_once('/').unwrap_or((s, "0"));
        let major = major_of(major.as_bytes());
        // Printed names are already normalised: no allocation when known.
        if let Some(id) = self.ids.get(name) {
            return UaKey { family: *id, major };
        }
        let name = normalise(name.as_bytes());
        UaKey {
            family: self.intern(&name),
            major,
        }
    }

    fn intern(&mut self, name: &str) -> FamilyId {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        if self.names.len() >= MAX_FAMILIES {
            self.overflow += 1;
            return FAMILY_OTHER;
        }
        let id = self.names.len() as FamilyId;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    fn known(&self, name: &str) -> FamilyId {
        self.ids.get(name).copied().unwrap_or(FAMILY_OTHER)
    }

    /// Reduces a User-Agent header to family and major version.
    pub fn parse(&mut self, ua: Option<&[u8]>) -> UaKey {
        let ua = match ua.map(crate::cookie::trim) {
            None | Some([]) => {
                return UaKey {
                    family: FAMILY_NONE,
                    major: 0,
                };
            }
            Some(u) => &u[..u.len().min(1024)],
        };
        let h = fnv1a(ua);
        let slot = (h as usize) % CACHE_SLOTS;
        let (ch, clen, ckey) = self.cache[slot];
        if ch == h && clen as usize == ua.len() {
            return ckey;
        }
        let key = self.parse_uncached(ua);
        self.cache[slot] = (h, ua.len() as u32, key);
        key
    }

    fn parse_uncached(&mut self, ua: &[u8]) -> UaKey {
        if (ua.starts_with(b"Mozilla/") || ua.starts_with(b"Opera/"))
            && let Some(k) = self.parse_browserish(ua)
        {
            return k;
        }
        self.parse_product(ua)
    }

    fn parse_browserish(&mut self, ua: &[u8]) -> Option<UaKey> {
        // Crawlers announce themselves inside a browser-like string:
        // "Mozilla/5.0 (compatible; Googlebot/2.1; +http://...)" or
        // "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; ...)".
        if let Some(k) = self.bot_token(ua) {
            return Some(k);
        }
        for (marker, family) in BROWSER_MARKERS {
            if let Some(i) = find(ua, marker.as_bytes()) {
                return Some(UaKey {
                    family: self.known(family),
                    major: major_of(&ua[i + marker.len()..]),
                });
            }
        }
        // Old Opera (Presto): "Opera/9.80 (...) Presto/2.12 Version/12.16".
        if ua.starts_with(b"Opera/") {
            let major = find(ua, b"Version/")
                .map_or_else(|| major_of(&ua[6..]), |i| major_of(&ua[i + 8..]));
            return Some(UaKey {
                family: self.known("opera"),
                major,
            });
        }
        if let Some(i) = find(ua, b"MSIE ") {
            return Some(UaKey {
                family: self.known("ie"),
                major: major_of(&ua[i + 5..]),
            });
        }
        if find(ua, b"Trident/").is_some() {
            let major = find(ua, b"rv:").map_or(0, |i| major_of(&ua[i + 3..]));
            return Some(UaKey {
                family: self.known("ie"),
                major,
            });
        }
        if find(ua, b"Safari/").is_some()
            && let Some(i) = find(ua, b"Version/")
        {
            return Some(UaKey {
                family: self.known("safari"),
                major: major_of(&ua[i + 8..]),
            });
        }
        if let Some(i) = find(ua, b"AppleWebKit/") {
            // In-app web views: WebKit without a browser token.
            return Some(UaKey {
                family: self.known("webkit"),
                major: major_of(&ua[i + 12..]),
            });
        }
        if let Some(k) = self.compatible_token(ua) {
            return Some(k);
        }
        None
    }

    /// A `...bot/1.2`, `...spider/..`, `...crawler/..` product token anywhere.
    fn bot_token(&mut self, ua: &[u8]) -> Option<UaKey> {
        for needle in [
            &b"bot"[..],
            b"spider",
            b"crawler",
            b"facebookexternalhit",
            b"slurp",
        ] {
            let Some(pos) = find_ci(ua, needle) else {
                continue;
            };
            // Extend to the token around the match.
            let is_tok = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
            let start = ua[..pos]
                .iter()
                .rposition(|b| !is_tok(b))
                .map_or(0, |i| i + 1);
            let end = pos
                + ua[pos..]
                    .iter()
                    .position(|b| !is_tok(b))
                    .unwrap_or(ua.len() - pos);
            let token = &ua[start..end];
            if token.is_empty() {
                continue;
            }
            let major = if ua.get(end) == Some(&b'/') {
                major_of(&ua[end + 1..])
            } else {
                0
            };
            let name = normalise(token);
            return Some(UaKey {
                family: self.intern(&name),
                major,
            });
        }
        None
    }

    /// "Mozilla/5.0 (compatible; Name/1.0; ...)".
    fn compatible_token(&mut self, ua: &[u8]) -> Option<UaKey> {
        let i = find(ua, b"compatible; ")?;
        let rest = &ua[i + 12..];
        let end = rest
            .iter()
            .position(|b| matches!(b, b';' | b')' | b' '))
            .unwrap_or(rest.len());
        let tok = &rest[..end];
        let (name, ver) = match tok.iter().position(|b| *b == b'/') {
            Some(s) => (&tok[..s], &tok[s + 1..]),
            None => (tok, &tok[tok.len()..]),
        };
        if name.is_empty() {
            return None;
        }
        let n = normalise(name);
        Some(UaKey {
            family: self.intern(&n),
            major: major_of(ver),
        })
    }

    /// Non-browser clients: the first `product/version` token
    /// (`curl/8.5.0`, `python-requests/2.31.0`, `Go-http-client/1.1`,
    /// `okhttp/4.12.0`, `Java/17.0.2`, `Wget/1.21`). Without a version, the
    /// first word.
    fn parse_product(&mut self, ua: &[u8]) -> UaKey {
        if ua.starts_with(b"Mozilla/") {
            return UaKey {
                family: self.known("mozilla"),
                major: major_of(&ua[8..]),
            };
        }
        let end = ua
            .iter()
            .position(|b| matches!(b, b' ' | b'(' | b';' | b','))
            .unwrap_or(ua.len());
        let tok = &ua[..end];
        let (name, ver) = match tok.iter().position(|b| *b == b'/') {
            Some(s) => (&tok[..s], &tok[s + 1..]),
            None => (tok, &tok[tok.len()..]),
        };
        if name.is_empty() {
            return UaKey {
                family: FAMILY_OTHER,
                major: 0,
            };
        }
        let n = normalise(name);
        UaKey {
            family: self.intern(&n),
            major: major_of(ver),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: &mut UaTable, s: &str) -> String {
        let k = t.parse(Some(s.as_bytes()));
        t.display(k)
    }

    #[test]
    fn browsers() {
        let mut t = UaTable::default();
        assert_eq!(
            p(
                &mut t,
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36"
            ),
            "chrome/120"
        );
        assert_eq!(
            p(
                &mut t,
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91"
            ),
            "edge/120"
        );
        assert_eq!(
            p(
                &mut t,
                "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
            ),
            "firefox/121"
        );
        assert_eq!(
            p(
                &mut t,
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15"
            ),
            "safari/17"
        );
        assert_eq!(
            p(
                &mut t,
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1"
            ),
            "chrome/120"
        );
        assert_eq!(
            p(
                &mut t,
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36 OPR/105.0.0.0"
            ),
            "opera/105"
        );
        assert_eq!(
            p(
                &mut t,
                "Opera/9.80 (Windows NT 6.1) Presto/2.12.388 Version/12.16"
            ),
            "opera/12"
        );
        assert_eq!(
            p(
                &mut t,
                "Mozilla/5.0 (Linux; Android 13; SM-S901B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36"
            ),
            "samsung_internet/23"
        );
        assert_eq!(
            p(
                &mut t,
                "Mozilla/5.0 (Windows NT 6.1; Trident/7.0; rv:11.0) like Gecko"
            ),
            "ie/11"
        );
        assert_eq!(
            p(&mut t, "Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 6.1)"),
            "ie/8"
        );
        assert_eq!(
            p(
                &mut t,
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
            ),
            "webkit/605"
        );
        assert_eq!(
            p(
                &mut t,
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36"
            ),
            "chrome_headless/120"
        );
    }

    #[test]
    fn minor_update_is_same_key_major_update_is_not() {
        let mut t = UaTable::default();
        let a = t.parse(Some(b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36"));
        let b = t.parse(Some(b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.224 Safari/537.36"));
        let c = t.parse(Some(b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.6167.85 Safari/537.36"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.family, c.family);
    }

    #[test]
    fn tools_and_libraries() {
        let mut t = UaTable::default();
        assert_eq!(p(&mut t, "curl/8.5.0"), "curl/8");
        assert_eq!(p(&mut t, "python-requests/2.31.0"), "python-requests/2");
        assert_eq!(p(&mut t, "Go-http-client/1.1"), "go-http-client/1");
        assert_eq!(p(&mut t, "okhttp/4.12.0"), "okhttp/4");
        assert_eq!(p(&mut t, "Java/17.0.2"), "java/17");
        assert_eq!(
            p(&mut t, "Apache-HttpClient/4.5.14 (Java/17.0.9)"),
            "apache-httpclient/4"
        );
        assert_eq!(p(&mut t, "Wget/1.21.3"), "wget/1");
        assert_eq!(p(&mut t, "PostmanRuntime/7.36.0"), "postmanruntime/7");
        assert_eq!(p(&mut t, "Python-urllib/3.11"), "python-urllib/3");
        assert_eq!(p(&mut t, "Mozilla/5.0"), "mozilla/5");
        assert_eq!(p(&mut t, "weird client"), "weird/0");
    }

    #[test]
    fn bots() {
        let mut t = UaTable::default();
        assert_eq!(
            p(
                &mut t,
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
            ),
            "googlebot/2"
        );
        assert_eq!(
            p(
                &mut t,
                "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36"
            ),
            "bingbot/2"
        );
        assert_eq!(
            p(
                &mut t,
                "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)"
            ),
            "yandexbot/3"
        );
        assert_eq!(
            p(
                &mut t,
                "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"
            ),
            "facebookexternalhit/1"
        );
        assert_eq!(
            p(&mut t, "Mozilla/5.0 (compatible; SomeMonitor/3.1)"),
            "somemonitor/3"
        );
    }

    #[test]
    fn missing_and_bounded() {
        let mut t = UaTable::default();
        assert_eq!(t.parse(None).family, FAMILY_NONE);
        assert_eq!(t.parse(Some(b"  ")).family, FAMILY_NONE);
        for i in 0..10_000 {
            t.parse(Some(format!("client{i}/1.0").as_bytes()));
        }
        assert!(t.names.len() <= MAX_FAMILIES);
        assert!(t.overflow > 0);
        assert_eq!(t.parse(Some(b"client9999/1.0")).family, FAMILY_OTHER);
    }

    #[test]
    fn cache_returns_the_parsed_key() {
        let mut t = UaTable::default();
        let a = t.parse(Some(b"curl/8.5.0"));
        let b = t.parse(Some(b"curl/7.5.0"));
        assert_eq!(t.parse(Some(b"curl/8.5.0")), a);
        assert_eq!(t.parse(Some(b"curl/7.5.0")), b);
        assert_ne!(a, b);
        // Many distinct UAs through the small cache stay correct.
        for i in 0..2000u32 {
            let ua = format!("tool/{i}.0");
            assert_eq!(
                t.parse(Some(ua.as_bytes())).major,
                i.min(u32::from(u16::MAX)) as u16
            );
        }
    }
}
