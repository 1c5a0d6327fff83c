//! Why the XDP program gave each verdict: one per-CPU counter per reason (invariant: every
//! decision is counted). The index of a reason in the counters map is its discriminant.

macro_rules! reasons {
    ($($variant:ident = $name:literal: $doc:literal,)*) => {
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Reason {
            $(#[doc = $doc] $variant,)*
        }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];
            pub const COUNT: u32 = Self::ALL.len() as u32;

            /// The reason of counter `index`.
            #[inline(always)]
            pub fn from_index(index: u32) -> Option<Reason> {
                Self::ALL.get(index as usize).copied()
            }

            /// Stable snake_case name, used in metrics and `sbc maps`.
            pub const fn name(self) -> &'static str {
                match self { $(Reason::$variant => $name,)* }
            }

            pub const fn description(self) -> &'static str {
                match self { $(Reason::$variant => $doc,)* }
            }
        }
    };
}

reasons! {
    ForwardTx = "forward_tx": "media forwarded back out of the interface it arrived on (XDP_TX)",
    ForwardRedirect = "forward_redirect": "media forwarded out of another interface (DEVMAP redirect)",
    DropForeignSource = "drop_foreign_source": "packet to a latched flow from a source other than its peer",
    PassTruncatedEthernet = "pass_truncated_ethernet": "frame shorter than its Ethernet/VLAN headers",
    PassStackedVlan = "pass_stacked_vlan": "more than one VLAN tag",
    PassNotIp = "pass_not_ip": "neither IPv4 nor IPv6 (ARP, LLDP, ...)",
    PassIpv6Extension = "pass_ipv6_extension": "IPv6 with an extension header (fragment, hop-by-hop, routing ...) before its payload",
    PassBadIpv6 = "pass_bad_ipv6": "IPv6 header with a bad version, or frame shorter than its IPv6 header or payload length",
    PassFamilyTranslation = "pass_family_translation": "media between an IPv4 and an IPv6 leg (relayed in userspace)",
    PassSipIpv6InDialog = "pass_sip_ipv6_in_dialog": "SIP over IPv6 of a known dialog (forwarded by the daemon)",
    PassBadIpv4 = "pass_bad_ipv4": "IPv4 header with a bad version, header length or total length",
    PassTruncatedIpv4 = "pass_truncated_ipv4": "frame shorter than its IPv4 header or total length",
    PassIpv4Options = "pass_ipv4_options": "IPv4 header with options",
    PassFragment = "pass_fragment": "IPv4 fragment",
    PassNotUdp = "pass_not_udp": "IP but not UDP (ICMP, TCP, ICMPv6 neighbour discovery ...)",
    PassTruncatedUdp = "pass_truncated_udp": "frame shorter than its UDP header or UDP length",
    PassNoFlow = "pass_no_flow": "UDP to an address and port with neither a media flow nor a SIP listener",
    PassFlowChanging = "pass_flow_changing": "media flow that the daemon rewrote while the packet was read (the copy could be torn; the daemon relays it)",
    PassNotLatched = "pass_not_latched": "media flow whose peer is not latched yet, or from another source while its peer is provisional (the daemon decides who latches)",
    PassNoDestination = "pass_no_destination": "media flow whose other leg has no known peer yet",
    PassVlanTagged = "pass_vlan_tagged": "media for a known flow in a VLAN-tagged frame (relayed in userspace)",
    PassTtlExpired = "pass_ttl_expired": "IPv4 TTL or IPv6 hop limit would reach zero",
    PassNoNeighbour = "pass_no_neighbour": "next hop has no resolved neighbour yet (the kernel resolves it)",
    PassForwardingDisabled = "pass_forwarding_disabled": "IP forwarding (of the packet's family) is off on the ingress interface (bpf_fib_lookup refuses)",
    PassFragNeeded = "pass_frag_needed": "the forwarded packet would exceed the egress MTU",
    PassFibFailed = "pass_fib_failed": "no usable route to the flow's destination",
    PassRedirectFailed = "pass_redirect_failed": "egress interface not in the redirect map",
    DropRedirectFailed = "drop_redirect_failed": "egress interface left the redirect map after the frame was rewritten",
    PassSipUnguarded = "pass_sip_unguarded": "SIP to a listener while the guard is off",
    PassSipDialog = "pass_sip_dialog": "SIP of a known dialog (never limited)",
    PassSipUnlimited = "pass_sip_unlimited": "SIP from an allowlisted source without a limit",
    PassSip = "pass_sip": "out-of-dialog SIP within its source's limit",
    DropSipBlocklisted = "drop_sip_blocklisted": "SIP from a blocklisted CIDR",
    DropSipBlocked = "drop_sip_blocked": "SIP from a source under a dynamic block",
    DropSipRateLimited = "drop_sip_rate_limited": "out-of-dialog SIP over its source's packet rate",
    DropSipInviteRate = "drop_sip_invite_rate": "an INVITE starting a call over twice its source's INVITE rate",
    ForwardSipRequest = "forward_sip_request": "in-dialog request of an established call forwarded in the kernel",
    ForwardSipResponse = "forward_sip_response": "response to an in-dialog request forwarded in the kernel",
    PassSipInDialogMethod = "pass_sip_in_dialog_method": "in-dialog request of a method the kernel leaves to the daemon (CANCEL, SUBSCRIBE, ...)",
    PassSipInDialogSdp = "pass_sip_in_dialog_sdp": "in-dialog SIP with an SDP body (the daemon re-anchors its media)",
    PassSipInDialogForm = "pass_sip_in_dialog_form": "in-dialog SIP in a form the kernel does not edit (folded lines, odd spacing, a quoted or non-UDP Via, a repeated header, Proxy-Require, a Content-Length other than the body's)",
    PassSipInDialogSize = "pass_sip_in_dialog_size": "in-dialog SIP larger than the kernel handles, or needing more edits; a request over 1300 bytes (it goes by TCP)",
    PassSipInDialogMismatch = "pass_sip_in_dialog_mismatch": "in-dialog SIP whose Request-URI, Call-ID or tags are not the dialog's as the kernel knows it",
    PassSipInDialogRoute = "pass_sip_in_dialog_route": "in-dialog request with a Route to another hop, or to us written otherwise",
    PassSipInDialogHops = "pass_sip_in_dialog_hops": "in-dialog request with Max-Forwards 0 (the daemon answers 483)",
    PassSipInDialogTrying = "pass_sip_in_dialog_trying": "100 Trying to an in-dialog request (hop by hop: the daemon drops it)",
    PassSipResponseStateful = "pass_sip_response_stateful": "response to an INVITE or UPDATE (its answer may change the call), or to a request the daemon forwarded in a transaction of its own",
    DropSipRewriteFailed = "drop_sip_rewrite_failed": "in-dialog SIP lost: its frame could not be rewritten once resized (should never happen)",
    PassSipCopyFailed = "pass_sip_copy_failed": "in-dialog SIP passed up whole: the kernel could not copy or sum its pieces (should never happen)",
    PassSipInDialogTarget = "pass_sip_in_dialog_target": "re-INVITE or UPDATE naming another Contact than its sender's known one (a target refresh: the daemon learns it), or none the kernel reads",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discriminants_are_dense_indices() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.name());
        }
    }
}
