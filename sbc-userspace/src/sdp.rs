//! SDP (RFC 4566) as far as media anchoring needs it: read where each stream's media goes, and
//! rewrite the addresses and ports to the relay's, leaving everything else untouched.
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpError(pub String);

impl std::fmt::Display for SdpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad SDP: {}", self.0)
    }
}

/// One `m=` section as offered or answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub media: String,
    /// 0: the stream is rejected or disabled.
    pub port: u16,
    /// The connection address in force for it (media-level `c=`, else session-level).
    pub address: Option<IpAddr>,
    pub rtcp_mux: bool,
    /// The port of its `a=rtcp:` attribute (RFC 3605); RTCP is on port + 1 without one.
    pub rtcp_port: Option<u16>,
    /// Its `a=sendrecv|sendonly|recvonly|inactive` (media-level, else session-level).
    pub direction: Direction,
}

/// Which way media flows for the party whose SDP it is (RFC 3264 section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn parse(attribute: &str) -> Option<Self> {
        Some(match attribute {
            "a=sendrecv" => Self::SendRecv,
            "a=sendonly" => Self::SendOnly,
            "a=recvonly" => Self::RecvOnly,
            "a=inactive" => Self::Inactive,
            _ => return None,
        })
    }
}

impl Stream {
    /// Whether this party will send media on the stream.
    pub fn sends(&self) -> bool {
        self.port != 0 && matches!(self.direction, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether this party wants media on the stream (not rejected, not on hold either way).
    pub fn receives(&self) -> bool {
        self.port != 0
            && !self.on_hold()
            && matches!(self.direction, Direction::SendRecv | Direction::RecvOnly)
    }

    /// On hold the RFC 2543 way (`c=0.0.0.0`): no address to send to.
    pub fn on_hold(&self) -> bool {
        self.address.is_some_and(|a| a.is_unspecified())
    }

    /// Where the peer receives RTP, if this stream is active and has an address.
    pub fn rtp_peer(&self) -> Option<std::net::SocketAddr> {
        match self.address {
            Some(address) if self.port != 0 && !address.is_unspecified() => {
                Some(std::net::SocketAddr::new(address, self.port))
            }
            _ => None,
        }
    }
}

/// Where the relay receives one stream, written into the SDP in place of the peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub rtp_port: u16,
    pub rtcp_port: Option<u16>,
}

/// Attributes that describe the peer's own transport candidates: with media anchored they would
/// steer the other side around the relay, so they are removed.
const ICE_ATTRIBUTES: &[&str] = &[
    "candidate",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "remote-candidates",
    "end-of-candidates",
];

/// Lines with their own endings, so a rewrite keeps the sender's line style.
fn lines(sdp: &str) -> impl Iterator<Item = (&str, &str)> {
    sdp.split_inclusive('\n').map(|line| {
        let content = line.trim_end_matches(['\r', '\n']);
        (content, &line[content.len()..])
    })
}

fn connection(value: &str) -> Result<IpAddr, SdpError> {
    // c=IN IP4 192.0.2.1 (a multicast TTL suffix is ignored)
    let mut words = value.split_whitespace();
    let (Some("IN"), Some(_family), Some(address)) = (words.next(), words.next(), words.next())
    else {
        return Err(SdpError(format!("bad connection line c={value}")));
    };
    let address = address.split('/').next().unwrap_or(address);
    // RFC 4566 writes an IPv6 address bare; some agents (SIPp's built-in scenarios among
    // them) bracket it as in a SIP URI. Read both: the rewrite writes the anchor bare.
    let bare = address
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(address);
    let address: IpAddr = bare
        .parse()
        .map_err(|_| SdpError(format!("bad connection address {address:?}")))?;
    // An IPv4-mapped IPv6 address (RFC 5118 4.9) is the IPv4 host it maps.
    Ok(match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    })
}

fn media_port(value: &str) -> Result<(String, u16), SdpError> {
    let mut words = value.split_whitespace();
    let (Some(media), Some(port)) = (words.next(), words.next()) else {
        return Err(SdpError(format!("bad media line m={value}")));
    };
    let port = port.split('/').next().unwrap_or(port);
    let port = port
        .parse()
        .map_err(|_| SdpError(format!("bad media port {port:?}")))?;
    Ok((media.to_owned(), port))
}

fn text(sdp: &[u8]) -> Result<&str, SdpError> {
    std::str::from_utf8(sdp).map_err(|_| SdpError("not UTF-8".into()))
}

/// The streams of an SDP body, in `m=` order.
pub fn streams(sdp: &[u8]) -> Result<Vec<Stream>, SdpError> {
    let mut session_address = None;
    let mut session_direction = Direction::default();
    let mut streams: Vec<Stream> = Vec::new();
    for (line, _) in lines(text(sdp)?) {
        if let Some(value) = line.strip_prefix("m=") {
            let (media, port) = media_port(value)?;
            streams.push(Stream {
                media,
                port,
                address: session_address,
                rtcp_mux: false,
                rtcp_port: None,
                direction: session_direction,
            });
        } else if let Some(direction) = Direction::parse(line) {
            match streams.last_mut() {
                Some(stream) => stream.direction = direction,
                None => session_direction = direction,
            }
        } else if let Some(value) = line.strip_prefix("c=") {
            let address = connection(value)?;
            match streams.last_mut() {
                Some(stream) => stream.address = Some(address),
                None => session_address = Some(address),
            }
        } else if line == "a=rtcp-mux"
            && let Some(stream) = streams.last_mut()
        {
            stream.rtcp_mux = true;
        } else if let Some(value) = line.strip_prefix("a=rtcp:")
            && let Some(stream) = streams.last_mut()
        {
            // a=rtcp:53020 [IN IP4 192.0.2.1]: the port is all latching needs.
            let port = value.split_whitespace().next().unwrap_or_default();
            stream.rtcp_port = Some(
                port.parse()
                    .map_err(|_| SdpError(format!("bad RTCP port {port:?}")))?,
            );
        }
    }
    Ok(streams)
}

fn family(address: IpAddr) -> &'static str {
    if address.is_ipv4() { "IP4" } else { "IP6" }
}

/// An origin line naming `address` as its host, the sender's user name, session id and
/// version kept (RFC 4566 5.2); `None` for one not of that form, which stays as it was.
fn origin(value: &str, address: IpAddr) -> Option<String> {
    let fields: Vec<&str> = value.split(' ').collect();
    let [user, session, version, "IN", _, _] = fields[..] else {
        return None;
    };
    Some(format!(
        "o={user} {session} {version} IN {} {address}",
        family(address)
    ))
}

/// The SDP with every active stream pointed at its anchor on `address`: `c=` lines (except
/// `0.0.0.0` holds), `m=` ports and `a=rtcp`; the origin (`o=`) names `address` too, once any
/// stream is anchored (the sender's host is none of the receiver's business); ICE attributes
/// removed; all else as it was.
/// `anchors[i]` belongs to the i-th `m=` line (`None`: leave that stream alone).
pub fn rewrite(
    sdp: &[u8],
    address: IpAddr,
    anchors: &[Option<Anchor>],
) -> Result<Vec<u8>, SdpError> {
    let mut out = String::with_capacity(sdp.len() + 64);
    let mut media_index: Option<usize> = None;
    let anchored = anchors.iter().any(Option::is_some);
    for (line, ending) in lines(text(sdp)?) {
        let anchor = media_index.and_then(|i| anchors.get(i).copied().flatten());
        let rewritten = if let Some(value) = line.strip_prefix("o=") {
            anchored.then(|| origin(value, address)).flatten()
        } else if let Some(value) = line.strip_prefix("m=") {
            let index = media_index.map_or(0, |i| i + 1);
            media_index = Some(index);
            let (_, port) = media_port(value)?;
            match anchors.get(index).copied().flatten() {
                Some(anchor) if port != 0 => {
                    let mut words: Vec<String> = value.split(' ').map(str::to_owned).collect();
                    words[1] = anchor.rtp_port.to_string();
                    Some(format!("m={}", words.join(" ")))
                }
                _ => None,
            }
        } else if let Some(value) = line.strip_prefix("c=") {
            let held = connection(value)?.is_unspecified();
            let anchored = media_index.is_none() || anchor.is_some();
            (anchored && !held).then(|| format!("c=IN {} {address}", family(address)))
        } else if let Some(value) = line.strip_prefix("a=rtcp:") {
            anchor.map(|anchor| {
                let port = anchor.rtcp_port.unwrap_or(anchor.rtp_port);
                if value.contains(' ') {
                    format!("a=rtcp:{port} IN {} {address}", family(address))
                } else {
                    format!("a=rtcp:{port}")
                }
            })
        } else if let Some(attribute) = line.strip_prefix("a=") {
            let name = attribute.split(':').next().unwrap_or(attribute);
            if anchor.is_some() && ICE_ATTRIBUTES.contains(&name) {
                continue;
            }
            None
        } else {
            None
        };
        out.push_str(rewritten.as_deref().unwrap_or(line));
        out.push_str(ending);
    }
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=alice 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
m=audio 49170 RTP/AVP 0 8\r\na=rtcp:49171\r\na=candidate:1 1 UDP 1 192.0.2.10 49170 typ host\r\na=ice-ufrag:x\r\na=sendrecv\r\n\
m=video 0 RTP/AVP 31\r\n\
m=video 51372 RTP/AVP 99\r\nc=IN IP4 192.0.2.11\r\na=rtcp-mux\r\n";

    #[test]
    fn reads_streams_with_session_and_media_addresses() {
        let s = streams(OFFER.as_bytes()).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].rtp_peer(), Some("192.0.2.10:49170".parse().unwrap()));
        assert_eq!(s[1].rtp_peer(), None);
        assert_eq!(s[2].rtp_peer(), Some("192.0.2.11:51372".parse().unwrap()));
        assert!(s[2].rtcp_mux && !s[0].rtcp_mux);
        assert_eq!((s[0].rtcp_port, s[2].rtcp_port), (Some(49171), None));
    }

    #[test]
    fn reads_an_ipv6_connection_address_bare_or_bracketed() {
        for written in ["2001:db8::5", "[2001:db8::5]"] {
            let sdp = format!("v=0\nc=IN IP6 {written}\nm=audio 4000 RTP/AVP 0\n");
            let s = streams(sdp.as_bytes()).unwrap();
            assert_eq!(s[0].rtp_peer(), Some("[2001:db8::5]:4000".parse().unwrap()));
        }
        assert!(streams(b"v=0\nc=IN IP6 [2001:db8::5\nm=audio 4000 RTP/AVP 0\n").is_err());
    }

    #[test]
    fn reads_directions_media_level_over_session_level() {
        let sdp = "v=0\nc=IN IP4 192.0.2.1\na=sendonly\nm=audio 4000 RTP/AVP 0\n\
                   m=audio 4002 RTP/AVP 0\na=inactive\nm=audio 4004 RTP/AVP 0\na=sendrecv\n\
                   m=audio 4006 RTP/AVP 0\nc=IN IP4 0.0.0.0\n";
        let s = streams(sdp.as_bytes()).unwrap();
        let flags: Vec<(bool, bool)> = s.iter().map(|s| (s.sends(), s.receives())).collect();
        assert_eq!(
            flags,
            [(true, false), (false, false), (true, true), (true, false)]
        );
    }

    #[test]
    fn rewrites_addresses_ports_rtcp_and_drops_ice() {
        let anchors = [
            Some(Anchor {
                rtp_port: 20000,
                rtcp_port: Some(20001),
            }),
            None,
            Some(Anchor {
                rtp_port: 20002,
                rtcp_port: None,
            }),
        ];
        let out = rewrite(OFFER.as_bytes(), "198.18.2.1".parse().unwrap(), &anchors).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "v=0\r\no=alice 1 1 IN IP4 198.18.2.1\r\ns=-\r\nc=IN IP4 198.18.2.1\r\nt=0 0\r\n\
m=audio 20000 RTP/AVP 0 8\r\na=rtcp:20001\r\na=sendrecv\r\n\
m=video 0 RTP/AVP 31\r\n\
m=video 20002 RTP/AVP 99\r\nc=IN IP4 198.18.2.1\r\na=rtcp-mux\r\n"
        );
    }

    #[test]
    fn hold_keeps_the_null_address() {
        let hold = "v=0\nc=IN IP4 0.0.0.0\nm=audio 49170 RTP/AVP 0\na=sendonly\n";
        assert!(streams(hold.as_bytes()).unwrap()[0].on_hold());
        let anchors = [Some(Anchor {
            rtp_port: 20000,
            rtcp_port: Some(20001),
        })];
        let out = rewrite(hold.as_bytes(), "198.18.2.1".parse().unwrap(), &anchors).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "v=0\nc=IN IP4 0.0.0.0\nm=audio 20000 RTP/AVP 0\na=sendonly\n"
        );
    }

    /// The origin names the anchor's host, in its family, once a stream is anchored; an
    /// origin of another form, or an SDP with nothing anchored, is left alone.
    #[test]
    fn the_origin_names_the_anchor() {
        let anchors = [Some(Anchor {
            rtp_port: 20000,
            rtcp_port: None,
        })];
        let rewritten = |sdp: &str, anchors: &[Option<Anchor>]| {
            let out = rewrite(sdp.as_bytes(), "203.0.113.10".parse().unwrap(), anchors);
            String::from_utf8(out.unwrap()).unwrap()
        };
        let from_v6 =
            "v=0\no=- 7 8 IN IP6 2001:db8::5\nc=IN IP6 2001:db8::5\nm=audio 4000 RTP/AVP 0\n";
        assert!(
            rewritten(from_v6, &anchors).starts_with("v=0\no=- 7 8 IN IP4 203.0.113.10\n"),
            "{}",
            rewritten(from_v6, &anchors)
        );
        let odd = "v=0\no=just-a-name\nc=IN IP4 10.0.0.10\nm=audio 4000 RTP/AVP 0\n";
        assert!(rewritten(odd, &anchors).starts_with("v=0\no=just-a-name\n"));
        let plain = "v=0\no=- 7 8 IN IP4 10.0.0.10\nc=IN IP4 10.0.0.10\nm=audio 4000 RTP/AVP 0\n";
        assert!(rewritten(plain, &[None]).starts_with("v=0\no=- 7 8 IN IP4 10.0.0.10\n"));
    }

    /// SRTP is relayed, not terminated: SDES keys and DTLS fingerprints reach the far end as
    /// they were written (the packets the relay forwards are theirs to decrypt).
    #[test]
    fn srtp_keys_and_dtls_fingerprints_pass_through() {
        let keys = [
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32",
            "a=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3F:57:F1:D0:26:1F:27:8B:0A:4F:33:5C",
            "a=setup:actpass",
        ];
        let offer = format!(
            "v=0\no=- 1 1 IN IP4 10.0.0.10\nc=IN IP4 10.0.0.10\nm=audio 4000 RTP/SAVP 0\n{}\n",
            keys.join("\n")
        );
        let anchors = [Some(Anchor {
            rtp_port: 20000,
            rtcp_port: None,
        })];
        let out = rewrite(offer.as_bytes(), "203.0.113.10".parse().unwrap(), &anchors).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("m=audio 20000 RTP/SAVP 0\n"), "{out}");
        for key in keys {
            assert!(out.contains(&format!("{key}\n")), "{key} lost:\n{out}");
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(streams(b"v=0\r\nm=audio x RTP/AVP 0\r\n").is_err());
        assert!(streams(b"v=0\r\nc=IN IP4 not-an-ip\r\n").is_err());
    }
}
