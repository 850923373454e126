//! Per-ID strength estimate for `session_id_weak`.
//!
//! From one ID alone we cannot measure its generator, but we can bound it:
//! an ID of `n` characters drawn from an alphabet of `a` symbols carries at
//! most `n · log2(a)` bits. The alphabet class is detected from the
//! characters used (decimal, hex, base32, lower-case alphanumeric, mixed
//! alphanumeric, base64/base64url, other printable), and obvious structure —
//! one repeated character, a sequential run, a short repeating period, far
//! fewer distinct characters than a random string of that length would use —
//! lowers the estimate to what the structure leaves. Statistics across many
//! issued IDs (per-position distributions, bit tests, sequences) are the
//! sample stage in [`crate::detectors::session_id_weak::randomness`]; it
//! shares `with_core` and `classify` with this module.
//!
//! The raw value is examined in place and never copied beyond a bounded
//! stack buffer for percent-decoding.

/// Character class of an ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    /// `0-9`.
    Decimal,
    /// `0-9a-f` or `0-9A-F`.
    Hex,
    /// Base32 (`a-z2-7`, `0-9a-v`, either case).
    Base32,
    /// `0-9a-z` or `0-9A-Z`.
    LowerAlnum,
    /// `0-9a-zA-Z`.
    Alnum,
    /// Alphanumerics plus `-_` or `+/` (and `=` padding).
    Base64,
    /// Anything else printable.
    Printable,
}

impl Alphabet {
    /// Symbols in the class.
    pub const fn size(self) -> u32 {
        match self {
            Alphabet::Decimal => 10,
            Alphabet::Hex => 16,
            Alphabet::Base32 => 32,
            Alphabet::LowerAlnum => 36,
            Alphabet::Alnum => 62,
            Alphabet::Base64 => 64,
            Alphabet::Printable => 94,
        }
    }

    /// Stable evidence value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Alphabet::Decimal => "decimal",
            Alphabet::Hex => "hex",
            Alphabet::Base32 => "base32",
            Alphabet::LowerAlnum => "alnum_single_case",
            Alphabet::Alnum => "alnum",
            Alphabet::Base64 => "base64",
            Alphabet::Printable => "printable",
        }
    }
}

/// Obvious structure found in an ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// One character repeated.
    AllSame,
    /// Each character one more (or less) than the previous (`123456…`).
    Sequential,
    /// A short block repeated (`abcabcabc…`).
    Repeating,
    /// Far fewer distinct characters than a random ID of this length has.
    LowDiversity,
}

impl Pattern {
    /// Stable evidence value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Pattern::AllSame => "all_same",
            Pattern::Sequential => "sequential",
            Pattern::Repeating => "repeating",
            Pattern::LowDiversity => "low_diversity",
        }
    }
}

/// IDs shorter than this are weak whatever their alphabet (OWASP asks for
/// at least 16 hex characters of randomness).
pub const MIN_ID_LEN: usize = 16;

/// Longest prefix of an ID examined.
const MAX_EXAMINED: usize = 512;

/// The estimate for one ID.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdEstimate {
    /// Detected alphabet.
    pub alphabet: Alphabet,
    /// Characters examined (after stripping framework wrapping).
    pub length: usize,
    /// Estimated entropy in bits (after pattern reduction).
    pub bits: f64,
    /// Structure found, if any.
    pub pattern: Option<Pattern>,
}

impl IdEstimate {
    /// Too short to be a session ID whatever its alphabet.
    pub fn too_short(&self) -> bool {
        self.length < MIN_ID_LEN
    }

    /// Weak under a policy minimum of `min_bits`.
    pub fn is_weak(&self, min_bits: u32) -> bool {
        self.too_short() || self.pattern.is_some() || self.bits < f64::from(min_bits)
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `raw` into `buf`, returning the filled prefix.
fn percent_decode<'b>(raw: &[u8], buf: &'b mut [u8; MAX_EXAMINED]) -> &'b [u8] {
    let (mut i, mut n) = (0, 0);
    while i < raw.len() && n < buf.len() {
        let b = raw[i];
        if b == b'%'
            && i + 2 < raw.len()
            && let (Some(h), Some(l)) = (hex_digit(raw[i + 1]), hex_digit(raw[i + 2]))
        {
            buf[n] = h << 4 | l;
            n += 1;
            i += 3;
            continue;
        }
        buf[n] = b;
        n += 1;
        i += 1;
    }
    &buf[..n]
}

/// The random part of a framework's session cookie value: quotes removed,
/// percent-decoded, Express's `s:` signature prefix and `.signature` suffix
/// removed, Tomcat's `.jvmRoute` suffix removed.
fn id_core(decoded: &[u8]) -> &[u8] {
    let v = crate::cookie::unquote(decoded);
    let v = v.strip_prefix(b"s:").unwrap_or(v);
    match v.iter().position(|b| *b == b'.') {
        Some(dot) if dot >= 8 => &v[..dot],
        _ => v,
    }
}

// Character classes as bits of one mask per byte value: an ID's alphabet is
// the AND of its bytes' masks, one table load per byte instead of eleven
// range tests.
const DIGIT: u16 = 1 << 0;
const LOWER_HEX: u16 = 1 << 1;
const UPPER_HEX: u16 = 1 << 2;
const LOWER: u16 = 1 << 3;
const UPPER: u16 = 1 << 4;
const B32_LOWER: u16 = 1 << 5;
const B32_UPPER: u16 = 1 << 6;
const B32HEX_LOWER: u16 = 1 << 7;
const B32HEX_UPPER: u16 = 1 << 8;
const ALNUM: u16 = 1 << 9;
const B64: u16 = 1 << 10;

/// Each class as the inclusive byte ranges it allows.
const CLASS_RANGES: [(u16, &[(u8, u8)]); 11] = [
    (DIGIT, &[(b'0', b'9')]),
    (LOWER_HEX, &[(b'0', b'9'), (b'a', b'f')]),
    (UPPER_HEX, &[(b'0', b'9'), (b'A', b'F')]),
    (LOWER, &[(b'0', b'9'), (b'a', b'z')]),
    (UPPER, &[(b'0', b'9'), (b'A', b'Z')]),
    (B32_LOWER, &[(b'a', b'z'), (b'2', b'7')]),
    (B32_UPPER, &[(b'A', b'Z'), (b'2', b'7')]),
    (B32HEX_LOWER, &[(b'0', b'9'), (b'a', b'v')]),
    (B32HEX_UPPER, &[(b'0', b'9'), (b'A', b'V')]),
    (ALNUM, &[(b'0', b'9'), (b'a', b'z'), (b'A', b'Z')]),
    (
        B64,
        &[
            (b'0', b'9'),
            (b'a', b'z'),
            (b'A', b'Z'),
            (b'-', b'-'),
            (b'_', b'_'),
            (b'+', b'+'),
            (b'/', b'/'),
        ],
    ),
];

/// The classes byte `b` belongs to.
const fn classes_of(b: u8) -> u16 {
    let mut m = 0;
    let mut c = 0;
    while c < CLASS_RANGES.len() {
        let (class, ranges) = CLASS_RANGES[c];
        let mut r = 0;
        while r < ranges.len() {
            if ranges[r].0 <= b && b <= ranges[r].1 {
                m |= class;
            }
            r += 1;
        }
        c += 1;
    }
    m
}

static CLASSES: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = classes_of(b as u8);
        b += 1;
    }
    t
};

/// The alphabet class of the characters in `s` (trailing `=` padding
/// ignored).
pub(crate) fn classify(s: &[u8]) -> Alphabet {
    let body = {
        let end = s.iter().rposition(|b| *b != b'=').map_or(0, |i| i + 1);
        &s[..end]
    };
    let all = body
        .iter()
        .fold(u16::MAX, |m, b| m & CLASSES[usize::from(*b)]);
    let any = |classes: u16| all & classes != 0;
    if any(DIGIT) {
        Alphabet::Decimal
    } else if any(LOWER_HEX | UPPER_HEX) {
        Alphabet::Hex
    } else if any(B32_LOWER | B32_UPPER | B32HEX_LOWER | B32HEX_UPPER) {
        Alphabet::Base32
    } else if any(LOWER | UPPER) {
        Alphabet::LowerAlnum
    } else if any(ALNUM) {
        Alphabet::Alnum
    } else if any(B64) {
        Alphabet::Base64
    } else {
        Alphabet::Printable
    }
}

fn pattern(s: &[u8], alphabet: Alphabet) -> Option<(Pattern, f64)> {
    let n = s.len();
    if n < 4 {
        return None;
    }
    let bpc = f64::from(alphabet.size()).log2();
    if s.iter().all(|b| *b == s[0]) {
        return Some((Pattern::AllSame, bpc));
    }
    let up = s.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
    let down = s.windows(2).all(|w| w[1] == w[0].wrapping_sub(1));
    // Cyclic digit runs: 1234567890123…
    let cyc = s.iter().all(u8::is_ascii_digit)
        && s.windows(2)
            .all(|w| (w[1] - b'0') % 10 == (w[0] - b'0' + 1) % 10);
    if up || down || cyc {
        return Some((Pattern::Sequential, bpc + (n as f64).log2()));
    }
    for period in 1..=n / 3 {
        if s.iter()
            .enumerate()
            .skip(period)
            .all(|(i, b)| *b == s[i - period])
        {
            return Some((Pattern::Repeating, period as f64 * bpc));
        }
    }
    // Distinct symbols: a random string of length n over a symbols uses
    // about a·(1 − (1 − 1/a)^n) of them; half of that is far outside chance.
    if n >= MIN_ID_LEN {
        let mut seen = [false; 256];
        let mut distinct = 0u32;
        for &b in s {
            if !seen[usize::from(b)] {
                seen[usize::from(b)] = true;
                distinct += 1;
            }
        }
        let a = f64::from(alphabet.size());
        let expected = a * (1.0 - (1.0 - 1.0 / a).powi(n.min(i32::MAX as usize) as i32));
        if f64::from(distinct) < expected / 2.0 {
            return Some((
                Pattern::LowDiversity,
                n as f64 * f64::from(distinct.max(2)).log2(),
            ));
        }
    }
    None
}

/// Runs `f` on the random part of a raw cookie value (percent-decoded into
/// a bounded stack buffer, framework wrapping removed); the decoded copy
/// lives only for the call.
pub(crate) fn with_core<R>(raw: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    // Nearly every ID has no escape: it is its own decoding (up to the
    // bound), so neither the buffer nor the byte loop is needed.
    if memchr::memchr(b'%', raw).is_none() {
        return f(id_core(raw.get(..MAX_EXAMINED).unwrap_or(raw)));
    }
    let mut buf = [0u8; MAX_EXAMINED];
    let decoded = percent_decode(raw, &mut buf);
    f(id_core(decoded))
}

/// Estimates the strength of one raw session ID (the cookie value as sent).
pub fn estimate(raw: &[u8]) -> IdEstimate {
    with_core(raw, estimate_core)
}

/// [`estimate`] of an already extracted core.
pub(crate) fn estimate_core(core: &[u8]) -> IdEstimate {
    let alphabet = classify(core);
    let length = core.len();
    let max_bits = length as f64 * f64::from(alphabet.size()).log2();
    match pattern(core, alphabet) {
        Some((p, bits)) => IdEstimate {
            alphabet,
            length,
            bits: bits.min(max_bits),
            pattern: Some(p),
        },
        None => IdEstimate {
            alphabet,
            length,
            bits: max_bits,
            pattern: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The class tests one by one, as the table encodes them.
    fn reference_classify(s: &[u8]) -> Alphabet {
        let end = s.iter().rposition(|b| *b != b'=').map_or(0, |i| i + 1);
        let body = &s[..end];
        let all = |f: fn(&u8) -> bool| body.iter().all(f);
        if all(|b| b.is_ascii_digit()) {
            Alphabet::Decimal
        } else if all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            || all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
        {
            Alphabet::Hex
        } else if all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'))
            || all(|b| matches!(b, b'A'..=b'Z' | b'2'..=b'7'))
            || all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'v'))
            || all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'V'))
        {
            Alphabet::Base32
        } else if all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'z'))
            || all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'Z'))
        {
            Alphabet::LowerAlnum
        } else if all(u8::is_ascii_alphanumeric) {
            Alphabet::Alnum
        } else if all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'/')) {
            Alphabet::Base64
        } else {
            Alphabet::Printable
        }
    }

    #[test]
    fn cores_without_escapes_skip_the_decode_buffer() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let decoded_core = |raw: &[u8]| {
            let mut buf = [0u8; MAX_EXAMINED];
            id_core(percent_decode(raw, &mut buf)).to_vec()
        };
        let mut runner = TestRunner::new(Config {
            cases: 2048,
            ..Config::default()
        });
        let raws = prop_oneof![
            proptest::collection::vec(proptest::sample::select(b"%0aF.s:\"xz".to_vec()), 0..40),
            proptest::collection::vec(
                proptest::sample::select(b"abc.".to_vec()),
                MAX_EXAMINED - 4..MAX_EXAMINED + 8
            ),
        ];
        runner
            .run(&raws, |raw| {
                prop_assert_eq!(with_core(&raw, <[u8]>::to_vec), decoded_core(&raw));
                Ok(())
            })
            .map_err(|e| e.to_string())
            .expect("the shortcut is the decoding");
    }

    #[test]
    fn classify_agrees_with_the_class_tests() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        // Every byte alone and after each alphabet's characters.
        for b in 0..=255u8 {
            for prefix in [
                &b""[..],
                b"0123",
                b"abcf",
                b"ABCF",
                b"wxyz",
                b"WXYZ",
                b"a-b_",
                b"a+b/",
            ] {
                let s = [prefix, &[b], b"=="].concat();
                assert_eq!(classify(&s), reference_classify(&s), "{s:?}");
            }
        }
        let mut runner = TestRunner::new(Config {
            cases: 4096,
            ..Config::default()
        });
        let strings = prop_oneof![
            "[0-9]{0,20}",
            "[0-9a-fA-F]{0,20}",
            "[a-z2-7]{0,20}",
            "[0-9A-V]{0,20}",
            "[0-9a-zA-Z]{0,20}",
            "[0-9a-zA-Z+/_=-]{0,20}",
            "[ -~]{0,20}",
        ];
        runner
            .run(&strings, |s| {
                prop_assert_eq!(classify(s.as_bytes()), reference_classify(s.as_bytes()));
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn framework_ids_are_strong() {
        // Django: 32 chars of [a-z0-9].
        let e = estimate(b"q8n3v5k2m9x1z7c4b6n8m2k4j6h8g0f2");
        assert_eq!(e.alphabet, Alphabet::LowerAlnum);
        assert!(!e.is_weak(128), "{e:?}");
        // PHP 8 default: 26 chars of [0-9a-v] (5 bits each = 130 bits).
        let e = estimate(b"k1v0f5hr3m2ecu9b8q7tl4p6s0");
        assert_eq!(e.alphabet, Alphabet::Base32);
        assert!(!e.is_weak(128), "{e:?}");
        // Tomcat: 32 upper-case hex + jvmRoute.
        let e = estimate(b"9A4F2C71D0B83E56A7C19D2E4F60B8A3.node1");
        assert_eq!((e.alphabet, e.length), (Alphabet::Hex, 32));
        assert!(!e.is_weak(128), "{e:?}");
        // Express: s:<32 base64url>.<signature>, percent-encoded.
        let e = estimate(
            b"s%3AxKq3_Pz9Lm2Wv8Rt5Yb1Nc7Hd4Gf6Js0.Zt9x%2Fw3R5kLmN8pQ2vB6yC1dE4fG7hJ0kL3mN6pQ9s",
        );
        assert_eq!(e.length, 32);
        assert!(!e.is_weak(128), "{e:?}");
    }

    #[test]
    fn weak_ids() {
        // Short decimal counter.
        let e = estimate(b"10234");
        assert!(e.too_short() && e.is_weak(128));
        assert_eq!(e.alphabet, Alphabet::Decimal);
        // Long but only decimal: 20 digits = 66 bits.
        let e = estimate(b"83920174655019283746");
        assert!(e.bits < 70.0 && e.is_weak(128), "{e:?}");
        // ASP.NET classic: 24 chars base32 = 120 bits, below a 128-bit policy.
        let e = estimate(b"hbq0a5ztxq2vrk45elrnbm55");
        assert!(e.is_weak(128) && !e.is_weak(64), "{e:?}");
        // Patterns.
        assert_eq!(
            estimate(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").pattern,
            Some(Pattern::AllSame)
        );
        assert_eq!(
            estimate(b"12345678901234567890123456789012").pattern,
            Some(Pattern::Sequential)
        );
        assert_eq!(
            estimate(b"abcdefghijklmnop").pattern,
            Some(Pattern::Sequential)
        );
        assert_eq!(
            estimate(b"deadbeefdeadbeefdeadbeefdeadbeef").pattern,
            Some(Pattern::Repeating)
        );
        assert_eq!(
            estimate(b"abababababababababbababababababa").pattern,
            Some(Pattern::LowDiversity)
        );
        assert!(estimate(b"deadbeefdeadbeefdeadbeefdeadbeef").is_weak(64));
    }

    #[test]
    fn alphabets() {
        assert_eq!(classify(b"0123456789abcdef"), Alphabet::Hex);
        assert_eq!(classify(b"ABCDEF0123"), Alphabet::Hex);
        assert_eq!(classify(b"aBcDeF0123"), Alphabet::Alnum);
        assert_eq!(classify(b"abcxyz0189"), Alphabet::LowerAlnum);
        assert_eq!(classify(b"ab-_cd"), Alphabet::Base64);
        assert_eq!(classify(b"ab+/cd=="), Alphabet::Base64);
        assert_eq!(classify(b"ab!cd"), Alphabet::Printable);
    }

    #[test]
    fn hostile_inputs() {
        assert_eq!(estimate(b"").length, 0);
        assert!(estimate(b"%").is_weak(128));
        assert!(estimate(b"%zz%4").is_weak(128));
        let big = vec![b'x'; 100_000];
        assert_eq!(estimate(&big).length, MAX_EXAMINED);
    }
}
