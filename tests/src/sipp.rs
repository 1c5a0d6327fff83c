//! SIPp (Debian package `sip-tester`) as the real SIP peers of the lab: a backend that answers
//! and echoes RTP, and callers that place calls with RTP from a pcap. Every run is bounded
//! (`-m`, `-timeout`, and a deadline after which the process is killed), and only processes
//! started here are stopped, by PID (`nsenter` execs SIPp, so the PID is SIPp's).
use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::netns::Netns;

/// SIPp's bundled pcaps (`uac_pcap` plays `pcap/g711a.pcap` relative to its directory).
const PCAPS: &str = "/usr/share/sip-tester";

/// A working directory for SIPp with `pcap/` pointing at the bundled captures.
pub fn workdir() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("sbc-sipp-").tempdir()?;
    let pcap = dir.path().join("pcap");
    std::fs::create_dir(&pcap)?;
    for entry in std::fs::read_dir(PCAPS).context("SIPp's pcaps (install sip-tester)")? {
        let entry = entry?;
        std::os::unix::fs::symlink(entry.path(), pcap.join(entry.file_name()))?;
    }
    Ok(dir)
}

fn sipp(ns: &Netns, dir: &Path, args: &[String]) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{}", ns.name))
        .arg("sipp")
        .args(args)
        .args(["-nostdin", "-trace_err"])
        .current_dir(dir)
        .stdin(Stdio::null());
    command
}

/// One of this crate's SIPp scenarios (`tests/scenarios/<name>.xml`).
pub fn scenario(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.xml"))
}

/// A SIPp backend (UAS).
pub struct Backend {
    child: Child,
    dir: tempfile::TempDir,
}

impl Backend {
    /// SIPp's built-in backend: answers every INVITE, echoes RTP, answers OPTIONS. It runs
    /// until dropped or killed.
    pub fn start(ns: &Netns, address: SocketAddr) -> anyhow::Result<Self> {
        // Each backend echoes RTP on ports of its own.
        let media_port = 10_000 + 2 * u32::from(address.port());
        Self::spawn(
            ns,
            address,
            &[
                "-sn",
                "uas",
                "-rtp_echo",
                "-aa",
                "-mp",
                &media_port.to_string(),
            ],
        )
    }

    /// SIPp's built-in backend over TCP (`-t t1`): it answers every INVITE and OPTIONS on
    /// the connections it accepts.
    pub fn start_tcp(ns: &Netns, address: SocketAddr) -> anyhow::Result<Self> {
        Self::spawn(ns, address, &["-sn", "uas", "-aa", "-t", "t1"])
    }

    /// A backend over TCP playing `scenario` (for every call) until stopped.
    pub fn start_tcp_scenario(
        ns: &Netns,
        address: SocketAddr,
        scenario: &Path,
    ) -> anyhow::Result<Self> {
        let scenario = scenario.to_string_lossy();
        Self::spawn(ns, address, &["-sf", &scenario, "-aa", "-t", "t1"])
    }

    /// A backend that answers every call (and OPTIONS) but never sends media: the one-way
    /// call of the no-audio tests.
    pub fn start_silent(ns: &Netns, address: SocketAddr) -> anyhow::Result<Self> {
        Self::spawn(ns, address, &["-sn", "uas", "-aa"])
    }

    /// A backend playing `scenario` for `calls` calls (it exits when they are done) or until
    /// stopped, echoing RTP and answering OPTIONS.
    pub fn start_scenario(
        ns: &Netns,
        address: SocketAddr,
        scenario: &Path,
        calls: Option<u32>,
    ) -> anyhow::Result<Self> {
        let scenario = scenario.to_string_lossy().into_owned();
        // It echoes RTP, on ports of its own.
        let media_port = (10_000 + 2 * u32::from(address.port())).to_string();
        let mut args = vec![
            "-sf".to_owned(),
            scenario,
            "-aa".into(),
            "-rtp_echo".into(),
            "-mp".into(),
            media_port,
        ];
        if let Some(calls) = calls {
            args.extend(["-m".into(), calls.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::spawn(ns, address, &args)
    }

    fn spawn(ns: &Netns, address: SocketAddr, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = workdir()?;
        let log = std::fs::File::create(dir.path().join("uas.out"))?;
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend([
            "-i".into(),
            address.ip().to_string(),
            "-p".into(),
            address.port().to_string(),
        ]);
        let child = sipp(ns, dir.path(), &args)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting SIPp (install sip-tester)")?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self { child, dir })
    }

    /// Waits for a scenario backend to finish; its exit code (0: every call went as scripted),
    /// or `None` if it had to be killed at the deadline.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
        None
    }

    /// What SIPp printed, and its error log, for failure messages.
    pub fn output(&self) -> String {
        let mut text = std::fs::read_to_string(self.dir.path().join("uas.out")).unwrap_or_default();
        for entry in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().ends_with("errors.log") {
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    }

    /// Kills the backend (a crash, as the failover tests need).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a SIPp caller run reported.
#[derive(Debug)]
pub struct CallerResult {
    pub exit_code: Option<i32>,
    pub successful: u64,
    pub failed: u64,
    pub output: String,
    /// Milliseconds from INVITE to 200 of each call, as SIPp timed them (1 ms resolution).
    pub response_times_ms: Vec<f64>,
}

/// What the SIPp caller does in each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// INVITE, ACK, 7 s of G.711 RTP from a pcap, BYE (SIPp's `uac_pcap`).
    WithMedia,
    /// INVITE, ACK, BYE at once (SIPp's `uac`): signalling only.
    Short,
    /// SIPp's `uac`, holding each call this long before the BYE.
    Held(Duration),
    /// A scenario file of this crate (see `scenario`).
    Scenario(&'static str),
    /// A scenario file whose `<pause/>` holds each call this long.
    HeldScenario(&'static str, Duration),
}

/// Places `calls` calls at `rate` per second from `local` to `target`, and waits for them
/// (bounded by `limit`).
pub fn place_calls(
    ns: &Netns,
    local: SocketAddr,
    target: SocketAddr,
    kind: CallKind,
    calls: (u32, u32),
    limit: Duration,
) -> anyhow::Result<CallerResult> {
    place_calls_through(ns, local, target, None, kind, calls, limit)
}

/// `place_calls` with the Request-URI naming `target` while the messages go to `proxy` (an
/// outbound proxy, as a backend uses the sbc to reach a carrier).
pub fn place_calls_through(
    ns: &Netns,
    local: SocketAddr,
    target: SocketAddr,
    proxy: Option<SocketAddr>,
    kind: CallKind,
    calls: (u32, u32),
    limit: Duration,
) -> anyhow::Result<CallerResult> {
    let mut args = uac_args(local, target, kind, calls, limit);
    if let Some(proxy) = proxy {
        args.extend(["-rsa".to_owned(), proxy.to_string()]);
    }
    run_uac(ns, args, limit)
}

/// `place_calls_through` over one TCP connection (`-t t1`) to `proxy`: a TLS tunnel's end
/// (stunnel), for a carrier over TLS.
pub fn place_calls_over_tcp(
    ns: &Netns,
    local: SocketAddr,
    target: SocketAddr,
    proxy: SocketAddr,
    kind: CallKind,
    calls: (u32, u32),
    limit: Duration,
) -> anyhow::Result<CallerResult> {
    let mut args = uac_args(local, target, kind, calls, limit);
    args.extend(["-rsa".to_owned(), proxy.to_string()]);
    args.extend(["-t".to_owned(), "t1".to_owned()]);
    run_uac(ns, args, limit)
}

/// SIPp's arguments for `calls` calls of `kind` at `rate` a second from `local` to `target`.
fn uac_args(
    local: SocketAddr,
    target: SocketAddr,
    kind: CallKind,
    (calls, rate): (u32, u32),
    limit: Duration,
) -> Vec<String> {
    let (flag, scenario) = match kind {
        CallKind::WithMedia => ("-sn", "uac_pcap".to_owned()),
        CallKind::Short | CallKind::Held(_) => ("-sn", "uac".to_owned()),
        CallKind::Scenario(name) | CallKind::HeldScenario(name, _) => {
            ("-sf", scenario(name).to_string_lossy().into_owned())
        }
    };
    let hold = match kind {
        CallKind::Held(hold) | CallKind::HeldScenario(_, hold) => hold.as_millis(),
        _ => 0,
    };
    [
        flag,
        &scenario,
        &target.to_string(),
        "-i",
        &local.ip().to_string(),
        "-p",
        &local.port().to_string(),
        "-m",
        &calls.to_string(),
        "-r",
        &rate.to_string(),
        "-timeout",
        &format!("{}s", limit.as_secs()),
        "-default_behaviors",
        "all,-abortunexp",
        "-d",
        &hold.to_string(),
        "-trace_rtt",
        "-rtt_freq",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs a SIPp caller with `args` to its end (or `limit` and a little more) and reads its
/// counts.
fn run_uac(ns: &Netns, args: Vec<String>, limit: Duration) -> anyhow::Result<CallerResult> {
    let dir = workdir()?;
    let out_path = dir.path().join("uac.out");
    let mut child = sipp(ns, dir.path(), &args)
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(Stdio::null())
        .spawn()
        .context("running SIPp (install sip-tester)")?;
    let deadline = std::time::Instant::now() + limit + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let column = |label: &str| -> u64 {
        text.lines()
            .rev()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split('|').nth(2))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let result = CallerResult {
        exit_code: status.and_then(|s| s.code()),
        successful: column("Successful call"),
        failed: column("Failed call"),
        output: text,
        response_times_ms: response_times(dir.path()),
    };
    if result.successful + result.failed == 0 {
        bail!(
            "SIPp placed no call (exit {:?}):\n{}",
            result.exit_code,
            result.output
        );
    }
    Ok(result)
}

/// The response times SIPp wrote with `-trace_rtt` (`<scenario>_<pid>_rtt.csv`:
/// `Date_ms;response_time_ms;rtd_no`).
fn response_times(dir: &Path) -> Vec<f64> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().ends_with("_rtt.csv"))
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| line.split(';').nth(1)?.trim().parse().ok())
                .collect::<Vec<f64>>()
        })
        .collect()
}
