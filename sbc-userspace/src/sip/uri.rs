//! URIs: SIP and SIPS parsed (RFC 3261 19.1, with RFC 5118's IPv6 references), anything else
//! kept as scheme and opaque text.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::syntax::{Param, params};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    /// A bracketed reference that is no IPv6 address (`[2001:db8:::192.0.2.1]`): RFC 5118 4.10
    /// asks implementations to tolerate it; it is kept as written and never routed to.
    Ipv6Text(String),
}

impl Host {
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::Ipv4(v4) => Some(IpAddr::V4(*v4)),
            Self::Ipv6(v6) => Some(IpAddr::V6(*v6)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Ipv4(v4) => write!(f, "{v4}"),
            Self::Ipv6(v6) => write!(f, "[{v6}]"),
            Self::Ipv6Text(text) => write!(f, "[{text}]"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub secure: bool,
    /// User (and password) as written, escapes included.
    pub userinfo: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Vec<Param>,
    /// `?name=value&...` as written.
    pub headers: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    Sip(SipUri),
    Other { scheme: String, rest: String },
}

impl Uri {
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Self::Sip(sip) => Some(sip),
            Self::Other { .. } => None,
        }
    }
}

impl SipUri {
    pub fn param(&self, name: &str) -> Option<&Param> {
        super::syntax::param(&self.params, name)
    }
}

/// Parses `host [":" port]` (a SIP URI's hostport, or a Via's sent-by).
pub fn host_port(s: &str) -> Result<(Host, Option<u16>), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let close = rest.find(']').ok_or("unterminated IPv6 reference")?;
        let inner = &rest[..close];
        let host = match inner.parse::<Ipv6Addr>() {
            Ok(v6) => Host::Ipv6(v6),
            Err(_)
                if !inner.is_empty()
                    && inner
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') =>
            {
                Host::Ipv6Text(inner.to_owned())
            }
            Err(_) => return Err(format!("bad IPv6 reference [{inner}]")),
        };
        let after = &rest[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return Err(format!("text after the IPv6 reference: {after:?}")),
        };
        (host, port)
    } else {
        let (name, port) = match s.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (s, None),
        };
        let host = if let Ok(v4) = name.parse::<Ipv4Addr>() {
            Host::Ipv4(v4)
        } else if !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            Host::Name(name.to_ascii_lowercase())
        } else {
            return Err(format!("bad host {name:?}"));
        };
        (host, port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => Some(
            p.parse::<u16>()
                .map_err(|_| format!("port {p} out of range"))?,
        ),
        Some(p) => return Err(format!("bad port {p:?}")),
    };
    Ok((host, port))
}

fn valid_scheme(scheme: &str) -> bool {
    scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
}

pub fn parse(s: &str) -> Result<Uri, String> {
    let (scheme, rest) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} has no scheme"))?;
    if !valid_scheme(scheme) {
        return Err(format!("bad URI scheme {scheme:?}"));
    }
    if s.bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("white space inside a URI".into());
    }
    let secure = match scheme.to_ascii_lowercase().as_str() {
        "sip" => false,
        "sips" => true,
        _ => {
            return Ok(Uri::Other {
                scheme: scheme.to_owned(),
                rest: rest.to_owned(),
            });
        }
    };
    // The user part may hold `;`, `?` and `,` (RFC 4475 3.1.1.9): split at the `@` first.
    let (userinfo, rest) = match rest.split_once('@') {
        Some((user, rest)) if !user.is_empty() => (Some(user.to_owned()), rest),
        Some(_) => return Err("empty user part".into()),
        None => (None, rest),
    };
    let (rest, headers) = match rest.split_once('?') {
        Some((rest, headers)) => (rest, Some(headers.to_owned())),
        None => (rest, None),
    };
    let (hostport, uri_params) = match rest.find(';') {
        Some(semi) => (&rest[..semi], &rest[semi..]),
        None => (rest, ""),
    };
    let (host, port) = host_port(hostport)?;
    Ok(Uri::Sip(SipUri {
        secure,
        userinfo,
        host,
        port,
        params: params(uri_params)?,
        headers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        match parse(s).unwrap() {
            Uri::Sip(sip) => sip,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn user_parts_hosts_and_ports() {
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.userinfo.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(u.host, Host::Name("example.com".into()));
        let u = sip("sips:[2001:db8::10]:5070;transport=tcp");
        assert_eq!((u.secure, u.port), (true, Some(5070)));
        assert_eq!(u.host, Host::Ipv6("2001:db8::10".parse().unwrap()));
        assert_eq!(sip("sip:[2001:db8::10:5070]").port, None);
        assert_eq!(
            sip("sip:[2001:db8:::192.0.2.1]").host,
            Host::Ipv6Text("2001:db8:::192.0.2.1".into())
        );
        assert!(parse("sip:user@2001:db8::10").is_err());
        assert!(parse("sip:user@host:99999").is_err());
        assert_eq!(
            sip("sip:a@b?Route=%3Csip:c%3E").headers.as_deref(),
            Some("Route=%3Csip:c%3E")
        );
    }

    #[test]
    fn other_schemes_are_kept_opaque() {
        assert_eq!(
            parse("soap.beep://192.0.2.103:3002").unwrap(),
            Uri::Other {
                scheme: "soap.beep".into(),
                rest: "//192.0.2.103:3002".into()
            }
        );
        assert!(parse("<sip:a@b>").is_err());
    }
}
