//! `bpf_loop`, how the program repeats work of unknown length: the verifier checks the
//! callback as one step, where it follows a loop in the program's own code through every
//! iteration (affordable for a few dozen short ones, as a run's words).
use aya_ebpf::{
    cty::{c_long, c_void},
    helpers::bpf_loop,
};

/// A `bpf_loop` callback: step `index`, over the context it is given; returns 1 to stop the
/// loop. Every argument needs a name: the kernel refuses the BTF of a function with an
/// unnamed one.
pub type Step = extern "C" fn(index: u64, context: *mut c_void) -> c_long;

/// Runs `step` over `context` for indexes below `count`, until it asks to stop. The context
/// must be on the stack (the verifier follows the map pointers spilled there into the
/// callback).
#[inline(always)]
pub fn run_loop<T>(count: usize, step: Step, context: &mut T) {
    // SAFETY: `context` outlives the call; the callback has the signature bpf_loop expects
    // and is passed as a function address (the loader turns it into a BPF_PSEUDO_FUNC
    // reference).
    unsafe {
        bpf_loop(
            count as u32,
            step as *mut c_void,
            (context as *mut T).cast(),
            0,
        )
    };
}
