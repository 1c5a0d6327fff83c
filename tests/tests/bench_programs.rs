//! The benchmark's own XDP programs under BPF_PROG_TEST_RUN: the generator must stamp each
//! frame with its stream's ports, sequence and send time, and the sink must count stamped
//! frames, record their latency and leave everything else alone. A benchmark is only as good
//! as its harness.
use std::net::Ipv4Addr;

use aya::{
    Ebpf,
    maps::{Array, PerCpuArray},
    programs::{TestRun, TestRunOptions, Xdp},
};
use sbc_common::bench::{
    FrameHeader, GENERATOR_PROGRAM, HEADER_MAP, LATENCY_MAP, MAGIC, RTP_OFFSET, SINK_MAP,
    SINK_PROGRAM, STAMP_OFFSET, STREAM_COUNT_MAP, STREAMS_MAP, SinkCounters, Stream, UDP_OFFSET,
    latency_bucket,
};
use sbc_tests::{frames::UdpFrame, privileges::require_lab_privileges};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

fn load() -> Ebpf {
    let object =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ebpf/sbc-bench-xdp.o");
    let bytes = std::fs::read(&object).expect("`cargo xtask build-ebpf` builds the object");
    let mut ebpf = Ebpf::load(&bytes).expect("loading the benchmark object");
    for name in [GENERATOR_PROGRAM, SINK_PROGRAM] {
        let program: &mut Xdp = ebpf.program_mut(name).unwrap().try_into().unwrap();
        program.load().expect("the verifier accepts the program");
    }
    ebpf
}

fn run(ebpf: &mut Ebpf, name: &str, frame: &[u8]) -> (u32, Vec<u8>) {
    let program: &mut Xdp = ebpf.program_mut(name).unwrap().try_into().unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    let mut options = TestRunOptions::new();
    options.data_in = Some(frame);
    options.data_out = Some(&mut out);
    let result = program.test_run(options).expect("BPF_PROG_TEST_RUN");
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}

fn u16_at(frame: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

#[test]
fn the_generator_stamps_streams_in_turn_and_the_sink_counts_them() {
    require_lab_privileges();
    let mut ebpf = load();
    let template = UdpFrame {
        udp_checksum: false,
        ..UdpFrame::rtp(
            (Ipv4Addr::new(198, 18, 1, 2), 1),
            (Ipv4Addr::new(198, 18, 1, 1), 2),
        )
    }
    .bytes();
    let mut header = FrameHeader {
        bytes: [0; RTP_OFFSET],
        _pad: [0; 6],
    };
    header.bytes.copy_from_slice(&template[..RTP_OFFSET]);
    Array::<_, FrameHeader>::try_from(ebpf.map_mut(HEADER_MAP).unwrap())
        .unwrap()
        .set(0, header, 0)
        .unwrap();
    let mut streams = Array::<_, Stream>::try_from(ebpf.map_mut(STREAMS_MAP).unwrap()).unwrap();
    for (i, (src, dst)) in [(10_000u16, 20_000u16), (10_001, 20_002)]
        .iter()
        .enumerate()
    {
        let stream = Stream {
            src_port: src.to_be(),
            dst_port: dst.to_be(),
        };
        streams.set(i as u32, stream, 0).unwrap();
    }
    Array::<_, u32>::try_from(ebpf.map_mut(STREAM_COUNT_MAP).unwrap())
        .unwrap()
        .set(0, 2, 0)
        .unwrap();

    // A frame that went through a router comes back to the generator with other headers.
    let mut used = template.clone();
    used[..6].copy_from_slice(&[0xee; 6]);
    used[14 + 8] = 3;
    let mut generated = Vec::new();
    for _ in 0..3 {
        let (action, frame) = run(&mut ebpf, GENERATOR_PROGRAM, &used);
        assert_eq!(action, XDP_TX);
        assert_eq!(
            frame[..UDP_OFFSET],
            template[..UDP_OFFSET],
            "headers restored"
        );
        generated.push(frame);
    }
    let ports = |f: &Vec<u8>| (u16_at(f, UDP_OFFSET), u16_at(f, UDP_OFFSET + 2));
    assert_eq!(ports(&generated[0]), (10_000, 20_000));
    assert_eq!(ports(&generated[1]), (10_001, 20_002));
    assert_eq!(ports(&generated[2]), (10_000, 20_000), "streams in turn");
    // RTP sequence per stream, SSRC = stream, stamp: magic, time, stream.
    assert_eq!(u16_at(&generated[0], RTP_OFFSET + 2), 0);
    assert_eq!(u16_at(&generated[2], RTP_OFFSET + 2), 1);
    assert_eq!(
        generated[1][RTP_OFFSET + 8..RTP_OFFSET + 12],
        1u32.to_be_bytes()
    );
    let stamp =
        |f: &Vec<u8>, at: usize, len: usize| f[STAMP_OFFSET + at..STAMP_OFFSET + at + len].to_vec();
    assert_eq!(stamp(&generated[1], 0, 4), MAGIC.to_ne_bytes());
    assert_eq!(stamp(&generated[1], 12, 4), 1u32.to_ne_bytes());
    let sent = |f: &Vec<u8>| u64::from_ne_bytes(stamp(f, 4, 8).try_into().unwrap());
    assert!(sent(&generated[0]) > 0 && sent(&generated[2]) >= sent(&generated[0]));

    // The sink takes stamped frames and nothing else.
    let (action, _) = run(&mut ebpf, SINK_PROGRAM, &generated[0]);
    assert_eq!(action, XDP_DROP);
    let (action, _) = run(&mut ebpf, SINK_PROGRAM, &template);
    assert_eq!(
        action, XDP_PASS,
        "an unstamped frame is not the benchmark's"
    );
    let counters: PerCpuArray<_, SinkCounters> =
        PerCpuArray::try_from(ebpf.map(SINK_MAP).unwrap()).unwrap();
    let total = counters
        .get(&0, 0)
        .unwrap()
        .iter()
        .fold(SinkCounters::default(), SinkCounters::merge);
    assert_eq!(
        (total.packets, total.bytes, total.unordered),
        (1, template.len() as u64, 0)
    );
    let latency: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map(LATENCY_MAP).unwrap()).unwrap();
    let recorded: Vec<u32> = (0..sbc_common::bench::LATENCY_BUCKETS)
        .filter(|&b| latency.get(&b, 0).unwrap().iter().sum::<u64>() > 0)
        .collect();
    assert_eq!(recorded.len(), 1, "one latency recorded");
    // Stamped in this test, received moments later: well under a second.
    assert!(recorded[0] < latency_bucket(1_000_000_000));
}
