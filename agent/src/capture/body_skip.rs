//! Kernel-side skipping of large HTTP/1 message bodies.
//!
//! The analysis needs message heads only, yet without help the kernel
//! copies every body byte (up to `capture.payload_cap` per call) through the
//! ring buffer: a 100 MB download costs 100 MB of copies and ring space,
//! and under load pushes out the heads that matter. Once the HTTP stage
//! knows that more than `capture.skip_bodies_above` body bytes are still to
//! come on a connection direction, this module tells the kernel, through
//! the `SKIP_ARM` array, to leave them out; they arrive as payload-less
//! events of exact length ([`event_flags::BODY_SKIPPED`]) that the tracker
//! turns into gaps the HTTP stage subtracts from the body.
//!
//! The kernel cannot know where the agent's view of a stream is (events
//! are in flight in the ring), so skipping starts with a handshake: the
//! agent arms a slot, the kernel marks the first event it counts for that
//! arm ([`event_flags::SKIP_START`]), and only then — knowing exactly which
//! bytes follow that event — does the agent tell it how many to skip. See
//! [`SkipArm`] for why concurrent reads of a half-written arm are harmless.
//! Every value written goes through one ordered queue, flushed after each
//! record, so a slot is always zeroed before it is armed again.

use sessionwatch_common::{
    BODY_QUERY_MIN, BODY_SKIP_SLOTS, EventHeader, SkipArm, event_flags, skip_slot,
};
use sessionwatch_streams::{ConnectionId, Direction, StreamSink};

use super::tracker::Env;

/// Where one armed slot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Armed; waiting for the kernel's start event.
    Probe,
    /// `until` bytes after the start event are body; `counted` of them
    /// have been seen (sent, skipped or lost alike, as the kernel counts).
    Skipping { until: u64, counted: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    conn_id: u64,
    arm: u64,
    phase: Phase,
}

/// The agent's side of the body-skip protocol: which slot is armed for
/// which connection direction, and what the kernel is told next.
#[derive(Debug)]
pub(crate) struct BodySkipper {
    /// Bodies with more than this many bytes still to come are skipped.
    threshold: u64,
    slots: Vec<Option<Slot>>,
    next_arm: u64,
    /// Values for `SKIP_ARM`, in the order they must reach the kernel.
    writes: Vec<(u32, SkipArm)>,
}

impl BodySkipper {
    /// Skips bodies with more than `threshold` bytes still to come.
    pub(crate) fn new(threshold: u64) -> Self {
        BodySkipper {
            threshold,
            slots: vec![None; 2 * BODY_SKIP_SLOTS as usize],
            next_arm: 1,
            writes: Vec::new(),
        }
    }

    /// Called once the tracker has delivered every stream event of data
    /// record `hdr` (of kernel connection `hdr.conn_id`, tracked as `conn`)
    /// to `sink`.
    pub(crate) fn after_data(
        &mut self,
        hdr: &EventHeader,
        conn: ConnectionId,
        dir: Direction,
        sink: &mut dyn StreamSink,
    ) {
        let conn_id = hdr.conn_id;
        if conn_id == 0 {
            return;
        }
        let slot = skip_slot(conn_id, hdr.op);
        let Some(entry) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let Some(s) = entry else {
            if hdr.orig_len >= BODY_QUERY_MIN
                && hdr.flags & event_flags::BODY_SKIPPED == 0
                && sink
                    .body_remaining(conn, dir)
                    .is_some_and(|r| r > self.threshold)
            {
                let arm = self.next_arm;
                // The start event carries the arm's low 32 bits; keep them
                // non-zero (0 is "no arm").
                self.next_arm = self.next_arm.wrapping_add(1);
                if self.next_arm as u32 == 0 {
                    self.next_arm = self.next_arm.wrapping_add(1);
                }
                *entry = Some(Slot {
                    conn_id,
                    arm,
                    phase: Phase::Probe,
                });
                self.writes.push((
                    slot,
                    SkipArm {
                        conn_id,
                        arm,
                        until: 0,
                    },
                ));
            }
            return;
        };
        if s.conn_id != conn_id {
            // Another connection's body holds the slot: this one is copied.
            return;
        }
        let release = if hdr.flags & event_flags::SKIP_START != 0 {
            match s.phase {
                Phase::Probe if hdr.skip_arm == s.arm as u32 => {
                    match sink.body_remaining(conn, dir) {
                        Some(until) if until > 0 => {
                            s.phase = Phase::Skipping { until, counted: 0 };
                            self.writes.push((
                                slot,
                                SkipArm {
                                    conn_id,
                                    arm: s.arm,
                                    until,
                                },
                            ));
                            false
                        }
                        _ => true,
                    }
                }
                // A start for a half-written arm: the real one follows.
                Phase::Probe => false,
                // The kernel restarted its count: ours no longer matches.
                Phase::Skipping { .. } => true,
            }
        } else {
            match &mut s.phase {
                Phase::Skipping { until, counted } => {
                    *counted = counted
                        .saturating_add(u64::from(hdr.lost_before))
                        .saturating_add(u64::from(hdr.orig_len));
                    *counted >= *until
                }
                // Still waiting for the kernel; give up once the body is over.
                Phase::Probe => sink.body_remaining(conn, dir).is_none_or(|r| r == 0),
            }
        };
        if release {
            *entry = None;
            self.writes.push((slot, SkipArm::default()));
        }
    }

    /// Frees the slots of a connection that ended.
    pub(crate) fn closed(&mut self, conn_id: u64) {
        if conn_id == 0 {
            return;
        }
        for opv in [
            sessionwatch_common::op::READ,
            sessionwatch_common::op::WRITE,
        ] {
            let slot = skip_slot(conn_id, opv);
            if let Some(entry) = self.slots.get_mut(slot as usize)
                && entry.is_some_and(|s| s.conn_id == conn_id)
            {
                *entry = None;
                self.writes.push((slot, SkipArm::default()));
            }
        }
    }

    /// Hands the queued values to the kernel, in order.
    pub(crate) fn flush(&mut self, env: &mut dyn Env) {
        for (slot, value) in self.writes.drain(..) {
            env.skip_arm(slot, &value);
        }
    }

    /// Slots armed now (tests, diagnostics).
    #[cfg(test)]
    pub(crate) fn armed(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
}
