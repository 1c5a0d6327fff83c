//! Finding the flow of a media destination: its entry in the flow table by arithmetic, and a
//! copy of the version published there (`sbc_common::flow_table` says why a copy, and how the
//! daemon publishes).
use core::ptr::read_volatile;

use sbc_common::{Flow, FlowEntry, FlowKey, Reason, flow_table::FLOW_INSTALLED};

use crate::maps::{SBC_FLOW_COPY, SBC_FLOW_LAYOUT, SBC_FLOWS};

/// The flow at `destination`, copied into this CPU's scratch; `PassNoFlow` if none is
/// installed there, `PassFlowChanging` if the daemon published while it was copied.
#[inline(always)]
pub fn flow_at(destination: &FlowKey) -> Result<&'static Flow, Reason> {
    let index = SBC_FLOW_LAYOUT
        .get(0)
        .and_then(|layout| layout.index(destination))
        .ok_or(Reason::PassNoFlow)?;
    let entry = SBC_FLOWS.get_ptr(index).ok_or(Reason::PassNoFlow)?;
    let copy = SBC_FLOW_COPY.get_ptr_mut(0).ok_or(Reason::PassNoFlow)?;
    // SAFETY: `entry` points into the table and `copy` into this CPU's scratch (XDP does not
    // nest on a CPU); the reads are volatile so that they stay in this order: sequence, version,
    // sequence.
    unsafe {
        let sequence = read_volatile(&raw const (*entry).sequence);
        let version = if FlowEntry::published_version(sequence) == 0 {
            &raw const (*entry).versions[0]
        } else {
            &raw const (*entry).versions[1]
        };
        copy_words(version, copy);
        if read_volatile(&raw const (*entry).sequence) != sequence {
            return Err(Reason::PassFlowChanging);
        }
        if (*copy).flags & FLOW_INSTALLED == 0 {
            return Err(Reason::PassNoFlow);
        }
        Ok(&*copy)
    }
}

/// Copies a flow a word at a time, register to register: a copy of the whole value would go
/// through the stack, which the relay shares with `main`'s frame (512 bytes in all).
///
/// # Safety
/// Both point to a `Flow` (4-byte aligned, a whole number of words).
#[inline(always)]
unsafe fn copy_words(from: *const Flow, to: *mut Flow) {
    const WORDS: usize = size_of::<Flow>() / 4;
    let (from, to) = (from.cast::<u32>(), to.cast::<u32>());
    let mut i = 0;
    while i < WORDS {
        // SAFETY: word `i` of both flows.
        unsafe { to.add(i).write(read_volatile(from.add(i))) };
        i += 1;
    }
}
