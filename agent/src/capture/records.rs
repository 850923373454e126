//! Parsing ring-buffer records (layout in `sessionwatch-common`).
//!
//! Records are checked for length before any field is read; a malformed
//! record is counted and skipped, never trusted.

use sessionwatch_common::{COMM_LEN, CloseTail, ConnInfo, EventHeader, HEADER_LEN, event_kind};

/// A parsed record borrowing its payload from the ring buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    /// Bytes of one read/write.
    Data { hdr: EventHeader, payload: &'a [u8] },
    /// A connection the kernel announces.
    Open {
        hdr: EventHeader,
        conn: ConnInfo,
        comm: [u8; COMM_LEN],
    },
    /// A connection ended.
    Close { hdr: EventHeader, tail: CloseTail },
    /// A process exec'd.
    Exec {
        hdr: EventHeader,
        comm: [u8; COMM_LEN],
    },
    /// A process with announced connections exited.
    Exit { hdr: EventHeader },
}

/// Why a record was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordError {
    /// Shorter than its kind requires.
    Short,
    /// Unknown kind byte.
    UnknownKind(u8),
    /// `cap_len` larger than the bytes present or than `orig_len`.
    BadLength,
}

fn read<T: Copy>(buf: &[u8], off: usize) -> Option<T> {
    let end = off.checked_add(std::mem::size_of::<T>())?;
    let bytes = buf.get(off..end)?;
    // SAFETY: `bytes` holds exactly size_of::<T>() bytes and T is one of the
    // plain-old-data record types of sessionwatch-common (integers and byte
    // arrays only, no padding), for which every bit pattern is valid;
    // `read_unaligned` imposes no alignment requirement.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Parses one record.
pub(crate) fn parse(buf: &[u8]) -> Result<Record<'_>, RecordError> {
    let hdr: EventHeader = read(buf, 0).ok_or(RecordError::Short)?;
    match hdr.kind {
        event_kind::DATA => {
            let cap = hdr.cap_len as usize;
            if hdr.cap_len > hdr.orig_len {
                return Err(RecordError::BadLength);
            }
            let payload = buf
                .get(HEADER_LEN..HEADER_LEN + cap)
                .ok_or(RecordError::BadLength)?;
            Ok(Record::Data { hdr, payload })
        }
        event_kind::OPEN => {
            let conn: ConnInfo = read(buf, HEADER_LEN).ok_or(RecordError::Short)?;
            let comm = read(buf, HEADER_LEN + std::mem::size_of::<ConnInfo>())
                .ok_or(RecordError::Short)?;
            Ok(Record::Open { hdr, conn, comm })
        }
        event_kind::CLOSE => {
            let tail = read(buf, HEADER_LEN).ok_or(RecordError::Short)?;
            Ok(Record::Close { hdr, tail })
        }
        event_kind::EXEC => {
            let comm = read(buf, HEADER_LEN).ok_or(RecordError::Short)?;
            Ok(Record::Exec { hdr, comm })
        }
        event_kind::EXIT => Ok(Record::Exit { hdr }),
        k => Err(RecordError::UnknownKind(k)),
    }
}

/// A NUL-padded `comm` as a string.
pub(crate) fn comm_str(comm: &[u8; COMM_LEN]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Test helpers: build records exactly as the kernel lays them out.
#[cfg(test)]
pub(crate) mod build {
    use super::*;

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        let mut out = vec![0u8; std::mem::size_of::<T>()];
        // SAFETY: T is a padding-free POD type from sessionwatch-common;
        // copying its bytes into a buffer of its exact size is sound.
        unsafe {
            std::ptr::copy_nonoverlapping((v as *const T).cast::<u8>(), out.as_mut_ptr(), out.len())
        };
        out
    }

    pub(crate) fn data(mut hdr: EventHeader, payload: &[u8]) -> Vec<u8> {
        hdr.kind = event_kind::DATA;
        hdr.cap_len = payload.len() as u32;
        let mut v = bytes_of(&hdr);
        v.extend_from_slice(payload);
        v
    }

    pub(crate) fn open(mut hdr: EventHeader, conn: &ConnInfo, comm: &str) -> Vec<u8> {
        hdr.kind = event_kind::OPEN;
        let mut v = bytes_of(&hdr);
        v.extend(bytes_of(conn));
        let mut c = [0u8; COMM_LEN];
        for (d, s) in c.iter_mut().zip(comm.bytes().take(COMM_LEN - 1)) {
            *d = s;
        }
        v.extend_from_slice(&c);
        v
    }

    pub(crate) fn close(mut hdr: EventHeader, lost: [u32; 2]) -> Vec<u8> {
        hdr.kind = event_kind::CLOSE;
        let mut v = bytes_of(&hdr);
        v.extend(bytes_of(&CloseTail { lost }));
        v
    }

    pub(crate) fn exit(mut hdr: EventHeader) -> Vec<u8> {
        hdr.kind = event_kind::EXIT;
        bytes_of(&hdr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_roundtrip_and_length_checks() {
        let hdr = EventHeader {
            orig_len: 10,
            conn_id: 7,
            ..EventHeader::default()
        };
        let rec = build::data(hdr, b"GET / HTTP");
        match parse(&rec) {
            Ok(Record::Data { hdr, payload }) => {
                assert_eq!(hdr.conn_id, 7);
                assert_eq!(payload, b"GET / HTTP");
            }
            other => panic!("unexpected {other:?}"),
        }
        // cap_len beyond the record.
        let mut bad = rec.clone();
        bad.truncate(HEADER_LEN + 3);
        assert_eq!(parse(&bad), Err(RecordError::BadLength));
        // cap_len beyond orig_len.
        let hdr = EventHeader {
            orig_len: 2,
            ..EventHeader::default()
        };
        assert_eq!(
            parse(&build::data(hdr, b"abc")),
            Err(RecordError::BadLength)
        );
        assert_eq!(parse(&[1, 2, 3]), Err(RecordError::Short));
        let mut unknown = build::data(EventHeader::default(), b"");
        unknown[0] = 99;
        assert_eq!(parse(&unknown), Err(RecordError::UnknownKind(99)));
    }

    #[test]
    fn open_and_comm() {
        let conn = ConnInfo {
            id: 5,
            ..ConnInfo::default()
        };
        let rec = build::open(EventHeader::default(), &conn, "nginx");
        match parse(&rec) {
            Ok(Record::Open { conn, comm, .. }) => {
                assert_eq!(conn.id, 5);
                assert_eq!(comm_str(&comm), "nginx");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(parse(&rec[..rec.len() - 1]), Err(RecordError::Short));
    }
}
