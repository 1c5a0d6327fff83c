//! The real XDP program under BPF_PROG_TEST_RUN: loaded fresh (unpinned) with its maps, in a
//! namespace of its own with two veth interfaces and permanent neighbour entries, so that
//! `bpf_fib_lookup` answers deterministically. The fixtures test every verdict with it and the
//! benchmark times it.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, DevMapHash, HashMap, MapData, PerCpuArray, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{TestRun, TestRunOptions, Xdp},
};
use sbc_common::{
    Block, Dialog, DialogEnded, Flow, FlowEntry, FlowKey, FlowStats, FlowTableLayout, GuardConfig,
    IpAddress, PacketLimit, Reason, SipListeners, SipSelves, SourceLimit, SourceRule,
    call_id::call_id_hash,
    flow::FLOW_LATCHED,
    flow_table::FLOW_TABLE_ADDRESSES,
    guard::{GUARD_ON, RULE_ALLOW},
    maps::{
        BLOCKS, DIALOG_EVENTS, DIALOGS, EGRESS, FLOW_LAYOUT, FLOW_STATS, FLOWS, GUARD, PARTIES,
        REASONS, SIP_LISTENERS, SIP_SELF, SOURCE_RULES, XDP_PROGRAM,
    },
    sip_forward::corpus,
};

use crate::{
    frames::UdpFrame,
    netns::{self, Netns, unique_prefix},
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub const CALLER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
pub const ROGUE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 66);
pub const PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const PRIVATE: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
pub const CALLEE: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
pub const HAIRPIN_PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 3);
pub const UNRESOLVED: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 9);

/// The same hosts over IPv6 (the fixture is dual-stack; 2001:db8::/32 is for documentation).
pub const CALLER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
pub const ROGUE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x66);
pub const PUBLIC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const PRIVATE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
pub const CALLEE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);

pub const PUB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
pub const PRIV_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x01];
pub const CALLEE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x02];
pub const HAIRPIN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x03];

pub fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The fixture's namespaces: `sbc` holds pub0 and priv0, `peer` their other ends.
pub struct Fixture {
    pub sbc: Netns,
    _peer: Netns,
}

pub fn fixture() -> Fixture {
    let fixture = build_fixture(
        "fixtures",
        [("pub0", PUBLIC, PUB_MAC), ("priv0", PRIVATE, PRIV_MAC)],
        &[
            (CALLEE, CALLEE_MAC, "priv0"),
            (HAIRPIN_PEER, HAIRPIN_MAC, "priv0"),
            (CALLER, [0x02, 0, 0, 0, 0x01, 0x02], "pub0"),
        ],
        &[],
    );
    fixture.add_ipv6(
        [("pub0", PUBLIC6), ("priv0", PRIVATE6)],
        &[
            (CALLEE6, CALLEE_MAC, "priv0"),
            (CALLER6, [0x02, 0, 0, 0, 0x01, 0x02], "pub0"),
        ],
    );
    fixture
}

impl Fixture {
    /// IPv6 beside IPv4: an address in a /64 on each interface (without duplicate address
    /// detection, usable at once), IPv6 forwarding (`bpf_fib_lookup` asks for it) and permanent
    /// neighbours.
    pub fn add_ipv6(
        &self,
        interfaces: [(&str, Ipv6Addr); 2],
        neighbours: &[(Ipv6Addr, [u8; 6], &str)],
    ) {
        for (dev, addr) in interfaces {
            self.sbc
                .sysctl(&format!("net.ipv6.conf.{dev}.forwarding"), "1")
                .unwrap();
            self.sbc
                .ip(&["addr", "add", &format!("{addr}/64"), "dev", dev, "nodad"])
                .unwrap();
        }
        for (addr, mac_addr, dev) in neighbours {
            permanent_neighbour(&self.sbc, (*addr).into(), *mac_addr, dev);
        }
    }
}

/// A fixture of two interfaces (`pub0`, `priv0`: name, address in a /24, MAC), permanent
/// neighbours (address, MAC, interface) and on-link routes to further /24 networks (network,
/// interface).
pub fn build_fixture(
    name: &str,
    interfaces: [(&str, Ipv4Addr, [u8; 6]); 2],
    neighbours: &[(Ipv4Addr, [u8; 6], &str)],
    routes: &[(Ipv4Addr, &str)],
) -> Fixture {
    let prefix = unique_prefix(name);
    let sbc = Netns::create(&format!("{prefix}-sbc")).unwrap();
    let peer = Netns::create(&format!("{prefix}-peer")).unwrap();
    for ((dev, addr, mac_addr), peer_dev) in interfaces.into_iter().zip(["p0", "p1"]) {
        netns::run(
            "ip",
            &[
                "link", "add", "dev", dev, "netns", &sbc.name, "type", "veth", "peer", "name",
                peer_dev, "netns", &peer.name,
            ],
        )
        .unwrap();
        sbc.ip(&["link", "set", dev, "address", &mac(mac_addr)])
            .unwrap();
        sbc.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev])
            .unwrap();
        sbc.ip(&["link", "set", dev, "up"]).unwrap();
        peer.ip(&["link", "set", peer_dev, "up"]).unwrap();
        sbc.sysctl(&format!("net.ipv4.conf.{dev}.forwarding"), "1")
            .unwrap();
    }
    for (network, dev) in routes {
        sbc.ip(&["route", "add", &format!("{network}/24"), "dev", dev])
            .unwrap();
    }
    for (addr, mac_addr, dev) in neighbours {
        permanent_neighbour(&sbc, (*addr).into(), *mac_addr, dev);
    }
    Fixture { sbc, _peer: peer }
}

/// A neighbour entry that never ages: `bpf_fib_lookup` answers the same every time.
fn permanent_neighbour(ns: &Netns, addr: IpAddr, mac_addr: [u8; 6], dev: &str) {
    let (addr, mac_addr) = (addr.to_string(), mac(mac_addr));
    let args = [
        "neigh",
        "replace",
        &addr,
        "lladdr",
        &mac_addr,
        "dev",
        dev,
        "nud",
        "permanent",
    ];
    ns.ip(&args).unwrap();
}

pub fn ifindex(name: &str) -> u32 {
    sbc::config::interface_index(name).unwrap_or_else(|| panic!("no interface {name}"))
}

pub fn key(addr: impl Into<IpAddr>, port: u16) -> FlowKey {
    FlowKey::udp(IpAddress::from(addr.into()), port.to_be())
}

/// A flow as the daemon would install it; `A`: an address family's type, or `IpAddr` for a
/// flow between families.
pub struct FlowSpec<A = Ipv4Addr> {
    pub local: (A, u16),
    pub peer: Option<(A, u16)>,
    pub send_from: (A, u16),
    pub send_to: Option<(A, u16)>,
    pub leg: u8,
    pub stream: u8,
}

pub fn flow<A: Into<IpAddr> + Copy>(spec: &FlowSpec<A>) -> (FlowKey, Flow) {
    let address = |endpoint: Option<(A, u16)>| {
        endpoint.map_or((IpAddress::UNSPECIFIED, 0), |(addr, port)| {
            (IpAddress::from(addr.into()), port)
        })
    };
    let (peer, send_to) = (address(spec.peer), address(spec.send_to));
    (
        key(spec.local.0, spec.local.1),
        Flow {
            new_src: IpAddress::from(spec.send_from.0.into()),
            new_dst: send_to.0,
            peer: peer.0,
            new_src_port: spec.send_from.1.to_be(),
            new_dst_port: send_to.1.to_be(),
            peer_port: peer.1.to_be(),
            flags: if spec.peer.is_some() { FLOW_LATCHED } else { 0 },
            session_id: 7,
            leg: spec.leg,
            stream: spec.stream,
            generation: 0,
            // `Program::install` assigns it.
            stats_slot: 0,
        },
    )
}

/// The flow table's layout under test: every UDP port, on up to four addresses added as the
/// test installs flows on them.
const FIXTURE_LAYOUT: FlowTableLayout = FlowTableLayout {
    addresses: [IpAddress::UNSPECIFIED; 4],
    address_count: 0,
    port_min: 1,
    _pad: 0,
    ports: u16::MAX as u32,
};

/// The program with its maps, loaded fresh (unpinned) for this test.
pub struct Program {
    pub ebpf: Ebpf,
    /// The next unused counters slot (the maps are fresh: every slot starts at zero).
    next_stats_slot: u32,
}

impl Program {
    pub fn load() -> Self {
        let object =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ebpf/sbc-xdp.o");
        let bytes = std::fs::read(&object).unwrap_or_else(|e| {
            panic!(
                "cannot read {} ({e}); `cargo xtask build-ebpf` builds it",
                object.display()
            )
        });
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(FLOWS, FLOW_TABLE_ADDRESSES as u32 * FIXTURE_LAYOUT.ports)
            .load(&bytes)
            .expect("loading the XDP object");
        let program: &mut Xdp = ebpf.program_mut(XDP_PROGRAM).unwrap().try_into().unwrap();
        program.load().expect("the verifier accepts the program");
        let mut program = Self {
            ebpf,
            next_stats_slot: 0,
        };
        program.set_flow_layout(FIXTURE_LAYOUT);
        program
    }

    fn flow_layout(&self) -> FlowTableLayout {
        let map: Array<&MapData, FlowTableLayout> =
            Array::try_from(self.ebpf.map(FLOW_LAYOUT).unwrap()).unwrap();
        map.get(&0, 0).unwrap()
    }

    fn set_flow_layout(&mut self, layout: FlowTableLayout) {
        let mut map: Array<&mut MapData, FlowTableLayout> =
            Array::try_from(self.ebpf.map_mut(FLOW_LAYOUT).unwrap()).unwrap();
        map.set(0, layout, 0).unwrap();
    }

    /// The table entry of `key`, its address added to the layout if it is new.
    fn flow_entry(&mut self, key: &FlowKey) -> u32 {
        let mut layout = self.flow_layout();
        if layout.index(key).is_none() {
            layout
                .add_address(key.addr)
                .expect("a fixture uses at most four local media addresses");
            self.set_flow_layout(layout);
        }
        layout
            .index(key)
            .expect("every UDP port is in the fixture's layout")
    }

    /// The flow published at `key`, if any.
    fn published_flow(&self, key: &FlowKey) -> Option<Flow> {
        let index = self.flow_layout().index(key)?;
        let flows: Array<&MapData, FlowEntry> =
            Array::try_from(self.ebpf.map(FLOWS).unwrap()).unwrap();
        flows.get(&index, 0).unwrap().published()
    }

    /// Installs or replaces a flow, as the daemon does: a new flow gets counters of its own, a
    /// replaced one keeps its counters and is a new generation (its next hop is looked up anew).
    pub fn install(&mut self, key: FlowKey, value: Flow) {
        let (stats_slot, generation) = self.published_flow(&key).map_or_else(
            || {
                self.next_stats_slot += 1;
                (self.next_stats_slot - 1, 0)
            },
            |installed| (installed.stats_slot, installed.generation.wrapping_add(1)),
        );
        let index = self.flow_entry(&key);
        let flow = Flow {
            stats_slot,
            generation,
            ..value
        };
        let mut flows: Array<&mut MapData, FlowEntry> =
            Array::try_from(self.ebpf.map_mut(FLOWS).unwrap()).unwrap();
        let entry = flows.get(&index, 0).unwrap();
        for write in entry.publishing(Some(flow)) {
            flows.set(index, write, 0).unwrap();
        }
    }

    /// A second handle on the flow table, for a thread that republishes `key`'s flow while this
    /// one runs the program: each call of the returned writer publishes its flow as the daemon
    /// does (installed flows only: counters and generation as they are).
    pub fn flow_writer(&mut self, key: FlowKey) -> impl FnMut(Flow) + Send + use<> {
        let installed = self.published_flow(&key).expect("an installed flow");
        let index = self.flow_entry(&key);
        // A pin is the one way to a second descriptor of an unpinned map: made and removed at
        // once.
        let pin = std::path::Path::new("/sys/fs/bpf")
            .join(format!("sbc-fixture-flows-{}-{index}", std::process::id()));
        self.ebpf.map(FLOWS).unwrap().pin(&pin).unwrap();
        let opened = MapData::from_pin(&pin);
        std::fs::remove_file(&pin).unwrap();
        let mut flows: Array<MapData, FlowEntry> =
            Array::try_from(aya::maps::Map::Array(opened.unwrap())).unwrap();
        move |flow| {
            let entry = flows.get(&index, 0).unwrap();
            let flow = Flow {
                stats_slot: installed.stats_slot,
                ..flow
            };
            for write in entry.publishing(Some(flow)) {
                flows.set(index, write, 0).unwrap();
            }
        }
    }

    pub fn allow_egress(&mut self, interface: &str) {
        let mut egress = DevMapHash::try_from(self.ebpf.map_mut(EGRESS).unwrap()).unwrap();
        let index = ifindex(interface);
        egress.insert(index, index, None, 0).unwrap();
    }

    /// Adds `listener` to the SIP listeners the guard protects.
    pub fn listen_sip(&mut self, listener: FlowKey) {
        let mut map: Array<&mut MapData, SipListeners> =
            Array::try_from(self.ebpf.map_mut(SIP_LISTENERS).unwrap()).unwrap();
        let listeners = map.get(&0, 0).unwrap();
        let held = listeners
            .listeners
            .into_iter()
            .take(listeners.count as usize);
        let listeners = SipListeners::of(held.chain([listener])).expect("room for a listener");
        map.set(0, listeners, 0).unwrap();
    }

    pub fn configure_guard(&mut self, config: GuardConfig) {
        let mut guard: Array<&mut MapData, GuardConfig> =
            Array::try_from(self.ebpf.map_mut(GUARD).unwrap()).unwrap();
        guard.set(0, config, 0).unwrap();
    }

    pub fn add_rule(&mut self, network: Ipv4Addr, prefix: u32, rule: SourceRule) {
        let mut rules: LpmTrie<&mut MapData, [u8; 16], SourceRule> =
            LpmTrie::try_from(self.ebpf.map_mut(SOURCE_RULES).unwrap()).unwrap();
        let key = Key::new(96 + prefix, IpAddress::from_ipv4(network.octets()).octets);
        rules.insert(&key, rule, 0).unwrap();
    }

    pub fn add_dialog(&mut self, call_id: &str, seed: u64) {
        let mut dialogs: HashMap<&mut MapData, u64, Dialog> =
            HashMap::try_from(self.ebpf.map_mut(DIALOGS).unwrap()).unwrap();
        dialogs
            .insert(call_id_hash(call_id.as_bytes(), seed), Dialog::default(), 0)
            .unwrap();
    }

    /// Sets what the dialogs map holds for the dialog `id` (a seeded Call-ID hash).
    pub fn set_dialog(&mut self, id: u64, dialog: Dialog) {
        let mut dialogs: HashMap<&mut MapData, u64, Dialog> =
            HashMap::try_from(self.ebpf.map_mut(DIALOGS).unwrap()).unwrap();
        dialogs.insert(id, dialog, 0).unwrap();
    }

    /// The dialogs map's value for `id`.
    pub fn dialog(&self, id: u64) -> Dialog {
        let dialogs: HashMap<&MapData, u64, Dialog> =
            HashMap::try_from(self.ebpf.map(DIALOGS).unwrap()).unwrap();
        dialogs.get(&id, 0).expect("a dialog")
    }

    /// The dialog ends the program reported since the last call.
    pub fn dialog_events(&mut self) -> Vec<DialogEnded> {
        let mut ring = RingBuf::try_from(self.ebpf.map_mut(DIALOG_EVENTS).unwrap()).unwrap();
        let mut ends = Vec::new();
        while let Some(record) = ring.next() {
            ends.push(*bytemuck::from_bytes::<DialogEnded>(&record));
        }
        ends
    }

    pub fn set_sip_selves(&mut self, selves: SipSelves) {
        let mut map: Array<&mut MapData, SipSelves> =
            Array::try_from(self.ebpf.map_mut(SIP_SELF).unwrap()).unwrap();
        map.set(0, selves, 0).unwrap();
    }

    /// Makes `caller` the caller of `calls` calls (0: of none) and marks its block if it has
    /// one, as the daemon does.
    pub fn set_party(&mut self, caller: Ipv4Addr, calls: u32) {
        let mut parties: HashMap<&mut MapData, IpAddress, u32> =
            HashMap::try_from(self.ebpf.map_mut(PARTIES).unwrap()).unwrap();
        let caller = IpAddress::from_ipv4(caller.octets());
        if calls == 0 {
            parties.remove(&caller).unwrap();
        } else {
            parties.insert(caller, calls, 0).unwrap();
        }
        let mut blocks = self.blocks();
        if let Ok(block) = blocks.get(&caller, 0) {
            let party = u32::from(calls > 0);
            blocks.insert(caller, Block { party, ..block }, 0).unwrap();
        }
    }

    /// The dynamic blocks (an LRU hash, read and written like a hash map).
    pub fn blocks(&mut self) -> HashMap<&mut MapData, IpAddress, Block> {
        HashMap::try_from(self.ebpf.map_mut(BLOCKS).unwrap()).unwrap()
    }

    pub fn reasons(&self) -> Vec<u64> {
        let counters: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map(REASONS).unwrap()).unwrap();
        Reason::ALL
            .iter()
            .map(|&r| counters.get(&(r as u32), 0).unwrap().iter().sum())
            .collect()
    }

    /// The counters of an installed flow, summed over CPUs.
    pub fn flow_stats(&self, key: &FlowKey) -> FlowStats {
        let slot = self
            .published_flow(key)
            .expect("an installed flow")
            .stats_slot;
        let stats: PerCpuArray<&MapData, FlowStats> =
            PerCpuArray::try_from(self.ebpf.map(FLOW_STATS).unwrap()).unwrap();
        stats
            .get(&slot, 0)
            .unwrap()
            .iter()
            .fold(FlowStats::default(), FlowStats::merge)
    }

    /// Runs the program on `frame` as if it arrived on `interface`.
    pub fn run(&mut self, frame: &[u8], interface: &str) -> (u32, Vec<u8>) {
        let (action, out, _) = self.run_repeated(frame, interface, 1);
        (action, out)
    }

    /// Runs the program `repeat` times on `frame`; its verdict, the frame it made, and the
    /// kernel's average run time per repetition.
    pub fn run_repeated(
        &mut self,
        frame: &[u8],
        interface: &str,
        repeat: u32,
    ) -> (u32, Vec<u8>, std::time::Duration) {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
        let ctx: Vec<u8> = [0, frame.len() as u32, 0, ifindex(interface), 0, 0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let mut out = vec![0u8; frame.len() + 256];
        let program: &mut Xdp = self
            .ebpf
            .program_mut(XDP_PROGRAM)
            .unwrap()
            .try_into()
            .unwrap();
        let mut options = TestRunOptions::new();
        options.data_in = Some(frame);
        options.data_out = Some(&mut out);
        options.ctx_in = Some(&ctx);
        options.repeat = repeat;
        let result = program.test_run(options).expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        (result.return_value, out, result.duration)
    }
}

/// The MACs of the corpus's fixture: our two interfaces, and the parties behind them.
pub const CORPUS_PUBLIC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x01];
pub const CORPUS_PRIVATE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x01];
pub const CORPUS_CARRIER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0a, 0x05];
pub const CORPUS_BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x0a];

fn corpus_address((ip, _): ([u8; 4], u16)) -> Ipv4Addr {
    Ipv4Addr::from(ip)
}

/// A fixture whose two interfaces hold the differential corpus's listener addresses
/// (`sbc_common::sip_forward::corpus`), with permanent neighbour entries for both parties.
pub fn corpus_fixture() -> Fixture {
    build_fixture(
        "sip-forward",
        [
            ("pub0", corpus_address(corpus::PUBLIC), CORPUS_PUBLIC_MAC),
            ("priv0", corpus_address(corpus::PRIVATE), CORPUS_PRIVATE_MAC),
        ],
        &[
            (corpus_address(corpus::CARRIER), CORPUS_CARRIER_MAC, "pub0"),
            (corpus_address(corpus::BACKEND), CORPUS_BACKEND_MAC, "priv0"),
        ],
        &[(Ipv4Addr::new(203, 0, 113, 0), "pub0")],
    )
}

/// The program with the corpus's call as the daemon sets it up: listeners on both sides, the
/// guard on (a stranger's limits for the carrier, the backend allowlisted without limits),
/// the dialog with the dialogs map's `seed`, and our addresses.
pub fn corpus_program(seed: u64) -> Program {
    let mut program = Program::load();
    for listener in [corpus::PUBLIC, corpus::PRIVATE] {
        program.listen_sip(key(corpus_address(listener), listener.1));
    }
    program.configure_guard(GuardConfig {
        default_limit: SourceLimit {
            packets: PacketLimit {
                rate: 1000,
                burst: 1000,
            },
            invites: PacketLimit {
                rate: 10,
                burst: 10,
            },
        },
        block_after_drops: 0,
        flags: GUARD_ON,
        block_ns: 1_000_000_000,
        dialog_seed: seed,
    });
    program.add_rule(
        corpus_address(corpus::BACKEND),
        32,
        SourceRule {
            action: RULE_ALLOW,
            limit: SourceLimit::UNLIMITED,
        },
    );
    program.set_dialog(
        call_id_hash(corpus::CALL_ID.as_bytes(), seed),
        corpus::dialog(seed, corpus::Topology::Open),
    );
    program.set_sip_selves(corpus::selves());
    program.allow_egress("pub0");
    program.allow_egress("priv0");
    program
}

/// Where a corpus sender's frames arrive: the interface, and the MACs on the wire (ours,
/// theirs).
pub fn corpus_arrival(sender: corpus::Sender) -> (&'static str, [u8; 6], [u8; 6]) {
    match sender {
        corpus::Sender::Carrier => ("pub0", CORPUS_PUBLIC_MAC, CORPUS_CARRIER_MAC),
        corpus::Sender::Backend => ("priv0", CORPUS_PRIVATE_MAC, CORPUS_BACKEND_MAC),
    }
}

/// A corpus case's message as its sender sends it to our listener.
pub fn corpus_frame(case: &corpus::Case) -> UdpFrame {
    let (_, our_mac, their_mac) = corpus_arrival(case.sender);
    let (from, to) = (case.sender.source(), case.sender.listener());
    UdpFrame {
        eth_dst: our_mac,
        eth_src: their_mac,
        payload: case.message.as_bytes().to_vec(),
        ..UdpFrame::rtp((corpus_address(from), from.1), (corpus_address(to), to.1))
    }
}
