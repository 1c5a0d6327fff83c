//! The differential corpus: in-dialog requests of one established call, each named, with
//! what the kernel must do with it. The daemon's tests feed every one to the proxy core and
//! to `forward_request` (a request marked `Forward` must come out of both byte for byte the
//! same); the XDP tests feed them to the program under `BPF_PROG_TEST_RUN` (the same bytes,
//! or up with the same reason).
//!
//! The call: a carrier (`CARRIER`) called through our public listener (`PUBLIC`) and a
//! backend (`BACKEND`) answered through our private one (`PRIVATE`), both record-routed, as
//! the daemon's core tests set it up (`Call-ID` `corpus1`, tags `c-corpus1` and `b-corpus1`).
//! The first cases are what SIPp sends along such a dialog (its `[routes]` joins the route set
//! in one header); the rest are crafted variants.
use crate::{
    Dialog, DialogLeg, Reason, SipSelf, SipSelves,
    branch::{SIDE_PRIVATE, SIDE_PUBLIC},
    call_id::call_id_hash,
    dialog::{LEG_ANSWERS_HIDDEN, LEG_FORWARD, Text},
};

pub const CALL_ID: &str = "corpus1";
pub const CALLER_TAG: &str = "c-corpus1";
pub const CALLEE_TAG: &str = "b-corpus1";
/// Our listeners.
pub const PUBLIC: ([u8; 4], u16) = ([192, 0, 2, 1], 5060);
pub const PRIVATE: ([u8; 4], u16) = ([10, 0, 0, 1], 5060);
/// The parties, and their Contacts (the Request-URI of requests sent to them).
pub const CARRIER: ([u8; 4], u16) = ([203, 0, 113, 5], 5060);
pub const CARRIER_CONTACT: &str = "sip:carrier@203.0.113.5:5060";
pub const BACKEND: ([u8; 4], u16) = ([10, 0, 0, 10], 5060);
pub const BACKEND_CONTACT: &str = "sip:alice@10.0.0.10:5060";
/// The backend's Contact as the carrier is told it when topology hiding is on: ours, with
/// the backend's user.
pub const HIDDEN_BACKEND_CONTACT: &str = "sip:alice@192.0.2.1:5060";

/// Whether the call hides the backend from the carrier (`[sip.hiding] topology`): `CASES`
/// are sent in the call without, `HIDDEN_CASES` in the call with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    Open,
    Hidden,
}

/// Every case, with the call it is sent in.
pub fn all_cases() -> impl Iterator<Item = (Topology, &'static Case)> {
    let open = CASES.iter().map(|case| (Topology::Open, case));
    open.chain(HIDDEN_CASES.iter().map(|case| (Topology::Hidden, case)))
}

/// Who sends a case's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// The caller, through the public listener, to the backend.
    Carrier,
    /// The callee, through the private listener, to the carrier.
    Backend,
}

impl Sender {
    /// The leg its requests travel (`Dialog::legs`).
    pub const fn leg(self) -> usize {
        match self {
            Sender::Carrier => 0,
            Sender::Backend => 1,
        }
    }

    /// Where its requests come from, and where they arrive.
    pub const fn source(self) -> ([u8; 4], u16) {
        match self {
            Sender::Carrier => CARRIER,
            Sender::Backend => BACKEND,
        }
    }

    pub const fn listener(self) -> ([u8; 4], u16) {
        match self {
            Sender::Carrier => PUBLIC,
            Sender::Backend => PRIVATE,
        }
    }

    /// Where the request goes on.
    pub const fn target(self) -> ([u8; 4], u16) {
        match self {
            Sender::Carrier => BACKEND,
            Sender::Backend => CARRIER,
        }
    }
}

/// What the kernel does with a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Forwards it, byte for byte as the proxy does.
    Forward,
    /// Passes it up, unchanged, for this reason.
    Pass(Reason),
}

pub struct Case {
    pub name: &'static str,
    /// Who sends it: a request's sender, or the party answering the other's request.
    pub sender: Sender,
    pub message: &'static str,
    pub expect: Expect,
}

impl Case {
    pub fn is_response(&self) -> bool {
        self.message.starts_with("SIP/2.0 ")
    }

    /// How the kernel sees it arrive: the leg of the request (a response's is the other
    /// party's), from the sender's address.
    pub fn arrival(&self, seed: u64) -> super::Arrival {
        let leg = self.sender.leg() ^ usize::from(self.is_response());
        super::Arrival {
            leg,
            source: self.sender.source(),
            seed,
        }
    }
}

/// A response of the backend to a request of the carrier we forwarded (the Vias as it
/// received them, `rport` filled in), with the software header hiding removes.
macro_rules! backend_answers {
    ($status:literal, $method:literal, $($extra:literal),* $(,)?) => {
        concat!(
            "SIP/2.0 ", $status, "\r\n",
            "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-sbc-0123456789abcdef;rport=5060\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-", $method, "-1\r\n",
            "From: sipp <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: alice <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 2 ", $method, "\r\n",
            "Server: PBX 9.1\r\n",
            $($extra,)*
        )
    };
}

/// The carrier's request to `$uri`, with its route set and dialog headers as SIPp writes them.
macro_rules! carrier_to {
    ($uri:literal, $method:literal, $cseq:literal, $($extra:literal),* $(,)?) => {
        concat!(
            $method, " ", $uri, " SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-", $method, "-1\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: sipp <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: alice <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: ", $cseq, " ", $method, "\r\n",
            "Contact: sip:carrier@203.0.113.5:5060\r\n",
            "Max-Forwards: 70\r\n",
            $($extra,)*
        )
    };
}

/// The carrier's request to the backend's Contact (`BACKEND_CONTACT`).
macro_rules! carrier {
    ($($args:tt)*) => { carrier_to!("sip:alice@10.0.0.10:5060", $($args)*) };
}

/// The carrier's request in the call whose backend is hidden from it: to our Contact for the
/// backend (`HIDDEN_BACKEND_CONTACT`).
macro_rules! carrier_of_hidden {
    ($($args:tt)*) => { carrier_to!("sip:alice@192.0.2.1:5060", $($args)*) };
}

/// The backend's, with the software headers topology hiding removes.
macro_rules! backend {
    ($method:literal, $cseq:literal, $($extra:literal),* $(,)?) => {
        concat!(
            $method, " sip:carrier@203.0.113.5:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bK-b", $method, ";rport\r\n",
            "Route: <sip:10.0.0.1:5060;lr>, <sip:192.0.2.1:5060;lr>\r\n",
            "From: alice <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "To: sipp <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: ", $cseq, " ", $method, "\r\n",
            "User-Agent: PBX 9.1\r\n",
            "Max-Forwards: 70\r\n",
            $($extra,)*
        )
    };
}

use Expect::{Forward, Pass};
use Sender::{Backend, Carrier};

pub const CASES: &[Case] = &[
    Case {
        name: "sipp_ack",
        sender: Carrier,
        message: carrier!("ACK", "1", "Content-Length: 0\r\n\r\n"),
        expect: Forward,
    },
    Case {
        name: "sipp_bye",
        sender: Carrier,
        message: carrier!("BYE", "2", "Content-Length: 0\r\n\r\n"),
        expect: Forward,
    },
    Case {
        name: "info_with_a_dtmf_body",
        sender: Carrier,
        message: carrier!(
            "INFO",
            "3",
            "Content-Type: application/dtmf-relay\r\n",
            "Content-Length: 24\r\n\r\n",
            "Signal=5\r\nDuration=160\r\n"
        ),
        expect: Forward,
    },
    Case {
        name: "options",
        sender: Carrier,
        message: carrier!(
            "OPTIONS",
            "4",
            "Accept: application/sdp\r\n",
            "Content-Length: 0\r\n\r\n"
        ),
        expect: Forward,
    },
    Case {
        name: "notify",
        sender: Carrier,
        message: carrier!(
            "NOTIFY",
            "5",
            "Event: refer\r\n",
            "Subscription-State: active\r\n",
            "Content-Length: 0\r\n\r\n"
        ),
        expect: Forward,
    },
    Case {
        name: "refer",
        sender: Carrier,
        message: carrier!(
            "REFER",
            "6",
            "Refer-To: <sip:bob@198.51.100.20>\r\n",
            "Content-Length: 0\r\n\r\n"
        ),
        expect: Forward,
    },
    Case {
        name: "message",
        sender: Carrier,
        message: carrier!(
            "MESSAGE",
            "7",
            "Content-Type: text/plain\r\n",
            "Content-Length: 5\r\n\r\n",
            "hello"
        ),
        expect: Forward,
    },
    Case {
        // Its last piece (Max-Forwards on) is longer than the XDP program copies in one run.
        name: "message_with_a_long_body",
        sender: Carrier,
        message: carrier!(
            "MESSAGE",
            "7",
            "Content-Type: text/plain\r\n",
            "Content-Length: 634\r\n\r\n",
            "01 alpha: the body of a long MESSAGE, copied in several runs.\r\n",
            "02 bravo: the body of a long MESSAGE, copied in several runs.\r\n",
            "03 charlie: the body of a long MESSAGE, copied in several runs.\r\n",
            "04 delta: the body of a long MESSAGE, copied in several runs.\r\n",
            "05 echo: the body of a long MESSAGE, copied in several runs.\r\n",
            "06 foxtrot: the body of a long MESSAGE, copied in several runs.\r\n",
            "07 golf: the body of a long MESSAGE, copied in several runs.\r\n",
            "08 hotel: the body of a long MESSAGE, copied in several runs.\r\n",
            "09 india: the body of a long MESSAGE, copied in several runs.\r\n",
            "10 juliett: the body of a long MESSAGE, copied in several runs.\r\n",
        ),
        expect: Forward,
    },
    Case {
        // Over 1300 bytes as forwarded: it goes by TCP (RFC 3261 18.1.1), from the daemon.
        name: "message_too_large_for_udp",
        sender: Carrier,
        message: carrier!(
            "MESSAGE",
            "7",
            "Content-Type: text/plain\r\n",
            "Content-Length: 949\r\n\r\n",
            "01 alpha: the body of a long MESSAGE, copied in several runs.\r\n",
            "02 bravo: the body of a long MESSAGE, copied in several runs.\r\n",
            "03 charlie: the body of a long MESSAGE, copied in several runs.\r\n",
            "04 delta: the body of a long MESSAGE, copied in several runs.\r\n",
            "05 echo: the body of a long MESSAGE, copied in several runs.\r\n",
            "06 foxtrot: the body of a long MESSAGE, copied in several runs.\r\n",
            "07 golf: the body of a long MESSAGE, copied in several runs.\r\n",
            "08 hotel: the body of a long MESSAGE, copied in several runs.\r\n",
            "09 india: the body of a long MESSAGE, copied in several runs.\r\n",
            "10 juliett: the body of a long MESSAGE, copied in several runs.\r\n",
            "11 kilo: the body of a long MESSAGE, copied in several runs.\r\n",
            "12 lima: the body of a long MESSAGE, copied in several runs.\r\n",
            "13 mike: the body of a long MESSAGE, copied in several runs.\r\n",
            "14 november: the body of a long MESSAGE, copied in several runs.\r\n",
            "15 oscar: the body of a long MESSAGE, copied in several runs.\r\n",
        ),
        expect: Pass(Reason::PassSipInDialogSize),
    },
    Case {
        name: "prack",
        sender: Carrier,
        message: carrier!(
            "PRACK",
            "8",
            "RAck: 1 1 INVITE\r\n",
            "Content-Length: 0\r\n\r\n"
        ),
        expect: Forward,
    },
    Case {
        name: "update_without_sdp",
        sender: Carrier,
        message: carrier!(
            "UPDATE",
            "9",
            "Session-Expires: 1800;refresher=uac\r\n",
            "Content-Length: 0\r\n\r\n"
        ),
        expect: Forward,
    },
    Case {
        name: "reinvite_without_sdp",
        sender: Carrier,
        message: carrier!("INVITE", "10", "Content-Length: 0\r\n\r\n"),
        expect: Forward,
    },
    Case {
        name: "reinvite_contact_in_brackets_with_parameters",
        sender: Carrier,
        message: concat!(
            "INVITE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-brackets\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: sipp <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: alice <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 48 INVITE\r\n",
            "Contact: <sip:carrier@203.0.113.5:5060>;+sip.instance=\"<urn:uuid:1>\"\r\n",
            "Max-Forwards: 70\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Forward,
    },
    Case {
        name: "reinvite_naming_a_new_contact",
        sender: Carrier,
        message: concat!(
            "INVITE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-moved\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: sipp <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: alice <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 49 INVITE\r\n",
            "Contact: <sip:carrier@203.0.113.77:5060>\r\n",
            "Max-Forwards: 70\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Pass(Reason::PassSipInDialogTarget),
    },
    Case {
        name: "update_naming_a_new_contact",
        sender: Carrier,
        message: concat!(
            "UPDATE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-moved-update\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: sipp <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: alice <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 52 UPDATE\r\n",
            "Contact: sip:carrier@203.0.113.77:5060\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Pass(Reason::PassSipInDialogTarget),
    },
    Case {
        name: "reinvite_with_a_display_name_in_its_contact",
        sender: Carrier,
        message: concat!(
            "INVITE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-named\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: sipp <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: alice <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 50 INVITE\r\n",
            "Contact: \"Carrier\" <sip:carrier@203.0.113.5:5060>\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Pass(Reason::PassSipInDialogTarget),
    },
    Case {
        name: "reinvite_without_a_contact",
        sender: Carrier,
        message: concat!(
            "INVITE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-none\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: sipp <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: alice <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 51 INVITE\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Pass(Reason::PassSipInDialogTarget),
    },
    Case {
        name: "backend_bye_hides_its_software",
        sender: Backend,
        message: backend!(
            "BYE",
            "1",
            "Server: PBX 9.1\r\n",
            "Content-Length: 0\r\n\r\n"
        ),
        expect: Forward,
    },
    Case {
        name: "backend_info_without_content_length",
        sender: Backend,
        message: backend!("INFO", "2", "\r\n"),
        expect: Forward,
    },
    Case {
        name: "routes_across_headers_and_a_bare_rport",
        sender: Carrier,
        message: concat!(
            "BYE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;rport;branch=z9hG4bKr1\r\n",
            "Max-Forwards: 70\r\n",
            "Route: <sip:192.0.2.1:5060;lr>\r\n",
            "Route: <sip:10.0.0.1:5060;lr>\r\n",
            "From: <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 11 BYE\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Forward,
    },
    Case {
        name: "compact_names",
        sender: Carrier,
        message: concat!(
            "OPTIONS sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "v: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKc1;rport\r\n",
            "Route: <sip:192.0.2.1:5060;lr>,<sip:10.0.0.1:5060;lr>\r\n",
            "f: <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "t: <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "i: corpus1\r\n",
            "CSeq: 12 OPTIONS\r\n",
            "l: 0\r\n\r\n",
        ),
        expect: Forward,
    },
    Case {
        name: "mixed_case_names_and_parameters",
        sender: Carrier,
        message: concat!(
            "INFO sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "VIA: SIP/2.0/UDP 203.0.113.5:5060;Branch=z9hG4bKm1;RPORT\r\n",
            "ROUTE: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "max-forwards: 70\r\n",
            "FROM: <sip:sipp@203.0.113.5:5060>;TAG=c-corpus1\r\n",
            "to: <sip:alice@192.0.2.1:5060>;Tag=b-corpus1\r\n",
            "CALL-ID: corpus1\r\n",
            "cseq: 13 INFO\r\n",
            "CONTENT-LENGTH: 0\r\n\r\n",
        ),
        expect: Forward,
    },
    Case {
        name: "extra_whitespace",
        sender: Carrier,
        message: concat!(
            "INFO sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via :  SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKw1;rport  \r\n",
            "Route:<sip:192.0.2.1:5060;lr> ,  <sip:10.0.0.1:5060;lr>  \r\n",
            "Max-Forwards:\t70 \r\n",
            "From:   <sip:sipp@203.0.113.5:5060>;tag=c-corpus1 \r\n",
            "To: <sip:alice@192.0.2.1:5060> ;tag=b-corpus1\r\n",
            "Call-ID:corpus1\r\n",
            "CSeq:  14   INFO\r\n",
            "Content-Length:  0\r\n\r\n",
        ),
        expect: Forward,
    },
    Case {
        name: "via_names_a_host",
        sender: Carrier,
        message: concat!(
            "BYE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP pbx.carrier.example;branch=z9hG4bKn1\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 15 BYE\r\n",
            "Max-Forwards: 70\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Forward,
    },
    Case {
        name: "via_names_another_address_with_rport_given",
        sender: Carrier,
        message: concat!(
            "BYE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.50:5070;rport=5070;branch=z9hG4bKa1\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 16 BYE\r\n",
            "Max-Forwards: 70\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Forward,
    },
    Case {
        name: "via_shorter_than_the_source_address",
        sender: Carrier,
        message: concat!(
            "BYE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKs1;rport\r\n",
            "Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKs0, SIP/2.0/UDP 198.51.100.2;branch=z9hG4bKsx\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 17 BYE\r\n",
            "Max-Forwards: 70\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Forward,
    },
    Case {
        name: "several_vias_in_the_first_line",
        sender: Carrier,
        message: concat!(
            "INFO sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKv1;rport ,SIP/2.0/UDP  198.51.100.3;branch=z9hG4bKv0\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 18 INFO\r\n",
            "Max-Forwards: 70\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Forward,
    },
    Case {
        name: "max_forwards_1",
        sender: Carrier,
        message: concat!(
            "BYE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKf1\r\n",
            "Max-Forwards: 1\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 19 BYE\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Forward,
    },
    Case {
        name: "max_forwards_missing",
        sender: Carrier,
        message: concat!(
            "BYE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKf2\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 20 BYE\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Forward,
    },
    Case {
        name: "line_feeds_alone",
        sender: Carrier,
        message: concat!(
            "BYE sip:alice@10.0.0.10:5060 SIP/2.0\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKl1;rport\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\n",
            "From: <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\n",
            "To: <sip:alice@192.0.2.1:5060>;tag=b-corpus1\n",
            "Call-ID: corpus1\n",
            "CSeq: 21 BYE\n",
            "Max-Forwards: 70\n",
            "Content-Length: 0\n\n",
        ),
        expect: Forward,
    },
    Case {
        name: "display_names_and_uri_parameters",
        sender: Carrier,
        message: concat!(
            "INFO sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKd1\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: \"Sipp; the tester\" <sip:sipp@203.0.113.5:5060;tag=not-this>;tag=c-corpus1;x=1\r\n",
            "To: <sip:alice@192.0.2.1:5060;user=phone>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 22 INFO\r\n",
            "Max-Forwards: 70\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Forward,
    },
    Case {
        name: "backend_200_to_a_bye",
        sender: Backend,
        message: backend_answers!("200 OK", "BYE", "Content-Length: 0\r\n\r\n"),
        expect: Forward,
    },
    Case {
        name: "backend_481_to_an_info",
        sender: Backend,
        message: backend_answers!(
            "481 Call/Transaction Does Not Exist",
            "INFO",
            "Content-Length: 0\r\n\r\n"
        ),
        expect: Forward,
    },
    Case {
        name: "carrier_200_to_a_bye_with_both_vias_in_one_line",
        sender: Carrier,
        message: concat!(
            "SIP/2.0 200 OK\r\n",
            "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-sbc-fedcba9876543210;rport=5060;received=192.0.2.1, SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bK-bBYE;rport=5060\r\n",
            "From: alice <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "To: sipp <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 1 BYE\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Forward,
    },
    Case {
        name: "carrier_200_to_an_options_the_via_marked_with_received",
        sender: Carrier,
        message: concat!(
            "SIP/2.0 200 OK\r\n",
            "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-sbc-fedcba9876543211;rport=5060\r\n",
            "Via: SIP/2.0/UDP pbx.backend.example;branch=z9hG4bK-bOPTIONS;rport=5060;received=10.0.0.10\r\n",
            "From: alice <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "To: sipp <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 3 OPTIONS\r\n",
            "Allow: INVITE, ACK, BYE\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Forward,
    },
    Case {
        name: "a_response_its_vias_send_elsewhere",
        sender: Backend,
        message: concat!(
            "SIP/2.0 200 OK\r\n",
            "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-sbc-0123456789abcdef;rport=5060\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-x;rport=5060;received=198.51.100.66\r\n",
            "From: sipp <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: alice <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 2 BYE\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Pass(Reason::PassSipInDialogMismatch),
    },
    Case {
        name: "a_100_trying",
        sender: Backend,
        message: backend_answers!("100 Trying", "INVITE", "Content-Length: 0\r\n\r\n"),
        expect: Pass(Reason::PassSipInDialogTrying),
    },
    Case {
        name: "a_response_to_a_transaction_of_the_daemons",
        sender: Backend,
        message: concat!(
            "SIP/2.0 200 OK\r\n",
            "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK5f0c2a14-77;rport=5060\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-INVITE-1\r\n",
            "From: sipp <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: alice <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 1 INVITE\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Pass(Reason::PassSipResponseStateful),
    },
    Case {
        name: "an_answer_with_sdp",
        sender: Backend,
        message: backend_answers!(
            "200 OK",
            "PRACK",
            "Content-Type: application/sdp\r\n",
            "Content-Length: 10\r\n\r\n",
            "v=0\r\no=x\r\n"
        ),
        expect: Pass(Reason::PassSipInDialogSdp),
    },
    Case {
        name: "a_200_to_an_update_naming_a_new_contact",
        sender: Backend,
        message: backend_answers!(
            "200 OK",
            "UPDATE",
            "Contact: <sip:alice@10.0.0.11:5060>\r\n",
            "Content-Length: 0\r\n\r\n"
        ),
        expect: Pass(Reason::PassSipResponseStateful),
    },
    Case {
        name: "a_491_to_a_reinvite",
        sender: Backend,
        message: backend_answers!("491 Request Pending", "INVITE", "Content-Length: 0\r\n\r\n"),
        expect: Pass(Reason::PassSipResponseStateful),
    },
    Case {
        name: "a_response_with_only_our_via",
        sender: Backend,
        message: concat!(
            "SIP/2.0 200 OK\r\n",
            "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-sbc-0123456789abcdef;rport=5060\r\n",
            "From: sipp <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: alice <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 2 BYE\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Pass(Reason::PassSipInDialogForm),
    },
    Case {
        name: "reinvite_with_sdp",
        sender: Carrier,
        message: carrier!(
            "INVITE",
            "30",
            "Content-Type: application/sdp\r\n",
            "Content-Length: 10\r\n\r\n",
            "v=0\r\no=x\r\n"
        ),
        expect: Pass(Reason::PassSipInDialogSdp),
    },
    Case {
        name: "cancel",
        sender: Carrier,
        message: carrier!("CANCEL", "31", "Content-Length: 0\r\n\r\n"),
        expect: Pass(Reason::PassSipInDialogMethod),
    },
    Case {
        name: "subscribe",
        sender: Carrier,
        message: carrier!(
            "SUBSCRIBE",
            "32",
            "Event: dialog\r\n",
            "Content-Length: 0\r\n\r\n"
        ),
        expect: Pass(Reason::PassSipInDialogMethod),
    },
    Case {
        name: "folded_line",
        sender: Carrier,
        message: carrier!(
            "INFO",
            "33",
            "Subject: a\r\n  folded subject\r\n",
            "Content-Length: 0\r\n\r\n"
        ),
        expect: Pass(Reason::PassSipInDialogForm),
    },
    Case {
        name: "max_forwards_0",
        sender: Carrier,
        message: concat!(
            "BYE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKz1\r\n",
            "Max-Forwards: 0\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 34 BYE\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Pass(Reason::PassSipInDialogHops),
    },
    Case {
        name: "route_to_another_hop",
        sender: Carrier,
        message: concat!(
            "BYE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKo1\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>, <sip:10.0.0.99;lr>\r\n",
            "From: <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 35 BYE\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Pass(Reason::PassSipInDialogRoute),
    },
    Case {
        name: "our_route_written_otherwise",
        sender: Carrier,
        message: concat!(
            "BYE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKo2\r\n",
            "Route: <sip:192.0.2.1;lr>, <sip:10.0.0.1;lr>\r\n",
            "From: <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 36 BYE\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Pass(Reason::PassSipInDialogRoute),
    },
    Case {
        name: "another_to_tag",
        sender: Carrier,
        message: concat!(
            "BYE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKt1\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: <sip:alice@192.0.2.1:5060>;tag=b-corpus2\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 37 BYE\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Pass(Reason::PassSipInDialogMismatch),
    },
    Case {
        name: "a_tag_that_only_starts_like_the_dialogs",
        sender: Carrier,
        message: concat!(
            "BYE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKt2\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: <sip:sipp@203.0.113.5:5060>;tag=c-corpus1x\r\n",
            "To: <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 38 BYE\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Pass(Reason::PassSipInDialogMismatch),
    },
    Case {
        name: "parameters_crowded_before_the_tag",
        sender: Carrier,
        message: concat!(
            "BYE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKt3\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: <sip:sipp@203.0.113.5:5060>;a;b;c;d;e;f;tag=c-corpus1\r\n",
            "To: <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 47 BYE\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Pass(Reason::PassSipInDialogForm),
    },
    Case {
        name: "sent_to_our_address",
        sender: Carrier,
        message: concat!(
            "BYE sip:192.0.2.1:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKu1\r\n",
            "From: <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 39 BYE\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Pass(Reason::PassSipInDialogMismatch),
    },
    Case {
        name: "quoted_via_parameter",
        sender: Carrier,
        message: concat!(
            "BYE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKq1;x=\"a,b\"\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 40 BYE\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Pass(Reason::PassSipInDialogForm),
    },
    Case {
        name: "via_over_tcp",
        sender: Carrier,
        message: concat!(
            "BYE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/TCP 203.0.113.5:5060;branch=z9hG4bKp1\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 41 BYE\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Pass(Reason::PassSipInDialogForm),
    },
    Case {
        name: "cseq_twice",
        sender: Carrier,
        message: carrier!("BYE", "42", "CSeq: 43 BYE\r\n", "Content-Length: 0\r\n\r\n"),
        expect: Pass(Reason::PassSipInDialogForm),
    },
    Case {
        name: "content_length_other_than_the_body",
        sender: Carrier,
        message: carrier!(
            "INFO",
            "44",
            "Content-Type: text/plain\r\n",
            "Content-Length: 9\r\n\r\n",
            "abc"
        ),
        expect: Pass(Reason::PassSipInDialogForm),
    },
    Case {
        name: "proxy_require",
        sender: Carrier,
        message: carrier!(
            "INFO",
            "45",
            "Proxy-Require: foo\r\n",
            "Content-Length: 0\r\n\r\n"
        ),
        expect: Pass(Reason::PassSipInDialogForm),
    },
    Case {
        name: "cseq_method_other_than_the_request",
        sender: Carrier,
        message: concat!(
            "BYE sip:alice@10.0.0.10:5060 SIP/2.0\r\n",
            "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKe1\r\n",
            "Route: <sip:192.0.2.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n",
            "From: <sip:sipp@203.0.113.5:5060>;tag=c-corpus1\r\n",
            "To: <sip:alice@192.0.2.1:5060>;tag=b-corpus1\r\n",
            "Call-ID: corpus1\r\n",
            "CSeq: 46 INFO\r\n",
            "Content-Length: 0\r\n\r\n",
        ),
        expect: Pass(Reason::PassSipInDialogForm),
    },
];

/// The call whose backend is hidden from the carrier: the carrier's requests come to our
/// Contact and leave with the backend's, the backend's responses lose their Contact, and the
/// backend's requests (whose Vias the daemon keeps) go up.
pub const HIDDEN_CASES: &[Case] = &[
    Case {
        name: "hidden_sipp_ack",
        sender: Carrier,
        message: carrier_of_hidden!("ACK", "1", "Content-Length: 0\r\n\r\n"),
        expect: Forward,
    },
    Case {
        name: "hidden_sipp_bye",
        sender: Carrier,
        message: carrier_of_hidden!("BYE", "2", "Content-Length: 0\r\n\r\n"),
        expect: Forward,
    },
    Case {
        name: "hidden_info_with_a_dtmf_body",
        sender: Carrier,
        message: carrier_of_hidden!(
            "INFO",
            "3",
            "Content-Type: application/dtmf-relay\r\n",
            "Content-Length: 24\r\n\r\n",
            "Signal=5\r\nDuration=160\r\n"
        ),
        expect: Forward,
    },
    Case {
        name: "hidden_request_to_the_backends_own_contact",
        sender: Carrier,
        message: carrier!("BYE", "4", "Content-Length: 0\r\n\r\n"),
        expect: Pass(Reason::PassSipInDialogMismatch),
    },
    Case {
        name: "hidden_backend_bye",
        sender: Backend,
        message: backend!("BYE", "1", "Content-Length: 0\r\n\r\n"),
        expect: Pass(Reason::PassSipDialog),
    },
    Case {
        name: "hidden_backend_200_to_a_bye",
        sender: Backend,
        message: backend_answers!("200 OK", "BYE", "Content-Length: 0\r\n\r\n"),
        expect: Forward,
    },
    Case {
        name: "hidden_backend_200_to_an_options_with_its_contact",
        sender: Backend,
        message: backend_answers!(
            "200 OK",
            "OPTIONS",
            "Contact: <sip:alice@10.0.0.10:5060>\r\n",
            "Content-Length: 0\r\n\r\n"
        ),
        expect: Forward,
    },
    Case {
        name: "hidden_backend_200_to_a_bye_with_two_contact_lines",
        sender: Backend,
        message: backend_answers!(
            "200 OK",
            "BYE",
            "m: <sip:alice@10.0.0.10:5060>\r\n",
            "Contact: <sip:alice@10.0.0.10:5062>\r\n",
            "Content-Length: 0\r\n\r\n"
        ),
        expect: Forward,
    },
];

fn flow_key((ip, port): ([u8; 4], u16)) -> crate::FlowKey {
    crate::FlowKey::udp(crate::IpAddress::from_ipv4(ip), port.to_be())
}

fn text<const N: usize>(bytes: &[u8]) -> Text<N> {
    Text::new(bytes).expect("fits")
}

/// The dialogs map's value for the corpus's call, as the daemon must write it (its tests
/// check that it does) with the map's `seed`.
pub fn dialog(seed: u64, topology: Topology) -> Dialog {
    let leg = |carried: &str, target: &str, sender: Sender, out_side, flags| DialogLeg {
        request_uri_hash: call_id_hash(carried.as_bytes(), seed),
        target_uri: text(target.as_bytes()),
        listener: flow_key(sender.listener()),
        target: flow_key(sender.target()),
        party: flow_key(sender.source()),
        out_side,
        flags,
        ..DialogLeg::default()
    };
    let carrier_leg = match topology {
        Topology::Open => leg(
            BACKEND_CONTACT,
            BACKEND_CONTACT,
            Sender::Carrier,
            SIDE_PRIVATE,
            LEG_FORWARD,
        ),
        Topology::Hidden => leg(
            HIDDEN_BACKEND_CONTACT,
            BACKEND_CONTACT,
            Sender::Carrier,
            SIDE_PRIVATE,
            LEG_FORWARD | LEG_ANSWERS_HIDDEN,
        ),
    };
    // With the backend hidden, its requests go up (their Vias are kept in a transaction of
    // the daemon's); the leg is still there for the responses arriving on its listener.
    let backend_flags = match topology {
        Topology::Open => LEG_FORWARD,
        Topology::Hidden => 0,
    };
    let backend_leg = leg(
        CARRIER_CONTACT,
        CARRIER_CONTACT,
        Sender::Backend,
        SIDE_PUBLIC,
        backend_flags,
    );
    Dialog {
        call_id: text(CALL_ID.as_bytes()),
        tags: [text(CALLER_TAG.as_bytes()), text(CALLEE_TAG.as_bytes())],
        legs: [carrier_leg, backend_leg],
        ..Dialog::KNOWN
    }
}

/// Our addresses as the daemon writes them for the corpus's listeners, with the default
/// headers hidden from the public side.
pub fn selves() -> SipSelves {
    let mut public = SipSelf {
        listener: flow_key(PUBLIC),
        via: text(b"SIP/2.0/UDP 192.0.2.1:5060;branch="),
        route: text(b"<sip:192.0.2.1:5060;lr>"),
        stripped: 3,
        ..SipSelf::default()
    };
    public.strip[0] = text(b"server");
    public.strip[1] = text(b"user-agent");
    public.strip[2] = text(b"warning");
    let private = SipSelf {
        listener: flow_key(PRIVATE),
        via: text(b"SIP/2.0/UDP 10.0.0.1:5060;branch="),
        route: text(b"<sip:10.0.0.1:5060;lr>"),
        ..SipSelf::default()
    };
    SipSelves {
        sides: [public, private],
    }
}
