//! Who may latch a leg: signalling decides, not the first packet.
//!
//! A relay port is open to the world from the moment it is written into SDP. If the first
//! source to send became the peer, an attacker spraying the port range before a call's first
//! packet would take the call's media both ways (the CVE-2025-53399 class). So a source may
//! latch only if it matches what signalling says about the peer, best first: the SDP's address
//! and port, the SDP's address with another port (a NAT that keeps the address), the address
//! the party's SIP came from (a NAT'd peer whose SDP names its private address). The first
//! acceptable source latches at once; for a short learning window a better match replaces it
//! (a NAT'd phone's first packets may come from an odd port); then the leg is locked, and from
//! then on the kernel drops everyone else. An exact SDP match cannot be bettered and locks at
//! once, so the common case reaches the kernel with its first packet.
use std::net::{IpAddr, SocketAddr};

use sbc_common::flow::PeerMatch;
use serde::Deserialize;

/// Which sources may latch (`media.latching.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LatchPolicy {
    /// Only the SDP's address and port: peers behind NAT get no media.
    Strict,
    /// The SDP's address and port, else its address, else the SIP source address.
    #[default]
    NatAware,
    /// The first source, whoever it is: open to media hijack, for labs only.
    Any,
}

impl LatchPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::NatAware => "nat-aware",
            Self::Any => "any",
        }
    }

    /// Whether a source matching this way may latch.
    pub fn admits(self, matched: PeerMatch) -> bool {
        match self {
            Self::Strict => matched == PeerMatch::Sdp,
            Self::NatAware => matched >= PeerMatch::SipSource,
            Self::Any => true,
        }
    }
}

/// What signalling says about one flow's peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expected {
    /// Where the peer said it receives this stream (SDP `c=` and `m=`, or `a=rtcp`).
    pub media: Option<SocketAddr>,
    /// Where the party's SIP came from.
    pub sip_source: Option<IpAddr>,
}

impl Expected {
    /// Signalling said nothing about the peer (an API session created without one, a stream
    /// on hold): the first source is taken, as for policy `any`, until signalling speaks.
    pub fn is_unknown(&self) -> bool {
        self.media.is_none() && self.sip_source.is_none()
    }

    /// How `source` matches, best first; `Unchecked` when it matches nothing.
    pub fn match_of(&self, source: SocketAddr) -> PeerMatch {
        match self.media {
            Some(media) if media == source => PeerMatch::Sdp,
            Some(media) if media.ip() == source.ip() => PeerMatch::SdpAddress,
            _ if self.sip_source == Some(source.ip()) => PeerMatch::SipSource,
            _ => PeerMatch::Unchecked,
        }
    }
}

/// Whether a latched `peer`, which matched as `matched`, may stay when signalling now says
/// `expected`: only if the policy admits it and it matches at least as well as it did. A
/// media server that moved (even to another port of the same host) is learnt again, and so is
/// a peer latched before signalling said anything; a NAT'd phone re-INVITEd from the same SIP
/// source keeps its latch.
pub fn keeps(
    policy: LatchPolicy,
    expected: &Expected,
    peer: SocketAddr,
    matched: PeerMatch,
) -> bool {
    let now = expected.match_of(peer);
    policy.admits(now) && now >= matched
}

/// Why a packet was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source matches nothing signalling says about the peer.
    Unsignalled,
    /// The leg has a peer at least as good, and this is not it.
    Foreign,
}

/// What to do with a packet from a source that is not the flow's peer, while the flow is not
/// locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Refuse(Refusal),
    /// This source is the peer now (the first acceptable one, or a better match); `lock`: no
    /// better match may come, lock the flow at once.
    Latch {
        matched: PeerMatch,
        lock: bool,
    },
}

/// A flow's latching before it is locked. The peer itself, provisional or locked, lives in the
/// flow, where the XDP program forwards its packets from the first one on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Learning {
    pub expected: Expected,
    /// Until when a better match may replace a provisional peer (monotonic ns; 0: no peer
    /// latched yet).
    until_ns: u64,
}

impl Learning {
    pub fn new(expected: Expected) -> Self {
        Self {
            expected,
            until_ns: 0,
        }
    }

    /// Whether the learning window that started with the first latch has passed.
    pub fn is_over(&self, now_ns: u64) -> bool {
        self.until_ns != 0 && now_ns >= self.until_ns
    }

    /// Decides about a packet from `source` at `now_ns`, which is not the flow's `current` peer
    /// (provisional, with how it matched; none before the first latch).
    pub fn consider(
        &mut self,
        current: Option<PeerMatch>,
        source: SocketAddr,
        now_ns: u64,
        policy: LatchPolicy,
        window_ns: u64,
    ) -> Decision {
        let matched = self.expected.match_of(source);
        let blind = self.expected.is_unknown();
        if !blind && !policy.admits(matched) {
            return Decision::Refuse(Refusal::Unsignalled);
        }
        match current {
            None => {
                self.until_ns = now_ns.saturating_add(window_ns).max(1);
                Decision::Latch {
                    matched,
                    // `any` keeps the first source, as a plain symmetric-RTP relay would.
                    lock: matched == PeerMatch::Sdp || policy == LatchPolicy::Any || blind,
                }
            }
            // The window does not restart with a better match: it is short by design.
            Some(current) if matched > current && !self.is_over(now_ns) => Decision::Latch {
                matched,
                lock: matched == PeerMatch::Sdp,
            },
            Some(_) => Decision::Refuse(Refusal::Foreign),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: u64 = 3_000_000_000;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn expected() -> Expected {
        Expected {
            media: Some(addr("192.0.2.10:4000")),
            sip_source: Some("203.0.113.5".parse().unwrap()),
        }
    }

    #[test]
    fn sources_match_sdp_first_then_its_address_then_the_sip_source() {
        let e = expected();
        assert_eq!(e.match_of(addr("192.0.2.10:4000")), PeerMatch::Sdp);
        assert_eq!(e.match_of(addr("192.0.2.10:5000")), PeerMatch::SdpAddress);
        assert_eq!(e.match_of(addr("203.0.113.5:6000")), PeerMatch::SipSource);
        assert_eq!(e.match_of(addr("198.51.100.66:4000")), PeerMatch::Unchecked);
        // Nothing signalled: nothing matches.
        assert_eq!(
            Expected::default().match_of(addr("192.0.2.10:4000")),
            PeerMatch::Unchecked
        );
    }

    /// (policy, source, what the first packet from it gets).
    #[test]
    fn each_policy_admits_what_it_says() {
        let cases = [
            (LatchPolicy::Strict, "192.0.2.10:4000", Some(PeerMatch::Sdp)),
            (LatchPolicy::Strict, "192.0.2.10:5000", None),
            (LatchPolicy::Strict, "203.0.113.5:6000", None),
            (
                LatchPolicy::NatAware,
                "192.0.2.10:5000",
                Some(PeerMatch::SdpAddress),
            ),
            (
                LatchPolicy::NatAware,
                "203.0.113.5:6000",
                Some(PeerMatch::SipSource),
            ),
            (LatchPolicy::NatAware, "198.51.100.66:4000", None),
            (
                LatchPolicy::Any,
                "198.51.100.66:4000",
                Some(PeerMatch::Unchecked),
            ),
        ];
        for (policy, source, admitted) in cases {
            let decision =
                Learning::new(expected()).consider(None, addr(source), 0, policy, WINDOW);
            let got = match decision {
                Decision::Latch { matched, .. } => Some(matched),
                Decision::Refuse(Refusal::Unsignalled) => None,
                other => panic!("{policy:?} {source}: {other:?}"),
            };
            assert_eq!(got, admitted, "{policy:?} {source}");
        }
    }

    /// (latched peer, how it matched, new signalling, kept?)
    #[test]
    fn a_latch_stays_only_while_signalling_admits_it_as_well_as_before() {
        let nat = Expected {
            media: Some(addr("10.0.0.7:4000")),
            sip_source: Some("203.0.113.5".parse().unwrap()),
        };
        let moved_port = Expected {
            media: Some(addr("192.0.2.10:4100")),
            ..expected()
        };
        let cases = [
            ("203.0.113.5:6000", PeerMatch::SipSource, nat, true),
            ("192.0.2.10:4000", PeerMatch::Sdp, expected(), true),
            ("192.0.2.10:4000", PeerMatch::Sdp, moved_port, false),
            (
                "198.51.100.66:4000",
                PeerMatch::Unchecked,
                expected(),
                false,
            ),
            ("192.0.2.10:4000", PeerMatch::Unchecked, expected(), true),
        ];
        for (peer, matched, signalled, kept) in cases {
            let policy = LatchPolicy::NatAware;
            assert_eq!(
                keeps(policy, &signalled, addr(peer), matched),
                kept,
                "{peer} {matched:?}"
            );
        }
        let any = LatchPolicy::Any;
        assert!(keeps(
            any,
            &expected(),
            addr("198.51.100.66:4000"),
            PeerMatch::Unchecked
        ));
    }

    #[test]
    fn an_attacker_spraying_before_the_first_packet_never_latches() {
        let mut learning = Learning::new(expected());
        for port in [4000, 4001, 4002] {
            let attacker = SocketAddr::new("198.51.100.66".parse().unwrap(), port);
            assert_eq!(
                learning.consider(None, attacker, 0, LatchPolicy::NatAware, WINDOW),
                Decision::Refuse(Refusal::Unsignalled)
            );
        }
        assert!(!learning.is_over(u64::MAX), "no window before a latch");
        // With nothing signalled (an API session without peers), the first source is taken.
        assert_eq!(
            Learning::new(Expected::default()).consider(
                None,
                addr("198.51.100.66:4000"),
                0,
                LatchPolicy::Strict,
                WINDOW
            ),
            Decision::Latch {
                matched: PeerMatch::Unchecked,
                lock: true
            }
        );
        assert_eq!(
            learning.consider(
                None,
                addr("192.0.2.10:4000"),
                10,
                LatchPolicy::NatAware,
                WINDOW
            ),
            Decision::Latch {
                matched: PeerMatch::Sdp,
                lock: true
            }
        );
    }

    #[test]
    fn a_better_match_wins_within_the_window_then_nothing_does() {
        let policy = LatchPolicy::NatAware;
        let mut learning = Learning::new(expected());
        let nat = addr("203.0.113.5:6000");
        let sdp_address = addr("192.0.2.10:5000");
        assert_eq!(
            learning.consider(None, nat, 0, policy, WINDOW),
            Decision::Latch {
                matched: PeerMatch::SipSource,
                lock: false
            }
        );
        let current = Some(PeerMatch::SipSource);
        // Another port of the same SIP source is no better.
        assert_eq!(
            learning.consider(current, addr("203.0.113.5:6002"), 1, policy, WINDOW),
            Decision::Refuse(Refusal::Foreign)
        );
        assert_eq!(
            learning.consider(current, sdp_address, 2, policy, WINDOW),
            Decision::Latch {
                matched: PeerMatch::SdpAddress,
                lock: false
            }
        );
        let current = Some(PeerMatch::SdpAddress);
        // The worse match is now someone else's packet.
        assert_eq!(
            learning.consider(current, nat, 3, policy, WINDOW),
            Decision::Refuse(Refusal::Foreign)
        );
        // The window started with the first latch and does not restart: after it even the
        // exact SDP match is too late.
        assert!(!learning.is_over(WINDOW - 1));
        assert!(learning.is_over(WINDOW));
        assert_eq!(
            learning.consider(current, addr("192.0.2.10:4000"), WINDOW, policy, WINDOW),
            Decision::Refuse(Refusal::Foreign)
        );
    }
}
