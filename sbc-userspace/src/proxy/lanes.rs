//! The two queues to the proxy task. What keeps calls going goes first: control, responses,
//! requests of calls the proxy holds, everything from the backends' side. New requests from
//! the public side wait behind it: under overload they are the ones to wait, and to be shed,
//! and a call being set up must not wait for its answer behind them.
//!
//! The new-request lane also knows when each message in it arrived (the kernel's stamp), so
//! intake can bound it by time: how long the oldest one has waited is what a new request
//! let in now would wait, about.
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::{Queued, arriving::Arriving};
use crate::admission::SipGuard;

#[derive(Clone)]
pub struct Lanes {
    urgent: mpsc::UnboundedSender<Queued>,
    new_requests: mpsc::UnboundedSender<Queued>,
    new_arrivals: Arrivals,
    guard: Arc<SipGuard>,
}

/// The proxy task's ends of the lanes.
pub struct LaneReceivers {
    pub urgent: mpsc::UnboundedReceiver<Queued>,
    pub new_requests: NewRequests,
}

/// The proxy task's end of the new-request lane.
pub struct NewRequests {
    receiver: mpsc::UnboundedReceiver<Queued>,
    arrivals: Arrivals,
}

/// When the messages waiting in a lane arrived, oldest first: pushed with the message under
/// the same lock, so the two keep one order whichever listener sends.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<VecDeque<Instant>>>);

impl Arrivals {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Instant>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Lanes {
    pub fn new(guard: Arc<SipGuard>) -> (Self, LaneReceivers) {
        let (urgent, urgent_rx) = mpsc::unbounded_channel();
        let (new_requests, new_requests_rx) = mpsc::unbounded_channel();
        let new_arrivals = Arrivals::default();
        let lanes = Self {
            urgent,
            new_requests,
            new_arrivals: new_arrivals.clone(),
            guard,
        };
        let receivers = LaneReceivers {
            urgent: urgent_rx,
            new_requests: NewRequests {
                receiver: new_requests_rx,
                arrivals: new_arrivals,
            },
        };
        (lanes, receivers)
    }

    /// A control event or a connection notice; false once the proxy is gone.
    pub fn control(&self, event: Queued) -> bool {
        self.urgent.send(event).is_ok()
    }

    /// A message read from a TCP connection, in its lane; false once the proxy is gone.
    pub(super) fn stream_message(&self, event: Queued) -> bool {
        let of_a_call = match &event {
            Queued::Stream {
                listener,
                from,
                bytes,
                ..
            } => Arriving::new(*listener, from.ip(), bytes, &self.guard).of_a_call(),
            _ => true,
        };
        self.send(event, of_a_call)
    }

    /// A message in the lane `of_a_call` says; false once the proxy is gone.
    pub(super) fn send(&self, event: Queued, of_a_call: bool) -> bool {
        if of_a_call {
            return self.urgent.send(event).is_ok();
        }
        let mut arrivals = self.new_arrivals.lock();
        arrivals.push_back(event.received().unwrap_or_else(Instant::now));
        let sent = self.new_requests.send(event).is_ok();
        if !sent {
            arrivals.pop_back();
        }
        sent
    }

    /// How long the oldest new request waiting has waited (zero with none waiting).
    pub fn oldest_new_request_waited(&self) -> Duration {
        self.new_arrivals
            .lock()
            .front()
            .map_or(Duration::ZERO, Instant::elapsed)
    }
}

impl NewRequests {
    /// The next new request (cancel-safe: it is taken off both queues in one poll).
    pub async fn next(&mut self) -> Option<Queued> {
        let event = self.receiver.recv().await?;
        self.arrivals.lock().pop_front();
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::side::Side;

    fn new_request(received: Instant) -> Queued {
        Queued::Datagram {
            listener: Side::Public,
            from: SocketAddr::from(([203, 0, 113, 9], 5060)),
            bytes: b"INVITE sip:a@b SIP/2.0\r\nCall-ID: new\r\n\r\n".to_vec(),
            received,
        }
    }

    #[tokio::test]
    async fn the_new_request_lane_tells_how_long_its_oldest_has_waited() {
        let (lanes, mut receivers) = Lanes::new(Arc::new(SipGuard::userspace()));
        assert_eq!(lanes.oldest_new_request_waited(), Duration::ZERO, "empty");
        let now = Instant::now();
        assert!(lanes.send(new_request(now - Duration::from_millis(300)), false));
        assert!(lanes.send(new_request(now - Duration::from_millis(100)), false));
        assert!(lanes.send(new_request(now - Duration::from_secs(9)), true));
        let waited = lanes.oldest_new_request_waited();
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(
            waited < Duration::from_secs(9),
            "the urgent lane is not in it"
        );
        receivers.new_requests.next().await.unwrap();
        let waited = lanes.oldest_new_request_waited();
        assert!(
            (Duration::from_millis(100)..Duration::from_millis(300)).contains(&waited),
            "{waited:?}"
        );
        receivers.new_requests.next().await.unwrap();
        assert_eq!(lanes.oldest_new_request_waited(), Duration::ZERO);
    }
}
