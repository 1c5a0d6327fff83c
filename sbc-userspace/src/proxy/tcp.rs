//! SIP over TCP (RFC 3261 18.3): a reader per connection frames messages by Content-Length and
//! hands them to the proxy task; a writer per connection sends what the proxy answers. A
//! connection that sends garbage, a lying or missing Content-Length, nothing for too long, or
//! a message too slowly (a byte a second keeps an idle timer alive forever) is closed (after a
//! 400 when the broken request can still be answered). Connections are bounded in total and
//! per source address (`[sip.tcp]`): beyond that a new one is closed at once, so a single host
//! cannot hold every descriptor the media relay needs.
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
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tracing::debug;

use super::{Queued, core::build, intake::Intake, lanes::Lanes, stats::SipStats};
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
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_connections_per_source: 128,
            message_timeout_ms: 5000,
            idle_secs: 300,
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

pub async fn listen(
    address: SocketAddr,
    side: Side,
    lanes: Lanes,
    intake: Arc<Intake>,
    numbers: Arc<AtomicU64>,
    connections: Arc<Connections>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding SIP listener {address} (TCP)"))?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, from)) => {
                    let Some(admitted) = connections.admit(from.ip()) else {
                        debug!(%from, "SIP connection refused: over [sip.tcp] limits");
                        continue;
                    };
                    let connection = numbers.fetch_add(1, Ordering::Relaxed);
                    let (lanes, intake) = (lanes.clone(), Arc::clone(&intake));
                    let limits = connections.config.clone();
                    let stats = Arc::clone(&connections.stats);
                    tokio::spawn(async move {
                        let peer = Peer {
                            from,
                            listener: side,
                            connection,
                        };
                        serve(stream, peer, &limits, lanes, intake, &stats).await;
                        drop(admitted);
                    });
                }
                Err(e) => debug!("accepting a SIP connection failed: {e}"),
            }
        }
    });
    Ok(())
}

/// Who is at the other end of a connection, and which one it is.
struct Peer {
    from: SocketAddr,
    listener: Side,
    connection: u64,
}

async fn serve(
    stream: TcpStream,
    peer: Peer,
    limits: &TcpConfig,
    lanes: Lanes,
    intake: Arc<Intake>,
    stats: &SipStats,
) {
    let Peer {
        from,
        listener,
        connection,
    } = peer;
    let idle = Duration::from_secs(limits.idle_secs);
    let message_timeout = Duration::from_millis(limits.message_timeout_ms);
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    if !lanes.control(Queued::Connected {
        connection,
        writer: tx.clone(),
    }) {
        return;
    }
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
    // When the first byte of the message in the buffer arrived.
    let mut message_began: Option<Instant> = None;
    'read: loop {
        let wait = message_began.map_or(idle, |began| {
            message_timeout.saturating_sub(began.elapsed())
        });
        let read = match tokio::time::timeout(wait, reader.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Err(_) if message_began.is_some() => {
                stats.tcp_slow_closed.fetch_add(1, Ordering::Relaxed);
                debug!(%from, "closing SIP connection: a message took longer than sip.tcp.message_timeout_ms");
                break;
            }
            Err(_) => break,
            Ok(Ok(read)) => read,
        };
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
                        connection,
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
