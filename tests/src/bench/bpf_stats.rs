//! What the kernel's BPF run-time statistics say of a program: its run time and runs, counted
//! only while some process holds them enabled (`enable`), since counting costs two clock reads
//! a run.
use std::{os::fd::OwnedFd, time::Duration};

use anyhow::Context as _;

/// Run time and runs of every loaded program of one name, so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProgramRuns {
    pub time: Duration,
    pub count: u64,
}

impl ProgramRuns {
    pub fn of(name: &str) -> anyhow::Result<Self> {
        let mut runs = Self::default();
        for program in aya::programs::loaded_programs() {
            let program = program.context("listing the loaded BPF programs")?;
            if program.name_as_str() == Some(name) {
                runs.time += program.run_time();
                runs.count += program.run_count();
            }
        }
        Ok(runs)
    }

    pub fn since(self, before: Self) -> Self {
        Self {
            time: self.time.saturating_sub(before.time),
            count: self.count.saturating_sub(before.count),
        }
    }

    /// Nanoseconds per run.
    pub fn ns_per_run(self) -> f64 {
        self.time.as_nanos() as f64 / self.count.max(1) as f64
    }
}

/// Counting on while the returned descriptor is held.
pub fn enable() -> anyhow::Result<OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time statistics")
}
