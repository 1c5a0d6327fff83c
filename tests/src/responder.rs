//! A hand-made SIP backend for health tests, where SIPp cannot be told what not to answer: it
//! answers each request with the status `answer` gives for its method (none: silence) and
//! counts the requests it got by method.
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

pub struct Responder {
    stop: Arc<AtomicBool>,
    received: Arc<Mutex<BTreeMap<String, u64>>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Responder {
    pub fn start(
        ns: &Netns,
        address: SocketAddr,
        answer: impl Fn(&str) -> Option<u16> + Send + 'static,
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
                    if let Some(code) = answer(method) {
                        socket.send_to(&response(&request, code), from)?;
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
fn response(request: &str, code: u16) -> Vec<u8> {
    let mut out = format!("SIP/2.0 {code} Test\r\n");
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
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}
