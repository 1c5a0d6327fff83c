//! The SIP conformance corpus (`../shared/conformance`, beside the repository) and how the sbc
//! handles each message: what the wire layer makes of it, and what the proxy then does.
//!
//! The proxy's answer follows from the wire layer's (a request it accepts is forwarded, a
//! response matching no transaction of ours is dropped, a refusal is answered) except where the
//! proxy itself decides more; those cases say so.
use std::path::PathBuf;

/// What the wire layer (`sbc::sip::inbound`) makes of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Accept,
    Refuse(u16),
    Drop,
}

/// What the proxy does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtProxy {
    /// Reaches the backend.
    Forwarded,
    /// Answered by the proxy with this status (and not forwarded).
    Answered(u16),
    /// Neither answered nor forwarded.
    Silent,
}

#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub file: &'static str,
    pub wire: Wire,
    at_proxy: Option<AtProxy>,
}

impl Case {
    const fn new(file: &'static str, wire: Wire) -> Self {
        Self {
            file,
            wire,
            at_proxy: None,
        }
    }

    const fn at_proxy(self, outcome: AtProxy) -> Self {
        Self {
            at_proxy: Some(outcome),
            ..self
        }
    }

    /// What the proxy does with this message (`bytes`, to tell responses from requests).
    pub fn proxy(&self, bytes: &[u8]) -> AtProxy {
        self.at_proxy.unwrap_or(match self.wire {
            Wire::Accept if bytes.starts_with(b"SIP/2.0") => AtProxy::Silent,
            Wire::Accept => AtProxy::Forwarded,
            Wire::Refuse(code) => AtProxy::Answered(code),
            Wire::Drop => AtProxy::Silent,
        })
    }
}

/// One folder of the corpus: where its INDEX.tsv is, where its files are, their suffix.
pub struct Set {
    pub index: &'static str,
    pub files: &'static str,
    pub suffix: &'static str,
    pub cases: &'static [Case],
}

pub fn corpus(dir: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance")
        .join(dir);
    assert!(
        path.is_dir(),
        "the conformance corpus is missing at {} (the shared/ folder beside the repository)",
        path.display()
    );
    path
}

impl Set {
    /// The bytes of a case.
    pub fn read(&self, case: &Case) -> Vec<u8> {
        std::fs::read(corpus(self.files).join(format!("{}{}", case.file, self.suffix))).unwrap()
    }

    /// Fails unless the cases cover exactly the files of the index (test.dat aside: the RFC
    /// does not describe it).
    pub fn assert_complete(&self) {
        let index = std::fs::read_to_string(corpus(self.index).join("INDEX.tsv")).unwrap();
        let mut listed: Vec<&str> = index
            .lines()
            .skip(1)
            .filter_map(|l| l.split('\t').next())
            .filter(|f| *f != "test.dat")
            .collect();
        let mut covered: Vec<&str> = self.cases.iter().map(|c| c.file).collect();
        listed.sort_unstable();
        covered.sort_unstable();
        assert_eq!(
            listed, covered,
            "the cases of {} do not match its index",
            self.index
        );
    }
}

/// RFC 4475 (3.1.1 valid, 3.1.2 invalid, 3.2-3.4 valid syntax with semantic traps).
pub const RFC4475: Set = Set {
    index: "rfc4475",
    files: "rfc4475",
    suffix: "",
    cases: &[
        // in-dialog (To tag) for a dialog the sbc did not set up: not relayed.
        Case::new("wsinv.dat", Wire::Accept).at_proxy(AtProxy::Answered(481)),
        Case::new("intmeth.dat", Wire::Accept),
        Case::new("esc01.dat", Wire::Accept),
        Case::new("escnull.dat", Wire::Accept),
        Case::new("esc02.dat", Wire::Accept),
        Case::new("lwsdisp.dat", Wire::Accept),
        Case::new("longreq.dat", Wire::Accept),
        Case::new("dblreq.dat", Wire::Accept),
        Case::new("semiuri.dat", Wire::Accept),
        Case::new("transports.dat", Wire::Accept),
        // a preloaded Route to 127.0.0.1 from the Internet: the edge relays to no such place.
        Case::new("mpart01.dat", Wire::Accept).at_proxy(AtProxy::Answered(403)),
        Case::new("unreason.dat", Wire::Accept),
        Case::new("noreason.dat", Wire::Accept),
        Case::new("badinv01.dat", Wire::Refuse(400)),
        Case::new("clerr.dat", Wire::Refuse(400)),
        Case::new("ncl.dat", Wire::Refuse(400)),
        Case::new("scalar02.dat", Wire::Refuse(400)),
        Case::new("scalarlg.dat", Wire::Drop),
        Case::new("quotbal.dat", Wire::Refuse(400)),
        Case::new("ltgtruri.dat", Wire::Refuse(400)),
        Case::new("lwsruri.dat", Wire::Refuse(400)),
        Case::new("lwsstart.dat", Wire::Refuse(400)),
        Case::new("trws.dat", Wire::Refuse(400)),
        Case::new("escruri.dat", Wire::Refuse(400)),
        // a bad Date does not matter to a proxy: ignored, as the RFC allows.
        Case::new("baddate.dat", Wire::Accept),
        Case::new("regbadct.dat", Wire::Refuse(400)),
        Case::new("badaspec.dat", Wire::Refuse(400)),
        Case::new("baddn.dat", Wire::Refuse(400)),
        Case::new("badvers.dat", Wire::Refuse(505)),
        Case::new("mismatch01.dat", Wire::Refuse(400)),
        Case::new("mismatch02.dat", Wire::Refuse(400)),
        Case::new("bigcode.dat", Wire::Drop),
        Case::new("badbranch.dat", Wire::Accept),
        Case::new("insuf.dat", Wire::Refuse(400)),
        Case::new("unkscm.dat", Wire::Refuse(416)),
        Case::new("novelsc.dat", Wire::Refuse(416)),
        Case::new("unksm2.dat", Wire::Accept),
        Case::new("bext01.dat", Wire::Refuse(420)),
        Case::new("invut.dat", Wire::Accept),
        Case::new("regaut01.dat", Wire::Accept),
        Case::new("multi01.dat", Wire::Refuse(400)),
        Case::new("mcl01.dat", Wire::Drop),
        Case::new("bcast.dat", Wire::Accept),
        // Max-Forwards 0: too many hops.
        Case::new("zeromf.dat", Wire::Accept).at_proxy(AtProxy::Answered(483)),
        Case::new("cparam01.dat", Wire::Accept),
        Case::new("cparam02.dat", Wire::Accept),
        Case::new("regescrt.dat", Wire::Accept),
        Case::new("sdp01.dat", Wire::Accept),
        Case::new("inv2543.dat", Wire::Accept),
    ],
};

/// RFC 5118 IPv6 messages (the CRLF versions, ready to send).
pub const RFC5118: Set = Set {
    index: "rfc5118",
    files: "rfc5118-wire",
    suffix: ".sip",
    cases: &[
        Case::new("ipv6-good", Wire::Accept),
        Case::new("ipv6-bad", Wire::Refuse(400)),
        Case::new("port-ambiguous", Wire::Accept),
        Case::new("port-unambiguous", Wire::Accept),
        // in-dialog for a dialog the sbc did not set up.
        Case::new("via-received-param-with-delim", Wire::Accept).at_proxy(AtProxy::Answered(481)),
        Case::new("via-received-param-no-delim", Wire::Accept),
        // parsed, but IPv6 media cannot be anchored yet.
        Case::new("ipv6-in-sdp", Wire::Accept).at_proxy(AtProxy::Answered(488)),
        // in-dialog for a dialog the sbc did not set up.
        Case::new("mult-ip-in-header", Wire::Accept).at_proxy(AtProxy::Answered(481)),
        // parsed, but IPv6 media cannot be anchored yet.
        Case::new("mult-ip-in-sdp", Wire::Accept).at_proxy(AtProxy::Answered(488)),
        Case::new("ipv4-mapped-ipv6", Wire::Accept),
        Case::new("ipv6-bug-abnf-3-colons", Wire::Accept),
        Case::new("ipv6-correct-abnf-2-colons", Wire::Accept),
    ],
};

pub const ALL: [&Set; 2] = [&RFC4475, &RFC5118];
