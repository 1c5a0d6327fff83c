//! A datagram as intake and the lanes look at it on arrival: where it came from, and what the
//! guard knows of it, each found at most once.
use std::{cell::OnceCell, net::IpAddr};

use crate::{admission::SipGuard, side::Side};

/// A datagram being looked at on arrival, with what is known of it.
pub struct Arriving<'a> {
    pub listener: Side,
    pub source: IpAddr,
    pub bytes: &'a [u8],
    pub guard: &'a SipGuard,
    dialog_id: OnceCell<Option<u64>>,
    of_a_call: OnceCell<bool>,
}

impl<'a> Arriving<'a> {
    pub fn new(listener: Side, source: IpAddr, bytes: &'a [u8], guard: &'a SipGuard) -> Self {
        Self {
            listener,
            source,
            bytes,
            guard,
            dialog_id: OnceCell::new(),
            of_a_call: OnceCell::new(),
        }
    }

    /// Its dialog key (see `SipGuard::dialog_id_of`), scanned for at most once: the scan is
    /// the costly part, and both the lane and the memory of queued INVITEs need it.
    pub fn dialog_id(&self) -> Option<u64> {
        *self
            .dialog_id
            .get_or_init(|| self.guard.dialog_id_of(self.bytes))
    }

    /// Whether it keeps calls going: from the backends' side, a response, or a request of
    /// a call the proxy holds.
    pub fn of_a_call(&self) -> bool {
        *self.of_a_call.get_or_init(|| {
            self.listener == Side::Private
                || self.bytes.starts_with(b"SIP/2.0 ")
                || self
                    .dialog_id()
                    .is_some_and(|id| self.guard.holds_dialog(id))
        })
    }
}
