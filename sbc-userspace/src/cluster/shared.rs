//! A call as the fleet keeps it: the journal's record of its dialog, and the flows of its media
//! sessions as the owner forwards by them (with the peers already latched), so that the node
//! taking it over relays its media at once, without learning the peers again.
use sbc_common::{Flow, FlowKey};
use serde::{Deserialize, Serialize};

use crate::proxy::journal::CallRecord;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedCall {
    pub owner: String,
    /// The owner's claim on the group when it wrote this.
    pub epoch: u64,
    pub written_unix_ms: u64,
    pub record: CallRecord,
    /// The sessions `record.media` names, with their flows.
    #[serde(default)]
    pub media: Vec<SharedSession>,
}

/// One media session: its id on the owner, and each flow as `<key>/<flow>`, the bytes of the
/// kernel map's key and value in hex (the map's own layout: a node of another layout refuses
/// them rather than misreading them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedSession {
    pub id: u32,
    pub flows: Vec<String>,
}

impl SharedSession {
    pub fn new(id: u32, flows: &[(FlowKey, Flow)]) -> Self {
        Self {
            id,
            flows: flows
                .iter()
                .map(|(key, flow)| {
                    format!(
                        "{}/{}",
                        hex(bytemuck::bytes_of(key)),
                        hex(bytemuck::bytes_of(flow))
                    )
                })
                .collect(),
        }
    }

    /// The flows, or what is wrong with them.
    pub fn flows(&self) -> Result<Vec<(FlowKey, Flow)>, String> {
        self.flows
            .iter()
            .map(|text| {
                let (key, flow) = text
                    .split_once('/')
                    .ok_or_else(|| format!("a flow without '/': {text:?}"))?;
                Ok((pod(key, "key")?, pod(flow, "flow")?))
            })
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn pod<T: bytemuck::Pod>(text: &str, what: &str) -> Result<T, String> {
    let wrong = || {
        format!(
            "a flow {what} of {} hex digits, where this build's is {} (another layout?)",
            text.len(),
            2 * size_of::<T>()
        )
    };
    if text.len() != 2 * size_of::<T>() || !text.is_ascii() {
        return Err(wrong());
    }
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).map_err(|_| wrong()))
        .collect::<Result<_, _>>()?;
    Ok(bytemuck::pod_read_unaligned(&bytes))
}

#[cfg(test)]
mod tests {
    use sbc_common::IpAddress;

    use super::*;

    #[test]
    fn flows_come_back_as_they_were_shared_and_another_layout_is_refused() {
        let key = FlowKey::udp(IpAddress::from_ipv4([198, 51, 100, 10]), 20_000u16.to_be());
        let mut flow = Flow {
            new_src: IpAddress::from_ipv4([10, 0, 0, 10]),
            new_dst: IpAddress::from_ipv4([10, 0, 0, 3]),
            new_src_port: 20_002u16.to_be(),
            new_dst_port: 6000u16.to_be(),
            session_id: 7,
            ..bytemuck::Zeroable::zeroed()
        };
        flow.latch(
            IpAddress::from_ipv4([203, 0, 113, 5]),
            4000u16.to_be(),
            sbc_common::flow::PeerMatch::Sdp,
            false,
        );
        let shared = SharedSession::new(7, &[(key, flow)]);
        let json = serde_json::to_string(&shared).unwrap();
        let back: SharedSession = serde_json::from_str(&json).unwrap();
        let flows = back.flows().unwrap();
        assert_eq!(flows.len(), 1);
        assert_eq!(bytemuck::bytes_of(&flows[0].0), bytemuck::bytes_of(&key));
        assert_eq!(bytemuck::bytes_of(&flows[0].1), bytemuck::bytes_of(&flow));
        assert!(flows[0].1.is_latched());

        let mut shorter = back.clone();
        let shortened = shorter.flows[0].len() - 2;
        shorter.flows[0].truncate(shortened);
        assert!(shorter.flows().unwrap_err().contains("another layout"));
        let mut garbled = back;
        garbled.flows[0] = garbled.flows[0].replace('/', "");
        assert!(garbled.flows().is_err());
    }
}
