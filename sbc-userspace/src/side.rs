//! Which side of the edge something is on: the carriers' or the backends'. Signalling,
//! media and admission all speak of it, so it lives below all of them.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Carriers and trunks: `media.public_address`.
    Public,
    /// Backends: `media.private_address`.
    Private,
}

impl Side {
    pub fn other(self) -> Self {
        match self {
            Side::Public => Side::Private,
            Side::Private => Side::Public,
        }
    }

    /// The side's number in the kernel's dialog tables (`sbc_common::branch`).
    pub fn index(self) -> u8 {
        match self {
            Side::Public => sbc_common::branch::SIDE_PUBLIC,
            Side::Private => sbc_common::branch::SIDE_PRIVATE,
        }
    }
}
