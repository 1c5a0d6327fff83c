//! The benchmark's XDP programs (not part of the sbc; `sbc_common::bench` has the contract):
//! `bench_generate` turns each live frame of BPF_PROG_TEST_RUN into the next RTP frame of a
//! set of streams, stamped with the time, and transmits it; `bench_sink`, on the receiving
//! host, counts stamped frames and records their one-way latency, then drops them.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{Array, PerCpuArray},
    helpers::bpf_ktime_get_ns,
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use sbc_common::bench::{
    FrameHeader, LATENCY_BUCKETS, MAGIC, MAX_STREAMS, RTP_OFFSET, STAMP_LEN, STAMP_OFFSET,
    SinkCounters, Stream, UDP_OFFSET, latency_bucket,
};

#[btf_map]
static BENCH_STREAMS: Array<Stream, { MAX_STREAMS as usize }> = Array::new();

#[btf_map]
static BENCH_STREAM_COUNT: Array<u32, 1> = Array::new();

#[btf_map]
static BENCH_HEADER: Array<FrameHeader, 1> = Array::new();

/// Frames generated so far (the test run is driven from one CPU).
#[btf_map]
static BENCH_SEQUENCE: PerCpuArray<u64, 1> = PerCpuArray::new();

#[btf_map]
static BENCH_SINK: PerCpuArray<SinkCounters, 1> = PerCpuArray::new();

#[btf_map]
static BENCH_LATENCY: PerCpuArray<u64, { LATENCY_BUCKETS as usize }> = PerCpuArray::new();

/// The frame's bytes up to the end of the stamp, if it is that long.
#[inline(always)]
fn stamped_frame(ctx: &XdpContext) -> Option<*mut u8> {
    let start = ctx.data();
    if start + STAMP_OFFSET + STAMP_LEN > ctx.data_end() {
        return None;
    }
    Some(start as *mut u8)
}

#[xdp]
pub fn bench_generate(ctx: XdpContext) -> u32 {
    generate(&ctx).unwrap_or(xdp_action::XDP_ABORTED)
}

#[inline(always)]
fn generate(ctx: &XdpContext) -> Option<u32> {
    let frame = stamped_frame(ctx)?;
    let sequence = BENCH_SEQUENCE.get_ptr_mut(0)?;
    let streams = u64::from(*BENCH_STREAM_COUNT.get(0)?).max(1);
    // SAFETY: a per-CPU slot, and this program runs on one CPU at a time.
    let n = unsafe {
        let n = *sequence;
        *sequence = n + 1;
        n
    };
    let index = (n % streams) as u32;
    let stream = BENCH_STREAMS.get(index)?;
    let header = BENCH_HEADER.get(0)?;
    let rtp_sequence = (n / streams) as u16;
    // SAFETY: `stamped_frame` checked that the frame reaches past the stamp.
    unsafe {
        core::ptr::copy_nonoverlapping(header.bytes.as_ptr(), frame, RTP_OFFSET);
        let udp = frame.add(UDP_OFFSET);
        core::ptr::write_unaligned(udp.cast::<u16>(), stream.src_port);
        core::ptr::write_unaligned(udp.add(2).cast::<u16>(), stream.dst_port);
        let rtp = frame.add(RTP_OFFSET);
        core::ptr::write_unaligned(rtp.add(2).cast::<[u8; 2]>(), rtp_sequence.to_be_bytes());
        core::ptr::write_unaligned(rtp.add(8).cast::<[u8; 4]>(), index.to_be_bytes());
        let stamp = frame.add(STAMP_OFFSET);
        core::ptr::write_unaligned(stamp.cast::<u32>(), MAGIC);
        core::ptr::write_unaligned(stamp.add(4).cast::<u64>(), bpf_ktime_get_ns());
        core::ptr::write_unaligned(stamp.add(12).cast::<u32>(), index);
    }
    // Live-frame mode sends XDP_TX out of the interface the run names as ingress.
    Some(xdp_action::XDP_TX)
}

#[xdp]
pub fn bench_sink(ctx: XdpContext) -> u32 {
    sink(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

#[inline(always)]
fn sink(ctx: &XdpContext) -> Option<u32> {
    let frame = stamped_frame(ctx)?;
    // SAFETY: `stamped_frame` checked that the frame reaches past the stamp.
    let (ethertype, version_ihl, protocol, magic, sent) = unsafe {
        (
            core::ptr::read_unaligned(frame.add(12).cast::<[u8; 2]>()),
            *frame.add(14),
            *frame.add(14 + 9),
            core::ptr::read_unaligned(frame.add(STAMP_OFFSET).cast::<u32>()),
            core::ptr::read_unaligned(frame.add(STAMP_OFFSET + 4).cast::<u64>()),
        )
    };
    // IPv4 without options, UDP, our stamp: anything else is not the benchmark's.
    if ethertype != [0x08, 0x00] || version_ihl != 0x45 || protocol != 17 || magic != MAGIC {
        return None;
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let counters = BENCH_SINK.get_ptr_mut(0)?;
    // SAFETY: per-CPU slots, touched only by this CPU with preemption off.
    unsafe {
        (*counters).packets += 1;
        (*counters).bytes += (ctx.data_end() - ctx.data()) as u64;
        if now < sent {
            (*counters).unordered += 1;
        } else if let Some(bucket) = BENCH_LATENCY.get_ptr_mut(latency_bucket(now - sent)) {
            *bucket += 1;
        }
    }
    Some(xdp_action::XDP_DROP)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach this; it exists only to satisfy no_std.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
