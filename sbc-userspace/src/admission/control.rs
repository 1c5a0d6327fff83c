//! Applying `[admission]` at start and again on reload (SIGHUP or `POST /v1/reload`), without
//! a restart: calls, buckets and blocks carry over.
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use anyhow::Context as _;
use tracing::info;

use super::{AdmissionConfig, SipGuard};

/// Another part that takes `[admission]` when it is applied: the proxy, for its limits and
/// shedding (the daemon wires it; admission knows nothing of the proxy).
pub type Reconfigure = Box<dyn Fn(&AdmissionConfig) + Send + Sync>;

/// Reads `[admission]` again from where the daemon's configuration came from (the daemon
/// wires it; admission knows nothing of the configuration file).
pub type Reread = Box<dyn Fn() -> anyhow::Result<AdmissionConfig> + Send + Sync>;

pub struct AdmissionControl {
    pub guard: Arc<SipGuard>,
    reconfigure: Option<Reconfigure>,
    /// Allowlisted without limits.
    backends: Vec<IpAddr>,
    /// The UDP SIP listeners the guard protects.
    listeners: Vec<SocketAddr>,
    /// How `[admission]` is read again on reload (`None`: not started from a file).
    reread: Option<Reread>,
}

impl AdmissionControl {
    /// Admission over `guard`, for the SIP `listeners` it protects, with the `backends`
    /// allowlisted without limits.
    pub fn new(
        guard: Arc<SipGuard>,
        reconfigure: Option<Reconfigure>,
        backends: Vec<IpAddr>,
        listeners: Vec<SocketAddr>,
        reread: Option<Reread>,
    ) -> Self {
        Self {
            guard,
            reconfigure,
            backends,
            listeners,
            reread,
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
        let reread = self
            .reread
            .as_ref()
            .context("the daemon was not started from a config file")?;
        self.apply(&reread()?)?;
        info!("admission configuration reloaded");
        Ok(())
    }
}
