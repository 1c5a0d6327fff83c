//! RTP/RTCP peers for the lab: paced G.711-sized streams in both directions of many calls,
//! counting what arrives and from where.
//!
//! The caller side runs in one thread inside the caller namespace, the callee side in another
//! inside the callee namespace. Every packet carries its sender's SSRC; a receiver accepts only
//! packets from the sbc port it sends to, with its peer's SSRC, and counts anything else as
//! foreign (this is how injection tests see leaks).
use std::{
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc, Barrier,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{lab::Lab, netns::Netns};

/// 20 ms of G.711 per packet, as a phone sends it.
pub const PACKET_INTERVAL: Duration = Duration::from_millis(20);
pub const RTP_PAYLOAD_BYTES: usize = 160;
const RTP_HEADER_BYTES: usize = 12;
/// One RTCP sender report per 25 RTP packets (every 500 ms).
const RTCP_EVERY: u32 = 25;
const RTCP_SR_BYTES: usize = 28;
/// After the last packet is sent, keep receiving this long for packets in flight.
const DRAIN: Duration = Duration::from_millis(300);

/// The two ends of one call's media, as the sbc session was set up for them.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    /// The caller's RTP address (RTCP on port + 1 unless multiplexed).
    pub caller: SocketAddr,
    /// The sbc's leg "a" RTP address: where the caller sends.
    pub caller_sends_to: SocketAddr,
    pub callee: SocketAddr,
    /// The sbc's leg "b" RTP address: where the callee sends.
    pub callee_sends_to: SocketAddr,
    pub rtcp_mux: bool,
}

/// What one direction of one call carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Direction {
    pub rtp_sent: u64,
    pub rtp_received: u64,
    pub rtcp_sent: u64,
    pub rtcp_received: u64,
    pub duplicates: u64,
    /// Packets that arrived from the wrong address or with a stranger's SSRC.
    pub foreign: u64,
}

impl Direction {
    pub fn add(&mut self, other: &Direction) {
        self.rtp_sent += other.rtp_sent;
        self.rtp_received += other.rtp_received;
        self.rtcp_sent += other.rtcp_sent;
        self.rtcp_received += other.rtcp_received;
        self.duplicates += other.duplicates;
        self.foreign += other.foreign;
    }

    /// Share of sent packets (RTP and RTCP) that arrived.
    pub fn delivered(&self) -> f64 {
        let sent = self.rtp_sent + self.rtcp_sent;
        if sent == 0 {
            return 1.0;
        }
        (self.rtp_received + self.rtcp_received) as f64 / sent as f64
    }
}

#[derive(Clone, Debug, Default)]
pub struct TrafficReport {
    /// Per call: caller → callee, callee → caller.
    pub calls: Vec<[Direction; 2]>,
}

impl TrafficReport {
    pub fn caller_to_callee(&self) -> Direction {
        self.total(0)
    }

    pub fn callee_to_caller(&self) -> Direction {
        self.total(1)
    }

    /// Panics naming the first call and direction that lost more than `bound` of media
    /// (`when`: what was going on).
    pub fn assert_loss_within(&self, bound: Duration, when: &str) {
        let lost_bound = (bound.as_millis() / PACKET_INTERVAL.as_millis()) as u64;
        for (i, call) in self.calls.iter().enumerate() {
            for (direction, name) in call.iter().zip(["caller->callee", "callee->caller"]) {
                let lost = direction.rtp_sent - direction.rtp_received.min(direction.rtp_sent);
                assert!(
                    lost <= lost_bound,
                    "call {i} {name} lost {lost} RTP packets (over {bound:?}) {when}: {direction:?}"
                );
            }
        }
    }

    fn total(&self, direction: usize) -> Direction {
        let mut total = Direction::default();
        for call in &self.calls {
            total.add(&call[direction]);
        }
        total
    }
}

/// Live totals for progress display.
#[derive(Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

/// What one side sent and what it received from the other, per call.
struct SideResult {
    sent: Vec<(u64, u64)>,
    received: Vec<Direction>,
}

/// Media running in the background between the caller and callee namespaces.
pub struct Traffic {
    caller: JoinHandle<anyhow::Result<SideResult>>,
    callee: JoinHandle<anyhow::Result<SideResult>>,
    pub progress: Arc<Progress>,
}

#[derive(Clone, Copy)]
struct EndpointPlan {
    local: SocketAddr,
    remote: SocketAddr,
    rtcp_mux: bool,
    ssrc_out: u32,
    ssrc_in: u32,
}

impl Traffic {
    /// Starts paced RTP (and RTCP) both ways on every call, for `duration`.
    pub fn start(lab: &Lab, calls: &[Call], duration: Duration) -> Self {
        Self::between(&lab.caller, &lab.callee, calls, duration)
    }

    /// `start` with the callers in namespace `caller` and the callees in `callee`.
    pub fn between(caller: &Netns, callee: &Netns, calls: &[Call], duration: Duration) -> Self {
        let progress = Arc::new(Progress::default());
        let barrier = Arc::new(Barrier::new(2));
        let plans = |caller_side: bool| -> Vec<EndpointPlan> {
            calls
                .iter()
                .enumerate()
                .map(|(i, call)| {
                    let (caller_ssrc, callee_ssrc) =
                        (0x5b0c_0000 + 2 * i as u32, 0x5b0c_0001 + 2 * i as u32);
                    if caller_side {
                        EndpointPlan {
                            local: call.caller,
                            remote: call.caller_sends_to,
                            rtcp_mux: call.rtcp_mux,
                            ssrc_out: caller_ssrc,
                            ssrc_in: callee_ssrc,
                        }
                    } else {
                        EndpointPlan {
                            local: call.callee,
                            remote: call.callee_sends_to,
                            rtcp_mux: call.rtcp_mux,
                            ssrc_out: callee_ssrc,
                            ssrc_in: caller_ssrc,
                        }
                    }
                })
                .collect()
        };
        let side = |ns: &Netns, plans: Vec<EndpointPlan>| {
            let barrier = Arc::clone(&barrier);
            let progress = Arc::clone(&progress);
            ns.spawn(move || run_side(plans, duration, &barrier, &progress))
        };
        Self {
            caller: side(caller, plans(true)),
            callee: side(callee, plans(false)),
            progress,
        }
    }

    /// Waits for the end of the media and pairs what each side sent with what the other got.
    pub fn finish(self) -> anyhow::Result<TrafficReport> {
        let join = |handle: JoinHandle<anyhow::Result<SideResult>>| {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("a media thread panicked"))?
        };
        let caller = join(self.caller).context("caller side")?;
        let callee = join(self.callee).context("callee side")?;
        let direction = |sent: (u64, u64), received: &Direction| Direction {
            rtp_sent: sent.0,
            rtcp_sent: sent.1,
            ..*received
        };
        let calls = (0..caller.sent.len())
            .map(|i| {
                [
                    direction(caller.sent[i], &callee.received[i]),
                    direction(callee.sent[i], &caller.received[i]),
                ]
            })
            .collect();
        Ok(TrafficReport { calls })
    }
}

struct Endpoint {
    plan: EndpointPlan,
    rtp: UdpSocket,
    rtcp: Option<UdpSocket>,
    seq: u16,
    rtp_sent: u64,
    rtcp_sent: u64,
    seen: Vec<bool>,
    received: Direction,
}

impl Endpoint {
    fn bind(plan: EndpointPlan) -> anyhow::Result<Self> {
        let open = |addr: SocketAddr| -> anyhow::Result<UdpSocket> {
            let socket = UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))?;
            socket.set_nonblocking(true)?;
            Ok(socket)
        };
        let rtcp = if plan.rtcp_mux {
            None
        } else {
            Some(open(next_port(plan.local))?)
        };
        Ok(Self {
            rtp: open(plan.local)?,
            rtcp,
            plan,
            seq: 0,
            rtp_sent: 0,
            rtcp_sent: 0,
            seen: vec![false; 1 << 16],
            received: Direction::default(),
        })
    }

    fn rtcp_remote(&self) -> SocketAddr {
        if self.plan.rtcp_mux {
            self.plan.remote
        } else {
            next_port(self.plan.remote)
        }
    }

    fn send_rtp(&mut self) {
        let mut packet = [0xd5u8; RTP_HEADER_BYTES + RTP_PAYLOAD_BYTES];
        packet[0] = 0x80;
        packet[1] = 8; // PCMA
        packet[2..4].copy_from_slice(&self.seq.to_be_bytes());
        let timestamp = u32::from(self.seq) * RTP_PAYLOAD_BYTES as u32;
        packet[4..8].copy_from_slice(&timestamp.to_be_bytes());
        packet[8..12].copy_from_slice(&self.plan.ssrc_out.to_be_bytes());
        if self.rtp.send_to(&packet, self.plan.remote).is_ok() {
            self.rtp_sent += 1;
        }
        self.seq = self.seq.wrapping_add(1);
    }

    fn send_rtcp(&mut self) {
        let mut report = [0u8; RTCP_SR_BYTES];
        report[0] = 0x80;
        report[1] = 200; // sender report
        report[2..4].copy_from_slice(&((RTCP_SR_BYTES / 4 - 1) as u16).to_be_bytes());
        report[4..8].copy_from_slice(&self.plan.ssrc_out.to_be_bytes());
        report[20..24].copy_from_slice(&(self.rtp_sent as u32).to_be_bytes());
        let remote = self.rtcp_remote();
        let socket = self.rtcp.as_ref().unwrap_or(&self.rtp);
        if socket.send_to(&report, remote).is_ok() {
            self.rtcp_sent += 1;
        }
    }

    /// Reads everything waiting on the endpoint's sockets; returns how many packets arrived.
    fn drain(&mut self) -> u64 {
        let mut buf = [0u8; 2048];
        let mut count = 0;
        for use_rtcp_socket in [false, true] {
            loop {
                let socket = if use_rtcp_socket {
                    match &self.rtcp {
                        Some(socket) => socket,
                        None => break,
                    }
                } else {
                    &self.rtp
                };
                let (len, from) = match socket.recv_from(&mut buf) {
                    Ok(received) => received,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => continue,
                };
                count += 1;
                let expected_from = if use_rtcp_socket {
                    self.rtcp_remote()
                } else {
                    self.plan.remote
                };
                self.account(&buf[..len], from == expected_from);
            }
        }
        count
    }

    fn account(&mut self, packet: &[u8], from_expected_address: bool) {
        let ssrc = packet
            .get(4..8)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()));
        let is_rtcp = packet.get(1).is_some_and(|pt| (200..=204).contains(pt));
        let ssrc = if is_rtcp {
            ssrc
        } else {
            packet
                .get(8..12)
                .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
        };
        if !from_expected_address || ssrc != Some(self.plan.ssrc_in) {
            self.received.foreign += 1;
        } else if is_rtcp {
            self.received.rtcp_received += 1;
        } else {
            let seq = u16::from_be_bytes([packet[2], packet[3]]);
            if std::mem::replace(&mut self.seen[usize::from(seq)], true) {
                self.received.duplicates += 1;
            } else {
                self.received.rtp_received += 1;
            }
        }
    }
}

fn next_port(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip(), addr.port() + 1)
}

fn run_side(
    plans: Vec<EndpointPlan>,
    duration: Duration,
    barrier: &Barrier,
    progress: &Progress,
) -> anyhow::Result<SideResult> {
    let endpoints: anyhow::Result<Vec<Endpoint>> = plans.into_iter().map(Endpoint::bind).collect();
    // Both sides must be listening before either sends; wait even if binding failed.
    barrier.wait();
    let mut endpoints = endpoints?;
    let start = Instant::now();
    let mut tick = 0u32;
    while start.elapsed() < duration {
        let rtcp_tick = tick % RTCP_EVERY == RTCP_EVERY / 2;
        for endpoint in &mut endpoints {
            endpoint.send_rtp();
            if rtcp_tick {
                endpoint.send_rtcp();
            }
        }
        let per_endpoint = if rtcp_tick { 2 } else { 1 };
        progress
            .sent
            .fetch_add(per_endpoint * endpoints.len() as u64, Ordering::Relaxed);
        tick += 1;
        let next = start + PACKET_INTERVAL * tick;
        loop {
            let received: u64 = endpoints.iter_mut().map(Endpoint::drain).sum();
            progress.received.fetch_add(received, Ordering::Relaxed);
            let now = Instant::now();
            if now >= next {
                break;
            }
            std::thread::sleep((next - now).min(Duration::from_millis(2)));
        }
    }
    let drain_until = Instant::now() + DRAIN;
    while Instant::now() < drain_until {
        let received: u64 = endpoints.iter_mut().map(Endpoint::drain).sum();
        progress.received.fetch_add(received, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(SideResult {
        sent: endpoints
            .iter()
            .map(|e| (e.rtp_sent, e.rtcp_sent))
            .collect(),
        received: endpoints.iter().map(|e| e.received).collect(),
    })
}

/// An attacker spraying forged RTP at relay ports from one address, and counting whatever
/// reaches it (a hijacked leg would send it the call's media).
pub struct Spray {
    thread: JoinHandle<anyhow::Result<SprayReport>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SprayReport {
    pub sent: u64,
    /// Packets that reached the attacker: any at all is a leak.
    pub received: u64,
}

impl Spray {
    /// Starts sending from `source` (an address of `ns`, any port) to every target, round after
    /// round, for `duration`.
    pub fn start(ns: &Netns, source: IpAddr, targets: Vec<SocketAddr>, duration: Duration) -> Self {
        let thread = ns.spawn(move || {
            let socket = UdpSocket::bind(SocketAddr::new(source, 0))
                .with_context(|| format!("binding the attacker to {source}"))?;
            socket.set_nonblocking(true)?;
            let mut packet = [0u8; RTP_HEADER_BYTES + RTP_PAYLOAD_BYTES];
            packet[0] = 0x80;
            packet[1] = 8;
            packet[8..12].copy_from_slice(&0xbad0_bad0u32.to_be_bytes());
            let mut report = SprayReport::default();
            let mut buf = [0u8; 2048];
            let start = Instant::now();
            let mut receive = |report: &mut SprayReport| {
                while socket.recv_from(&mut buf).is_ok() {
                    report.received += 1;
                }
            };
            while start.elapsed() < duration {
                for target in &targets {
                    packet[2..4].copy_from_slice(&(report.sent as u16).to_be_bytes());
                    if socket.send_to(&packet, target).is_ok() {
                        report.sent += 1;
                    }
                }
                receive(&mut report);
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(DRAIN);
            receive(&mut report);
            Ok(report)
        });
        Self { thread }
    }

    pub fn finish(self) -> anyhow::Result<SprayReport> {
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the attacker's thread panicked"))?
    }
}
