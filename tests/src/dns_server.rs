//! A DNS server in a lab namespace: dnsmasq (Debian's `dnsmasq-base`, `cargo xtask setup`
//! installs it) answering only for the records a test gives it, with the TTL it gives them.
use std::{
    net::IpAddr,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::netns::{Netns, command_in};

/// An SRV record: `name` (`_sip._udp.pbx.lab`) names `target:port` at a priority and weight.
pub struct Srv {
    pub name: &'static str,
    pub target: &'static str,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

/// A NAPTR record (RFC 3403) of `name` pointing, with the "s" flag, to the SRV name
/// `replacement` for `service` (`SIP+D2U`...).
pub struct Naptr {
    pub name: &'static str,
    pub order: u16,
    pub preference: u16,
    pub service: &'static str,
    pub replacement: &'static str,
}

/// What the server answers.
pub struct Zone {
    pub naptr: Vec<Naptr>,
    pub srv: Vec<Srv>,
    /// A and AAAA records.
    pub hosts: Vec<(&'static str, IpAddr)>,
    /// The TTL of every answer.
    pub ttl_secs: u32,
}

pub struct DnsServer {
    child: Child,
}

impl DnsServer {
    /// Serves `zone` on `address` port 53 in `ns`, and nothing else (no upstream, no
    /// /etc/hosts); returns once it listens.
    pub fn start(ns: &Netns, address: IpAddr, zone: &Zone) -> anyhow::Result<Self> {
        let mut args = vec![
            "--keep-in-foreground".to_owned(),
            "--log-facility=-".to_owned(),
            "--no-resolv".to_owned(),
            "--no-hosts".to_owned(),
            "--bind-interfaces".to_owned(),
            format!("--listen-address={address}"),
            // Not the loopback's: only the address the sbc asks.
            "--except-interface=lo".to_owned(),
            "--pid-file=".to_owned(),
            "--user=root".to_owned(),
            format!("--local-ttl={}", zone.ttl_secs),
        ];
        for naptr in &zone.naptr {
            args.push(format!(
                "--naptr-record={},{},{},s,{},,{}",
                naptr.name, naptr.order, naptr.preference, naptr.service, naptr.replacement
            ));
        }
        for srv in &zone.srv {
            args.push(format!(
                "--srv-host={},{},{},{},{}",
                srv.name, srv.target, srv.port, srv.priority, srv.weight
            ));
        }
        for (name, ip) in &zone.hosts {
            args.push(format!("--host-record={name},{ip}"));
        }
        let mut child = command_in(&ns.name, None, "dnsmasq")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dnsmasq (cargo xtask setup installs dnsmasq-base)")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let listening = ns.exec("ss", &["-lnu"])?;
            if String::from_utf8_lossy(&listening.stdout).contains(&format!("{address}:53")) {
                return Ok(Self { child });
            }
            if let Some(status) = child.try_wait()? {
                bail!("dnsmasq exited at start: {status}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("dnsmasq does not listen on {address}:53");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
