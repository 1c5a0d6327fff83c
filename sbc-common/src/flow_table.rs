//! The flow table: one entry per local media address and port, found by arithmetic.
//!
//! Media arrives at one of a few local addresses and at a port of the configured range, so the
//! entry of a destination is at `address slot × ports + (port − first port)` of an array: no
//! hash to compute, no bucket to read, no key to compare, so the cost of finding a flow does not
//! grow with the flows held (a hash table's buckets and elements leave the caches as it fills).
//!
//! An array element is overwritten in place, where a hash table swaps in a new element whole,
//! so a writer publishes like a sequence lock with two versions: it writes the new flow into
//! the version readers do not use, then advances `FlowEntry::sequence`, whose lowest bit names
//! the version to read. A reader copies the version its sequence names and reads the sequence
//! again: if it moved, the copy may be torn and the packet goes to the slow path instead. Each
//! write is one `bpf_map_update_elem` of the whole entry, which rewrites the version in use
//! with the bytes it already holds. The reader's three loads are kept in order by the compiler
//! (volatile) and by x86 (loads are not reordered with loads); a CPU that may reorder them
//! (arm64: BPF has no read barrier before load-acquire) could see a torn copy only if the
//! writer's two system calls, microseconds, fell between two of those loads.
use crate::flow::{Flow, FlowKey, IpAddress, PROTO_UDP};

/// Local media addresses a table can hold: the public and the private one, and those that
/// flows held from an earlier configuration still use.
pub const FLOW_TABLE_ADDRESSES: usize = 4;

/// How flow keys map to the table's entries. Written by the daemon beside the table (the
/// table and its layout are only ever replaced together).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowTableLayout {
    pub addresses: [IpAddress; FLOW_TABLE_ADDRESSES],
    pub address_count: u32,
    /// The first port (host byte order).
    pub port_min: u16,
    pub _pad: u16,
    /// Ports on each address, from `port_min`.
    pub ports: u32,
}

impl FlowTableLayout {
    /// Entries the table needs.
    pub const fn capacity(&self) -> u32 {
        self.address_count * self.ports
    }

    /// The entry of a local address and port, if the table covers them.
    #[inline(always)]
    pub fn index(&self, key: &FlowKey) -> Option<u32> {
        let offset = u32::from(u16::from_be(key.port).wrapping_sub(self.port_min));
        if offset >= self.ports || key.proto != PROTO_UDP {
            return None;
        }
        let mut slot = 0;
        while slot < FLOW_TABLE_ADDRESSES {
            if slot as u32 >= self.address_count {
                return None;
            }
            if self.addresses[slot] == key.addr {
                return Some(slot as u32 * self.ports + offset);
            }
            slot += 1;
        }
        None
    }

    /// The local address and port of an entry.
    pub fn key(&self, index: u32) -> Option<FlowKey> {
        if self.ports == 0 || index >= self.capacity() {
            return None;
        }
        let slot = (index / self.ports) as usize;
        let port = self.port_min + (index % self.ports) as u16;
        Some(FlowKey::udp(self.addresses[slot], port.to_be()))
    }

    /// The slot of `address`, added if the layout has room.
    pub fn add_address(&mut self, address: IpAddress) -> Option<usize> {
        let count = self.address_count as usize;
        if let Some(slot) = self.addresses[..count].iter().position(|a| *a == address) {
            return Some(slot);
        }
        if count == FLOW_TABLE_ADDRESSES {
            return None;
        }
        self.addresses[count] = address;
        self.address_count += 1;
        Some(count)
    }
}

/// `Flow::flags` of a published version that holds a flow; a removal publishes one without.
pub const FLOW_INSTALLED: u16 = 8;

/// One entry of the flow table: two versions of its flow, and which one is published.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FlowEntry {
    /// Advanced by each publication (never reset, so a reader cannot mistake a later
    /// publication for the one it began with); its lowest bit names the version to read.
    pub sequence: u32,
    pub versions: [Flow; 2],
}

impl FlowEntry {
    /// The version readers use at `sequence`.
    #[inline(always)]
    pub const fn published_version(sequence: u32) -> usize {
        (sequence & 1) as usize
    }

    /// The flow readers use, if one is installed.
    pub fn published(&self) -> Option<Flow> {
        let flow = self.versions[Self::published_version(self.sequence)];
        (flow.flags & FLOW_INSTALLED != 0).then_some(Flow {
            flags: flow.flags & !FLOW_INSTALLED,
            ..flow
        })
    }

    /// The two writes that publish `flow` (`None`: remove it), in order: the first stages it
    /// in the version readers do not use and leaves the published one's bytes as they are; the
    /// second advances the sequence to it.
    pub fn publishing(&self, flow: Option<Flow>) -> [Self; 2] {
        let staged_version = Self::published_version(self.sequence.wrapping_add(1));
        let mut staged = *self;
        staged.versions[staged_version] = match flow {
            Some(flow) => Flow {
                flags: flow.flags | FLOW_INSTALLED,
                ..flow
            },
            None => Flow::REMOVED,
        };
        let published = Self {
            sequence: self.sequence.wrapping_add(1),
            ..staged
        };
        [staged, published]
    }
}

impl Flow {
    /// What a removal publishes: nothing to forward to, no peer.
    pub const REMOVED: Self = Self {
        new_src: IpAddress::UNSPECIFIED,
        new_dst: IpAddress::UNSPECIFIED,
        peer: IpAddress::UNSPECIFIED,
        new_src_port: 0,
        new_dst_port: 0,
        peer_port: 0,
        flags: 0,
        session_id: 0,
        leg: 0,
        stream: 0,
        generation: 0,
        stats_slot: 0,
    };
}

const _: () = assert!(core::mem::size_of::<FlowTableLayout>() == 76);
const _: () = assert!(core::mem::size_of::<FlowEntry>() == 140);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)`, integers and `Pod` types only, no implicit padding.
    unsafe impl aya::Pod for super::FlowTableLayout {}
    unsafe impl aya::Pod for super::FlowEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> FlowTableLayout {
        let mut layout = FlowTableLayout {
            port_min: 20_000,
            ports: 1_000,
            ..Default::default()
        };
        layout.add_address(IpAddress::from_ipv4([198, 18, 1, 1]));
        layout.add_address(IpAddress::from_ipv4([10, 0, 0, 1]));
        layout
    }

    fn key(v4: [u8; 4], port: u16) -> FlowKey {
        FlowKey::udp(IpAddress::from_ipv4(v4), port.to_be())
    }

    #[test]
    fn every_covered_key_has_its_own_entry_and_back() {
        let layout = layout();
        assert_eq!(layout.capacity(), 2_000);
        assert_eq!(layout.index(&key([198, 18, 1, 1], 20_000)), Some(0));
        assert_eq!(layout.index(&key([198, 18, 1, 1], 20_999)), Some(999));
        assert_eq!(layout.index(&key([10, 0, 0, 1], 20_000)), Some(1_000));
        for index in 0..layout.capacity() {
            let key = layout.key(index).expect("a key");
            assert_eq!(layout.index(&key), Some(index));
        }
        assert_eq!(layout.key(2_000), None);
    }

    #[test]
    fn keys_outside_the_layout_have_no_entry() {
        let layout = layout();
        assert_eq!(layout.index(&key([198, 18, 1, 1], 19_999)), None);
        assert_eq!(layout.index(&key([198, 18, 1, 1], 21_000)), None);
        assert_eq!(layout.index(&key([198, 18, 1, 2], 20_000)), None);
        let tcp = FlowKey {
            proto: 6,
            ..key([198, 18, 1, 1], 20_000)
        };
        assert_eq!(layout.index(&tcp), None);
        assert_eq!(FlowTableLayout::default().index(&key([0; 4], 0)), None);
    }

    #[test]
    fn addresses_are_added_once_and_up_to_the_table_s_room() {
        let mut layout = layout();
        assert_eq!(
            layout.add_address(IpAddress::from_ipv4([10, 0, 0, 1])),
            Some(1)
        );
        assert_eq!(
            layout.add_address(IpAddress::from_ipv4([10, 0, 0, 2])),
            Some(2)
        );
        assert_eq!(
            layout.add_address(IpAddress::from_ipv4([10, 0, 0, 3])),
            Some(3)
        );
        assert_eq!(
            layout.add_address(IpAddress::from_ipv4([10, 0, 0, 4])),
            None
        );
    }

    fn flow(port: u16) -> Flow {
        Flow {
            new_dst_port: port.to_be(),
            stats_slot: 3,
            ..Flow::REMOVED
        }
    }

    #[test]
    fn a_publication_never_touches_the_version_in_use() {
        let empty = FlowEntry {
            sequence: 0,
            versions: [Flow::REMOVED; 2],
        };
        assert_eq!(empty.published(), None);
        let [staged, first] = empty.publishing(Some(flow(4000)));
        assert_eq!(staged.sequence, 0);
        assert_eq!(
            staged.versions[0], empty.versions[0],
            "in use while staging"
        );
        assert_eq!(first.published(), Some(flow(4000)));

        let [staged, second] = first.publishing(Some(flow(5000)));
        assert_eq!(staged.sequence, first.sequence);
        assert_eq!(
            staged.versions[FlowEntry::published_version(first.sequence)],
            first.versions[FlowEntry::published_version(first.sequence)]
        );
        assert_eq!(
            staged.published(),
            Some(flow(4000)),
            "readers still see the old"
        );
        assert_eq!(second.published(), Some(flow(5000)));
        assert_eq!(second.versions, staged.versions, "only the sequence moves");

        let [_, removed] = second.publishing(None);
        assert_eq!(removed.published(), None);
        assert_eq!(removed.sequence, 3, "the sequence goes on after a removal");
    }
}
