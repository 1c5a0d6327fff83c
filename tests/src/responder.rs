//! A hand-made SIP backend for what SIPp cannot be told (ignore MESSAGE, say 404 for some
//! users): it answers each request as `answer` says (none: silence) and counts the requests it
//! got by method.
use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::netns::Netns;

/// An answer: its status, header lines to add (`Server: ...`) and a body (with its
/// `Content-Type` among the headers; empty: none).
pub struct Reply {
    pub code: u16,
    pub headers: Vec<String>,
    pub body: String,
}

impl From<u16> for Reply {
    fn from(code: u16) -> Self {
        Self {
            code,
            headers: Vec::new(),
            body: String::new(),
        }
    }
}

impl Reply {
    /// A 200 that answers an INVITE from `contact`, with an SDP answer for media at `media`.
    pub fn answer_call(contact: SocketAddr, media: SocketAddr) -> Self {
        let ip = media.ip();
        Self {
            code: 200,
            headers: vec![
                format!("Contact: <sip:callee@{contact}>"),
                "Content-Type: application/sdp".to_owned(),
            ],
            body: format!(
                "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
                 m=audio {} RTP/AVP 8\r\n",
                media.port()
            ),
        }
    }
}

/// A request's method.
pub fn method(request: &str) -> &str {
    request.split(' ').next().unwrap_or_default()
}

/// The user part of a request's To URI.
pub fn to_user(request: &str) -> &str {
    request
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("to:"))
        .and_then(|l| l.split("sip:").nth(1))
        .and_then(|uri| uri.split('@').next())
        .unwrap_or_default()
}

pub struct Responder {
    stop: Arc<AtomicBool>,
    received: Arc<Mutex<BTreeMap<String, u64>>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Responder {
    pub fn start(
        ns: &Netns,
        address: SocketAddr,
        answer: impl Fn(&str) -> Option<Reply> + Send + 'static,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(BTreeMap::new()));
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let thread = {
            let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
            ns.spawn(move || {
                let socket = UdpSocket::bind(address);
                let _ = bound_tx.send(socket.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                let socket = socket?;
                socket.set_read_timeout(Some(Duration::from_millis(100)))?;
                let mut buf = [0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((len, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let request = String::from_utf8_lossy(&buf[..len]).into_owned();
                    let Some(method) = request.split(' ').next().filter(|m| *m != "SIP/2.0") else {
                        continue;
                    };
                    *received
                        .lock()
                        .unwrap()
                        .entry(method.to_owned())
                        .or_default() += 1;
                    if let Some(reply) = answer(&request) {
                        socket.send_to(&response(&request, &reply), from)?;
                    }
                }
                Ok(())
            })
        };
        bound_rx
            .recv()?
            .map_err(|e| anyhow::anyhow!("binding {address}: {e}"))?;
        Ok(Self {
            stop,
            received,
            thread: Some(thread),
        })
    }

    /// How many requests of `method` arrived.
    pub fn received(&self, method: &str) -> u64 {
        self.received
            .lock()
            .unwrap()
            .get(method)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A response to `request`: its Via, From, To (tagged), Call-ID and CSeq copied.
fn response(request: &str, reply: &Reply) -> Vec<u8> {
    let mut out = format!("SIP/2.0 {} Test\r\n", reply.code);
    for line in request.lines().skip(1) {
        if line.is_empty() {
            break;
        }
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            "to" | "t" if !line.contains("tag=") => {
                out.push_str(line);
                out.push_str(";tag=responder\r\n");
            }
            "to" | "t" => {
                out.push_str(line);
                out.push_str("\r\n");
            }
            _ => {}
        }
    }
    for header in &reply.headers {
        out.push_str(header);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
    out.push_str(&reply.body);
    out.into_bytes()
}
