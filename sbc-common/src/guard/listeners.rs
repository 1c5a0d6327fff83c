//! The SIP listeners the guard protects, held in one map entry and compared in place: a hash
//! lookup per datagram would cost a flood from a blocked source a third of its drop.
use crate::{FlowKey, maps::MAX_SIP_LISTENERS};

/// The one entry of the SIP listeners map: the first `count` of `listeners` are the UDP
/// addresses and ports the guard protects.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct SipListeners {
    pub count: u32,
    pub _pad: u32,
    pub listeners: [FlowKey; MAX_SIP_LISTENERS],
}

impl SipListeners {
    /// The listeners `keys` (duplicates once); `None` if they are more than the map holds.
    pub fn of(keys: impl IntoIterator<Item = FlowKey>) -> Option<Self> {
        let mut listeners = Self::default();
        for key in keys {
            if listeners.holds(&key) {
                continue;
            }
            let slot = listeners.listeners.get_mut(listeners.count as usize)?;
            *slot = key;
            listeners.count += 1;
        }
        Some(listeners)
    }

    /// Whether `destination` is one of the listeners. The port is compared first: it tells
    /// most other traffic apart at once.
    #[inline(always)]
    pub fn holds(&self, destination: &FlowKey) -> bool {
        let mut index = 0;
        while index < MAX_SIP_LISTENERS {
            if index as u32 >= self.count {
                return false;
            }
            let listener = &self.listeners[index];
            if listener.port == destination.port
                && listener.addr == destination.addr
                && listener.proto == destination.proto
            {
                return true;
            }
            index += 1;
        }
        false
    }
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)` of integers and `FlowKey`s (themselves `Pod`), no implicit padding.
unsafe impl aya::Pod for SipListeners {}

const _: () = assert!(core::mem::size_of::<SipListeners>() == 8 + 20 * MAX_SIP_LISTENERS);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IpAddress;

    fn key(address: [u8; 4], port: u16) -> FlowKey {
        FlowKey::udp(IpAddress::from_ipv4(address), port.to_be())
    }

    #[test]
    fn holds_its_listeners_and_nothing_else() {
        let public = key([192, 0, 2, 1], 5060);
        let private = key([10, 0, 0, 1], 5060);
        let listeners = SipListeners::of([public, private, public]).unwrap();
        assert_eq!(listeners.count, 2, "a duplicate once");
        assert!(listeners.holds(&public) && listeners.holds(&private));
        assert!(!listeners.holds(&key([192, 0, 2, 1], 5061)), "another port");
        assert!(
            !listeners.holds(&key([192, 0, 2, 2], 5060)),
            "another address"
        );
        let tcp = FlowKey { proto: 6, ..public };
        assert!(!listeners.holds(&tcp), "another protocol");
        assert!(!SipListeners::default().holds(&FlowKey::default()), "none");
    }

    #[test]
    fn more_listeners_than_the_map_holds_are_refused() {
        let many = (0..=MAX_SIP_LISTENERS as u16).map(|n| key([192, 0, 2, 1], 5060 + n));
        assert!(SipListeners::of(many).is_none());
    }
}
