//! HPACK decoder on its own: a sequence of header blocks decoded by one
//! decoder, so the dynamic table carries state from block to block.
//!
//! Input: byte 0 sets the allowed table size (`b * 64`); then blocks, each
//! a length byte followed by that many bytes. A length byte of 0xff is a
//! SETTINGS_HEADER_TABLE_SIZE change instead (next byte * 32).

use sessionwatch_http::h2::hpack::HpackDecoder;

/// Runs one input (see the module documentation for its format).
pub fn run(data: &[u8]) {
    let Some((&size, mut data)) = data.split_first() else {
        return;
    };
    let allowed = usize::from(size) * 64;
    // The table is bounded by the largest size a peer could have set.
    let mut bound = allowed;
    let mut dec = HpackDecoder::new(allowed);
    while let Some((&len, rest)) = data.split_first() {
        data = rest;
        if len == 0xff {
            let Some((&s, rest)) = data.split_first() else {
                break;
            };
            data = rest;
            let allowed = usize::from(s) * 32;
            bound = bound.max(allowed);
            dec.set_allowed(allowed);
            continue;
        }
        let (block, rest) = data.split_at(usize::from(len).min(data.len()));
        data = rest;
        let mut decoded = 0usize;
        let _ = dec.decode(block, |name, value| {
            decoded += name.len() + value.len();
        });
        // Every entry costs at least 32 bytes (RFC 7541 §4.1): the table can
        // never hold more entries than the allowed size permits.
        assert!(
            dec.entries() <= bound / 32,
            "{} entries, bound {bound}",
            dec.entries()
        );
    }
}
