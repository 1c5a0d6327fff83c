//! Via values (RFC 3261 20.42, with white space around the slashes and colon as RFC 4475's
//! torture messages use it, and bracketed IPv6 in `received` as RFC 5118 tolerates).
use super::{
    syntax::{Param, is_token, param, params, split_top_level, trim_ws},
    uri::{Host, host_port},
};

/// The branch prefix of RFC 3261 transaction identifiers.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Vec<Param>,
}

impl Via {
    pub fn param(&self, name: &str) -> Option<&Param> {
        param(&self.params, name)
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch").and_then(|p| p.value.as_deref())
    }

    /// An RFC 3261 branch: the magic cookie and something after it.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE))
    }
}

fn parse_one(value: &str) -> Result<Via, String> {
    let (head, rest) = match value.find(';') {
        Some(semi) => (&value[..semi], &value[semi..]),
        None => (value, ""),
    };
    // sent-protocol: name / version / transport, white space allowed around the slashes.
    let mut parts = head.splitn(3, '/');
    let (Some(name), Some(version), Some(tail)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("bad Via {value:?}"));
    };
    if !trim_ws(name).eq_ignore_ascii_case("SIP") || trim_ws(version) != "2.0" {
        return Err(format!(
            "bad Via protocol {}/{}",
            trim_ws(name),
            trim_ws(version)
        ));
    }
    let tail = trim_ws(tail);
    let split = tail
        .find([' ', '\t'])
        .ok_or_else(|| format!("Via without sent-by: {value:?}"))?;
    let transport = &tail[..split];
    if !is_token(transport) {
        return Err(format!("bad Via transport {transport:?}"));
    }
    let sent_by: String = tail[split..]
        .chars()
        .filter(|c| *c != ' ' && *c != '\t')
        .collect();
    let (host, port) = host_port(&sent_by)?;
    Ok(Via {
        transport: transport.to_ascii_uppercase(),
        host,
        port,
        params: params(rest)?,
    })
}

/// All the Via values of one header field.
pub fn parse_list(value: &str) -> Result<Vec<Via>, String> {
    split_top_level(value, b',')
        .into_iter()
        .map(|one| {
            if one.is_empty() {
                Err("empty Via value".to_owned())
            } else {
                parse_one(one)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tortuous_but_valid() {
        let v = &parse_list("SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw").unwrap()[0];
        assert_eq!(
            (v.transport.as_str(), v.branch()),
            ("UDP", Some("390skdjuw"))
        );
        assert!(!v.has_rfc3261_branch());
        let v =
            &parse_list("SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3;received=[2001:db8::9:255]")
                .unwrap()[0];
        assert!(v.has_rfc3261_branch());
        assert_eq!(
            parse_list("SIP/2.0/UDP a, SIP/2.0/TCP b:5061")
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn broken() {
        for bad in [
            "SIP/2.0/UDP 192.0.2.15;;,;,,",
            "SIP/7.0/UDP c.example.com",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP a,",
        ] {
            assert!(parse_list(bad).is_err(), "{bad}");
        }
        assert!(
            !parse_list("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK").unwrap()[0].has_rfc3261_branch()
        );
    }
}
