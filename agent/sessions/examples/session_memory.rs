//! Memory per tracked session (`cargo xtask bench memory`).
//!
//! Fills a [`SessionTable`] bounded by `max_sessions` with that many
//! sessions, then offers as many again (each evicts the least recently seen
//! one), and prints one line of `key=value` figures:
//!
//! * `heap_bytes_per_session` — bytes held by the table's allocations,
//!   counted exactly by a global allocator wrapper, divided by the sessions
//!   held;
//! * `rss_bytes_per_session` — growth of the resident set size over the
//!   same span (what the kernel charges, allocator slack included);
//! * `heap_after_overflow` — the heap after the second round: the table
//!   stays bounded by `max_sessions`.
//!
//! Usage: `session_memory [SESSIONS]` (default 1,000,000).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sessionwatch_sessions::SessionHash;
use sessionwatch_sessions::store::{Fingerprint, SessionRecord, SessionStore, SessionTable};
use sessionwatch_sessions::useragent::UaKey;
use sessionwatch_streams::Timestamp;

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator, which
// upholds the `GlobalAlloc` contract; the counter is only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same layout, forwarded.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Resident set size of this process in bytes (`/proc/self/statm`).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Distinct, well-mixed keys (the table indexes keyed-hash output, which is
/// uniformly distributed; splitmix64 stands in for it).
fn key(i: u64) -> SessionHash {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    SessionHash::from_u64((z ^ (z >> 31)) | 1)
}

fn fill(table: &mut SessionTable, from: u64, n: u64, evicted: &mut u64) {
    for i in from..from + n {
        let now = Timestamp::from_secs_nanos(1_764_000_000 + i / 1000, 0);
        let ip = IpAddr::V4(Ipv4Addr::from((i as u32) | 0x0a00_0000));
        let fp = Fingerprint::new(Some(ip), UaKey::default());
        let rec = SessionRecord::new(now, fp, 1, 0, 0);
        table.put(key(i), rec, now, &mut |_| *evicted += 1);
    }
}

fn main() {
    let sessions: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let (heap0, rss0) = (LIVE.load(Ordering::Relaxed), rss());
    let mut table = SessionTable::new(sessions as usize, Duration::from_secs(86_400));
    let mut evicted = 0u64;
    fill(&mut table, 0, sessions, &mut evicted);
    let (heap1, rss1) = (LIVE.load(Ordering::Relaxed), rss());
    assert_eq!(table.len() as u64, sessions, "table lost sessions");
    assert_eq!(evicted, 0, "evicted below capacity");
    fill(&mut table, sessions, sessions, &mut evicted);
    let heap2 = LIVE.load(Ordering::Relaxed);
    assert_eq!(table.len() as u64, sessions, "table not bounded");
    assert_eq!(evicted, sessions, "every extra session evicts one");
    let n = sessions as f64;
    println!(
        "sessions={sessions} heap_bytes_per_session={:.1} rss_bytes_per_session={:.1} \
         heap_bytes={} heap_after_overflow={} evicted={evicted} record_size={} \
         estimate_bytes_per_session={}",
        (heap1 - heap0) as f64 / n,
        rss1.saturating_sub(rss0) as f64 / n,
        heap1 - heap0,
        heap2 - heap0,
        std::mem::size_of::<SessionRecord>(),
        SessionTable::bytes_per_session(),
    );
}
