//! Applying `[admission]` at start and again on reload (SIGHUP or `POST /v1/reload`), without
//! a restart: calls, buckets and blocks carry over.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
};

use anyhow::Context as _;
use tracing::info;

use super::{AdmissionConfig, SipGuard};
use crate::config::Config;

/// Another part that takes `[admission]` when it is applied: the proxy, for its limits and
/// shedding (the daemon wires it; admission knows nothing of the proxy).
pub type Reconfigure = Box<dyn Fn(&AdmissionConfig) + Send + Sync>;

pub struct AdmissionControl {
    pub guard: Arc<SipGuard>,
    reconfigure: Option<Reconfigure>,
    /// Allowlisted without limits.
    backends: Vec<IpAddr>,
    /// The UDP SIP listeners the guard protects.
    listeners: Vec<SocketAddr>,
    /// Where the configuration is read from on reload.
    config_path: Option<PathBuf>,
}

/// The addresses the guard protects: the SIP listeners, with an unspecified address replaced
/// by the media address of its side (what packets are actually sent to).
pub fn guarded_listeners(config: &Config) -> Vec<SocketAddr> {
    let Some(sip) = &config.sip else {
        return Vec::new();
    };
    let mut listeners = Vec::new();
    for (listen, address) in [
        (sip.public_listen, config.media.public_address),
        (sip.private_listen(), config.media.private_address()),
    ] {
        let listener = if listen.ip().is_unspecified() {
            SocketAddr::new(address, listen.port())
        } else {
            listen
        };
        if !listeners.contains(&listener) {
            listeners.push(listener);
        }
    }
    listeners
}

impl AdmissionControl {
    pub fn new(
        guard: Arc<SipGuard>,
        reconfigure: Option<Reconfigure>,
        config: &Config,
        config_path: Option<PathBuf>,
    ) -> Self {
        let backends = config.sip.as_ref().map_or_else(Vec::new, |sip| {
            sip.backends.iter().map(|b| b.address.ip()).collect()
        });
        Self {
            guard,
            reconfigure,
            backends,
            listeners: guarded_listeners(config),
            config_path,
        }
    }

    pub fn apply(&self, admission: &AdmissionConfig) -> anyhow::Result<()> {
        self.guard
            .configure(admission, &self.backends, &self.listeners)?;
        if let Some(reconfigure) = &self.reconfigure {
            reconfigure(admission);
        }
        Ok(())
    }

    /// Reads the configuration file again and applies its `[admission]` section; the rest
    /// of the file takes a restart. A file that does not validate changes nothing.
    pub fn reload(&self) -> anyhow::Result<()> {
        let path = self
            .config_path
            .as_ref()
            .context("the daemon was not started from a config file")?;
        let config = Config::load(path)?;
        self.apply(&config.admission)?;
        info!(config = %path.display(), "admission configuration reloaded");
        Ok(())
    }
}
