//! Requests the proxy refused itself (503 by admission, 483, 482, no route, media it cannot
//! anchor), remembered for a while by transaction: a retransmission (its sender missed the
//! answer, likely under load) gets the same answer again, and is neither examined again nor
//! counted as a new call attempt, a new refusal or a new call (RFC 3261 17.2: a server
//! transaction absorbs retransmissions). Bounded in count, so a flood cannot grow it: past the
//! bound the oldest are forgotten first. Only what the answer needs is kept, not the request.
use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use super::{build, names::ServerKey};
use crate::sip::Message;

/// Transactions remembered at most.
const CAPACITY: usize = 65_536;

/// A refusal as it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: u16,
    pub reason: String,
    pub to_tag: String,
    pub extra: Vec<(&'static str, String)>,
}

impl Answer {
    /// This answer to `request` (or to a retransmission of it).
    pub fn to(&self, request: &Message) -> Vec<u8> {
        build::response(request, self.code, &self.reason, &self.to_tag, &self.extra)
    }
}

pub struct Answered {
    keep: Duration,
    answers: HashMap<ServerKey, Answer>,
    /// Keys by age, oldest first.
    order: VecDeque<(Instant, ServerKey)>,
}

impl Answered {
    /// Remembers answers for `keep` (a transaction's linger time).
    pub fn new(keep: Duration) -> Self {
        Self {
            keep,
            answers: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn remember(&mut self, key: &ServerKey, answer: Answer, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < self.keep && self.order.len() < CAPACITY {
                break;
            }
            let (_, old) = self.order.pop_front().expect("not empty");
            self.answers.remove(&old);
        }
        if self.answers.insert(key.clone(), answer).is_none() {
            self.order.push_back((now, key.clone()));
        }
    }

    /// The answer already given to this transaction, if it is still remembered.
    pub fn get(&self, key: &ServerKey) -> Option<&Answer> {
        self.answers.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ServerKey {
        ServerKey::named(name)
    }

    fn answer(code: u16) -> Answer {
        Answer {
            code,
            reason: "Service Unavailable".into(),
            to_tag: "t".into(),
            extra: vec![("Retry-After", "5".into())],
        }
    }

    #[test]
    fn answers_are_kept_for_a_while_and_bounded() {
        let start = Instant::now();
        let mut answered = Answered::new(Duration::from_secs(32));
        answered.remember(&key("a"), answer(503), start);
        assert_eq!(answered.get(&key("a")), Some(&answer(503)));
        // Long after, a new answer makes room by forgetting the old one.
        answered.remember(&key("b"), answer(483), start + Duration::from_secs(40));
        assert_eq!(answered.get(&key("a")), None);
        assert_eq!(answered.get(&key("b")), Some(&answer(483)));
        for i in 0..CAPACITY + 10 {
            answered.remember(
                &key(&i.to_string()),
                answer(503),
                start + Duration::from_secs(41),
            );
        }
        assert!(answered.answers.len() <= CAPACITY && answered.order.len() <= CAPACITY);
        assert_eq!(answered.get(&key("b")), None, "the oldest went first");
    }
}
