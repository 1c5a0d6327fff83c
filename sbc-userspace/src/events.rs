//! Events: one JSON object per line, appended to the configured file and logged:
//! `{"ts_ms": <wall clock>, "event": "<name>", ..its fields}`. `Event` is every event there is,
//! with its fields; the daemon writes it, and the tests and tools read it back as `EventLine`.
//!
//! Each line is written with a single `write` call and flushed at once, so a crash loses at most
//! the event being written and readers never see half a line.
use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Mutex,
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

pub use crate::proxy::core::call_end::CallEnd;
use crate::{
    clock::unix_ms,
    media::session::{EndReason, Leg, SessionInfo, Silence},
    side::Side,
};

/// Everything the daemon reports, by name (`event`) with its fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    CallStarted(CallStarted),
    CallRinging(CallRinging),
    CallAnswered(CallAnswered),
    CallEnded(CallEnded),
    CallNoAudio(CallNoAudio),
    BackendDown(BackendDown),
    BackendUp(BackendUp),
    SourceBlocked(SourceBlocked),
    MediaSessionCreated(MediaSessionCreated),
    MediaSessionEnded(MediaSessionEnded),
    ClusterDegraded(ClusterDegraded),
    ClusterRestored(ClusterRestored),
    GroupTakenOver(GroupTakenOver),
    GroupReleased(GroupReleased),
}

/// This node serves an address group now: it claimed it (`epoch`) and took over the calls the
/// group's previous owner had shared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupTakenOver {
    pub node: String,
    pub group: String,
    pub epoch: u64,
    pub previous_owner: Option<String>,
    /// Calls taken over from the fleet's state (not counting this node's own journal's).
    pub calls: u64,
    /// Of those, calls whose media could not be taken over (they end).
    pub calls_without_media: u64,
}

/// This node stopped serving its group (its addresses left, or another node claimed the
/// group after it); its calls are the group's new owner's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupReleased {
    pub node: String,
    pub group: String,
    pub reason: String,
    pub calls: u64,
}

/// The fleet's shared state (Redis) stopped taking this node's writes: its calls go on from
/// memory and the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterDegraded {
    pub node: String,
    pub cause: String,
}

/// Redis holds this node's calls (again): all of them were written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRestored {
    pub node: String,
    pub degraded_ms: u64,
    pub calls: u64,
}

/// An initial INVITE was taken on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallStarted {
    pub call_id: String,
    pub from: String,
    pub to: String,
}

/// The first 18x of a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRinging {
    pub call_id: String,
    pub code: u16,
    pub setup_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallAnswered {
    pub call_id: String,
    pub code: u16,
    pub setup_ms: u64,
    pub backend: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEnded {
    pub call_id: String,
    pub reason: CallEnd,
    /// The final response of a call that was never answered (or of its BYE).
    pub final_code: Option<u16>,
    /// Since the answer; `None` for a call never answered.
    pub duration_ms: Option<u64>,
    /// RTP relayed each way (absent for a call whose media was lost in a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtp_packets: Option<RtpPackets>,
}

/// An answered call's direction that stayed silent past `media.no_audio`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallNoAudio {
    pub call_id: String,
    pub direction: Direction,
    pub silence: Silence,
    pub expected_for_ms: u64,
    pub media_session: u32,
    pub legs: Vec<NoAudioLeg>,
    /// `hangup` or `report`.
    pub action: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendDown {
    pub backend: SocketAddr,
    pub cause: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendUp {
    pub backend: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceBlocked {
    pub address: IpAddr,
    pub reason: String,
    pub secs: u64,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaSessionCreated {
    pub session: SessionInfo,
}

/// A media session ended, with its final counters; one a restarted daemon could not adopt has
/// only its id and the problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaSessionEnded {
    pub reason: EndReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// RTP packets relayed each way through a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtpPackets {
    pub caller_to_callee: u64,
    pub callee_to_caller: u64,
}

/// A direction of a call's media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    CallerToCallee,
    CalleeToCaller,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::CallerToCallee => "caller_to_callee",
            Direction::CalleeToCaller => "callee_to_caller",
        }
    }
}

/// One leg of a silent call's media session, as `call_no_audio` diagnoses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoAudioLeg {
    pub leg: Leg,
    /// `caller` or `callee`.
    pub party: String,
    pub side: Side,
    pub latched: bool,
    pub peer: Option<SocketAddr>,
    pub rtp_packets_in: u64,
    pub rtp_idle_ms: Option<u64>,
}

impl Event {
    /// Its name in the file (`event`).
    pub fn name(&self) -> &'static str {
        match self {
            Event::CallStarted(_) => "call_started",
            Event::CallRinging(_) => "call_ringing",
            Event::CallAnswered(_) => "call_answered",
            Event::CallEnded(_) => "call_ended",
            Event::CallNoAudio(_) => "call_no_audio",
            Event::BackendDown(_) => "backend_down",
            Event::BackendUp(_) => "backend_up",
            Event::SourceBlocked(_) => "source_blocked",
            Event::MediaSessionCreated(_) => "media_session_created",
            Event::MediaSessionEnded(_) => "media_session_ended",
            Event::ClusterDegraded(_) => "cluster_degraded",
            Event::ClusterRestored(_) => "cluster_restored",
            Event::GroupTakenOver(_) => "group_taken_over",
            Event::GroupReleased(_) => "group_released",
        }
    }
}

/// The payload of one kind of event, taken out of an `Event`: how readers of the file pick the
/// events they look for (`Kind::of`).
pub trait Kind: Sized {
    fn of(event: Event) -> Option<Self>;
    /// The same, of a borrowed event.
    fn of_ref(event: &Event) -> Option<&Self>;
}

macro_rules! kinds {
    ($($kind:ident),*) => {
        $(impl Kind for $kind {
            fn of(event: Event) -> Option<Self> {
                match event {
                    Event::$kind(payload) => Some(payload),
                    _ => None,
                }
            }

            fn of_ref(event: &Event) -> Option<&Self> {
                match event {
                    Event::$kind(payload) => Some(payload),
                    _ => None,
                }
            }
        })*
    };
}

kinds!(
    CallStarted,
    CallRinging,
    CallAnswered,
    CallEnded,
    CallNoAudio,
    BackendDown,
    BackendUp,
    SourceBlocked,
    MediaSessionCreated,
    MediaSessionEnded,
    ClusterDegraded,
    ClusterRestored,
    GroupTakenOver,
    GroupReleased
);

/// A line of the events file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLine {
    pub ts_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Default)]
pub struct EventSink {
    file: Option<Mutex<File>>,
}

impl EventSink {
    pub fn open(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening events file {}", path.display()))?;
        Ok(Self {
            file: Some(Mutex::new(file)),
        })
    }

    /// Records an event, stamped with the wall clock.
    pub fn emit(&self, event: Event) {
        let line = EventLine {
            ts_ms: unix_ms(),
            event,
        };
        let mut line = match serde_json::to_string(&line) {
            Ok(line) => line,
            Err(e) => return warn!("cannot write event {}: {e}", line.event.name()),
        };
        info!(target: "sbc::events", "{line}");
        let Some(file) = &self.file else { return };
        line.push('\n');
        let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(line.as_bytes()) {
            warn!("cannot write event: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_back_as_written_with_their_names() {
        let ended = Event::CallEnded(CallEnded {
            call_id: "c".into(),
            reason: CallEnd::Bye,
            final_code: Some(200),
            duration_ms: Some(5),
            rtp_packets: Some(RtpPackets {
                caller_to_callee: 1,
                callee_to_caller: 2,
            }),
        });
        let line = EventLine {
            ts_ms: 7,
            event: ended.clone(),
        };
        let text = serde_json::to_string(&line).unwrap();
        assert!(text.contains(r#""event":"call_ended""#), "{text}");
        assert!(text.contains(r#""reason":"bye""#), "{text}");
        assert_eq!(serde_json::from_str::<EventLine>(&text).unwrap(), line);
        // A line from before a field existed still reads.
        let lost = r#"{"ts_ms":1,"event":"call_ended","call_id":"x","reason":"media_lost_in_restart","final_code":null,"duration_ms":null}"#;
        let lost: EventLine = serde_json::from_str(lost).unwrap();
        assert_eq!(lost.event.name(), "call_ended");
    }
}
