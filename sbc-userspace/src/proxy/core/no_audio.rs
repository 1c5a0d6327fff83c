//! Answered calls whose media is missing in a direction: reported with a diagnosis (which
//! party is silent, whether each leg latched, packets and idle time each way), counted, and
//! with `media.no_audio.action = "hangup"` ended with BYE and a Reason.
use serde_json::{Value, json};
use tracing::warn;

use super::{
    Core,
    calls::leg_index,
    hangup::{NO_AUDIO_FROM_CALLEE, NO_AUDIO_FROM_CALLER},
};
use crate::media::{SilentLeg, session::LEG_NAMES};

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
            let caller_leg = leg_index(call.caller.side);
            let from_caller = silent.leg == caller_leg;
            let direction = if from_caller {
                "caller_to_callee"
            } else {
                "callee_to_caller"
            };
            let legs: Vec<Value> = silent
                .session
                .legs
                .iter()
                .enumerate()
                .map(|(i, leg)| {
                    json!({
                        "leg": LEG_NAMES[i],
                        "party": if i == caller_leg { "caller" } else { "callee" },
                        "side": leg.side,
                        "latched": leg.latched,
                        "peer": leg.peer,
                        "rtp_packets_in": leg.rtp.packets() + leg.rtp.undeliverable,
                        "rtp_idle_ms": leg.rtp_idle_ms,
                    })
                })
                .collect();
            warn!(
                call_id = %call.call_id,
                direction,
                silence = silent.silence.as_str(),
                "no audio from the {}",
                if from_caller { "caller" } else { "callee" }
            );
            let fields = json!({
                    "call_id": call.call_id,
                    "direction": direction,
                    "silence": silent.silence,
                    "expected_for_ms": silent.expected_for.as_millis() as u64,
                    "media_session": id,
                    "legs": legs,
                    "action": if hang_up { "hangup" } else { "report" },
            });
            let key = key.clone();
            self.stats
                .no_audio
                .increment((direction, silent.silence.as_str()));
            self.emit("call_no_audio", fields);
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
