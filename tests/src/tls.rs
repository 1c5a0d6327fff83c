//! TLS in the lab: self-signed certificates made with openssl, a carrier's TLS made with
//! stunnel (Debian's SIPp is built without TLS: SIPp speaks TCP to stunnel, which speaks TLS
//! to the sbc, checking its certificate and name), and what certificate a listener offers.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::Context as _;

use crate::netns::{Netns, command_in, run};

/// A self-signed certificate for `host` and its key, written as `<name>.pem` and
/// `<name>.key` in `dir`.
pub fn certificate(dir: &Path, name: &str, host: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let (cert_arg, key_arg) = (cert.to_string_lossy(), key.to_string_lossy());
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={host}"),
            "-addext",
            &format!("subjectAltName=DNS:{host}"),
            "-keyout",
            &key_arg,
            "-out",
            &cert_arg,
        ],
    )
    .context("making a certificate (cargo xtask setup installs openssl)")?;
    Ok((cert, key))
}

/// The SHA-256 fingerprint of a certificate file, as openssl prints it.
pub fn fingerprint(cert: &Path) -> anyhow::Result<String> {
    let cert = cert.to_string_lossy();
    let out = run(
        "openssl",
        &["x509", "-noout", "-fingerprint", "-sha256", "-in", &cert],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The fingerprint of the certificate a TLS listener at `address` offers a new connection
/// now (from namespace `ns`).
pub fn offered(ns: &Netns, address: SocketAddr, host: &str) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let cert = dir.path().join("offered.pem");
    let connect = address.to_string();
    let out = command_in(&ns.name, None, "openssl")
        .args(["s_client", "-connect", &connect, "-servername", host])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("openssl s_client")?;
    std::fs::write(&cert, &out.stdout)?;
    fingerprint(&cert)
}

/// A TLS client tunnel (stunnel) in a namespace: plain TCP accepted on `accept`, TLS to
/// `connect`, the peer's certificate checked against `trusted` for `host`.
pub struct Tunnel {
    child: Child,
    dir: tempfile::TempDir,
}

impl Tunnel {
    pub fn start(
        ns: &Netns,
        accept: SocketAddr,
        connect: SocketAddr,
        (trusted, host): (&Path, &str),
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("stunnel.conf");
        std::fs::write(
            &config,
            format!(
                "foreground = yes\npid =\ndebug = 4\n[sip]\nclient = yes\naccept = {accept}\n\
                 connect = {connect}\nverifyChain = yes\nCAfile = {}\ncheckHost = {host}\n",
                trusted.display()
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("stunnel.log"))?;
        let child = command_in(&ns.name, None, "stunnel")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting stunnel (cargo xtask setup installs stunnel4)")?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self { child, dir })
    }

    /// What stunnel logged, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stunnel.log")).unwrap_or_default()
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
