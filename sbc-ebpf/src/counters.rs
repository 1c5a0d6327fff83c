//! Per-CPU verdict counters, one per `Reason`.
use sbc_common::Reason;

use crate::maps::SBC_REASONS;

#[inline(always)]
pub fn count(reason: Reason) {
    if let Some(counter) = SBC_REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: a per-CPU slot is only touched by this CPU, and XDP runs with preemption off.
        unsafe { *counter += 1 };
    }
}
