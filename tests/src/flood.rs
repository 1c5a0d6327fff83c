//! A bounded SIP flood, as scanners and attackers send it: INVITEs, OPTIONS or both, each with
//! a Call-ID and branch of its own (so none can pass for a known dialog), sent in batches with
//! `sendmmsg` as fast as the host allows (or paced), until a packet count or a time limit is
//! reached, whichever comes first. From one address, or from many in turn as a botnet sends:
//! each source under every per-source limit, the sum far above what the edge can serve.
use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::bail;

use crate::{netns::Netns, sip_probe};

/// Datagrams per `sendmmsg` call.
const BATCH: usize = 64;
/// Datagrams per `sendmmsg` call when there are many sources: each source's packets are
/// spread over the second, as a botnet's are, instead of arriving in bursts.
const BATCH_PER_SOURCE: usize = 16;
/// Where each datagram's sequence number goes (in its Call-ID and Via branch).
const PLACEHOLDER: &[u8] = b"ffffffffffffffff";

/// What a flood sends, and when it stops.
#[derive(Debug, Clone, Copy)]
pub struct Flood {
    pub packets: u64,
    pub duration: Duration,
    pub mix: Mix,
    /// Packets per second at most; `None`: as fast as the host can.
    pub pace: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
pub struct FloodReport {
    /// Datagrams the sending host accepted (some may still be lost on the way).
    pub sent: u64,
    pub elapsed: Duration,
}

impl FloodReport {
    pub fn packets_per_sec(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What a flood sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Nothing that could set up a call at a backend.
    Options,
    Invites,
    /// INVITEs and OPTIONS alternately.
    InvitesAndOptions,
}

/// A request with its placeholder offsets.
struct Template {
    bytes: Vec<u8>,
    slots: Vec<usize>,
}

impl Template {
    fn new(bytes: Vec<u8>) -> Self {
        let slots = bytes
            .windows(PLACEHOLDER.len())
            .enumerate()
            .filter(|(_, window)| *window == PLACEHOLDER)
            .map(|(at, _)| at)
            .collect();
        Self { bytes, slots }
    }

    fn stamp(&self, buffer: &mut [u8], sequence: u64) {
        let digits = format!("{sequence:016x}");
        for &at in &self.slots {
            buffer[at..at + PLACEHOLDER.len()].copy_from_slice(digits.as_bytes());
        }
    }
}

/// Starts a flood from `local` in `ns` to `target`.
pub fn start(
    ns: &Netns,
    local: SocketAddr,
    target: SocketAddr,
    limits: Flood,
) -> JoinHandle<anyhow::Result<FloodReport>> {
    start_from(ns, vec![local], target, limits)
}

/// One source of a flood: its socket and its requests.
struct Source {
    socket: UdpSocket,
    templates: [Template; 2],
    buffers: Vec<Vec<u8>>,
}

impl Source {
    fn new(local: SocketAddr, target: SocketAddr, mix: Mix, batch: usize) -> anyhow::Result<Self> {
        let call_id = std::str::from_utf8(PLACEHOLDER).expect("ASCII");
        let options = || Template::new(sip_probe::options(local, target, call_id, "flood"));
        let invite = || Template::new(sip_probe::invite(local, target, call_id));
        let templates = match mix {
            Mix::Options => [options(), options()],
            Mix::Invites => [invite(), invite()],
            Mix::InvitesAndOptions => [invite(), options()],
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(target)?;
        let buffers = (0..batch).map(|i| templates[i % 2].bytes.clone()).collect();
        Ok(Self {
            socket,
            templates,
            buffers,
        })
    }

    /// Sends `count` (at most its batch) requests numbered from `sequence` on: how many the
    /// kernel took.
    fn send(&mut self, count: usize, sequence: u64) -> anyhow::Result<u64> {
        for (i, buffer) in self.buffers.iter_mut().take(count).enumerate() {
            self.templates[i % 2].stamp(buffer, sequence + i as u64);
        }
        send_batch(&self.socket, &mut self.buffers[..count])
    }
}

/// Starts a flood from each of `locals` in turn (addresses of `ns`), `limits` being for all of
/// them together.
pub fn start_from(
    ns: &Netns,
    locals: Vec<SocketAddr>,
    target: SocketAddr,
    limits: Flood,
) -> JoinHandle<anyhow::Result<FloodReport>> {
    ns.spawn(move || {
        let batch = if locals.len() > 1 {
            BATCH_PER_SOURCE
        } else {
            BATCH
        };
        let mut sources = locals
            .iter()
            .map(|&local| Source::new(local, target, limits.mix, batch))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let started = Instant::now();
        let mut sent = 0u64;
        for turn in 0.. {
            if sent >= limits.packets || started.elapsed() >= limits.duration {
                break;
            }
            let count = batch.min((limits.packets - sent) as usize);
            let source = turn % sources.len();
            sent += sources[source].send(count, sent)?;
            if let Some(rate) = limits.pace {
                let due = started + Duration::from_secs_f64(sent as f64 / f64::from(rate.max(1)));
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        }
        Ok(FloodReport {
            sent,
            elapsed: started.elapsed(),
        })
    })
}

/// One `sendmmsg`; how many datagrams the kernel took (none when its buffers are full).
fn send_batch(socket: &UdpSocket, buffers: &mut [Vec<u8>]) -> anyhow::Result<u64> {
    let mut iovecs: Vec<libc::iovec> = buffers
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut messages: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut message: libc::mmsghdr = unsafe { std::mem::zeroed() };
            message.msg_hdr.msg_iov = iov;
            message.msg_hdr.msg_iovlen = 1;
            message
        })
        .collect();
    // SAFETY: `messages` points at `iovecs`, which point at `buffers`; all outlive the call.
    let taken = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            messages.as_mut_ptr(),
            messages.len() as u32,
            0,
        )
    };
    if taken >= 0 {
        return Ok(taken as u64);
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        // The host's own queues are full: that is the flood's ceiling, not a failure.
        Some(libc::ENOBUFS | libc::EAGAIN) => {
            std::thread::yield_now();
            Ok(0)
        }
        _ => bail!("sendmmsg: {error}"),
    }
}
