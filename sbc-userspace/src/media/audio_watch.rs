//! No-audio detection: once a call is answered, media from each leg must start within a
//! deadline and keep arriving. Pass-through anchors cannot tell a silent or one-way call from
//! a good one; the relay sees every packet, so it can.
//!
//! Media from a leg is expected while its party's latest SDP says it sends and the other
//! party's says it receives (holds and `inactive` streams expect nothing); the clock restarts
//! whenever the expectation starts again. Each expectation is reported at most once.
use std::time::Duration;

use super::{
    SessionInfo,
    session::{Leg, Silence},
};

/// What a leg's party last said about a stream, and what is expected of it.
#[derive(Debug, Clone, Copy)]
struct LegAudio {
    sends: bool,
    receives: bool,
    /// Since when media from this leg is expected; `None` while it is not.
    expected_since_ns: Option<u64>,
    reported: bool,
}

impl Default for LegAudio {
    fn default() -> Self {
        Self {
            sends: true,
            receives: true,
            expected_since_ns: None,
            reported: false,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct AudioState {
    legs: [LegAudio; 2],
    /// Set once the call is answered; sessions of the control API are not watched.
    watched: bool,
}

impl AudioState {
    fn refresh(&mut self, now: u64) {
        for leg in Leg::BOTH {
            let expected = self.watched && self.legs[leg].sends && self.legs[leg.other()].receives;
            let audio = &mut self.legs[leg];
            match (expected, audio.expected_since_ns) {
                (true, None) => {
                    audio.expected_since_ns = Some(now);
                    audio.reported = false;
                }
                (false, Some(_)) => audio.expected_since_ns = None,
                _ => {}
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct AudioDeadlines {
    /// For the first packet once media is expected.
    pub first_packet: Duration,
    /// For a gap after media has flowed.
    pub silence: Duration,
}

/// A leg whose media is missing, with its session as it stands.
#[derive(Debug, Clone)]
pub struct SilentLeg {
    pub session: SessionInfo,
    pub leg: Leg,
    pub silence: Silence,
    pub expected_for: Duration,
}

impl AudioState {
    /// Starts expecting media (the call was answered).
    pub(super) fn watch(&mut self, now: u64) {
        self.watched = true;
        self.refresh(now);
    }

    /// What a leg's party said in its SDP for this stream.
    pub(super) fn note_direction(&mut self, leg: Leg, sends: bool, receives: bool, now: u64) {
        self.legs[leg].sends = sends;
        self.legs[leg].receives = receives;
        self.refresh(now);
    }

    /// The legs of the session `info` that missed a deadline (each expectation once).
    pub(super) fn missed_deadlines(
        &mut self,
        info: &SessionInfo,
        deadlines: AudioDeadlines,
        now: u64,
    ) -> Vec<SilentLeg> {
        let mut silent = Vec::new();
        for (leg, audio) in Leg::BOTH.into_iter().zip(self.legs.iter_mut()) {
            let Some(since) = audio.expected_since_ns.filter(|_| !audio.reported) else {
                continue;
            };
            let expected_for = Duration::from_nanos(now.saturating_sub(since));
            if let Some(silence) = silence_of(info, leg, expected_for, deadlines) {
                audio.reported = true;
                silent.push(SilentLeg {
                    session: info.clone(),
                    leg,
                    silence,
                    expected_for,
                });
            }
        }
        silent
    }
}

/// Whether (and how) a leg missed its deadline.
fn silence_of(
    info: &SessionInfo,
    leg: Leg,
    expected_for: Duration,
    deadlines: AudioDeadlines,
) -> Option<Silence> {
    let rtp = &info.legs[leg].rtp;
    // Arrived from the peer, relayed or not (foreign packets are not the peer's media).
    let arrived = rtp.packets() + rtp.undeliverable;
    let idle = info.legs[leg].rtp_idle_ms.map(Duration::from_millis);
    if arrived == 0 && expected_for >= deadlines.first_packet {
        return Some(Silence::NoMedia);
    }
    let quiet_for = idle.unwrap_or(expected_for).min(expected_for);
    (arrived > 0 && quiet_for >= deadlines.silence).then_some(Silence::MediaStopped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        media::session::{LegInfo, StreamCounters},
        side::Side,
    };

    fn session(packets: [u64; 2], idle_ms: [Option<u64>; 2]) -> SessionInfo {
        let leg = |i: usize| LegInfo {
            name: Leg::BOTH[i],
            side: [Side::Public, Side::Private][i],
            local_rtp: "192.0.2.1:20000".parse().unwrap(),
            local_rtcp: None,
            advertised: "192.0.2.1".parse().unwrap(),
            peer: None,
            latched: packets[i] > 0,
            latch: None,
            rtcp_latch: None,
            rtp: StreamCounters {
                kernel_packets: packets[i],
                ..Default::default()
            },
            rtcp: None,
            rtp_idle_ms: idle_ms[i],
        };
        SessionInfo {
            id: 1,
            rtcp_mux: true,
            age_ms: 0,
            idle_ms: 0,
            legs: [leg(0), leg(1)],
        }
    }

    const DEADLINES: AudioDeadlines = AudioDeadlines {
        first_packet: Duration::from_secs(5),
        silence: Duration::from_secs(10),
    };

    #[test]
    fn a_leg_that_never_sent_misses_the_first_packet_deadline() {
        let info = session([100, 0], [Some(20), None]);
        assert_eq!(
            silence_of(&info, Leg::B, Duration::from_secs(4), DEADLINES),
            None
        );
        assert_eq!(
            silence_of(&info, Leg::B, Duration::from_secs(5), DEADLINES),
            Some(Silence::NoMedia)
        );
        assert_eq!(
            silence_of(&info, Leg::A, Duration::from_secs(60), DEADLINES),
            None
        );
    }

    #[test]
    fn a_leg_that_stopped_is_reported_after_the_silence_deadline() {
        let info = session([100, 100], [Some(9_000), Some(10_000)]);
        assert_eq!(
            silence_of(&info, Leg::A, Duration::from_secs(60), DEADLINES),
            None
        );
        assert_eq!(
            silence_of(&info, Leg::B, Duration::from_secs(60), DEADLINES),
            Some(Silence::MediaStopped)
        );
        // Media that stopped before a hold ended is timed from the end of the hold.
        assert_eq!(
            silence_of(&info, Leg::B, Duration::from_secs(3), DEADLINES),
            None
        );
    }

    #[test]
    fn a_hold_expects_nothing_from_the_held_direction() {
        let mut audio = AudioState {
            watched: true,
            ..Default::default()
        };
        audio.refresh(1);
        assert!(audio.legs.iter().all(|l| l.expected_since_ns == Some(1)));
        // Leg a's party puts the call on hold: sendonly (it sends, does not receive).
        audio.legs[0].receives = false;
        audio.refresh(2);
        assert_eq!(audio.legs[0].expected_since_ns, Some(1));
        assert_eq!(
            audio.legs[1].expected_since_ns, None,
            "b is not expected to send"
        );
        // Off hold: b's clock starts again.
        audio.legs[0].receives = true;
        audio.refresh(3);
        assert_eq!(audio.legs[1].expected_since_ns, Some(3));
    }
}
