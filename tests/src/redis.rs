//! A Redis server in a lab namespace (Debian's `redis-server`, `cargo xtask setup` installs it):
//! no persistence, as a fleet's call state needs none, stopped by its PID when dropped.
use std::{
    net::SocketAddr,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::netns::{Netns, command_in};

pub struct RedisServer {
    child: Child,
    namespace: String,
    pub address: SocketAddr,
}

impl RedisServer {
    /// Serves on `address` in `ns`; returns once it answers PING.
    pub fn start(ns: &Netns, address: SocketAddr) -> anyhow::Result<Self> {
        let (ip, port) = (address.ip().to_string(), address.port().to_string());
        let child = command_in(&ns.name, None, "redis-server")
            .args([
                "--bind",
                &ip,
                "--port",
                &port,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args([
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
                "--dir",
                "/tmp",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (cargo xtask setup installs redis-server)")?;
        let mut server = Self {
            child,
            namespace: ns.name.clone(),
            address,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while server
            .cli(&["PING"])
            .map_or(true, |answer| answer.trim() != "PONG")
        {
            if let Some(status) = server.child.try_wait()? {
                bail!("redis-server exited at start: {status}");
            }
            if Instant::now() > deadline {
                bail!("redis-server does not answer on {address}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// `redis-cli` with `args` against this server: its output.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = command_in(&self.namespace, None, "redis-cli")
            .args(["-h", &self.address.ip().to_string()])
            .args(["-p", &self.address.port().to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running redis-cli")?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The keys matching `pattern`.
    pub fn keys(&self, pattern: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .cli(&["--scan", "--pattern", pattern])?
            .lines()
            .map(str::to_owned)
            .filter(|key| !key.is_empty())
            .collect())
    }
}

impl RedisServer {
    /// SIGKILL, by its PID: Redis is gone (reaped when dropped).
    pub fn kill(&self) {
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
