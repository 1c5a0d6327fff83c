//! A SIP message as received: its exact bytes, plus where each part lies in them.
//!
//! Nothing is re-serialised: the proxy forwards by editing these bytes (see `edit`), so every
//! header it does not touch passes through byte for byte. Header values are also kept unfolded
//! (continuation lines joined with one space) for reading.
use std::ops::Range;

use super::syntax::{is_token, is_ws, trim_ws};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request {
        method: String,
        uri: String,
        version: String,
    },
    Response {
        version: String,
        code: u16,
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct Header {
    /// Full lower-case name (compact forms expanded: `i` is `call-id`).
    pub name: String,
    /// The value with continuation lines unfolded and outer whitespace trimmed.
    pub value: String,
    /// The whole field in the message bytes: name, value, continuation lines, line ending.
    pub span: Range<usize>,
    /// The name as written.
    pub raw_name: Range<usize>,
}

#[derive(Debug, Clone)]
pub struct Message {
    bytes: Vec<u8>,
    pub start: StartLine,
    /// The start line, with its line ending.
    pub start_span: Range<usize>,
    pub headers: Vec<Header>,
    /// The empty line that ends the headers.
    pub separator: Range<usize>,
    pub body: Range<usize>,
}

/// Why bytes are not a SIP message (answered with 400 when the message can be answered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Compact header names (RFC 3261 7.3.3 and later RFCs) and the full names they stand for.
const COMPACT: &[(&str, &str)] = &[
    ("a", "accept-contact"),
    ("b", "referred-by"),
    ("c", "content-type"),
    ("d", "request-disposition"),
    ("e", "content-encoding"),
    ("f", "from"),
    ("i", "call-id"),
    ("j", "reject-contact"),
    ("k", "supported"),
    ("l", "content-length"),
    ("m", "contact"),
    ("n", "identity-info"),
    ("o", "event"),
    ("r", "refer-to"),
    ("s", "subject"),
    ("t", "to"),
    ("u", "allow-events"),
    ("v", "via"),
    ("x", "session-expires"),
    ("y", "identity"),
];

/// The compact form of a header name (full and lower-case), if it has one.
pub fn compact_form(name: &str) -> Option<&'static str> {
    COMPACT
        .iter()
        .find(|(_, full)| *full == name)
        .map(|(short, _)| *short)
}

/// The canonical (full, lower-case) form of a header name.
pub fn canonical_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    COMPACT
        .iter()
        .find(|(short, _)| *short == lower)
        .map_or(lower, |(_, full)| (*full).to_owned())
}

/// Lines of the header section: (start, end of content, end including the line ending).
fn lines(bytes: &[u8], from: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let mut at = from;
    std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let start = at;
        let (content_end, next) = match bytes[at..].iter().position(|&b| b == b'\n') {
            Some(lf) => {
                let lf = at + lf;
                let content_end = if lf > start && bytes[lf - 1] == b'\r' {
                    lf - 1
                } else {
                    lf
                };
                (content_end, lf + 1)
            }
            None => (bytes.len(), bytes.len()),
        };
        at = next;
        Some((start, content_end, next))
    })
}

fn text(bytes: &[u8], what: &str) -> Result<String, ParseError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ParseError(format!("{what} is not UTF-8")))
}

fn start_line(line: &str) -> Result<StartLine, ParseError> {
    if let Some(rest) = line.strip_prefix("SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase (the phrase may be empty).
        let mut parts = rest.splitn(3, ' ');
        let version = format!("SIP/{}", parts.next().unwrap_or_default());
        let code = parts.next().unwrap_or_default();
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError(format!("bad status code {code:?}")));
        }
        let code: u16 = code.parse().expect("three digits");
        if !(100..=699).contains(&code) {
            return Err(ParseError(format!("status code {code} out of range")));
        }
        return Ok(StartLine::Response {
            version,
            code,
            reason: parts.next().unwrap_or_default().to_owned(),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version, single spaces, nothing around.
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, uri, version] = parts[..] else {
        return Err(ParseError(
            "the request line must be METHOD SP Request-URI SP SIP-Version".into(),
        ));
    };
    if !is_token(method) {
        return Err(ParseError(format!("bad method {method:?}")));
    }
    if uri.is_empty() || uri.bytes().any(|b| is_ws(b) || b.is_ascii_control()) {
        return Err(ParseError("bad Request-URI".into()));
    }
    if !version.starts_with("SIP/") {
        return Err(ParseError(format!("bad SIP version {version:?}")));
    }
    Ok(StartLine::Request {
        method: method.to_owned(),
        uri: uri.to_owned(),
        version: version.to_owned(),
    })
}

impl Message {
    /// Parses one complete message (as framed by `framing`): start line, headers, the empty
    /// line and the body (everything after it).
    pub fn parse(bytes: Vec<u8>) -> Result<Self, ParseError> {
        let mut lines = lines(&bytes, 0).peekable();
        let (s, e, start_end) = lines
            .next()
            .ok_or_else(|| ParseError("empty message".into()))?;
        let start = start_line(&text(&bytes[s..e], "the start line")?)?;
        let mut headers: Vec<Header> = Vec::new();
        let mut separator = None;
        while let Some((s, e, next)) = lines.next() {
            if s == e {
                separator = Some(s..next);
                break;
            }
            if is_ws(bytes[s]) {
                return Err(ParseError("a continuation line without a header".into()));
            }
            // Folded continuation lines belong to this field.
            let mut value = text(&bytes[s..e], "a header")?;
            let mut end = next;
            while let Some(&(cs, ce, cnext)) = lines.peek() {
                if cs == ce || !is_ws(bytes[cs]) {
                    break;
                }
                value.push(' ');
                value.push_str(trim_ws(&text(&bytes[cs..ce], "a header")?));
                end = cnext;
                lines.next();
            }
            let colon = value
                .find(':')
                .ok_or_else(|| ParseError(format!("header line without a colon: {value:?}")))?;
            let raw_name = trim_ws(&value[..colon]);
            if !is_token(raw_name) {
                return Err(ParseError(format!("bad header name {raw_name:?}")));
            }
            headers.push(Header {
                name: canonical_name(raw_name),
                value: trim_ws(&value[colon + 1..]).to_owned(),
                span: s..end,
                raw_name: s..s + raw_name.len(),
            });
        }
        let separator =
            separator.ok_or_else(|| ParseError("no empty line after the headers".into()))?;
        let body = separator.end..bytes.len();
        drop(lines);
        Ok(Self {
            start,
            start_span: 0..start_end,
            headers,
            separator,
            body,
            bytes,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn body(&self) -> &[u8] {
        &self.bytes[self.body.clone()]
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The method of a request, or of the CSeq of a response.
    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => self
                .header("cseq")
                .and_then(|h| h.value.split_whitespace().nth(1)),
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The first header of that (canonical) name.
    /// The first header of a name given in its full form, in any case (`"User-Agent"` finds
    /// `user-agent:`; compact forms are canonical already, so `"Call-ID"` finds `i:`).
    pub fn header(&self, name: &str) -> Option<&Header> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
    }

    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Header> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.header(name).map(|h| h.value.as_str())
    }

    /// Whether the body is an SDP offer or answer.
    pub fn has_sdp(&self) -> bool {
        !self.body().is_empty()
            && self
                .value("content-type")
                .is_some_and(|t| t.to_ascii_lowercase().starts_with("application/sdp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_folding_compact_names_and_odd_spacing() {
        let raw =
            b"INVITE sip:a@b SIP/2.0\r\nTO :\r\n sip:x@y ;  tag = 1\r\ni: abc\r\nl: 3\r\n\r\nxyz";
        let m = Message::parse(raw.to_vec()).unwrap();
        assert_eq!(m.value("to"), Some("sip:x@y ;  tag = 1"));
        assert_eq!(m.value("call-id"), Some("abc"));
        assert_eq!(
            m.value("Call-ID"),
            Some("abc"),
            "full names match in any case"
        );
        assert_eq!(m.body(), b"xyz");
        assert_eq!(
            &m.bytes()[m.headers[0].span.clone()],
            b"TO :\r\n sip:x@y ;  tag = 1\r\n"
        );
        assert_eq!(&m.bytes()[m.headers[0].raw_name.clone()], b"TO");
    }

    #[test]
    fn start_lines() {
        let response = Message::parse(b"SIP/2.0 100 \r\nl: 0\r\n\r\n".to_vec()).unwrap();
        assert_eq!(response.status(), Some(100));
        for bad in [
            "INVITE  sip:a@b SIP/2.0",
            "INVITE sip:a@b SIP/2.0  ",
            "INVITE <sip:a@b> x SIP/2.0",
            "SIP/2.0 1000 Big",
            "SIP/2.0 099 Small",
        ] {
            let raw = format!("{bad}\r\nl: 0\r\n\r\n");
            assert!(Message::parse(raw.into_bytes()).is_err(), "{bad}");
        }
    }
}
