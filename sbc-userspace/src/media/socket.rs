//! Media sockets that hold their port: a port goes back to its pool when its socket closes.
//!
//! A socket is shared by the relay task receiving on it and by the other leg's flow sending
//! from it, and an aborted relay task lets go of it only when the runtime gets to drop the task.
//! Freeing the port when a session ends would hand out a port that is still bound (the next
//! allocation would skip it as taken elsewhere); freeing it when the last holder closes the
//! socket keeps the pool's count exact.
use std::{
    io,
    net::{IpAddr, SocketAddr},
    ops::Deref,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::net::UdpSocket;

use super::ports::{AllocError, PortPool};

/// The ports of one local address, shared with the sockets that hold them.
#[derive(Debug, Clone)]
pub struct SharedPool(Arc<Mutex<PortPool>>);

/// A bound relay port.
#[derive(Debug)]
pub struct MediaSocket {
    // Fields drop in order: the socket closes before its port is offered again.
    socket: UdpSocket,
    _lease: PortLease,
}

/// A port taken from a pool; dropping it gives the port back.
#[derive(Debug)]
struct PortLease {
    pool: SharedPool,
    port: u16,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.lock().release(self.port);
    }
}

impl Deref for MediaSocket {
    type Target = UdpSocket;

    fn deref(&self) -> &UdpSocket {
        &self.socket
    }
}

impl MediaSocket {
    /// Wraps a bound socket; the lease is taken first so that a failure gives the port back.
    fn new(socket: std::net::UdpSocket, lease: PortLease) -> io::Result<Arc<Self>> {
        socket.set_nonblocking(true)?;
        Ok(Arc::new(Self {
            socket: UdpSocket::from_std(socket)?,
            _lease: lease,
        }))
    }
}

impl SharedPool {
    pub fn new(min: u16, max: u16) -> Self {
        Self(Arc::new(Mutex::new(PortPool::new(min, max))))
    }

    /// The pool itself. Never held while taking the media plane's lock (sockets close, and so
    /// take this lock, while that one is held).
    pub fn lock(&self) -> MutexGuard<'_, PortPool> {
        // A pool is a bitmap and a count: nothing a panic can leave worse than it was.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Allocates and binds one port on `address`, or an RTP/RTCP pair when `pair` is true;
    /// returns the first port and the sockets in port order.
    pub fn bind(
        &self,
        address: IpAddr,
        pair: bool,
    ) -> Result<(u16, Vec<Arc<MediaSocket>>), AllocError> {
        let (first, bound) = self.lock().allocate(pair, |port| {
            std::net::UdpSocket::bind(SocketAddr::new(address, port))
        })?;
        let sockets = bound
            .into_iter()
            .zip(first..)
            .map(|(socket, port)| MediaSocket::new(socket, self.lease(port)))
            .collect::<io::Result<_>>()
            .map_err(AllocError::Bind)?;
        Ok((first, sockets))
    }

    /// Takes and binds one given port again (adopting a previous daemon's session).
    pub fn rebind(&self, local: SocketAddr) -> Result<Arc<MediaSocket>, String> {
        if !self.lock().reserve(local.port()) {
            return Err(format!(
                "port {local} is outside the media range or taken twice"
            ));
        }
        let lease = self.lease(local.port());
        std::net::UdpSocket::bind(local)
            .and_then(|socket| MediaSocket::new(socket, lease))
            .map_err(|e| format!("cannot bind {local}: {e}"))
    }

    fn lease(&self, port: u16) -> PortLease {
        PortLease {
            pool: self.clone(),
            port,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn a_port_is_free_again_exactly_when_its_last_holder_lets_go() {
        let pool = SharedPool::new(31300, 31303);
        let (first, sockets) = pool.bind(LOOPBACK, true).unwrap();
        assert_eq!(pool.lock().in_use(), 2);
        let relay_holds = Arc::clone(&sockets[0]);
        drop(sockets);
        assert_eq!(pool.lock().in_use(), 1, "a port still held stays in use");
        drop(relay_holds);
        assert_eq!(pool.lock().in_use(), 0);
        let again = pool.rebind(SocketAddr::new(LOOPBACK, first)).unwrap();
        assert_eq!(again.local_addr().unwrap().port(), first);
        assert!(pool.rebind(SocketAddr::new(LOOPBACK, first)).is_err());
        assert_eq!(pool.lock().in_use(), 1, "a refused rebind takes nothing");
    }
}
