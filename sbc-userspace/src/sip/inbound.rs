//! What arrives on a SIP transport, sorted: a checked request or response, a request to refuse
//! (with the status and, when it parsed, the message to answer), or something to drop.
use super::{
    check::{self, Rejection},
    framing::{self, FramingError},
    message::Message,
};

/// Option tags this proxy supports (Proxy-Require): none yet.
pub const SUPPORTED: &[&str] = &[];

#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "made and consumed once per message; boxing would only add an allocation"
)]
pub enum Inbound {
    Request(Message, check::Request),
    Response(Message, check::Response),
    /// A request to answer with an error; `message` is what could be parsed of it (a response
    /// needs its Via, From, To, Call-ID and CSeq; without them it is dropped).
    Refuse {
        rejection: Rejection,
        message: Option<Message>,
    },
    /// Nothing to answer: a keep-alive, a broken response, or bytes that are not SIP.
    Drop(String),
    KeepAlive,
}

fn looks_like_response(bytes: &[u8]) -> bool {
    bytes.starts_with(b"SIP/")
}

/// Sorts one complete message (as framed).
pub fn message(bytes: &[u8]) -> Inbound {
    let response = looks_like_response(bytes);
    let parsed = match Message::parse(bytes.to_vec()) {
        Ok(parsed) => parsed,
        Err(e) if response => return Inbound::Drop(format!("malformed response: {e}")),
        Err(e) => {
            return Inbound::Refuse {
                rejection: Rejection {
                    status: 400,
                    reason: e.0,
                    unsupported: None,
                },
                message: headers_only(bytes),
            };
        }
    };
    if parsed.is_request() {
        match check::request(&parsed, SUPPORTED) {
            Ok(request) => Inbound::Request(parsed, request),
            Err(rejection) => Inbound::Refuse {
                rejection,
                message: Some(parsed),
            },
        }
    } else {
        match check::response(&parsed) {
            Ok(response) => Inbound::Response(parsed, response),
            Err(e) => Inbound::Drop(format!("malformed response: {e}")),
        }
    }
}

/// The headers of a request whose start line is broken, read behind a stand-in start line:
/// enough to answer it (its Via, From, To, Call-ID and CSeq).
fn headers_only(bytes: &[u8]) -> Option<Message> {
    let line_end = bytes.iter().position(|&b| b == b'\n')? + 1;
    let mut patched = b"BROKEN sip:invalid SIP/2.0\r\n".to_vec();
    patched.extend_from_slice(&bytes[line_end..]);
    if framing::header_end(&patched).is_none() {
        // A datagram that ends without the empty line still has all its headers.
        patched.extend_from_slice(b"\r\n\r\n");
    }
    Message::parse(patched).ok()
}

/// Sorts a UDP datagram (one message; trailing octets ignored).
pub fn datagram(bytes: &[u8]) -> Inbound {
    match framing::datagram(bytes) {
        Ok(None) => Inbound::KeepAlive,
        Ok(Some(framed)) => message(framed),
        Err(e) => framing_failure(bytes, &e),
    }
}

/// A request whose framing is broken is still answered when its end is known and its headers
/// parse (RFC 4475 3.1.2.2, 3.1.2.3); anything else is dropped.
pub fn framing_failure(bytes: &[u8], error: &FramingError) -> Inbound {
    if looks_like_response(bytes) || !error.answerable() {
        return Inbound::Drop(error.to_string());
    }
    let head = framing::header_end(bytes).map_or(bytes, |(_, body)| &bytes[..body]);
    Inbound::Refuse {
        rejection: Rejection {
            status: error.status(),
            reason: error.to_string(),
            unsupported: None,
        },
        message: Message::parse(head.to_vec()).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request too broken to answer is refused without a message to answer: the proxy
    /// counts it as dropped only.
    #[test]
    fn a_request_without_start_line_or_headers_cannot_be_answered() {
        assert!(matches!(
            datagram(b"INVITE\r\nno header here\r\n\r\n"),
            Inbound::Refuse { message: None, .. }
        ));
    }
}
