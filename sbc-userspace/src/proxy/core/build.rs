//! Messages the proxy writes itself: responses to requests it answers, and the requests it
//! originates (hop-by-hop ACK, CANCEL, BYE on media timeout, OPTIONS probes).
use crate::sip::{Message, Method, check};

/// The reason phrase of the codes the proxy sends.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        _ => "Unknown",
    }
}

/// A response to `request` (RFC 3261 8.2.6): its Via, From, To, Call-ID and CSeq copied, a To
/// tag added to final responses that lack one, `extra` headers, no body.
pub fn response(
    request: &Message,
    code: u16,
    reason: &str,
    to_tag: &str,
    extra: &[(&str, String)],
) -> Vec<u8> {
    let bytes = request.bytes();
    let mut out = format!("SIP/2.0 {code} {reason}\r\n").into_bytes();
    for header in &request.headers {
        match header.name.as_str() {
            "via" | "from" | "call-id" | "cseq" => {
                out.extend_from_slice(&bytes[header.span.clone()]);
            }
            "to" => {
                let has_tag = crate::sip::address::parse(&header.value)
                    .ok()
                    .is_some_and(|to| to.tag().is_some());
                if has_tag || code == 100 {
                    out.extend_from_slice(&bytes[header.span.clone()]);
                } else {
                    out.extend_from_slice(
                        format!("To: {};tag={to_tag}\r\n", header.value).as_bytes(),
                    );
                }
            }
            _ => {}
        }
    }
    for (name, value) in extra {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    out
}

/// The extra headers of a refusal (420 carries Unsupported).
pub fn rejection_headers(rejection: &check::Rejection) -> Vec<(&'static str, String)> {
    rejection
        .unsupported
        .iter()
        .map(|tags| ("Unsupported", tags.clone()))
        .collect()
}

/// A CANCEL or the ACK of a failure for an INVITE we forwarded (RFC 3261 9.1, 17.1.1.3): the
/// same Request-URI, our Via (so the same branch), Route, From, Call-ID and CSeq number; `to`
/// replaces the To (the ACK carries the response's, with its tag).
pub fn for_forwarded_invite(method: Method, invite: &[u8], to: Option<&str>) -> Option<Vec<u8>> {
    let invite = Message::parse(invite.to_vec()).ok()?;
    let crate::sip::StartLine::Request { uri, .. } = &invite.start else {
        return None;
    };
    let mut request = RequestBuilder::new(&method, uri);
    let via = invite.value("via")?;
    request = request.header("Via", crate::sip::syntax::split_top_level(via, b',')[0]);
    for header in &invite.headers {
        request = match header.name.as_str() {
            "route" => request.header("Route", &header.value),
            "from" => request.header("From", &header.value),
            "call-id" => request.header("Call-ID", &header.value),
            "to" => request.header("To", to.unwrap_or(&header.value)),
            "cseq" => {
                let number = header.value.split_whitespace().next().unwrap_or("1");
                request.header("CSeq", &format!("{number} {method}"))
            }
            _ => request,
        };
    }
    Some(request.header("Max-Forwards", "70").finish())
}

/// A request the proxy originates.
pub struct RequestBuilder {
    text: String,
}

impl RequestBuilder {
    pub fn new(method: &Method, uri: &str) -> Self {
        Self {
            text: format!("{method} {uri} SIP/2.0\r\n"),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.text.push_str(name);
        self.text.push_str(": ");
        self.text.push_str(value);
        self.text.push_str("\r\n");
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.text.push_str("Content-Length: 0\r\n\r\n");
        self.text.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_copy_the_dialog_headers_and_tag_finals() {
        let request = Message::parse(
            b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: k\r\nCSeq: 1 INVITE\r\nContact: <sip:c@x>\r\nContent-Length: 0\r\n\r\n".to_vec(),
        )
        .unwrap();
        let out = String::from_utf8(response(
            &request,
            503,
            "Service Unavailable",
            "t9",
            &[("Retry-After", "5".into())],
        ))
        .unwrap();
        assert_eq!(
            out,
            "SIP/2.0 503 Service Unavailable\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>;tag=t9\r\nCall-ID: k\r\nCSeq: 1 INVITE\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n"
        );
        let trying = String::from_utf8(response(&request, 100, "Trying", "t9", &[])).unwrap();
        assert!(trying.contains("To: <sip:a@b>\r\n"));
        assert!(Message::parse(out.into_bytes()).is_ok());
    }
}
