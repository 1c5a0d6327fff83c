//! Our SIP addresses on each side: the listener its sockets are bound to, and the address its
//! parties are told (in our Via and Record-Route): the advertised one behind a 1:1 NAT, else
//! the same. Parties write either back to us (a Route, a Request-URI), so both name us.
use std::net::{IpAddr, SocketAddr};

use crate::{config::SipConfig, side::Side};

pub struct OurAddresses {
    /// Indexed by `Side::index`.
    bound: [SocketAddr; 2],
    advertised: [SocketAddr; 2],
    /// Addresses advertised before (`readvertise`): calls set up then still name them.
    formerly: Vec<SocketAddr>,
    /// The public side's TLS listener (`[sip.tls]`), as bound.
    tls: Option<SocketAddr>,
}

impl OurAddresses {
    pub fn new(config: &SipConfig) -> Self {
        let mut bound = [config.public_listen; 2];
        let mut advertised = bound;
        for (side, listener, address) in [
            (Side::Public, config.public_listen, config.public_advertise),
            (
                Side::Private,
                config.private_listen(),
                config.private_advertise,
            ),
        ] {
            let slot = usize::from(side.index());
            bound[slot] = listener;
            advertised[slot] = address.map_or(listener, |ip| SocketAddr::new(ip, listener.port()));
        }
        Self {
            bound,
            advertised,
            formerly: Vec::new(),
            tls: config.tls.as_ref().map(|tls| tls.listen),
        }
    }

    /// How the public side's parties reach our TLS listener: the advertised address, at the
    /// TLS listener's port.
    pub fn tls_advertised(&self) -> Option<SocketAddr> {
        let public = self.advertised(Side::Public);
        self.tls.map(|tls| SocketAddr::new(public.ip(), tls.port()))
    }

    /// A side's parties are told `ip` from now on (at the same port); the address they were
    /// told before still names us, for the calls that know us by it.
    pub fn readvertise(&mut self, side: Side, ip: IpAddr) {
        let slot = &mut self.advertised[usize::from(side.index())];
        let moved = SocketAddr::new(ip, slot.port());
        if *slot != moved && !self.formerly.contains(slot) {
            self.formerly.push(*slot);
        }
        *slot = moved;
    }

    /// Where a side's listener is bound: the source of what we send there.
    pub fn bound(&self, side: Side) -> SocketAddr {
        self.bound[usize::from(side.index())]
    }

    /// How a side's parties reach that listener.
    pub fn advertised(&self, side: Side) -> SocketAddr {
        self.advertised[usize::from(side.index())]
    }

    /// Whether both sides share one listener.
    pub fn shared(&self) -> bool {
        self.bound[0] == self.bound[1]
    }

    /// Whether `ip` and `port` name one of our listeners, as bound or as advertised (now or
    /// before).
    pub fn name_us(&self, ip: IpAddr, port: u16) -> bool {
        let tls = self.tls.into_iter().chain(self.tls_advertised());
        self.bound
            .iter()
            .chain(&self.advertised)
            .chain(&self.formerly)
            .copied()
            .chain(tls)
            .any(|address| address.ip() == ip && address.port() == port)
    }

    /// Whether `ip` and `port` are how the public side reaches us now (the advertised
    /// address, at the UDP/TCP listener's port or the TLS one).
    pub fn public_now(&self, ip: IpAddr, port: u16) -> bool {
        let ours = self.advertised(Side::Public);
        ip == ours.ip() && (port == ours.port() || self.tls.is_some_and(|tls| tls.port() == port))
    }
}
