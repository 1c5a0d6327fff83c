//! Ethernet/IPv4/UDP and Ethernet/IPv6/UDP frames built from scratch, with checksums computed
//! in full: the independent reference the XDP program's incremental rewrites are compared
//! against.
use std::net::{IpAddr, Ipv4Addr};

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_TCP: u8 = 6;

/// The Internet checksum (RFC 1071) of `data`, with `initial` added (a pseudo-header sum).
pub fn internet_checksum(initial: u32, data: &[u8]) -> u16 {
    let mut sum = initial;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[derive(Clone, Debug)]
pub struct UdpFrame {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    /// VLAN tags in front of IP, outermost first.
    pub vlans: Vec<u16>,
    /// Both of one family: IPv4 or IPv6.
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    pub id: u16,
    pub protocol: u8,
    /// Whether the UDP checksum is computed (false: sent as 0, "no checksum").
    pub udp_checksum: bool,
    pub payload: Vec<u8>,
}

impl UdpFrame {
    /// An RTP-sized datagram (12-byte header and 160 bytes of G.711).
    pub fn rtp(src: (impl Into<IpAddr>, u16), dst: (impl Into<IpAddr>, u16)) -> Self {
        let mut payload = vec![0xd5; 172];
        payload[..4].copy_from_slice(&[0x80, 0x08, 0x12, 0x34]);
        Self {
            eth_dst: [0x02, 0, 0, 0, 0x01, 0x01],
            eth_src: [0x02, 0, 0, 0, 0x01, 0x02],
            vlans: Vec::new(),
            src: src.0.into(),
            dst: dst.0.into(),
            sport: src.1,
            dport: dst.1,
            ttl: 64,
            id: 0x1c46,
            protocol: PROTO_UDP,
            udp_checksum: true,
            payload,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(&self.eth_dst);
        frame.extend_from_slice(&self.eth_src);
        for vlan in &self.vlans {
            frame.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
            frame.extend_from_slice(&vlan.to_be_bytes());
        }
        let udp_len = 8 + self.payload.len();
        let (ether_type, ip, addresses) = match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => (
                ETHERTYPE_IPV4,
                self.ipv4_header(src, dst, udp_len),
                [src.octets(), dst.octets()].concat(),
            ),
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let mut ip = vec![0u8; 40];
                ip[0] = 0x60;
                ip[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
                ip[6] = self.protocol;
                ip[7] = self.ttl;
                ip[8..24].copy_from_slice(&src.octets());
                ip[24..40].copy_from_slice(&dst.octets());
                (ETHERTYPE_IPV6, ip, [src.octets(), dst.octets()].concat())
            }
            (src, dst) => panic!("a frame from {src} to {dst} mixes IP families"),
        };
        frame.extend_from_slice(&ether_type.to_be_bytes());
        frame.extend_from_slice(&ip);

        let mut udp = Vec::with_capacity(udp_len);
        udp.extend_from_slice(&self.sport.to_be_bytes());
        udp.extend_from_slice(&self.dport.to_be_bytes());
        udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&self.payload);
        if self.udp_checksum {
            // The pseudo-header: both addresses, the protocol and the UDP length (the same sum
            // for IPv4, RFC 768, and IPv6, RFC 8200 8.1).
            let pseudo: u32 = addresses
                .chunks(2)
                .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
                .sum::<u32>()
                + u32::from(self.protocol)
                + udp_len as u32;
            let check = match internet_checksum(pseudo, &udp) {
                0 => 0xffff,
                c => c,
            };
            udp[6..8].copy_from_slice(&check.to_be_bytes());
        }
        frame.extend_from_slice(&udp);
        frame
    }

    fn ipv4_header(&self, src: Ipv4Addr, dst: Ipv4Addr, udp_len: usize) -> Vec<u8> {
        let mut ip = vec![0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&self.id.to_be_bytes());
        ip[6] = 0x40; // don't fragment
        ip[8] = self.ttl;
        ip[9] = self.protocol;
        ip[12..16].copy_from_slice(&src.octets());
        ip[16..20].copy_from_slice(&dst.octets());
        let ip_check = internet_checksum(0, &ip);
        ip[10..12].copy_from_slice(&ip_check.to_be_bytes());
        ip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_ipv4_header() {
        // The classic example header from RFC 1071 discussions: checksum 0xb861.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(0, &header), 0xb861);
    }

    #[test]
    fn a_built_frame_verifies() {
        let frame = UdpFrame::rtp(
            (Ipv4Addr::new(198, 18, 1, 2), 40000),
            (Ipv4Addr::new(198, 18, 1, 1), 20000),
        )
        .bytes();
        assert_eq!(
            internet_checksum(0, &frame[14..34]),
            0,
            "IPv4 header sums to zero"
        );
        let udp = &frame[34..];
        let pseudo = (198 << 8 | 18) * 2 + (1 << 8 | 2) + (1 << 8 | 1) + 17 + udp.len() as u32;
        assert_eq!(
            internet_checksum(pseudo, udp),
            0,
            "UDP with pseudo-header sums to zero"
        );
    }

    #[test]
    fn a_built_ipv6_frame_verifies() {
        let (src, dst): (std::net::Ipv6Addr, std::net::Ipv6Addr) = (
            "2001:db8:1::2".parse().unwrap(),
            "2001:db8:1::1".parse().unwrap(),
        );
        let frame = UdpFrame::rtp((src, 40000), (dst, 20000)).bytes();
        assert_eq!(u16::from_be_bytes([frame[12], frame[13]]), ETHERTYPE_IPV6);
        assert_eq!(frame[14] >> 4, 6);
        let udp = &frame[54..];
        assert_eq!(
            usize::from(u16::from_be_bytes([frame[18], frame[19]])),
            udp.len()
        );
        let pseudo: u32 = src
            .segments()
            .iter()
            .chain(dst.segments().iter())
            .map(|&s| u32::from(s))
            .sum::<u32>()
            + 17
            + udp.len() as u32;
        assert_eq!(internet_checksum(pseudo, udp), 0);
    }
}
