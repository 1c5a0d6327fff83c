//! Bounds on what the edge passes on (`[sip.limits]`): how many header fields a message may
//! have, how long one may be, and how long the tokens the proxy and its backends key on may
//! be (method, Call-ID, tags, Via hosts and branches). Backends are often less careful
//! parsers than the edge (a Via host of a few hundred bytes crashed SIPp), so the edge refuses
//! what exceeds them with 400 and counts it, instead of forwarding it.
use serde::Deserialize;

use super::{Message, check};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bounds {
    /// Header fields in one message.
    pub max_headers: usize,
    /// Bytes of one header field's value (after unfolding).
    pub max_header_bytes: usize,
    /// Bytes of the method, the Call-ID, a tag, a Via host or branch.
    pub max_token_bytes: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_headers: 100,
            max_header_bytes: 4096,
            // A DNS name has at most 253 characters.
            max_token_bytes: 255,
        }
    }
}

/// The least a bound may be: every valid message of the RFC 4475 and 5118 corpora fits.
pub const MIN_HEADERS: usize = 32;
pub const MIN_HEADER_BYTES: usize = 1024;
pub const MIN_TOKEN_BYTES: usize = 64;

impl Bounds {
    /// What is wrong with a message's header fields, if anything.
    pub fn check_headers(&self, message: &Message) -> Result<(), String> {
        if message.headers.len() > self.max_headers {
            return Err(format!(
                "{} header fields, more than {}",
                message.headers.len(),
                self.max_headers
            ));
        }
        match message
            .headers
            .iter()
            .find(|h| h.value.len() > self.max_header_bytes)
        {
            Some(long) => Err(format!(
                "header {} of {} bytes, more than {}",
                long.name,
                long.value.len(),
                self.max_header_bytes
            )),
            None => Ok(()),
        }
    }

    /// A request within the bounds, or its refusal (400).
    pub fn check_request(
        &self,
        message: &Message,
        request: &check::Request,
    ) -> Result<(), check::Rejection> {
        self.check_headers(message)
            .and_then(|()| self.check_tokens(request))
            .map_err(|reason| check::Rejection {
                status: 400,
                reason,
                unsupported: None,
            })
    }

    fn check_tokens(&self, request: &check::Request) -> Result<(), String> {
        let vias = request.vias.iter().flat_map(|via| {
            [
                ("Via host", Some(via.host.to_string())),
                ("Via branch", via.branch().map(str::to_owned)),
            ]
        });
        let tokens = [
            ("method", Some(request.method.to_string())),
            ("Call-ID", Some(request.call_id.clone())),
            ("From tag", request.from.tag().map(str::to_owned)),
            ("To tag", request.to.tag().map(str::to_owned)),
        ];
        match tokens.into_iter().chain(vias).find_map(|(what, value)| {
            value
                .filter(|v| v.len() > self.max_token_bytes)
                .map(|v| (what, v.len()))
        }) {
            Some((what, len)) => Err(format!(
                "{what} of {len} bytes, more than {}",
                self.max_token_bytes
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::inbound::{self, Inbound};

    fn request(via_host: &str, extra: &str) -> (Message, check::Request) {
        let text = format!(
            "OPTIONS sip:b@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP {via_host};branch=z9hG4bK1\r\n\
             From: <sip:a@192.0.2.1>;tag=1\r\nTo: <sip:b@192.0.2.2>\r\nCall-ID: c\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match inbound::datagram(text.as_bytes()) {
            Inbound::Request(message, request) => (message, request),
            _ => panic!("not a request"),
        }
    }

    #[test]
    fn what_exceeds_a_bound_is_refused_with_what_and_how_much() {
        let bounds = Bounds::default();
        let (message, parsed) = request("host.example.com", "");
        assert_eq!(bounds.check_request(&message, &parsed), Ok(()));

        let long_host = format!("{}.example.com", "a".repeat(300));
        let (message, parsed) = request(&long_host, "");
        let refusal = bounds.check_request(&message, &parsed).unwrap_err();
        assert_eq!(refusal.status, 400);
        assert!(
            refusal.reason.starts_with("Via host of 312 bytes"),
            "{}",
            refusal.reason
        );

        let long_header = format!("Subject: {}\r\n", "x".repeat(5000));
        let (message, parsed) = request("h", &long_header);
        let refusal = bounds.check_request(&message, &parsed).unwrap_err();
        assert!(
            refusal.reason.starts_with("header subject of 5000 bytes"),
            "{}",
            refusal.reason
        );

        let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
        let (message, parsed) = request("h", &many);
        let refusal = bounds.check_request(&message, &parsed).unwrap_err();
        assert!(
            refusal.reason.contains("more than 100"),
            "{}",
            refusal.reason
        );
    }
}
