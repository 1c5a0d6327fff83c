//! What DNS says the names of the configuration stand for now (`Input::Resolved`): a backend
//! host's targets join the pool or retire from it, the trunk's replace the last answer.
use std::net::IpAddr;

use tracing::info;

use super::{Core, GuardUpdate, backends::Source};
use crate::proxy::dns::Target;

impl Core {
    /// `[[sip.backend_hosts]]` entry `host` stands for `targets` now: new targets join the pool
    /// (stats, trust, probes), those gone retire with the calls they carry.
    pub(super) fn backends_resolved(&mut self, host: usize, targets: &[Target]) {
        let Some(entry) = self.config.backend_hosts.get(host) else {
            return;
        };
        let (name, shape) = (entry.host.clone(), (entry.transport, entry.max_calls));
        let joined = self.backends.resolved(host, targets, shape, self.now.at);
        for &id in &joined.added {
            self.stats.backends.push(self.backends[id].address);
        }
        let ips: Vec<IpAddr> = joined
            .added
            .iter()
            .map(|&id| self.backends[id].address.ip())
            .collect();
        if !ips.is_empty() {
            self.admission.trust_backends(&ips);
            self.guard(GuardUpdate::TrustBackends(ips));
        }
        let serving: Vec<_> = self
            .backends
            .serving()
            .filter(|(_, b)| b.source == Source::Host(host))
            .map(|(id, b)| {
                (
                    id,
                    format!(
                        "{} (priority {}, weight {})",
                        b.address, b.priority, b.weight
                    ),
                )
            })
            .collect();
        if !joined.added.is_empty() || joined.retired > 0 {
            let targets: Vec<&str> = serving.iter().map(|(_, text)| text.as_str()).collect();
            info!(host = %name, added = joined.added.len(), retired = joined.retired, targets = %targets.join(", "), "backends found by DNS");
        }
        let ids: Vec<_> = serving.into_iter().map(|(id, _)| id).collect();
        self.start_probes_of(&ids);
    }

    /// `sip.trunk_host` stands for `targets` now.
    pub(super) fn trunk_resolved(&mut self, targets: Vec<Target>) {
        if targets != self.trunk_targets {
            let found: Vec<String> = targets.iter().map(|t| t.address.to_string()).collect();
            info!(targets = %found.join(", "), "trunk targets found by DNS");
        }
        self.trunk_targets = targets;
    }
}
