//! The sbc daemon as the tests and the demo run it: inside the lab's sbc namespace (network
//! namespace only, so its bpffs pins live in the host's bpffs), with a generated config.
use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use sbc::{
    api::{
        ApiClient,
        client::ApiResponse,
        contract::{
            AdmissionTotals, BackendSummary, Backends, BlockInfo, Blocks, CallSummary, Calls,
            Health, SessionInfo, SessionSpec, Sessions, Stats, Status,
        },
    },
    events::{Event, EventLine, Kind},
    media::session::LegSpec,
    side::Side,
};
use serde_json::Value;

use crate::lab::{Lab, SBC_INTERFACES, SBC_PRIVATE, SBC_PUBLIC};

/// The `sbc` binary under test: `$SBC_BIN`, else the workspace's debug build.
pub fn sbc_binary() -> PathBuf {
    let path = std::env::var_os("SBC_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/sbc"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "the sbc binary is not at {} (build it with `cargo build -p sbc-userspace`, or set SBC_BIN; \
         `cargo xtask test` does this)",
        path.display()
    );
    path
}

#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// "xdp" or "userspace".
    pub dataplane: &'static str,
    pub port_min: u16,
    pub port_max: u16,
    pub media_timeout_secs: u64,
    /// Backends of the SIP proxy; none (and no `tcp_backends`): no `[sip]` table (media
    /// only).
    pub sip_backends: Vec<std::net::SocketAddr>,
    /// More backends, reached over TCP (`transport = "tcp"`).
    pub tcp_backends: Vec<std::net::SocketAddr>,
    /// More `[[sip.backends]]` tables, written as they are (a TLS backend's settings).
    pub backend_tables: String,
    pub health_interval_ms: u64,
    /// Failures in a row that mark a backend down.
    pub health_failure_threshold: u32,
    /// OPTIONS probes (scripted SIPp backends take a probe for a call of their scenario).
    pub health_probes: bool,
    /// More TOML tables, appended to the generated config (an `[admission]` table, say).
    pub extra_config: String,
    /// The one CPU the daemon may run on (the benchmark pins the system under test).
    pub cpu: Option<usize>,
    /// More keys of the `[api]` table (`listen`, `token_file`).
    pub api_config: String,
    /// More keys of the `[sip]` table. One naming the public address
    /// (`public_advertise_file`, say) replaces the NAT lab's own `public_advertise`.
    pub sip_keys: String,
    /// `log.format`: "text" or "json".
    pub log_format: &'static str,
    /// The public and private addresses the sbc binds (media and SIP), when not the lab's
    /// IPv4 ones (`lab::SBC_PUBLIC6`, say).
    pub addresses: Option<(IpAddr, IpAddr)>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            dataplane: "xdp",
            port_min: 20000,
            port_max: 29999,
            media_timeout_secs: 60,
            sip_backends: Vec::new(),
            tcp_backends: Vec::new(),
            backend_tables: String::new(),
            health_interval_ms: 1000,
            health_failure_threshold: 2,
            health_probes: true,
            extra_config: String::new(),
            cpu: None,
            api_config: String::new(),
            sip_keys: String::new(),
            log_format: "text",
            addresses: None,
        }
    }
}

/// An instance name no other daemon of this test process uses.
fn unique_instance(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Daemon {
    child: Option<Child>,
    netns: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub api: ApiClient,
    /// Where the daemon pins its maps and links.
    pub pin_dir: PathBuf,
    binary: PathBuf,
    cpu: Option<usize>,
    /// A node of a fleet is ready on standby too (it serves no group yet).
    standby_is_ready: bool,
}

impl Daemon {
    /// Writes a config for `lab` and starts the daemon, waiting until its API answers.
    pub fn start(lab: &Lab, options: &DaemonOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("sbc-test-").tempdir()?;
        let instance = unique_instance("t");
        let config = dir.path().join("sbc.toml");
        let socket = dir.path().join("api.sock");
        let (public, private) = options
            .addresses
            .unwrap_or((lab.sbc_public().into(), SBC_PRIVATE.into()));
        let listen = |ip: IpAddr| SocketAddr::new(ip, 5060);
        let mut sip = String::new();
        let has_backends = !options.sip_backends.is_empty()
            || !options.tcp_backends.is_empty()
            || !options.backend_tables.is_empty();
        if has_backends {
            // Behind the lab's NAT, the sbc binds its inside address and advertises the outside.
            let advertise = if lab.nat.is_some() && !options.sip_keys.contains("public_advertise") {
                format!("public_advertise = \"{SBC_PUBLIC}\"\n")
            } else {
                String::new()
            };
            let advertise = advertise + &options.sip_keys;
            sip = format!(
                "[sip]\npublic_listen = \"{}\"\nprivate_listen = \"{}\"\n{advertise}\
                 [sip.health]\nprobes = {}\ninterval_ms = {}\ntimeout_ms = {}\nfailure_threshold = {}\n",
                listen(public),
                listen(private),
                options.health_probes,
                options.health_interval_ms,
                options.health_interval_ms / 2,
                options.health_failure_threshold,
            );
            for backend in &options.sip_backends {
                sip.push_str(&format!("[[sip.backends]]\naddress = \"{backend}\"\n"));
            }
            for backend in &options.tcp_backends {
                sip.push_str(&format!(
                    "[[sip.backends]]\naddress = \"{backend}\"\ntransport = \"tcp\"\n"
                ));
            }
            sip.push_str(&options.backend_tables);
        }
        std::fs::write(
            &config,
            format!(
                r#"instance = "{instance}"
state_dir = "{state_dir}"
[dataplane]
mode = "{mode}"
interfaces = {interfaces:?}
[media]
public_address = "{public}"
private_address = "{private}"
port_min = {port_min}
port_max = {port_max}
timeout_secs = {timeout}
[api]
socket = "{socket}"
{api_config}
[events]
file = "{events}"
[log]
level = "info"
format = "{log_format}"
{sip}{extra}"#,
                mode = options.dataplane,
                interfaces = SBC_INTERFACES,
                port_min = options.port_min,
                port_max = options.port_max,
                timeout = options.media_timeout_secs,
                socket = socket.display(),
                events = dir.path().join("events.jsonl").display(),
                extra = options.extra_config,
                api_config = options.api_config,
                state_dir = dir.path().display(),
                log_format = options.log_format,
            ),
        )?;
        Self::launch(&lab.sbc.name, (dir, config, &instance), options.cpu, false)
    }

    /// Starts `sbc run` in `netns` with the configuration `config` (in `dir`, which holds its
    /// API socket) of instance `instance`.
    fn launch(
        netns: &str,
        (dir, config, instance): (tempfile::TempDir, PathBuf, &str),
        cpu: Option<usize>,
        standby_is_ready: bool,
    ) -> anyhow::Result<Self> {
        let mut daemon = Self {
            child: None,
            netns: netns.to_owned(),
            api: ApiClient::new(dir.path().join("api.sock")),
            pin_dir: PathBuf::from(format!(
                "/sys/fs/bpf/sbc/{instance}/v{}",
                sbc_common::maps::MAP_ABI_VERSION
            )),
            config,
            dir,
            binary: crate::daemon::sbc_binary(),
            cpu,
            standby_is_ready,
        };
        daemon.spawn(&[])?;
        Ok(daemon)
    }

    /// A node of a fleet in namespace `netns`: `body` is its configuration but for the
    /// instance, state directory, API socket and events file, set here. Ready once its API
    /// answers, on standby or serving.
    pub fn start_node(netns: &str, body: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("sbc-node-").tempdir()?;
        let instance = unique_instance("n");
        let socket = dir.path().join("api.sock");
        let config = dir.path().join("sbc.toml");
        std::fs::write(
            &config,
            format!(
                "instance = \"{instance}\"\nstate_dir = \"{state}\"\n{body}\n[api]\nsocket = \"{socket}\"\n\
                 [events]\nfile = \"{events}\"\n",
                state = dir.path().display(),
                socket = socket.display(),
                events = dir.path().join("events.jsonl").display(),
            ),
        )?;
        Self::launch(netns, (dir, config, &instance), None, true)
    }

    /// Starts the daemon process (again), with extra `sbc run` arguments.
    pub fn spawn(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("sbc.log"))?;
        let child = crate::netns::command_in(&self.netns, self.cpu, &self.binary)
            .args(["run", "--config"])
            .arg(&self.config)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting sbc")?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // A node of a fleet answers `standby` until it serves its group.
            if let Ok(r) = self.api.get("/v1/health")
                && r.status == 200
                && r.json::<Health>()
                    .is_ok_and(|h| h.status == "ok" || self.standby_is_ready)
            {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("sbc exited ({status}) before it was ready:\n{}", self.log());
            }
            if Instant::now() > deadline {
                bail!("sbc did not answer on its API within 20 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sbc.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The CPU time the daemon has used so far (user and system, all threads), from /proc.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        crate::process_cpu::process(self.pid().context("the daemon is not running")?)
    }

    /// SIGKILL: the daemon gets no chance to clean up (the crash case).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the daemon to exit on its own (a finished drain), up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let child = self.child.as_mut().context("the daemon is not running")?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("sbc did not exit within {limit:?}:\n{}", self.log())
    }

    /// Sends a signal to the daemon (our own child, by its pid).
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        let pid = self.pid().context("the daemon is not running")?;
        // SAFETY: signalling our own child by its pid.
        if unsafe { libc::kill(pid as i32, signal) } != 0 {
            bail!("kill({pid}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// An HTTP GET on the daemon's TCP admin listener (in its namespace), with an optional
    /// bearer token: the status code and the body as text.
    pub fn http_get(
        &self,
        address: std::net::SocketAddr,
        path: &str,
        token: Option<&str>,
    ) -> anyhow::Result<(u16, String)> {
        crate::http::get_in(&self.netns, address, path, token)
    }

    /// `/metrics` from the default admin listener, parsed.
    pub fn metrics(&self) -> anyhow::Result<crate::http::Metrics> {
        let (status, text) = self.http_get(sbc::config::DEFAULT_API_LISTEN, "/metrics", None)?;
        if status != 200 {
            bail!("GET /metrics answered {status}: {text}");
        }
        Ok(crate::http::Metrics::parse(&text))
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("sbc exited with {status}:\n{}", self.log());
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("sbc did not stop within 10 s of SIGTERM")
    }

    /// Runs another `sbc` command against this daemon's config.
    pub fn command(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let mut command = Command::new(&self.binary);
        command.args(args).arg("--config").arg(&self.config);
        Ok(command.output()?)
    }

    /// `sbc maps --json`, read from the pins (works while the daemon is down).
    pub fn maps(&self) -> anyhow::Result<Value> {
        let output = self.command(&["maps", "--json"])?;
        if !output.status.success() {
            bail!(
                "sbc maps failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    /// bpftool's JSON of `bpftool map <verb> pinned` on this daemon's pinned map `map`
    /// (`show`: its layout; `dump`: its entries, named by BTF).
    pub fn bpftool_map(&self, verb: &str, map: &str) -> anyhow::Result<Value> {
        let path = self.pin_dir.join(map);
        crate::bpftool::json([
            "map".as_ref(),
            verb.as_ref(),
            "pinned".as_ref(),
            path.as_os_str(),
        ])
    }

    /// Every event so far, once `count` events named `name` are among them (or at `limit`).
    pub fn events_once(&self, name: &str, count: usize, limit: Duration) -> Vec<Event> {
        let deadline = Instant::now() + limit;
        loop {
            let events = self.events();
            let seen = events.iter().filter(|e| e.name() == name).count();
            if seen >= count || Instant::now() > deadline {
                return events;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every event so far, as the daemon's own `Event` type reads them.
    pub fn events(&self) -> Vec<Event> {
        self.event_lines()
            .into_iter()
            .map(|line| line.event)
            .collect()
    }

    /// Every line of the events file so far (events with their time). A line that does not
    /// read is a test failure (the file and the type disagree), except a last line still
    /// being written.
    pub fn event_lines(&self) -> Vec<EventLine> {
        let text =
            std::fs::read_to_string(self.dir.path().join("events.jsonl")).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("an event line that does not read ({e}): {line}"))
            })
            .collect()
    }

    /// The events of one kind (`CallEnded`, `BackendDown`, ...).
    pub fn events_of<K: Kind>(&self) -> Vec<K> {
        self.events().into_iter().filter_map(K::of).collect()
    }

    /// `GET /v1/stats`.
    pub fn stats(&self) -> anyhow::Result<Stats> {
        self.api.get("/v1/stats")?.expect(200)
    }

    /// `GET /v1/status`.
    pub fn status(&self) -> anyhow::Result<Status> {
        self.api.get("/v1/status")?.expect(200)
    }

    /// The media sessions (`GET /v1/sessions`).
    pub fn sessions(&self) -> anyhow::Result<Vec<SessionInfo>> {
        Ok(self
            .api
            .get("/v1/sessions")?
            .expect::<Sessions>(200)?
            .sessions)
    }

    /// The calls with their media (`GET /v1/calls`).
    pub fn calls(&self) -> anyhow::Result<Vec<CallSummary<SessionInfo>>> {
        Ok(self.api.get("/v1/calls")?.expect::<Calls>(200)?.calls)
    }

    /// The backend pool (`GET /v1/backends`).
    pub fn backends(&self) -> anyhow::Result<Vec<BackendSummary>> {
        Ok(self
            .api
            .get("/v1/backends")?
            .expect::<Backends>(200)?
            .backends)
    }

    /// The XDP verdict counters by reason name, from the API.
    pub fn xdp_reason(&self, name: &str) -> anyhow::Result<u64> {
        let stats = self.stats()?;
        stats
            .xdp_reasons
            .as_ref()
            .and_then(|reasons| reasons.get(name).copied())
            .with_context(|| format!("no XDP counter {name} in {stats:?}"))
    }

    /// The SIP guard's verdicts by reason name: the kernel's, or with the userspace dataplane
    /// the daemon's (0 if never counted).
    pub fn guard_verdicts(&self, name: &str) -> anyhow::Result<u64> {
        let stats = self.stats()?;
        let kernel = stats
            .xdp_reasons
            .as_ref()
            .and_then(|r| r.get(name).copied());
        Ok(kernel.unwrap_or(0) + stats.guard_reasons.get(name).copied().unwrap_or(0))
    }

    /// The admission counters of `GET /v1/stats`.
    pub fn admission_totals(&self) -> anyhow::Result<AdmissionTotals> {
        self.stats()?
            .admission
            .context("no admission counters: the daemon runs no SIP proxy")
    }

    /// The dynamic blocks in force (`GET /v1/blocks`).
    pub fn blocks(&self) -> anyhow::Result<Vec<BlockInfo>> {
        Ok(self.api.get("/v1/blocks")?.expect::<Blocks>(200)?.blocks)
    }

    /// Creates a session between `a_peer` (public side) and `b_peer` (private side).
    pub fn create_session(
        &self,
        a_peer: std::net::SocketAddr,
        b_peer: std::net::SocketAddr,
        rtcp_mux: bool,
    ) -> anyhow::Result<ApiResponse> {
        let leg = |side, peer| LegSpec {
            side,
            peer: Some(peer),
            sip_source: None,
        };
        let spec = SessionSpec {
            rtcp_mux,
            a: leg(Side::Public, a_peer),
            b: leg(Side::Private, b_peer),
        };
        self.api.post("/v1/sessions", &spec)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        // Detach XDP and free the maps: nothing of a test may outlive it.
        let _ = self.command(&["down"]);
    }
}
