//! The `sbc` command: the daemon and the operator's tools.
use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use sbc::{
    api::{
        ApiClient,
        contract::{
            Backends, BlockRequest, Blocks, Calls, DrainStarted, Fleet, Reloaded, SessionInfo,
            SessionSpec, Sessions, Status, TakenOver, TakeoverRequest, Unblocked,
        },
    },
    config::{CALL_STATE_FILE, Config, DataplaneMode, default_api_socket, default_state_dir},
    daemon::{self, RunOptions},
    dataplane::PinLayout,
    maps_report,
    media::session::{LatchInfo, Leg, LegSpec},
    proxy::journal::Journal,
    side::Side,
};
use sbc_common::flow::PeerMatch;

#[derive(Parser)]
#[command(
    name = "sbc",
    version,
    about = "SIP edge with an in-kernel (XDP) RTP/RTCP relay",
    long_about = "SIP edge with an in-kernel (XDP) RTP/RTCP relay.\n\n\
        `sbc run` is the daemon; the other commands talk to it over its API socket, or (`maps`, \
        `down`) read and change its pinned kernel state directly."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (as root: it loads XDP and binds media ports).
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Drop the pinned state of a previous daemon instead of adopting its sessions.
        #[arg(long)]
        clean: bool,
        /// Override `dataplane.mode` from the config.
        #[arg(long, value_enum)]
        dataplane: Option<DataplaneMode>,
    },
    /// Check a config file: syntax, keys and values, and this host's interfaces and addresses.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The daemon at a glance: version, uptime, drain state, calls, sessions, backends.
    Status {
        #[command(flatten)]
        target: ApiTarget,
    },
    /// One line per call: Call-ID, state, age, backend, media latching and packets each way.
    Calls {
        #[command(flatten)]
        target: ApiTarget,
    },
    /// One call in full, as JSON: both parties, its backend, each media session's legs,
    /// counters by path (kernel / userspace) and latching.
    Call {
        /// Its Call-ID.
        call_id: String,
        #[command(flatten)]
        target: ApiTarget,
    },
    /// The backend pool: health, load, share of recent failures.
    Backends {
        #[command(flatten)]
        target: ApiTarget,
    },
    /// The fleet (`[cluster]`): each node's address group, calls, epoch and last heartbeat.
    Fleet {
        #[command(flatten)]
        target: ApiTarget,
    },
    /// Serve an address group now (`[cluster]`): what keepalived's notify hook calls when this
    /// node becomes master. A node on standby claims the group and takes its calls over; a node
    /// that serves the group already answers so.
    Takeover {
        /// The group (default: the first of the node's groups whose addresses are here).
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        target: ApiTarget,
    },
    /// Drain for scale-in: refuse new calls (503 + Retry-After; OPTIONS answered 503), let
    /// established calls end (BYE at `drain.deadline_secs`), then the daemon exits.
    Drain {
        #[command(flatten)]
        target: ApiTarget,
    },
    /// List, show, create or end media sessions of a running daemon.
    Sessions {
        #[command(flatten)]
        target: ApiTarget,
        #[command(subcommand)]
        action: Option<SessionsAction>,
    },
    /// List, add or remove dynamic blocks of SIP sources.
    Blocks {
        #[command(flatten)]
        target: ApiTarget,
        #[command(subcommand)]
        action: Option<BlocksAction>,
    },
    /// Make a running daemon read `[admission]` from its config file again, and the public
    /// address from `sip.public_advertise_command` or `_file` (as SIGHUP does).
    Reload {
        #[command(flatten)]
        target: ApiTarget,
    },
    /// Print the pinned flows, the dialogs whose SIP the kernel forwards and the XDP verdict
    /// counters (works while the daemon is down).
    Maps {
        #[command(flatten)]
        target: PinTarget,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Detach XDP and remove an instance's pinned state and recorded calls (ends media the
    /// kernel still relays).
    Down {
        #[command(flatten)]
        target: PinTarget,
    },
}

#[derive(Subcommand)]
enum SessionsAction {
    /// One line per session (the default).
    List,
    /// One session in full, as JSON.
    Show { id: u32 },
    /// Create a session between a public-side and a private-side peer.
    Create {
        /// Where the public-side peer receives RTP (learnt from its first packet if omitted).
        #[arg(long)]
        a_peer: Option<SocketAddr>,
        /// Where the private-side peer receives RTP (learnt from its first packet if omitted).
        #[arg(long)]
        b_peer: Option<SocketAddr>,
        /// RTP and RTCP on one port (RFC 5761).
        #[arg(long)]
        rtcp_mux: bool,
    },
    /// End a session.
    Delete { id: u32 },
}

#[derive(Subcommand)]
enum BlocksAction {
    /// One line per block in force (the default).
    List,
    /// Block a source's SIP in the kernel.
    Add {
        address: std::net::IpAddr,
        /// For how long [default: until removed].
        #[arg(long)]
        secs: Option<u64>,
    },
    /// Lift a block.
    Remove { address: std::net::IpAddr },
}

#[derive(Args)]
struct ApiTarget {
    /// Config of the daemon (for its API socket).
    // Global: `sbc blocks list --config X` reads as naturally as `sbc blocks --config X list`.
    #[arg(long, short, conflicts_with = "socket", global = true)]
    config: Option<PathBuf>,
    /// The daemon's API socket [default: /run/sbc/default/api.sock].
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
}

impl ApiTarget {
    fn client(&self) -> anyhow::Result<ApiClient> {
        let socket = match (&self.config, &self.socket) {
            (Some(config), _) => Config::load(config)?.api_socket(),
            (None, Some(socket)) => socket.clone(),
            (None, None) => default_api_socket("default"),
        };
        Ok(ApiClient::new(socket))
    }
}

#[derive(Args)]
struct PinTarget {
    /// Config of the daemon (for its instance and bpffs).
    #[arg(long, short, conflicts_with = "instance")]
    config: Option<PathBuf>,
    /// Instance name [default: default].
    #[arg(long)]
    instance: Option<String>,
    /// Where bpffs is mounted.
    #[arg(long, default_value = "/sys/fs/bpf")]
    bpffs: PathBuf,
}

/// Where an instance keeps its state: pins, API socket, recorded calls.
struct InstanceState {
    pins: PinLayout,
    socket: PathBuf,
    calls: PathBuf,
}

impl PinTarget {
    fn resolve(&self) -> anyhow::Result<InstanceState> {
        Ok(match &self.config {
            Some(path) => {
                let config = Config::load(path)?;
                InstanceState {
                    pins: PinLayout::new(&config.dataplane.bpffs, &config.instance),
                    socket: config.api_socket(),
                    calls: config.call_state_file(),
                }
            }
            None => {
                let instance = self.instance.as_deref().unwrap_or("default");
                InstanceState {
                    pins: PinLayout::new(&self.bpffs, instance),
                    socket: default_api_socket(instance),
                    calls: default_state_dir(instance).join(CALL_STATE_FILE),
                }
            }
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sbc: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run {
            config: path,
            clean,
            dataplane,
        } => {
            let mut config = Config::load(&path)?;
            if let Some(mode) = dataplane {
                config.dataplane.mode = mode;
            }
            sbc::logging::init(&config.log);
            daemon::run(
                config,
                RunOptions {
                    clean,
                    config_path: Some(path),
                },
            )
        }
        Command::CheckConfig { config: path } => {
            let mut config = Config::load(&path)?;
            let in_file = |e| anyhow::anyhow!("{}: {e}", path.display());
            config.check_host().map_err(in_file)?;
            if let Some(sip) = config.sip.as_mut() {
                sip.detect_advertised().map_err(in_file)?;
                if let Some(tls) = &sip.tls {
                    sbc::proxy::tls::Certificates::load(tls).map_err(in_file)?;
                }
                if let (Some(source), Some(address)) =
                    (sip.advertise_source(), sip.public_advertise)
                {
                    println!(
                        "{}: advertising {address} (read by {})",
                        path.display(),
                        source.key()
                    );
                }
            }
            println!("{}: ok", path.display());
            Ok(())
        }
        Command::Status { target } => status(&target.client()?),
        Command::Calls { target } => calls(&target.client()?),
        Command::Call { call_id, target } => {
            let path = format!("/v1/calls/{}", percent_encode(&call_id));
            let found: Calls = target.client()?.get(&path)?.expect(200)?;
            println!("{}", serde_json::to_string_pretty(&found.calls)?);
            Ok(())
        }
        Command::Backends { target } => backends(&target.client()?),
        Command::Fleet { target } => fleet(&target.client()?),
        Command::Takeover { group, target } => {
            let taken: TakenOver = target
                .client()?
                .post("/v1/takeover", &TakeoverRequest { group })?
                .expect(200)?;
            if taken.already {
                println!("serving group {} already", taken.group);
            } else {
                println!("taking group {} over", taken.group);
            }
            Ok(())
        }
        Command::Drain { target } => {
            let started: DrainStarted = target.client()?.post("/v1/drain", &())?.expect(202)?;
            println!(
                "draining: {} calls and {} media sessions to finish; the daemon exits when they have (at most {} s)",
                started.calls,
                started.sessions,
                started
                    .drain
                    .remaining_secs
                    .unwrap_or(started.drain.deadline_secs)
            );
            Ok(())
        }
        Command::Sessions { target, action } => sessions(&target.client()?, action),
        Command::Blocks { target, action } => blocks(&target.client()?, action),
        Command::Reload { target } => {
            let reloaded: Reloaded = target.client()?.post("/v1/reload", &())?.expect(200)?;
            println!("reloaded: {}", reloaded.reloaded);
            Ok(())
        }
        Command::Maps { target, json } => {
            let report = maps_report::read(&target.resolve()?.pins)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", maps_report::render(&report)?);
            }
            Ok(())
        }
        Command::Down { target } => {
            let state = target.resolve()?;
            if std::os::unix::net::UnixStream::connect(&state.socket).is_ok() {
                bail!(
                    "the daemon is running (API at {}); stop it before removing its state",
                    state.socket.display()
                );
            }
            state.pins.remove()?;
            println!("removed {}", state.pins.instance_dir.display());
            if Journal::remove(&state.calls)? {
                println!("removed {}", state.calls.display());
            }
            Ok(())
        }
    }
}

/// A Call-ID as one URL path segment: everything but RFC 3986's unreserved characters escaped.
fn percent_encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn status(client: &ApiClient) -> anyhow::Result<()> {
    let status: Status = client.get("/v1/status")?.expect(200)?;
    let drain_state = match (status.drain.draining, status.drain.remaining_secs) {
        (true, Some(left)) => format!("draining ({left} s to the deadline)"),
        (true, None) => "draining".to_owned(),
        (false, _) => "taking calls".to_owned(),
    };
    println!("sbc {} (pid {})", status.version, status.pid);
    println!("uptime      {} s", status.uptime_secs);
    println!("dataplane   {}", status.dataplane);
    println!("state       {drain_state}");
    if let Some(calls) = status.calls {
        println!(
            "calls       {} active, {} established; {} attempted, {} answered since start",
            calls.active, calls.established, calls.attempted, calls.answered
        );
    }
    println!("sessions    {}", status.sessions);
    if let Some(backends) = status.backends {
        println!(
            "backends    {} of {} healthy",
            backends.healthy, backends.total
        );
    }
    if let Some(cluster) = status.cluster {
        let redis = if cluster.redis_up {
            "redis up"
        } else {
            "DEGRADED: redis away, calls kept in memory and the journal"
        };
        if cluster.state == "standby" {
            println!(
                "cluster     node {} on STANDBY for groups {}",
                cluster.node,
                cluster.serves.join(", ")
            );
        } else {
            println!(
                "cluster     node {} group {} epoch {}, {} calls shared, {redis}",
                cluster.node, cluster.group, cluster.epoch, cluster.calls
            );
        }
    }
    Ok(())
}

/// RTP packets that arrived on a leg of these sessions (and were relayed to the other).
fn rtp_packets<'a>(sessions: impl IntoIterator<Item = &'a SessionInfo>, leg: Leg) -> u64 {
    sessions
        .into_iter()
        .map(|session| session.legs[leg].rtp.packets())
        .sum()
}

fn calls(client: &ApiClient) -> anyhow::Result<()> {
    let Calls { calls } = client.get("/v1/calls")?.expect(200)?;
    println!(
        "{:<36} {:<9} {:>8} {:<21} {:<29} {:>10} {:>10} {:>10}",
        "CALL-ID", "STATE", "AGE_S", "BACKEND", "LATCHED", "A->B PKTS", "B->A PKTS", "KERNEL_SIP"
    );
    for call in calls {
        let sessions: Vec<&SessionInfo> = call.media.iter().flatten().collect();
        println!(
            "{:<36} {:<9} {:>8} {:<21} {:<29} {:>10} {:>10} {:>10}",
            call.call_id,
            call.state.name(),
            call.age_ms / 1000,
            call.backend
                .map_or_else(|| "-".to_owned(), |b| b.to_string()),
            latching_label(&sessions),
            rtp_packets(sessions.iter().copied(), Leg::A),
            rtp_packets(sessions.iter().copied(), Leg::B),
            call.kernel_sip
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
        );
    }
    Ok(())
}

/// How each leg's peers were latched, e.g. `a=sdp b=sip-source?`: per leg the weakest
/// match over the given sessions' RTP and RTCP ports (a hijack hides in the weakest one),
/// `?` while a better-matching source may still replace it, `-` while nothing is latched.
fn latching_label(sessions: &[&SessionInfo]) -> String {
    let leg = |leg: Leg| -> String {
        let rtp_unlatched =
            sessions.is_empty() || sessions.iter().any(|s| s.legs[leg].latch.is_none());
        if rtp_unlatched {
            return "-".to_owned();
        }
        let latches: Vec<LatchInfo> = sessions
            .iter()
            .flat_map(|s| [s.legs[leg].latch, s.legs[leg].rtcp_latch])
            .flatten()
            .collect();
        // The discriminant orders the matches from weakest (unknown) to strongest (sdp).
        let weakest = latches
            .iter()
            .map(|latch| latch.matched)
            .min_by_key(|matched| *matched as u16)
            .map_or("?", PeerMatch::name);
        let learning = latches.iter().any(|latch| !latch.locked);
        format!("{weakest}{}", if learning { "?" } else { "" })
    };
    format!("a={} b={}", leg(Leg::A), leg(Leg::B))
}

fn backends(client: &ApiClient) -> anyhow::Result<()> {
    let Backends { backends } = client.get("/v1/backends")?.expect(200)?;
    println!(
        "{:<21} {:<7} {:>8} {:>6} {:>9} {:>6} {:>8} {:>8}  {:<30}",
        "BACKEND",
        "HEALTH",
        "SINCE_S",
        "CALLS",
        "MAX_CALLS",
        "WEIGHT",
        "PRIORITY",
        "FAILURES",
        "FOUND_FOR"
    );
    for backend in backends {
        let max = match backend.max_calls {
            0 => "-".to_owned(),
            n => n.to_string(),
        };
        let health = match (backend.retired, backend.healthy) {
            (true, _) => "retired",
            (false, true) => "up",
            (false, false) => "down",
        };
        println!(
            "{:<21} {:<7} {:>8} {:>6} {:>9} {:>6} {:>8} {:>7.0}%  {:<30}",
            backend.address.to_string(),
            health,
            backend.since_secs,
            backend.active_calls,
            max,
            backend.weight,
            backend.priority,
            backend.failure_ratio * 100.0,
            backend.host.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}

fn fleet(client: &ApiClient) -> anyhow::Result<()> {
    let Fleet { nodes } = client.get("/v1/fleet")?.expect(200)?;
    println!(
        "{:<24} {:<24} {:>7} {:>6} {:>12} {:<7}",
        "NODE", "GROUP", "CALLS", "EPOCH", "HEARTBEAT_MS", "HEALTH"
    );
    for node in nodes {
        println!(
            "{:<24} {:<24} {:>7} {:>6} {:>12} {:<7}",
            node.node,
            if node.group.is_empty() {
                "(standby)"
            } else {
                &node.group
            },
            node.calls,
            node.epoch,
            node.heartbeat_age_ms,
            if node.healthy { "ok" } else { "late" },
        );
    }
    Ok(())
}

fn blocks(client: &ApiClient, action: Option<BlocksAction>) -> anyhow::Result<()> {
    match action.unwrap_or(BlocksAction::List) {
        BlocksAction::List => {
            let Blocks { blocks } = client.get("/v1/blocks")?.expect(200)?;
            println!(
                "{:<40} {:<12} {:>10} {:>12}",
                "ADDRESS", "REASON", "SECS LEFT", "DROPPED"
            );
            for block in blocks {
                let left = block
                    .remaining_secs
                    .map_or_else(|| "-".to_owned(), |s| s.to_string());
                println!(
                    "{:<40} {:<12} {:>10} {:>12}",
                    block.address.to_string(),
                    block.reason,
                    left,
                    block.dropped,
                );
            }
        }
        BlocksAction::Add { address, secs } => {
            let request = BlockRequest { address, secs };
            let _: BlockRequest = client.post("/v1/blocks", &request)?.expect(201)?;
            match secs {
                Some(secs) => println!("blocked {address} for {secs} s"),
                None => println!("blocked {address} until removed"),
            }
        }
        BlocksAction::Remove { address } => {
            let _: Unblocked = client
                .delete(&format!("/v1/blocks/{address}"))?
                .expect(200)?;
            println!("unblocked {address}");
        }
    }
    Ok(())
}

fn sessions(client: &ApiClient, action: Option<SessionsAction>) -> anyhow::Result<()> {
    match action.unwrap_or(SessionsAction::List) {
        SessionsAction::List => {
            let Sessions { sessions } = client.get("/v1/sessions")?.expect(200)?;
            println!(
                "{:>7} {:<21} {:<21} {:<29} {:>12} {:>12} {:>9}",
                "SESSION", "A LOCAL", "B LOCAL", "LATCHED", "A->B PKTS", "B->A PKTS", "IDLE_MS"
            );
            for s in &sessions {
                println!(
                    "{:>7} {:<21} {:<21} {:<29} {:>12} {:>12} {:>9}",
                    s.id,
                    s.legs[Leg::A].local_rtp.to_string(),
                    s.legs[Leg::B].local_rtp.to_string(),
                    latching_label(&[s]),
                    rtp_packets([s], Leg::A),
                    rtp_packets([s], Leg::B),
                    s.idle_ms,
                );
            }
        }
        SessionsAction::Show { id } => {
            let session: SessionInfo = client.get(&format!("/v1/sessions/{id}"))?.expect(200)?;
            println!("{}", serde_json::to_string_pretty(&session)?);
        }
        SessionsAction::Create {
            a_peer,
            b_peer,
            rtcp_mux,
        } => {
            let leg = |side, peer| LegSpec {
                side,
                peer,
                sip_source: None,
            };
            let spec = SessionSpec {
                rtcp_mux,
                a: leg(Side::Public, a_peer),
                b: leg(Side::Private, b_peer),
            };
            let session: SessionInfo = client.post("/v1/sessions", &spec)?.expect(201)?;
            println!("{}", serde_json::to_string_pretty(&session)?);
        }
        SessionsAction::Delete { id } => {
            let session: SessionInfo = client.delete(&format!("/v1/sessions/{id}"))?.expect(200)?;
            println!("{}", serde_json::to_string_pretty(&session)?);
        }
    }
    Ok(())
}
