//! The media plane: relay ports, sessions, latching, and the userspace relay.
mod adopt;
mod audio_watch;
pub mod latching;
pub mod plane;
pub mod ports;
mod relay;
pub mod session;
mod socket;
mod totals;

pub use audio_watch::{AudioDeadlines, SilentLeg};
pub use latching::LatchPolicy;
pub use plane::{
    EndedSession, MediaError, MediaPlane, MediaSettings, PeerAnnouncement, RETRY_AFTER_SECS,
};
pub use session::{EndReason, SessionInfo, SessionSpec, Silence};
pub use totals::MediaTotals;

#[cfg(test)]
mod tests {
    //! The userspace relay end to end over loopback (no privileges needed): the same code that
    //! relays what XDP passes up, and everything with `--dataplane userspace`.
    use std::{
        net::{SocketAddr, UdpSocket},
        time::Duration,
    };

    use serde_json::json;

    use super::*;
    use sbc_common::flow::PeerMatch;

    use crate::{events::EventSink, media::session::Leg};

    const PUBLIC: &str = "127.0.0.1";
    const PRIVATE: &str = "127.0.0.2";

    fn plane(port_min: u16, port_max: u16) -> std::sync::Arc<MediaPlane> {
        plane_advertising(port_min, port_max, PUBLIC)
    }

    /// A plane whose public side is told `public_advertised` (a NAT's outside address).
    fn plane_advertising(
        port_min: u16,
        port_max: u16,
        public_advertised: &str,
    ) -> std::sync::Arc<MediaPlane> {
        MediaPlane::new(
            MediaSettings {
                public_address: PUBLIC.parse().unwrap(),
                private_address: PRIVATE.parse().unwrap(),
                public_advertised: public_advertised.parse().unwrap(),
                private_advertised: PRIVATE.parse().unwrap(),
                port_min,
                port_max,
                timeout: Duration::from_secs(60),
                max_sessions: 0,
                latching: LatchPolicy::NatAware,
                learning: Duration::from_millis(300),
            },
            None,
            std::sync::Arc::new(EventSink::default()),
        )
    }

    fn peer(addr: &str) -> UdpSocket {
        let socket = UdpSocket::bind(format!("{addr}:0")).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        socket
    }

    fn spec(a: &UdpSocket, b: &UdpSocket, rtcp_mux: bool) -> SessionSpec {
        serde_json::from_value(json!({
            "rtcp_mux": rtcp_mux,
            "a": { "side": "public", "peer": a.local_addr().unwrap() },
            "b": { "side": "private", "peer": b.local_addr().unwrap() },
        }))
        .unwrap()
    }

    fn recv(socket: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = [0u8; 2048];
        socket
            .recv_from(&mut buf)
            .ok()
            .map(|(n, from)| (buf[..n].to_vec(), from))
    }

    /// Behind a NAT a session's public leg binds the inside address and tells its peer (the
    /// API client writing SDP) the outside one, with the same port.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_reports_the_address_its_peers_are_told() {
        let plane = plane_advertising(31900, 31999, "203.0.113.10");
        let (caller, callee) = (peer(PUBLIC), peer(PRIVATE));
        let info = plane.create(&spec(&caller, &callee, true)).unwrap();
        let [public, private] = [&info.legs[0], &info.legs[1]];
        assert_eq!(public.local_rtp.ip().to_string(), PUBLIC);
        assert_eq!(public.advertised.to_string(), "203.0.113.10");
        assert_eq!(private.advertised, private.local_rtp.ip());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relays_both_ways_latches_and_rejects_injection() {
        let plane = plane(31000, 31099);
        let (caller, callee, rogue) = (peer(PUBLIC), peer(PRIVATE), peer(PUBLIC));
        let info = plane.create(&spec(&caller, &callee, true)).unwrap();
        let (a_local, b_local) = (info.legs[0].local_rtp, info.legs[1].local_rtp);

        tokio::task::spawn_blocking(move || {
            caller.send_to(b"hello callee", a_local).unwrap();
            assert_eq!(recv(&callee), Some((b"hello callee".to_vec(), b_local)));
            callee.send_to(b"hello caller", b_local).unwrap();
            assert_eq!(recv(&caller), Some((b"hello caller".to_vec(), a_local)));
            // Both legs latched: a third party is dropped, not relayed.
            rogue.send_to(b"injected", a_local).unwrap();
            assert_eq!(recv(&callee), None, "injected media reached the callee");
        })
        .await
        .unwrap();

        let info = plane.get(info.id).unwrap();
        assert!(info.legs.iter().all(|leg| leg.latched));
        assert_eq!(info.legs[0].rtp.userspace_packets, 1);
        assert_eq!(info.legs[0].rtp.foreign_dropped, 1);
        assert_eq!(info.legs[1].rtp.userspace_packets, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn arming_a_session_whose_media_already_flowed_keeps_its_silence() {
        let plane = plane(31800, 31899);
        let (caller, callee) = (peer(PUBLIC), peer(PRIVATE));
        let info = plane
            .create_for_call(&spec(&caller, &callee, true))
            .unwrap();
        let (id, a_local) = (info.id, info.legs[Leg::A].local_rtp);
        tokio::task::spawn_blocking(move || {
            caller.send_to(b"early media", a_local).unwrap();
            assert!(recv(&callee).is_some(), "relayed");
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Answered (or taken over after a restart) now: the 300 ms of silence still count.
        plane.arm(id);
        let idle = plane.get(id).unwrap().idle_ms;
        assert!(idle >= 300, "arming restarted the idle clock: {idle} ms");

        // A session that saw nothing before it was armed is quiet from the arming on.
        let (caller, callee) = (peer(PUBLIC), peer(PRIVATE));
        let quiet = plane
            .create_for_call(&spec(&caller, &callee, true))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        plane.arm(quiet.id);
        let idle = plane.get(quiet.id).unwrap().idle_ms;
        assert!(idle < 300, "ringing counted as silence: {idle} ms");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relays_to_where_a_peer_really_sends_from() {
        let plane = plane(31100, 31199);
        let (caller, callee) = (peer(PUBLIC), peer(PRIVATE));
        // The caller announced an address it does not use (it is behind NAT).
        let announced = peer(PUBLIC);
        let info = plane.create(&spec(&announced, &callee, false)).unwrap();
        let (a_local, b_local) = (info.legs[0].local_rtp, info.legs[1].local_rtp);
        tokio::task::spawn_blocking(move || {
            caller.send_to(b"from behind NAT", a_local).unwrap();
            assert_eq!(recv(&callee).unwrap().0, b"from behind NAT");
            callee.send_to(b"reply", b_local).unwrap();
            assert_eq!(
                recv(&caller).unwrap().0,
                b"reply",
                "the reply went to the announced address"
            );
            assert_eq!(recv(&announced), None);
        })
        .await
        .unwrap();
    }

    /// An attacker on another address sprays every port of a session, both sides, RTP and
    /// RTCP, before either peer has sent: nothing of it is relayed, it receives nothing, and
    /// the peers latch as signalled when they start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_spray_before_the_first_packet_latches_nothing() {
        let plane = plane(31400, 31499);
        let (caller, callee) = (peer(PUBLIC), peer(PRIVATE));
        let attacker = peer("127.0.0.3");
        let info = plane.create(&spec(&caller, &callee, false)).unwrap();
        let locals: Vec<SocketAddr> = info
            .legs
            .iter()
            .flat_map(|leg| [Some(leg.local_rtp), leg.local_rtcp])
            .flatten()
            .collect();
        let (a_local, b_local) = (info.legs[0].local_rtp, info.legs[1].local_rtp);
        tokio::task::spawn_blocking(move || {
            for local in &locals {
                for _ in 0..5 {
                    attacker.send_to(b"hijack", local).unwrap();
                }
            }
            assert_eq!(recv(&callee), None, "the spray reached the callee");
            assert_eq!(recv(&caller), None, "the spray reached the caller");
            caller.send_to(b"hello callee", a_local).unwrap();
            assert_eq!(recv(&callee).unwrap().0, b"hello callee");
            callee.send_to(b"hello caller", b_local).unwrap();
            assert_eq!(recv(&caller).unwrap().0, b"hello caller");
            assert_eq!(recv(&attacker), None, "the attacker received media");
        })
        .await
        .unwrap();
        let info = plane.get(info.id).unwrap();
        for leg in &info.legs {
            let latch = leg.latch.expect("latched by its peer");
            assert_eq!(
                (latch.matched, latch.locked),
                (PeerMatch::Sdp, true),
                "{leg:?}"
            );
            assert_eq!(leg.rtp.unsignalled_dropped, 5, "{leg:?}");
            assert_eq!(leg.rtcp.unwrap().unsignalled_dropped, 5, "{leg:?}");
            assert!(leg.rtcp_latch.is_none(), "no RTCP was sent: {leg:?}");
        }
    }

    /// A NAT'd caller whose SDP names an address it does not send from latches from its SIP
    /// source; its real SDP address, arriving within the window, wins; then the leg is locked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_better_match_wins_while_learning_then_the_leg_locks() {
        let plane = plane(31500, 31599);
        let callee = peer(PRIVATE);
        let behind_nat = peer("127.0.0.4");
        let announced = peer(PUBLIC);
        let other_port = peer(PUBLIC);
        let spec: SessionSpec = serde_json::from_value(json!({
            "a": { "side": "public", "peer": announced.local_addr().unwrap(),
                   "sip_source": "127.0.0.4" },
            "b": { "side": "private", "peer": callee.local_addr().unwrap() },
        }))
        .unwrap();
        let info = plane.create(&spec).unwrap();
        let a_local = info.legs[0].local_rtp;
        let id = info.id;
        let plane2 = std::sync::Arc::clone(&plane);
        tokio::task::spawn_blocking(move || {
            behind_nat.send_to(b"via NAT", a_local).unwrap();
            assert_eq!(recv(&callee).unwrap().0, b"via NAT");
            let latch = plane2.get(id).unwrap().legs[0].latch.unwrap();
            assert_eq!((latch.matched, latch.locked), (PeerMatch::SipSource, false));
            other_port.send_to(b"SDP address", a_local).unwrap();
            assert_eq!(recv(&callee).unwrap().0, b"SDP address");
            behind_nat.send_to(b"now foreign", a_local).unwrap();
            assert_eq!(recv(&callee), None, "a worse match replaced a better one");
            // Past the learning window (300 ms here) the leg is locked: not even the exact SDP
            // match may take it now.
            std::thread::sleep(Duration::from_millis(400));
            announced.send_to(b"too late", a_local).unwrap();
            assert_eq!(recv(&callee), None, "a match after the window took the leg");
            other_port.send_to(b"locked", a_local).unwrap();
            assert_eq!(recv(&callee).unwrap().0, b"locked");
        })
        .await
        .unwrap();
        let leg = &plane.get(id).unwrap().legs[0];
        let latch = leg.latch.unwrap();
        assert_eq!((latch.matched, latch.locked), (PeerMatch::SdpAddress, true));
        assert_eq!(
            Some(latch.peer),
            leg.peer,
            "the callee's media goes to the peer"
        );
        assert_eq!(leg.rtp.foreign_dropped, 2);
    }

    /// A re-INVITE that moves a peer to another address makes its leg learn again; the old
    /// address is foreign from then on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_sdp_address_makes_the_leg_learn_again() {
        let plane = plane(31600, 31699);
        let (caller, callee) = (peer(PUBLIC), peer(PRIVATE));
        let moved = peer("127.0.0.5");
        let info = plane.create(&spec(&caller, &callee, true)).unwrap();
        let (id, a_local) = (info.id, info.legs[0].local_rtp);
        let moved_to = moved.local_addr().unwrap();
        let plane2 = std::sync::Arc::clone(&plane);
        tokio::task::spawn_blocking(move || {
            caller.send_to(b"first", a_local).unwrap();
            assert_eq!(recv(&callee).unwrap().0, b"first");
            let announced = PeerAnnouncement {
                rtp: moved_to,
                rtcp_port: None,
                sip_source: None,
            };
            plane2.announce_peer(id, Leg::A, announced).unwrap();
            caller.send_to(b"old address", a_local).unwrap();
            assert_eq!(recv(&callee), None, "the old address still relays");
            moved.send_to(b"new address", a_local).unwrap();
            assert_eq!(recv(&callee).unwrap().0, b"new address");
        })
        .await
        .unwrap();
        let latch = plane.get(id).unwrap().legs[0].latch.unwrap();
        assert_eq!((latch.peer, latch.matched), (moved_to, PeerMatch::Sdp));
    }

    /// A session made through the API without peers takes each leg's first source (as the
    /// API documents); when signalling later names the peer, a source that does not match it
    /// loses the leg.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_signalling_the_first_source_latches_until_signalling_speaks() {
        let plane = plane(31700, 31799);
        let (caller, callee, real) = (peer(PUBLIC), peer(PRIVATE), peer("127.0.0.6"));
        let spec: SessionSpec = serde_json::from_value(json!({
            "a": { "side": "public" },
            "b": { "side": "private", "peer": callee.local_addr().unwrap() },
        }))
        .unwrap();
        let info = plane.create(&spec).unwrap();
        let (id, a_local) = (info.id, info.legs[0].local_rtp);
        let real_addr = real.local_addr().unwrap();
        let plane2 = std::sync::Arc::clone(&plane);
        tokio::task::spawn_blocking(move || {
            caller.send_to(b"first", a_local).unwrap();
            assert_eq!(recv(&callee).unwrap().0, b"first");
            let announced = PeerAnnouncement {
                rtp: real_addr,
                rtcp_port: None,
                sip_source: None,
            };
            plane2.announce_peer(id, Leg::A, announced).unwrap();
            caller.send_to(b"no longer", a_local).unwrap();
            assert_eq!(recv(&callee), None, "the blind latch survived signalling");
            real.send_to(b"signalled", a_local).unwrap();
            assert_eq!(recv(&callee).unwrap().0, b"signalled");
        })
        .await
        .unwrap();
        let latch = plane.get(id).unwrap().legs[0].latch.unwrap();
        assert_eq!((latch.peer, latch.matched), (real_addr, PeerMatch::Sdp));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exhaustion_is_refused_and_ending_frees_ports() {
        let plane = plane(31200, 31203);
        let (a, b) = (peer(PUBLIC), peer(PRIVATE));
        let first = plane.create(&spec(&a, &b, false)).unwrap();
        plane.create(&spec(&a, &b, false)).unwrap();
        match plane.create(&spec(&a, &b, false)) {
            Err(MediaError::Exhausted(message)) => {
                assert!(message.contains("31200-31203"), "{message}")
            }
            other => panic!("expected exhaustion, got {other:?}"),
        }
        assert_eq!(plane.session_count(), 2);
        assert!(plane.ports_in_use().iter().all(|&(_, used, _)| used == 4));
        plane
            .end(first.id, EndReason::Deleted)
            .unwrap()
            .ports_released()
            .await;
        assert!(matches!(
            plane.end(first.id, EndReason::Deleted),
            Err(MediaError::NotFound(_))
        ));
        assert!(plane.ports_in_use().iter().all(|&(_, used, _)| used == 2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_requests_are_invalid() {
        let plane = plane(31300, 31399);
        let ask = |a: serde_json::Value| {
            let spec: SessionSpec = serde_json::from_value(json!({
                "a": a, "b": { "side": "private" }
            }))
            .unwrap();
            plane.create(&spec)
        };
        for peer in [
            "[::1]:4000",
            "127.0.0.9:0",
            "0.0.0.0:4000",
            "127.0.0.9:65535",
        ] {
            let result = ask(json!({ "side": "public", "peer": peer }));
            assert!(
                matches!(result, Err(MediaError::Invalid(_))),
                "{peer}: {result:?}"
            );
        }
        assert_eq!(plane.session_count(), 0);
    }
}
