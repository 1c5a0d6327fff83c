//! Intake: the listeners' side of the queue to the proxy task, and where an overloaded daemon
//! sheds. Past `shed_queue_depth` waiting messages, new requests from the public side that
//! belong to no call are dropped on arrival (their senders retransmit or go elsewhere, and
//! handling them would delay the calls already up); responses, requests of known dialogs and
//! the private side still get through, and allowlisted sources' new requests until the queue
//! is four times as deep. Each source's shed requests are counted for the proxy, which holds
//! them against the source as refusals. Past `QUEUE_LIMIT` every datagram is dropped and TCP
//! readers wait, so the queue's memory stays bounded whatever arrives.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{net::UdpSocket, sync::mpsc};
use tracing::debug;

use super::Event;
use crate::{
    admission::{AdmissionCounters, SipGuard},
    media::session::Side,
};

/// Messages that may wait for the proxy at most (a few tens of MiB at worst).
pub const QUEUE_LIMIT: usize = 65_536;

/// Allowlisted sources' new requests are shed only when the queue is this many times deeper
/// than for others (the same patience they get for overload refusals).
const TRUSTED_PATIENCE: usize = 4;

/// Sources whose shed requests are counted between two collections by the proxy; past it a
/// new source's go uncounted until the next collection (the table's memory stays bounded).
const MAX_SHED_SOURCES: usize = 65_536;

/// What a SIP listener asks of the kernel as receive buffer: room for a burst while the
/// receiver is busy (the kernel caps it at `net.core.rmem_max` unless we may force it).
const RECEIVE_BUFFER: usize = 4 << 20;

pub struct Intake {
    /// Messages queued and not yet taken by the proxy.
    depth: AtomicUsize,
    /// From this depth on, new public requests are shed (0: never).
    shed_at: AtomicUsize,
    counters: Arc<AdmissionCounters>,
    /// New requests shed per source since the proxy last collected them.
    shed_by_source: Mutex<HashMap<IpAddr, u32>>,
}

impl Intake {
    pub fn new(shed_at: usize, counters: Arc<AdmissionCounters>) -> Self {
        Self {
            depth: AtomicUsize::new(0),
            shed_at: AtomicUsize::new(shed_at),
            counters,
            shed_by_source: Mutex::new(HashMap::new()),
        }
    }

    pub fn set_shed_at(&self, depth: usize) {
        self.shed_at.store(depth, Ordering::Relaxed);
    }

    /// Whether a datagram from `source` is queued for the proxy; if not, it is counted as
    /// shed.
    fn accepts(&self, listener: Side, source: IpAddr, datagram: &[u8], guard: &SipGuard) -> bool {
        let depth = self.depth.load(Ordering::Relaxed);
        if depth >= QUEUE_LIMIT {
            self.counters
                .shed_queue_full
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let shed_at = self.shed_at.load(Ordering::Relaxed);
        if shed_at == 0 || depth < shed_at || listener == Side::Private {
            return true;
        }
        if datagram.starts_with(b"SIP/2.0 ") || guard.knows_dialog(datagram) {
            return true;
        }
        if depth < shed_at.saturating_mul(TRUSTED_PATIENCE) && guard.is_allowlisted(source) {
            return true;
        }
        self.counters
            .shed_new_requests
            .fetch_add(1, Ordering::Relaxed);
        self.count_shed(source);
        false
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
    pub async fn queue_stream(&self, events: &mpsc::UnboundedSender<Event>, event: Event) -> bool {
        while self.depth.load(Ordering::Relaxed) >= QUEUE_LIMIT {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.queued();
        events.send(event).is_ok()
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
/// overload signal must count both.
fn stamp_arrivals(socket: &UdpSocket) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd as _;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket fd and a c_int option value of the size given.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    anyhow::ensure!(
        done == 0,
        "SO_TIMESTAMPNS on a SIP listener: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Receives one datagram with `recvmsg`: its length, its source, and how long it waited in
/// the kernel since it arrived (zero when the kernel gave no stamp).
fn receive_stamped(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr, Duration)> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: an all-zero sockaddr_storage is valid (family AF_UNSPEC).
    let mut source: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one SCM_TIMESTAMPNS message (a timespec), 8-byte aligned.
    let mut control = [0u64; 8];
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
    let mut waited = Duration::ZERO;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within its length.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let stamp: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let arrived = std::time::UNIX_EPOCH
                    + Duration::new(stamp.tv_sec as u64, stamp.tv_nsec as u32);
                waited = std::time::SystemTime::now()
                    .duration_since(arrived)
                    .unwrap_or_default();
            }
            cmsg = libc::CMSG_NXTHDR(&raw const header, cmsg);
        }
    }
    Ok((len as usize, from, waited))
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
    use std::os::fd::AsRawFd as _;
    let size = RECEIVE_BUFFER as libc::c_int;
    let set = |option| {
        // SAFETY: a valid socket fd and a c_int option value of the size given.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    };
    // FORCE passes rmem_max, which needs CAP_NET_ADMIN (the daemon has it); without it the
    // kernel grants what rmem_max allows.
    if !set(libc::SO_RCVBUFFORCE) && !set(libc::SO_RCVBUF) {
        debug!("cannot enlarge a SIP listener's receive buffer");
    }
}

/// Reads a UDP listener. With the userspace dataplane the guard decides here what the XDP
/// program would have dropped, before anything is copied or queued; then intake sheds what
/// an overloaded proxy should not see.
pub fn spawn_receiver(
    socket: Arc<UdpSocket>,
    listener: Side,
    events: mpsc::UnboundedSender<Event>,
    guard: Arc<SipGuard>,
    intake: Arc<Intake>,
) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            let received = socket
                .async_io(tokio::io::Interest::READABLE, || {
                    receive_stamped(&socket, &mut buf)
                })
                .await;
            match received {
                Ok((len, from, waited)) => {
                    let datagram = &buf[..len];
                    if !guard.admit(from.ip(), datagram)
                        || !intake.accepts(listener, from.ip(), datagram, &guard)
                    {
                        continue;
                    }
                    intake.queued();
                    let now = Instant::now();
                    let event = Event::Datagram {
                        listener,
                        from,
                        bytes: datagram.to_vec(),
                        // Its arrival in the kernel: the proxy's delay counts the buffer too.
                        received: now.checked_sub(waited).unwrap_or(now),
                    };
                    if events.send(event).is_err() {
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
    use crate::admission::AdmissionConfig;

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

    const NEW: &[u8] = b"INVITE sip:a@b SIP/2.0\r\nCall-ID: new-call\r\n\r\n";
    const BYE: &[u8] = b"BYE sip:a@b SIP/2.0\r\ni: up-call\r\n\r\n";
    const RESPONSE: &[u8] = b"SIP/2.0 180 Ringing\r\nCall-ID: new-call\r\n\r\n";

    #[test]
    fn a_deep_queue_sheds_new_public_requests_first() {
        let counters = Arc::new(AdmissionCounters::default());
        let intake = Intake::new(2, Arc::clone(&counters));
        let guard = guard_with_call("up-call");
        let accepts = |side, source, datagram| intake.accepts(side, source, datagram, &guard);
        intake.queued();
        assert!(accepts(Side::Public, STRANGER, NEW), "below the bound");
        intake.queued();
        assert!(!accepts(Side::Public, STRANGER, NEW));
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
        intake.set_shed_at(0);
        intake.queued();
        intake.queued();
        assert!(accepts(Side::Public, STRANGER, NEW), "never shed");
    }

    #[test]
    fn a_full_queue_takes_nothing() {
        let counters = Arc::new(AdmissionCounters::default());
        let intake = Intake::new(0, Arc::clone(&counters));
        intake.depth.store(QUEUE_LIMIT, Ordering::Relaxed);
        let guard = guard_with_call("up-call");
        assert!(!intake.accepts(Side::Public, STRANGER, BYE, &guard));
        assert!(!intake.accepts(Side::Private, TRUNK, RESPONSE, &guard));
        assert_eq!(counters.shed_queue_full.load(Ordering::Relaxed), 2);
    }
}
