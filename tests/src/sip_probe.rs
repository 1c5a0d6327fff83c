//! Hand-made SIP requests for what SIPp's scenarios do not cover: send one datagram from a lab
//! namespace and collect what comes back.
use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use crate::netns::Netns;

/// An INVITE with a small SDP offer, from `local` to `target`.
pub fn invite(local: SocketAddr, target: SocketAddr, call_id: &str) -> Vec<u8> {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8\r\n",
        ip = local.ip()
    );
    format!(
        "INVITE sip:probe@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=p1\r\nTo: <sip:probe@{target}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:probe@{local}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

/// An out-of-dialog request without a body (MESSAGE, REGISTER, ...) for a user behind `target`.
pub fn request(method: &str, local: SocketAddr, target: SocketAddr, call_id: &str) -> Vec<u8> {
    format!(
        "{method} sip:probe@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=p1\r\nTo: <sip:probe@{target}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContact: <sip:probe@{local}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// An OPTIONS to the SBC itself (which answers it), with a User-Agent.
pub fn options(local: SocketAddr, target: SocketAddr, call_id: &str, user_agent: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=p1\r\nTo: <sip:{target}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nUser-Agent: {user_agent}\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Sends `request` from `local` in `ns` and returns every datagram received within 3 s (or
/// until a final response arrives).
pub fn send(
    ns: &Netns,
    local: SocketAddr,
    target: SocketAddr,
    request: &[u8],
) -> anyhow::Result<Vec<String>> {
    send_waiting(ns, local, target, request, Duration::from_secs(3))
}

/// `send`, waiting at most `wait` for answers.
pub fn send_waiting(
    ns: &Netns,
    local: SocketAddr,
    target: SocketAddr,
    request: &[u8],
    wait: Duration,
) -> anyhow::Result<Vec<String>> {
    let request = request.to_vec();
    ns.spawn(move || {
        let socket = UdpSocket::bind(local)?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        socket.send_to(&request, target)?;
        let mut answers = Vec::new();
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 65_536];
        while Instant::now() < deadline {
            if let Ok((len, _)) = socket.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                let is_final = text.starts_with("SIP/2.0 ") && !text.starts_with("SIP/2.0 1");
                answers.push(text);
                if is_final {
                    break;
                }
            }
        }
        Ok(answers)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?
}

/// Sends `request` over a new TCP connection from `ns` and returns the status codes of what
/// comes back within 1.5 s (or until a final response).
pub fn send_tcp(ns: &Netns, target: SocketAddr, request: &[u8]) -> anyhow::Result<Vec<u16>> {
    use std::io::{Read as _, Write as _};
    let request = request.to_vec();
    ns.spawn(move || {
        let mut stream = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        stream.write_all(&request)?;
        let mut received = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(1500);
        let mut buf = [0u8; 65_536];
        while Instant::now() < deadline {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(len) => received.extend_from_slice(&buf[..len]),
                Err(_) => {}
            }
            if status_codes(&received).iter().any(|&code| code >= 200) {
                break;
            }
        }
        Ok(status_codes(&received))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?
}

/// The status codes of the responses in a byte stream.
fn status_codes(bytes: &[u8]) -> Vec<u16> {
    String::from_utf8_lossy(bytes)
        .split("SIP/2.0 ")
        .skip(1)
        .filter_map(|rest| rest.get(..3)?.parse().ok())
        .collect()
}
