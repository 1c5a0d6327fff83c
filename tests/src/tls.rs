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

/// A certificate for `host`, its key, and the authority that issued it (made for it alone,
/// as `<name>-ca.pem`), in `dir`: a leaf as a real one is (not a CA itself, its name in
/// subjectAltName), which TLS clients that check the chain (rustls, stunnel) accept.
pub struct Issued {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn certificate(dir: &Path, name: &str, host: &str) -> anyhow::Result<Issued> {
    let path = |suffix: &str| dir.join(format!("{name}{suffix}"));
    let text = |path: &Path| path.to_string_lossy().into_owned();
    let (ca, ca_key) = (path("-ca.pem"), path("-ca.key"));
    let (cert, key, request, extensions) = (path(".pem"), path(".key"), path(".csr"), path(".ext"));
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let openssl = |args: &[&str]| {
        run("openssl", args).context("making a certificate (cargo xtask setup installs openssl)")
    };
    let ca_subject = format!("/CN={name} lab authority");
    openssl(
        &[
            &["req", "-x509", "-days", "2", "-subj", &ca_subject][..],
            &new_key,
            &["-keyout", &text(&ca_key), "-out", &text(&ca)],
        ]
        .concat(),
    )?;
    let subject = format!("/CN={host}");
    openssl(
        &[
            &["req", "-subj", &subject][..],
            &new_key,
            &["-keyout", &text(&key), "-out", &text(&request)],
        ]
        .concat(),
    )?;
    std::fs::write(
        &extensions,
        format!("subjectAltName=DNS:{host}\nbasicConstraints=CA:false\n"),
    )?;
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        &text(&request),
        "-CA",
        &text(&ca),
        "-CAkey",
        &text(&ca_key),
        "-CAcreateserial",
        "-extfile",
        &text(&extensions),
        "-out",
        &text(&cert),
    ])?;
    Ok(Issued { ca, cert, key })
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
        Self::run(
            ns,
            &format!(
                "client = yes\naccept = {accept}\nconnect = {connect}\nverifyChain = yes\n\
                 CAfile = {}\ncheckHost = {host}\n",
                trusted.display()
            ),
        )
    }

    /// A TLS server tunnel: TLS accepted on `accept` with `cert` and `key`, plain TCP to
    /// `connect` (a backend over TLS).
    pub fn serve(
        ns: &Netns,
        accept: SocketAddr,
        connect: SocketAddr,
        (cert, key): (&Path, &Path),
    ) -> anyhow::Result<Self> {
        Self::run(
            ns,
            &format!(
                "accept = {accept}\nconnect = {connect}\ncert = {}\nkey = {}\n",
                cert.display(),
                key.display()
            ),
        )
    }

    fn run(ns: &Netns, service: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("stunnel.conf");
        std::fs::write(
            &config,
            format!("foreground = yes\npid =\ndebug = 4\n[sip]\n{service}"),
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
