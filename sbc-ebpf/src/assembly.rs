//! The forwarded message assembled in this CPU's scratch from the plan the scan made: each
//! run of a piece (`Plan::next_run`) copied a word at a time and summed for the UDP checksum
//! as it is copied. Plain loads and stores, no helper: a helper's copy costs a call and its
//! returns per piece, which on this kind of host (every return mispredicted by the
//! Speculative Return Stack Overflow mitigation) cost more than copying the piece.
use core::arch::asm;

use aya_ebpf::cty::{c_long, c_void};
use sbc_common::{
    checksum::{WordSum, halves_of},
    sip_forward::{
        Cursor, ForwardScratch,
        plan::{INSERT_BUFFER, MAX_RUNS, OUT_BUFFER, RUN_BYTES},
    },
    words::{SCAN_WINDOW, ScanWindow},
};

use crate::loops::run_loop;

/// Runs copied per `bpf_loop` step (a step costs about what a run of a piece copies).
const RUNS_PER_STEP: usize = 4;

/// What the steps work on: pointers into this CPU's map values, on the stack.
#[repr(C)]
struct Assembly {
    forward: *mut ForwardScratch,
    window: *const ScanWindow,
}

/// Assembles the message planned in `scratch` from the received bytes in `window`, and sums
/// it; whether all of it was copied.
///
/// # Safety
/// `scratch` and `window` point into this CPU's map values, `window` holding the datagram the
/// plan was made from.
#[inline(always)]
pub unsafe fn assemble(scratch: *mut ForwardScratch, window: *const ScanWindow) -> bool {
    // SAFETY: this CPU's scratch (the caller's word).
    unsafe {
        (*scratch).cursor = Cursor::default();
        (*scratch).sum = WordSum::new();
        let mut assembly = Assembly {
            forward: scratch,
            window,
        };
        run_loop(MAX_RUNS.div_ceil(RUNS_PER_STEP), copy_runs, &mut assembly);
        // A plan of more runs than the loop allows (none that fits) stops short.
        (*scratch).cursor.written == (*scratch).scan.plan.out_len
    }
}

/// Copies the next `RUNS_PER_STEP` runs of the plan; 1 stops the loop after the last.
extern "C" fn copy_runs(_index: u64, assembly: *mut c_void) -> c_long {
    let mut k = 0;
    while k < RUNS_PER_STEP {
        // SAFETY: the caller's context, alive for the whole loop, its pointers into map values.
        if !unsafe { copy_run(&*assembly.cast::<Assembly>()) } {
            return 1;
        }
        k += 1;
    }
    0
}

/// Copies the plan's next run to where the message assembled so far ends, and adds it to the
/// sum; false after the last run.
///
/// # Safety
/// `assembly` holds pointers into this CPU's map values.
#[inline(always)]
unsafe fn copy_run(assembly: &Assembly) -> bool {
    // SAFETY: this CPU's scratch and window. Every load is masked into the buffer it reads
    // (its last word read may run 7 bytes past it, into the map value's next field), every
    // store lands within the out buffer: at a masked position, at most a run and a word on.
    unsafe {
        let scratch = assembly.forward;
        let Some(run) = (*scratch).scan.plan.next_run(&mut (*scratch).cursor) else {
            return false;
        };
        let (bytes, mask) = if run.inserted {
            (
                (*scratch).scan.plan.inserted.bytes.as_ptr(),
                INSERT_BUFFER - 1,
            )
        } else {
            ((*assembly.window).bytes.as_ptr(), SCAN_WINDOW - 1)
        };
        let to = (*scratch)
            .out
            .bytes
            .as_mut_ptr()
            .add(run.to & (OUT_BUFFER - 1));
        let halves = copy_words(to, bytes, run.from, mask, run.len);
        (*scratch).sum.add_run(halves, run.to);
        true
    }
}

/// Words of a run.
const RUN_WORDS: usize = RUN_BYTES / 8;

/// Copies `len` bytes (at most `RUN_BYTES`) from `bytes` at `from` on (indexes masked by
/// `mask`) to `to`, a word at a time, and returns their sum as 32-bit halves. The last word
/// is written with zeros past `len`, which the next run overwrites.
///
/// # Safety
/// `bytes` is readable at every masked index and 8 bytes on; `to` writable for `len` bytes
/// rounded up to a word, and a word more.
#[inline(always)]
unsafe fn copy_words(to: *mut u8, bytes: *const u8, from: usize, mask: usize, len: usize) -> u64 {
    let whole = len / 8;
    let mut halves = 0;
    let mut k = 0;
    // SAFETY: within both buffers (the caller's word).
    unsafe {
        while k < RUN_WORDS && k < whole {
            let word = load(bytes.add((from + 8 * k) & mask));
            store(to.add(8 * k), word);
            halves += halves_of(word);
            k += 1;
        }
        // The bytes of the last word that are the run's (none when it ended at a word).
        let tail = load(bytes.add((from + 8 * whole) & mask)) & ((1u64 << (8 * (len % 8))) - 1);
        store(to.add(8 * whole), tail);
        halves + halves_of(tail)
    }
}

/// The eight bytes at `at`, at any alignment. In assembly: LLVM would read an unaligned `u64`
/// a byte at a time (BPF allows unaligned access to map values where the host does, as x86
/// and arm64 do, but not to the stack, so LLVM may not assume it).
///
/// # Safety
/// `at` points to 8 readable bytes of a map value.
#[inline(always)]
unsafe fn load(at: *const u8) -> u64 {
    let word: u64;
    // SAFETY: the caller's word.
    unsafe {
        asm!(
            "{word} = *(u64 *)({at} + 0)",
            word = out(reg) word,
            at = in(reg) at,
            options(nostack, readonly, preserves_flags),
        )
    };
    word
}

/// Writes `word` to the eight bytes at `at`, at any alignment (see `load`).
///
/// # Safety
/// `at` points to 8 writable bytes of a map value.
#[inline(always)]
unsafe fn store(at: *mut u8, word: u64) {
    // SAFETY: the caller's word.
    unsafe {
        asm!(
            "*(u64 *)({at} + 0) = {word}",
            at = in(reg) at,
            word = in(reg) word,
            options(nostack, preserves_flags),
        )
    };
}
