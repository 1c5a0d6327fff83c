//! HTTP to the daemon's TCP admin listener from inside its network namespace, and the
//! Prometheus text format as the tests read it.
use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context as _, bail};

/// GET `path` from `address` in namespace `ns`: status code and body.
pub fn get_in(
    ns: &str,
    address: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let (ns, path, token) = (ns.to_owned(), path.to_owned(), token.map(str::to_owned));
    // A thread of its own: entering the namespace changes the calling thread for good.
    std::thread::spawn(move || -> anyhow::Result<(u16, String)> {
        crate::netns::enter(&ns)?;
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
            .with_context(|| format!("connecting to {address} in {ns}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let authorization = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: sbc\r\nConnection: close\r\n{authorization}\r\n"
        )?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let response = sbc::api::client::parse_http(&raw)?;
        let body = String::from_utf8(response.payload).context("non-UTF-8 HTTP body")?;
        Ok((response.status, body))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the HTTP thread panicked"))?
}

/// One scrape: every sample by its series (`name{labels}` exactly as exposed).
pub struct Metrics {
    pub text: String,
    samples: BTreeMap<String, f64>,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect();
        Self {
            text: text.to_owned(),
            samples,
        }
    }

    /// A series' value, 0 when it is absent (a counter nothing has touched yet).
    pub fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// The sum over every series of a metric whose labels contain all of `labels`
    /// (`label="value"` each).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| {
                let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
                metric == name && labels.iter().all(|l| rest.contains(l))
            })
            // A fold from +0: an empty f64 sum is -0.
            .fold(0.0, |total, (_, v)| total + v)
    }

    /// `promtool check metrics` on this scrape: its complaints, if any.
    pub fn promtool_check(&self) -> anyhow::Result<()> {
        use std::process::{Command, Stdio};
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context(
                "running promtool (Debian package prometheus; `cargo xtask setup` installs it)",
            )?;
        child
            .stdin
            .take()
            .context("promtool stdin")?
            .write_all(self.text.as_bytes())?;
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!(
                "promtool check metrics failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}
