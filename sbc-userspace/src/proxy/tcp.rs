//! SIP over TCP (RFC 3261 18.3): a reader per connection frames messages by Content-Length and
//! hands them to the proxy task; a writer per connection sends what the proxy answers. A
//! connection that sends garbage, a lying or missing Content-Length, nothing for too long, or
//! a message too slowly (a byte a second keeps an idle timer alive forever) is closed (after a
//! 400 when the broken request can still be answered). Connections are bounded in total and
//! per source address (`[sip.tcp]`): beyond that a new one is closed at once, so a single host
//! cannot hold every descriptor the media relay needs.
//!
//! The proxy opens connections of its own to the peers it sends requests to over TCP
//! (`Outbound`: one per peer, reused while open), from the side's listener address. An idle
//! one carries a CRLF keep-alive ping every `keepalive_secs` (RFC 5626), and data the peer's
//! kernel has not acknowledged within `dead_after_ms` ends it (TCP_USER_TIMEOUT): a peer that
//! vanished without closing is known in seconds, and the requests waiting on it fail over.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Deserialize;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, TcpSocket},
    sync::mpsc,
};
use tracing::debug;

use super::{
    Queued,
    core::{build, transactions::Transport},
    dns::{Named, Target},
    intake::Intake,
    lanes::Lanes,
    stats::SipStats,
    tls::{Certificates, TlsPeer},
};
use crate::{
    side::Side,
    sip::{
        framing::{self, StreamFrame},
        inbound::{self, Inbound},
    },
};

/// `[sip.tcp]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpConfig {
    /// Open connections, all listeners together.
    pub max_connections: usize,
    /// Open connections from one IP address.
    pub max_connections_per_source: usize,
    /// From a message's first byte to its last (headers and body).
    pub message_timeout_ms: u64,
    /// A connection silent this long is closed (clients keep theirs alive with CRLF pings).
    pub idle_secs: u64,
    /// Connections we open: how long connecting may take, how often an idle one is pinged
    /// (0: never), and how long what we sent may stay unacknowledged before the peer is
    /// taken for dead.
    pub connect_timeout_ms: u64,
    pub keepalive_secs: u64,
    pub dead_after_ms: u64,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_connections_per_source: 128,
            message_timeout_ms: 5000,
            idle_secs: 300,
            connect_timeout_ms: 2000,
            keepalive_secs: 10,
            dead_after_ms: 3000,
        }
    }
}

/// The open connections, by source: a connection holds its place until its `Admitted` drops.
pub struct Connections {
    config: TcpConfig,
    by_source: Mutex<HashMap<IpAddr, usize>>,
    stats: Arc<SipStats>,
}

/// A connection's place among the open ones.
struct Admitted {
    connections: Arc<Connections>,
    source: IpAddr,
}

impl Connections {
    pub fn new(config: TcpConfig, stats: Arc<SipStats>) -> Arc<Self> {
        Arc::new(Self {
            config,
            by_source: Mutex::new(HashMap::new()),
            stats,
        })
    }

    /// A place for a new connection from `source`, if the limits leave one.
    fn admit(self: &Arc<Self>, source: IpAddr) -> Option<Admitted> {
        let mut by_source = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        let open = self.stats.tcp_open.load(Ordering::Relaxed) as usize;
        let from_source = by_source.get(&source).copied().unwrap_or(0);
        if open >= self.config.max_connections
            || from_source >= self.config.max_connections_per_source
        {
            self.stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        by_source.insert(source, from_source + 1);
        self.stats.tcp_open.fetch_add(1, Ordering::Relaxed);
        Some(Admitted {
            connections: Arc::clone(self),
            source,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let connections = &self.connections;
        let mut by_source = connections
            .by_source
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(open) = by_source.get_mut(&self.source) {
            *open -= 1;
            if *open == 0 {
                by_source.remove(&self.source);
            }
        }
        connections.stats.tcp_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts SIP connections on `address` (TCP, or TLS with `tls`'s current certificate) and
/// serves each within the `[sip.tcp]` limits.
pub async fn listen(
    address: SocketAddr,
    side: Side,
    tls: Option<Arc<Certificates>>,
    (lanes, intake): (Lanes, Arc<Intake>),
    numbers: Arc<AtomicU64>,
    connections: Arc<Connections>,
) -> anyhow::Result<()> {
    let kind = if tls.is_some() { "TLS" } else { "TCP" };
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding SIP listener {address} ({kind})"))?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, from)) => {
                    let Some(admitted) = connections.admit(from.ip()) else {
                        debug!(%from, "SIP connection refused: over [sip.tcp] limits");
                        continue;
                    };
                    let peer = Peer {
                        from,
                        listener: side,
                        connection: numbers.fetch_add(1, Ordering::Relaxed),
                        tls: tls.is_some(),
                    };
                    let link = (lanes.clone(), Arc::clone(&intake));
                    let (connections, tls) = (Arc::clone(&connections), tls.clone());
                    tokio::spawn(async move {
                        match tls {
                            None => accepted(stream, peer, link, &connections).await,
                            Some(tls) => {
                                // A handshake is a message too: it must not take longer.
                                let limit =
                                    Duration::from_millis(connections.config.message_timeout_ms);
                                let handshake = tls.acceptor().accept(stream);
                                match tokio::time::timeout(limit, handshake).await {
                                    Ok(Ok(stream)) => {
                                        accepted(stream, peer, link, &connections).await
                                    }
                                    Ok(Err(e)) => debug!(%from, "TLS handshake failed: {e}"),
                                    Err(_) => {
                                        debug!(%from, "TLS handshake took longer than sip.tcp.message_timeout_ms")
                                    }
                                }
                            }
                        }
                        drop(admitted);
                    });
                }
                Err(e) => debug!("accepting a SIP connection failed: {e}"),
            }
        }
    });
    Ok(())
}

/// Serves a connection a listener accepted, once the proxy knows its writer.
async fn accepted<S>(
    stream: S,
    peer: Peer,
    (lanes, intake): (Lanes, Arc<Intake>),
    connections: &Connections,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (writer, writes) = mpsc::unbounded_channel();
    let connected = Queued::Connected {
        connection: peer.connection,
        writer: writer.clone(),
    };
    if lanes.control(connected) {
        let link = Link {
            lanes,
            intake,
            writer,
            writes,
            ours: false,
            keepalive: None,
        };
        serve(stream, peer, &connections.config, link, &connections.stats).await;
    }
}

/// Who is at the other end of a connection, and which one it is.
struct Peer {
    from: SocketAddr,
    listener: Side,
    connection: u64,
    /// Over TLS.
    tls: bool,
}

/// What joins a connection to the proxy: its queues, and the channel of what the proxy
/// writes on it (the proxy holds a `writer` too); keep-alive pings for connections we opened.
struct Link {
    lanes: Lanes,
    intake: Arc<Intake>,
    writer: mpsc::UnboundedSender<Vec<u8>>,
    writes: mpsc::UnboundedReceiver<Vec<u8>>,
    /// We opened it (its end by the peer is counted).
    ours: bool,
    keepalive: Option<Duration>,
}

async fn serve<S>(stream: S, peer: Peer, limits: &TcpConfig, link: Link, stats: &SipStats)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let Peer {
        from,
        listener,
        connection,
        tls,
    } = peer;
    let transport = if tls {
        Transport::Tls(connection)
    } else {
        Transport::Tcp(connection)
    };
    let Link {
        lanes,
        intake,
        writer: tx,
        writes: mut rx,
        ours,
        keepalive,
    } = link;
    let lost = || {
        if ours {
            stats.tcp_peers_lost.fetch_add(1, Ordering::Relaxed);
        }
    };
    let idle = Duration::from_secs(limits.idle_secs);
    let message_timeout = Duration::from_millis(limits.message_timeout_ms);
    // Between reads, wait no longer than a keep-alive interval.
    let tick = keepalive.map_or(idle, |every| every.min(idle));
    let (mut reader, mut writer) = tokio::io::split(stream);
    let writing = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut buffer = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    // When the first byte of the message in the buffer arrived, and when anything last did.
    let mut message_began: Option<Instant> = None;
    let mut heard = Instant::now();
    'read: loop {
        let wait = message_began.map_or(tick, |began| {
            message_timeout.saturating_sub(began.elapsed())
        });
        let read = match tokio::time::timeout(wait, reader.read(&mut chunk)).await {
            Ok(Ok(0)) => {
                lost();
                break;
            }
            Ok(Err(e)) => {
                debug!(%from, "SIP connection lost: {e}");
                lost();
                break;
            }
            Err(_) if message_began.is_some() => {
                stats.tcp_slow_closed.fetch_add(1, Ordering::Relaxed);
                debug!(%from, "closing SIP connection: a message took longer than sip.tcp.message_timeout_ms");
                break;
            }
            Err(_) if heard.elapsed() >= idle => break,
            Err(_) => {
                // RFC 5626: a double-CRLF ping. A peer gone silent never acknowledges it,
                // and the kernel ends the connection (`dead_after_ms`).
                if keepalive.is_some() {
                    let _ = tx.send(b"\r\n\r\n".to_vec());
                }
                continue;
            }
            Ok(Ok(read)) => read,
        };
        heard = Instant::now();
        buffer.extend_from_slice(&chunk[..read]);
        loop {
            match framing::stream(&buffer) {
                Ok(StreamFrame::Incomplete) => break,
                Ok(StreamFrame::KeepAlive { len, ping }) => {
                    buffer.drain(..len);
                    if ping {
                        // RFC 5626: a double-CRLF ping is answered with a single CRLF.
                        let _ = tx.send(b"\r\n".to_vec());
                    }
                }
                Ok(StreamFrame::Message(len)) => {
                    let bytes: Vec<u8> = buffer.drain(..len).collect();
                    let event = Queued::Stream {
                        listener,
                        from,
                        connection: transport,
                        bytes,
                        received: Instant::now(),
                    };
                    if !intake.queue_stream(&lanes, event).await {
                        break 'read;
                    }
                }
                Err(error) => {
                    debug!(%from, "closing SIP connection: {error}");
                    if let Inbound::Refuse {
                        rejection,
                        message: Some(message),
                    } = inbound::framing_failure(&buffer, &error)
                    {
                        let reason = format!(
                            "{} ({})",
                            build::reason_phrase(rejection.status),
                            rejection.reason
                        );
                        let _ = tx.send(build::response(
                            &message,
                            rejection.status,
                            &reason,
                            "framing",
                            &[],
                        ));
                    }
                    break 'read;
                }
            }
        }
        message_began = match (buffer.is_empty(), message_began) {
            (true, _) => None,
            (false, None) => Some(Instant::now()),
            (false, began) => began,
        };
    }
    drop(tx);
    let _ = lanes.control(Queued::Disconnected { connection });
    let _ = writing.await;
}

/// The connections the proxy opens to the peers it sends requests to over TCP: one per peer
/// and side, reused while it stays open.
pub struct Outbound {
    by_peer: HashMap<OutboundKey, u64>,
    peer_of: HashMap<u64, OutboundKey>,
    dialer: Arc<Dialer>,
}

/// A connection we open: the side, the peer, and whether over TLS.
type OutboundKey = (Side, SocketAddr, bool);

/// What opening a connection takes.
pub struct Dialer {
    pub lanes: Lanes,
    pub intake: Arc<Intake>,
    /// Numbers connections, with the listeners' (one sequence: the proxy tells them apart).
    pub numbers: Arc<AtomicU64>,
    pub limits: TcpConfig,
    pub stats: Arc<SipStats>,
    /// Each side's listener address, which its connections are opened from (`Side::index`).
    pub local: [IpAddr; 2],
    /// How to speak TLS to the peers configured for it, by address; those DNS finds for a
    /// name configured for TLS join as they are found (`Outbound::resolved`).
    pub tls: std::sync::RwLock<HashMap<SocketAddr, Arc<TlsPeer>>>,
    /// How to speak TLS to the targets of each name configured for it.
    pub named_tls: HashMap<Named, Arc<TlsPeer>>,
}

impl Outbound {
    pub fn new(dialer: Dialer) -> Self {
        Self {
            by_peer: HashMap::new(),
            peer_of: HashMap::new(),
            dialer: Arc::new(dialer),
        }
    }

    /// DNS found `targets` for `of`: if that name is reached over TLS, they are spoken to
    /// with its settings (the certificate checked for its server name).
    pub fn resolved(&self, of: Named, targets: &[Target]) {
        let Some(peer) = self.dialer.named_tls.get(&of) else {
            return;
        };
        let mut tls = self.dialer.tls.write().unwrap_or_else(|p| p.into_inner());
        for target in targets {
            tls.entry(target.address)
                .or_insert_with(|| Arc::clone(peer));
        }
    }

    /// The writer of the connection to `peer` on `side` (over TLS with `tls`), opened now
    /// when there is none (what is written meanwhile waits for it; if it cannot be opened,
    /// its close says so).
    pub fn writer_to(
        &mut self,
        key: OutboundKey,
        writers: &mut HashMap<u64, mpsc::UnboundedSender<Vec<u8>>>,
    ) -> mpsc::UnboundedSender<Vec<u8>> {
        if let Some(writer) = self
            .by_peer
            .get(&key)
            .and_then(|connection| writers.get(connection))
        {
            return writer.clone();
        }
        let (side, peer, tls) = key;
        let connection = self.dialer.numbers.fetch_add(1, Ordering::Relaxed);
        let (writer, writes) = mpsc::unbounded_channel();
        writers.insert(connection, writer.clone());
        self.by_peer.insert(key, connection);
        self.peer_of.insert(connection, key);
        let dialer = Arc::clone(&self.dialer);
        let link = Link {
            lanes: dialer.lanes.clone(),
            intake: Arc::clone(&dialer.intake),
            writer: writer.clone(),
            writes,
            ours: true,
            keepalive: (dialer.limits.keepalive_secs > 0)
                .then(|| Duration::from_secs(dialer.limits.keepalive_secs)),
        };
        tokio::spawn(async move {
            let peer = Peer {
                from: peer,
                listener: side,
                connection,
                tls,
            };
            dial(&dialer, peer, link).await;
        });
        writer
    }

    /// A connection closed: the peer it went to, when it was one of ours.
    pub fn closed(&mut self, connection: u64) -> Option<(Side, SocketAddr)> {
        let key = self.peer_of.remove(&connection)?;
        if self.by_peer.get(&key) == Some(&connection) {
            self.by_peer.remove(&key);
        }
        Some((key.0, key.1))
    }
}

/// Opens a connection to `peer` and serves it; its close (or failure to open) is queued as
/// `Disconnected`, as a listener's connections are.
async fn dial(dialer: &Dialer, peer: Peer, link: Link) {
    let limits = &dialer.limits;
    let local = dialer.local[usize::from(peer.listener.index())];
    let connect = async {
        let socket = if peer.from.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(local, 0))?;
        set_dead_after(&socket, Duration::from_millis(limits.dead_after_ms))?;
        socket.connect(peer.from).await
    };
    let timeout = Duration::from_millis(limits.connect_timeout_ms);
    let connection = peer.connection;
    let lanes = link.lanes.clone();
    let why = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(stream)) if !peer.tls => {
            return serve(stream, peer, limits, link, &dialer.stats).await;
        }
        Ok(Ok(stream)) => match tls_peer(dialer, peer.from) {
            Some(tls) => match tokio::time::timeout(timeout, tls.connect(stream)).await {
                Ok(Ok(stream)) => {
                    return serve(stream, peer, limits, link, &dialer.stats).await;
                }
                Ok(Err(e)) => format!("TLS handshake failed: {e}"),
                Err(_) => "TLS handshake took longer than sip.tcp.connect_timeout_ms".to_owned(),
            },
            None => "no TLS settings for it (only backends have them)".to_owned(),
        },
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within sip.tcp.connect_timeout_ms".to_owned(),
    };
    debug!(to = %peer.from, "cannot open a SIP connection: {why}");
    dialer.stats.tcp_peers_lost.fetch_add(1, Ordering::Relaxed);
    let _ = lanes.control(Queued::Disconnected { connection });
}

fn tls_peer(dialer: &Dialer, address: SocketAddr) -> Option<Arc<TlsPeer>> {
    let tls = dialer.tls.read().unwrap_or_else(|p| p.into_inner());
    tls.get(&address).cloned()
}

/// TCP_USER_TIMEOUT: data unacknowledged this long ends the connection (a keep-alive ping
/// included), where the kernel's own retransmissions would take many minutes.
fn set_dead_after(socket: &TcpSocket, after: Duration) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let ms = libc::c_uint::try_from(after.as_millis()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: a valid socket descriptor, and an option value of the size given.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&raw const ms).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
