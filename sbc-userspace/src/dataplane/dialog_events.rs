//! The dialogs the kernel saw end (`SBC_DIALOG_EVENTS`): the XDP program forwarded the final
//! response to a BYE itself, so the daemon learns of the call's end from it. The ring buffer is
//! pinned: what the kernel reported while no daemon ran is read by the next one.
use aya::maps::{Map, MapData, RingBuf};
use sbc_common::{DialogEnded, maps::DIALOG_EVENTS};
use tokio::io::{Interest, unix::AsyncFd};

use super::{PinLayout, maps::open};

pub struct DialogEvents {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl DialogEvents {
    pub fn open(layout: &PinLayout) -> anyhow::Result<Self> {
        let ring = RingBuf::try_from(Map::RingBuf(open(layout, DIALOG_EVENTS)?))?;
        // SAFETY: the ring owns its map's descriptor, open and the same for as long as it lives.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("watching the dialog events ring: {e}"))?;
        Ok(Self { ring })
    }

    /// The next ends reported, waiting for at least one.
    pub async fn next(&mut self) -> anyhow::Result<Vec<DialogEnded>> {
        loop {
            let mut ready = self.ring.readable_mut().await?;
            let ends = read_all(ready.get_inner_mut());
            ready.clear_ready();
            if !ends.is_empty() {
                return Ok(ends);
            }
        }
    }
}

fn read_all(ring: &mut RingBuf<MapData>) -> Vec<DialogEnded> {
    let mut ends = Vec::new();
    while let Some(record) = ring.next() {
        // The kernel writes whole records of this type; anything else is not ours to read.
        if let Ok(end) = bytemuck::try_pod_read_unaligned::<DialogEnded>(&record) {
            ends.push(end);
        }
    }
    ends
}
