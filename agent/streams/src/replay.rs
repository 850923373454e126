//! Replay of capture files: file → packets → reassembly → a [`StreamSink`].
//!
//! [`replay`] is the one-call form for a single file. For several files
//! that belong to one run, keep one [`Reassembler`] and call
//! [`replay_into`] per file, then [`Reassembler::finish`] once: flows that
//! continue across rotated files (`tcpdump -C`/`-G`) stay intact and
//! connection ids stay unique.

use std::io::Read;
use std::path::Path;

use crate::StreamSink;
use crate::decode::SkipCounts;
use crate::pcap::{PcapReader, ReadError, ReadStats};
use crate::reassembly::{Reassembler, ReassemblyConfig, Stats};

/// Counters of a replay: the file reader's and the reassembler's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Reader counters (records, unknown blocks, truncated tail).
    pub read: ReadStats,
    /// Reassembly counters (packets, bytes, gaps, evictions, skips).
    pub reassembly: Stats,
}

impl ReplayStats {
    /// Skips by reason, reader and reassembler together.
    pub fn skipped(&self) -> SkipCounts {
        let mut all = self.read.skipped;
        all.merge(&self.reassembly.skipped);
        all
    }
}

/// Replays one capture file into `sink`, then closes every connection still
/// open ([`crate::CloseReason::EndOfInput`]).
///
/// Errors name the file and the byte offset (see [`ReadError`]); a file
/// that merely ends mid-record is not an error (see [`crate::pcap`]).
pub fn replay<S: StreamSink + ?Sized>(
    path: &Path,
    config: &ReassemblyConfig,
    sink: &mut S,
) -> Result<ReplayStats, ReadError> {
    let mut reader = PcapReader::open(path)?;
    let mut reassembler = Reassembler::new(config.clone());
    replay_into(&mut reader, &mut reassembler, sink)?;
    reassembler.finish(sink);
    Ok(ReplayStats {
        read: reader.stats().clone(),
        reassembly: reassembler.stats().clone(),
    })
}

/// Feeds every packet of `reader` to `reassembler`, without closing the
/// connections at the end. Returns the reader's counters.
pub fn replay_into<R: Read, S: StreamSink + ?Sized>(
    reader: &mut PcapReader<R>,
    reassembler: &mut Reassembler,
    sink: &mut S,
) -> Result<ReadStats, ReadError> {
    while let Some(packet) = reader.next_packet()? {
        reassembler.process_packet(&packet, sink);
    }
    Ok(reader.stats().clone())
}
