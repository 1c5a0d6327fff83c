//! Answers for what intake sheds. A new INVITE that an overloaded daemon drops on arrival gets
//! 503 with Retry-After at once, from the listener's own task (RFC 7339: past capacity, refuse
//! the rest fast): dropped silently, its caller would retransmit it into the overload for up
//! to half a minute, and the calls that do get through late would take seconds to set up. The
//! answer is built from the request's own headers without a transaction (its retransmissions
//! get another like it), and the answers are bounded per second, so a flood cannot turn them
//! into the work that shedding saves.
use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

use sbc_common::{PacketLimit, TokenBucket, guard::starts_an_invite};

use super::core::build;
use crate::{clock::monotonic_ns, sip::Message};

/// Answers per second at most, and at once.
const ANSWERS: PacketLimit = PacketLimit {
    rate: 5_000,
    burst: 5_000,
};

/// The To tag of these answers starts so: the caller's ACK for one carries it, and is
/// absorbed on arrival (no transaction holds these answers).
const TAG_PREFIX: &str = "sbc-shed-";
/// How that tag shows in the ACK.
const ACK_MARKER: &[u8] = b";tag=sbc-shed-";

pub struct ShedAnswers {
    retry_after: String,
    budget: Mutex<TokenBucket>,
    sequence: AtomicU64,
}

impl ShedAnswers {
    pub fn new(retry_after_secs: u32) -> Self {
        Self {
            retry_after: retry_after_secs.to_string(),
            budget: Mutex::new(TokenBucket::full(&ANSWERS, monotonic_ns())),
            sequence: AtomicU64::new(0),
        }
    }

    /// The 503 for a shed `datagram` if it is an INVITE, the budget allows and it parses (the
    /// budget is asked first: past it, a flood's INVITEs are not even parsed).
    pub fn answer(&self, datagram: &[u8]) -> Option<Vec<u8>> {
        if !starts_an_invite(datagram) {
            return None;
        }
        let allowed = self
            .budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(&ANSWERS, monotonic_ns());
        if !allowed {
            return None;
        }
        let request = Message::parse(datagram.to_vec()).ok()?;
        let tag = format!(
            "{TAG_PREFIX}{:x}",
            self.sequence.fetch_add(1, Ordering::Relaxed)
        );
        Some(build::response(
            &request,
            503,
            "Service Unavailable (the SBC is overloaded)",
            &tag,
            &[("Retry-After", self.retry_after.clone())],
        ))
    }

    /// Whether `datagram` is the ACK of one of these answers.
    pub fn is_ack_of_answer(datagram: &[u8]) -> bool {
        datagram.starts_with(b"ACK ")
            && datagram
                .windows(ACK_MARKER.len())
                .any(|window| window.eq_ignore_ascii_case(ACK_MARKER))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@198.18.1.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 198.18.1.2:5060;branch=z9hG4bK1;rport\r\n\
        Max-Forwards: 70\r\nFrom: <sip:alice@198.18.1.2>;tag=a1\r\n\
        To: <sip:bob@198.18.1.1>\r\nCall-ID: shed-1\r\nCSeq: 1 INVITE\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn a_shed_invite_gets_503_with_retry_after_and_its_ack_is_recognised() {
        let answers = ShedAnswers::new(7);
        let answer = String::from_utf8(answers.answer(INVITE).expect("an answer")).unwrap();
        assert!(answer.starts_with("SIP/2.0 503 "), "{answer}");
        for line in [
            "Via: SIP/2.0/UDP 198.18.1.2:5060;branch=z9hG4bK1;rport\r\n",
            "From: <sip:alice@198.18.1.2>;tag=a1\r\n",
            "Call-ID: shed-1\r\n",
            "CSeq: 1 INVITE\r\n",
            "Retry-After: 7\r\n",
        ] {
            assert!(answer.contains(line), "{line:?} missing in {answer}");
        }
        let to = answer.lines().find(|l| l.starts_with("To:")).unwrap();
        assert!(to.contains(";tag=sbc-shed-"), "{to}");
        let ack = format!(
            "ACK sip:bob@198.18.1.1 SIP/2.0\r\n{to}\r\nCall-ID: shed-1\r\nCSeq: 1 ACK\r\n\r\n"
        );
        assert!(ShedAnswers::is_ack_of_answer(ack.as_bytes()));
        assert!(!ShedAnswers::is_ack_of_answer(
            b"ACK sip:bob@b SIP/2.0\r\nTo: <sip:bob@b>;tag=x\r\n\r\n"
        ));
    }

    #[test]
    fn only_invites_are_answered_and_only_within_the_budget() {
        let answers = ShedAnswers::new(5);
        assert!(answers.answer(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n").is_none());
        assert!(answers.answer(b"INVITE garbage").is_none(), "unparsable");
        let started = std::time::Instant::now();
        let answered = (0..2 * ANSWERS.burst)
            .filter(|_| answers.answer(INVITE).is_some())
            .count() as f64;
        // What refilled while the loop ran was allowed too.
        let allowed =
            f64::from(ANSWERS.burst) + f64::from(ANSWERS.rate) * started.elapsed().as_secs_f64();
        assert!(
            answered >= f64::from(ANSWERS.burst) && answered <= allowed + 1.0,
            "{answered} answered, {allowed:.0} allowed"
        );
    }
}
