//! The SIP guard's maps, as the daemon writes them: configuration, listeners, CIDR rules,
//! dialogs, the callers of calls, and dynamic blocks (see `sbc_common::guard` for what the program does with them).
use std::{collections::HashSet, net::SocketAddr};

use anyhow::Context as _;
use aya::maps::{
    Array, HashMap, Map, MapData,
    lpm_trie::{Key, LpmTrie},
};
use ipnet::IpNet;
use sbc_common::{
    Block, Dialog, DialogEnd, FlowKey, GuardConfig, IpAddress, SipListeners, SipSelves, SourceRule,
    dialog::LEG_FORWARD,
    maps::{
        BLOCKS, DIALOGS, GUARD, MAX_SIP_LISTENERS, PARTIES, SIP_LISTENERS, SIP_SELF, SOURCE_RULES,
    },
};

use super::{PinLayout, maps::open};

pub struct GuardMaps {
    config: Array<MapData, GuardConfig>,
    listeners: Array<MapData, SipListeners>,
    rules: LpmTrie<MapData, [u8; 16], SourceRule>,
    dialogs: HashMap<MapData, u64, Dialog>,
    /// Dialogs the map holds (its size, from the configuration of the daemon that made it).
    dialogs_capacity: u32,
    parties: HashMap<MapData, IpAddress, u32>,
    blocks: HashMap<MapData, IpAddress, Block>,
    sip_self: Array<MapData, SipSelves>,
}

/// The trie key of a CIDR: IPv4 networks are stored IPv4-mapped, 96 bits longer.
pub fn rule_key(net: &IpNet) -> Key<[u8; 16]> {
    let bits = match net {
        IpNet::V4(v4) => 96 + u32::from(v4.prefix_len()),
        IpNet::V6(v6) => u32::from(v6.prefix_len()),
    };
    Key::new(bits, IpAddress::from(net.network()).octets)
}

impl GuardMaps {
    pub fn open(layout: &PinLayout) -> anyhow::Result<Self> {
        let dialogs = open(layout, DIALOGS)?;
        let dialogs_capacity = dialogs.info()?.max_entries();
        Ok(Self {
            config: Array::try_from(Map::Array(open(layout, GUARD)?))?,
            listeners: Array::try_from(Map::Array(open(layout, SIP_LISTENERS)?))?,
            rules: LpmTrie::try_from(Map::LpmTrie(open(layout, SOURCE_RULES)?))?,
            dialogs: HashMap::try_from(Map::HashMap(dialogs))?,
            dialogs_capacity,
            parties: HashMap::try_from(Map::HashMap(open(layout, PARTIES)?))?,
            blocks: HashMap::try_from(Map::LruHashMap(open(layout, BLOCKS)?))?,
            sip_self: Array::try_from(Map::Array(open(layout, SIP_SELF)?))?,
        })
    }

    pub fn config(&self) -> anyhow::Result<GuardConfig> {
        self.config
            .get(&0, 0)
            .context("reading the guard configuration map")
    }

    pub fn set_config(&mut self, config: GuardConfig) -> anyhow::Result<()> {
        self.config
            .set(0, config, 0)
            .context("writing the guard configuration map")
    }

    /// Makes `listeners` exactly the set of protected SIP listeners.
    pub fn set_listeners(&mut self, listeners: &[SocketAddr]) -> anyhow::Result<()> {
        let keys = listeners
            .iter()
            .map(|l| FlowKey::udp(IpAddress::from(l.ip()), l.port().to_be()));
        let listeners = SipListeners::of(keys).with_context(|| {
            format!(
                "{} SIP listeners, the kernel guards at most {MAX_SIP_LISTENERS}",
                listeners.len()
            )
        })?;
        self.listeners
            .set(0, listeners, 0)
            .context("writing the SIP listeners map")
    }

    /// Makes the CIDR rules exactly `rules`: new ones are written before stale ones go, so
    /// a reload never opens a gap.
    pub fn set_rules(&mut self, rules: &[(IpNet, SourceRule)]) -> anyhow::Result<()> {
        let wanted: Vec<(Key<[u8; 16]>, SourceRule)> = rules
            .iter()
            .map(|(net, rule)| (rule_key(net), *rule))
            .collect();
        let identity = |key: &Key<[u8; 16]>| (key.prefix_len(), key.data());
        let keep: HashSet<(u32, [u8; 16])> = wanted.iter().map(|(key, _)| identity(key)).collect();
        for (key, rule) in &wanted {
            self.rules
                .insert(key, rule, 0)
                .context("writing the source rules map")?;
        }
        let stale: Vec<Key<[u8; 16]>> = self
            .rules
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !keep.contains(&identity(key)))
            .collect();
        for key in stale {
            let _ = self.rules.remove(&key);
        }
        Ok(())
    }

    pub fn add_dialog(&mut self, id: u64) -> anyhow::Result<()> {
        self.dialogs
            .insert(id, Dialog::default(), 0)
            .with_context(|| {
                format!(
                    "adding a dialog to the kernel map (capacity {})",
                    self.dialogs_capacity
                )
            })
    }

    /// What the program needs to forward an established dialog's SIP; what the kernel keeps
    /// in an entry it holds (counts, CSeqs, an end) stays (`Dialog::keeping_kernel_state`).
    pub fn set_dialog(&mut self, id: u64, dialog: Dialog) -> anyhow::Result<()> {
        let dialog = match self.dialogs.get(&id, 0) {
            Ok(held) => dialog.keeping_kernel_state(&held),
            Err(_) => dialog,
        };
        self.dialogs
            .insert(id, dialog, 0)
            .context("writing a dialog to the kernel map")
    }

    /// Our SIP addresses on each side, as the proxy writes them.
    pub fn set_sip_selves(&mut self, selves: &SipSelves) -> anyhow::Result<()> {
        self.sip_self
            .set(0, selves, 0)
            .context("writing the SIP self map")
    }

    /// Our SIP addresses as the kernel holds them.
    pub fn sip_selves(&self) -> anyhow::Result<SipSelves> {
        self.sip_self.get(&0, 0).context("reading the SIP self map")
    }

    pub fn remove_dialog(&mut self, id: u64) {
        let _ = self.dialogs.remove(&id);
    }

    /// Every dialog the kernel holds, by id.
    pub fn dialogs(&self) -> Vec<(u64, Dialog)> {
        self.dialogs.iter().filter_map(Result::ok).collect()
    }

    /// The dialogs whose end the kernel recorded, with how they ended.
    pub fn ended_dialogs(&self) -> Vec<(u64, DialogEnd)> {
        self.dialogs
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, dialog)| dialog.ended.at_ns != 0)
            .map(|(id, dialog)| (id, dialog.ended))
            .collect()
    }

    /// The highest CSeq numbers the kernel forwarded in a dialog, per direction.
    pub fn highest_cseqs(&self, id: u64) -> Option<[u32; 2]> {
        let dialog = self.dialogs.get(&id, 0).ok()?;
        Some(dialog.legs.map(|leg| leg.cseq))
    }

    /// Whether the kernel forwards a dialog's SIP (either way).
    pub fn forwards(&self, id: u64) -> bool {
        self.dialogs
            .get(&id, 0)
            .is_ok_and(|dialog| dialog.legs.iter().any(|leg| leg.flags & LEG_FORWARD != 0))
    }

    /// What the kernel forwarded of a dialog: requests and responses, both ways.
    pub fn forwarded(&self, id: u64) -> Option<u64> {
        let dialog = self.dialogs.get(&id, 0).ok()?;
        Some(
            dialog
                .legs
                .iter()
                .map(|leg| leg.requests + leg.responses)
                .sum(),
        )
    }

    pub fn dialog_ids(&self) -> Vec<u64> {
        self.dialogs.keys().filter_map(Result::ok).collect()
    }

    /// Records that `party` is the caller of a confirmed call we hold (the kernel needs no
    /// more: the daemon counts the calls).
    pub fn add_party(&mut self, party: IpAddress) -> anyhow::Result<()> {
        self.parties
            .insert(party, 1, 0)
            .context("writing the parties map")
    }

    pub fn remove_party(&mut self, party: &IpAddress) {
        let _ = self.parties.remove(party);
    }

    /// Marks a block of `source`, if it has one, as a party's or not (`Block::party`). The
    /// entry is rewritten whole: a count the program adds meanwhile may be lost.
    pub fn mark_block_party(&mut self, source: &IpAddress, party: bool) {
        if let Ok(block) = self.blocks.get(source, 0)
            && (block.party != 0) != party
        {
            let block = Block {
                party: u32::from(party),
                ..block
            };
            let _ = self.blocks.insert(source, block, 0);
        }
    }

    pub fn parties(&self) -> Vec<IpAddress> {
        self.parties.keys().filter_map(Result::ok).collect()
    }

    pub fn block(&mut self, source: IpAddress, block: Block) -> anyhow::Result<()> {
        self.blocks
            .insert(source, block, 0)
            .context("writing the blocks map")
    }

    pub fn unblock(&mut self, source: &IpAddress) -> bool {
        self.blocks.remove(source).is_ok()
    }

    pub fn blocks(&self) -> Vec<(IpAddress, Block)> {
        self.blocks.iter().filter_map(Result::ok).collect()
    }
}
