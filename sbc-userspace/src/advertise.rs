//! The public address to advertise, read from where the deployment keeps it rather than
//! written in the config: a cloud VM's external address, from the provider's metadata
//! service (`sip.public_advertise_command`) or from a file a provisioning hook writes
//! (`sip.public_advertise_file`). Read at start, and again on every reload (SIGHUP,
//! `POST /v1/reload`): an elastic IP that moves to this VM is advertised from then on, in SIP
//! and in the SDP of new offers and answers.
use std::{
    io::Read,
    net::IpAddr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use tracing::info;

use crate::{media::MediaPlane, proxy::ProxyHandle, side::Side};

/// How long the command may take (a metadata service answers in milliseconds; one that
/// hangs must not hold a reload, or the start, for long).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the address is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdvertiseSource {
    /// A shell command whose output's first non-empty line is the address.
    Command(String),
    /// A file whose first non-empty line is the address.
    File(PathBuf),
}

impl AdvertiseSource {
    /// The config key that names it.
    pub fn key(&self) -> &'static str {
        match self {
            AdvertiseSource::Command(_) => "sip.public_advertise_command",
            AdvertiseSource::File(_) => "sip.public_advertise_file",
        }
    }

    /// The address it gives now, or what went wrong.
    pub fn read(&self) -> Result<IpAddr, String> {
        let text = match self {
            AdvertiseSource::Command(command) => run(command)?,
            AdvertiseSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        };
        let line = text
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .ok_or("gave no address (nothing but blank lines)")?;
        line.parse()
            .map_err(|_| format!("gave {line:?}, which is no IP address"))
    }
}

/// The standard output of `command` run by `sh -c`, if it succeeds within `COMMAND_TIMEOUT`.
fn run(command: &str) -> Result<String, String> {
    let mut child = Command::new("sh")
        .args(["-c", command])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < COMMAND_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("took longer than {COMMAND_TIMEOUT:?}"));
            }
            Err(e) => return Err(format!("cannot wait for the command: {e}")),
        }
    };
    let mut output = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        // Its first line is all that is read; a command printing more than a pipe holds
        // would have blocked and timed out above.
        let _ = stdout.read_to_string(&mut output);
    }
    if !status.success() {
        let mut error = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut error);
        }
        return Err(format!("failed ({status}): {}", error.trim()));
    }
    Ok(output)
}

/// The public address read again on reload, and given to the proxy and the media plane when
/// it moved.
pub struct Readvertise {
    source: AdvertiseSource,
    /// The public listener's bound address (an advertised one must be of its family).
    bound: IpAddr,
    /// Media advertises SIP's address (no `media.public_advertise` of its own).
    media_follows: bool,
    current: Mutex<IpAddr>,
    proxy: ProxyHandle,
    plane: Arc<MediaPlane>,
}

impl Readvertise {
    pub fn new(
        source: AdvertiseSource,
        (bound, current): (IpAddr, IpAddr),
        media_follows: bool,
        proxy: ProxyHandle,
        plane: Arc<MediaPlane>,
    ) -> Self {
        Self {
            source,
            bound,
            media_follows,
            current: Mutex::new(current),
            proxy,
            plane,
        }
    }

    /// Reads the address again; a new one is advertised from now on. One that cannot be read
    /// or is no address to advertise leaves the running one in place (the error says why).
    pub fn reload(&self) -> anyhow::Result<()> {
        let key = self.source.key();
        let address = self
            .source
            .read()
            .map_err(|e| anyhow::anyhow!("{key}: {e}"))
            .context("keeping the advertised address")?;
        crate::proxy::config::check_advertised(key, address, self.bound)
            .context("keeping the advertised address")?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if *current == address {
            return Ok(());
        }
        info!(from = %*current, to = %address, "the public address moved: advertising the new one");
        self.proxy.readvertise(Side::Public, address);
        if self.media_follows {
            self.plane.readvertise(Side::Public, address);
        }
        *current = address;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_read_from_a_command_or_a_file() {
        let command = AdvertiseSource::Command("printf '\\n 203.0.113.7 \\nrest\\n'".into());
        assert_eq!(command.read(), Ok("203.0.113.7".parse().unwrap()));
        let failing = AdvertiseSource::Command("echo no metadata >&2; exit 3".into());
        let error = failing.read().unwrap_err();
        assert!(error.contains("no metadata"), "{error}");
        let garbage = AdvertiseSource::Command("echo '<html>'".into());
        assert!(garbage.read().unwrap_err().contains("no IP address"));
        let dir = std::env::temp_dir().join(format!("sbc-advertise-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("public-ip");
        std::fs::write(&path, "2001:db8::7\n").unwrap();
        let file = AdvertiseSource::File(path.clone());
        assert_eq!(file.read(), Ok("2001:db8::7".parse().unwrap()));
        std::fs::remove_file(&path).unwrap();
        assert!(file.read().unwrap_err().contains("cannot read"));
        std::fs::remove_dir(&dir).unwrap();
    }
}
