//! The userspace relay: one task per local media port. It receives what the kernel passes up
//! (everything, with `--dataplane userspace`) and forwards it as `MediaPlane::on_packet` decides.
//!
//! A task holds no buffer while it waits: it waits for its socket to be readable, then reads
//! what is there into its worker thread's one buffer and relays it at once, without awaiting.
//! A port costs its task and its socket, not a datagram's worth of memory (four ports a call),
//! and the task is kept small: its decision is held inline, not boxed, and it awaits nothing
//! but its socket (a timer's state would double the task).
use std::{cell::RefCell, io, net::SocketAddr, sync::Arc};

use tokio::task::JoinHandle;
use tracing::debug;

use super::socket::MediaSocket;

/// The receive buffer: a jumbo frame's worth. Media never comes near it; anything that fills it
/// may have been cut short and is dropped rather than relayed.
const MAX_DATAGRAM: usize = 9216;
/// Datagrams one task relays before it waits again (at once, if more are there).
const BATCH: usize = 64;

thread_local! {
    /// One receive buffer per worker thread, used only between a wake-up and the next wait.
    static RECEIVED: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_DATAGRAM]);
}

/// Where a datagram of `len` bytes from `src` goes: out of which socket, to whom (`None`:
/// dropped). The media plane decides (`MediaPlane::on_packet`).
pub(super) trait Decide:
    Fn(SocketAddr, usize) -> Option<(Arc<MediaSocket>, SocketAddr)> + Send + Sync + 'static
{
}

impl<F> Decide for F where
    F: Fn(SocketAddr, usize) -> Option<(Arc<MediaSocket>, SocketAddr)> + Send + Sync + 'static
{
}

pub(super) fn spawn(socket: Arc<MediaSocket>, decide: impl Decide) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Waiting fails only once the runtime's I/O driver is gone (the daemon is stopping):
        // nothing is left to relay.
        while let Ok(()) = socket.readable().await {
            // Past a batch the socket stays readable, and tokio's budget for the task makes
            // the next wait yield to the others in time.
            RECEIVED.with_borrow_mut(|buffer| relay_waiting(&socket, &decide, buffer));
        }
        debug!("media relay task ends: the runtime is shutting down");
    })
}

/// Relays up to `BATCH` datagrams waiting on `socket`. A datagram the other leg's socket
/// cannot take at once (its send buffer full) is dropped, as a router drops: waiting for it
/// would hold every later packet of the stream back.
fn relay_waiting(socket: &MediaSocket, decide: &impl Decide, buffer: &mut [u8]) {
    for _ in 0..BATCH {
        let (len, src) = match socket.try_recv_from(buffer) {
            Ok(received) => received,
            // Nothing more (readiness is cleared for the next wait).
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            // An ICMP error for something we sent earlier; nothing to do with this port.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => {
                debug!("media socket receive failed: {e}");
                return;
            }
        };
        if len == MAX_DATAGRAM {
            debug!(%src, "oversized datagram on a media port dropped");
            continue;
        }
        if let Some((out, dst)) = decide(src, len)
            && let Err(e) = out.try_send_to(&buffer[..len], dst)
        {
            debug!(%dst, "relaying media failed: {e}");
        }
    }
}
