//! What the XDP program needs to forward an established call's SIP in the kernel
//! (`sbc_common::sip_forward`): the call's identity and, per direction, the Request-URI its
//! requests carry and where they go (`Forwarding`); and our own addresses as the proxy writes
//! them (`Core::sip_selves`). The kernel forwards only what it can do byte for byte as this
//! proxy would; a direction it cannot represent here is left to the daemon.
use std::net::SocketAddr;

use sbc_common::{
    Dialog, DialogLeg, SipSelf, SipSelves,
    call_id::call_id_hash,
    dialog::{HEADER_NAME_TEXT, LEG_ANSWERS_HIDDEN, LEG_FORWARD, MAX_STRIPPED, Text},
};

use super::{
    Core, names::CallKey, record::Party, requests::uri_asks_stream, transactions::Transport,
};
use crate::{
    media::session::flow_key,
    side::Side,
    sip::{address, message::compact_form, uri},
};

/// One direction of a call, named by the party that sends its requests.
#[derive(Debug, Clone, PartialEq)]
pub struct LegRoute {
    /// The Request-URI of its requests: the other party's Contact, as the sender was told it
    /// (ours when that party is hidden from it).
    pub request_uri: String,
    /// The Request-URI they leave with: the other party's Contact.
    pub target_uri: String,
    /// The other party is hidden from the sender: a Contact in its responses is rewritten.
    pub answers_hidden: bool,
    /// The kernel forwards its requests (not a hidden party's, whose Vias a transaction here
    /// keeps); the leg is there for the responses to the other party's requests all the same.
    pub forwards_requests: bool,
    /// Our listener on the sender's side.
    pub listener: SocketAddr,
    /// Where its requests go: the other party's Contact, resolved.
    pub target: SocketAddr,
    /// Where its sender is, and the responses to its requests go.
    pub party: SocketAddr,
    pub out_side: Side,
}

/// A call as the kernel's dialogs map holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Forwarding {
    pub call_id: String,
    /// The caller's tag and the callee's.
    pub tags: [String; 2],
    /// The caller's requests and the callee's; `None`: left to the daemon.
    pub legs: [Option<LegRoute>; 2],
}

impl Forwarding {
    /// The dialogs map's value for this call (the Request-URIs hashed with the map's `seed`),
    /// or `None` when its Call-ID or tags are longer than the kernel keeps. A direction whose
    /// Request-URI is longer is left to the daemon.
    pub fn map_value(&self, seed: u64) -> Option<Dialog> {
        let mut dialog = Dialog::KNOWN;
        dialog.call_id = Text::new(self.call_id.as_bytes())?;
        for (text, tag) in dialog.tags.iter_mut().zip(&self.tags) {
            *text = Text::new(tag.as_bytes())?;
        }
        for (leg, route) in dialog.legs.iter_mut().zip(&self.legs) {
            let Some(route) = route else { continue };
            let Some(target_uri) = Text::new(route.target_uri.as_bytes()) else {
                continue;
            };
            let hidden = if route.answers_hidden {
                LEG_ANSWERS_HIDDEN
            } else {
                0
            };
            let forward = if route.forwards_requests {
                LEG_FORWARD
            } else {
                0
            };
            *leg = DialogLeg {
                request_uri_hash: call_id_hash(route.request_uri.as_bytes(), seed),
                target_uri,
                listener: flow_key(route.listener),
                target: flow_key(route.target),
                party: flow_key(route.party),
                out_side: route.out_side.index(),
                flags: forward | hidden,
                ..DialogLeg::default()
            };
        }
        Some(dialog)
    }
}

/// The tag in a From or To value.
pub(super) fn tag_of(party_address: &str) -> Option<String> {
    address::parse(party_address).ok()?.tag().map(str::to_owned)
}

/// Where a Contact URI points, when it names an IPv4 address (the kernel resolves nothing,
/// and forwards IPv4 only).
fn ipv4_target(contact: &str) -> Option<SocketAddr> {
    let uri::Uri::Sip(sip) = uri::parse(contact).ok()? else {
        return None;
    };
    let ip = sip.host.ip().filter(std::net::IpAddr::is_ipv4)?;
    Some(SocketAddr::new(ip, sip.port.unwrap_or(5060)))
}

impl Core {
    /// What the kernel needs to forward the in-dialog SIP of the answered call `key`.
    pub(super) fn forwarding(&self, key: &CallKey) -> Option<Forwarding> {
        let call = self.calls.get(key)?;
        call.answered?;
        let tags = [tag_of(&call.caller.address)?, tag_of(&call.callee.address)?];
        let legs = [
            self.leg_route(&call.caller, &call.callee),
            self.leg_route(&call.callee, &call.caller),
        ];
        Some(Forwarding {
            call_id: call.call_id.clone(),
            tags,
            legs,
        })
    }

    /// The direction in which `sender` sends to `receiver`, if the kernel can forward it.
    fn leg_route(&self, sender: &Party, receiver: &Party) -> Option<LegRoute> {
        let listener = self.addresses.bound(sender.side);
        // One listener for both sides: the kernel tells directions apart by listener.
        if sender.side == receiver.side || !listener.is_ipv4() {
            return None;
        }
        if receiver.side == Side::Public && !self.strip_fits() {
            return None;
        }
        let target_uri = receiver.contact.clone()?;
        let target = ipv4_target(&target_uri)?;
        let party = sender.source.filter(SocketAddr::is_ipv4)?;
        let answers_hidden = self.hiding.hides_topology(receiver.side, sender.side);
        let request_uri = if answers_hidden {
            self.hidden_contact(&target_uri)
        } else {
            target_uri.clone()
        };
        Some(LegRoute {
            request_uri,
            target_uri,
            answers_hidden,
            // The kernel sends over UDP only; a hidden party's Vias need a transaction here.
            forwards_requests: !self.hiding.hides_topology(sender.side, receiver.side)
                && !self.over_tcp(sender)
                && !self.over_tcp(receiver),
            listener,
            target,
            party,
            out_side: receiver.side,
        })
    }

    /// Whether a party is reached over TCP or TLS (a backend configured so, a Contact that
    /// asks for it, a connection it came over): its requests and the answers to them are
    /// the daemon's.
    fn over_tcp(&self, party: &Party) -> bool {
        let contact = party.contact.as_deref();
        let asks = party.connection.is_some() || contact.is_some_and(uri_asks_stream);
        let address = contact.and_then(ipv4_target).or(party.source);
        asks || address
            .is_some_and(|address| self.request_transport(address, false, 0) != Transport::Udp)
    }

    /// The header names hidden from the public side, with their compact forms, as the
    /// kernel compares them (lower-case); `None` when they do not fit in its table.
    fn stripped_names(&self) -> Option<Vec<String>> {
        let mut names = Vec::new();
        for name in &self.config.hiding.strip_headers {
            let name = name.to_ascii_lowercase();
            if let Some(short) = compact_form(&name) {
                names.push(short.to_owned());
            }
            names.push(name);
        }
        let fits = names.len() <= MAX_STRIPPED
            && names
                .iter()
                .all(|n| !n.is_empty() && n.len() < HEADER_NAME_TEXT);
        fits.then_some(names)
    }

    fn strip_fits(&self) -> bool {
        self.stripped_names().is_some()
    }

    /// Our own addresses on each side (`branch::SIDE_*` order): the listener, and what the
    /// proxy writes in its Via and Record-Route (the advertised address); and the headers
    /// hidden from the public side.
    pub fn sip_selves(&self) -> SipSelves {
        let mut selves = [SipSelf::default(); 2];
        for side in [Side::Public, Side::Private] {
            let this = &mut selves[usize::from(side.index())];
            // The kernel sends from the bound listener, and reads back what parties were told.
            this.listener = flow_key(self.addresses.bound(side));
            let advertised = self.addresses.advertised(side);
            this.via = Text::new(format!("SIP/2.0/UDP {advertised};branch=").as_bytes())
                .unwrap_or_default();
            this.route = Text::new(self.uri(side).as_bytes()).unwrap_or_default();
        }
        let public = &mut selves[usize::from(Side::Public.index())];
        for (slot, name) in public
            .strip
            .iter_mut()
            .zip(self.stripped_names().unwrap_or_default())
        {
            *slot = Text::new(name.as_bytes()).unwrap_or_default();
            public.stripped += 1;
        }
        SipSelves { sides: selves }
    }
}
