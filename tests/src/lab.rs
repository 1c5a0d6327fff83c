//! The lab topology: a caller, the sbc with a public and a private interface, a callee, and a
//! rogue host on the Internet side (for injection tests).
//!
//! ```text
//!  rogue 198.18.3.2 ─ 198.18.3.1 caller 198.18.1.2 ─ pub0 198.18.1.1  sbc  198.18.2.1 priv0 ─ 198.18.2.2 callee
//!         eth0         rogue0       (routes)   eth0                               eth0  198.18.2.3
//! ```
//! The callee's second address, 198.18.2.3, stands for another host on the backends' network
//! (an attacker on the private side). On demand the rogue host also holds a botnet's addresses,
//! 198.18.4.0/22, routed through the caller like its own.
//! 198.18.0.0/15 is the benchmarking range (RFC 2544): it exists only inside these namespaces.
//!
//! The caller ↔ sbc ↔ callee links carry IPv6 too (2001:db8::/32, documentation, likewise only
//! inside): caller 2001:db8:1::2 ─ pub0 2001:db8:1::1, priv0 2001:db8:2::1 ─ callee
//! 2001:db8:2::2 (not behind the NAT).
//!
//! `Lab::behind_nat` puts a 1:1 NAT between the caller and the sbc, as a cloud provider does in
//! front of a VM: pub0 holds only an inside address, 198.19.1.2, and the caller reaches it as
//! 198.18.1.1 through the `nat` namespace (nftables DNAT in, SNAT out; `SBC_PUBLIC` is then the
//! NAT's outside address, the one the sbc must advertise).
//!
//! ```text
//!  caller 198.18.1.2 ─ out0 198.18.1.1  nat  198.19.1.1 in0 ─ pub0 198.19.1.2  sbc ...
//! ```
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::Context as _;

use crate::netns::{Netns, unique_prefix};

pub const CALLER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
pub const SBC_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const SBC_PRIVATE: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
pub const CALLEE: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
pub const ROGUE: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 2);
/// A stranger on the backends' network (an address of the callee namespace).
pub const PRIVATE_ROGUE: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 3);
const ROGUE_GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 1);
/// The botnet's range: `Lab::botnet` hands out addresses from it.
const BOTNET: Ipv4Addr = Ipv4Addr::new(198, 18, 4, 0);
const BOTNET_PREFIX: u8 = 22;

/// Behind the NAT: the sbc's public interface, and the NAT's side of that link.
pub const SBC_INSIDE: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 2);
const NAT_INSIDE: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 1);

/// The same hosts over IPv6.
pub const CALLER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
pub const SBC_PUBLIC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const SBC_PRIVATE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
pub const CALLEE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);

/// The sbc namespace's interfaces, where XDP is attached.
pub const SBC_INTERFACES: [&str; 2] = ["pub0", "priv0"];

pub struct Lab {
    pub caller: Netns,
    pub sbc: Netns,
    pub callee: Netns,
    pub rogue: Netns,
    /// The 1:1 NAT in front of the sbc, in a lab built `behind_nat`.
    pub nat: Option<Netns>,
}

impl Lab {
    /// Builds the topology; `tag` names it (e.g. the test) so leftovers are recognisable.
    pub fn up(tag: &str) -> anyhow::Result<Self> {
        Self::up_named(&unique_prefix(tag))
    }

    /// Builds the topology with namespaces called `<prefix>-caller`, `<prefix>-sbc`, ...
    pub fn up_named(prefix: &str) -> anyhow::Result<Self> {
        Self::build(prefix, false)
    }

    /// The topology with the sbc behind a 1:1 NAT (see the module's doc).
    pub fn behind_nat(tag: &str) -> anyhow::Result<Self> {
        Self::build(&unique_prefix(tag), true)
    }

    fn build(prefix: &str, nat: bool) -> anyhow::Result<Self> {
        let lab = Self {
            caller: Netns::create(&format!("{prefix}-caller"))?,
            sbc: Netns::create(&format!("{prefix}-sbc"))?,
            callee: Netns::create(&format!("{prefix}-callee"))?,
            rogue: Netns::create(&format!("{prefix}-rogue"))?,
            nat: nat
                .then(|| Netns::create(&format!("{prefix}-nat")))
                .transpose()?,
        };
        lab.wire()
            .with_context(|| format!("building lab {prefix}"))?;
        Ok(lab)
    }

    /// The address pub0 holds: `SBC_PUBLIC`, or behind the NAT its inside address.
    pub fn sbc_public(&self) -> Ipv4Addr {
        if self.nat.is_some() {
            SBC_INSIDE
        } else {
            SBC_PUBLIC
        }
    }

    fn wire(&self) -> anyhow::Result<()> {
        let (caller, sbc, callee, rogue) = (&self.caller, &self.sbc, &self.callee, &self.rogue);
        self.connect_public()?;
        veth(sbc, "priv0", callee, "eth0")?;
        veth(rogue, "eth0", caller, "rogue0")?;
        address(caller, "rogue0", ROGUE_GATEWAY)?;
        address(sbc, "priv0", SBC_PRIVATE)?;
        address(callee, "eth0", CALLEE)?;
        address6(sbc, "priv0", SBC_PRIVATE6)?;
        address6(callee, "eth0", CALLEE6)?;
        address(callee, "eth0", PRIVATE_ROGUE)?;
        address(rogue, "eth0", ROGUE)?;
        // The caller's side stands for the Internet: it routes the rogue host to the sbc.
        caller.sysctl("net.ipv4.ip_forward", "1")?;
        rogue.ip(&["route", "add", "default", "via", &ROGUE_GATEWAY.to_string()])?;
        for ns in [callee, rogue] {
            host_offloads(ns, "eth0")?;
        }
        Ok(())
    }

    /// The caller ↔ sbc link (pub0), with the sbc's default route through it; behind the NAT,
    /// caller ↔ nat ↔ sbc.
    fn connect_public(&self) -> anyhow::Result<()> {
        let Some(nat) = &self.nat else {
            veth(&self.sbc, "pub0", &self.caller, "eth0")?;
            address(&self.caller, "eth0", CALLER)?;
            address(&self.sbc, "pub0", SBC_PUBLIC)?;
            address6(&self.caller, "eth0", CALLER6)?;
            address6(&self.sbc, "pub0", SBC_PUBLIC6)?;
            host_offloads(&self.caller, "eth0")?;
            self.sbc
                .ip(&["route", "replace", "default", "via", &CALLER.to_string()])?;
            return Ok(());
        };
        veth(nat, "out0", &self.caller, "eth0")?;
        veth(&self.sbc, "pub0", nat, "in0")?;
        address(&self.caller, "eth0", CALLER)?;
        address(nat, "out0", SBC_PUBLIC)?;
        address(nat, "in0", NAT_INSIDE)?;
        address(&self.sbc, "pub0", SBC_INSIDE)?;
        host_offloads(&self.caller, "eth0")?;
        // The NAT forwards what the sbc's XDP program redirects into in0: GRO gives it NAPI.
        host_offloads(nat, "in0")?;
        nat.sysctl("net.ipv4.ip_forward", "1")?;
        let (outside, inside) = (SBC_PUBLIC, SBC_INSIDE);
        let rules = format!(
            "table ip sbc_lab_nat {{\n\
             chain prerouting {{ type nat hook prerouting priority dstnat; ip daddr {outside} dnat to {inside}; }}\n\
             chain postrouting {{ type nat hook postrouting priority srcnat; ip saddr {inside} snat to {outside}; }}\n\
             }}\n"
        );
        let file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), rules)?;
        let path = file.path().to_string_lossy().into_owned();
        nat.exec("nft", &["-f", &path])
            .context("the NAT's nftables rules (cargo xtask setup installs nftables)")?;
        self.sbc.ip(&[
            "route",
            "replace",
            "default",
            "via",
            &NAT_INSIDE.to_string(),
        ])?;
        Ok(())
    }

    /// `count` (at most 1,024) addresses of the rogue host, as many sources on the Internet
    /// side: the whole range is local to the rogue namespace (any of it can be bound) and
    /// routed to it by the caller's side, so the sbc's answers reach it.
    pub fn botnet(&self, count: u16) -> anyhow::Result<Vec<Ipv4Addr>> {
        anyhow::ensure!(
            u32::from(count) <= 1 << (32 - BOTNET_PREFIX),
            "a botnet of {count} does not fit {BOTNET}/{BOTNET_PREFIX}"
        );
        let range = format!("{BOTNET}/{BOTNET_PREFIX}");
        self.rogue
            .ip(&["route", "add", "local", &range, "dev", "lo"])?;
        self.caller
            .ip(&["route", "add", &range, "via", &ROGUE.to_string()])?;
        Ok((0..u32::from(count))
            .map(|i| Ipv4Addr::from(u32::from(BOTNET) + i))
            .collect())
    }

    /// Deletes pub0 and creates it again (a new interface under the old name, as after a
    /// driver reload): whatever was attached to the old one is gone.
    pub fn recreate_public_interface(&self) -> anyhow::Result<()> {
        self.sbc.ip(&["link", "del", "pub0"])?;
        self.connect_public()
    }

    /// Keeps the namespaces after this process exits (`cargo xtask lab up`); `Lab::down` with
    /// the same prefix removes them.
    pub fn keep(self) {
        std::mem::forget(self);
    }

    /// Removes a kept lab.
    pub fn down(prefix: &str) {
        for role in ["caller", "sbc", "callee", "rogue", "nat"] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &format!("{prefix}-{role}")])
                .output();
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "namespaces: {} ({CALLER}), {} (pub0 {SBC_PUBLIC}, priv0 {SBC_PRIVATE}), {} ({CALLEE}), {} ({ROGUE})",
            self.caller.name, self.sbc.name, self.callee.name, self.rogue.name
        )
    }
}

/// A veth hands locally sent packets over with the UDP checksum still to be filled in (checksum
/// offload); the XDP relay forwards frames as they are, as it must for real NICs, so lab hosts
/// compute full checksums like a host on a wire. GRO gives the veth NAPI, which XDP_REDIRECT into
/// it needs (no second XDP program).
fn host_offloads(ns: &Netns, dev: &str) -> anyhow::Result<()> {
    ns.exec("ethtool", &["-K", dev, "tx", "off", "gro", "on"])?;
    Ok(())
}

fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) -> anyhow::Result<()> {
    crate::netns::run(
        "ip",
        &[
            "link", "add", "dev", a_dev, "netns", &a.name, "type", "veth", "peer", "name", b_dev,
            "netns", &b.name,
        ],
    )?;
    Ok(())
}

/// An IPv6 address in a /64, usable at once (no duplicate address detection: the lab's
/// addresses are unique by construction).
fn address6(ns: &Netns, dev: &str, addr: Ipv6Addr) -> anyhow::Result<()> {
    ns.ip(&["addr", "add", &format!("{addr}/64"), "dev", dev, "nodad"])?;
    ns.ip(&["link", "set", dev, "up"])?;
    Ok(())
}

fn address(ns: &Netns, dev: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
    ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev])?;
    ns.ip(&["link", "set", dev, "up"])?;
    Ok(())
}
