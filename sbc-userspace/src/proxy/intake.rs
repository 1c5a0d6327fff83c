//! Intake: the listeners' side of the queue to the proxy task, and where an overloaded daemon
//! sheds. The proxy is behind when new requests wait half of `overload_delay_ms` for it (the
//! oldest one queued, or the datagram at hand in the kernel's buffer: those let in then reach
//! the proxy within the bound, where it would refuse them), or when `shed_queue_depth`
//! messages wait.
//! Then new requests from the public side that belong to no call are shed on arrival (their
//! senders retransmit or go elsewhere, and handling them would delay the calls already up);
//! responses, requests of known dialogs and the private side still get through, and
//! allowlisted sources' new requests until the proxy is four times as far behind. A shed
//! INVITE is answered 503 at once (`shed_answer`). Each source's shed requests are counted
//! for the proxy, which holds them against the source as refusals. Past `QUEUE_LIMIT` every
//! datagram is dropped and TCP readers wait, so the queue's memory stays bounded whatever
//! arrives.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use sbc_common::guard::starts_an_invite;
use tokio::net::UdpSocket;
use tracing::debug;

use super::{Queued, arriving::Arriving, lanes::Lanes, shed_answer::ShedAnswers};
use crate::{
    admission::{AdmissionConfig, AdmissionCounters, QUEUE_LIMIT, SipGuard},
    side::Side,
};

/// Allowlisted sources' new requests are shed only when the proxy is this many times further
/// behind than for others (the same patience they get for overload refusals).
const TRUSTED_PATIENCE: usize = 4;

/// Sources whose shed requests are counted between two collections by the proxy; past it a
/// new source's go uncounted until the next collection (the table's memory stays bounded).
const MAX_SHED_SOURCES: usize = 65_536;

/// How long an INVITE queued for the proxy is remembered (at least; at most twice as long).
const INVITE_MEMORY: Duration = Duration::from_secs(4);
/// INVITEs remembered in one generation at most.
const MAX_RECENT_INVITES: usize = 65_536;

/// What a SIP listener asks of the kernel as receive buffer: room for a burst while the
/// receiver is busy (the kernel caps it at `net.core.rmem_max` unless we may force it).
const RECEIVE_BUFFER: usize = 4 << 20;

pub struct Intake {
    /// Messages queued and not yet taken by the proxy.
    depth: AtomicUsize,
    /// From this depth on, new public requests are shed (0: never).
    shed_at: AtomicUsize,
    /// Once the oldest new request waiting has waited this long, new public requests are shed
    /// (in nanoseconds; 0: never).
    shed_after_ns: AtomicU64,
    counters: Arc<AdmissionCounters>,
    /// New requests shed per source since the proxy last collected them.
    shed_by_source: Mutex<HashMap<IpAddr, u32>>,
    answers: ShedAnswers,
    recent_invites: Mutex<RecentInvites>,
}

/// The dialog keys (seeded Call-ID hashes) of the INVITEs queued lately. A retransmission of one that arrives while the
/// queue is deep is dropped, not answered 503: the original is on its way to the proxy, and
/// refusing the retransmission would fail a call the proxy is about to set up.
struct RecentInvites {
    current: HashSet<u64>,
    previous: HashSet<u64>,
    rotated: Instant,
}

impl RecentInvites {
    fn new() -> Self {
        Self {
            current: HashSet::new(),
            previous: HashSet::new(),
            rotated: Instant::now(),
        }
    }

    fn remember(&mut self, call_id: u64, now: Instant) {
        if now.duration_since(self.rotated) >= INVITE_MEMORY
            || self.current.len() >= MAX_RECENT_INVITES
        {
            self.previous = std::mem::take(&mut self.current);
            self.rotated = now;
        }
        self.current.insert(call_id);
    }

    fn contains(&self, call_id: u64) -> bool {
        self.current.contains(&call_id) || self.previous.contains(&call_id)
    }
}

/// What becomes of a datagram on arrival.
#[derive(Debug, PartialEq, Eq)]
enum Arrival {
    Queue,
    Drop,
    /// Shed, and answered with this (503).
    Answer(Vec<u8>),
}

impl Intake {
    pub fn new(
        admission: &AdmissionConfig,
        retry_after_secs: u32,
        counters: Arc<AdmissionCounters>,
    ) -> Self {
        let intake = Self {
            depth: AtomicUsize::new(0),
            shed_at: AtomicUsize::new(0),
            shed_after_ns: AtomicU64::new(0),
            counters,
            shed_by_source: Mutex::new(HashMap::new()),
            answers: ShedAnswers::new(retry_after_secs),
            recent_invites: Mutex::new(RecentInvites::new()),
        };
        intake.reconfigure(admission);
        intake
    }

    fn recent_invites(&self) -> std::sync::MutexGuard<'_, RecentInvites> {
        self.recent_invites
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the bounds of a (reloaded) `[admission]`. They hold with its limits off too:
    /// shedding is what keeps the calls that are up going, not a policy on sources.
    pub fn reconfigure(&self, admission: &AdmissionConfig) {
        self.shed_at
            .store(admission.shed_queue_depth, Ordering::Relaxed);
        let wait = Duration::from_millis(admission.overload_delay_ms) / 2;
        let wait_ns = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        self.shed_after_ns.store(wait_ns, Ordering::Relaxed);
    }

    /// Whether the proxy is behind by `patience` times the bounds, with `depth` messages
    /// queued and new requests waiting `behind`.
    fn is_behind(&self, depth: usize, behind: Duration, patience: usize) -> bool {
        let shed_at = self.shed_at.load(Ordering::Relaxed);
        let shed_after = Duration::from_nanos(self.shed_after_ns.load(Ordering::Relaxed));
        (shed_at > 0 && depth >= shed_at.saturating_mul(patience))
            || (!shed_after.is_zero() && behind >= shed_after * patience as u32)
    }

    /// What becomes of a datagram: queued for the proxy, or shed (counted, and an INVITE
    /// answered unless it is a retransmission of one queued). `behind`: how long new
    /// requests wait for the proxy now (in the kernel's buffer and the queue), asked only of
    /// the public side's datagrams.
    fn arrival(&self, arriving: &Arriving, behind: impl FnOnce() -> Duration) -> Arrival {
        let arrival = self.decide(arriving, behind);
        if arrival == Arrival::Queue
            && starts_an_invite(arriving.bytes)
            && let Some(id) = arriving.dialog_id()
        {
            self.recent_invites().remember(id, Instant::now());
        }
        arrival
    }

    fn decide(&self, arriving: &Arriving, behind: impl FnOnce() -> Duration) -> Arrival {
        let (listener, source, datagram) = (arriving.listener, arriving.source, arriving.bytes);
        let depth = self.depth.load(Ordering::Relaxed);
        if depth >= QUEUE_LIMIT {
            self.counters
                .shed_queue_full
                .fetch_add(1, Ordering::Relaxed);
            return Arrival::Drop;
        }
        if ShedAnswers::is_ack_of_answer(datagram) {
            // It ends a transaction that was never kept: nothing to do.
            return Arrival::Drop;
        }
        if listener == Side::Private {
            return Arrival::Queue;
        }
        let behind = behind();
        if !self.is_behind(depth, behind, 1) {
            return Arrival::Queue;
        }
        if arriving.of_a_call() {
            return Arrival::Queue;
        }
        if arriving.guard.is_allowlisted(source) && !self.is_behind(depth, behind, TRUSTED_PATIENCE)
        {
            return Arrival::Queue;
        }
        self.counters
            .shed_new_requests
            .fetch_add(1, Ordering::Relaxed);
        if datagram.starts_with(b"ACK ") {
            // An ACK asks for nothing: dropping it costs its sender nothing to hold against it.
            return Arrival::Drop;
        }
        if starts_an_invite(datagram)
            && arriving
                .dialog_id()
                .is_some_and(|id| self.recent_invites().contains(id))
        {
            // A retransmission: its original is queued.
            return Arrival::Drop;
        }
        self.count_shed(source);
        match self.answers.answer(datagram) {
            Some(answer) => {
                self.counters.shed_answered.fetch_add(1, Ordering::Relaxed);
                Arrival::Answer(answer)
            }
            None => Arrival::Drop,
        }
    }

    fn count_shed(&self, source: IpAddr) {
        let mut shed = self
            .shed_by_source
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if shed.len() < MAX_SHED_SOURCES || shed.contains_key(&source) {
            *shed.entry(source).or_default() += 1;
        }
    }

    /// The new requests shed per source since the last call.
    pub fn take_shed(&self) -> HashMap<IpAddr, u32> {
        std::mem::take(
            &mut *self
                .shed_by_source
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    fn queued(&self) {
        self.depth.fetch_add(1, Ordering::Relaxed);
    }

    /// The proxy took a message off the queue.
    pub fn taken(&self) {
        self.depth.fetch_sub(1, Ordering::Relaxed);
    }

    /// Queues a message read from a TCP connection, first waiting (and so pushing back on
    /// the sender) while the queue is full. False once the proxy is gone.
    pub async fn queue_stream(&self, lanes: &Lanes, event: Queued) -> bool {
        while self.depth.load(Ordering::Relaxed) >= QUEUE_LIMIT {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.queued();
        lanes.stream_message(event)
    }
}

/// A SIP UDP listener with a receive buffer for bursts.
pub async fn bind(address: SocketAddr) -> anyhow::Result<Arc<UdpSocket>> {
    let socket = UdpSocket::bind(address)
        .await
        .with_context(|| format!("binding SIP listener {address} (UDP)"))?;
    enlarge_receive_buffer(&socket);
    stamp_arrivals(&socket)?;
    Ok(Arc::new(socket))
}

/// Asks the kernel to stamp each datagram with its arrival time (SO_TIMESTAMPNS): under load
/// a datagram may wait in the receive buffer for longer than in the proxy's queue, and the
/// overload signal must count both. And to say, with each datagram, how many it dropped so
/// far because the buffer was full (SO_RXQ_OVFL): shedding nobody sees is the worst kind.
fn stamp_arrivals(socket: &UdpSocket) -> anyhow::Result<()> {
    for (option, name) in [
        (libc::SO_TIMESTAMPNS, "SO_TIMESTAMPNS"),
        (libc::SO_RXQ_OVFL, "SO_RXQ_OVFL"),
    ] {
        anyhow::ensure!(
            set_socket_option(socket, option, 1),
            "{name} on a SIP listener: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Sets a SOL_SOCKET option with an int value; false if the kernel refused it (errno says
/// why).
fn set_socket_option(socket: &UdpSocket, option: libc::c_int, value: libc::c_int) -> bool {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a valid socket fd and a c_int option value of the size given.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// One datagram as `recvmsg` gave it.
struct Received {
    len: usize,
    from: SocketAddr,
    /// How long it waited in the kernel since it arrived (zero without a stamp).
    waited: Duration,
    /// Datagrams the socket has dropped so far for a full buffer (a wrapping count).
    dropped_so_far: Option<u32>,
}

/// Receives one datagram with `recvmsg`, with what the kernel says about it.
fn receive_stamped(socket: &UdpSocket, buf: &mut [u8]) -> std::io::Result<Received> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: an all-zero sockaddr_storage is valid (family AF_UNSPEC).
    let mut source: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for an SCM_TIMESTAMPNS message (a timespec) and an SO_RXQ_OVFL one (a u32),
    // 8-byte aligned.
    let mut control = [0u64; 12];
    // SAFETY: an all-zero msghdr is valid; its pointers are set below to live buffers.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_name = (&raw mut source).cast();
    header.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    header.msg_iov = &raw mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every buffer the header points to outlives the call.
    let len = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut header, libc::MSG_DONTWAIT) };
    if len < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let from = socket_addr_of(&source).ok_or_else(|| std::io::Error::other("no source address"))?;
    let mut received = Received {
        len: len as usize,
        from,
        waited: Duration::ZERO,
        dropped_so_far: None,
    };
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within its length.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const header);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                    let stamp: libc::timespec = std::ptr::read_unaligned(data.cast());
                    let arrived = std::time::UNIX_EPOCH
                        + Duration::new(stamp.tv_sec as u64, stamp.tv_nsec as u32);
                    received.waited = std::time::SystemTime::now()
                        .duration_since(arrived)
                        .unwrap_or_default();
                }
                (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                    received.dropped_so_far = Some(std::ptr::read_unaligned(data.cast()));
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&raw const header, cmsg);
        }
    }
    Ok(received)
}

fn socket_addr_of(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let v4: &libc::sockaddr_in =
                unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::new(
                std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)).into(),
                u16::from_be(v4.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let v6: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::new(
                std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr).into(),
                u16::from_be(v6.sin6_port),
            ))
        }
        _ => None,
    }
}

fn enlarge_receive_buffer(socket: &UdpSocket) {
    let size = RECEIVE_BUFFER as libc::c_int;
    // FORCE passes rmem_max, which needs CAP_NET_ADMIN (the daemon has it); without it the
    // kernel grants what rmem_max allows.
    if !set_socket_option(socket, libc::SO_RCVBUFFORCE, size)
        && !set_socket_option(socket, libc::SO_RCVBUF, size)
    {
        debug!("cannot enlarge a SIP listener's receive buffer");
    }
}

/// Reads a UDP listener. With the userspace dataplane the guard decides here what the XDP
/// program would have dropped, before anything is copied or queued; then intake sheds what
/// an overloaded proxy should not see.
pub fn spawn_receiver(
    socket: Arc<UdpSocket>,
    listener: Side,
    lanes: Lanes,
    guard: Arc<SipGuard>,
    intake: Arc<Intake>,
) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        let mut dropped_seen = 0u32;
        loop {
            let received = socket
                .async_io(tokio::io::Interest::READABLE, || {
                    receive_stamped(&socket, &mut buf)
                })
                .await;
            match received {
                Ok(Received {
                    len,
                    from,
                    waited,
                    dropped_so_far,
                }) => {
                    if let Some(total) = dropped_so_far {
                        intake.counters.shed_receive_buffer.fetch_add(
                            u64::from(total.wrapping_sub(dropped_seen)),
                            Ordering::Relaxed,
                        );
                        dropped_seen = total;
                    }
                    let datagram = &buf[..len];
                    if !guard.admit(from.ip(), datagram) {
                        continue;
                    }
                    let arriving = Arriving::new(listener, from.ip(), datagram, &guard);
                    // How far behind the proxy is: what this datagram waited in the kernel,
                    // or the oldest new request waiting in the queue, whichever is longer.
                    let behind = || waited.max(lanes.oldest_new_request_waited());
                    match intake.arrival(&arriving, behind) {
                        Arrival::Queue => {}
                        Arrival::Drop => continue,
                        Arrival::Answer(answer) => {
                            // A full send buffer loses the answer: the request's
                            // retransmission gets another.
                            let _ = socket.try_send_to(&answer, from);
                            continue;
                        }
                    }
                    intake.queued();
                    let now = Instant::now();
                    let event = Queued::Datagram {
                        listener,
                        from,
                        bytes: datagram.to_vec(),
                        // Its arrival in the kernel: the proxy's delay counts the buffer too.
                        received: now.checked_sub(waited).unwrap_or(now),
                    };
                    if !lanes.send(event, arriving.of_a_call()) {
                        return;
                    }
                }
                Err(e) => debug!("SIP receive error: {e}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRANGER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9));
    const TRUNK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10));

    fn guard_with_call(call_id: &str) -> SipGuard {
        let guard = SipGuard::userspace();
        let admission = AdmissionConfig {
            allowlist: vec!["192.0.2.0/24".parse().unwrap()],
            ..AdmissionConfig::default()
        };
        guard.configure(&admission, &[], &[]).unwrap();
        guard.dialog_started(call_id).unwrap();
        guard
    }

    /// An intake that sheds at `depth` queued messages (0: never), or once the oldest new
    /// request has waited 250 ms.
    fn intake_shedding_at(
        depth: usize,
        retry_after: u32,
        counters: &Arc<AdmissionCounters>,
    ) -> Intake {
        let admission = AdmissionConfig {
            shed_queue_depth: depth,
            overload_delay_ms: 500,
            ..AdmissionConfig::default()
        };
        Intake::new(&admission, retry_after, Arc::clone(counters))
    }

    const NEW: &[u8] = b"INVITE sip:a@b SIP/2.0\r\nCall-ID: new-call\r\n\r\n";
    const OTHER_NEW: &[u8] = b"INVITE sip:a@b SIP/2.0\r\nCall-ID: other-call\r\n\r\n";
    const BYE: &[u8] = b"BYE sip:a@b SIP/2.0\r\ni: up-call\r\n\r\n";
    const RESPONSE: &[u8] = b"SIP/2.0 180 Ringing\r\nCall-ID: new-call\r\n\r\n";

    #[test]
    fn a_deep_queue_sheds_new_public_requests_first() {
        let counters = Arc::new(AdmissionCounters::default());
        let intake = intake_shedding_at(2, 5, &counters);
        let guard = guard_with_call("up-call");
        let accepts = |side, source, datagram| {
            intake.arrival(&Arriving::new(side, source, datagram, &guard), || {
                Duration::ZERO
            }) == Arrival::Queue
        };
        intake.queued();
        assert!(accepts(Side::Public, STRANGER, NEW), "below the bound");
        intake.queued();
        assert!(!accepts(Side::Public, STRANGER, OTHER_NEW));
        assert!(accepts(Side::Public, STRANGER, BYE), "a known dialog");
        assert!(accepts(Side::Public, STRANGER, RESPONSE));
        assert!(accepts(Side::Private, STRANGER, NEW), "the backends' side");
        assert!(accepts(Side::Public, TRUNK, NEW), "an allowlisted source");
        assert_eq!(counters.shed_new_requests.load(Ordering::Relaxed), 1);
        assert_eq!(intake.take_shed(), HashMap::from([(STRANGER, 1)]));
        assert!(intake.take_shed().is_empty(), "taken");
        intake.depth.store(2 * TRUSTED_PATIENCE, Ordering::Relaxed);
        assert!(
            !accepts(Side::Public, TRUNK, NEW),
            "allowlisted, four times deeper"
        );
        assert!(accepts(Side::Public, TRUNK, RESPONSE));
        intake.depth.store(1, Ordering::Relaxed);
        assert!(accepts(Side::Public, STRANGER, NEW), "caught up");
        intake.reconfigure(&AdmissionConfig {
            shed_queue_depth: 0,
            overload_delay_ms: 0,
            ..AdmissionConfig::default()
        });
        intake.queued();
        intake.queued();
        assert!(accepts(Side::Public, STRANGER, NEW), "never shed");
    }

    #[test]
    fn a_proxy_behind_in_time_sheds_new_public_requests_first() {
        let counters = Arc::new(AdmissionCounters::default());
        let intake = intake_shedding_at(0, 5, &counters);
        let guard = guard_with_call("up-call");
        let accepts = |side, source, datagram, waited_ms| {
            let waited = Duration::from_millis(waited_ms);
            intake.arrival(&Arriving::new(side, source, datagram, &guard), || waited)
                == Arrival::Queue
        };
        assert!(
            accepts(Side::Public, STRANGER, NEW, 249),
            "within half the delay"
        );
        assert!(!accepts(Side::Public, STRANGER, OTHER_NEW, 250));
        assert!(accepts(Side::Public, STRANGER, BYE, 900), "a known dialog");
        assert!(accepts(Side::Public, STRANGER, RESPONSE, 900));
        assert!(
            accepts(Side::Private, STRANGER, NEW, 900),
            "the backends' side"
        );
        assert!(
            accepts(Side::Public, TRUNK, NEW, 999),
            "allowlisted: four times as long"
        );
        assert!(!accepts(Side::Public, TRUNK, NEW, 1000));
        assert_eq!(counters.shed_new_requests.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_full_queue_takes_nothing() {
        let counters = Arc::new(AdmissionCounters::default());
        let intake = intake_shedding_at(0, 5, &counters);
        intake.depth.store(QUEUE_LIMIT, Ordering::Relaxed);
        let guard = guard_with_call("up-call");
        assert_eq!(
            intake.arrival(&Arriving::new(Side::Public, STRANGER, BYE, &guard), || {
                Duration::ZERO
            }),
            Arrival::Drop
        );
        assert_eq!(
            intake.arrival(
                &Arriving::new(Side::Private, TRUNK, RESPONSE, &guard),
                || Duration::ZERO
            ),
            Arrival::Drop
        );
        assert_eq!(counters.shed_queue_full.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_shed_invite_is_answered_and_an_ack_is_not_held_against_its_source() {
        let counters = Arc::new(AdmissionCounters::default());
        let intake = intake_shedding_at(1, 9, &counters);
        let guard = guard_with_call("up-call");
        intake.queued();
        let invite =
            b"INVITE sip:a@198.18.1.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.9;branch=z9hG4bK7\r\n\
            From: <sip:x@203.0.113.9>;tag=1\r\nTo: <sip:a@198.18.1.1>\r\nCall-ID: shed-me\r\n\
            CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let Arrival::Answer(answer) = intake.arrival(
            &Arriving::new(Side::Public, STRANGER, invite, &guard),
            || Duration::ZERO,
        ) else {
            panic!("a shed INVITE goes unanswered");
        };
        assert!(answer.starts_with(b"SIP/2.0 503 "));
        let ack = b"ACK sip:a@198.18.1.1 SIP/2.0\r\nCall-ID: other\r\n\r\n";
        assert_eq!(
            intake.arrival(&Arriving::new(Side::Public, STRANGER, ack, &guard), || {
                Duration::ZERO
            }),
            Arrival::Drop
        );
        assert_eq!(counters.shed_answered.load(Ordering::Relaxed), 1);
        assert_eq!(counters.shed_new_requests.load(Ordering::Relaxed), 2);
        assert_eq!(
            intake.take_shed(),
            HashMap::from([(STRANGER, 1)]),
            "the ACK is not"
        );
    }

    #[test]
    fn a_retransmission_of_a_queued_invite_is_dropped_not_refused() {
        let counters = Arc::new(AdmissionCounters::default());
        let intake = intake_shedding_at(1, 5, &counters);
        let guard = guard_with_call("up-call");
        let invite =
            b"INVITE sip:a@198.18.1.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.9;branch=z9hG4bK8\r\n\
            From: <sip:x@203.0.113.9>;tag=1\r\nTo: <sip:a@198.18.1.1>\r\nCall-ID: queued\r\n\
            CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            intake.arrival(
                &Arriving::new(Side::Public, STRANGER, invite, &guard),
                || Duration::ZERO
            ),
            Arrival::Queue
        );
        intake.queued();
        assert_eq!(
            intake.arrival(
                &Arriving::new(Side::Public, STRANGER, invite, &guard),
                || Duration::ZERO
            ),
            Arrival::Drop,
            "its retransmission, with the queue deep"
        );
        assert_eq!(counters.shed_answered.load(Ordering::Relaxed), 0);
        assert!(intake.take_shed().is_empty(), "not held against its source");
    }
}
