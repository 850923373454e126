//! Keyed hashing of session IDs.
//!
//! A raw session ID is a bearer credential: whoever holds it is logged in.
//! The agent therefore keeps and reports only `HMAC-SHA256(key, id)`
//! truncated to 64 bits ([`SessionHash`], 16 hex digits). The key is random
//! per run by default — hashes are then unlinkable across runs — or loaded
//! from `sessions.hash_key_file` so that several agents (one per node) agree
//! on the hash of the same session.

use std::fmt;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use sha2::digest::consts::U64;
use sha2::digest::generic_array::GenericArray;

/// Errors obtaining a hash key.
#[derive(Debug, thiserror::Error)]
pub enum HashKeyError {
    /// The key file could not be read (or its metadata not queried).
    #[error("{path}: cannot read hash key: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key file is readable by every user of the host; anyone able to
    /// read it could link session hashes back to guessed IDs.
    #[error("{path}: hash key file is world-readable (mode {mode:o}); run `chmod o-r` on it")]
    WorldReadable {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file holds neither 32 raw bytes nor 64 hex digits.
    #[error("{path}: hash key must be 32 bytes or 64 hex digits, found {len} bytes")]
    BadLength {
        /// The key file.
        path: PathBuf,
        /// Bytes found (after trimming whitespace for the hex form).
        len: usize,
    },
    /// The operating system's random source failed.
    #[error("cannot generate a random hash key: {0}")]
    Random(String),
}

/// The 32-byte key of the session-ID hash. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct HashKey([u8; 32]);

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(..)")
    }
}

impl HashKey {
    /// A fresh key from the operating system's random source: hashes are
    /// stable within this run only.
    pub fn random() -> Result<HashKey, HashKeyError> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| HashKeyError::Random(e.to_string()))?;
        Ok(HashKey(k))
    }

    /// A key from raw bytes (tests, or a key obtained elsewhere).
    pub const fn from_bytes(bytes: [u8; 32]) -> HashKey {
        HashKey(bytes)
    }

    /// Loads the key from `path`: exactly 32 raw bytes, or 64 hex digits
    /// (surrounding whitespace and a trailing newline allowed, as written by
    /// `openssl rand -hex 32 > key`). A world-readable file is refused.
    pub fn from_file(path: &Path) -> Result<HashKey, HashKeyError> {
        let io = |source| HashKeyError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o004 != 0 {
                return Err(HashKeyError::WorldReadable {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        let bytes = std::fs::read(path).map_err(io)?;
        if let Ok(raw) = <[u8; 32]>::try_from(bytes.as_slice()) {
            // 32 bytes that happen to be hex digits are still raw bytes:
            // the hex form is 64 digits long.
            return Ok(HashKey(raw));
        }
        let text = crate::cookie::trim(bytes.trim_ascii());
        if text.len() == 64 {
            let mut k = [0u8; 32];
            let mut ok = true;
            for (i, pair) in text.chunks_exact(2).enumerate() {
                match (hex_val(pair[0]), hex_val(pair[1])) {
                    (Some(h), Some(l)) => k[i] = h << 4 | l,
                    _ => ok = false,
                }
            }
            if ok {
                return Ok(HashKey(k));
            }
        }
        Err(HashKeyError::BadLength {
            path: path.to_owned(),
            len: text.len(),
        })
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A keyed hash of one session ID: the only form in which a session is
/// stored, compared and reported. `Debug` and `Display` show the 16 hex
/// digits of the finding's `session` field.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionHash(NonZeroU64);

impl SessionHash {
    /// The hash as an integer (for compact storage and map keys).
    pub const fn get(self) -> u64 {
        self.0.get()
    }

    /// Rebuilds a hash from [`SessionHash::get`] (zero is mapped to one, the
    /// same way hashing does).
    pub fn from_u64(v: u64) -> SessionHash {
        SessionHash(NonZeroU64::new(v).unwrap_or(NonZeroU64::MIN))
    }

    /// 16 lower-case hex digits.
    pub fn to_hex(self) -> String {
        let mut s = String::with_capacity(16);
        self.write_hex(&mut s);
        s
    }

    /// Appends the 16 lower-case hex digits to `out` (one per finding:
    /// written nibble by nibble, not through `fmt`).
    pub fn write_hex(self, out: &mut String) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let v = self.0.get();
        let mut buf = [0u8; 16];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
        }
        // Hex digits are ASCII: the conversion cannot fail.
        out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
    }
}

impl fmt::Debug for SessionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionHash({:016x})", self.0.get())
    }
}

impl fmt::Display for SessionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0.get())
    }
}

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// One SHA-256 block.
type Block = GenericArray<u8, U64>;

/// Computes [`SessionHash`]es with one key: HMAC-SHA256 (RFC 2104),
/// truncated to its first 64 bits.
///
/// The key is at most one block long, so `key ⊕ ipad` and `key ⊕ opad`
/// are one block each: their compressed states are computed once, and a
/// hash is the compression of the ID's padded block(s) from the inner
/// state and of one padded block from the outer state — two compressions
/// for any ID shorter than 56 bytes, with nothing cloned, buffered or
/// allocated around them. The compression is `sha2`'s, which uses the
/// SHA extensions when the CPU has them.
#[derive(Clone)]
pub struct SessionHasher {
    /// The state after compressing `key ⊕ ipad`.
    inner: [u32; 8],
    /// The state after compressing `key ⊕ opad`.
    outer: [u32; 8],
}

impl fmt::Debug for SessionHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionHasher(..)")
    }
}

impl SessionHasher {
    /// A hasher with `key`.
    pub fn new(key: &HashKey) -> SessionHasher {
        let keyed = |pad: u8| {
            let mut block = [pad; 64];
            for (b, k) in block.iter_mut().zip(key.0) {
                *b ^= k;
            }
            let mut state = SHA256_IV;
            sha2::compress256(&mut state, &[Block::from(block)]);
            state
        };
        SessionHasher {
            inner: keyed(0x36),
            outer: keyed(0x5c),
        }
    }

    /// The hash of a raw session ID (the unquoted cookie value).
    pub fn hash(&self, raw_id: &[u8]) -> SessionHash {
        // Inner hash: SHA-256(key ⊕ ipad ‖ id), from the keyed state.
        let mut state = self.inner;
        let mut whole = raw_id.chunks_exact(64);
        for chunk in &mut whole {
            let mut block = [0u8; 64];
            block.copy_from_slice(chunk);
            sha2::compress256(&mut state, &[Block::from(block)]);
        }
        let tail = whole.remainder();
        let bits = (64 + raw_id.len() as u64).wrapping_mul(8);
        // The tail, 0x80, zeros and the 64-bit length: one block when they
        // fit in 64 bytes, two otherwise.
        let mut last = [[0u8; 64]; 2];
        let blocks = if tail.len() < 56 { 1 } else { 2 };
        let flat = last.as_flattened_mut();
        flat[..tail.len()].copy_from_slice(tail);
        flat[tail.len()] = 0x80;
        flat[64 * blocks - 8..64 * blocks].copy_from_slice(&bits.to_be_bytes());
        for block in &last[..blocks] {
            sha2::compress256(&mut state, &[Block::from(*block)]);
        }
        // Outer hash: SHA-256(key ⊕ opad ‖ inner digest), one block.
        let mut block = [0u8; 64];
        for (dst, word) in block.chunks_exact_mut(4).zip(state) {
            dst.copy_from_slice(&word.to_be_bytes());
        }
        block[32] = 0x80;
        block[56..].copy_from_slice(&((64 + 32) * 8u64).to_be_bytes());
        let mut state = self.outer;
        sha2::compress256(&mut state, &[Block::from(block)]);
        SessionHash::from_u64(u64::from(state[0]) << 32 | u64::from(state[1]))
    }
}

/// Longest raw ID [`MemoHasher`] remembers: the IDs of the common
/// frameworks (PHP, Java, Django, ASP.NET, Express's signed `connect.sid`)
/// are shorter; longer values (encrypted cookie stores) are hashed each time.
const MEMO_MAX_ID: usize = 96;

/// Entries of [`MemoHasher`]: a power of two, so a slot is a mask away.
const MEMO_SLOTS: usize = 256;

/// One remembered ID: its bytes (up to [`MEMO_MAX_ID`]), its length
/// (0 = empty slot) and its hash.
#[derive(Clone)]
struct MemoSlot {
    len: u8,
    id: [u8; MEMO_MAX_ID],
    hash: SessionHash,
}

/// [`SessionHasher`] with a small direct-mapped memory of the last IDs it
/// hashed. On a keep-alive connection a browser presents the same cookie
/// on every request, and an ID is presented right after the response that
/// issued it: most hashes an analyzer asks for were asked for moments ago.
/// A hit costs one slot compare instead of two SHA-256 compressions.
///
/// The slot is picked by a plain (unkeyed) mix of the ID's bytes: a client
/// that crafts IDs to share a slot only turns hits into misses, since a hit
/// needs the whole ID to be equal. The remembered IDs never leave the
/// process (they are as secret as the packet buffers they come from) and
/// are overwritten on drop.
pub struct MemoHasher {
    hasher: SessionHasher,
    slots: Box<[MemoSlot]>,
}

impl fmt::Debug for MemoHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemoHasher(..)")
    }
}

impl MemoHasher {
    /// A memoizing hasher with `key`.
    pub fn new(key: &HashKey) -> MemoHasher {
        let empty = MemoSlot {
            len: 0,
            id: [0; MEMO_MAX_ID],
            hash: SessionHash::from_u64(0),
        };
        MemoHasher {
            hasher: SessionHasher::new(key),
            slots: vec![empty; MEMO_SLOTS].into_boxed_slice(),
        }
    }

    /// The hash of a raw session ID, equal to [`SessionHasher::hash`].
    pub fn hash(&mut self, raw_id: &[u8]) -> SessionHash {
        let n = raw_id.len();
        if n == 0 || n > MEMO_MAX_ID {
            return self.hasher.hash(raw_id);
        }
        let slot = &mut self.slots[memo_slot(raw_id)];
        if usize::from(slot.len) == n && slot.id[..n] == *raw_id {
            return slot.hash;
        }
        let hash = self.hasher.hash(raw_id);
        slot.id[..n].copy_from_slice(raw_id);
        slot.len = n as u8;
        slot.hash = hash;
        hash
    }

    /// The hash without consulting or filling the memory (rare callers:
    /// tests, debugging endpoints).
    pub fn hash_uncached(&self, raw_id: &[u8]) -> SessionHash {
        self.hasher.hash(raw_id)
    }
}

impl Drop for MemoHasher {
    fn drop(&mut self) {
        for s in self.slots.iter_mut() {
            s.id.fill(0);
            s.len = 0;
        }
    }
}

/// Slot of a 1..=[`MEMO_MAX_ID`]-byte ID: its first and last eight bytes
/// (overlapping for short IDs) and its length, multiplied and folded. The
/// bytes of a session ID are random, so these few are enough to spread
/// them; equality is decided on the whole ID.
fn memo_slot(id: &[u8]) -> usize {
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        let k = b.len().min(8);
        w[..k].copy_from_slice(&b[..k]);
        u64::from_le_bytes(w)
    };
    let head = word(id);
    let tail = word(&id[id.len().saturating_sub(8)..]);
    let mixed = (head ^ tail.rotate_left(29) ^ id.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 56) as usize & (MEMO_SLOTS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_hasher_agrees_with_the_hasher() {
        let key = HashKey::from_bytes([7; 32]);
        let plain = SessionHasher::new(&key);
        let mut memo = MemoHasher::new(&key);
        // Lengths around the memo bound, colliding slots, repeats.
        let mut ids: Vec<Vec<u8>> = Vec::new();
        for n in [1usize, 7, 8, 9, 26, 32, 55, 56, 64, 95, 96, 97, 200] {
            ids.push((0..n).map(|i| b'a' + (i % 26) as u8).collect());
            ids.push((0..n).map(|i| b'A' + ((i * 7 + n) % 26) as u8).collect());
        }
        for round in 0..3 {
            for id in &ids {
                assert_eq!(
                    memo.hash(id),
                    plain.hash(id),
                    "round {round}, {} bytes",
                    id.len()
                );
            }
        }
        // Many IDs sharing few slots: every answer is still exact.
        for i in 0..2000u32 {
            let id = format!("{i:032x}");
            assert_eq!(memo.hash(id.as_bytes()), plain.hash(id.as_bytes()));
            assert_eq!(memo.hash(id.as_bytes()), plain.hash(id.as_bytes()));
        }
        assert_eq!(memo.hash(b""), plain.hash(b""));
        assert_eq!(memo.hash_uncached(b"abc"), plain.hash(b"abc"));
    }

    #[test]
    fn hash_is_keyed_and_stable() {
        let a = SessionHasher::new(&HashKey::from_bytes([1; 32]));
        let b = SessionHasher::new(&HashKey::from_bytes([2; 32]));
        assert_eq!(a.hash(b"abc"), a.hash(b"abc"));
        assert_ne!(a.hash(b"abc"), a.hash(b"abd"));
        assert_ne!(a.hash(b"abc"), b.hash(b"abc"));
        assert_eq!(a.hash(b"abc").to_hex().len(), 16);
    }

    #[test]
    fn hex_is_sixteen_lower_case_digits() {
        for v in [1u64, 0xf, 0x0123_4567_89ab_cdef, u64::MAX, 1 << 63] {
            assert_eq!(SessionHash::from_u64(v).to_hex(), format!("{v:016x}"));
        }
    }

    /// A key of up to 32 bytes, zero padded: HMAC pads every key shorter
    /// than a block with zeros, so this is the same key to HMAC.
    fn padded(key: &[u8]) -> HashKey {
        let mut k = [0u8; 32];
        k[..key.len()].copy_from_slice(key);
        HashKey::from_bytes(k)
    }

    #[test]
    fn matches_rfc_4231() {
        // Test cases 1, 2 and 4 of RFC 4231 (HMAC-SHA-256), first 8 bytes.
        let tc4_key: Vec<u8> = (1..=25).collect();
        for (key, data, want) in [
            (&[0x0b; 20][..], &b"Hi There"[..], "b0344c61d8db3853"),
            (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e"),
            (&tc4_key, &[0xcd; 50], "82558a389a443c0e"),
        ] {
            let got = SessionHasher::new(&padded(key)).hash(data).to_hex();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn matches_the_hmac_crate_at_every_block_boundary() {
        use hmac::{Hmac, Mac};
        use sha2::Sha256;
        // Lengths on both sides of one and two blocks of input and of the
        // 56-byte point where the length no longer fits the last block.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut byte = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        };
        for len in 0..=200usize {
            let key: [u8; 32] = std::array::from_fn(|_| byte());
            let id: Vec<u8> = (0..len).map(|_| byte()).collect();
            let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
            m.update(&id);
            let full = m.finalize().into_bytes();
            let want: String = full[..8].iter().map(|b| format!("{b:02x}")).collect();
            let got = SessionHasher::new(&HashKey::from_bytes(key)).hash(&id);
            assert_eq!(got.to_hex(), want, "{len} bytes");
        }
    }

    #[test]
    fn debug_shows_only_hash() {
        let h = SessionHasher::new(&HashKey::from_bytes([7; 32])).hash(b"SECRET-ID");
        let d = format!("{h:?} {h}");
        assert!(!d.contains("SECRET"));
        assert!(d.contains(&h.to_hex()));
        assert_eq!(format!("{:?}", HashKey::from_bytes([7; 32])), "HashKey(..)");
    }

    #[test]
    fn key_file_forms_and_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let hex = dir.path().join("hex.key");
        std::fs::write(&hex, format!("{}\n", "ab".repeat(32))).unwrap();
        std::fs::set_permissions(&hex, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            HashKey::from_file(&hex).unwrap(),
            HashKey::from_bytes([0xab; 32])
        );

        let raw = dir.path().join("raw.key");
        std::fs::write(&raw, [9u8; 32]).unwrap();
        std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            HashKey::from_file(&raw).unwrap(),
            HashKey::from_bytes([9; 32])
        );

        std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = HashKey::from_file(&raw).unwrap_err();
        assert!(
            matches!(err, HashKeyError::WorldReadable { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("world-readable"));

        let short = dir.path().join("short.key");
        std::fs::write(&short, b"tooshort").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            HashKey::from_file(&short),
            Err(HashKeyError::BadLength { len: 8, .. })
        ));

        let badhex = dir.path().join("badhex.key");
        std::fs::write(&badhex, "zz".repeat(32)).unwrap();
        std::fs::set_permissions(&badhex, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            HashKey::from_file(&badhex),
            Err(HashKeyError::BadLength { .. })
        ));

        let missing = dir.path().join("missing.key");
        assert!(matches!(
            HashKey::from_file(&missing),
            Err(HashKeyError::Io { .. })
        ));
    }

    #[test]
    fn random_keys_differ() {
        assert_ne!(HashKey::random().unwrap(), HashKey::random().unwrap());
    }
}
