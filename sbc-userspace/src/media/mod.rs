//! The media plane: relay ports, sessions, latching, and the userspace relay.
mod adopt;
mod audio_watch;
pub mod plane;
pub mod ports;
mod relay;
pub mod session;
mod socket;
mod totals;

pub use audio_watch::{AudioDeadlines, Silence, SilentLeg};
pub use plane::{EndReason, EndedSession, MediaError, MediaPlane, MediaSettings, RETRY_AFTER_SECS};
pub use session::{SessionInfo, SessionSpec};
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
    use crate::events::EventSink;

    const PUBLIC: &str = "127.0.0.1";
    const PRIVATE: &str = "127.0.0.2";

    fn plane(port_min: u16, port_max: u16) -> std::sync::Arc<MediaPlane> {
        MediaPlane::new(
            MediaSettings {
                public_address: PUBLIC.parse().unwrap(),
                private_address: PRIVATE.parse().unwrap(),
                port_min,
                port_max,
                timeout: Duration::from_secs(60),
                max_sessions: 0,
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
