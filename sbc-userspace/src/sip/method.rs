//! SIP methods (RFC 3261 7.1 and the extensions a proxy meets), as a type rather than text.
//! Method names are case-sensitive: `invite` is an extension method, not INVITE.
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Prack,
    Subscribe,
    Notify,
    Publish,
    Info,
    Refer,
    Message,
    Update,
    /// Any other token.
    Other(String),
}

/// The methods known by name, with their names.
const KNOWN: [(Method, &str); 14] = [
    (Method::Invite, "INVITE"),
    (Method::Ack, "ACK"),
    (Method::Bye, "BYE"),
    (Method::Cancel, "CANCEL"),
    (Method::Options, "OPTIONS"),
    (Method::Register, "REGISTER"),
    (Method::Prack, "PRACK"),
    (Method::Subscribe, "SUBSCRIBE"),
    (Method::Notify, "NOTIFY"),
    (Method::Publish, "PUBLISH"),
    (Method::Info, "INFO"),
    (Method::Refer, "REFER"),
    (Method::Message, "MESSAGE"),
    (Method::Update, "UPDATE"),
];

impl Method {
    pub fn parse(token: &str) -> Self {
        KNOWN
            .iter()
            .find(|(_, name)| *name == token)
            .map_or_else(|| Method::Other(token.to_owned()), |(m, _)| m.clone())
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Other(token) => token,
            known => known_name(known),
        }
    }

    /// A bounded label for metrics: the name of a known method, else `other`, so a peer
    /// cannot grow the label set.
    pub fn label(&self) -> &'static str {
        Self::label_of(self.as_str())
    }

    /// `label` of a method as text, in any case (as peers write them).
    pub fn label_of(token: &str) -> &'static str {
        KNOWN
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(token))
            .map_or("other", |(_, name)| name)
    }

    /// Methods that create a dialog: a proxy that stays in the path record-routes them.
    pub fn creates_dialog(&self) -> bool {
        matches!(
            self,
            Method::Invite | Method::Subscribe | Method::Refer | Method::Notify
        )
    }
}

fn known_name(method: &Method) -> &'static str {
    KNOWN
        .iter()
        .find(|(m, _)| m == method)
        .map_or("other", |(_, name)| name)
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_read_and_write_back_case_sensitively() {
        for (method, name) in &KNOWN {
            assert_eq!(&Method::parse(name), method);
            assert_eq!(method.as_str(), *name);
        }
        assert_eq!(Method::parse("invite"), Method::Other("invite".into()));
        assert_eq!(Method::parse("FOO").to_string(), "FOO");
        assert_eq!(Method::label_of("invite"), "INVITE");
        assert_eq!(Method::parse("FOO").label(), "other");
        assert_eq!(Method::Other("invite".into()).label(), "INVITE");
    }
}
