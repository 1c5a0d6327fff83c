//! What a benchmark run found: one table (printed, and written as JSON and Markdown), the
//! machine it ran on, and the project's targets with whether this run met them.
use std::{fmt::Write as _, path::Path};

use serde_json::{Value, json};

/// One number.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// What part of the system: "In-kernel cost", "Call setup"...
    pub section: &'static str,
    /// The configuration or input: "XDP fast path", "media frame"...
    pub subject: String,
    pub metric: &'static str,
    pub value: f64,
    pub unit: &'static str,
    /// What limited or qualifies the number ("generator-limited"...); empty if nothing.
    pub note: String,
}

impl Measurement {
    pub fn new(
        section: &'static str,
        subject: impl Into<String>,
        metric: &'static str,
        value: f64,
        unit: &'static str,
    ) -> Self {
        Self {
            section,
            subject: subject.into(),
            metric,
            value,
            unit,
            note: String::new(),
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    fn value_text(&self) -> String {
        let magnitude = self.value.abs();
        let number = if magnitude >= 1000.0 || self.value.fract() == 0.0 {
            format!("{:.0}", self.value)
        } else if magnitude >= 10.0 {
            format!("{:.1}", self.value)
        } else {
            format!("{:.3}", self.value)
        };
        if self.unit.is_empty() {
            number
        } else {
            format!("{number} {}", self.unit)
        }
    }
}

/// A target of the project (issue 5), and how this run compares.
#[derive(Debug, Clone)]
pub struct Target {
    pub text: &'static str,
    /// What was measured, in words; `None`: not measured in this run.
    pub measured: Option<String>,
    pub met: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct Machine {
    pub kernel: String,
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub commit: String,
}

impl Machine {
    pub fn read() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split(':').nth(1))
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        let memory_kib: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        Self {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpu,
            // Online CPUs of the machine, not this process' affinity (the bench pins itself).
            // SAFETY: sysconf has no preconditions.
            cores: unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize,
            memory_gib: memory_kib / (1024.0 * 1024.0),
            commit,
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} ({} cores), {:.0} GiB, Linux {}, sbc {}",
            self.cpu, self.cores, self.memory_gib, self.kernel, self.commit
        )
    }
}

pub struct Report {
    pub mode: &'static str,
    pub machine: Machine,
    pub measurements: Vec<Measurement>,
    pub targets: Vec<Target>,
}

impl Report {
    /// The value of one measurement, if it was made.
    pub fn find(&self, section: &str, subject: &str, metric: &str) -> Option<f64> {
        self.measurements
            .iter()
            .find(|m| m.section == section && m.subject == subject && m.metric == metric)
            .map(|m| m.value)
    }

    fn rows(&self) -> Vec<[String; 5]> {
        self.measurements
            .iter()
            .map(|m| {
                [
                    m.section.to_owned(),
                    m.subject.clone(),
                    m.metric.to_owned(),
                    m.value_text(),
                    m.note.clone(),
                ]
            })
            .collect()
    }

    const HEADER: [&'static str; 5] = ["section", "configuration", "metric", "value", "note"];

    /// The table as a terminal shows it.
    pub fn text(&self) -> String {
        let rows = self.rows();
        let mut widths = Self::HEADER.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| -> String {
            let mut out = String::new();
            for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
                // Numbers right-aligned, words left.
                if i == 3 {
                    let _ = write!(out, "{cell:>width$}  ");
                } else {
                    let _ = write!(out, "{cell:<width$}  ");
                }
            }
            out.trim_end().to_owned() + "\n"
        };
        let mut out = format!(
            "sbc benchmark ({} run) on {}\n\n",
            self.mode,
            self.machine.describe()
        );
        out += &line(&Self::HEADER.map(String::from));
        out += &line(&widths.map(|w| "-".repeat(w)));
        for row in &rows {
            out += &line(row);
        }
        out += "\ntargets:\n";
        for target in &self.targets {
            let _ = writeln!(
                out,
                "  [{}] {}: {}",
                verdict(target.met),
                target.text,
                target
                    .measured
                    .as_deref()
                    .unwrap_or("not measured in this run")
            );
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = format!(
            "Run: `cargo xtask bench{}` on {}.\n\n",
            if self.mode == "full" {
                " -- --full"
            } else {
                ""
            },
            self.machine.describe()
        );
        out += &format!("| {} |\n", Self::HEADER.join(" | "));
        out += "|---|---|---|---:|---|\n";
        for row in self.rows() {
            out += &format!("| {} |\n", row.join(" | "));
        }
        out += "\n| target | this run | met |\n|---|---|---|\n";
        for target in &self.targets {
            out += &format!(
                "| {} | {} | {} |\n",
                target.text,
                target.measured.as_deref().unwrap_or("not measured"),
                verdict(target.met)
            );
        }
        out
    }

    pub fn json(&self) -> Value {
        json!({
            "mode": self.mode,
            "machine": {
                "kernel": self.machine.kernel,
                "cpu": self.machine.cpu,
                "cores": self.machine.cores,
                "memory_gib": self.machine.memory_gib,
                "commit": self.machine.commit,
            },
            "measurements": self.measurements.iter().map(|m| json!({
                "section": m.section,
                "configuration": m.subject,
                "metric": m.metric,
                "value": m.value,
                "unit": m.unit,
                "note": m.note,
            })).collect::<Vec<_>>(),
            "targets": self.targets.iter().map(|t| json!({
                "target": t.text,
                "measured": t.measured,
                "met": t.met,
            })).collect::<Vec<_>>(),
        })
    }

    /// Writes `results.json` and `results.md` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("results.json"),
            serde_json::to_string_pretty(&self.json())? + "\n",
        )?;
        std::fs::write(dir.join("results.md"), self.markdown())?;
        Ok(())
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "n/a",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well_and_the_table_lines_up() {
        let m = |v| Measurement::new("s", "c", "m", v, "ns");
        assert_eq!(m(85.25).value_text(), "85.2 ns");
        assert_eq!(m(1234.5).value_text(), "1234 ns");
        assert_eq!(m(3.0).value_text(), "3 ns");
        assert_eq!(m(0.0421).value_text(), "0.042 ns");
        let report = Report {
            mode: "quick",
            machine: Machine {
                kernel: "6.1".into(),
                cpu: "cpu".into(),
                cores: 2,
                memory_gib: 4.0,
                commit: "abc".into(),
            },
            measurements: vec![m(1.5), m(100.0).note("generator-limited")],
            targets: vec![Target {
                text: "fast",
                measured: None,
                met: None,
            }],
        };
        let text = report.text();
        let lines: Vec<&str> = text.lines().skip(2).take(4).collect();
        let value_end = lines[2].find("1.500 ns").unwrap() + "1.500 ns".len();
        assert_eq!(lines[3].find("100 ns").unwrap() + "100 ns".len(), value_end);
        assert!(
            report
                .markdown()
                .contains("| s | c | m | 100 ns | generator-limited |")
        );
        assert_eq!(report.find("s", "c", "m"), Some(1.5));
    }
}
