//! Loading and attaching the XDP program so that its state outlives the daemon.
//!
//! Maps are created pinned (or re-opened from their pins); each interface's XDP link is pinned
//! too. A daemon that finds a pinned link swaps its program atomically (`bpf_link_update`), so
//! media keeps flowing across restarts and upgrades.
use std::path::Path;

use anyhow::{Context as _, bail};
use aya::{
    EbpfLoader,
    maps::DevMapHash,
    programs::{
        Xdp,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpMode},
    },
};
use sbc_common::maps::{self as map_names, XDP_PROGRAM};
use tracing::{info, warn};

use super::{
    PinLayout, counters_upgrade, flow_table, flow_table_upgrade,
    maps::{check_pinned, layout_difference},
    pins::pinned_xdp_link_ifindex,
    table_sizes::{self, TableSizes},
};
use crate::config::{Config, XdpAttachMode, interface_index};

/// The XDP object built by `sbc-ebpf/build_recipe.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("SBC_XDP_OBJECT"));

/// Loads the program, attaches it to every configured interface (or takes over the links a
/// previous daemon pinned), and fills the egress map.
pub fn start(config: &Config, layout: &PinLayout) -> anyhow::Result<()> {
    layout.create()?;
    let installed = flow_table_upgrade::pinned_flows(layout)?;
    let carried = counters_upgrade::carry(layout, &installed)?;
    let sizes = TableSizes::of(config);
    table_sizes::fit_pinned(layout, &sizes, !installed.is_empty())?;
    let table = flow_table_upgrade::plan(layout, flow_table::configured_layout(config), installed)?;
    for name in map_names::ALL {
        let path = layout.map(name);
        if !path.exists() {
            continue;
        }
        if map_names::REBUILT.contains(name) {
            if let Some(difference) = layout_difference(&path, name)? {
                // The old program keeps its copy until its link takes the new program.
                warn!("{difference}; replacing it: it holds nothing this daemon does not rebuild");
                std::fs::remove_file(&path)
                    .with_context(|| format!("unpinning {}", path.display()))?;
            }
        } else {
            check_pinned(&path, name)?;
        }
    }
    let mut loader = EbpfLoader::new();
    for name in map_names::ALL {
        loader.map_pin_path(name, layout.map(name));
        if let Some(entries) = sizes.of_map(name) {
            loader.map_max_entries(name, entries);
        }
    }
    loader.map_max_entries(map_names::FLOWS, table.layout.capacity());
    if let Some(carried) = &carried {
        // The flows that the carried counters belong to keep their slots.
        loader.map_max_entries(map_names::FLOW_STATS, carried.capacity);
    }
    info!(
        flow_entries = table.layout.capacity(),
        flows = sizes.flows,
        calls = sizes.calls,
        counters_kib = sizes.counters_bytes(aya::util::nr_cpus().map_err(|(_, e)| e)?) >> 10,
        "kernel tables sized from the media port range and limits"
    );
    let mut ebpf = match loader.load(OBJECT) {
        Ok(ebpf) => ebpf,
        Err(e) => {
            if let Some(carried) = carried {
                carried.put_back()?;
            }
            table.put_back()?;
            return Err(e).context("loading the XDP object");
        }
    };
    table.restore(layout)?;
    if let Some(carried) = carried {
        carried.restore(
            ebpf.map_mut(map_names::FLOW_STATS)
                .context("the XDP object has no flow counters map")?,
        )?;
    }
    let program: &mut Xdp = ebpf
        .program_mut(XDP_PROGRAM)
        .context("the XDP object has no sbc_xdp program")?
        .try_into()?;
    program
        .load()
        .context("the kernel verifier rejected the XDP program")?;

    let mode = match config.dataplane.xdp_mode {
        XdpAttachMode::Native => XdpMode::Driver,
        XdpAttachMode::Generic => XdpMode::Skb,
    };
    detach_unconfigured(config, layout)?;
    let media = &config.media;
    let ipv6 = [media.public_address, media.private_address()]
        .iter()
        .any(|address| address.is_ipv6());
    for interface in &config.dataplane.interfaces {
        ensure_forwarding(interface, "ipv4", config.dataplane.enable_forwarding)?;
        if ipv6 {
            ensure_forwarding(interface, "ipv6", config.dataplane.enable_forwarding)?;
        }
        attach(program, interface, mode, layout)?;
    }

    let mut egress = DevMapHash::try_from(
        ebpf.map_mut(map_names::EGRESS)
            .context("the XDP object has no egress map")?,
    )?;
    for interface in &config.dataplane.interfaces {
        let index = interface_index(interface)
            .with_context(|| format!("interface {interface} disappeared"))?;
        egress
            .insert(index, index, None, 0)
            .with_context(|| format!("adding {interface} to the egress map"))?;
    }
    // Dropping `ebpf` closes our descriptors; the pins keep maps and links alive.
    Ok(())
}

fn attach(
    program: &mut Xdp,
    interface: &str,
    mode: XdpMode,
    layout: &PinLayout,
) -> anyhow::Result<()> {
    let pin = layout.link(interface);
    if pin.exists() && !link_still_attached(&pin, interface)? {
        std::fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
    }
    if pin.exists() {
        let link = PinnedLink::from_pin(&pin)
            .with_context(|| format!("opening pinned link {}", pin.display()))?;
        let link = XdpLink::try_from(FdLink::from(link))?;
        let id = program
            .attach_to_link(link)
            .with_context(|| format!("replacing the XDP program on {interface}"))?;
        // Keep it attached beyond this process: the pin holds it.
        let _ = FdLink::try_from(program.take_link(id)?)?;
        info!(
            interface,
            "took over pinned XDP link (program replaced atomically)"
        );
        return Ok(());
    }
    let id = program.attach(interface, mode).map_err(|e| {
        anyhow::anyhow!(
            "attaching XDP ({mode:?}) to {interface}: {e}; another XDP program may be attached \
             (see `ip link show {interface}`), or the driver lacks native XDP \
             (try dataplane.xdp_mode = \"generic\")"
        )
    })?;
    let link = FdLink::try_from(program.take_link(id)?).with_context(|| {
        format!("the kernel attached XDP on {interface} without a bpf_link; it cannot be pinned")
    })?;
    link.pin(&pin)
        .with_context(|| format!("pinning the XDP link at {}", pin.display()))?;
    info!(interface, ?mode, "attached XDP program");
    Ok(())
}

/// False when a pinned link no longer drives `interface` (the interface was deleted, perhaps
/// recreated under the same name): taking it over would leave XDP silently off.
fn link_still_attached(pin: &Path, interface: &str) -> anyhow::Result<bool> {
    let attached_to = pinned_xdp_link_ifindex(pin)
        .with_context(|| format!("inspecting pinned link {}", pin.display()))?;
    if Some(attached_to) == interface_index(interface) {
        return Ok(true);
    }
    warn!(
        interface,
        "the pinned XDP link belongs to a vanished interface; attaching anew"
    );
    Ok(false)
}

/// Detaches the links of interfaces that are no longer configured.
fn detach_unconfigured(config: &Config, layout: &PinLayout) -> anyhow::Result<()> {
    let links = layout.dir.join("links");
    for entry in
        std::fs::read_dir(&links).with_context(|| format!("reading {}", links.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !config.dataplane.interfaces.contains(&name) {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
            info!(
                interface = name,
                "detached XDP: the interface is no longer configured"
            );
        }
    }
    Ok(())
}

/// `bpf_fib_lookup` refuses to route for an ingress interface without forwarding of the
/// packet's family (`ipv4`, `ipv6`: the sysctl tree).
fn ensure_forwarding(interface: &str, family: &str, enable: bool) -> anyhow::Result<()> {
    let sysctl = |name: &str| format!("/proc/sys/net/{family}/conf/{interface}/{name}");
    let path = sysctl("forwarding");
    let current = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    if current.trim() == "1" {
        return Ok(());
    }
    if !enable {
        bail!(
            "{family} forwarding is off on {interface}, so XDP cannot look up next hops; \
             set {path} to 1 or dataplane.enable_forwarding = true"
        );
    }
    if family == "ipv6" {
        // An IPv6 interface that forwards ignores router advertisements unless accept_ra is 2:
        // a host that learns its default route from them (a cloud VM) must keep it.
        let accept_ra = sysctl("accept_ra");
        if std::fs::read_to_string(&accept_ra).is_ok_and(|value| value.trim() == "1") {
            std::fs::write(&accept_ra, "2").with_context(|| format!("writing {accept_ra}"))?;
        }
    }
    std::fs::write(&path, "1").with_context(|| format!("writing {path}"))?;
    warn!(
        interface,
        family,
        "enabled forwarding (needed by bpf_fib_lookup); filter routed traffic with your firewall"
    );
    Ok(())
}
