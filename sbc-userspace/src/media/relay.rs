//! The userspace relay: one task per local media port. It receives what the kernel passes up
//! (everything, with `--dataplane userspace`) and forwards it as `MediaPlane::on_packet` decides.
use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tracing::debug;

use super::socket::MediaSocket;

/// Receive buffer per relay port: a jumbo frame's worth. Media never comes near it, and a
/// buffer per port (four per session) must stay small; anything that fills it may have been
/// cut short and is dropped rather than relayed.
const MAX_DATAGRAM: usize = 9216;

/// Where a datagram of `len` bytes from `src` goes: out of which socket, to whom (`None`:
/// dropped). The media plane decides (`MediaPlane::on_packet`).
pub(super) type Decide =
    Box<dyn Fn(SocketAddr, usize) -> Option<(Arc<MediaSocket>, SocketAddr)> + Send + Sync>;

pub(super) fn spawn(socket: Arc<MediaSocket>, decide: Decide) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (len, src) = match socket.recv_from(&mut buf).await {
                Ok(received) => received,
                // An ICMP error for something we sent earlier; nothing to do with this port.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => {
                    // Not expected on a bound UDP socket; back off rather than spin.
                    debug!("media socket receive failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if len == MAX_DATAGRAM {
                debug!(%src, "oversized datagram on a media port dropped");
                continue;
            }
            if let Some((out, dst)) = decide(src, len)
                && let Err(e) = out.send_to(&buf[..len], dst).await
            {
                debug!(%dst, "relaying media failed: {e}");
            }
        }
    })
}
