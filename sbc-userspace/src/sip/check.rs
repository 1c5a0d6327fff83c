//! What a proxy must verify before it acts on a message (RFC 3261 16.3 and 8.2), with the
//! status code for each failure: 400 with a reason saying what is wrong, 505, 416, 420.
//! Responses that fail are dropped (a proxy cannot answer a response).
use super::{
    address::{self, Address},
    message::{Message, StartLine},
    method::Method,
    uri::{self, Uri},
    via::{self, Via},
};

/// A request that must be refused, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: String,
    /// For 420: the option tags we do not support (the Unsupported header).
    pub unsupported: Option<String>,
}

impl Rejection {
    fn bad(reason: impl Into<String>) -> Self {
        Self {
            status: 400,
            reason: reason.into(),
            unsupported: None,
        }
    }
}

/// The parts of a request the proxy works with, checked.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub vias: Vec<Via>,
    pub from: Address,
    pub to: Address,
    pub call_id: String,
    pub cseq: u32,
    pub max_forwards: Option<u8>,
    pub routes: Vec<Address>,
}

impl Request {
    /// Sent within a dialog (the To header carries a tag).
    pub fn in_dialog(&self) -> bool {
        self.to.tag().is_some()
    }
}

/// The parts of a response the proxy works with, checked.
#[derive(Debug, Clone)]
pub struct Response {
    pub code: u16,
    pub vias: Vec<Via>,
    pub call_id: String,
    pub cseq: u32,
    pub cseq_method: Method,
}

/// Headers that may appear only once.
const SINGLE: &[&str] = &[
    "from",
    "to",
    "call-id",
    "cseq",
    "max-forwards",
    "content-type",
];
/// Headers every request and response carries.
const REQUIRED: &[&str] = &["via", "from", "to", "call-id", "cseq"];

/// The largest CSeq number (RFC 3261 8.1.1.5: below 2**31).
const MAX_CSEQ: u64 = (1 << 31) - 1;

fn header_rules(message: &Message) -> Result<(), String> {
    for name in REQUIRED {
        if message.header(name).is_none() {
            return Err(format!("missing {name} header"));
        }
    }
    for name in SINGLE {
        if message.headers_named(name).count() > 1 {
            return Err(format!("more than one {name} header"));
        }
    }
    Ok(())
}

fn cseq(message: &Message) -> Result<(u32, Method), String> {
    let value = message.value("cseq").unwrap_or_default();
    let mut words = value.split_whitespace();
    let (Some(number), Some(method), None) = (words.next(), words.next(), words.next()) else {
        return Err(format!("bad CSeq {value:?}"));
    };
    let number: u64 = number
        .parse()
        .ok()
        .filter(|n| *n <= MAX_CSEQ)
        .ok_or_else(|| format!("CSeq number {number} is not below 2^31"))?;
    Ok((number as u32, Method::parse(method)))
}

fn vias(message: &Message) -> Result<Vec<Via>, String> {
    let mut all = Vec::new();
    for header in message.headers_named("via") {
        all.extend(via::parse_list(&header.value)?);
    }
    Ok(all)
}

fn single_address(message: &Message, name: &str) -> Result<Address, String> {
    address::parse(message.value(name).unwrap_or_default()).map_err(|e| format!("bad {name}: {e}"))
}

fn addresses(message: &Message, name: &str) -> Result<Vec<Address>, String> {
    let mut all = Vec::new();
    for header in message.headers_named(name) {
        if name == "contact" && header.value == "*" {
            continue;
        }
        all.extend(address::parse_list(&header.value).map_err(|e| format!("bad {name}: {e}"))?);
    }
    Ok(all)
}

/// Checks a request; `supported` are the option tags this proxy understands (Proxy-Require).
pub fn request(message: &Message, supported: &[&str]) -> Result<Request, Rejection> {
    let StartLine::Request {
        method,
        uri,
        version,
    } = &message.start
    else {
        return Err(Rejection::bad("not a request"));
    };
    if version != "SIP/2.0" {
        return Err(Rejection {
            status: 505,
            reason: "Version Not Supported".into(),
            unsupported: None,
        });
    }
    header_rules(message).map_err(Rejection::bad)?;
    let uri = uri::parse(uri).map_err(|e| Rejection::bad(format!("bad Request-URI: {e}")))?;
    if uri.as_sip().is_some_and(|sip| sip.headers.is_some()) {
        return Err(Rejection::bad("headers are not allowed in the Request-URI"));
    }
    let vias = vias(message).map_err(Rejection::bad)?;
    let (cseq, cseq_method) = cseq(message).map_err(Rejection::bad)?;
    if cseq_method.as_str() != method {
        return Err(Rejection::bad(format!(
            "CSeq method {cseq_method} does not match {method}"
        )));
    }
    let max_forwards = match message.value("max-forwards") {
        None => None,
        Some(v) => Some(
            v.parse::<u8>()
                .ok()
                .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| Rejection::bad(format!("bad Max-Forwards {v:?}")))?,
        ),
    };
    let from = single_address(message, "from").map_err(Rejection::bad)?;
    let to = single_address(message, "to").map_err(Rejection::bad)?;
    addresses(message, "contact").map_err(Rejection::bad)?;
    addresses(message, "record-route").map_err(Rejection::bad)?;
    let routes = addresses(message, "route").map_err(Rejection::bad)?;
    if uri.as_sip().is_none() {
        return Err(Rejection {
            status: 416,
            reason: "Unsupported URI Scheme".into(),
            unsupported: None,
        });
    }
    let unsupported: Vec<&str> = message
        .headers_named("proxy-require")
        .flat_map(|h| h.value.split(','))
        .map(str::trim)
        .filter(|tag| !tag.is_empty() && !supported.iter().any(|s| s.eq_ignore_ascii_case(tag)))
        .collect();
    if !unsupported.is_empty() {
        return Err(Rejection {
            status: 420,
            reason: "Bad Extension".into(),
            unsupported: Some(unsupported.join(", ")),
        });
    }
    Ok(Request {
        method: cseq_method,
        uri,
        vias,
        from,
        to,
        call_id: message.value("call-id").unwrap_or_default().to_owned(),
        cseq,
        max_forwards,
        routes,
    })
}

/// Checks a response; `Err` says why it must be dropped.
pub fn response(message: &Message) -> Result<Response, String> {
    let StartLine::Response { version, code, .. } = &message.start else {
        return Err("not a response".into());
    };
    if version != "SIP/2.0" {
        return Err(format!("unsupported version {version}"));
    }
    header_rules(message)?;
    let (cseq, cseq_method) = cseq(message)?;
    Ok(Response {
        code: *code,
        vias: vias(message)?,
        call_id: message.value("call-id").unwrap_or_default().to_owned(),
        cseq,
        cseq_method,
    })
}
