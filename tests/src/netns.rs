//! Network namespaces owned by this process: created with `ip netns add`, deleted on drop.
use std::{
    fs::File,
    os::fd::AsRawFd as _,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, bail};

/// A unique prefix for this process' namespaces, so parallel runs never collide.
pub fn unique_prefix(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "sbct-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command and fails with its stderr unless it succeeds.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<Output> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: &str) -> anyhow::Result<Self> {
        // A leftover from a crashed run of the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        run("ip", &["netns", "add", name])?;
        let ns = Self { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs a program inside the namespace (network only; the mount namespace is shared, so
    /// bpffs pins made inside are visible outside).
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        let net = format!("--net=/run/netns/{}", self.name);
        let mut full = vec![net.as_str(), program];
        full.extend_from_slice(args);
        run("nsenter", &full)
    }

    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")])?;
        Ok(())
    }

    /// Spawns a thread that runs `f` inside this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> std::thread::JoinHandle<anyhow::Result<T>> {
        let name = self.name.clone();
        std::thread::spawn(move || {
            enter(&name)?;
            f()
        })
    }
}

/// A command that runs `program` in namespace `name`, on `cpu` alone if given. taskset and
/// nsenter exec what follows them, so the child's PID is the program's own.
pub fn command_in(name: &str, cpu: Option<usize>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = match cpu {
        Some(cpu) => {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", &cpu.to_string(), "nsenter"]);
            taskset
        }
        None => Command::new("nsenter"),
    };
    command.arg(format!("--net=/run/netns/{name}")).arg(program);
    command
}

/// Moves the calling thread into a namespace (sockets it creates afterwards live there).
pub fn enter(name: &str) -> anyhow::Result<()> {
    let file = File::open(format!("/run/netns/{name}"))
        .with_context(|| format!("opening netns {name}"))?;
    // SAFETY: a valid namespace fd; CLONE_NEWNET only changes this thread's network namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns({name}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` with the calling thread in namespace `name`, then moves the thread back.
pub fn within<T>(name: &str, f: impl FnOnce() -> T) -> anyhow::Result<T> {
    let home = File::open("/proc/thread-self/ns/net").context("opening this thread's netns")?;
    enter(name)?;
    let result = f();
    // SAFETY: a valid namespace fd; CLONE_NEWNET only changes this thread's network namespace.
    if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "returning from netns {name}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(result)
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also deletes the veth ends inside it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
