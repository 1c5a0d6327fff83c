//! The peer measured beside the SBC when asked (`--peer kamailio-rtpengine`): Kamailio as a
//! record-routing proxy with a dispatcher group and rtpengine anchoring the media (forwarding
//! in userspace: the kernel module is not loaded), the stack most operators run today. Both run
//! in the lab's sbc namespace with the same addresses and the same one core as the SBC, and
//! stop with the value that owns them, by PID.
use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use sbc_common::bench::Stream;

use super::{SystemUnderTest, rtpengine_ng::NgClient};
use crate::{
    lab::{CALLEE, CALLER, Lab, SBC_PRIVATE, SBC_PUBLIC},
    netns::{self, command_in},
    sip_probe,
};

/// How the peer is labelled in the table.
pub const NAME: &str = "Kamailio + rtpengine";

const KAMAILIO_CONFIG: &str = include_str!("../../peer/kamailio.cfg");
/// rtpengine's control socket, on the sbc namespace's loopback.
const NG_ADDRESS: &str = "127.0.0.1:2223";
/// rtpengine's logical interfaces, as the Kamailio config's `direction=` flags name them.
const PUBLIC_INTERFACE: &str = "pub";
const PRIVATE_INTERFACE: &str = "priv";

pub struct KamailioRtpengine {
    rtpengine: Option<Child>,
    kamailio: Option<Child>,
    netns: String,
    dir: tempfile::TempDir,
}

/// Whether the peer's programs are installed, with a hint if not.
fn installed() -> anyhow::Result<()> {
    for program in ["kamailio", "rtpengine"] {
        let found = Command::new(program)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            bail!(
                "{program} is not installed: `cargo xtask bench -- --peer kamailio-rtpengine` \
                 installs it (Debian packages kamailio, rtpengine-daemon)"
            );
        }
    }
    Ok(())
}

impl KamailioRtpengine {
    /// Starts rtpengine and Kamailio in the lab's sbc namespace, on `cpu` if given, in front of
    /// `backend`; with `anti_flood`, Kamailio checks public requests with pike as its stock
    /// configuration does. Returns when Kamailio answers OPTIONS.
    pub fn start(
        lab: &Lab,
        backend: SocketAddr,
        cpu: Option<usize>,
        anti_flood: bool,
    ) -> anyhow::Result<Self> {
        installed()?;
        let dir = tempfile::Builder::new().prefix("sbc-peer-").tempdir()?;
        let mut peer = Self {
            rtpengine: None,
            kamailio: None,
            netns: lab.sbc.name.clone(),
            dir,
        };
        peer.start_rtpengine(cpu)?;
        peer.start_kamailio(lab, backend, cpu, anti_flood)?;
        Ok(peer)
    }

    fn log_file(&self, name: &str) -> anyhow::Result<std::fs::File> {
        Ok(std::fs::File::create(self.dir.path().join(name))?)
    }

    fn start_rtpengine(&mut self, cpu: Option<usize>) -> anyhow::Result<()> {
        let log = self.log_file("rtpengine.log")?;
        let child = command_in(&self.netns, cpu, "rtpengine")
            .args([
                "--foreground",
                "--log-stderr",
                // No system config file: everything is here.
                "--config-file=none",
                // Userspace forwarding: rtpengine's kernel module is not part of the package.
                "--table=-1",
                &format!("--interface={PUBLIC_INTERFACE}/{SBC_PUBLIC}"),
                &format!("--interface={PRIVATE_INTERFACE}/{SBC_PRIVATE}"),
                &format!("--listen-ng={NG_ADDRESS}"),
                // The SBC's media port range in the benchmark.
                "--port-min=20000",
                "--port-max=59999",
                // Ports freed when a call is deleted, as the SBC frees them at BYE. By default
                // rtpengine keeps them 30 s, and at a few hundred calls/s the sockets of calls
                // already ended (four per call) exhaust an open-files limit of 20,000.
                "--delete-delay=0",
                // Notices: a line per call, as the SBC writes an event per call.
                "--log-level=5",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting rtpengine")?;
        self.rtpengine = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ng().and_then(|mut client| client.ping()).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "rtpengine did not answer on {NG_ADDRESS} within 10 s:\n{}",
                    self.log("rtpengine.log")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn start_kamailio(
        &mut self,
        lab: &Lab,
        backend: SocketAddr,
        cpu: Option<usize>,
        anti_flood: bool,
    ) -> anyhow::Result<()> {
        let dispatcher_list = self.dir.path().join("dispatcher.list");
        std::fs::write(&dispatcher_list, format!("1 sip:{backend}\n"))?;
        let config = self.dir.path().join("kamailio.cfg");
        std::fs::write(
            &config,
            KAMAILIO_CONFIG
                .replace("%PUBLIC_IP%", &SBC_PUBLIC.to_string())
                .replace("%PRIVATE_IP%", &SBC_PRIVATE.to_string())
                .replace("%RTPENGINE_NG%", NG_ADDRESS)
                .replace("%DISPATCHER_LIST%", &dispatcher_list.to_string_lossy()),
        )?;
        let log = self.log_file("kamailio.log")?;
        let mut command = command_in(&self.netns, cpu, "kamailio");
        command
            .arg("-f")
            .arg(&config)
            // In the foreground (its workers are its children), logging to stderr.
            .args(["-DD", "-E"])
            // Shared and per-process memory, in MiB: room for thousands of transactions.
            .args(["-m", "256", "-M", "16"])
            .arg("-P")
            .arg(self.dir.path().join("kamailio.pid"))
            .arg("-Y")
            .arg(self.dir.path());
        if anti_flood {
            command.args(["-A", "WITH_PIKE"]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting kamailio")?;
        self.kamailio = Some(child);
        self.wait_for_sip(lab)
    }

    /// Waits until Kamailio answers an OPTIONS from the caller.
    fn wait_for_sip(&mut self, lab: &Lab) -> anyhow::Result<()> {
        let target = SocketAddr::new(SBC_PUBLIC.into(), 5060);
        let local = SocketAddr::new(CALLER.into(), 5999);
        let deadline = Instant::now() + Duration::from_secs(10);
        for attempt in 0.. {
            let probe = sip_probe::options(local, target, &format!("peer-up-{attempt}"), "bench");
            let answers = sip_probe::send_waiting(
                &lab.caller,
                local,
                target,
                &probe,
                Duration::from_millis(500),
            )?;
            if answers.iter().any(|a| a.starts_with("SIP/2.0 200")) {
                return Ok(());
            }
            if let Some(status) = self
                .kamailio
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("kamailio exited ({status}):\n{}", self.log("kamailio.log"));
            }
            if Instant::now() > deadline {
                break;
            }
        }
        bail!(
            "kamailio did not answer OPTIONS within 10 s:\n{}",
            self.log("kamailio.log")
        )
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// An ng client on the sbc namespace's loopback.
    fn ng(&self) -> anyhow::Result<NgClient> {
        netns::within(&self.netns, || NgClient::connect(NG_ADDRESS.parse()?))?
    }

    /// Sets up `count` media sessions in rtpengine as Kamailio does for a call (caller port
    /// 10000+i ↔ callee port 30000+i) and returns the streams aimed at their public ports.
    pub fn relayed_streams(&self, count: u32) -> anyhow::Result<Vec<Stream>> {
        let mut client = self.ng()?;
        (0..count)
            .map(|i| {
                let public_port = client
                    .relay_session(
                        &format!("bench-{i}"),
                        SocketAddr::new(CALLER.into(), 10_000 + i as u16),
                        SocketAddr::new(CALLEE.into(), 30_000 + i as u16),
                        (PUBLIC_INTERFACE, PRIVATE_INTERFACE),
                    )
                    .with_context(|| format!("session {i}"))?;
                Ok(Stream {
                    src_port: (10_000 + i as u16).to_be(),
                    dst_port: public_port.to_be(),
                })
            })
            .collect()
    }

    fn pid(child: &Option<Child>) -> anyhow::Result<u32> {
        child.as_ref().map(Child::id).context("not running")
    }
}

impl SystemUnderTest for KamailioRtpengine {
    /// Kamailio's main process and its workers, and rtpengine's threads.
    fn cpu_time(&self) -> anyhow::Result<Duration> {
        Ok(
            crate::process_cpu::process_tree(Self::pid(&self.kamailio)?)?
                + crate::process_cpu::process(Self::pid(&self.rtpengine)?)?,
        )
    }
}

/// SIGTERM, then SIGKILL if the process is still there after 5 s. Kamailio's main process
/// stops its workers on SIGTERM.
fn stop(child: &mut Child) {
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for KamailioRtpengine {
    fn drop(&mut self) {
        for child in [self.kamailio.as_mut(), self.rtpengine.as_mut()]
            .into_iter()
            .flatten()
        {
            stop(child);
        }
    }
}
