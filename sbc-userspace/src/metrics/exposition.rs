//! The Prometheus text exposition format (version 0.0.4), written by hand: every metric is read
//! at scrape time from state the daemon keeps anyway (atomics, the media plane, the kernel's
//! per-CPU maps), so a registry would only add a second copy of it. `promtool check metrics`
//! checks the output in the tests.
use std::fmt::Write as _;

use super::histogram::HistogramSnapshot;

/// A sample's labels: names are fixed in the code, values are escaped on output.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

pub const NO_LABELS: Labels<'static> = &[];

#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn finish(self) -> String {
        self.out
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn line(&mut self, name: &str, labels: Labels<'_>, value: &str) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape_label(value));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(value);
        self.out.push('\n');
    }

    /// A counter family (the name ends in `_total`) with one sample per label set.
    pub fn counter<'a, L: AsRef<[(&'a str, &'a str)]>>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, u64)>,
    ) {
        debug_assert!(name.ends_with("_total"), "{name}: counters end in _total");
        self.header(name, help, "counter");
        for (labels, value) in samples {
            self.line(name, labels.as_ref(), &value.to_string());
        }
    }

    /// A counter without labels.
    pub fn counter_value(&mut self, name: &str, help: &str, value: u64) {
        self.counter(name, help, [(NO_LABELS, value)]);
    }

    pub fn gauge<'a, L: AsRef<[(&'a str, &'a str)]>>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, f64)>,
    ) {
        self.header(name, help, "gauge");
        for (labels, value) in samples {
            self.line(name, labels.as_ref(), &format_float(value));
        }
    }

    /// A gauge without labels.
    pub fn gauge_value(&mut self, name: &str, help: &str, value: f64) {
        self.gauge(name, help, [(NO_LABELS, value)]);
    }

    /// A histogram family (the name ends in its unit, `_seconds`).
    pub fn histogram<'a, L: AsRef<[(&'a str, &'a str)]>>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, HistogramSnapshot)>,
    ) {
        self.header(name, help, "histogram");
        let (bucket, sum, count) = (
            format!("{name}_bucket"),
            format!("{name}_sum"),
            format!("{name}_count"),
        );
        for (labels, snapshot) in samples {
            let labels = labels.as_ref();
            let le_bounds = snapshot
                .buckets()
                .map(|(bound, cumulative)| (format_float(bound), cumulative))
                .chain(std::iter::once(("+Inf".to_owned(), snapshot.count)));
            for (le, cumulative) in le_bounds {
                let mut with_le: Vec<(&str, &str)> = labels.to_vec();
                with_le.push(("le", &le));
                self.line(&bucket, &with_le, &cumulative.to_string());
            }
            self.line(&sum, labels, &format_float(snapshot.sum_seconds()));
            self.line(&count, labels, &snapshot.count.to_string());
        }
    }
}

fn format_float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn escape_help(help: &str) -> String {
    help.replace('\\', r"\\").replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::histogram::Histogram;

    #[test]
    fn writes_families_with_escaped_labels() {
        let mut out = Exposition::default();
        out.counter(
            "sbc_things_total",
            "Things.",
            [(&[("name", "a\"b\\c\nd")][..], 3)],
        );
        out.gauge_value("sbc_ratio", "A ratio.", f64::NAN);
        assert_eq!(
            out.finish(),
            "# HELP sbc_things_total Things.\n# TYPE sbc_things_total counter\n\
             sbc_things_total{name=\"a\\\"b\\\\c\\nd\"} 3\n\
             # HELP sbc_ratio A ratio.\n# TYPE sbc_ratio gauge\nsbc_ratio NaN\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_inf_sum_and_count() {
        let histogram = Histogram::default();
        histogram.observe(std::time::Duration::from_millis(3));
        histogram.observe(std::time::Duration::from_millis(300));
        histogram.observe(std::time::Duration::from_secs(100));
        let mut out = Exposition::default();
        out.histogram(
            "sbc_delay_seconds",
            "Delay.",
            [(&[("side", "public")][..], histogram.snapshot())],
        );
        let text = out.finish();
        assert!(text.contains("sbc_delay_seconds_bucket{side=\"public\",le=\"0.005\"} 1\n"));
        assert!(text.contains("sbc_delay_seconds_bucket{side=\"public\",le=\"0.5\"} 2\n"));
        assert!(text.contains("sbc_delay_seconds_bucket{side=\"public\",le=\"30\"} 2\n"));
        assert!(text.contains("sbc_delay_seconds_bucket{side=\"public\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("sbc_delay_seconds_sum{side=\"public\"} 100.303\n"));
        assert!(text.contains("sbc_delay_seconds_count{side=\"public\"} 3\n"));
    }
}
