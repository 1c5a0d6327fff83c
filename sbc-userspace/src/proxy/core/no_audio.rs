//! Answered calls whose media is missing in a direction: reported with a diagnosis (which
//! party is silent, whether each leg latched, packets and idle time each way), counted, and
//! with `media.no_audio.action = "hangup"` ended with BYE and a Reason.
use tracing::warn;

use super::{
    Core,
    hangup::{NO_AUDIO_FROM_CALLEE, NO_AUDIO_FROM_CALLER},
};
use crate::{
    events::{self, Direction, Event, NoAudioLeg},
    media::{SilentLeg, session::Leg},
};

impl Core {
    pub(super) fn on_no_audio(&mut self, silent: Vec<SilentLeg>, hang_up: bool) {
        let mut to_end = Vec::new();
        for silent in silent {
            let id = silent.session.id;
            let Some((key, call)) = self
                .calls
                .iter()
                .find(|(_, call)| call.media.contains(&Some(id)))
            else {
                continue;
            };
            let caller_leg = Leg::facing(call.caller.side);
            let from_caller = silent.leg == caller_leg;
            let direction = if from_caller {
                Direction::CallerToCallee
            } else {
                Direction::CalleeToCaller
            };
            let legs = silent
                .session
                .legs
                .iter()
                .map(|leg| NoAudioLeg {
                    leg: leg.name,
                    party: if leg.name == caller_leg {
                        "caller"
                    } else {
                        "callee"
                    }
                    .to_owned(),
                    side: leg.side,
                    latched: leg.latched,
                    peer: leg.peer,
                    rtp_packets_in: leg.rtp.packets() + leg.rtp.undeliverable,
                    rtp_idle_ms: leg.rtp_idle_ms,
                })
                .collect();
            warn!(
                call_id = %call.call_id,
                direction = direction.name(),
                silence = silent.silence.as_str(),
                "no audio from the {}",
                if from_caller { "caller" } else { "callee" }
            );
            let event = Event::CallNoAudio(events::CallNoAudio {
                call_id: call.call_id.clone(),
                direction,
                silence: silent.silence,
                expected_for_ms: silent.expected_for.as_millis() as u64,
                media_session: id,
                legs,
                action: if hang_up { "hangup" } else { "report" }.to_owned(),
            });
            let key = key.clone();
            self.stats
                .no_audio
                .increment((direction.name(), silent.silence.as_str()));
            self.emit(event);
            if hang_up && !to_end.iter().any(|(k, _)| *k == key) {
                let why = if from_caller {
                    NO_AUDIO_FROM_CALLER
                } else {
                    NO_AUDIO_FROM_CALLEE
                };
                to_end.push((key, why));
            }
        }
        for (key, why) in to_end {
            self.hang_up(&key, why, &[]);
        }
    }
}
