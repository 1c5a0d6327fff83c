//! Logs that cannot take the box down: text or JSON lines on stderr, with a bound on their
//! volume. Every line takes a token from its call site's bucket and from a global one; without
//! both it is dropped and counted, so a flood that makes one warning fire per packet costs a
//! counter increment, and the other warnings still get through. The count is exported
//! (`sbc_log_lines_suppressed_total`) and summarised in the log every 10 seconds.
use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tracing::{Event, Subscriber, callsite::Identifier};
use tracing_subscriber::{
    EnvFilter, Layer, layer::Context, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

use crate::{
    clock::monotonic_ns,
    config::{LogConfig, LogFormat},
};

/// Lines dropped by the limits since start.
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

pub fn suppressed_lines() -> u64 {
    SUPPRESSED.load(Ordering::Relaxed)
}

/// A token bucket refilled at `rate` per second, holding at most one second's worth.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated_ns: u64,
}

impl Bucket {
    fn full(rate: u32, now_ns: u64) -> Self {
        Self {
            tokens: f64::from(rate),
            updated_ns: now_ns,
        }
    }

    fn refill(&mut self, rate: u32, now_ns: u64) {
        let elapsed = now_ns.saturating_sub(self.updated_ns) as f64 / 1e9;
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(rate));
        self.updated_ns = now_ns;
    }
}

struct Limits {
    global: Bucket,
    sites: HashMap<Identifier, Bucket>,
}

pub struct RateLimit {
    per_sec: u32,
    per_site_per_sec: u32,
    limits: Mutex<Limits>,
}

impl RateLimit {
    pub fn new(per_sec: u32, per_site_per_sec: u32) -> Self {
        let now = monotonic_ns();
        Self {
            per_sec,
            per_site_per_sec,
            limits: Mutex::new(Limits {
                global: Bucket::full(per_sec, now),
                sites: HashMap::new(),
            }),
        }
    }

    /// Whether a line from `site` may be written at `now_ns` (taking its tokens if so).
    fn admit(&self, site: Identifier, now_ns: u64) -> bool {
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let Limits { global, sites } = &mut *limits;
        global.refill(self.per_sec, now_ns);
        let per_site = self.per_site_per_sec;
        let bucket = sites
            .entry(site)
            .or_insert_with(|| Bucket::full(per_site, now_ns));
        bucket.refill(per_site, now_ns);
        if global.tokens < 1.0 || bucket.tokens < 1.0 {
            SUPPRESSED.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        global.tokens -= 1.0;
        bucket.tokens -= 1.0;
        true
    }
}

impl<S: Subscriber> Layer<S> for RateLimit {
    fn event_enabled(&self, event: &Event<'_>, _cx: Context<'_, S>) -> bool {
        self.admit(event.metadata().callsite(), monotonic_ns())
    }
}

/// Installs the logger for the daemon and the commands.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let limit = RateLimit::new(config.max_lines_per_sec, config.max_lines_per_sec_per_site);
    let registry = tracing_subscriber::registry().with(filter).with(limit);
    let fmt = tracing_subscriber::fmt::layer().with_writer(|| Escaping(std::io::stderr()));
    let result = match config.format {
        // No colours: every escape sequence in a line would be one from the wire.
        LogFormat::Text => registry.with(fmt.with_ansi(false)).try_init(),
        LogFormat::Json => registry
            .with(fmt.json().flatten_event(true).with_current_span(false))
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("sbc: logging was set up already: {e}");
    }
}

/// A log writer that shows every control character of a line as `\xNN` (the newline that
/// ends it aside): Call-IDs, User-Agents and reasons come from the wire, and raw they could
/// recolour, move the cursor of, or forge lines in an operator's terminal or log viewer. JSON
/// lines have none to escape (JSON escapes them itself).
struct Escaping<W>(W);

impl<W: std::io::Write> std::io::Write for Escaping<W> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(&escape_controls(line))?;
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// `line` with its control characters (C0 and DEL, but a final newline) as `\xNN`.
fn escape_controls(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    if !body.iter().any(|b| b.is_ascii_control()) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len() + 16);
    for &byte in body {
        if byte.is_ascii_control() {
            out.extend_from_slice(format!("\\x{byte:02x}").as_bytes());
        } else {
            out.push(byte);
        }
    }
    if body.len() < line.len() {
        out.push(b'\n');
    }
    std::borrow::Cow::Owned(out)
}

/// Every 10 s, says how many lines the limits dropped (a line of its own, itself limited).
pub async fn report_suppressed() {
    let mut reported = suppressed_lines();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let now = suppressed_lines();
        if now > reported {
            tracing::warn!(
                suppressed = now - reported,
                "log lines dropped by the rate limit in the last 10 s (log.max_lines_per_sec)"
            );
            reported = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_from_the_wire_are_escaped_but_the_line_end_stays() {
        let line = b"call_id=\x1b[31mred\x07 tab\there\r\nforged line\x7f\n";
        assert_eq!(
            &*escape_controls(line),
            b"call_id=\\x1b[31mred\\x07 tab\\x09here\\x0d\\x0aforged line\\x7f\n"
        );
        let clean = b"an ordinary line\n";
        assert!(matches!(
            escape_controls(clean),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    /// Two real call sites, as `tracing`'s macros make them.
    fn sites() -> [Identifier; 2] {
        use tracing::{Callsite as _, metadata::Kind};
        let one = tracing::callsite!(name: "one", kind: Kind::EVENT, fields: []);
        let two = tracing::callsite!(name: "two", kind: Kind::EVENT, fields: []);
        [one.metadata().callsite(), two.metadata().callsite()]
    }

    #[test]
    fn one_site_is_bounded_and_cannot_starve_another() {
        let [one, two] = sites();
        let limit = RateLimit::new(100, 5);
        let start = 1_000_000_000;
        let admitted = (0..1000)
            .filter(|_| limit.admit(one.clone(), start))
            .count();
        assert_eq!(admitted, 5, "a burst of one site's lines");
        assert!(limit.admit(two, start), "another site still logs");
        // A second later the site has a second's worth again.
        let later = start + 1_000_000_000;
        let admitted = (0..1000)
            .filter(|_| limit.admit(one.clone(), later))
            .count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn the_global_bound_holds_across_sites() {
        let sites = sites();
        let limit = RateLimit::new(10, 10);
        let admitted = (0..100)
            .filter(|i| limit.admit(sites[i % 2].clone(), 5_000_000_000))
            .count();
        assert_eq!(admitted, 10);
    }
}
