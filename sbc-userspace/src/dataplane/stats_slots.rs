//! Which slot of the per-CPU counters array (`SBC_FLOW_STATS`) each installed flow owns. Slots
//! are handed out least recently freed first, so that a packet of a flow just removed, still
//! in flight in the XDP program, cannot count towards the flow that takes its slot next.
use std::collections::{HashMap, HashSet, VecDeque};

use sbc_common::FlowKey;

pub struct StatsSlots {
    owned: HashMap<FlowKey, u32>,
    free: VecDeque<u32>,
}

impl StatsSlots {
    /// `capacity` slots, of which `installed` flows (from a daemon that ran before) already
    /// own theirs.
    pub fn new(capacity: u32, installed: impl IntoIterator<Item = (FlowKey, u32)>) -> Self {
        let owned: HashMap<FlowKey, u32> = installed.into_iter().collect();
        let taken: HashSet<u32> = owned.values().copied().collect();
        let free = (0..capacity).filter(|slot| !taken.contains(slot)).collect();
        Self { owned, free }
    }

    pub fn of(&self, key: &FlowKey) -> Option<u32> {
        self.owned.get(key).copied()
    }

    /// A free slot, or `None` when all are taken. It belongs to a flow once `confirm`ed;
    /// until then `give_back` returns it.
    pub fn take(&mut self) -> Option<u32> {
        self.free.pop_front()
    }

    pub fn confirm(&mut self, key: FlowKey, slot: u32) {
        self.owned.insert(key, slot);
    }

    /// Returns a slot that was taken but not confirmed: it is handed out next.
    pub fn give_back(&mut self, slot: u32) {
        self.free.push_front(slot);
    }

    /// Frees `key`'s slot, if it owns one: it is handed out after every other free slot.
    pub fn release(&mut self, key: &FlowKey) {
        if let Some(slot) = self.owned.remove(key) {
            self.free.push_back(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use sbc_common::IpAddress;

    use super::*;

    fn key(port: u16) -> FlowKey {
        FlowKey::udp(IpAddress::from_ipv4([198, 18, 1, 1]), port.to_be())
    }

    #[test]
    fn flows_of_an_earlier_daemon_keep_their_slots() {
        let mut slots = StatsSlots::new(4, [(key(1), 0), (key(2), 2)]);
        assert_eq!(slots.of(&key(2)), Some(2));
        assert_eq!(slots.take(), Some(1));
        assert_eq!(slots.take(), Some(3));
        assert_eq!(slots.take(), None);
    }

    #[test]
    fn a_freed_slot_is_reused_last_and_a_returned_one_first() {
        let mut slots = StatsSlots::new(3, []);
        let first = slots.take().unwrap();
        slots.confirm(key(1), first);
        slots.release(&key(1));
        assert_eq!(slots.of(&key(1)), None);
        // Slots 1 and 2 were free before slot 0 was released.
        let next = slots.take().unwrap();
        assert_eq!(next, 1);
        slots.give_back(next);
        assert_eq!(slots.take(), Some(1));
        assert_eq!(slots.take(), Some(2));
        assert_eq!(slots.take(), Some(first));
        // Releasing a flow that owns nothing changes nothing.
        slots.release(&key(9));
        assert_eq!(slots.take(), None);
    }
}
