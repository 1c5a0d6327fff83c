//! Where a message ends: in a UDP datagram (one message, trailing octets ignored) and in a TCP
//! byte stream (Content-Length is mandatory). CRLF keep-alives are recognised (RFC 5626).
use super::message::canonical_name;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramingError {
    /// Content-Length is not a non-negative decimal number.
    BadContentLength(String),
    /// More than one Content-Length: the boundaries cannot be known.
    ConflictingContentLength,
    /// A datagram shorter than its Content-Length says.
    Truncated { declared: usize, present: usize },
    /// A stream message without Content-Length.
    MissingContentLength,
    /// Headers longer than we accept (a stream that never ends its headers).
    HeadersTooLong,
    /// A message larger than we accept.
    TooLarge(usize),
}

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadContentLength(v) => write!(f, "bad Content-Length {v:?}"),
            Self::ConflictingContentLength => f.write_str("more than one Content-Length"),
            Self::Truncated { declared, present } => write!(
                f,
                "Content-Length {declared} is larger than the {present} body octets received"
            ),
            Self::MissingContentLength => f.write_str("no Content-Length on a stream transport"),
            Self::HeadersTooLong => f.write_str("header section too long"),
            Self::TooLarge(length) => write!(f, "a {length}-octet message is too large"),
        }
    }
}

impl FramingError {
    /// Whether a request framed this badly still deserves an answer (400): only when its end is
    /// known; with conflicting lengths the rest of a stream is unusable.
    pub fn answerable(&self) -> bool {
        matches!(
            self,
            Self::BadContentLength(_) | Self::Truncated { .. } | Self::TooLarge(_)
        )
    }

    /// The status a refused request gets: 513 for size, 400 otherwise.
    pub fn status(&self) -> u16 {
        if matches!(self, Self::TooLarge(_)) {
            513
        } else {
            400
        }
    }
}

/// The largest header section accepted on a stream before giving up on it.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// The largest message accepted on a stream.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The end of the header section: (start of the empty line, start of the body).
pub fn header_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(lf) = bytes[i..].iter().position(|&b| b == b'\n') {
        let next = i + lf + 1;
        match bytes.get(next) {
            Some(b'\n') => return Some((next, next + 1)),
            Some(b'\r') if bytes.get(next + 1) == Some(&b'\n') => return Some((next, next + 2)),
            _ => i = next,
        }
    }
    None
}

/// The Content-Length declared in a header section, if any.
pub fn content_length(head: &[u8]) -> Result<Option<usize>, FramingError> {
    let mut found = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]);
        if canonical_name(name.trim()) != "content-length" {
            continue;
        }
        let value = String::from_utf8_lossy(&line[colon + 1..])
            .trim()
            .to_owned();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FramingError::BadContentLength(value));
        }
        let length: usize = value
            .parse()
            .map_err(|_| FramingError::BadContentLength(value.clone()))?;
        if found.replace(length).is_some() {
            return Err(FramingError::ConflictingContentLength);
        }
    }
    Ok(found)
}

/// Leading CRLFs (keep-alives, or the noise RFC 3261 7.5 says to ignore before a message).
fn leading_crlf(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// The message in a datagram, or `None` for a keep-alive. Octets after the body are ignored
/// (RFC 3261 18.3); a missing Content-Length means the body is the rest of the datagram.
pub fn datagram(bytes: &[u8]) -> Result<Option<&[u8]>, FramingError> {
    let bytes = &bytes[leading_crlf(bytes)..];
    if bytes.is_empty() {
        return Ok(None);
    }
    let Some((_, body_start)) = header_end(bytes) else {
        // No empty line: parsing reports it (and can still answer).
        return Ok(Some(bytes));
    };
    match content_length(&bytes[..body_start])? {
        None => Ok(Some(bytes)),
        Some(declared) => {
            let present = bytes.len() - body_start;
            if declared > present {
                return Err(FramingError::Truncated { declared, present });
            }
            Ok(Some(&bytes[..body_start + declared]))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFrame {
    /// Skip this many CRLF octets; `ping` when they were a double-CRLF keep-alive to answer.
    KeepAlive { len: usize, ping: bool },
    /// A whole message of this many octets is at the front of the buffer.
    Message(usize),
    /// Not enough octets yet.
    Incomplete,
}

/// What is at the front of a stream buffer.
pub fn stream(buffer: &[u8]) -> Result<StreamFrame, FramingError> {
    let crlf = leading_crlf(buffer);
    if crlf > 0 {
        return Ok(StreamFrame::KeepAlive {
            len: crlf,
            ping: buffer[..crlf].starts_with(b"\r\n\r\n"),
        });
    }
    let Some((_, body_start)) = header_end(buffer) else {
        if buffer.len() > MAX_HEADER_BYTES {
            return Err(FramingError::HeadersTooLong);
        }
        return Ok(StreamFrame::Incomplete);
    };
    let declared =
        content_length(&buffer[..body_start])?.ok_or(FramingError::MissingContentLength)?;
    if body_start + declared > MAX_MESSAGE_BYTES {
        return Err(FramingError::TooLarge(body_start + declared));
    }
    if buffer.len() < body_start + declared {
        return Ok(StreamFrame::Incomplete);
    }
    Ok(StreamFrame::Message(body_start + declared))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n";

    #[test]
    fn datagrams() {
        assert_eq!(datagram(b"\r\n\r\n").unwrap(), None);
        let trailing = format!("{HEAD}l: 2\r\n\r\nabEXTRA");
        assert_eq!(
            datagram(trailing.as_bytes()).unwrap().unwrap().len(),
            trailing.len() - 5
        );
        let short = format!("{HEAD}Content-Length: 9\r\n\r\nab");
        assert_eq!(
            datagram(short.as_bytes()),
            Err(FramingError::Truncated {
                declared: 9,
                present: 2
            })
        );
        let negative = format!("{HEAD}Content-Length: -9\r\n\r\n");
        assert!(matches!(
            datagram(negative.as_bytes()),
            Err(FramingError::BadContentLength(_))
        ));
        let twice = format!("{HEAD}Content-Length: 1\r\nl: 2\r\n\r\nab");
        assert_eq!(
            datagram(twice.as_bytes()),
            Err(FramingError::ConflictingContentLength)
        );
    }

    #[test]
    fn streams() {
        assert_eq!(
            stream(b"\r\n\r\nINV").unwrap(),
            StreamFrame::KeepAlive { len: 4, ping: true }
        );
        let message = format!("{HEAD}Content-Length: 2\r\n\r\nab");
        assert_eq!(
            stream(&message.as_bytes()[..20]).unwrap(),
            StreamFrame::Incomplete
        );
        let two = format!("{message}{message}");
        assert_eq!(
            stream(two.as_bytes()).unwrap(),
            StreamFrame::Message(message.len())
        );
        let missing = format!("{HEAD}\r\n");
        assert_eq!(
            stream(missing.as_bytes()),
            Err(FramingError::MissingContentLength)
        );
    }
}
