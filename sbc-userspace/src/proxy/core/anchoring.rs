//! What the proxy core asks of the media plane to anchor a call's media, as one small seam: the
//! daemon's `MediaPlane` behind it in production, a fake in the core's unit tests. Every call is
//! synchronous (ports are bound and flows installed before the SDP naming them is sent).
use std::{collections::HashSet, net::IpAddr, sync::Arc};

use crate::{
    media::{
        EndReason, MediaError, MediaPlane, PeerAnnouncement, SessionInfo, SessionSpec,
        session::{Leg, LegSpec},
    },
    side::Side,
};

pub trait MediaAnchoring: Send {
    /// A new session for one stream of a call (leg A public, leg B private); its media timeout
    /// waits for `answered`.
    fn open(&self, rtcp_mux: bool) -> Result<SessionInfo, MediaError>;
    /// What signalling says about a leg's peer (who may latch it).
    fn announce_peer(
        &self,
        id: u32,
        leg: Leg,
        announced: PeerAnnouncement,
    ) -> Result<(), MediaError>;
    /// Whether a leg's peer sends and receives (SDP direction), for the audio watch.
    fn note_direction(&self, id: u32, leg: Leg, sends: bool, receives: bool);
    fn session(&self, id: u32) -> Option<SessionInfo>;
    /// The relay's media address as a side's parties reach it (what SDP sent to that side
    /// names: the advertised address behind a NAT).
    fn advertised(&self, side: Side) -> IpAddr;
    /// The call is answered: media timeout and audio watch start.
    fn answered(&self, id: u32);
    /// Ends a session because its call ended; its final counters, if it was still there.
    fn end(&self, id: u32) -> Option<SessionInfo>;
    /// Ends the sessions made for calls that none of `claimed` is; what they were.
    fn end_orphans(&self, claimed: &HashSet<u32>) -> Vec<SessionInfo>;
}

impl MediaAnchoring for Arc<MediaPlane> {
    fn open(&self, rtcp_mux: bool) -> Result<SessionInfo, MediaError> {
        let leg = |side| LegSpec {
            side,
            peer: None,
            sip_source: None,
        };
        let spec = SessionSpec {
            rtcp_mux,
            a: leg(Side::Public),
            b: leg(Side::Private),
        };
        self.create_for_call(&spec)
    }

    fn announce_peer(
        &self,
        id: u32,
        leg: Leg,
        announced: PeerAnnouncement,
    ) -> Result<(), MediaError> {
        MediaPlane::announce_peer(self, id, leg, announced)
    }

    fn note_direction(&self, id: u32, leg: Leg, sends: bool, receives: bool) {
        MediaPlane::note_direction(self, id, leg, sends, receives);
    }

    fn session(&self, id: u32) -> Option<SessionInfo> {
        self.get(id)
    }

    fn advertised(&self, side: Side) -> IpAddr {
        MediaPlane::advertised(self, side)
    }

    fn answered(&self, id: u32) {
        self.arm(id);
        self.watch_audio(id);
    }

    fn end(&self, id: u32) -> Option<SessionInfo> {
        MediaPlane::end(self, id, EndReason::CallEnded)
            .ok()
            .map(|ended| ended.info)
    }

    fn end_orphans(&self, claimed: &HashSet<u32>) -> Vec<SessionInfo> {
        MediaPlane::end_orphans(self, claimed)
    }
}
