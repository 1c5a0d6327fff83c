//! Why a call ended, one name per cause: the `call_ended` event's `reason` and the
//! `sbc_calls_ended_total{reason}` label say it the same way.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEnd {
    /// A BYE from either end, answered.
    Bye,
    /// Cancelled before it was answered (CANCEL, 487).
    Cancelled,
    /// Refused or failed before it was answered (a final response of 300 and above).
    Failed,
    /// A new INVITE came for it while it was still being set up (a retry after a challenge,
    /// glare): the old attempt is over.
    Replaced,
    /// Being set up when the daemon went down, and not completable by the next one.
    LostInRestart,
    /// Answered, but its media did not survive the daemon's restart (the userspace dataplane).
    MediaLostInRestart,
    /// Its media stopped for `media.timeout_secs`.
    MediaTimeout,
    /// A direction stayed silent past `media.no_audio` (with `action = "hangup"`).
    NoAudio,
    /// A drain's deadline passed.
    DrainDeadline,
}

impl CallEnd {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Bye => "bye",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
            Self::Replaced => "replaced",
            Self::LostInRestart => "lost_in_restart",
            Self::MediaLostInRestart => "media_lost_in_restart",
            Self::MediaTimeout => "media_timeout",
            Self::NoAudio => "no_audio",
            Self::DrainDeadline => "drain_deadline",
        }
    }

    /// How a call being set up ended with a final response of `code`.
    pub const fn of_final(code: u16) -> Self {
        if code == 487 {
            Self::Cancelled
        } else {
            Self::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metric_label_and_the_event_say_it_the_same_way() {
        for end in [
            CallEnd::Bye,
            CallEnd::Cancelled,
            CallEnd::Failed,
            CallEnd::Replaced,
            CallEnd::LostInRestart,
            CallEnd::MediaLostInRestart,
            CallEnd::MediaTimeout,
            CallEnd::NoAudio,
            CallEnd::DrainDeadline,
        ] {
            assert_eq!(serde_json::to_value(end).unwrap(), end.name());
        }
    }
}
