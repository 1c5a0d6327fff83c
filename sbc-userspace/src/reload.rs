//! Reloading a running daemon (SIGHUP, `POST /v1/reload`): `[admission]` read from the config
//! file again, the public address to advertise read again from its source
//! (`advertise::Readvertise`), and the TLS certificate and key from their files, each
//! whatever became of the others.
use std::sync::Arc;

use crate::{admission::AdmissionControl, advertise::Readvertise, proxy::tls::Certificates};

pub struct Reload {
    pub admission: Arc<AdmissionControl>,
    /// When the public address is read from a command or a file.
    pub public_address: Option<Readvertise>,
    /// When the proxy has a TLS listener.
    pub tls: Option<Arc<Certificates>>,
}

impl Reload {
    /// What was reloaded, or what failed (the running configuration then stays as it was).
    pub fn reload(&self) -> anyhow::Result<String> {
        let mut reloaded = Vec::new();
        let mut failures = Vec::new();
        match self.admission.reload() {
            Ok(()) => reloaded.push("admission"),
            Err(e) => failures.push(format!("{e:#}")),
        }
        if let Some(public_address) = &self.public_address {
            match public_address.reload() {
                Ok(()) => reloaded.push("public address"),
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => reloaded.push("TLS certificate"),
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        if failures.is_empty() {
            Ok(reloaded.join(", "))
        } else {
            anyhow::bail!("{}", failures.join("; "))
        }
    }
}
