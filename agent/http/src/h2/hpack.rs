//! HPACK header block decoding (RFC 7541), as a passive observer needs it.
//!
//! Why not a crate: the maintained HPACK crates either keep their decoder
//! private (`h2`) or build a hash-map Huffman table for every string they
//! decode (`hpack` and its forks), which is too slow for a hot path that
//! sees every request of a busy proxy. This decoder
//!
//! * walks a Huffman tree built at compile time, one bit at a time, into
//!   reusable scratch buffers (no allocation per string);
//! * hands each field to a callback as borrowed slices (no allocation per
//!   field; only dynamic-table insertions allocate);
//! * bounds the dynamic table by the size the decoding peer advertised and
//!   by a configured cap (a size update beyond it is an error);
//! * rejects over-long integers, EOS in a string, bad padding and size
//!   updates after the first field, exactly like a conforming peer would,
//!   so a stream the real peer accepted decodes and one it rejected stops.

use std::collections::VecDeque;

use super::tables::{HUFFMAN_CODES, STATIC_TABLE};

/// Per-entry overhead in the table size accounting (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;
/// Largest accepted integer continuation shift: values stay below 2^35.
const MAX_SHIFT: u32 = 28;
/// Scratch buffers larger than this are released after use.
const KEEP_SCRATCH: usize = 8 * 1024;

/// Why a header block could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    /// A reference to a dynamic-table entry that does not exist: blocks
    /// were missed (capture joined mid-connection). The table itself is
    /// intact up to this field.
    #[error("index beyond the dynamic table")]
    Index,
    /// A dynamic table size update above the allowed maximum.
    #[error("dynamic table size update above the allowed maximum")]
    TableSize,
    /// A size update after the first field of a block.
    #[error("dynamic table size update after a field")]
    SizeUpdatePosition,
    /// Index 0, an over-long or truncated integer, or a truncated string.
    #[error("malformed field representation")]
    Malformed,
    /// Invalid Huffman data (EOS symbol, padding longer than 7 bits or not
    /// all ones).
    #[error("invalid Huffman string")]
    Huffman,
}

/// A dynamic-table entry: name and value.
type Entry = (Box<[u8]>, Box<[u8]>);
/// Decoded fields, in tests.
#[cfg(test)]
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// One direction's HPACK decoder state. No `Debug`: the table holds
/// cookies.
pub struct HpackDecoder {
    /// Dynamic table, newest first.
    table: VecDeque<Entry>,
    /// Current size by RFC accounting.
    size: usize,
    /// Current maximum size (last size update; 4096 initially).
    max_size: usize,
    /// Upper bound a size update may set.
    allowed: usize,
    name_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

impl HpackDecoder {
    /// A decoder with the protocol's initial 4096-byte table, accepting
    /// size updates up to `allowed`.
    pub fn new(allowed: usize) -> Self {
        HpackDecoder {
            table: VecDeque::new(),
            size: 0,
            max_size: 4096.min(allowed),
            allowed,
            name_buf: Vec::new(),
            value_buf: Vec::new(),
        }
    }

    /// Sets the largest table size a size update may ask for.
    pub fn set_allowed(&mut self, allowed: usize) {
        self.allowed = allowed;
    }

    /// Entries in the dynamic table.
    pub fn entries(&self) -> usize {
        self.table.len()
    }

    /// Decodes one complete header block, calling `field(name, value)` for
    /// each field in order. On error the fields before it were delivered and
    /// the table holds every insertion before it.
    pub fn decode(
        &mut self,
        mut buf: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let mut first = true;
        let res = loop {
            let Some(&b) = buf.first() else {
                break Ok(());
            };
            let r = if b & 0x80 != 0 {
                integer(&mut buf, 7).and_then(|i| {
                    let (n, v) = lookup(&self.table, i)?;
                    field(n, v);
                    Ok(())
                })
            } else if b & 0xc0 == 0x40 {
                self.literal(&mut buf, 6, true, &mut field)
            } else if b & 0xe0 == 0x20 {
                if first {
                    integer(&mut buf, 5).and_then(|s| self.size_update(s))
                } else {
                    Err(HpackError::SizeUpdatePosition)
                }
            } else {
                // 0000 (without indexing) and 0001 (never indexed).
                self.literal(&mut buf, 4, false, &mut field)
            };
            if let Err(e) = r {
                break Err(e);
            }
            first = first && b & 0xe0 == 0x20;
        };
        for buf in [&mut self.name_buf, &mut self.value_buf] {
            if buf.capacity() > KEEP_SCRATCH {
                *buf = Vec::new();
            }
        }
        res
    }

    fn literal(
        &mut self,
        buf: &mut &[u8],
        prefix: u32,
        index: bool,
        field: &mut impl FnMut(&[u8], &[u8]),
    ) -> Result<(), HpackError> {
        let idx = integer(buf, prefix)?;
        let HpackDecoder {
            table,
            name_buf,
            value_buf,
            ..
        } = self;
        let name = if idx == 0 {
            string(buf, name_buf)?
        } else {
            lookup(table, idx)?.0
        };
        let value = string(buf, value_buf)?;
        field(name, value);
        if index {
            let entry: Entry = (name.into(), value.into());
            self.insert(entry);
        }
        Ok(())
    }

    fn insert(&mut self, entry: Entry) {
        let size = entry.0.len() + entry.1.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            // RFC 7541 §4.4: an entry larger than the table empties it.
            self.table.clear();
            self.size = 0;
            return;
        }
        self.size += size;
        self.table.push_front(entry);
        self.evict();
    }

    fn size_update(&mut self, size: usize) -> Result<(), HpackError> {
        if size > self.allowed {
            return Err(HpackError::TableSize);
        }
        self.max_size = size;
        self.evict();
        Ok(())
    }

    fn evict(&mut self) {
        while self.size > self.max_size {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + ENTRY_OVERHEAD,
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}

/// Field `index` of the combined static + dynamic index space.
fn lookup(table: &VecDeque<Entry>, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
    match index {
        0 => Err(HpackError::Malformed),
        1..=61 => Ok(STATIC_TABLE[index - 1]),
        _ => table
            .get(index - 62)
            .map(|(n, v)| (&**n, &**v))
            .ok_or(HpackError::Index),
    }
}

/// Decodes an integer with an N-bit prefix (RFC 7541 §5.1), advancing `buf`.
fn integer(buf: &mut &[u8], prefix: u32) -> Result<usize, HpackError> {
    let (&first, rest) = buf.split_first().ok_or(HpackError::Malformed)?;
    *buf = rest;
    let mask = (1usize << prefix) - 1;
    let mut value = usize::from(first) & mask;
    if value < mask {
        return Ok(value);
    }
    let mut shift = 0u32;
    loop {
        let (&b, rest) = buf.split_first().ok_or(HpackError::Malformed)?;
        *buf = rest;
        if shift > MAX_SHIFT {
            return Err(HpackError::Malformed);
        }
        value += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// Decodes a string literal (RFC 7541 §5.2), advancing `buf`: raw strings
/// are borrowed, Huffman strings decoded into `scratch`.
fn string<'s, 'b: 's>(
    buf: &mut &'b [u8],
    scratch: &'s mut Vec<u8>,
) -> Result<&'s [u8], HpackError> {
    let huffman = buf.first().is_some_and(|b| b & 0x80 != 0);
    let len = integer(buf, 7)?;
    if len > buf.len() {
        return Err(HpackError::Malformed);
    }
    let (raw, rest) = buf.split_at(len);
    *buf = rest;
    if !huffman {
        return Ok(raw);
    }
    huffman_decode(raw, scratch)?;
    Ok(scratch)
}

/// Marks a leaf in [`HUFFMAN_TREE`]; the low bits are the symbol.
const LEAF: u16 = 0x8000;
/// The EOS symbol, which must never appear in a string.
const EOS: u16 = 256;

/// Binary decoding tree of the HPACK Huffman code: node `i` has children
/// `[i][0]` and `[i][1]`, each another node index or `LEAF | symbol`. The
/// code is complete with 257 symbols, so there are exactly 256 internal
/// nodes (checked at compile time by the array bounds).
static HUFFMAN_TREE: [[u16; 2]; 256] = build_tree();

const fn build_tree() -> [[u16; 2]; 256] {
    let mut tree = [[0u16; 2]; 256];
    let mut free = 1usize;
    let mut sym = 0usize;
    while sym < HUFFMAN_CODES.len() {
        let (code, len) = HUFFMAN_CODES[sym];
        let mut node = 0usize;
        let mut i = len as u32 - 1;
        while i > 0 {
            let bit = ((code >> i) & 1) as usize;
            if tree[node][bit] == 0 {
                tree[node][bit] = free as u16;
                free += 1;
            }
            node = tree[node][bit] as usize;
            i -= 1;
        }
        tree[node][(code & 1) as usize] = LEAF | sym as u16;
        sym += 1;
    }
    tree
}

/// Decodes Huffman-coded `src` into `dst` (cleared first).
fn huffman_decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), HpackError> {
    dst.clear();
    dst.reserve(src.len() * 8 / 5);
    let mut node = 0usize;
    // Bits read since the last symbol, and whether all were ones.
    let mut pending = 0u32;
    let mut ones = true;
    for &byte in src {
        for shift in (0..8).rev() {
            let bit = (byte >> shift) & 1;
            pending += 1;
            ones &= bit == 1;
            let next = HUFFMAN_TREE[node][usize::from(bit)];
            if next & LEAF != 0 {
                let sym = next & !LEAF;
                if sym == EOS {
                    return Err(HpackError::Huffman);
                }
                dst.push(sym as u8);
                node = 0;
                pending = 0;
                ones = true;
            } else {
                node = usize::from(next);
            }
        }
    }
    // Padding: at most 7 bits, the most significant bits of EOS (all ones).
    if pending > 7 || !ones {
        return Err(HpackError::Huffman);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(d: &mut HpackDecoder, block: &[u8]) -> Result<Fields, HpackError> {
        let mut out = Vec::new();
        d.decode(block, |n, v| out.push((n.to_vec(), v.to_vec())))?;
        Ok(out)
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        p.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn rfc7541_c4_requests_with_huffman() {
        let mut d = HpackDecoder::new(4096);
        let r1 = decode_all(&mut d, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"));
        assert_eq!(
            r1,
            Ok(pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ]))
        );
        let r2 = decode_all(&mut d, &hex("8286 84be 5886 a8eb 1064 9cbf"));
        assert_eq!(
            r2,
            Ok(pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ]))
        );
        let r3 = decode_all(
            &mut d,
            &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
        );
        assert_eq!(
            r3,
            Ok(pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ]))
        );
        assert_eq!(d.entries(), 3);
        assert_eq!(d.size, 164);
    }

    #[test]
    fn rfc7541_c6_responses_with_eviction() {
        let mut d = HpackDecoder::new(256);
        d.size_update(256).unwrap_or_default();
        let r1 = decode_all(
            &mut d,
            &hex(
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
                 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            ),
        );
        assert_eq!(
            r1,
            Ok(pairs(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com")
            ]))
        );
        let r2 = decode_all(&mut d, &hex("4883 640e ffc1 c0bf"));
        assert_eq!(r2.map(|v| v[0].1.clone()), Ok(b"307".to_vec()));
        let r3 = decode_all(
            &mut d,
            &hex(
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
                 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
                 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
            ),
        )
        .unwrap_or_default();
        assert_eq!(r3.len(), 6);
        assert_eq!(
            r3[5],
            (
                b"set-cookie".to_vec(),
                b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1".to_vec()
            )
        );
        assert_eq!(d.entries(), 3);
        assert_eq!(d.size, 215);
    }

    #[test]
    fn errors() {
        let mut d = HpackDecoder::new(4096);
        assert_eq!(decode_all(&mut d, &[0x80]), Err(HpackError::Malformed));
        assert_eq!(decode_all(&mut d, &[0xbe]), Err(HpackError::Index));
        assert_eq!(
            decode_all(&mut d, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(HpackError::Malformed)
        );
        assert_eq!(
            decode_all(&mut d, &[0x04, 0x05, b'a']),
            Err(HpackError::Malformed)
        );
        // Size update after a field; above the allowed size.
        assert_eq!(
            decode_all(&mut d, &[0x82, 0x20]),
            Err(HpackError::SizeUpdatePosition)
        );
        assert_eq!(
            decode_all(&mut d, &[0x3f, 0xe2, 0x1f]),
            Err(HpackError::TableSize)
        );
        // Huffman: EOS inside (30 ones), padding of 8+ bits, padding with a zero.
        assert_eq!(
            decode_all(&mut d, &[0x00, 0x84, 0xff, 0xff, 0xff, 0xfc, 0x80]),
            Err(HpackError::Huffman)
        );
        assert_eq!(
            decode_all(&mut d, &[0x00, 0x81, 0xff, 0x80]),
            Err(HpackError::Huffman)
        );
        assert_eq!(
            decode_all(&mut d, &[0x00, 0x81, 0x1f, 0x80]),
            Ok(pairs(&[("a", "")]))
        );
        assert_eq!(
            decode_all(&mut d, &[0x00, 0x81, 0x1e, 0x80]),
            Err(HpackError::Huffman)
        );
        assert_eq!(
            decode_all(&mut d, &[0x00, 0x82, 0x1f, 0xff, 0x80]),
            Err(HpackError::Huffman)
        );
    }

    #[test]
    fn size_updates_evict_and_oversized_entries_empty_the_table() {
        let mut d = HpackDecoder::new(4096);
        let mut b = vec![0x40, 0x01, b'a', 0x02, b'b', b'c'];
        b.extend_from_slice(&[0x40, 0x01, b'x', 0x01, b'y']);
        assert!(decode_all(&mut d, &b).is_ok());
        assert_eq!(d.entries(), 2);
        // Size update to 40 keeps only the newest (34 bytes).
        assert!(decode_all(&mut d, &[0x3f, 0x09, 0xbe]).is_ok());
        assert_eq!(d.entries(), 1);
        assert_eq!(decode_all(&mut d, &[0xbf]), Err(HpackError::Index));
        // An entry bigger than the table empties it.
        let mut big = vec![0x40, 0x01, b'k', 0x10];
        big.extend_from_slice(&[b'v'; 16]);
        assert!(decode_all(&mut d, &big).is_ok());
        assert_eq!(d.entries(), 0);
        // Size update to 0 then back to 4096, then indexing works again.
        assert!(
            decode_all(
                &mut d,
                &[0x20, 0x3f, 0xe1, 0x1f, 0x40, 0x01, b'n', 0x01, b'v', 0xbe]
            )
            .is_ok()
        );
        assert_eq!(d.entries(), 1);
    }

    #[test]
    fn tree_decodes_every_symbol() {
        // Encode each byte alone with its code and EOS-prefix padding.
        for (sym, &(code, len)) in HUFFMAN_CODES.iter().enumerate().take(256) {
            let pad = (8 - len % 8) % 8;
            let bits = (u64::from(code) << pad) | ((1u64 << pad) - 1);
            let nbytes = (usize::from(len) + usize::from(pad)) / 8;
            let bytes: Vec<u8> = (0..nbytes).rev().map(|i| (bits >> (8 * i)) as u8).collect();
            let mut out = Vec::new();
            assert_eq!(huffman_decode(&bytes, &mut out), Ok(()), "symbol {sym}");
            assert_eq!(out, vec![sym as u8], "symbol {sym}");
        }
    }
}
