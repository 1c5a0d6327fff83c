//! The fleet lab: three sbc nodes on one bridge with a carrier and a backend, floating
//! addresses moved between the nodes by keepalived (Debian's, VRRP), call state in Redis.
//!
//! ```text
//!   carrier 198.18.20.2   backend 198.18.20.3 (SIPp, Redis :6379)
//!        │                    │
//!   ─────┴──── br0 (switch) ──┴───────┬──────────────┐
//!        │                 │                         │
//!   node-a .11         node-b .12               node-s .13 (standby)
//!   group a: .101 public, .102 private (VRRP 51: a 150, s 100)
//!   group b: .111 public, .112 private (VRRP 52: b 150, s 100)
//! ```
//! 198.18.0.0/15 is the benchmarking range (RFC 2544): it exists only inside these namespaces.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::netns::{Netns, command_in, unique_prefix};

pub const CARRIER: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 2);
pub const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 3);
pub const REDIS: SocketAddr = SocketAddr::new(IpAddr::V4(BACKEND), 6379);

/// One address group: its floating addresses and its VRRP router id.
#[derive(Debug, Clone, Copy)]
pub struct GroupAddresses {
    pub name: &'static str,
    pub public: Ipv4Addr,
    pub private: Ipv4Addr,
    pub router_id: u8,
}

pub const GROUPS: [GroupAddresses; 2] = [
    GroupAddresses {
        name: "a",
        public: Ipv4Addr::new(198, 18, 20, 101),
        private: Ipv4Addr::new(198, 18, 20, 102),
        router_id: 51,
    },
    GroupAddresses {
        name: "b",
        public: Ipv4Addr::new(198, 18, 20, 111),
        private: Ipv4Addr::new(198, 18, 20, 112),
        router_id: 52,
    },
];

/// A node: its name, own address, and the groups it may serve with its VRRP priority for each.
pub struct Node {
    pub name: &'static str,
    pub ns: Netns,
    pub address: Ipv4Addr,
    pub serves: Vec<(GroupAddresses, u8)>,
}

pub struct FleetLab {
    pub switch: Netns,
    pub carrier: Netns,
    pub backend: Netns,
    /// a, b (active) and s (standby for both).
    pub nodes: Vec<Node>,
}

impl FleetLab {
    pub fn up(tag: &str) -> anyhow::Result<Self> {
        let prefix = unique_prefix(tag);
        let create = |role: &str| Netns::create(&format!("{prefix}-{role}"));
        let node = |name: &'static str, last: u8, serves: Vec<(GroupAddresses, u8)>| {
            anyhow::Ok(Node {
                name,
                ns: create(&format!("node-{name}"))?,
                address: Ipv4Addr::new(198, 18, 20, last),
                serves,
            })
        };
        let lab = Self {
            switch: create("switch")?,
            carrier: create("carrier")?,
            backend: create("backend")?,
            nodes: vec![
                node("a", 11, vec![(GROUPS[0], 150)])?,
                node("b", 12, vec![(GROUPS[1], 150)])?,
                node("s", 13, vec![(GROUPS[0], 100), (GROUPS[1], 100)])?,
            ],
        };
        lab.wire()
            .with_context(|| format!("building fleet lab {prefix}"))?;
        Ok(lab)
    }

    fn wire(&self) -> anyhow::Result<()> {
        self.switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        self.switch.ip(&["link", "set", "br0", "up"])?;
        let hosts = [(&self.carrier, CARRIER), (&self.backend, BACKEND)]
            .into_iter()
            .chain(self.nodes.iter().map(|node| (&node.ns, node.address)));
        for (index, (ns, address)) in hosts.enumerate() {
            let port = format!("p{index}");
            crate::netns::run(
                "ip",
                &[
                    "link",
                    "add",
                    "dev",
                    "eth0",
                    "netns",
                    &ns.name,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &port,
                    "netns",
                    &self.switch.name,
                ],
            )?;
            self.switch.ip(&["link", "set", &port, "master", "br0"])?;
            // The bridge side takes what a node's XDP program transmits: GRO gives it NAPI.
            self.switch.exec("ethtool", &["-K", &port, "gro", "on"])?;
            self.switch.ip(&["link", "set", &port, "up"])?;
            // Full checksums, as a host on a wire (see `lab::host_offloads`).
            ns.exec("ethtool", &["-K", "eth0", "tx", "off", "gro", "on"])?;
            ns.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|node| node.name == name)
            .expect("a node of the lab")
    }
}

impl Node {
    /// The node's sbc configuration (without instance, state, API and events: see
    /// `Daemon::start_node`), its backends (taking calls in turn) at `backends`.
    pub fn sbc_config(&self, backends: &[SocketAddr], port_range: (u16, u16)) -> String {
        let first = self.serves[0].0;
        // Native XDP_TX from a veth into a bridge port is lost in the kernel (6.18: the frames
        // reach the port's NAPI but never its stack); generic XDP transmits through the stack.
        // Nodes on real NICs attach natively.
        let mut config = format!(
            r#"[dataplane]
interfaces = ["eth0"]
xdp_mode = "generic"
[media]
public_address = "{public}"
private_address = "{private}"
port_min = {min}
port_max = {max}
[sip]
public_listen = "{public}:5060"
private_listen = "{private}:5060"
[sip.health]
probes = false
{backends}[cluster]
redis = "redis://{REDIS}"
node = "node-{name}"
ttl_secs = 6
serves = [{serves}]
# A drain hands the group and its calls over at once.
drain_hand_over_at = 1000
"#,
            public = first.public,
            private = first.private,
            backends = backends
                .iter()
                .map(|backend| format!("[[sip.backends]]\naddress = \"{backend}\"\n"))
                .collect::<String>(),
            min = port_range.0,
            max = port_range.1,
            name = self.name,
            serves = self
                .serves
                .iter()
                .map(|(group, _)| format!("\"{}\"", group.name))
                .collect::<Vec<_>>()
                .join(", "),
        );
        for group in GROUPS {
            config.push_str(&format!(
                "[[cluster.groups]]\nname = \"{}\"\npublic_address = \"{}\"\nprivate_address = \"{}\"\n",
                group.name, group.public, group.private
            ));
        }
        config
    }

    /// Whether both addresses of `group` are on this node's interface now.
    pub fn holds(&self, group: &GroupAddresses) -> bool {
        self.ns
            .ip(&["-4", "-o", "addr", "show", "dev", "eth0"])
            .map(|out| {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                [group.public, group.private]
                    .iter()
                    .all(|address| text.contains(&format!("inet {address}/")))
            })
            .unwrap_or(false)
    }
}

/// keepalived (VRRP) on one node, with the configuration the project ships
/// (`packaging/keepalived/`) filled in for the lab; stopped by its PID when dropped.
pub struct Keepalived {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
}

/// The lab's VRRP advertisement interval: a master is declared dead after three missed
/// adverts (plus a skew by priority), well inside the media gap the fleet promises.
pub const ADVERT_INTERVAL: &str = "0.3";

impl Keepalived {
    /// Starts keepalived in `node`'s namespace; `notify`: the command keepalived runs (with
    /// the group's name) when the node becomes master of a group.
    /// `fault_file`: the sbc's `cluster.fault_file`, which keepalived tracks.
    pub fn start(node: &Node, notify: Option<&str>, fault_file: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("keepalived-").tempdir()?;
        let template = std::fs::read_to_string(template_path())
            .context("reading packaging/keepalived/keepalived.conf")?;
        let mut config = String::new();
        for (group, priority) in &node.serves {
            config.push_str(
                &template
                    .replace("@GROUP@", group.name)
                    .replace("@INTERFACE@", "eth0")
                    .replace("@ROUTER_ID@", &group.router_id.to_string())
                    .replace("@PRIORITY@", &priority.to_string())
                    .replace("@ADVERT_INT@", ADVERT_INTERVAL)
                    .replace("@PUBLIC@", &format!("{}/24", group.public))
                    .replace("@PRIVATE@", &format!("{}/24", group.private))
                    .replace("@FAULT_FILE@", &fault_file.display().to_string())
                    .replace(
                        "@NOTIFY@",
                        &notify.map_or(String::new(), |command| {
                            format!("notify_master \"{command} {}\"", group.name)
                        }),
                    ),
            );
        }
        let global = format!(
            "global_defs {{\n  router_id {}\n  vrrp_version 3\n  script_user root\n  enable_script_security\n}}\n",
            node.name
        );
        let path = dir.path().join("keepalived.conf");
        std::fs::write(&path, global + &config)?;
        let log = std::fs::File::create(dir.path().join("keepalived.log"))?;
        let pid = |name: &str| dir.path().join(name).display().to_string();
        let child = command_in(&node.ns.name, None, "keepalived")
            .args(["--dont-fork", "--log-console", "--vrrp", "--use-file"])
            .arg(&path)
            .args([
                "--pid",
                &pid("keepalived.pid"),
                "--vrrp_pid",
                &pid("vrrp.pid"),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting keepalived (cargo xtask setup installs it)")?;
        Ok(Self {
            child: Some(child),
            dir,
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("keepalived.log")).unwrap_or_default()
    }

    /// SIGKILL: the node is gone, its VRRP adverts stop without a goodbye (the addresses it
    /// added stay, as on a machine that died).
    pub fn kill9(&self) {
        // keepalived's VRRP child runs on its own: kill it too, by its recorded PID.
        let vrrp = std::fs::read_to_string(self.dir.path().join("vrrp.pid"))
            .ok()
            .and_then(|pid| pid.trim().parse::<i32>().ok());
        let parent = self.child.as_ref().map(|child| child.id() as i32);
        for pid in vrrp.into_iter().chain(parent) {
            // SAFETY: signalling our keepalived and the VRRP process it forked (its PID file).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM: keepalived stops its VRRP child and removes the addresses it added.
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
        self.kill9();
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

fn template_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/keepalived/keepalived.conf")
}
