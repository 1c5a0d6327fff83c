//! The benchmark's own XDP programs (`sbc-ebpf/src/bench.rs`), which are not part of the sbc:
//! a traffic generator run with BPF_PROG_TEST_RUN in live-frame mode, which stamps each RTP
//! frame with its stream and the time, and a sink on the receiving host, which counts the
//! frames and records their one-way latency. Both read the same clock (`bpf_ktime_get_ns`).

/// Program and map names in the benchmark object.
pub const GENERATOR_PROGRAM: &str = "bench_generate";
pub const SINK_PROGRAM: &str = "bench_sink";
pub const STREAMS_MAP: &str = "BENCH_STREAMS";
/// One `u32`: how many of `BENCH_STREAMS` the generator cycles through.
pub const STREAM_COUNT_MAP: &str = "BENCH_STREAM_COUNT";
/// One `FrameHeader`: what the generator writes in front of every frame.
pub const HEADER_MAP: &str = "BENCH_HEADER";
pub const SEQUENCE_MAP: &str = "BENCH_SEQUENCE";
pub const SINK_MAP: &str = "BENCH_SINK";
pub const LATENCY_MAP: &str = "BENCH_LATENCY";

/// Streams the generator can cycle through.
pub const MAX_STREAMS: u32 = 65_536;

/// Marks a benchmark frame, right after the 12-byte RTP header.
pub const MAGIC: u32 = 0x5342_4342; // "SBCB"

/// Where things are in a benchmark frame: Ethernet, IPv4 without options, UDP, RTP.
pub const UDP_OFFSET: usize = 14 + 20;
pub const RTP_OFFSET: usize = UDP_OFFSET + 8;
/// The stamp: magic, then the send time in ns, then the stream (native byte order: one host).
pub const STAMP_OFFSET: usize = RTP_OFFSET + 12;
pub const STAMP_LEN: usize = 16;

/// The ports of one stream, in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stream {
    pub src_port: u16,
    pub dst_port: u16,
}

/// Ethernet, IPv4 and UDP headers of the generated frames. The generator writes them into every
/// frame: live frames come from a page pool, and a frame the kernel forwarded comes back with
/// the headers forwarding rewrote (MACs, TTL, checksum).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub bytes: [u8; RTP_OFFSET],
    pub _pad: [u8; 6],
}

/// What the sink counted (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkCounters {
    pub packets: u64,
    pub bytes: u64,
    /// Frames whose stamp lay in the future (the clock went wrong): not in the histogram.
    pub unordered: u64,
}

impl SinkCounters {
    pub fn merge(self, other: &Self) -> Self {
        Self {
            packets: self.packets + other.packets,
            bytes: self.bytes + other.bytes,
            unordered: self.unordered + other.unordered,
        }
    }
}

/// Latency histogram: values below 64 ns have a bucket each; above, each power of two has 32
/// buckets (a bucket is at most ~3 % wide).
pub const LATENCY_BUCKETS: u32 = 64 + 58 * 32;
const LINEAR: u64 = 64;
const SUB_BITS: u32 = 5;

/// The bucket of a latency.
#[inline(always)]
pub fn latency_bucket(ns: u64) -> u32 {
    if ns < LINEAR {
        return ns as u32;
    }
    let exponent = 63 - ns.leading_zeros();
    let sub = ((ns >> (exponent - SUB_BITS)) & ((1 << SUB_BITS) - 1)) as u32;
    LINEAR as u32 + (exponent - 6) * (1 << SUB_BITS) + sub
}

/// The smallest latency in a bucket.
pub fn bucket_floor(bucket: u32) -> u64 {
    if u64::from(bucket) < LINEAR {
        return u64::from(bucket);
    }
    let rest = bucket - LINEAR as u32;
    let exponent = rest / (1 << SUB_BITS) + 6;
    let sub = u64::from(rest % (1 << SUB_BITS));
    ((1 << SUB_BITS) + sub) << (exponent - SUB_BITS)
}

const _: () = assert!(core::mem::size_of::<Stream>() == 4);
const _: () = assert!(core::mem::size_of::<FrameHeader>() == 48);
const _: () = assert!(core::mem::size_of::<SinkCounters>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)`, integers only, no padding.
    unsafe impl aya::Pod for super::Stream {}
    unsafe impl aya::Pod for super::FrameHeader {}
    unsafe impl aya::Pod for super::SinkCounters {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_narrow_and_cover_every_latency() {
        let mut last = 0;
        for ns in [
            0u64,
            1,
            63,
            64,
            65,
            127,
            128,
            1_000,
            50_000,
            1 << 40,
            u64::MAX,
        ] {
            let bucket = latency_bucket(ns);
            assert!(bucket < LATENCY_BUCKETS, "{ns}");
            assert!(bucket >= last, "{ns}");
            last = bucket;
            let floor = bucket_floor(bucket);
            assert!(floor <= ns, "{ns}: floor {floor}");
            // The next bucket starts above the value: the value is in this bucket.
            if bucket + 1 < LATENCY_BUCKETS {
                assert!(bucket_floor(bucket + 1) > ns, "{ns}");
            }
            assert!(ns - floor <= ns / 32, "{ns}: bucket too wide");
        }
    }
}
