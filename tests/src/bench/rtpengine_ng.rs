//! A client of rtpengine's ng control protocol, speaking the commands Kamailio's rtpengine
//! module sends (ping, offer, answer), so that the benchmark sets up relay sessions in
//! rtpengine the way it sets them up in the SBC through its API. A message is a cookie, a space
//! and a bencoded dictionary; the reply carries the same cookie.
use std::{
    net::{SocketAddr, UdpSocket},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Default)]
struct Request<'a> {
    command: &'a str,
    #[serde(rename = "call-id", skip_serializing_if = "Option::is_none")]
    call_id: Option<&'a str>,
    #[serde(rename = "from-tag", skip_serializing_if = "Option::is_none")]
    from_tag: Option<&'a str>,
    #[serde(rename = "to-tag", skip_serializing_if = "Option::is_none")]
    to_tag: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sdp: Option<&'a str>,
    /// The logical interfaces of the offerer and the answerer (offer only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    direction: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    replace: Vec<&'a str>,
}

#[derive(Deserialize)]
struct Reply {
    result: String,
    sdp: Option<String>,
    #[serde(rename = "error-reason")]
    error_reason: Option<String>,
}

pub struct NgClient {
    socket: UdpSocket,
}

/// An SDP body offering PCMA on `address`, one stream, RTP and RTCP multiplexed (as the SBC's
/// relay sessions in the benchmark).
fn sdp(address: SocketAddr) -> String {
    let ip = address.ip();
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=rtcp-mux\r\n",
        address.port()
    )
}

/// The port of the first media line of an SDP body.
fn media_port(sdp: &str) -> anyhow::Result<u16> {
    sdp.lines()
        .find_map(|line| line.strip_prefix("m=audio "))
        .and_then(|rest| rest.split_whitespace().next())
        .context("no m=audio line")?
        .parse()
        .context("bad m=audio port")
}

impl NgClient {
    /// A client of the server at `server`; the socket belongs to the calling thread's network
    /// namespace.
    pub fn connect(server: SocketAddr) -> anyhow::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.connect(server)?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(Self { socket })
    }

    fn call(&mut self, request: &Request) -> anyhow::Result<Reply> {
        // rtpengine answers a cookie it has seen with its cached reply (a retransmission):
        // cookies are unique across clients and runs.
        static NEXT_COOKIE: AtomicU64 = AtomicU64::new(0);
        let cookie = format!(
            "sbc{}-{}",
            std::process::id(),
            NEXT_COOKIE.fetch_add(1, Ordering::Relaxed)
        );
        let mut message = format!("{cookie} ").into_bytes();
        message.extend(serde_bencode::to_bytes(request)?);
        self.socket.send(&message)?;
        let mut buffer = vec![0u8; 65_536];
        loop {
            let length = self
                .socket
                .recv(&mut buffer)
                .with_context(|| format!("no reply from rtpengine to {}", request.command))?;
            let reply = &buffer[..length];
            // A late reply to an earlier command has another cookie.
            if let Some(body) = reply.strip_prefix(format!("{cookie} ").as_bytes()) {
                let reply: Reply = serde_bencode::from_bytes(body)
                    .with_context(|| format!("odd reply to {}", request.command))?;
                if reply.result == "error" {
                    bail!(
                        "rtpengine refused {}: {}",
                        request.command,
                        reply.error_reason.unwrap_or_default()
                    );
                }
                return Ok(reply);
            }
        }
    }

    pub fn ping(&mut self) -> anyhow::Result<()> {
        let reply = self.call(&Request {
            command: "ping",
            ..Default::default()
        })?;
        ensure!(reply.result == "pong", "ping answered {}", reply.result);
        Ok(())
    }

    /// Sets up a call as Kamailio does for an INVITE from `caller` on the `public` interface
    /// answered by `callee` on the `private` one; returns the public port the caller's media
    /// goes to.
    pub fn relay_session(
        &mut self,
        call_id: &str,
        caller: SocketAddr,
        callee: SocketAddr,
        (public, private): (&str, &str),
    ) -> anyhow::Result<u16> {
        let replace = vec!["origin", "session-connection"];
        let offer = sdp(caller);
        self.call(&Request {
            command: "offer",
            call_id: Some(call_id),
            from_tag: Some("caller"),
            sdp: Some(&offer),
            direction: vec![public, private],
            replace: replace.clone(),
            ..Default::default()
        })?;
        let answer = sdp(callee);
        let reply = self.call(&Request {
            command: "answer",
            call_id: Some(call_id),
            from_tag: Some("caller"),
            to_tag: Some("callee"),
            sdp: Some(&answer),
            replace,
            ..Default::default()
        })?;
        media_port(&reply.sdp.context("an answer without SDP")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_bencoded_dictionaries_in_key_order() {
        let bytes = serde_bencode::to_bytes(&Request {
            command: "offer",
            call_id: Some("c1"),
            direction: vec!["pub", "priv"],
            ..Default::default()
        })
        .unwrap();
        // Bencode sorts a dictionary's keys; absent options are left out.
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "d7:call-id2:c17:command5:offer9:directionl3:pub4:privee"
        );
    }

    #[test]
    fn replies_ignore_what_the_benchmark_does_not_read() {
        let reply: Reply =
            serde_bencode::from_bytes(b"d6:result2:ok3:sdp3:v=08:warningsli1eee").unwrap();
        assert_eq!(reply.result, "ok");
        assert!(media_port(&reply.sdp.unwrap()).is_err());
        assert_eq!(
            media_port("v=0\r\nm=audio 30000 RTP/AVP 8\r\n").unwrap(),
            30000
        );
    }
}
