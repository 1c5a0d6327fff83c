//! SIP over TLS (RFC 3261 26.2, RFC 5630): a listener on the public side (`[sip.tls]`, port
//! 5061 as a rule) for carriers that send their signalling encrypted. Its certificate chain
//! and private key are read from PEM files at start (a problem stops the start, naming the
//! key) and again on every reload (SIGHUP, `sbc reload`): connections accepted from then on
//! get the new certificate, while the open ones, and the calls on them, go on. Once the
//! handshake is done a connection is served as a TCP one (`tcp::serve`), within the same
//! `[sip.tcp]` limits. (rustls with the aws-lc-rs provider: no OpenSSL in the daemon.)
//!
//! Backends with `transport = "tls"` are reached over TLS (`TlsPeer`): their certificate must
//! be for their `server_name` (also sent as SNI) and issued by an authority of `tls_ca`, or of
//! the system's store when that is not set.
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, RwLock},
};

use anyhow::Context as _;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::{
    TlsAcceptor, TlsConnector,
    client::TlsStream,
    rustls::{
        self, ClientConfig, RootCertStore, ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
    },
};
use tracing::info;

use super::config::{BackendConfig, BackendHostConfig, SipConfig};
use crate::config_error::ConfigError;

/// How to speak TLS to one peer: what to trust, and the name it must prove.
pub struct TlsPeer {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl TlsPeer {
    /// The TLS settings of `[[sip.backends]]` entry `index`; a problem names its key.
    pub fn for_backend(backend: &BackendConfig, index: usize) -> Result<Self, ConfigError> {
        let key = |name: &str| format!("sip.backends[{index}].{name}");
        let settings = (backend.server_name.as_deref(), backend.tls_ca.as_deref());
        Self::new(settings, (&key("server_name"), &key("tls_ca")))
    }

    /// The TLS settings of `[[sip.backend_hosts]]` entry `index`: its certificate must be for
    /// `server_name`, by default the host it is named by.
    pub fn for_backend_host(entry: &BackendHostConfig, index: usize) -> Result<Self, ConfigError> {
        let key = |name: &str| format!("sip.backend_hosts[{index}].{name}");
        let name = entry.server_name.as_deref().unwrap_or(&entry.host);
        let settings = (Some(name), entry.tls_ca.as_deref());
        Self::new(settings, (&key("server_name"), &key("tls_ca")))
    }

    /// The trunk's (`sip.trunk_server_name`, by default `sip.trunk_host`, and
    /// `sip.trunk_tls_ca`).
    pub fn for_trunk(sip: &SipConfig) -> Result<Self, ConfigError> {
        let name = sip
            .trunk_server_name
            .as_deref()
            .or(sip.trunk_host.as_deref());
        let settings = (name, sip.trunk_tls_ca.as_deref());
        Self::new(settings, ("sip.trunk_server_name", "sip.trunk_tls_ca"))
    }

    /// A peer's certificate must be for `server_name` and issued by an authority of the
    /// `tls_ca` file, or of the system's store; a problem names the key at fault.
    fn new(
        (server_name, tls_ca): (Option<&str>, Option<&std::path::Path>),
        (name_key, ca_key): (&str, &str),
    ) -> Result<Self, ConfigError> {
        let name = server_name.unwrap_or_default().to_owned();
        let name =
            ServerName::try_from(name).map_err(|e| ConfigError::new(name_key, e.to_string()))?;
        let mut roots = RootCertStore::empty();
        match tls_ca {
            Some(path) => {
                let read = |e: &dyn std::fmt::Display| {
                    ConfigError::new(ca_key, format!("cannot read {}: {e}", path.display()))
                };
                for cert in CertificateDer::pem_file_iter(path).map_err(|e| read(&e))? {
                    let cert = cert.map_err(|e| read(&e))?;
                    roots.add(cert).map_err(|e| read(&e))?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        if roots.is_empty() {
            return Err(ConfigError::new(
                ca_key,
                "no authority to trust (none in the file, nor in the system's store)",
            ));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new(name_key, e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            connector: TlsConnector::from(Arc::new(client)),
            name,
        })
    }

    /// The handshake over `stream`, checking the peer's certificate and name.
    pub async fn connect(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.name.clone(), stream).await
    }
}

/// `[sip.tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Where carriers connect (TLS over TCP), on the public side.
    pub listen: SocketAddr,
    /// The certificate chain (PEM: the server's certificate first, then its issuers).
    pub certificate: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
}

/// The certificate new connections are offered, replaced on reload.
pub struct Certificates {
    config: TlsConfig,
    acceptor: RwLock<TlsAcceptor>,
}

impl Certificates {
    /// Reads the certificate and key; a problem names the key of the file at fault.
    pub fn load(config: &TlsConfig) -> Result<Arc<Self>, ConfigError> {
        let acceptor = acceptor(config)?;
        Ok(Arc::new(Self {
            config: config.clone(),
            acceptor: RwLock::new(acceptor),
        }))
    }

    /// What a connection accepted now is offered.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the files again: new connections get what they hold now. Files that do not
    /// make a certificate and key leave the running ones in place (the error says why).
    pub fn reload(&self) -> anyhow::Result<()> {
        let acceptor = acceptor(&self.config).context("keeping the TLS certificate in use")?;
        *self.acceptor.write().unwrap_or_else(|p| p.into_inner()) = acceptor;
        info!(certificate = %self.config.certificate.display(), "TLS certificate reloaded: new connections get it");
        Ok(())
    }
}

fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, ConfigError> {
    let unreadable = |key: &str, path: &PathBuf, e: &dyn std::fmt::Display| {
        ConfigError::new(key, format!("cannot read {}: {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(&config.certificate)
        .map_err(|e| unreadable("sip.tls.certificate", &config.certificate, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable("sip.tls.certificate", &config.certificate, &e))?;
    if chain.is_empty() {
        return Err(ConfigError::new(
            "sip.tls.certificate",
            format!("{} holds no PEM certificate", config.certificate.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&config.private_key)
        .map_err(|e| unreadable("sip.tls.private_key", &config.private_key, &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("sip.tls", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            ConfigError::new(
                "sip.tls.private_key",
                format!("does not go with the certificate: {e}"),
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}
