//! Streaming pcap and pcapng reading.
//!
//! [`PcapReader`] reads one capture file record by record through
//! pcap-parser's streaming readers: a bounded buffer (256 KiB, grown only to
//! hold one oversized-but-legal record, never beyond [`MAX_RECORD_LEN`]) is
//! refilled as records are consumed, so a capture of any size is replayed
//! in constant memory. Packets are handed out as slices of that buffer.
//!
//! Before pcap-parser parses a record, the reader checks the record's
//! framing itself (record length against the limits, the whole record in
//! the buffer). That gives every failure a byte offset, and separates three
//! outcomes that the CLI treats differently:
//!
//! * **Fatal ([`ReadError`]):** the file cannot be a capture or cannot be
//!   followed any further — wrong magic, truncated or unsupported file
//!   header, absurd snaplen, a record longer than any capture writes, a
//!   pcapng block whose length fields are inconsistent. The CLI exits 2 with
//!   `FILE: byte offset N: what`.
//! * **Counted skip:** the format lets us step over the record — an unknown
//!   pcapng block type, a packet on an undescribed interface (and, further
//!   down the pipeline, unsupported link types and non-TCP packets).
//! * **Truncated final record:** the file ends in the middle of a record,
//!   which is what a capture killed mid-write looks like. This is *not* an
//!   error: everything before it is analysed, the record is counted as
//!   [`SkipReason::TruncatedRecord`], a warning is logged, and
//!   [`ReadStats::truncated_tail`] says where. Refusing the whole file would
//!   throw away every complete record for the sake of the last one, which
//!   is what tcpdump and tshark also decline to do. A file cut inside its
//!   *file header* is still fatal: nothing in it can be trusted.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{LegacyPcapReader, PcapBlockOwned, PcapNGReader};

use crate::Timestamp;
use crate::decode::{SkipCounts, SkipReason};

/// Largest record (pcap record header + data, or pcapng block) accepted:
/// 16 MiB, the limit libpcap itself applies to pcapng blocks. Anything
/// bigger is a corrupt length field, not a packet.
pub const MAX_RECORD_LEN: usize = 16 * 1024 * 1024;

/// Largest snaplen in a pcap file header that is taken seriously. Writers
/// use 65535 or 262144; anything above [`MAX_RECORD_LEN`] is corruption.
pub const MAX_SNAPLEN: u32 = MAX_RECORD_LEN as u32;

/// libpcap's default maximum snapshot length, used as the record limit
/// when the file header's snaplen is smaller (some writers record a
/// smaller snaplen than the packets they write).
const DEFAULT_SNAPLEN: u32 = 262_144;

/// Initial read buffer size.
const INITIAL_BUFFER: usize = 256 * 1024;

/// Largest number of interfaces one pcapng section may describe.
const MAX_INTERFACES: usize = 65_536;

const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BOM: u32 = 0x1a2b_3c4d;

/// A capture file could not be read. Every variant names the file and the
/// byte offset where reading stopped; `Display` renders
/// `FILE: byte offset N: what`, the message the CLI prints before exiting 2.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening or reading the file failed.
    #[error("{file}: byte offset {offset}: read error: {source}")]
    Io {
        /// The file.
        file: String,
        /// Offset of the record being read.
        offset: u64,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The file is shorter than its own file header (or pcapng section
    /// header block).
    #[error(
        "{file}: byte offset {offset}: truncated file header: {needed} bytes needed, {available} present"
    )]
    TruncatedHeader {
        /// The file.
        file: String,
        /// Offset of the header.
        offset: u64,
        /// Header length.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// The first four bytes are neither a pcap nor a pcapng magic number.
    #[error("{file}: byte offset {offset}: not a pcap or pcapng file (magic 0x{magic:08x})")]
    BadMagic {
        /// The file.
        file: String,
        /// Always 0.
        offset: u64,
        /// The bytes found, read little-endian.
        magic: u32,
    },
    /// A pcap file header with a major version other than 2, or a pcapng
    /// section with a major version other than 1.
    #[error("{file}: byte offset {offset}: unsupported format version {major}.{minor}")]
    UnsupportedVersion {
        /// The file.
        file: String,
        /// Offset of the header.
        offset: u64,
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// A pcap file header whose snaplen exceeds [`MAX_SNAPLEN`].
    #[error("{file}: byte offset {offset}: absurd snaplen {snaplen} (limit {MAX_SNAPLEN})")]
    AbsurdSnaplen {
        /// The file.
        file: String,
        /// Offset of the header.
        offset: u64,
        /// The snaplen found.
        snaplen: u32,
    },
    /// A record whose length field exceeds the limit: a corrupt length, or
    /// not a capture file past this point.
    #[error(
        "{file}: byte offset {offset}: record of {len} bytes exceeds the limit of {limit} bytes"
    )]
    OversizedRecord {
        /// The file.
        file: String,
        /// Offset of the record.
        offset: u64,
        /// The length the record claims.
        len: u64,
        /// The limit that applied.
        limit: u64,
    },
    /// A record or block whose structure is inconsistent (length fields
    /// that disagree, contents longer than the block, a bad byte-order
    /// mark): the rest of the file cannot be located.
    #[error("{file}: byte offset {offset}: corrupt block: {what}")]
    CorruptBlock {
        /// The file.
        file: String,
        /// Offset of the block.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },
}

impl ReadError {
    /// The file the error is about.
    pub fn file(&self) -> &str {
        match self {
            ReadError::Io { file, .. }
            | ReadError::TruncatedHeader { file, .. }
            | ReadError::BadMagic { file, .. }
            | ReadError::UnsupportedVersion { file, .. }
            | ReadError::AbsurdSnaplen { file, .. }
            | ReadError::OversizedRecord { file, .. }
            | ReadError::CorruptBlock { file, .. } => file,
        }
    }

    /// The byte offset where reading stopped.
    pub fn offset(&self) -> u64 {
        match self {
            ReadError::Io { offset, .. }
            | ReadError::TruncatedHeader { offset, .. }
            | ReadError::BadMagic { offset, .. }
            | ReadError::UnsupportedVersion { offset, .. }
            | ReadError::AbsurdSnaplen { offset, .. }
            | ReadError::OversizedRecord { offset, .. }
            | ReadError::CorruptBlock { offset, .. } => *offset,
        }
    }
}

/// Which container format a file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Classic libpcap format.
    Pcap {
        /// Timestamps in nanoseconds (magic `a1b23c4d`) rather than microseconds.
        nanos: bool,
        /// Written big-endian.
        big_endian: bool,
        /// Kuznetzov's "modified" format with 24-byte record headers.
        modified: bool,
    },
    /// pcapng.
    PcapNg,
}

/// Where and how a file ended mid-record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruncatedTail {
    /// Offset of the incomplete record.
    pub offset: u64,
    /// Length the record should have had (lower bound when even its header
    /// is incomplete).
    pub expected: u64,
    /// Bytes of it present in the file.
    pub available: u64,
}

/// Counters of one file's reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Packet records handed out.
    pub packets: u64,
    /// Captured bytes of those packets.
    pub packet_bytes: u64,
    /// Records and blocks of any kind parsed (including headers).
    pub records: u64,
    /// Records skipped by the reader, by reason.
    pub skipped: SkipCounts,
    /// Set when the file ended in the middle of a record.
    pub truncated_tail: Option<TruncatedTail>,
}

/// One captured packet, borrowed from the reader's buffer until the next
/// call to [`PcapReader::next_packet`]. `Debug` shows lengths, never the
/// captured bytes (they carry session IDs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Capture time.
    pub ts: Timestamp,
    /// Link type of the frame (`LINKTYPE_*` in [`crate::decode`]).
    pub linktype: u32,
    /// The captured bytes, starting with the link-layer header.
    pub data: &'a [u8],
    /// Length of the packet on the wire (≥ `data.len()` when snaplen cut it).
    pub orig_len: u32,
    /// Byte offset of the record in the file.
    pub offset: u64,
}

impl std::fmt::Debug for Packet<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packet")
            .field("ts", &self.ts)
            .field("linktype", &self.linktype)
            .field("captured_len", &self.data.len())
            .field("orig_len", &self.orig_len)
            .field("offset", &self.offset)
            .finish()
    }
}

/// A `Read` adapter that fills the buffer it is given as far as the source
/// allows (pcap-parser issues one `read` per refill and treats a short read
/// as "all there is"), retries `Interrupted`, and keeps the real
/// `io::Error` (pcap-parser only reports that *a* read failed).
struct FillReader<R> {
    inner: R,
    error: Arc<Mutex<Option<io::Error>>>,
}

impl<R: Read> Read for FillReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if filled > 0 {
                        // Deliver what we have; the error recurs on the next read.
                        break;
                    }
                    let kind = e.kind();
                    if let Ok(mut slot) = self.error.lock() {
                        *slot = Some(e);
                    }
                    return Err(io::Error::from(kind));
                }
            }
        }
        Ok(filled)
    }
}

type Source<R> = FillReader<io::Chain<io::Cursor<Vec<u8>>, R>>;

enum Inner<R: Read> {
    Legacy(LegacyPcapReader<Source<R>>),
    Ng(PcapNGReader<Source<R>>),
}

fn it<R: Read>(inner: &mut Inner<R>) -> &mut dyn PcapReaderIterator {
    match inner {
        Inner::Legacy(r) => r,
        Inner::Ng(r) => r,
    }
}

fn it_ref<R: Read>(inner: &Inner<R>) -> &dyn PcapReaderIterator {
    match inner {
        Inner::Legacy(r) => r,
        Inner::Ng(r) => r,
    }
}

/// A pcapng interface: what its packets are and how its clock counts.
#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: u32,
    /// Timestamp units per second.
    units_per_sec: u64,
    /// Seconds added to every timestamp.
    offset_secs: i64,
}

/// What a parsed block turned out to be, extracted so that the block's
/// borrow of the buffer ends before the reader is consumed or refilled.
enum Parsed {
    Packet {
        ts: Timestamp,
        linktype: u32,
        start: usize,
        len: usize,
        orig_len: u32,
    },
    Skip(Option<SkipReason>),
}

/// Result of trying to get `need` bytes into the buffer.
enum Fill {
    Ready,
    Eof,
    Truncated(usize),
}

/// Streaming reader of one pcap or pcapng file.
pub struct PcapReader<R: Read> {
    file: String,
    inner: Inner<R>,
    io_error: Arc<Mutex<Option<io::Error>>>,
    format: Format,
    capacity: usize,
    /// pcap: link type and record limit from the file header.
    linktype: u32,
    record_limit: usize,
    /// pcapng: byte order of the current section and its interfaces.
    ng_big_endian: bool,
    interfaces: Vec<Interface>,
    pending_consume: usize,
    last_ts: Timestamp,
    done: bool,
    stats: ReadStats,
}

impl PcapReader<File> {
    /// Opens a capture file.
    pub fn open(path: &Path) -> Result<Self, ReadError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|source| ReadError::Io {
            file: name.clone(),
            offset: 0,
            source,
        })?;
        PcapReader::new(name, file)
    }
}

impl<R: Read> PcapReader<R> {
    /// Reads the file header from `source`; `file` names it in errors.
    pub fn new(file: impl Into<String>, source: R) -> Result<Self, ReadError> {
        let file = file.into();
        let io_error = Arc::new(Mutex::new(None));
        let mut source = FillReader {
            inner: source,
            error: io_error.clone(),
        };

        // Read enough to identify the format and size the buffer.
        let mut prefix = vec![0u8; 24];
        let got = source
            .read(&mut prefix)
            .map_err(|e| io_err(&file, 0, &io_error, e))?;
        prefix.truncate(got);
        if got < 4 {
            return Err(ReadError::TruncatedHeader {
                file,
                offset: 0,
                needed: 24,
                available: got as u64,
            });
        }
        let magic = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        let mut capacity = INITIAL_BUFFER;
        let (format, linktype, record_limit) = match magic {
            0xa1b2_c3d4 | 0xa1b2_3c4d | 0xa1b2_cd34 | 0xd4c3_b2a1 | 0x4d3c_b2a1 => {
                if got < 24 {
                    return Err(ReadError::TruncatedHeader {
                        file,
                        offset: 0,
                        needed: 24,
                        available: got as u64,
                    });
                }
                let big_endian = matches!(magic, 0xd4c3_b2a1 | 0x4d3c_b2a1);
                let u16_at = |at: usize| {
                    let b = [prefix[at], prefix[at + 1]];
                    if big_endian {
                        u16::from_be_bytes(b)
                    } else {
                        u16::from_le_bytes(b)
                    }
                };
                let u32_at = |at: usize| {
                    let b = [prefix[at], prefix[at + 1], prefix[at + 2], prefix[at + 3]];
                    if big_endian {
                        u32::from_be_bytes(b)
                    } else {
                        u32::from_le_bytes(b)
                    }
                };
                let (major, minor) = (u16_at(4), u16_at(6));
                if major != 2 {
                    return Err(ReadError::UnsupportedVersion {
                        file,
                        offset: 0,
                        major,
                        minor,
                    });
                }
                let snaplen = u32_at(16);
                if snaplen > MAX_SNAPLEN {
                    return Err(ReadError::AbsurdSnaplen {
                        file,
                        offset: 0,
                        snaplen,
                    });
                }
                // Upper bits of the link-type field carry FCS information.
                let linktype = u32_at(20) & 0xffff;
                let format = Format::Pcap {
                    nanos: matches!(magic, 0xa1b2_3c4d | 0x4d3c_b2a1),
                    big_endian,
                    modified: magic == 0xa1b2_cd34,
                };
                (format, linktype, snaplen.max(DEFAULT_SNAPLEN) as usize + 24)
            }
            PCAPNG_SHB => {
                if got < 12 {
                    return Err(ReadError::TruncatedHeader {
                        file,
                        offset: 0,
                        needed: 28,
                        available: got as u64,
                    });
                }
                let bom = [prefix[8], prefix[9], prefix[10], prefix[11]];
                let big_endian = if u32::from_le_bytes(bom) == PCAPNG_BOM {
                    false
                } else if u32::from_be_bytes(bom) == PCAPNG_BOM {
                    true
                } else {
                    return Err(ReadError::CorruptBlock {
                        file,
                        offset: 0,
                        what: "bad byte-order magic in section header",
                    });
                };
                let len_bytes = [prefix[4], prefix[5], prefix[6], prefix[7]];
                let len = if big_endian {
                    u32::from_be_bytes(len_bytes)
                } else {
                    u32::from_le_bytes(len_bytes)
                } as usize;
                if len < 28 || !len.is_multiple_of(4) {
                    return Err(ReadError::CorruptBlock {
                        file,
                        offset: 0,
                        what: "invalid section header block length",
                    });
                }
                if len > MAX_RECORD_LEN {
                    return Err(ReadError::OversizedRecord {
                        file,
                        offset: 0,
                        len: len as u64,
                        limit: MAX_RECORD_LEN as u64,
                    });
                }
                capacity = capacity.max(len.next_power_of_two());
                (Format::PcapNg, 0, MAX_RECORD_LEN)
            }
            _ => {
                return Err(ReadError::BadMagic {
                    file,
                    offset: 0,
                    magic,
                });
            }
        };

        let chained = FillReader {
            inner: io::Cursor::new(prefix).chain(source.inner),
            error: io_error.clone(),
        };
        let inner = match format {
            Format::Pcap { .. } => LegacyPcapReader::new(capacity, chained).map(Inner::Legacy),
            Format::PcapNg => PcapNGReader::new(capacity, chained).map(Inner::Ng),
        };
        let inner = match inner {
            Ok(i) => i,
            Err(pcap_parser::PcapError::ReadError) => {
                return Err(io_err(&file, 0, &io_error, io::Error::other("read failed")));
            }
            Err(pcap_parser::PcapError::Incomplete(_) | pcap_parser::PcapError::UnexpectedEof) => {
                return Err(ReadError::TruncatedHeader {
                    file,
                    offset: 0,
                    needed: 28,
                    available: got as u64,
                });
            }
            Err(_) => {
                return Err(ReadError::CorruptBlock {
                    file,
                    offset: 0,
                    what: "invalid file header",
                });
            }
        };
        let mut reader = PcapReader {
            file,
            inner,
            io_error,
            format,
            capacity,
            linktype,
            record_limit,
            ng_big_endian: false,
            interfaces: Vec::new(),
            pending_consume: 0,
            last_ts: Timestamp(0),
            done: false,
            stats: ReadStats::default(),
        };
        if let Inner::Legacy(r) = &mut reader.inner {
            // The legacy reader hands the file header out as its first block.
            match r.next() {
                Ok((n, PcapBlockOwned::LegacyHeader(_))) => {
                    r.consume(n);
                    reader.stats.records += 1;
                }
                _ => {
                    return Err(ReadError::CorruptBlock {
                        file: reader.file,
                        offset: 0,
                        what: "invalid file header",
                    });
                }
            }
        }
        Ok(reader)
    }

    /// The file name used in errors.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The container format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Counters so far.
    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }

    /// Byte offset of the next unread record.
    pub fn offset(&self) -> u64 {
        it_ref(&self.inner).consumed() as u64
    }

    /// The next packet, `Ok(None)` at the end of the file (including a
    /// truncated final record, see the module docs).
    pub fn next_packet(&mut self) -> Result<Option<Packet<'_>>, ReadError> {
        if self.pending_consume > 0 {
            // Without the shift `consume` does once half the buffer is
            // consumed: it moves everything not yet consumed (up to half the
            // buffer) to the front, so every byte of the file would be
            // copied once more in user space. `refill` moves only the
            // unfinished record left when the buffer runs dry.
            it(&mut self.inner).consume_noshift(self.pending_consume);
            self.pending_consume = 0;
        }
        loop {
            if self.done {
                return Ok(None);
            }
            let offset = self.offset();
            let Some(record_len) = self.frame_next(offset)? else {
                return Ok(None);
            };
            if let Format::Pcap {
                nanos,
                big_endian,
                modified,
            } = self.format
            {
                return self.legacy_record(offset, record_len, nanos, big_endian, modified);
            }
            let base = it_ref(&self.inner).data().as_ptr() as usize;
            let (consumed, parsed) = {
                let (n, block) = match it(&mut self.inner).next() {
                    Ok(x) => x,
                    Err(_) => {
                        return Err(ReadError::CorruptBlock {
                            file: self.file.clone(),
                            offset,
                            what: "record contents inconsistent with its length",
                        });
                    }
                };
                let parsed = match block {
                    // Legacy files never come here (`legacy_record`).
                    PcapBlockOwned::Legacy(_) => Parsed::Skip(None),
                    PcapBlockOwned::LegacyHeader(_) => Parsed::Skip(None),
                    PcapBlockOwned::NG(block) => match block {
                        Block::SectionHeader(shb) => {
                            if shb.major_version != 1 {
                                return Err(ReadError::UnsupportedVersion {
                                    file: self.file.clone(),
                                    offset,
                                    major: shb.major_version,
                                    minor: shb.minor_version,
                                });
                            }
                            self.ng_big_endian = shb.big_endian();
                            self.interfaces.clear();
                            Parsed::Skip(None)
                        }
                        Block::InterfaceDescription(idb) => {
                            if self.interfaces.len() >= MAX_INTERFACES {
                                return Err(ReadError::CorruptBlock {
                                    file: self.file.clone(),
                                    offset,
                                    what: "too many interface description blocks",
                                });
                            }
                            self.interfaces.push(Interface {
                                linktype: (idb.linktype.0 as u32) & 0xffff,
                                units_per_sec: ts_units_per_sec(idb.if_tsresol),
                                offset_secs: idb.if_tsoffset,
                            });
                            Parsed::Skip(None)
                        }
                        Block::EnhancedPacket(epb) => match self.interfaces.get(epb.if_id as usize)
                        {
                            Some(iface) => {
                                let ticks = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                                let ts = ng_timestamp(ticks, iface);
                                self.last_ts = ts;
                                let caplen = (epb.caplen as usize).min(epb.data.len());
                                Parsed::Packet {
                                    ts,
                                    linktype: iface.linktype,
                                    start: (epb.data.as_ptr() as usize).wrapping_sub(base),
                                    len: caplen,
                                    orig_len: epb.origlen,
                                }
                            }
                            None => Parsed::Skip(Some(SkipReason::UnknownInterface)),
                        },
                        Block::SimplePacket(spb) => match self.interfaces.first() {
                            Some(iface) => {
                                // No timestamp: the previous packet's time is the best estimate.
                                let caplen = (spb.origlen as usize).min(spb.data.len());
                                Parsed::Packet {
                                    ts: self.last_ts,
                                    linktype: iface.linktype,
                                    start: (spb.data.as_ptr() as usize).wrapping_sub(base),
                                    len: caplen,
                                    orig_len: spb.origlen,
                                }
                            }
                            None => Parsed::Skip(Some(SkipReason::UnknownInterface)),
                        },
                        Block::Unknown(_) => Parsed::Skip(Some(SkipReason::UnknownBlock)),
                        // Known blocks that carry nothing we analyse.
                        Block::NameResolution(_)
                        | Block::InterfaceStatistics(_)
                        | Block::SystemdJournalExport(_)
                        | Block::DecryptionSecrets(_)
                        | Block::ProcessInformation(_)
                        | Block::Custom(_) => Parsed::Skip(None),
                    },
                };
                (n, parsed)
            };
            self.stats.records += 1;
            if consumed != record_len {
                return Err(ReadError::CorruptBlock {
                    file: self.file.clone(),
                    offset,
                    what: "record length disagrees with its contents",
                });
            }
            match parsed {
                Parsed::Skip(reason) => {
                    if let Some(r) = reason {
                        self.stats.skipped.add(r);
                    }
                    it(&mut self.inner).consume_noshift(consumed);
                }
                Parsed::Packet {
                    ts,
                    linktype,
                    start,
                    len,
                    orig_len,
                } => {
                    self.pending_consume = consumed;
                    let data = it(&mut self.inner).data();
                    let Some(bytes) = start.checked_add(len).and_then(|end| data.get(start..end))
                    else {
                        return Err(ReadError::CorruptBlock {
                            file: self.file.clone(),
                            offset,
                            what: "packet data outside its record",
                        });
                    };
                    self.stats.packets += 1;
                    self.stats.packet_bytes += len as u64;
                    return Ok(Some(Packet {
                        ts,
                        linktype,
                        data: bytes,
                        orig_len,
                        offset,
                    }));
                }
            }
        }
    }

    /// The legacy record of `record_len` bytes at the front of the buffer.
    ///
    /// Parsed here rather than by pcap-parser's `next()`: [`Self::frame_next`]
    /// has already read the record's length from its header and made sure
    /// the whole record is buffered, so what is left is three header words
    /// and a slice. (pcap-parser would parse the header again through nom
    /// and hand back a block enum per packet, a tenth of the cost of a
    /// packet's whole trip through this reader.) The header words are read
    /// in the file's byte order, as `frame_next` reads the length.
    fn legacy_record(
        &mut self,
        offset: u64,
        record_len: usize,
        nanos: bool,
        big_endian: bool,
        modified: bool,
    ) -> Result<Option<Packet<'_>>, ReadError> {
        let header_len = if modified { 24 } else { 16 };
        self.stats.records += 1;
        let data = it_ref(&self.inner).data();
        let word = |at: usize| {
            let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
            Some(if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            })
        };
        let (Some(ts_sec), Some(ts_frac), Some(orig_len), Some(bytes)) =
            (word(0), word(4), word(12), data.get(header_len..record_len))
        else {
            return Err(ReadError::CorruptBlock {
                file: self.file.clone(),
                offset,
                what: "packet data outside its record",
            });
        };
        let frac = if nanos {
            u64::from(ts_frac)
        } else {
            u64::from(ts_frac) * 1000
        };
        let ts = Timestamp(
            u64::from(ts_sec)
                .saturating_mul(Timestamp::NANOS_PER_SEC)
                .saturating_add(frac),
        );
        self.last_ts = ts;
        self.pending_consume = record_len;
        self.stats.packets += 1;
        self.stats.packet_bytes += bytes.len() as u64;
        Ok(Some(Packet {
            ts,
            linktype: self.linktype,
            data: bytes,
            orig_len,
            offset,
        }))
    }

    /// Makes sure the next whole record is in the buffer and returns its
    /// length; `None` at the end of the file.
    fn frame_next(&mut self, offset: u64) -> Result<Option<usize>, ReadError> {
        let header_len = match self.format {
            Format::Pcap { modified: true, .. } => 24,
            Format::Pcap { .. } => 16,
            Format::PcapNg => 12,
        };
        match self.fill(offset, header_len)? {
            Fill::Ready => {}
            Fill::Eof => {
                self.done = true;
                return Ok(None);
            }
            Fill::Truncated(avail) => {
                self.truncated(offset, header_len, avail);
                return Ok(None);
            }
        }
        let data = it_ref(&self.inner).data();
        let u32_at = |at: usize, be: bool| {
            let b = [data[at], data[at + 1], data[at + 2], data[at + 3]];
            if be {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let (record_len, limit) = match self.format {
            Format::Pcap { big_endian, .. } => {
                let caplen = u32_at(8, big_endian) as usize;
                (header_len + caplen, self.record_limit)
            }
            Format::PcapNg => {
                let block_type = u32_at(0, false);
                let be = if block_type == PCAPNG_SHB {
                    let bom = u32_at(8, false);
                    if bom == PCAPNG_BOM {
                        false
                    } else if bom.swap_bytes() == PCAPNG_BOM {
                        true
                    } else {
                        return Err(self.corrupt(offset, "bad byte-order magic in section header"));
                    }
                } else {
                    self.ng_big_endian
                };
                let len = u32_at(4, be) as usize;
                if len < 12 || !len.is_multiple_of(4) {
                    return Err(self.corrupt(offset, "invalid block length"));
                }
                (len, MAX_RECORD_LEN)
            }
        };
        if record_len > limit {
            return Err(ReadError::OversizedRecord {
                file: self.file.clone(),
                offset,
                len: record_len as u64,
                limit: limit as u64,
            });
        }
        match self.fill(offset, record_len)? {
            Fill::Ready => Ok(Some(record_len)),
            Fill::Eof => {
                self.done = true;
                Ok(None)
            }
            Fill::Truncated(avail) => {
                self.truncated(offset, record_len, avail);
                Ok(None)
            }
        }
    }

    fn fill(&mut self, offset: u64, need: usize) -> Result<Fill, ReadError> {
        loop {
            let r = it(&mut self.inner);
            let avail = r.data().len();
            if avail >= need {
                return Ok(Fill::Ready);
            }
            if r.reader_exhausted() {
                return Ok(if avail == 0 {
                    Fill::Eof
                } else {
                    Fill::Truncated(avail)
                });
            }
            if need > self.capacity {
                let cap = need.next_power_of_two().min(MAX_RECORD_LEN * 2);
                r.grow(cap);
                self.capacity = cap;
            }
            if r.refill().is_err() {
                let e = io::Error::other("read failed");
                return Err(io_err(&self.file, offset, &self.io_error, e));
            }
        }
    }

    fn truncated(&mut self, offset: u64, expected: usize, available: usize) {
        self.done = true;
        self.stats.skipped.add(SkipReason::TruncatedRecord);
        let tail = TruncatedTail {
            offset,
            expected: expected as u64,
            available: available as u64,
        };
        self.stats.truncated_tail = Some(tail);
        tracing::warn!(
            file = %self.file,
            offset,
            expected,
            available,
            "capture file ends in the middle of a record; the incomplete record is skipped"
        );
    }

    fn corrupt(&self, offset: u64, what: &'static str) -> ReadError {
        ReadError::CorruptBlock {
            file: self.file.clone(),
            offset,
            what,
        }
    }
}

fn io_err(
    file: &str,
    offset: u64,
    slot: &Arc<Mutex<Option<io::Error>>>,
    fallback: io::Error,
) -> ReadError {
    let source = slot
        .lock()
        .ok()
        .and_then(|mut s| s.take())
        .unwrap_or(fallback);
    ReadError::Io {
        file: file.to_owned(),
        offset,
        source,
    }
}

/// Timestamp units per second for a pcapng `if_tsresol` value: 10^n, or
/// 2^n when the high bit is set. Nonsensical values fall back to the
/// default (microseconds) rather than failing the file.
fn ts_units_per_sec(tsresol: u8) -> u64 {
    let n = u32::from(tsresol & 0x7f);
    if tsresol & 0x80 == 0 {
        if n <= 19 { 10u64.pow(n) } else { 1_000_000 }
    } else if n <= 63 {
        1u64 << n
    } else {
        1_000_000
    }
}

fn ng_timestamp(ticks: u64, iface: &Interface) -> Timestamp {
    let units = u128::from(iface.units_per_sec.max(1));
    let nanos = u128::from(ticks) * u128::from(Timestamp::NANOS_PER_SEC) / units;
    let offset = i128::from(iface.offset_secs) * i128::from(Timestamp::NANOS_PER_SEC);
    let total = (nanos as i128)
        .saturating_add(offset)
        .clamp(0, i128::from(u64::MAX));
    Timestamp(total as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsresol_units() {
        assert_eq!(ts_units_per_sec(6), 1_000_000);
        assert_eq!(ts_units_per_sec(9), 1_000_000_000);
        assert_eq!(ts_units_per_sec(0x80 | 10), 1024);
        assert_eq!(ts_units_per_sec(0x7f), 1_000_000);
        assert_eq!(ts_units_per_sec(0xff), 1_000_000);
    }

    #[test]
    fn ng_timestamp_scales_and_offsets() {
        let iface = Interface {
            linktype: 1,
            units_per_sec: 1_000_000,
            offset_secs: 10,
        };
        assert_eq!(ng_timestamp(1_500_000, &iface), Timestamp(11_500_000_000));
        let iface = Interface {
            linktype: 1,
            units_per_sec: 1024,
            offset_secs: -100,
        };
        assert_eq!(ng_timestamp(512, &iface), Timestamp(0));
    }
}
